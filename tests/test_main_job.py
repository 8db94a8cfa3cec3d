"""The main job (`python -m punified_jax main`): its commands, and one whole tiny run."""

import ast
import json
import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(args, tmp_path, timeout=600):
  env = dict(os.environ, PUNIFIED_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
  for key in ("PUNIFIED_RAW_DIR", "PUNIFIED_FORMAT", "PUNIFIED_DATASETS", "PUNIFIED_VOCAB"):
    env.pop(key, None)
  return subprocess.run([sys.executable, "-m", "punified_jax", "main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_dry_run_prints_the_two_training_commands(tmp_path):
  result = _main(["--dry_run", "--work_dir", str(tmp_path / "w")], tmp_path)
  assert result.returncode == 0, result.stderr
  commands = [line for line in result.stdout.splitlines() if line.startswith("$ ")]
  assert len(commands) == 2
  adapt, joint = commands
  # No --raw_dir: the built-in corpus, asked for by name and announced.
  assert ("data: the built-in synthetic corpus (PUNIFIED_RAW_DIR=builtin: no --raw_dir given; "
          "a pipeline check, not a benchmark)") in result.stdout
  assert adapt.startswith("$ PUNIFIED_RAW_DIR=builtin ") and joint.startswith("$ PUNIFIED_RAW_DIR=builtin ")
  assert "--gin_file=gin/runs/adapt.gin --gin_file=gin/models/mini.gin" in adapt
  assert "--gin.TRAIN_STEPS=150" in adapt and f"--gin.MODEL_DIR={tmp_path}/w/adapt" in adapt
  assert "--gin_file=gin/runs/finetune_joint.gin" in joint
  assert f"--gin.INITIAL_CHECKPOINT_PATH={tmp_path}/w/adapt" in joint
  assert "--gin.EVAL_CONSTRAINED=True" in joint and "--gin.TRAIN_STEPS=600" in joint
  # A data directory switches to the paper's recipe (its Table 7) unless a preset is named.
  paper = _main(["--dry_run", "--raw_dir", str(tmp_path), "--work_dir", str(tmp_path / "p")],
                tmp_path)
  assert "--gin.TRAIN_STEPS=50000" in paper.stdout and "--gin.TRAIN_STEPS=100000" in paper.stdout
  assert "gin/models/base.gin" in paper.stdout and "--gin.LEARNING_RATE=0.0001" in paper.stdout
  assert f"data: {tmp_path} (PUNIFIED_RAW_DIR, from --raw_dir)" in paper.stdout
  assert f"$ PUNIFIED_RAW_DIR={tmp_path} " in paper.stdout
  # `--raw_dir builtin` is the same as no --raw_dir (the CPU preset, the built-in corpus).
  named = _main(["--dry_run", "--raw_dir", "builtin", "--work_dir", str(tmp_path / "b")], tmp_path)
  assert "preset cpu" in named.stdout and "$ PUNIFIED_RAW_DIR=builtin " in named.stdout
  # An exported PUNIFIED_RAW_DIR is used (and named) when --raw_dir is not given.
  exported = subprocess.run([sys.executable, "-m", "punified_jax", "main", "--dry_run", "--work_dir",
                             str(tmp_path / "e")], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, PUNIFIED_RAW_DIR=str(tmp_path)))
  assert f"data: {tmp_path} (PUNIFIED_RAW_DIR, from PUNIFIED_RAW_DIR)" in exported.stdout


def test_whole_recipe_with_a_tiny_model(tmp_path):
  work = tmp_path / "w"
  result = _main(["--size", "tiny", "--adapt_steps", "4", "--finetune_steps", "6",
                  "--eval_period", "6", "--eval_max_examples", "3", "--beam_size", "2",
                  "--datasets", "resume,msra", "--split", "test", "--work_dir", str(work)], tmp_path)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  out = result.stdout
  for stage in ("1/3 language-model adaptation", "2/3 joint fine-tuning",
                "2b/3 evaluation of the best checkpoint on the test split", "3/3 report",
                "on-demand extraction", "test F1 per dataset"):
    assert stage in out
  table = out[out.index("test F1 per dataset"):].splitlines()
  assert table[1].split() == ["dataset", "macro", "F1", "micro", "F1", "precision", "recall"]
  assert [line.split()[0] for line in table[3:5]] == ["msra", "resume"]
  report = json.loads((work / "report" / "report.json").read_text())
  assert sorted(report["datasets"]) == ["msra", "resume"] and report["step"] == 6
  test_eval = json.loads((work / "joint" / "eval_test" / "step_6.json").read_text())
  assert test_eval["split"] == "test" and test_eval["unscored"] == {}
  # Per-example predictions of the test evaluation and of the in-training validation one.
  for directory in (work / "joint" / "eval_test", work / "joint" / "eval"):
    lines = (directory / "predictions" / "punified_ner_resume_step_6.jsonl").read_text().splitlines()
    assert len(lines) == 3  # --eval_max_examples 3
    record = json.loads(lines[0])
    assert {"text", "gold", "predicted", "per_type", "types"} <= set(record)
  assert (work / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"
  info = json.loads((work / "joint" / "punified_model.json").read_text())
  assert info["extra"]["datasets"] == ["msra", "resume"]
  # Each stage's run directory records its operative gin config and its data.
  for stage, mixture in (("adapt", "punified_prefix_lm"), ("joint", "punified_ner_joint")):
    assert "TRAIN_STEPS" in (work / stage / "config.gin").read_text()
    data = json.loads((work / stage / "data_manifest.json").read_text())
    assert data["builtin"] is True and data["mixture"]["name"] == mixture
    assert sorted(data["datasets"]) == ["msra", "resume"]
  assert "data: the built-in synthetic corpus" in out
  # Noise from TensorFlow/SentencePiece start-up is filtered out of what the user sees.
  assert "precompiled_charsmap" not in result.stderr and "cuInit" not in result.stderr


def test_paper_preset_is_the_gin_recipe():
  """The paper preset's numbers are the paper's Table 7, read from gin/runs/adapt.gin and
  finetune_joint.gin (+ train_base.gin's defaults)."""
  from punified_jax.commands import main as main_job  # pylint: disable=g-import-not-at-top
  assert main_job.preset_named("paper") == main_job.Preset(
      size="base", adapt_steps=50_000, finetune_steps=100_000, adapt_batch=48, finetune_batch=32,
      adapt_lengths=(256, 256), finetune_lengths=(512, 512), learning_rate=1e-4, adapt_warmup=1_000,
      finetune_warmup=5_000, eval_period=20_000, beam_size=5, constrained_eval=False,
      checkpoint_period=2_000)
  assert main_job.preset_named("cpu").size == "mini"
  with pytest.raises(ValueError, match="unknown preset 'gpu'"):
    main_job.preset_named("gpu")


def test_paper_stage_commands_agree_with_their_gin_run_files(tmp_path, capsys):
  """Every --gin.KEY=VALUE the paper preset adds to a stage command restates its run file's value
  (the run file alone is the recipe); the only additions are the run's own directories and log
  interval."""
  import argparse  # pylint: disable=g-import-not-at-top
  from punified_jax import gin_utils  # pylint: disable=g-import-not-at-top
  from punified_jax.commands import main as main_job  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  main_job.add_arguments(parser)
  assert main_job.run(parser.parse_args(["--dry_run", "--preset", "paper", "--raw_dir", str(tmp_path),
                                         "--work_dir", str(tmp_path / "w")])) == 0
  commands = [shlex.split(line[2:]) for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
  assert len(commands) == 2
  own = {"MODEL_DIR", "INITIAL_CHECKPOINT_PATH", "LOG_EVERY"}
  for command, run_file in zip(commands, (main_job.ADAPT_RUN_FILE, main_job.JOINT_RUN_FILE)):
    assert f"--gin_file={run_file}" in command
    macros = gin_utils.read_macros(os.path.join(REPO, run_file))
    overrides = dict(arg[len("--gin."):].split("=", 1) for arg in command if arg.startswith("--gin."))
    restated = {key: value for key, value in overrides.items() if key not in own}
    assert {"TRAIN_STEPS", "BATCH_SIZE", "LEARNING_RATE", "WARMUP_STEPS", "CHECKPOINT_PERIOD"} <= set(restated)
    for key, value in restated.items():
      assert ast.literal_eval(gin_utils.gin_value(value)) == macros[key], (run_file, key, value)
