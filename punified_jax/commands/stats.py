"""`python -m punified_jax stats`: sentence/mention/type/repair counts of one dataset's splits.

  python -m punified_jax stats --dataset resume --raw_dir ../shared/data/raw --json

prints one JSON object {"<split>": {"sentences", "mentions", "types", "repairs"}}; without
--json a table. `--raw_dir builtin` reads the built-in corpus. Errors (missing files, malformed
input with --strict, unknown dataset/format) go to stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "count sentences, mentions, types and repairs per split of one dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dataset", required=True,
                      help="dataset name (see punified_jax.entity_types.DATASETS)")
  parser.add_argument("--raw_dir", required=True,
                      help="download root (or a dataset's folder), or 'builtin' for the built-in "
                      "synthetic corpus")
  parser.add_argument("--format", default=None,
                      help="release format to read (default: the dataset's own release format)")
  parser.add_argument("--strict", action="store_true",
                      help="fail on the first malformed line instead of repairing and counting")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the held-out splits (MSRA, Boson, People Daily)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
  from punified_jax.data import sources, stats  # pylint: disable=g-import-not-at-top
  from punified_jax.data.example import DataFormatError  # pylint: disable=g-import-not-at-top
  try:
    loaded = sources.load_dataset(args.dataset, args.raw_dir, format=args.format,
                                  strict=args.strict, seed=args.seed)
  except (DataFormatError, OSError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  result = stats.loaded_stats(loaded)
  if args.json:
    print(json.dumps(result, ensure_ascii=False))
  else:
    title = f"{loaded.dataset} ({loaded.format}) from {loaded.directory}"
    print(stats.format_table(result, title=title, unlabeled=loaded.unlabeled))
  return 0
