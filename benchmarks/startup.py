"""Start-up: seconds from `python -m punified_jax.train ...` to the first finished train step.

    .venv/bin/python benchmarks/startup.py --raw_dir ../shared/data/raw --sizes tiny,small

Runs the real command line (gin/runs/finetune_joint.gin + gin/models/<size>.gin, the real data
mixture, a fresh MODEL_DIR each time, LOG_EVERY=1) as a subprocess and timestamps its output
lines as they arrive: "setup" = until the trainer prints `training steps ...` (imports, gin,
vocabulary, parameter initialisation), "first step" = until the progress line
of step 1 (which is printed after the step's metrics are on the host, so it includes the input
pipeline's start: reading and tokenizing the datasets, and the compilation); "compile_s" sums
the compilations JAX reports (JAX_LOG_COMPILES=1), "step_compile_s" is the train step's. Three
runs per size:
  no_cache  the persistent compilation cache off (PUNIFIED_XLA_CACHE=off);
  cold      the cache on (our default, punified_jax/xla_cache.py), empty directory: compiles
            and writes the cache, as a first run on a machine does;
  warm      the cache on, same directory again: a rerun reads the compiled programs.
A last fresh process times the non-compile phases: imports, reading the datasets, the first
packed batch of the input pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from punified_jax.tasks import names as task_names  # pylint: disable=g-import-not-at-top,wrong-import-position


_COMPILE_LINE = re.compile(r"Finished XLA compilation of (\S+) in ([\d.]+) s")


def timed_run(command: list[str], env: dict, timeout: float) -> dict:
  """Runs `command`, returns seconds until the setup line, step 1 and exit, plus the output tail."""
  marks = {"setup_s": None, "first_step_s": None, "compile_s": 0.0, "step_compile_s": None, "cache_hits": 0}

  def on_line(line: str, now: float) -> None:
    if marks["setup_s"] is None and line.startswith("training steps"):
      marks["setup_s"] = now
    if marks["first_step_s"] is None and line.startswith("step 1/"):
      marks["first_step_s"] = now
    compiled = _COMPILE_LINE.search(line)
    if compiled:  # JAX_LOG_COMPILES: "Finished XLA compilation of jit(NAME) in S sec"
      marks["compile_s"] += float(compiled.group(2))
      if "step_fn" in compiled.group(1):
        marks["step_compile_s"] = float(compiled.group(2))
    if "ersistent compilation cache hit" in line:
      marks["cache_hits"] += 1

  start = time.perf_counter()
  code, lines = common.stream_command(command, env, timeout, on_line)
  marks["exit_s"] = time.perf_counter() - start
  marks["returncode"] = code
  if code != 0 or marks["first_step_s"] is None:
    marks["output_tail"] = lines[-15:]
  return marks


def phase_probe(raw_dir: str, in_len: int, out_len: int, batch_size: int) -> dict:
  """In a fresh process: seconds for the imports, reading the datasets, and the first packed batch.

  Attributes the part of the start-up that is not compilation (see the module docstring).
  """
  marks = {}
  start = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top,unused-import
  import seqio  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from punified_jax import trainer  # pylint: disable=g-import-not-at-top
  marks["imports_s"] = time.perf_counter() - start
  config = common.configure_tasks(raw_dir)
  import tasks  # pylint: disable=g-import-not-at-top
  names = common.mixture_datasets()
  clock = time.perf_counter()
  sentences = sum(len(split) for name in names for split in tasks.load_examples(config, name).values())
  marks["read_datasets_s"] = time.perf_counter() - clock
  marks["sentences_read"] = sentences
  clock = time.perf_counter()
  iterator = trainer.make_train_iterator(
      mixture_or_task_name=task_names.JOINT_MIXTURE, task_feature_lengths={"inputs": in_len, "targets": out_len},
      global_batch_size=batch_size, seed=0, data_shards=1, shard_range=(0, 1), pack=True)
  next(iterator)
  marks["first_packed_batch_s"] = time.perf_counter() - clock
  clock = time.perf_counter()
  for _ in range(10):
    next(iterator)
  marks["next_batch_s"] = (time.perf_counter() - clock) / 10
  return marks


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--sizes", default="tiny,small")
  parser.add_argument("--modes", default="no_cache,cold,warm")
  parser.add_argument("--lengths", default="512,512", help="TASK_FEATURE_LENGTHS inputs,targets")
  parser.add_argument("--batch_size", type=int, default=4, help="packed rows (4 x 512 ~ 32 examples)")
  parser.add_argument("--timeout", type=float, default=900)
  parser.add_argument("--name", default="startup")
  parser.add_argument("--phase_probe", action="store_true", help=argparse.SUPPRESS)  # internal: one probe
  args = parser.parse_args(argv)
  in_len, out_len = (int(x) for x in args.lengths.split(","))
  if args.phase_probe:
    print("PHASES " + json.dumps(phase_probe(args.raw_dir, in_len, out_len, args.batch_size)), flush=True)
    return 0
  machine = common.machine_info()
  workdir = tempfile.mkdtemp(prefix="startup_", dir=os.environ.get("BENCH_WORKDIR"))
  rows = []
  for size in [s for s in args.sizes.split(",") if s]:
    cache_dir = os.path.join(workdir, f"jax_cache_{size}")
    for mode in [m for m in args.modes.split(",") if m]:
      # JAX_LOG_COMPILES: JAX logs each compilation's seconds (summed into compile_s).
      env = dict(os.environ, PUNIFIED_RAW_DIR=os.path.abspath(args.raw_dir), JAX_LOG_COMPILES="1")
      env.pop("JAX_COMPILATION_CACHE_DIR", None)
      env["PUNIFIED_XLA_CACHE"] = cache_dir if mode in ("cold", "warm") else "off"
      if mode == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
      model_dir = os.path.join(workdir, f"{size}_{mode}")
      command = [sys.executable, "-m", "punified_jax.train", "--gin_file=gin/runs/finetune_joint.gin",
                 f"--gin_file=gin/models/{size}.gin", f"--gin.MODEL_DIR={model_dir}", "--gin.TRAIN_STEPS=1",
                 f"--gin.BATCH_SIZE={args.batch_size}", "--gin.LOG_EVERY=1", "--gin.EVAL_PERIOD=None",
                 f"--gin.TASK_FEATURE_LENGTHS={{'inputs': {in_len}, 'targets': {out_len}}}"]
      print(f"== {size} {mode}", flush=True)
      result = timed_run(command, env, args.timeout)
      row = {"size": size, "mode": mode, **result}
      if mode in ("cold", "warm") and os.path.isdir(cache_dir):
        row["cache_entries"] = len(os.listdir(cache_dir))
      rows.append(row)
      print({k: v for k, v in row.items() if k != "output_tail"}, flush=True)
      if "output_tail" in row:
        print("\n".join(row["output_tail"]), flush=True)
  probe = subprocess.run([sys.executable, os.path.abspath(__file__), "--phase_probe", "--raw_dir", args.raw_dir,
                          "--lengths", args.lengths, "--batch_size", str(args.batch_size)],
                         capture_output=True, text=True, cwd=common.REPO_ROOT, check=False)
  phases = next((json.loads(line[len("PHASES "):]) for line in probe.stdout.splitlines()
                 if line.startswith("PHASES ")), {"error": probe.stderr[-2000:]})
  print("phases (fresh process):", phases, flush=True)
  common.print_table(rows, ["size", "mode", "setup_s", "first_step_s", "exit_s", "compile_s", "step_compile_s",
                            "cache_hits", "cache_entries", "returncode"],
                     title="python -m punified_jax.train: seconds from the command to ...")
  payload = {"command": common.command_line(), "machine": machine, "versions": common.jax_versions(),
             "settings": vars(args), "results": rows,
             "phases": phases}
  print("wrote", common.write_json(args.name, payload))
  return 0


if __name__ == "__main__":
  sys.exit(main())
