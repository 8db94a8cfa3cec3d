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


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    args = train_cli.parse_flags(argv, "python -m punified_jax.eval", "Evaluate a checkpoint (gin-configured).")
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  train_cli.setup_logging(args.log_level)
  train_cli.keep_tensorflow_off_accelerators()
  from punified_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize_from_args(args)
  try:
    train_cli.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
  except (ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  from punified_jax import evaluation  # pylint: disable=g-import-not-at-top
  try:
    evaluation.evaluate_checkpoint()
  except FileNotFoundError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
