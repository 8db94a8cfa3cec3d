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
  assert status == 1
  out = [json.loads(line) for line in captured.out.splitlines()]
  assert len(out) == len(lines) - 1  # the blank line is not an input
  assert out[0]["id"] == 7 and out[0]["text"] == TEXT0
  assert _without_scores(out[0]["entities"]) == ANSWER0
  assert out[1] == {"line": 2, "field": "json",
                    "error": "not valid JSON: Expecting property name enclosed in double quotes "
                             "at column 2"}
  assert out[2] == {"line": 4, "field": "text", "error": "missing"}
  assert out[3] == {"line": 5, "field": "text", "error": "must be a string, got int"}
  assert out[4]["line"] == 6 and out[4]["field"] == "types"
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
