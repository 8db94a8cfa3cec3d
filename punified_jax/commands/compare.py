"""`python -m punified_jax compare RUN_DIR ...`: several runs side by side (table, JSON, PNG).

    python -m punified_jax compare runs/uniform runs/proportional T2=runs/temperature2 \
        --output runs/compare [--eval T2=runs/eval_t2]

Per dataset: best macro F1 (and its step) and last; the mean over datasets; F1 over steps and
training loss curves (PNG); the recorded settings in which the runs differ. Reads runs of our
trainer (eval/step_<N>.json, metrics.jsonl, punified_model.json, data_manifest.json with the
mixing scheme and rates, config.gin) and t5x runs (inference_eval/<task>-metrics.jsonl, config.gin).
"""

from __future__ import annotations

import sys

HELP = "compare runs: per-dataset macro F1 (best, last, over steps), losses, differing settings"


def add_arguments(parser):
  parser.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR",
                      help="run directories (label: the directory name unless given)")
  parser.add_argument("--eval", action="append", default=[], metavar="LABEL=DIR",
                      help="also read evaluation reports (step_<N>.json) from DIR for the run "
                      "LABEL, e.g. the EVAL_OUTPUT_DIR of `python -m punified_jax.eval` "
                      "(repeatable)")
  parser.add_argument("--output", required=True, help="directory for compare.json, compare.png")
  parser.add_argument("--title", default="runs compared", help="title of the PNG")
  parser.add_argument("--bootstrap", type=int, default=0, metavar="SAMPLES",
                      help="also give each run's macro F1 minus the first run's with a 95%% "
                      "paired bootstrap interval over the evaluated sentences (needs the "
                      "evaluator's predictions/ files; e.g. 1000)")


def _split(item: str, flag: str) -> tuple[str, str]:
  label, sep, value = item.partition("=")
  if not sep or not label or not value:
    raise ValueError(f"{flag} expects LABEL=DIR, got {item!r}")
  return label, value


def run(args) -> int:
  from punified_jax import compare  # pylint: disable=g-import-not-at-top
  try:
    runs = [(_split(item, "RUN_DIR") if "=" in item else (None, item)) for item in args.runs]
    extra: dict[str, list[str]] = {}
    for item in args.eval:
      label, directory = _split(item, "--eval")
      extra.setdefault(label, []).append(directory)
    summary = compare.compare(runs, args.output, extra_eval_dirs=extra, title=args.title,
                              bootstrap_samples=args.bootstrap)
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(compare.format_tables(summary))
  print(f"\nwrote {summary['json']} and {summary['png']}")
  return 0
