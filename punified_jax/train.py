"""`python -m punified_jax.train --gin_file=gin/runs/<run>.gin [--gin_file=...] --gin.KEY=VALUE ...`

Trains (or resumes) a model: the flags are gin_utils' (gin files, --gin.KEY=VALUE, multi-host
flags; see punified_jax/gin_utils.py), the action is `trainer.train()`.

The run ends with exit status 0 when it reaches TRAIN_STEPS or was stopped by SIGTERM/SIGINT
after saving a checkpoint (rerun the same command to continue).
"""

from __future__ import annotations

import sys
from typing import Sequence

from punified_jax import gin_utils


def _train() -> int:
  # Imported here, like every jax-heavy module of the commands: bad flags fail fast without jax.
  from punified_jax import trainer  # pylint: disable=g-import-not-at-top
  summary = trainer.train()
  if summary.stopped_by:
    print(f"stopped by {summary.stopped_by} at step {summary.final_step}; rerun to continue", flush=True)
  else:
    print(f"done: step {summary.final_step}", flush=True)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  return gin_utils.run_gin_command(sys.argv[1:] if argv is None else argv, "python -m punified_jax.train",
                                   "Train a T5 on a seqio mixture (gin-configured).", _train)


if __name__ == "__main__":
  sys.exit(main())
