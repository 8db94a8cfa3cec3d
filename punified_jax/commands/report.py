"""`python -m punified_jax report`: per-dataset/per-type P/R/F1 JSON, an F1 table and a PNG.

With --model_dir the evaluation of the run's BEST checkpoint is reported by default (the
checkpoint rule of run_dir.py: best when the run kept one, else the newest evaluation);
--checkpoint latest or a step number chooses another.  Paths may be local or gs://.
"""

from __future__ import annotations

import sys

HELP = "write report.json + report.png from an evaluation (and the runs' metrics.jsonl)"


def add_arguments(parser):
  parser.add_argument("--eval_json", help="an evaluation report step_<N>.json, or a directory "
                      "holding them (the latest is used); default: <model_dir>/eval")
  parser.add_argument("--model_dir", help="the fine-tuned run (its eval/ and metrics.jsonl)")
  parser.add_argument("--checkpoint", default="auto",
                      help="with --model_dir: whose evaluation to report: best | latest | a step "
                      "(default: best if the run kept one, else latest)")
  parser.add_argument("--run", action="append", default=[], metavar="LABEL=DIR",
                      help="another run whose training curve to plot (repeatable)")
  parser.add_argument("--output", required=True, help="directory for report.json and report.png")
  parser.add_argument("--no_paper", action="store_true",
                      help="do not print the paper's F1 next to the table")


def run(args) -> int:
  from punified_jax import reports  # pylint: disable=g-import-not-at-top
  from punified_jax import run_dir  # pylint: disable=g-import-not-at-top
  from punified_jax import storage  # pylint: disable=g-import-not-at-top
  if not args.eval_json and not args.model_dir:
    print("error: give --eval_json or --model_dir", file=sys.stderr)
    return 2
  runs = {}
  if args.model_dir:
    runs[storage.basename(args.model_dir)] = args.model_dir
  for item in args.run:
    label, sep, directory = item.partition("=")
    if not sep:
      print(f"error: --run expects LABEL=DIR, got {item!r}", file=sys.stderr)
      return 2
    runs[label] = directory
  try:
    if args.eval_json:
      path = (run_dir.latest_eval_json(args.eval_json) if storage.isdir(args.eval_json)
              else args.eval_json)
    else:
      path = run_dir.eval_json_for(args.model_dir, args.checkpoint)
    summary = reports.write_report(path, args.output, runs=runs)
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(reports.format_f1_table(summary, paper=not args.no_paper))
  if args.model_dir:
    _print_data_manifest(args.model_dir)
  print(f"wrote {summary['json']} and {summary['png']}")
  return 0


def _print_data_manifest(model_dir: str) -> None:
  """What data made the run (its data_manifest.json), or a line saying the run has none."""
  from punified_jax.data import manifest  # pylint: disable=g-import-not-at-top
  record = manifest.read_manifest(model_dir)
  if record is None:
    print(f"\n(no {manifest.DATA_MANIFEST_FILE} in {model_dir}: the run predates data manifests "
          "or was not trained on PUnifiedNER tasks)")
    return
  print(f"\n=== data ({manifest.DATA_MANIFEST_FILE})\n{manifest.format_manifest(record)}")
