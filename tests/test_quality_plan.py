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


# ------------------------------------------------------------------------------------------
# benchmarks/mixing.py: the mixing-scheme comparison and the second seed of the adaptation pair.
# ------------------------------------------------------------------------------------------


def _mixing_parts(*extra):
  from benchmarks import mixing  # pylint: disable=g-import-not-at-top
  args = mixing.build_parser().parse_args(["--data_dir", "/data", "--work_dir", "/w", *extra])
  return mixing.build_parts(args)


def test_mixing_plan_runs_each_scheme_from_its_gin_file_at_equal_steps():
  (mixing_part, stages), (seed_part, seed_stages) = _mixing_parts()
  assert [s["name"] for s in stages] == ["vocab", "adapt", "mix_uniform", "mix_proportional",
                                         "mix_temperature2"]
  assert mixing_part.plan.env["PUNIFIED_DATASETS"] == "msra,ontonotes4,cluener,resume,ecommerce"
  assert mixing_part.plan.env["PUNIFIED_VOCAB"] == "/w/mixing/vocab.model"
  for stage in stages[2:]:
    command = stage["command"]
    scheme = stage["name"][len("mix_"):]
    # The scheme file comes after the run and model files; everything else is identical.
    assert command[3:7] == ["--gin_file=gin/runs/finetune_joint.gin",
                            "--gin_file=gin/models/mini.gin",
                            f"--gin_file=gin/mixtures/{scheme}.gin",
                            f"--gin.MODEL_DIR=/w/mixing/runs/mix_{scheme}"]
    assert "--gin.TRAIN_STEPS=3000" in command and "--gin.EVAL_PERIOD=1500" in command
    assert "--gin.INITIAL_CHECKPOINT_PATH=/w/mixing/runs/adapt" in command
    assert "--gin.EVAL_CONSTRAINED=False" in command and "--gin.SEED=0" in command
  assert [s["name"] for s in seed_stages] == ["vocab", "adapt", "joint_adapt_seed1",
                                              "joint_noadapt_seed1"]
  assert seed_part.plan.env["PUNIFIED_DATASETS"] == "resume,cluener,ecommerce,ontonotes4"
  adapt, noadapt = seed_stages[2]["command"], seed_stages[3]["command"]
  assert "--gin.SEED=1" in adapt and "--gin.SEED=1" in noadapt
  assert "--gin.INITIAL_CHECKPOINT_PATH=/w/seed/runs/adapt" in adapt
  assert not any(c.startswith("--gin.INITIAL_CHECKPOINT_PATH") for c in noadapt)
  # Same recipe as quality.py's joint runs apart from in-run evaluation and the seed.
  quality_joint = seed_part.plan.stages()[2]["command"]
  assert seed_part.plan.stages()[2]["name"] == "joint_adapt"
  differing = set(adapt) ^ set(quality_joint)
  assert {c.split("=")[0] for c in differing} == {
      "--gin.MODEL_DIR", "--gin.EVAL_PERIOD", "--gin.EVAL_MAX_EXAMPLES", "--gin.EVAL_BEAM_SIZE",
      "--gin.EVAL_BATCH_SIZE", "--gin.EVAL_CONSTRAINED", "--gin.SEED"}


def test_mixing_plan_rejects_unknown_schemes_and_parts():
  with pytest.raises(ValueError, match="--schemes: zipf"):
    _mixing_parts("--schemes", "uniform,zipf")
  with pytest.raises(ValueError, match="--parts: nope"):
    _mixing_parts("--parts", "nope")
  (part, stages), = _mixing_parts("--parts", "seed", "--seed", "2", "--joint_steps", "10")
  assert [s["name"] for s in stages][2:] == ["joint_adapt_seed2", "joint_noadapt_seed2"]
  assert "--gin.EVAL_PERIOD=5" in stages[2]["command"]


def test_seed_comparison_includes_the_quality_runs_of_seed_0(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import mixing  # pylint: disable=g-import-not-at-top

  def report(path, step, f1):
    path.mkdir(parents=True)
    (path / f"step_{step}.json").write_text(json.dumps(
        {"step": step, "tasks": {"punified_ner_resume": {"macro_f1": f1}}}))

  quality_dir = tmp_path / "quality"
  (quality_dir / "runs" / "joint_adapt").mkdir(parents=True)
  report(quality_dir / "eval" / "joint_adapt_unconstrained", 3000, 44.4)
  report(tmp_path / "w" / "seed" / "runs" / "joint_adapt_seed1" / "eval", 3000, 41.0)
  extra = mixing.quality_runs(str(quality_dir))
  assert extra == [("joint_adapt_seed0", str(quality_dir / "runs" / "joint_adapt"),
                    str(quality_dir / "eval" / "joint_adapt_unconstrained"))]
  (part, _), = _mixing_parts("--parts", "seed", "--work_dir", str(tmp_path / "w"))
  summary = mixing.compare_part(part, extra)
  assert {label: run["datasets"]["resume"]["last"] for label, run in summary["runs"].items()} == {
      "joint_adapt_seed0": 44.4, "joint_adapt_seed1": 41.0}
  assert (tmp_path / "w" / "compare_seed" / "compare.png").exists()
  mixing.copy_results(str(tmp_path / "results"), {"compare": {"seed": summary, "mixing": None}})
  assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
      "mixing.json", "mixing_seed.json", "mixing_seed.png"]


def test_mixing_results_of_one_part_keep_the_other_parts(tmp_path):
  """A `--parts seed` report merges into mixing.json instead of dropping the mixing part."""
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import mixing  # pylint: disable=g-import-not-at-top
  path = tmp_path / "mixing.json"
  assert mixing.merged_with_file(str(path), {"stages": {}, "compare": {}}) == {
      "stages": {}, "compare": {}}  # no file yet: this run's results as they are
  path.write_text(json.dumps({
      "date": "2026-12-01", "stages": {"mixing/adapt": {"seconds": 10.0},
                                       "seed/adapt": {"seconds": 1.0}},
      "total_stage_seconds": 11.0, "compare": {"mixing": {"mean": 19.3}, "seed": {"old": 1}}}))
  merged = mixing.merged_with_file(str(path), {
      "date": "2026-12-05", "stages": {"seed/adapt": {"seconds": 5.0},
                                       "seed/joint": {"seconds": None}},
      "total_stage_seconds": 5.0, "compare": {"seed": {"new": 2}}})
  assert merged == {
      "date": "2026-12-05",
      "stages": {"mixing/adapt": {"seconds": 10.0}, "seed/adapt": {"seconds": 5.0},
                 "seed/joint": {"seconds": None}},
      "total_stage_seconds": 15.0, "compare": {"mixing": {"mean": 19.3}, "seed": {"new": 2}}}
