"""`compare`: run directories written here (our trainer's files, t5x's evaluation output) ->
literal tables, JSON and a PNG; bad input named."""

import argparse
import json
import os

import pytest

from punified_jax import compare
from punified_jax.commands import compare as compare_cmd


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def _our_run(root, name, *, f1, losses, scheme, shares, learning_rate):
  """A run directory as our trainer leaves it. f1: {step: {dataset: macro F1}}."""
  run = os.path.join(root, name)
  for step, scores in f1.items():
    report = {"step": step, "mean": sum(scores.values()) / len(scores), "beam_size": 4,
              "constrained": False,
              "tasks": {f"punified_ner_{ds}": {"macro_f1": v, "micro_f1": 1.0}
                        for ds, v in scores.items()}}
    _write(os.path.join(run, "eval", f"step_{step}.json"), json.dumps(report))
  _write(os.path.join(run, "eval", "best.json"), json.dumps({"step": 200}))  # not a step report
  _write(os.path.join(run, "metrics.jsonl"), "".join(
      json.dumps({"step": s, "train/loss": v}) + "\n" for s, v in losses))
  _write(os.path.join(run, "punified_model.json"), json.dumps(
      {"t5_config": {"emb_dim": 32}, "extra": {"mixture": "punified_ner_joint",
                                               "prompt_names": ["名称", "地点"]}}))
  _write(os.path.join(run, "data_manifest.json"), json.dumps(
      {"source": "raw files under /data", "mixture": {
          "name": "punified_ner_joint", "scheme": {"label": scheme},
          "probabilities": {f"punified_ner_{ds}": v for ds, v in shares.items()}}}))
  _write(os.path.join(run, "config.gin"),
         f"# Macros:\nLEARNING_RATE = {learning_rate}\nMODEL_DIR = '{run}'\n")
  return run


@pytest.fixture
def two_runs(tmp_path):
  uniform = _our_run(tmp_path, "uniform", f1={100: {"resume": 40.0, "cluener": 20.0},
                                              200: {"resume": 50.0, "cluener": 18.0}},
                     losses=[(10, 2.0), (20, 1.5)], scheme="uniform",
                     shares={"resume": 0.5, "cluener": 0.5}, learning_rate=0.001)
  proportional = _our_run(tmp_path, "proportional",
                          f1={100: {"resume": 45.0, "cluener": 10.0},
                              200: {"resume": 44.0, "cluener": 16.0}},
                          losses=[(10, 2.5), (20, 1.25)], scheme="proportional (cap 100)",
                          shares={"resume": 0.75, "cluener": 0.25}, learning_rate=0.002)
  return uniform, proportional


EXPECTED_TABLE = """\
macro F1    uniform best@step  uniform last  proportional best@step  proportional last
--------------------------------------------------------------------------------------
cluener             20.00@100         18.00               16.00@200              16.00
resume              50.00@200         50.00               45.00@100              44.00
mean                34.00@200         34.00               30.00@200              30.00
final loss                        1.5000@20                                  1.2500@20
(mean: over the datasets, at the steps where every dataset was evaluated; best@step: the step with the best mean)

setting                                          uniform            proportional
--------------------------------------------------------------------------------
data.mixture.probabilities.punified_ner_cluener      0.5                    0.25
data.mixture.probabilities.punified_ner_resume       0.5                    0.75
data.mixture.scheme.label                        uniform  proportional (cap 100)
gin.LEARNING_RATE                                  0.001                   0.002"""


