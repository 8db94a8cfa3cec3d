"""`python -m punified_jax.eval --gin_file=gin/runs/eval.gin --gin_file=gin/models/<size>.gin
--gin.CHECKPOINT_PATH=... --gin.EVAL_OUTPUT_DIR=... [--split test]`: evaluate one checkpoint.

Same flags as punified_jax.train (gin_utils: gin files, --gin.KEY=VALUE, multi-host flags), plus
`--split NAME` (default validation; the same as --gin.EVAL_SPLIT=NAME). Decodes every task of
MIXTURE_OR_TASK_NAME that has the split and metrics, prints per-task and mean F1, and writes
`<EVAL_OUTPUT_DIR>/step_<N>.json` and the per-example predictions
`<EVAL_OUTPUT_DIR>/predictions/<task>_step_<N>.jsonl`. A split without gold annotations is not
scored (see evaluation.py).
"""

from __future__ import annotations

import sys
from typing import Sequence

from punified_jax import gin_utils


def _evaluate() -> None:
  # Imported here, like every jax-heavy module of the commands: bad flags fail fast without jax.
  from punified_jax import evaluation  # pylint: disable=g-import-not-at-top
  evaluation.evaluate_checkpoint()


def split_flag_to_gin(argv: Sequence[str]) -> list[str]:
  """`--split NAME` / `--split=NAME` -> `--gin.EVAL_SPLIT=NAME` (the gin macro it stands for)."""
  out, index = [], 0
  argv = list(argv)
  while index < len(argv):
    arg = argv[index]
    if arg == "--split":
      if index + 1 >= len(argv):
        raise ValueError("--split: missing value (e.g. --split test)")
      out.append(f"--gin.EVAL_SPLIT={argv[index + 1]}")
      index += 2
      continue
    out.append(f"--gin.EVAL_SPLIT={arg[len('--split='):]}" if arg.startswith("--split=") else arg)
    index += 1
  return out


def main(argv: Sequence[str] | None = None) -> int:
  try:
    argv = split_flag_to_gin(sys.argv[1:] if argv is None else argv)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return gin_utils.run_gin_command(argv, "python -m punified_jax.eval",
                                   "Evaluate a checkpoint (gin-configured).", _evaluate)


if __name__ == "__main__":
  sys.exit(main())
