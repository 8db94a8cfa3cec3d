"""Tests for `python -m punified_jax extract` (run in-process through the dispatcher).

The model directory holds the tiny model of test_inference overfit on its TRAIN_EXAMPLES, so
the answers are literal; batch size and lengths match test_inference's extractors, so the
compiled programs are shared when both modules run in one session.
"""

import io
import json

import jax
import pytest

from punified_jax.__main__ import main

import test_inference as shared


pytestmark = pytest.mark.usefixtures("fast_compiles")


# The vocabulary, config and overfit parameters are test_inference's fixtures.
sp_vocab = shared.sp_vocab
vocab_path = shared.vocab_path
config = shared.config
trained_params = shared.trained_params


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vocab_path, config, trained_params):
  return shared.write_model_dir(tmp_path_factory.mktemp("run"), vocab_path, config,
                                trained_params, step=1)

ARGS = ["--batch_size", str(shared.BATCH_SIZE)]
TEXT0 = shared.TRAIN_EXAMPLES[0][0]
ANSWER0 = [{"type": t, "text": s, "start": a, "end": b}
           for t, s, a, b in [("地点", "北京", 0, 2), ("组织", "北京大学", 3, 7), ("地点", "北京", 9, 11)]]


def _without_scores(entities):
  for entity in entities:
    assert 0.9 < entity.pop("score") <= 1.0
  return entities


def _run(argv, stdin=None, monkeypatch=None):
  if stdin is not None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
  return main(["extract"] + argv)


def test_one_text(model_dir, capsys):
  status = _run(["--model_dir", model_dir, "--types", "地点, 组织", "--text", TEXT0] + ARGS)
  out = capsys.readouterr().out
  assert status == 0
  answer = json.loads(out)
  assert answer["text"] == TEXT0
  assert _without_scores(answer["entities"]) == ANSWER0


def test_json_lines_with_errors_in_between(model_dir, capsys, monkeypatch):
  lines = [
      json.dumps({"text": TEXT0, "types": ["地点", "组织"], "id": 7}, ensure_ascii=False),
      "{not json",
      "",
      json.dumps({"types": ["地点"]}),
      json.dumps({"text": 5, "types": ["地点"]}),
      json.dumps({"text": "北京", "types": ["城堡"]}, ensure_ascii=False),
      json.dumps({"text": "北京", "types": []}),
      json.dumps({"text": "北京", "dataset": "nope"}),
      json.dumps({"text": "北京", "types": ["地点"], "colour": "red"}),
      json.dumps(["a list"]),
      json.dumps({"text": shared.TRAIN_EXAMPLES[3][0], "dataset": "msra"}, ensure_ascii=False),
      json.dumps({"text": ""}),
  ]
  status = _run(["--model_dir", model_dir, "--types", "地点,组织"] + ARGS,
                stdin="\n".join(lines) + "\n", monkeypatch=monkeypatch)
  captured = capsys.readouterr()
  assert status == 3
  out = [json.loads(line) for line in captured.out.splitlines()]
  assert len(out) == len(lines) - 1  # the blank line is not an input
  assert out[0]["id"] == 7 and out[0]["text"] == TEXT0
  assert _without_scores(out[0]["entities"]) == ANSWER0
  assert out[1] == {"line": 2, "field": "json",
                    "error": "not valid JSON: Expecting property name enclosed in double quotes "
                             "at line 1 column 2"}
  assert out[2] == {"line": 4, "field": "text", "error": "missing"}
  assert out[3] == {"line": 5, "field": "text", "error": "text is a int, not a str"}
  assert out[4]["line"] == 6 and out[4]["field"] == "types[0]"
  assert out[4]["error"].startswith("unknown entity type(s) 城堡; known types: 品牌, 商品")
  assert out[5] == {"line": 7, "field": "types",
                    "error": "types is empty: request at least one entity type"}
  assert out[6]["line"] == 8 and out[6]["field"] == "dataset"
  assert out[6]["error"].startswith("unknown dataset 'nope'; known datasets: ecommerce")
  assert out[7] == {"line": 9, "field": "colour",
                    "error": "unknown field 'colour' (fields: text, types, dataset, id)"}
  assert out[8] == {"line": 10, "field": "json", "error": "expected a JSON object, got list"}
  assert out[9]["text"] == shared.TRAIN_EXAMPLES[3][0]
  assert isinstance(out[9]["entities"], list)
  assert out[10] == {"text": "", "entities": []}  # --types used; an empty text has none
  assert "error: line 2: json: not valid JSON" in captured.err
  assert "8 line(s) failed" in captured.err


