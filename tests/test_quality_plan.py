"""The quality script's plan and tables, without running any stage (no data, no training)."""

import pytest

from benchmarks import quality


def _plan(*extra):
  args = quality.build_parser().parse_args(
      ["--data_dir", "/data", "--work_dir", "/w", "--datasets", "resume,cluener", *extra])
  return quality.Plan(args)


def test_single_run_dataset_names():
  assert quality.single_run_dataset("single_resume") == "resume"
  assert quality.single_run_dataset("single_resume_noadapt") == "resume"
  assert quality.single_run_dataset("joint_noadapt") is None


def test_noadapt_singles_add_a_scratch_training_and_its_eval():
  stages = {s["name"]: s for s in _plan("--noadapt_singles", "resume").stages()}
  assert "single_cluener_noadapt" not in stages
  train = stages["single_resume_noadapt"]["command"]
  assert "--gin.MIXTURE_OR_TASK_NAME=punified_ner_resume" in train
  assert "--gin.MODEL_DIR=/w/runs/single_resume_noadapt" in train
  assert not any(c.startswith("--gin.INITIAL_CHECKPOINT_PATH") for c in train)
  adapted = stages["single_resume"]["command"]
  assert "--gin.INITIAL_CHECKPOINT_PATH=/w/runs/adapt" in adapted
  evaluation = stages["eval_single_resume_noadapt_unconstrained"]["command"]
  assert "--gin.MIXTURE_OR_TASK_NAME=punified_ner_resume" in evaluation
  names = list(stages)
  # (a) before the cheap (b) before the expensive joint model without adaptation.
  assert (names.index("eval_single_cluener_unconstrained") < names.index("single_resume_noadapt")
          < names.index("joint_noadapt"))


def test_noadapt_singles_must_be_among_the_datasets():
  with pytest.raises(ValueError, match="ecommerce not in --datasets"):
    _plan("--noadapt_singles", "ecommerce")


def test_tables_show_the_single_model_adaptation_rows():
  def scores(f1):
    return {"unconstrained": {"datasets": {"resume": {"macro_f1": f1}}}}
  results = {"config": {"datasets": ["resume"], "noadapt_singles": ["resume"]},
             "evaluations": {"joint_adapt": scores(50.0), "single_resume": scores(40.0),
                             "single_resume_noadapt": scores(30.5)}}
  table = quality.format_tables(results)
  assert "| resume | 40.0 | 50.0 | 10.0 |" in table  # (a)
  assert "| resume (single-dataset model) | 30.5 | 40.0 | 9.5 |" in table  # (b)
  assert "| resume | — | 50.0 | — |" in table  # (b) joint without adaptation not run
  assert "| single_resume_noadapt | resume | 30.5 |" in table  # (c) rows per single model


def test_means_pair_datasets_measured_on_both_sides():
  def scores(**f1):
    return {"unconstrained": {"datasets": {ds: {"macro_f1": v} for ds, v in f1.items()}}}
  results = {"config": {"datasets": ["resume", "cluener"]},
             "evaluations": {"joint_adapt": scores(resume=50.0, cluener=20.0),
                             "single_resume": scores(resume=40.0),
                             "single_cluener": scores()}}
  table = quality.format_tables(results)
  # Only resume has both a single and a joint score: the mean must not mix 1 and 2 datasets.
  assert "| mean (1 of 2 datasets) | 40.0 | 50.0 | 10.0 |" in table
