"""Mixture-rate experiments and a second seed of the adaptation pair (issue 14, item 4).

    nice -n 15 .venv/bin/python benchmarks/mixing.py --data_dir ../shared/data/raw \
        --work_dir /work/quality/mix

Two parts, run in this order (priority), each in its own sub-directory of --work_dir:

  mixing (4b)  datasets of very different sizes (default MSRA 44364, OntoNotes 4.0 15744, CLUENER
               10748, Ecommerce 3989, Resume 3821 training sentences): a shared vocabulary and
               adaptation over them, then joint fine-tuning from the adapted model under each
               scheme of --schemes (gin/mixtures/<scheme>.gin), --joint_steps each (equal steps).
  seed (4a)    benchmarks/quality.py's pair "joint fine-tuning with / without adaptation" on its
               four datasets again with --seed (quality.py's own runs are seed 0). The adaptation
               is quality.py's recipe (seed 0), so only the fine-tuning seed (data order; and the
               initialisation of the model without adaptation) changes: the difference between
               the seeds is run-to-run noise.

Everything else is benchmarks/quality.py's setting (its defaults: the mini model, adaptation
1000 steps of 16 x 128/128, AdamW 2e-3 with 100 warm-up steps and linear decay, batch 16 packed
rows of 256/256, dropout 0, the first 300 dev sentences per dataset, beam 4, unconstrained:
the paper's protocol). Fine-tuning runs evaluate themselves every --eval_period steps (the
trainer's evaluator: the same numbers `python -m punified_jax.eval` gives), so `compare` has F1
over steps. At the end (and with --report_only) `python -m punified_jax compare` writes each
part's table, JSON and PNG to <work_dir>/compare_<part>/, and everything measured goes to
<work_dir>/mixing.json.

Stages are public commands in subprocesses, printed and logged; resumable as in quality.py (a
finished stage leaves <part dir>/stages/<stage>.json; an interrupted training resumes from its
checkpoint); waits while --lock_file exists.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from typing import Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from benchmarks import quality  # pylint: disable=g-import-not-at-top,wrong-import-position

MIXING_DATASETS = ("msra", "ontonotes4", "cluener", "resume", "ecommerce")
SCHEMES = ("uniform", "proportional", "temperature2", "temperature4")
DEFAULT_SCHEMES = ("uniform", "proportional", "temperature2")
PARTS = ("mixing", "seed")
# compare also gives each run's macro F1 minus the first run's with a paired bootstrap interval
BOOTSTRAP_SAMPLES = 1000


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="benchmarks/mixing.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", help="root of the real downloads, e.g. ../shared/data/raw")
  parser.add_argument("--data_format", help="as quality.py's --data_format")
  parser.add_argument("--work_dir", required=True, help="parts, runs, logs and results go here")
  parser.add_argument("--parts", default=",".join(PARTS),
                      help="comma-separated parts to run, in this order (default: %(default)s)")
  parser.add_argument("--mixing_datasets", default=",".join(MIXING_DATASETS))
  parser.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                      help=f"gin/mixtures/<scheme>.gin to compare; of {', '.join(SCHEMES)}")
  parser.add_argument("--seed_datasets", default=",".join(quality.DEFAULT_DATASETS))
  parser.add_argument("--seed", type=quality._positive, default=1,  # pylint: disable=protected-access
                      help="fine-tuning seed of the repeated pair (quality.py's runs: 0)")
  parser.add_argument("--quality_work_dir",
                      help="a benchmarks/quality.py work dir (read only): its seed-0 joint_adapt / "
                      "joint_noadapt runs and their evaluations join the seed part's comparison")
  parser.add_argument("--size", default="mini")
  parser.add_argument("--adapt_steps", type=quality._positive, default=1000)  # pylint: disable=protected-access
  parser.add_argument("--joint_steps", type=quality._positive, default=3000,  # pylint: disable=protected-access
                      help="steps of every joint fine-tuning run (quality.py's joint runs: 3000)")
  parser.add_argument("--eval_period", type=quality._positive,  # pylint: disable=protected-access
                      help="in-run evaluation every N steps (default: joint_steps / 2)")
  parser.add_argument("--eval_max_examples", type=quality._positive, default=300)  # pylint: disable=protected-access
  parser.add_argument("--only", help="comma-separated stage names (as printed) to run")
  parser.add_argument("--lock_file", default=os.environ.get("QUALITY_LOCK_FILE",
                                                            quality.DEFAULT_LOCK))
  parser.add_argument("--no_wait_for_lock", dest="wait_for_lock", action="store_false",
                      default=True)
  parser.add_argument("--lock_poll", type=quality._positive, default=60)  # pylint: disable=protected-access
  parser.add_argument("--results_dir",
                      help="also copy mixing.json and each part's compare.{json,png} here as "
                      "mixing.json, mixing_<part>.json/.png (e.g. benchmarks/results)")
  parser.add_argument("--report_only", action="store_true",
                      help="compare what is finished; run nothing")
  parser.add_argument("--dry_run", action="store_true", help="print the stage commands only")
  return parser


def _names(spec: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
  names = tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
  unknown = [n for n in names if n not in allowed]
  if unknown or not names:
    raise ValueError(f"{flag}: {', '.join(unknown) or 'empty'}; choose from {', '.join(allowed)}")
  return names


class Part:
  """One part's quality.Plan (its datasets, vocabulary, adaptation and environment) and the
  fine-tuning stages this script adds to it."""

  def __init__(self, name: str, args: argparse.Namespace, datasets: Sequence[str]):
    self.name = name
    argv = ["--work_dir", os.path.join(args.work_dir, name), "--datasets", ",".join(datasets),
            "--size", args.size, "--adapt_steps", str(args.adapt_steps),
            "--joint_steps", str(args.joint_steps),
            "--eval_max_examples", str(args.eval_max_examples),
            "--lock_file", args.lock_file, "--lock_poll", str(args.lock_poll)]
    argv += ["--data_dir", args.data_dir] if args.data_dir else []
    argv += ["--data_format", args.data_format] if args.data_format else []
    argv += [] if args.wait_for_lock else ["--no_wait_for_lock"]
    argv += ["--dry_run"] if args.dry_run else []
    self.plan = quality.Plan(quality.build_parser().parse_args(argv))
    self.eval_period = args.eval_period or max(1, args.joint_steps // 2)
    self.runs: list[str] = []  # fine-tuning runs, for compare

  def joint(self, run: str, *, initial: Optional[str], seed: int = 0,
            mixture_file: Optional[str] = None) -> dict:
    """A joint fine-tuning stage that evaluates itself (quality.py's eval settings)."""
    a = self.plan.args
    length = a.finetune_length
    overrides = {
        "TASK_FEATURE_LENGTHS": '{"inputs": %d, "targets": %d}' % (length, length),
        "EVAL_PERIOD": self.eval_period, "EVAL_MAX_EXAMPLES": a.eval_max_examples,
        "EVAL_BEAM_SIZE": a.beam_size, "EVAL_BATCH_SIZE": a.eval_batch_size,
        "EVAL_CONSTRAINED": False, "SEED": seed}
    if initial:
      overrides["INITIAL_CHECKPOINT_PATH"] = initial
    command = self.plan._train(  # pylint: disable=protected-access
        "gin/runs/finetune_joint.gin", run, self.plan.joint_steps, overrides)
    if mixture_file:
      command.insert(command.index(f"--gin_file=gin/models/{a.size}.gin") + 1,
                     f"--gin_file={mixture_file}")
    self.runs.append(run)
    return {"name": run, "kind": "train", "run": run, "command": command}

  def base_stages(self) -> list[dict]:
    """quality.py's vocabulary and adaptation stages of this part's datasets."""
    return [s for s in self.plan.stages() if s["name"] in ("vocab", "adapt")]


def build_parts(args: argparse.Namespace) -> list[tuple[Part, list[dict]]]:
  """[(part, its stages in execution order)] for the parts asked for."""
  parts = []
  for name in _names(args.parts, PARTS, "--parts"):
    if name == "mixing":
      part = Part(name, args, quality.parse_datasets(args.mixing_datasets))
      adapted = part.plan.run_dir("adapt")
      stages = part.base_stages() + [
          part.joint(f"mix_{scheme}", initial=adapted,
                     mixture_file=f"gin/mixtures/{scheme}.gin")
          for scheme in _names(args.schemes, SCHEMES, "--schemes")]
    else:
      part = Part(name, args, quality.parse_datasets(args.seed_datasets))
      adapted = part.plan.run_dir("adapt")
      stages = part.base_stages() + [
          part.joint(f"joint_adapt_seed{args.seed}", initial=adapted, seed=args.seed),
          part.joint(f"joint_noadapt_seed{args.seed}", initial=None, seed=args.seed)]
    parts.append((part, stages))
  return parts


def quality_runs(quality_work_dir: Optional[str]) -> list[tuple[str, str, str]]:
  """[(label, run dir, eval dir)] of quality.py's seed-0 joint runs that exist in its work dir
  (evaluated there by the separate eval stage, unconstrained)."""
  if not quality_work_dir:
    return []
  found = []
  for run in ("joint_adapt", "joint_noadapt"):
    run_dir = os.path.join(quality_work_dir, "runs", run)
    if os.path.isdir(run_dir):
      found.append((f"{run}_seed0", run_dir,
                    os.path.join(quality_work_dir, "eval", f"{run}_unconstrained")))
  return found


def compare_part(part: Part, extra_runs: Sequence[tuple[str, str, str]] = ()) -> Optional[dict]:
  """`compare` over the part's finished (or partly finished) runs and `extra_runs` ([(label,
  run dir, eval dir)]); None when none exists."""
  from punified_jax import compare  # pylint: disable=g-import-not-at-top
  runs = [(label, path) for label, path, _ in extra_runs]
  runs += [(run, part.plan.run_dir(run)) for run in part.runs
           if os.path.isdir(part.plan.run_dir(run))]
  if not runs:
    return None
  evals = {label: [eval_dir] for label, _, eval_dir in extra_runs}
  output = os.path.join(os.path.dirname(part.plan.work_dir), f"compare_{part.name}")
  summary = compare.compare(runs, output, extra_eval_dirs=evals,
                            title=f"{part.name}: {', '.join(part.plan.datasets)}",
                            bootstrap_samples=BOOTSTRAP_SAMPLES)
  print(f"\n== {part.name}: python -m punified_jax compare "
        + " ".join(f"{label}={path}" for label, path in runs)
        + "".join(f" --eval {label}={dirs[0]}" for label, dirs in evals.items())
        + f" --bootstrap {BOOTSTRAP_SAMPLES} --output {output}\n")
  print(compare.format_tables(summary))
  return summary


def collect(parts: list[tuple[Part, list[dict]]], summaries: dict) -> dict:
  stages = {}
  for part, part_stages in parts:
    for stage in part_stages:
      marker = quality.read_marker(part.plan.work_dir, stage["name"])
      stages[f"{part.name}/{stage['name']}"] = {
          "command": quality.shell_line(stage["command"], part.plan.env_for_display()),
          "seconds": marker["seconds"] if marker else None,
          "finished": marker["finished"] if marker else None}
  return {"date": datetime.date.today().isoformat(),
          "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
          "stages": stages,
          "total_stage_seconds": sum(s["seconds"] or 0 for s in stages.values()),
          "compare": summaries}


def merged_with_file(path: str, results: dict) -> dict:
  """`results` merged into the results already at `path` (if any): a run of some parts keeps
  the other parts' stages and comparisons (a `--parts seed` report no longer drops the mixing
  part's record); this run's parts replace their own entries."""
  if not os.path.exists(path):
    return results
  with open(path) as handle:
    old = json.load(handle)
  stages = {**old.get("stages", {}), **results["stages"]}
  return dict(results, stages=stages, compare={**old.get("compare", {}), **results["compare"]},
              total_stage_seconds=sum(s.get("seconds") or 0 for s in stages.values()))


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not args.data_dir and not args.report_only:
    parser.error("--data_dir is required (the root of the real downloads)")
  try:
    parts = build_parts(args)
  except ValueError as error:
    parser.error(str(error))
  wanted = None
  if args.only:
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    known = {s["name"] for _, stages in parts for s in stages}
    if wanted - known:
      parser.error(f"--only: unknown stage(s) {', '.join(sorted(wanted - known))}; stages: "
                   f"{', '.join(sorted(known))}")
  if not args.report_only:
    for part, stages in parts:
      print(f"part {part.name}: {', '.join(part.plan.datasets)} in {part.plan.work_dir}",
            flush=True)
      for stage in stages:
        if wanted is None or stage["name"] in wanted:
          quality.run_stage(part.plan, stage)
    if args.dry_run:
      return 0
  summaries = {part.name: compare_part(part, quality_runs(args.quality_work_dir)
                                       if part.name == "seed" else ())
               for part, _ in parts}
  results = collect(parts, summaries)
  path = os.path.join(os.path.abspath(args.work_dir), "mixing.json")
  results = merged_with_file(path, results)
  quality._write_json(path, results)  # pylint: disable=protected-access
  if args.results_dir:
    copy_results(args.results_dir, results)
  print(f"\nstage time so far: {results['total_stage_seconds'] / 3600:.2f} h; results: "
        f"{os.path.join(args.work_dir, 'mixing.json')}")
  return 0


def copy_results(results_dir: str, results: dict) -> None:
  """mixing.json and each part's comparison (JSON, PNG) into `results_dir` (for BENCHMARKS.md)."""
  import shutil  # pylint: disable=g-import-not-at-top
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, "mixing.json")
  quality._write_json(path, merged_with_file(path, results))  # pylint: disable=protected-access
  for part, summary in results["compare"].items():
    if summary:
      shutil.copyfile(summary["png"], os.path.join(results_dir, f"mixing_{part}.png"))
      shutil.copyfile(summary["json"], os.path.join(results_dir, f"mixing_{part}.json"))
      print(f"copied the {part} comparison to {results_dir}/mixing_{part}.{{json,png}}")


if __name__ == "__main__":
  sys.exit(main())
