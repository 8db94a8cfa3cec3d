"""`python -m punified_jax.infer --gin_file=gin/runs/infer.gin --gin.MODEL_DIR=... [...]`

Batch inference, t5x-style: runs the trained model over a split of every dataset of a task or
mixture (e.g. the unlabeled CLUENER test split for a leaderboard submission, or a dev split to
inspect errors) and writes one JSON line per sentence to `<INFER_OUTPUT_DIR>/<dataset>-<split>.jsonl`:
  {"id", "text", "types", "entities": [{"type", "text", "start", "end", "score"}], "gold": [...]}
Each sentence is prompted with its dataset's own types (as the paper evaluates). Decoding goes
through `inference.Extractor`, so offsets are exact and decoding is constrained unless
INFER_CONSTRAINED=False. Same flags as punified_jax.train (gin files, --gin.KEY=VALUE).
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
  from punified_jax import train as train_cli  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    args = train_cli.parse_flags(argv, "python -m punified_jax.infer",
                                 "Write predictions for a split of every dataset (gin-configured).")
    train_cli.setup_logging(args.log_level)
    train_cli.keep_tensorflow_off_accelerators()
    train_cli.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
  except (ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  from punified_jax import inference  # pylint: disable=g-import-not-at-top
  try:
    inference.infer_splits()
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
