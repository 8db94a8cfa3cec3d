"""`python -m punified_jax from_t5x`: convert a t5x checkpoint into our model directory.

    python -m punified_jax from_t5x --checkpoint /runs/t5x_joint [--step 1200] \\
        --output /models/joint --vocabulary ~/vocab/punified_char.model

--checkpoint takes a t5x model directory (newest finished step, or --step), a
`checkpoint_<step>` directory, its orbax `state` item or its legacy msgpack `checkpoint` file;
both layouts t5x writes are read (see punified_jax/t5x_interop.py). The model shape is inferred
from the parameters and every parameter is checked against our T5 v1.1; a mismatch names the
parameter and both shapes. t5x itself is not needed.

--vocabulary is the vocabulary the t5x run used: a path, or `tasks` for the one our SeqIO tasks
use under the current PUNIFIED_* environment (what gin/t5x/vocabulary.gin gives t5x). With it,
and the feature lengths (read from the t5x run's config.gin, or --input_length and
--target_length), the output is a complete model directory that `extract` serves.
"""

from __future__ import annotations

import argparse
import sys

HELP = "convert a t5x checkpoint (orbax or msgpack) into our model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", required=True,
                      help="t5x model dir, checkpoint_<step> dir, its state/ item or msgpack file")
  parser.add_argument("--output", required=True, help="model directory to write")
  parser.add_argument("--step", type=int, default=None,
                      help="step to convert when --checkpoint is a model dir (default: newest)")
  parser.add_argument("--vocabulary", default=None,
                      help="vocabulary file of the t5x run to copy alongside, or 'tasks'")
  parser.add_argument("--input_length", type=int, default=None,
                      help="inputs feature length to record (default: the t5x run's config.gin)")
  parser.add_argument("--target_length", type=int, default=None,
                      help="targets feature length to record (default: the t5x run's config.gin)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                      help="activation dtype recorded in the model config (default float32)")
  parser.add_argument("--dropout_rate", type=float, default=None,
                      help="dropout recorded in the model config, for further fine-tuning "
                      "(default: DROPOUT_RATE of the t5x run's config.gin, else 0.1)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace checkpoints already in --output")


def _tasks_vocabulary_path() -> str:
  from punified_jax.tasks import registry  # pylint: disable=g-import-not-at-top
  vocabulary = registry.vocabulary_for().vocabulary
  path = getattr(vocabulary, "sentencepiece_model_file", None) or getattr(
      vocabulary, "vocab_file", None)
  if not path:
    raise ValueError(f"the tasks' vocabulary {vocabulary} has no file to copy")
  return path


def run(args: argparse.Namespace) -> int:
  from punified_jax import run_dir  # pylint: disable=g-import-not-at-top
  from punified_jax import t5x_interop  # pylint: disable=g-import-not-at-top
  try:
    vocabulary = args.vocabulary
    if vocabulary == "tasks":
      vocabulary = _tasks_vocabulary_path()
    lengths = None
    if (args.input_length is None) != (args.target_length is None):
      raise ValueError("give both --input_length and --target_length, or neither")
    if args.input_length is not None:
      lengths = {"inputs": args.input_length, "targets": args.target_length}
    result = run_dir.convert_t5x(args.checkpoint, args.output, step=args.step,
                                 vocabulary=vocabulary, task_feature_lengths=lengths,
                                 overwrite=args.overwrite, dtype=args.dtype,
                                 dropout_rate=args.dropout_rate)
  except (t5x_interop.BridgeError, FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  config = result.config
  print(f"read {result.source.kind} t5x checkpoint {result.source.path} (step {result.step})")
  print(f"model: vocab_size={config.vocab_size} emb_dim={config.emb_dim} "
        f"heads={config.num_heads}x{config.head_dim} mlp_dim={config.mlp_dim} "
        f"layers={config.num_encoder_layers}+{config.num_decoder_layers} "
        f"tied_logits={config.logits_via_embedding} ({result.num_params:,} parameters)")
  print(f"wrote {result.checkpoint_dir}")
  print(f"wrote {result.output_dir}/{run_dir.CONVERTED_MODEL_JSON} and {run_dir.MODEL_GIN_FILE}")
  if result.vocabulary:
    print(f"copied the vocabulary to {result.vocabulary}")
  else:
    print("no --vocabulary given: serving needs the vocabulary of the t5x run")
  if result.task_feature_lengths:
    lengths = result.task_feature_lengths
    print(f"feature lengths: inputs {lengths['inputs']}, targets {lengths['targets']}")
  if result.vocabulary and result.task_feature_lengths:
    print(f"wrote {result.output_dir}/{run_dir.MODEL_INFO_FILE}: serve it with "
          f"`python -m punified_jax extract --model_dir {result.output_dir} ...`")
  return 0
