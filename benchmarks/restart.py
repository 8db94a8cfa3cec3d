"""Restart-to-first-step after a resume at an early and a late step: re-reading (old) vs iterator state (new).

    .venv/bin/python benchmarks/restart.py --raw_dir ../shared/data/raw --datasets resume,ecommerce,weibo

1. Trains a `tiny` model on the joint NER mixture of the real data (a small batch, so a late
   step is cheap to reach) with the real command line, `python -m punified_jax.train`: to step
   `--steps[0]` (a checkpoint), then on to `--steps[1]` (another). Copies of the run directory at
   each step are kept.
2. For each step S and each way of restoring the input position, a copy of that run directory is
   resumed to step S+1 in a fresh process, and its output lines are timestamped as they arrive:
     skip      (the old way) the checkpoint's `input/` item is deleted, so the trainer rebuilds the
               pipeline and re-reads the S consumed batches (`dataset.skip`);
     iterator  (the new way) the trainer restores every input shard's tf.data iterator state.
   "restart_s" = seconds from the command to the progress line of step S+1 (imports, gin,
   vocabulary, orbax restore, input position, compilation, one step). The persistent compilation
   cache is off so that every run compiles the same way.
3. The input position alone, in this process: seconds from nothing to the first batch after S,
   for both ways (`input_state.open_train_input` against the same checkpoints), and what saving
   the iterator state there costs (`save_state_s`; the checkpoint's `input/` size is
   `input_state_bytes`).
Prints a table, writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from punified_jax.tasks import names as task_names  # pylint: disable=g-import-not-at-top,wrong-import-position

MODES = ("skip", "iterator")


def train_command(model_dir: str, steps: int, args, *, log_every: int) -> list[str]:
  in_len, out_len = (int(x) for x in args.lengths.split(","))
  return [sys.executable, "-m", "punified_jax.train", "--gin_file=gin/runs/finetune_joint.gin",
          "--gin_file=gin/models/tiny.gin", f"--gin.MODEL_DIR={model_dir}", f"--gin.TRAIN_STEPS={steps}",
          f"--gin.BATCH_SIZE={args.batch_size}", f"--gin.LOG_EVERY={log_every}", "--gin.EVAL_PERIOD=None",
          "--gin.CHECKPOINT_PERIOD=1000000", "--gin.WARMUP_STEPS=0",
          f"--gin.TASK_FEATURE_LENGTHS={{'inputs': {in_len}, 'targets': {out_len}}}"]


def data_env(args) -> dict:
  env = dict(os.environ, PUNIFIED_RAW_DIR=os.path.abspath(args.raw_dir), PUNIFIED_XLA_CACHE="off",
             TF_CPP_MIN_LOG_LEVEL="3")
  if args.datasets:
    env["PUNIFIED_DATASETS"] = args.datasets
  return env


def timed_resume(command: list[str], env: dict, first_step: int, timeout: float) -> dict:
  """Runs `command`; seconds until it prints the progress line of `first_step`, and how it resumed."""
  marks = {"restart_s": None, "resumed_by": None}

  def on_line(line: str, now: float) -> None:
    if marks["restart_s"] is None and line.startswith(f"step {first_step}/"):
      marks["restart_s"] = now
    if line.startswith("input position restored"):
      marks["resumed_by"] = "iterator state"
    elif "skipping the" in line and "consumed batches" in line:
      marks["resumed_by"] = "re-reading"

  marks["returncode"], lines = common.stream_command(command, env, timeout, on_line)
  if marks["returncode"] != 0 or marks["restart_s"] is None:
    marks["output_tail"] = lines[-15:]
  return marks


def run_or_fail(command: list[str], env: dict, timeout: float) -> float:
  start = time.perf_counter()
  result = subprocess.run(command, env=env, cwd=common.REPO_ROOT, capture_output=True, text=True, timeout=timeout)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
  return time.perf_counter() - start


def without_input_item(source: str, destination: str, step: int) -> str:
  """A copy of run directory `source` whose checkpoint `step` has no input position (old layout)."""
  shutil.copytree(source, destination)
  shutil.rmtree(os.path.join(destination, "checkpoints", str(step), "input"))
  return destination


def data_position_only(run_dirs: dict, args) -> list[dict]:
  """In this process: seconds to a TrainInput positioned after S batches, first batch included."""
  in_len, out_len = (int(x) for x in args.lengths.split(","))
  common.configure_tasks(args.raw_dir, args.datasets.split(",") if args.datasets else None)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from punified_jax import checkpoints, input_state  # pylint: disable=g-import-not-at-top
  common_kwargs = dict(mixture_or_task_name=task_names.JOINT_MIXTURE, global_batch_size=args.batch_size,
                       task_feature_lengths={"inputs": in_len, "targets": out_len}, seed=0, data_shards=1,
                       shard_range=(0, 1))
  next(input_state.TrainInput(**common_kwargs))  # warm-up: reads the datasets and the vocabulary once
  rows = []
  for (step, mode), run_dir in sorted(run_dirs.items()) * args.repeats:
    checkpointer = checkpoints.Checkpointer(os.path.join(run_dir, "checkpoints"), read_only=True,
                                            extra_item_names=(input_state.INPUT_ITEM,))
    meta = dict(checkpointer.restore_item(step, checkpoints.META_ITEM, ocp.args.JsonRestore()) or {})
    clock = time.perf_counter()
    train_input = input_state.open_train_input(
        checkpointer=checkpointer, step=step, meta=meta, consumed_batches=int(meta["consumed_batches"]),
        settings_changed=False, announce=True, **common_kwargs)
    next(train_input)
    row = {"step": step, "mode": mode, "position_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    files = train_input.state_files()  # what a save at this point writes (the save side's cost)
    row.update(save_state_s=time.perf_counter() - clock, save_state_bytes=sum(len(data) for data in files.values()))
    rows.append(row)
    checkpointer.close()
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True, help="release-format data (e.g. ../shared/data/raw)")
  parser.add_argument("--datasets", default="resume,ecommerce,weibo", help="PUNIFIED_DATASETS of the mixture")
  parser.add_argument("--steps", default="20,2000", help="the early and the late resume step")
  parser.add_argument("--batch_size", type=int, default=2, help="packed rows per batch (small: cheap late steps)")
  parser.add_argument("--lengths", default="128,128", help="TASK_FEATURE_LENGTHS inputs,targets")
  parser.add_argument("--repeats", type=int, default=2, help="measurements per (step, way); the minimum is reported")
  parser.add_argument("--timeout", type=float, default=1800)
  parser.add_argument("--name", default="restart")
  args = parser.parse_args(argv)
  early, late = (int(x) for x in args.steps.split(","))
  machine = common.machine_info()
  env = data_env(args)
  workdir = tempfile.mkdtemp(prefix="restart_", dir=os.environ.get("BENCH_WORKDIR"))
  train_dir = os.path.join(workdir, "train")
  print(f"== training to step {early}, then {late} (tiny model, batch {args.batch_size})", flush=True)
  preparation = {"train_early_s": run_or_fail(train_command(train_dir, early, args, log_every=early), env,
                                              args.timeout)}
  snapshots = {early: shutil.copytree(train_dir, os.path.join(workdir, f"at_{early}"))}
  preparation["train_late_s"] = run_or_fail(train_command(train_dir, late, args, log_every=100), env, args.timeout)
  snapshots[late] = train_dir

  # Size of each checkpoint's input position (all files of its `input/` item).
  input_dir = lambda snapshot, step: os.path.join(snapshot, "checkpoints", str(step), "input")
  input_bytes = {step: sum(os.path.getsize(os.path.join(input_dir(snapshot, step), name))
                           for name in os.listdir(input_dir(snapshot, step)))
                 for step, snapshot in snapshots.items()}
  run_dirs = {}
  for step, snapshot in snapshots.items():
    run_dirs[(step, "skip")] = without_input_item(snapshot, os.path.join(workdir, f"skip_{step}"), step)
    run_dirs[(step, "iterator")] = shutil.copytree(snapshot, os.path.join(workdir, f"iterator_{step}"))
  position_rows = data_position_only(run_dirs, args)

  # The machine is shared: each (step, way) is measured `repeats` times, interleaved, and the
  # minimum reported (the run least disturbed by other jobs); every measurement is in the JSON.
  measured = {key: [] for key in run_dirs}
  for repeat in range(args.repeats):
    for step in (early, late):
      for mode in MODES:
        # A fresh copy per measured run: the resume writes a checkpoint at step S+1.
        model_dir = shutil.copytree(run_dirs[(step, mode)], os.path.join(workdir, f"measure_{mode}_{step}_{repeat}"))
        print(f"== resume at step {step}, input position by {mode} (run {repeat + 1})", flush=True)
        result = timed_resume(train_command(model_dir, step + 1, args, log_every=1), env, step + 1, args.timeout)
        measured[(step, mode)].append(result)
        if "output_tail" in result:
          print("\n".join(result["output_tail"]), flush=True)
        shutil.rmtree(model_dir, ignore_errors=True)
  rows = []
  for (step, mode), results in sorted(measured.items()):
    times = [r["restart_s"] for r in results if r["restart_s"] is not None]
    positions = [r["position_s"] for r in position_rows if r["step"] == step and r["mode"] == mode]
    saves = [r["save_state_s"] for r in position_rows if r["step"] == step and r["mode"] == mode]
    rows.append({"step": step, "mode": mode, "resumed_by": results[0]["resumed_by"],
                 "restart_s": min(times) if times else None, "position_s": min(positions),
                 "input_state_bytes": input_bytes[step] if mode == "iterator" else None,
                 "save_state_s": min(saves),
                 "returncode": max(r["returncode"] for r in results), "all_restart_s": times,
                 "all_position_s": positions})

  by = {(r["step"], r["mode"]): r for r in rows}
  ratios = {}
  if all(by[key].get("restart_s") for key in by):
    ratios = {
        f"iterator_restart_{late}_over_{early}": by[(late, "iterator")]["restart_s"] / by[(early, "iterator")]["restart_s"],
        f"skip_restart_{late}_over_{early}": by[(late, "skip")]["restart_s"] / by[(early, "skip")]["restart_s"],
        f"skip_over_iterator_restart_at_{late}": by[(late, "skip")]["restart_s"] / by[(late, "iterator")]["restart_s"],
        f"skip_over_iterator_position_at_{late}": by[(late, "skip")]["position_s"] / by[(late, "iterator")]["position_s"],
    }
  common.print_table(rows, ["step", "mode", "resumed_by", "restart_s", "position_s", "input_state_bytes",
                            "save_state_s", "returncode"],
                     title="resume at step S: seconds from the command to step S+1 (restart_s) / to the first "
                           "batch after S (position_s)")
  for key, value in ratios.items():
    print(f"{key}: {value:.2f}")
  payload = {"command": common.command_line(), "machine": machine, "versions": common.jax_versions(),
             "settings": vars(args), "preparation": preparation, "results": rows, "ratios": ratios}
  print("wrote", common.write_json(args.name, payload))
  shutil.rmtree(workdir, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
