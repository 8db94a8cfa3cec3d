"""Tests for `python -m punified_jax extract_corpus` (local mode; the --ray mode is in
test_ray.py): shards, error objects with global line numbers, resuming after a lost shard."""

import json
import os

import pytest

from punified_jax.__main__ import main
from punified_jax.commands import extract_corpus

import test_inference as shared

pytestmark = pytest.mark.usefixtures("fast_compiles")

sp_vocab = shared.sp_vocab
vocab_path = shared.vocab_path
config = shared.config
trained_params = shared.trained_params


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vocab_path, config, trained_params):
  return shared.write_model_dir(tmp_path_factory.mktemp("run"), vocab_path, config,
                                trained_params, step=1)


def write_corpus(path) -> list[bytes]:
  lines = [json.dumps({"id": i, "text": text}, ensure_ascii=False).encode()
           for i, (text, _) in enumerate(shared.TRAIN_EXAMPLES)]
  lines.insert(2, b'{"id": "bad", "text": "a\\ud800"}')
  lines.append(b"\xff not utf-8")
  lines.append(json.dumps({"id": 9, "text": "北京"}, ensure_ascii=False).encode())
  path.write_bytes(b"\n".join(lines))  # no final newline
  return lines


def corpus_args(model_dir, corpus, output, *extra):
  return ["extract_corpus", "--model_dir", model_dir, "--input", str(corpus), "--output",
          str(output), "--types", "地点,组织", "--shard_docs", "3", "--batch_size",
          str(shared.BATCH_SIZE), *extra]


def read_outputs(output) -> list[dict]:
  names = sorted(n for n in os.listdir(output) if n.startswith("shard-"))
  assert names == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
  return [json.loads(line) for name in names
          for line in (output / name).read_text().splitlines()]


def check_outputs(rows) -> None:
  assert len(rows) == 7
  assert [row.get("id") for row in rows] == [0, 1, None, 2, 3, None, 9]
  assert rows[2] == {"line": 3, "field": "text", "error": "text contains a lone surrogate "
                     "\\ud800 at character 1: not valid Unicode (send UTF-8 text)"}
  assert rows[5]["line"] == 6 and rows[5]["field"] == "json"
  assert [(e["type"], e["text"], e["start"]) for e in rows[0]["entities"]] == [
      ("地点", "北京", 0), ("组织", "北京大学", 3), ("地点", "北京", 9)]
  assert rows[4]["entities"] == []  # 今天天气很好。


def test_plan_shards(tmp_path):
  corpus = tmp_path / "docs.jsonl"
  lines = write_corpus(corpus)
  shards = extract_corpus.plan_shards(str(corpus), 3)
  assert [(s.first_line, s.lines) for s in shards] == [(1, 3), (4, 3), (7, 1)]
  assert extract_corpus.read_shard(str(corpus), shards[1]) == lines[3:6]
  assert extract_corpus.read_shard(str(corpus), shards[2]) == lines[6:]


def test_shards_errors_and_resume(model_dir, tmp_path, capsys):
  corpus = tmp_path / "docs.jsonl"
  write_corpus(corpus)
  output = tmp_path / "out"
  assert main(corpus_args(model_dir, corpus, output)) == 3  # some lines failed
  err = capsys.readouterr().err
  assert "3 shards, 0 already done, 3 to do" in err
  assert "7/7 docs (100.0%)" in err
  rows = read_outputs(output)
  check_outputs(rows)
  progress = json.loads((output / "progress.json").read_text())
  assert progress["docs_done"] == progress["docs_total"] == 7
  # Lose one shard: the rerun redoes that one only and gives the same lines.
  kept = (output / "shard-00000.jsonl").stat().st_mtime_ns
  os.remove(output / "shard-00001.jsonl")
  assert main(corpus_args(model_dir, corpus, output)) == 3
  assert "3 shards, 2 already done, 1 to do" in capsys.readouterr().err
  assert (output / "shard-00000.jsonl").stat().st_mtime_ns == kept
  assert read_outputs(output) == rows
  # Nothing left to do: exit 0, nothing rewritten.
  assert main(corpus_args(model_dir, corpus, output)) == 0
  assert "3 shards, 3 already done, 0 to do" in capsys.readouterr().err


def test_argument_errors(model_dir, tmp_path, capsys):
  assert main(["extract_corpus", "--model_dir", model_dir, "--input", str(tmp_path / "none"),
               "--output", str(tmp_path / "o"), "--types", "地点"]) == 2
  assert "not found" in capsys.readouterr().err
  assert main(["extract_corpus", "--model_dir", model_dir, "--input", "x", "--output", "o"]) == 2
  assert "give --types or --dataset" in capsys.readouterr().err


def test_grammar_rule_flags_reach_the_shard_extractor(model_dir, tmp_path, monkeypatch, capsys):
  loaded = shared.record_extractor_loads(monkeypatch)
  corpus, output = tmp_path / "corpus.jsonl", tmp_path / "out"
  write_corpus(corpus)
  assert main(corpus_args(model_dir, corpus, output, "--forbid_repeats", "--follow_order",
                          "--decode_threads", "3", "--output_budget", "3",
                          "--end_at_repeat", "2", "--search", "stepwise")) == 3
  check_outputs(read_outputs(output))  # the same entities as without the rules
  assert [(e._constraint.forbid_repeats, e._constraint.follow_order, e.decode_threads,
           e._constraint.budget_factor, e._constraint.end_at_repeat, e.search)
          for e in loaded] == [(True, True, 3, 3.0, 2, "stepwise")]