def test_all_lines_good_exits_zero(model_dir, capsys, monkeypatch):
  lines = [json.dumps({"text": text, "types": list(shared.TYPES)}, ensure_ascii=False)
           for text, _ in shared.TRAIN_EXAMPLES[:2]]
  status = _run(["--model_dir", model_dir, "--chunk_lines", "1", "--stats"] + ARGS,
                stdin="\n".join(lines), monkeypatch=monkeypatch)
  captured = capsys.readouterr()
  assert status == 0
  out = [json.loads(line) for line in captured.out.splitlines()]
  assert [len(line["entities"]) for line in out] == [3, 2]
  stats = json.loads(captured.err.strip().splitlines()[-1])["stats"]
  assert stats["texts"] == 2 and stats["windows"] == 2


def test_argument_errors_exit_two(model_dir, tmp_path, capsys):
  assert _run(["--model_dir", str(tmp_path / "none"), "--types", "地点", "--text", "x"]) == 2
  assert "has no punified_model.json" in capsys.readouterr().err
  assert _run(["--model_dir", model_dir, "--types", "地点", "--dataset", "msra", "--text",
               "x"]) == 2
  assert "give --types or --dataset, not both" in capsys.readouterr().err
  assert _run(["--model_dir", model_dir, "--types", "城堡", "--text", "x"] + ARGS) == 2
  err = capsys.readouterr().err
  assert "error: --types: unknown entity type(s) 城堡" in err
  assert _run(["--model_dir", model_dir, "--text", "x"] + ARGS) == 2
  assert "no entity types requested" in capsys.readouterr().err


def test_unseen_types_and_unconstrained_flags(model_dir, capsys):
  status = _run(["--model_dir", model_dir, "--types", "城堡", "--allow_unseen_types",
                 "--unconstrained", "--beam_size", "1", "--text", TEXT0] + ARGS)
  answer = json.loads(capsys.readouterr().out)
  assert status == 0
  for entity in answer["entities"]:
    assert entity["type"] == "城堡"
    assert TEXT0[entity["start"]:entity["end"]] == entity["text"]


def test_help_lists_the_command(capsys):
  assert main([]) == 2
  assert "extract" in capsys.readouterr().err


def _run_bytes(argv, data: bytes, monkeypatch):
  monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
  return main(["extract"] + argv)


