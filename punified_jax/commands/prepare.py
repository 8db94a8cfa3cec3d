"""`python -m punified_jax prepare`: build the `punified_ner` TFDS datasets from a download.

  python -m punified_jax prepare --datasets resume,msra --raw_dir ../shared/data/raw \\
      --data_dir ~/tensorflow_datasets

builds config `<dataset>` (or `<dataset>_<format>` with --format, `..._seed<N>` with --seed)
of `punified_ner` for each dataset. `--raw_dir builtin` uses the built-in corpus. With
`--datasets all`, datasets whose files are missing are skipped with a message (exit code 2 at
the end if any was skipped); a named dataset that cannot be built is an error (exit code 2).
"""

from __future__ import annotations

import argparse
import sys

HELP = "build the punified_ner TFDS datasets from downloaded release files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--datasets", default="all",
                      help="'all' or comma-separated dataset names")
  parser.add_argument("--raw_dir", required=True,
                      help="download root (or a dataset's folder), or 'builtin' for the built-in "
                      "synthetic corpus")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write into")
  parser.add_argument("--format", default=None,
                      help="read every dataset from this format (e.g. punified_json)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the held-out splits")


def _dataset_names(spec: str) -> tuple[list[str], bool]:
  from punified_jax import entity_types  # pylint: disable=g-import-not-at-top
  if spec.strip() == "all":
    return list(entity_types.DATASETS), True
  names = [n.strip() for n in spec.split(",") if n.strip()]
  for name in names:
    entity_types.check_dataset(name)
  return names, False


def run(args: argparse.Namespace) -> int:
  try:
    names, everything = _dataset_names(args.datasets)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not names:
    print("error: --datasets names no dataset", file=sys.stderr)
    return 2
  from punified_jax.data import sources  # pylint: disable=g-import-not-at-top
  try:
    raw_dir = sources.resolve_raw_dir(args.raw_dir)  # 'builtin': the built-in corpus
  except sources.MissingDataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from punified_jax.data import sources, tfds_builder  # pylint: disable=g-import-not-at-top
  from punified_jax.data.example import DataFormatError  # pylint: disable=g-import-not-at-top

  failed = []
  for name in names:
    try:
      format = sources.check_format(name, args.format)
    except ValueError as e:
      if everything:  # --format applies to the datasets that have it
        print(f"skip {name}: {e}", file=sys.stderr)
        continue
      print(f"error: {e}", file=sys.stderr)
      return 2
    try:
      sources.dataset_dir(name, raw_dir, format)  # fail fast with the expected paths
      builder = tfds_builder.make_builder(name, format=format, seed=args.seed,
                                          data_dir=args.data_dir)
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=raw_dir))
    except (DataFormatError, OSError, ValueError) as e:
      print(f"{'skip' if everything else 'error'} {name}: {e}", file=sys.stderr)
      failed.append(name)
      if not everything:
        return 2
      continue
    counts = {split: info.num_examples for split, info in builder.info.splits.items()}
    print(f"{builder.info.full_name}: {counts} -> {builder.data_dir}")
  return 2 if failed else 0