def test_table_json_png(two_runs, tmp_path):
  uniform, proportional = two_runs
  summary = compare.compare([(None, uniform), (None, proportional)], str(tmp_path / "out"))
  assert compare.format_tables(summary) == EXPECTED_TABLE
  written = json.loads((tmp_path / "out" / "compare.json").read_text())
  assert written["runs"]["uniform"]["datasets"]["resume"] == {
      "best": 50.0, "best_step": 200, "last": 50.0, "last_step": 200}
  assert written["runs"]["proportional"]["f1_by_step"]["cluener"] == {"100": 10.0, "200": 16.0}
  assert written["runs"]["proportional"]["mean_by_step"] == {"100": 27.5, "200": 30.0}
  assert written["runs"]["uniform"]["loss"] == [[10, 2.0], [20, 1.5]]
  # MODEL_DIR names each run's own directory: not a difference worth a row.
  assert "gin.MODEL_DIR" not in written["differences"]
  png = (tmp_path / "out" / "compare.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_t5x_run_and_extra_eval_dirs(tmp_path):
  t5x = tmp_path / "t5x"
  _write(str(t5x / "inference_eval" / "punified_ner_resume-metrics.jsonl"),
         '{"step": 300, "macro_f1": 30.0}\n{"step": 600, "macro_f1": 35.5, "f1/名称": 40.0}\n')
  _write(str(t5x / "inference_eval" / "punified_ner_cluener-metrics.jsonl"),
         '{"step": 300, "macro_f1": 12.0}\n{"step": 600, "macro_f1": 11.0}\n')
  _write(str(t5x / "inference_eval" / "punified_ner_resume-600.jsonl"), "{}\n")  # predictions
  _write(str(t5x / "config.gin"),
         "from __gin__ import dynamic_registration\nimport tasks\n\n# Macros:\n"
         "# ====\nBATCH_SIZE = 16\nMODEL_DIR = '%s'\nTASK_FEATURE_LENGTHS = \\\n"
         "    {'inputs': 128, 'targets': 160}\n\n# Parameters for utils.SaveCheckpointConfig:\n"
         "utils.SaveCheckpointConfig.period = 3000\nutils.SaveCheckpointConfig.keep = [\n"
         "    1,\n    2]\n" % t5x)
  run = compare.read_run(str(t5x))
  assert run.f1 == {"cluener": {300: 12.0, 600: 11.0}, "resume": {300: 30.0, 600: 35.5}}
  assert run.loss == []  # t5x logs training loss to TensorBoard only
  assert {k: v for k, v in run.settings.items() if k != "gin.MODEL_DIR"} == {
      "gin.BATCH_SIZE": "16", "gin.TASK_FEATURE_LENGTHS": "{'inputs': 128, 'targets': 160}",
      "gin.utils.SaveCheckpointConfig.period": "3000",
      "gin.utils.SaveCheckpointConfig.keep": "[ 1, 2]"}
  summary = compare.summarize([run])
  assert summary["runs"]["t5x"]["best_mean"] == 23.25
  assert summary["runs"]["t5x"]["best_mean_step"] == 600

  # A run evaluated by the separate `eval` command: its reports live elsewhere.
  bare = tmp_path / "bare"
  _write(str(bare / "metrics.jsonl"), '{"step": 5, "train/loss": 3.0}\n')
  _write(str(tmp_path / "eval_bare" / "step_5.json"),
         json.dumps({"step": 5, "tasks": {"punified_ner_resume": {"macro_f1": 7.5}}}))
  summary = compare.compare([("T5X", str(t5x)), (None, str(bare))], str(tmp_path / "o"),
                            extra_eval_dirs={"bare": [str(tmp_path / "eval_bare")]})
  assert summary["runs"]["bare"]["datasets"]["resume"]["last"] == 7.5
  assert summary["runs"]["bare"]["datasets"]["cluener"]["last"] is None
  assert summary["runs"]["bare"]["mean_last"] is None  # cluener never evaluated
  # bare records none of T5X's 5 gin settings: counted, not listed as differences.
  assert summary["differences"] == {} and summary["unrecorded"] == {"bare": 5}
  assert compare.format_tables(summary).splitlines()[-2:] == [
      "no recorded setting differs between the runs",
      "settings that other runs record and these do not (elsewhere equal, so not listed): "
      "bare 5"]
  # t5x.eval's EVAL_OUTPUT_DIR for a run: its inference_eval/ holds the metrics files.
  _write(str(tmp_path / "t5x_eval" / "inference_eval" / "punified_ner_resume-metrics.jsonl"),
         '{"step": 900, "macro_f1": 41.0}\n')
  run = compare.read_run(str(t5x), extra_eval_dirs=[str(tmp_path / "t5x_eval")])
  assert run.f1["resume"] == {300: 30.0, 600: 35.5, 900: 41.0}
  with pytest.raises(ValueError, match="unknown run label.*nope"):
    compare.compare([(None, str(bare))], str(tmp_path / "o"), extra_eval_dirs={"nope": ["x"]})


def test_errors_name_the_input(tmp_path, two_runs):
  uniform, _ = two_runs
  with pytest.raises(FileNotFoundError, match="run directory .*missing: not found"):
    compare.read_run(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="two runs are labelled uniform"):
    compare.compare([(None, uniform), (None, uniform)], str(tmp_path / "o"))
  _write(os.path.join(uniform, "metrics.jsonl"), '{"step": 1}\nnot json\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not JSON"):
    compare.read_run(uniform)


def test_command(two_runs, tmp_path, capsys):
  uniform, proportional = two_runs
  parser = argparse.ArgumentParser()
  compare_cmd.add_arguments(parser)
  code = compare_cmd.run(parser.parse_args(
      [f"U={uniform}", proportional, "--output", str(tmp_path / "c")]))
  out = capsys.readouterr().out
  assert code == 0 and "U best@step" in out and (tmp_path / "c" / "compare.png").exists()
  code = compare_cmd.run(parser.parse_args([uniform, "--eval", "nolabel", "--output", "x"]))
  assert code == 2 and "--eval expects LABEL=DIR" in capsys.readouterr().err
