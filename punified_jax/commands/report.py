"""`python -m punified_jax report`: per-dataset/per-type P/R/F1 JSON, an F1 table and a PNG."""

from __future__ import annotations

import os
import sys

HELP = "write report.json + report.png from an evaluation (and the runs' metrics.jsonl)"


def add_arguments(parser):
  parser.add_argument("--eval_json", help="an evaluation report step_<N>.json, or a directory "
                      "holding them (the latest is used); default: <model_dir>/eval")
  parser.add_argument("--model_dir", help="the fine-tuned run (its eval/ and metrics.jsonl)")
  parser.add_argument("--run", action="append", default=[], metavar="LABEL=DIR",
                      help="another run whose training curve to plot (repeatable)")
  parser.add_argument("--output", required=True, help="directory for report.json and report.png")
  parser.add_argument("--no_paper", action="store_true",
                      help="do not print the paper's F1 next to the table")


def run(args) -> int:
  from punified_jax import reports  # pylint: disable=g-import-not-at-top
  source = args.eval_json or (args.model_dir and os.path.join(args.model_dir, "eval"))
  if not source:
    print("error: give --eval_json or --model_dir", file=sys.stderr)
    return 2
  runs = {}
  if args.model_dir:
    runs[os.path.basename(os.path.normpath(args.model_dir))] = args.model_dir
  for item in args.run:
    label, sep, directory = item.partition("=")
    if not sep:
      print(f"error: --run expects LABEL=DIR, got {item!r}", file=sys.stderr)
      return 2
    runs[label] = directory
  try:
    path = reports.latest_eval_json(source) if os.path.isdir(source) else source
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
