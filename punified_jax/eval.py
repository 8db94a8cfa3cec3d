"""`python -m punified_jax.eval --gin_file=gin/runs/eval.gin --gin_file=gin/models/<size>.gin
--gin.CHECKPOINT_PATH=... --gin.EVAL_OUTPUT_DIR=...`: evaluate one checkpoint.

Same flags as punified_jax.train (gin files, --gin.KEY=VALUE, multi-host flags). Decodes every
task of MIXTURE_OR_TASK_NAME that has a validation split and metrics, prints per-task and mean
F1 and writes `<EVAL_OUTPUT_DIR>/step_<N>.json`.
"""

from __future__ import annotations

import sys
from typing import Sequence

from punified_jax import train as train_cli


def _evaluate() -> None:
  from punified_jax import evaluation  # pylint: disable=g-import-not-at-top
  evaluation.evaluate_checkpoint()


def main(argv: Sequence[str] | None = None) -> int:
  return train_cli.run_gin_command(sys.argv[1:] if argv is None else argv,
                                   "python -m punified_jax.eval",
                                   "Evaluate a checkpoint (gin-configured).", _evaluate)


if __name__ == "__main__":
  sys.exit(main())
