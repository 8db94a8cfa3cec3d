"""Evaluation a researcher can use: the split to score, refusing splits without gold
annotations, and per-example prediction records."""

import pytest
import seqio

import tasks
from punified_jax import constraints
from punified_jax import evaluation
from punified_jax import partitioning

LENGTHS = {"inputs": 128, "targets": 64}
# Resume: labeled train/dev/test. OntoNotes 4.0: labeled train/dev, a test file with no tags.
RESUME = {"train.char.bmes": "张 B-NAME\n三 E-NAME\n好 O\n",
          "dev.char.bmes": "李 B-NAME\n四 E-NAME\n是 O\n博 B-EDU\n士 E-EDU\n",
          "test.char.bmes": "王 S-NAME\n"}
ONTONOTES = {"train.char.bmes": "北 B-GPE\n京 E-GPE\n",
             "dev.char.bmes": "上 B-GPE\n海 E-GPE\n",
             "test.char.bmes": "广\n州\n"}


@pytest.fixture()
def raw_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  for dataset, files in (("resume", RESUME), ("ontonotes4", ONTONOTES)):
    (tmp_path / "raw" / dataset).mkdir(parents=True)
    for name, text in files.items():
      (tmp_path / "raw" / dataset / name).write_text(text, encoding="utf-8")
  tasks.register_all(tasks.DataConfig(raw_dir=str(tmp_path / "raw"),
                                      datasets=("resume", "ontonotes4")))
  yield str(tmp_path / "raw")
  tasks.register_all()


def _evaluator(name, split):
  return evaluation.Evaluator(mixture_or_task_name=name, model=None,
                              partitioner=partitioning.Partitioner(), eval_split=split,
                              feature_lengths=LENGTHS)


def test_unlabeled_split_of_a_mixture_is_left_out_and_named(raw_dir):
  evaluator = _evaluator("punified_ner_joint", "test")
  try:
    assert evaluator.task_names == ["punified_ner_resume"]
    assert evaluator.unscored == {"punified_ner_ontonotes4": (
        f"the ontonotes4 test split carries no labels (an unlabeled release file in "
        f"{raw_dir}/ontonotes4)")}
  finally:
    evaluator.close()
  validation = _evaluator("punified_ner_joint", "validation")
  assert sorted(validation.task_names) == ["punified_ner_ontonotes4", "punified_ner_resume"]
  assert validation.unscored == {}
  validation.close()


def test_scoring_only_unlabeled_splits_is_an_error(raw_dir):
  with pytest.raises(evaluation.UnlabeledSplitError) as info:
    _evaluator("punified_ner_ontonotes4", "test")
  assert str(info.value).startswith(
      f"punified_ner_ontonotes4: nothing to score on the 'test' split: punified_ner_ontonotes4: "
      f"the ontonotes4 test split carries no labels (an unlabeled release file in "
      f"{raw_dir}/ontonotes4). Use `python -m punified_jax.infer` (INFER_SPLIT) to write "
      f"predictions for an unlabeled split.")


def test_a_labeled_split_without_any_mention_is_not_scored(raw_dir):
  with open(f"{raw_dir}/resume/test.char.bmes", "w", encoding="utf-8") as f:
    f.write("好 O\n\n是 O\n")
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  with pytest.raises(evaluation.UnlabeledSplitError,
                     match="none of the 2 sentences of the resume test split has a gold mention"):
    _evaluator("punified_ner_resume", "test")


def test_prediction_record_is_literal(raw_dir):
  task = seqio.get_mixture_or_task("punified_ner_resume")
  example = next(task.get_dataset(LENGTHS, split="validation", shuffle=False).as_numpy_iterator())
  record = evaluation.prediction_record(task, 0, example, "((名称:李四),(学历:本科),(地点:北京))")
  types = record["types"]
  assert record["index"] == 0 and record["id"] == "resume-validation-0"
  assert record["text"] == "李四是博士"
  assert record["gold"] == [["名称", "李四"], ["学历", "博士"]]
  assert record["predicted"] == [["名称", "李四"], ["学历", "本科"], ["地点", "北京"]]
  assert record["per_type"]["名称"] == {"gold": ["李四"], "predicted": ["李四"]}
  assert record["per_type"]["学历"] == {"gold": ["博士"], "predicted": ["本科"]}
  # Every requested type has a row (empty when neither side has a mention), and an unrequested
  # type the model produced gets one too.
  assert list(record["per_type"])[:len(types)] == list(types)
  assert record["per_type"]["地点"] == {"gold": [], "predicted": ["北京"]} and "地点" not in types
  assert record["generation"] == "((名称:李四),(学历:本科),(地点:北京))"


def test_grammar_rules_reach_the_evaluation_constraint(raw_dir):
  ruled = evaluation.Evaluator(mixture_or_task_name="punified_ner_resume", model=None,
                               partitioner=partitioning.Partitioner(), feature_lengths=LENGTHS,
                               constrained=True, follow_order=True, end_at_repeat=2)
  try:
    assert ruled.constraint.follow_order is True and ruled.constraint.forbid_repeats is False
    assert ruled.constraint.end_at_repeat == 2
    # A constrained evaluation decodes with the Extractor's default output budget.
    assert ruled.constraint.budget_factor == constraints.OUTPUT_BUDGET_FACTOR
  finally:
    ruled.close()
  unbudgeted = evaluation.Evaluator(mixture_or_task_name="punified_ner_resume", model=None,
                                    partitioner=partitioning.Partitioner(),
                                    feature_lengths=LENGTHS, constrained=True, output_budget=0)
  try:
    assert unbudgeted.constraint.budget_factor == 0
    # ... and, when not given, with its default repeat rule.
    assert unbudgeted.constraint.end_at_repeat == constraints.END_AT_REPEAT == 3
  finally:
    unbudgeted.close()
  for rule in ({"follow_order": True}, {"output_budget": 1.0}, {"end_at_repeat": 2}):
    with pytest.raises(ValueError, match="output_budget need constrained=True"):
      evaluation.Evaluator(mixture_or_task_name="punified_ner_resume", model=None,
                           partitioner=partitioning.Partitioner(), **rule)