def test_hostile_lines_get_bounded_error_objects(model_dir, capsys, monkeypatch):
  """Each attack from issue 12 is one error object naming its field; the good lines around
  them are answered; nothing echoes more than a short preview."""
  good = json.dumps({"text": TEXT0, "id": "first"}, ensure_ascii=False).encode()
  huge_type = "类" * 5_000_000
  lines = [
      good,
      b'{"text": "a\\ud800b"}',                                      # lone surrogate (escape)
      '{"text": "北京"}'.encode() + b"\xff\xfe",                       # invalid UTF-8
      b'{"text": "x", "id": "\\udc80"}',                            # surrogate in an echoed id
      b'{"text": "x", "\\ud800": 1}',                               # surrogate in a field name
      b'{"text": "x", "id": ' + b"9" * 5000 + b"}",                  # 5000-digit number
      b"[" * 100_000 + b"]" * 100_000,                               # 100,000-deep array
      json.dumps({"text": "x", "types": [huge_type]}, ensure_ascii=False).encode(),
      json.dumps({"text": "x", "types": {"a": 1}}).encode(),
      json.dumps({"text": "北" * 300}, ensure_ascii=False).encode(),  # beyond --max_text_chars
      json.dumps({"text": "😀" * 20}, ensure_ascii=False).encode(),   # outside the vocabulary
      json.dumps({"text": "北京和上海。" * 30}, ensure_ascii=False).encode(),  # > --max_windows
      json.dumps({"text": "x", "id": {"a": 1}}).encode(),
      good,
  ]
  status = _run_bytes(["--model_dir", model_dir, "--types", "地点,组织", "--max_text_chars",
                       "250", "--max_oov_chars", "10", "--max_windows", "3", "--max_line_bytes",
                       str(20 << 20)] + ARGS, b"\n".join(lines) + b"\n", monkeypatch)
  captured = capsys.readouterr()
  assert status == 3
  raw_out = captured.out.splitlines()
  assert max(len(line) for line in raw_out) < 2000  # no megabyte echo
  out = [json.loads(line) for line in raw_out]
  assert len(out) == len(lines)
  assert out[0]["id"] == out[-1]["id"] == "first"
  assert _without_scores(out[0]["entities"]) == ANSWER0 == _without_scores(out[-1]["entities"])
  errors = [(o["line"], o["field"], o["error"]) for o in out[1:-1]]
  assert errors == [
      (2, "text", "text contains a lone surrogate \\ud800 at character 1: not valid Unicode "
                  "(send UTF-8 text)"),
      (3, "json", "not valid UTF-8: byte 18 (0xff) invalid start byte"),
      (4, "id", "id contains a lone surrogate \\udc80 at character 0: not valid Unicode "
                "(send UTF-8 text)"),
      (5, "json", "a field name contains a lone surrogate \\ud800 at character 0: not valid "
                  "Unicode (send UTF-8 text)"),
      (6, "json", "a number of 5000 characters, more than the limit 20"),
      (7, "json", "JSON nested 100000 levels deep, more than the limit 16"),
      (8, "types[0]", "types[0] is a type name of 5000000 characters, more than the limit 32"),
      (9, "types", "types must be a list of type names, got dict"),
      (10, "text", "text has 300 characters, more than the limit 250 (longer texts are split "
                   "into windows, never cut, up to this limit)"),
      (11, "text", "text: 20 characters outside the model's vocabulary (20 in the request so "
                   "far), more than the limit 10: such characters (emoji, rare characters) "
                   "cost several tokens each"),
      (12, "text", errors[10][2]),
      (13, "id", "id must be a string, an integer or null, got object"),
  ]
  assert errors[10][2].startswith("the request needs ") and "decode budget of 3 windows" in (
      errors[10][2])
  assert "12 line(s) failed" in captured.err


def test_partitioning_presets_are_the_gin_presets():
  from punified_jax import partitioning  # pylint: disable=g-import-not-at-top
  from punified_jax.commands import extract  # pylint: disable=g-import-not-at-top
  assert sorted(extract.PARTITIONING_PRESETS) == sorted(partitioning.PRESET_LAYOUTS)


def test_fsdp_partitioning_gives_the_same_entities(model_dir, capsys):
  status = _run(["--model_dir", model_dir, "--types", "地点,组织", "--text", TEXT0,
                 "--partitioning", "fsdp"] + ARGS)
  answer = json.loads(capsys.readouterr().out)
  assert status == 0
  assert _without_scores(answer["entities"]) == ANSWER0


def test_unknown_partitioning_is_a_usage_error(model_dir, capsys):
  with pytest.raises(SystemExit) as exit_info:
    _run(["--model_dir", model_dir, "--types", "地点", "--text", TEXT0, "--partitioning", "pp"])
  assert exit_info.value.code == 2
  assert "--partitioning" in capsys.readouterr().err


def test_grammar_rule_flags_reach_the_extractor(model_dir, capsys, monkeypatch):
  loaded = shared.record_extractor_loads(monkeypatch)
  status = _run(["--model_dir", model_dir, "--types", "地点, 组织", "--text", TEXT0,
                 "--forbid_repeats", "--follow_order", "--decode_threads", "3",
                 "--output_budget", "1.5", "--end_at_repeat", "2", "--search", "fast"] + ARGS)
  assert status == 0
  assert _without_scores(json.loads(capsys.readouterr().out)["entities"]) == ANSWER0
  assert loaded[0]._constraint.forbid_repeats is True
  assert loaded[0]._constraint.follow_order is True
  assert loaded[0].decode_threads == 3
  assert loaded[0].output_budget == loaded[0]._constraint.budget_factor == 1.5
  assert loaded[0].end_at_repeat == loaded[0]._constraint.end_at_repeat == 2
  assert loaded[0].search == "fast"
  for flag, bad_values in (("--output_budget", ("-1", "nan", "x", "2000")),
                           ("--end_at_repeat", ("-1", "1.5", "x")), ("--search", ("quick",))):
    for bad in bad_values:
      with pytest.raises(SystemExit):
        _run(["--model_dir", model_dir, "--types", "地点", "--text", TEXT0, flag, bad])
      assert flag in capsys.readouterr().err
