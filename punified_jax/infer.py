"""`python -m punified_jax.infer --gin_file=gin/runs/infer.gin --gin.MODEL_DIR=... [...]`

Batch inference, t5x-style: runs the trained model over a split of every dataset of a task or
mixture (e.g. the unlabeled CLUENER test split for a leaderboard submission, or a dev split to
inspect errors) and writes one JSON line per sentence to `<INFER_OUTPUT_DIR>/<dataset>-<split>.jsonl`:
  {"id", "text", "types", "entities": [{"type", "text", "start", "end", "score"}], "gold": [...]}
Each sentence is prompted with its dataset's own types (as the paper evaluates). Decoding goes
through `inference.Extractor`, so offsets are exact and decoding is constrained unless
INFER_CONSTRAINED=False. Same flags as punified_jax.train (gin_utils: gin files, --gin.KEY=VALUE).
"""

from __future__ import annotations

import sys
from typing import Sequence

from punified_jax import gin_utils


def _infer() -> None:
  # Imported here, like every jax-heavy module of the commands: bad flags fail fast without jax.
  from punified_jax import split_inference  # pylint: disable=g-import-not-at-top
  split_inference.infer_splits()


def main(argv: Sequence[str] | None = None) -> int:
  return gin_utils.run_gin_command(
      sys.argv[1:] if argv is None else argv, "python -m punified_jax.infer",
      "Write predictions for a split of every dataset (gin-configured).", _infer)


if __name__ == "__main__":
  sys.exit(main())
