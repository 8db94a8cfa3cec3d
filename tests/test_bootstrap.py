"""The paired bootstrap of `compare --bootstrap`: its F1 is the evaluator's F1 (property test),
literal intervals for identical and for perfect-vs-empty runs, bad input named, and the
comparison table it adds."""

import json
import math
import os

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from punified_jax import bootstrap
from punified_jax import compare
from punified_jax import entity_types
from punified_jax import metrics

SPANS = ("甲", "乙", "丙丁")


def _pairs(dataset):
  types = list(entity_types.prompt_names(dataset)) + ["未请求"]  # plus a type nobody asked for
  return st.lists(st.tuples(st.sampled_from(types), st.sampled_from(SPANS)), max_size=4)


def _records(gold_and_predicted):
  return [{"id": f"s{i}", "gold": [list(p) for p in gold], "predicted": [list(p) for p in pred]}
          for i, (gold, pred) in enumerate(gold_and_predicted)]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["resume", "ontonotes4"]).flatmap(
    lambda ds: st.tuples(st.just(ds), st.lists(st.tuples(_pairs(ds), _pairs(ds)), min_size=1,
                                                max_size=6))))
def test_counts_give_the_evaluators_macro_f1(case):
  dataset, sentences = case
  records = _records(sentences)
  ours = float(bootstrap.macro_f1_from_counts(
      bootstrap.sentence_counts(records, dataset).sum(axis=0)))
  theirs = metrics.make_metric_fn(dataset)([r["gold"] for r in records],
                                           [r["predicted"] for r in records])["macro_f1"]
  assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-9)


def _resume_sentences():
  # 4 sentences; run A predicts nothing, run B predicts exactly the gold pairs.
  gold = [[["名称", "甲"]], [["公司", "乙"], ["名称", "丙丁"]], [], [["学历", "甲"]]]
  return ([{"id": i, "gold": g, "predicted": []} for i, g in enumerate(gold)],
          [{"id": i, "gold": g, "predicted": g} for i, g in enumerate(gold)])


def test_identical_runs_and_perfect_against_empty():
  empty, perfect = _resume_sentences()
  same = bootstrap.paired_bootstrap(perfect, perfect, "resume", samples=200)
  assert (same["difference"], same["low"], same["high"], same["b_ahead"]) == (0, 0, 0, 0)
  better = bootstrap.paired_bootstrap(empty, perfect, "resume", samples=200, seed=1)
  assert (better["a"], better["b"], better["difference"]) == (0.0, 100.0, 100.0)
  # every sample that holds a gold pair has B at 100 and A at 0; an all-empty sample is NaN
  assert better["low"] == better["high"] == 100.0
  assert better["sentences"] == 4 and better["samples"] == 200


def test_bad_input_is_named(tmp_path):
  empty, perfect = _resume_sentences()
  with pytest.raises(ValueError, match="A and B do not hold the same sentences"):
    bootstrap.paired_bootstrap(empty, perfect[:3], "resume", what="A and B")
  path = tmp_path / "p.jsonl"
  path.write_text('{"id": 1, "gold": [], "predicted": []}\n{"id": 2, "gold": []}\n')
  with pytest.raises(ValueError, match=r"p\.jsonl:2: no predicted"):
    bootstrap.read_predictions(str(path))
  path.write_text("{nope\n")
  with pytest.raises(ValueError, match=r"p\.jsonl:1: not JSON"):
    bootstrap.read_predictions(str(path))


def _run_with_predictions(root, name, records, f1):
  run = os.path.join(root, name)
  os.makedirs(os.path.join(run, "eval", "predictions"))
  with open(os.path.join(run, "eval", "step_10.json"), "w", encoding="utf-8") as f:
    json.dump({"step": 10, "tasks": {"punified_ner_resume": {"macro_f1": f1}}}, f)
  if records is not None:
    with open(bootstrap.prediction_file(os.path.join(run, "eval"), "resume", 10), "w",
              encoding="utf-8") as f:
      f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
  return run


def test_compare_adds_the_difference_table(tmp_path):
  empty, perfect = _resume_sentences()
  a = _run_with_predictions(tmp_path, "a", empty, 0.0)
  b = _run_with_predictions(tmp_path, "b", perfect, 100.0)
  c = _run_with_predictions(tmp_path, "c", None, 50.0)  # scores, but no prediction file
  summary = compare.compare([(None, a), (None, b), (None, c)], str(tmp_path / "out"),
                            bootstrap_samples=100)
  row = summary["bootstrap"]["datasets"]["resume"]
  assert row["b"]["difference"] == 100.0 and row["c"] == {
      "missing": "no per-sentence predictions for c"}
  table = compare.format_tables(summary)
  assert "minus a" in table and "+100.00 [+100.00, +100.00]" in table
  assert "bootstrap" not in compare.compare([(None, a), (None, b)], str(tmp_path / "o2"))
