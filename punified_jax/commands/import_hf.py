"""`python -m punified_jax import_hf`: a Hugging Face T5 v1.1 / MT5 directory -> our model directory.

    python -m punified_jax import_hf --hf_dir ~/hf/t5-v1_1-base-chinese-cluecorpussmall \\
        --output /models/uer_base [--decoder_start_token_id 101] [--vocabulary PATH]

--hf_dir holds config.json and model.safetensors (or a sharded model.safetensors.index.json, or
pytorch_model.bin when torch is installed). The output is a model directory like the trainer's:

    <output>/checkpoints/0/state, meta   parameters only (INITIAL_CHECKPOINT_PATH=<output>)
    <output>/punified_model.json, vocab/ the network config and the vocabulary (model_info)
    <output>/model.gin                   the config as a model gin file: train with
                                         --gin_file=<output>/model.gin

The vocabulary is the directory's vocab.txt (WordPiece, UER) or spiece.model; --vocabulary
overrides it (required when the directory has neither). For UER's Chinese checkpoints pass
--decoder_start_token_id 101 ([CLS]) when their config.json does not name it; end of sequence
is the vocabulary's ([SEP] = 102 for BERT's vocab.txt).
"""

from __future__ import annotations

import argparse
import sys

HELP = "import a Hugging Face T5 v1.1 / MT5 directory into our model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--hf_dir", required=True, help="directory with config.json + weights")
  parser.add_argument("--output", required=True, help="model directory to write")
  parser.add_argument("--vocabulary", default=None,
                      help="vocabulary file (default: the HF directory's vocab.txt/spiece.model)")
  parser.add_argument("--decoder_start_token_id", type=int, default=None,
                      help="decoder start id (default: config.json's, else 0); UER: 101")
  parser.add_argument("--dropout_rate", type=float, default=None,
                      help="dropout recorded for fine-tuning (default: config.json's)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="activation dtype recorded in the config (parameters stay float32)")
  parser.add_argument("--max_input_length", type=int, default=512,
                      help="input feature length recorded for serving (UER pre-trained at 512)")
  parser.add_argument("--max_target_length", type=int, default=512,
                      help="target feature length recorded for serving")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace checkpoints already in --output")


def run(args: argparse.Namespace) -> int:
  from punified_jax import hf_interop  # pylint: disable=g-import-not-at-top
  from punified_jax import model_info  # pylint: disable=g-import-not-at-top
  from punified_jax import run_dir  # pylint: disable=g-import-not-at-top
  try:
    result = run_dir.import_hf_dir(
        args.hf_dir, args.output, vocabulary_path=args.vocabulary,
        decoder_start_token_id=args.decoder_start_token_id, dropout_rate=args.dropout_rate,
        dtype=args.dtype, overwrite=args.overwrite,
        task_feature_lengths={"inputs": args.max_input_length, "targets": args.max_target_length})
  except (hf_interop.HfInteropError, model_info.ModelInfoError, FileNotFoundError,
          ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  config = result.config
  print(f"read {result.hf_dir} ({result.model_type})")
  print(f"model: vocab_size={config.vocab_size} emb_dim={config.emb_dim} "
        f"heads={config.num_heads}x{config.head_dim} mlp_dim={config.mlp_dim} "
        f"layers={config.num_encoder_layers}+{config.num_decoder_layers} "
        f"tied_logits={config.logits_via_embedding} "
        f"decoder_start={config.decoder_start_token_id} ({result.num_params:,} parameters)")
  print(f"vocabulary: {result.vocabulary_path}")
  print(f"wrote {result.checkpoint_dir}")
  print(f"wrote {result.output_dir}/{run_dir.MODEL_INFO_FILE} and {run_dir.MODEL_GIN_FILE}")
  return 0
