"""`python -m punified_jax.train` / `.eval`: exit codes and whole runs in subprocesses
(8 fake devices, FSDP preset): SIGTERM -> checkpoint + exit 0 -> rerun continues identically;
standalone evaluation of the result."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from punified_jax import train as train_cli

import trainer_helpers as th


def test_split_flag_is_the_eval_split_macro():
  from punified_jax import eval as eval_cli  # pylint: disable=g-import-not-at-top
  assert eval_cli.split_flag_to_gin(["--gin_file=a.gin", "--split", "test", "--split=validation"]) == [
      "--gin_file=a.gin", "--gin.EVAL_SPLIT=test", "--gin.EVAL_SPLIT=validation"]
  assert eval_cli.main(["--gin_file=a.gin", "--split"]) == 2


def test_missing_gin_file_is_a_clear_error(tmp_path, capsys):
  assert train_cli.main([f"--gin_file={tmp_path / 'nope.gin'}", "--distributed=off"]) == 2
  assert "nope.gin: no such file" in capsys.readouterr().err
  assert train_cli.main(["--distributed=off"]) == 2
  assert "at least one --gin_file" in capsys.readouterr().err


def _train_command(run_gin, model_dir, steps):
  return [sys.executable, "-m", "punified_jax.train", f"--gin_file={run_gin}", "--gin_file=gin/models/tiny.gin",
          "--gin_file=gin/partitioning/fsdp.gin", f"--gin.MODEL_DIR={model_dir}", f"--gin.TRAIN_STEPS={steps}",
          "--gin.DROPOUT_RATE=0.1", "--gin.CHECKPOINT_PERIOD=1000"]


def test_sigterm_then_rerun_continues_like_an_uninterrupted_run(tmp_path):
  run_gin = th.write_run_gin(str(tmp_path / "run.gin"), extra="EVAL_PERIOD = None\n")
  env = th.subprocess_env(devices=8, compilation_cache=str(tmp_path / "xla_cache"))
  model_dir = tmp_path / "run"
  # 1) A long run, terminated from outside once it is training.
  process = subprocess.Popen(_train_command(run_gin, model_dir, 100000), env=env, cwd=th.REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in process.stdout:
    lines.append(line)
    if line.startswith("step 3/"):
      process.send_signal(signal.SIGTERM)
      break
  out, err = process.communicate(timeout=120)
  lines.append(out)
  assert process.returncode == 0, err[-3000:]
  stdout = "".join(lines)
  assert "mesh {'data': 8, 'model': 1}" in stdout
  saved = [line for line in stdout.splitlines() if line.startswith("SIGTERM: saved checkpoint at step ")]
  assert len(saved) == 1, stdout[-2000:]
  stop_step = int(saved[0].split("step ")[1].split(";")[0])
  assert 3 <= stop_step < 100000
  assert sorted(os.listdir(model_dir / "checkpoints")) == [str(stop_step)]

  # 2) The same command with a nearer end resumes at the saved step.
  final = stop_step + 3
  resumed = th.run_python(_train_command(run_gin, model_dir, final)[1:], env=env, cwd=th.REPO_ROOT)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resuming from checkpoint step {stop_step}" in resumed.stdout
  assert f"done: step {final}" in resumed.stdout

  # 3) An uninterrupted run to the same step: identical losses at every step.
  reference = th.run_python(_train_command(run_gin, tmp_path / "reference", final)[1:], env=env, cwd=th.REPO_ROOT)
  assert reference.returncode == 0, reference.stderr[-3000:]
  got = th.read_jsonl(str(model_dir / "metrics.jsonl"))
  want = th.read_jsonl(str(tmp_path / "reference" / "metrics.jsonl"))
  assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, final + 1))
  np.testing.assert_allclose([r["train/loss"] for r in got], [r["train/loss"] for r in want], rtol=1e-6)

  # 4) Standalone evaluation of the run's newest checkpoint.
  eval_gin = tmp_path / "eval.gin"
  eval_gin.write_text("from __gin__ import dynamic_registration\nimport cli_tasks\n"
                      "include 'gin/runs/eval_base.gin'\nMIXTURE_OR_TASK_NAME = 'cli_joint'\n")
  evaluated = th.run_python(
      ["-m", "punified_jax.eval", f"--gin_file={eval_gin}", "--gin_file=gin/models/tiny.gin",
       f"--gin.CHECKPOINT_PATH={model_dir}", f"--gin.EVAL_OUTPUT_DIR={tmp_path / 'eval'}", "--gin.EVAL_BEAM_SIZE=2",
       "--gin.EVAL_MAX_EXAMPLES=4", "--split", "validation"], env=env, cwd=th.REPO_ROOT)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  report = json.loads((tmp_path / "eval" / f"step_{final}.json").read_text())
  assert sorted(report["tasks"]) == ["cli_memorise", "cli_memorise_b"]
  assert report["num_examples"] == {"cli_memorise": 4, "cli_memorise_b": 4}
  assert report["beam_size"] == 2 and report["selection_metric"] == "macro_f1"
  assert report["mean"] == pytest.approx(np.mean([t["macro_f1"] for t in report["tasks"].values()]))
  assert "mean macro_f1" in evaluated.stdout
  assert report["split"] == "validation" and report["unscored"] == {}
  # Per-example predictions beside the report (generic records: these are not NER tasks).
  lines = (tmp_path / "eval" / "predictions" / f"cli_memorise_step_{final}.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert [r["index"] for r in records] == [0, 1, 2, 3]
  assert sorted(records[0]) == ["generation", "index", "inputs", "target"]
  # The run directory records its operative gin config (no data manifest: in-memory tasks).
  assert "train.batch_size" in (model_dir / "config.gin").read_text()
  assert not (model_dir / "data_manifest.json").exists()
