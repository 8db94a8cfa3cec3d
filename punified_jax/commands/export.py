"""`python -m punified_jax export`: our model directory -> a directory transformers loads.

    python -m punified_jax export --model_dir /runs/joint --output /models/joint_hf \\
        [--checkpoint best|latest|STEP|PATH] [--model_type t5|mt5] [--overwrite]

--model_dir is a run directory (the trainer's MODEL_DIR), an import_hf or from_t5x output: it
must describe itself (punified_model.json or model.json) so the config and vocabulary are
known. --checkpoint (run_dir's rule, as everywhere): "best" (<model_dir>/best), "latest"
(<model_dir>/checkpoints), a step number, or any checkpoint path; default: best when the run
kept one, else latest.  --model_dir and --output may be local or gs://.

The output has config.json, model.safetensors and tokenizer files, and loads with
    T5ForConditionalGeneration.from_pretrained(OUTPUT)   # and AutoTokenizer for the vocabulary
See punified_jax/hf_interop.py (export_hf) for what the tokenizer files contain.
"""

from __future__ import annotations

import argparse
import sys

HELP = "export a checkpoint to a Hugging Face transformers directory (safetensors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model_dir", required=True, help="our model directory")
  parser.add_argument("--output", required=True, help="directory to write")
  parser.add_argument("--checkpoint", default="auto",
                      help="best | latest | a step number | a checkpoint path (default: best if "
                      "kept, else latest)")
  parser.add_argument("--model_type", choices=("t5", "mt5"), default="t5",
                      help="config.json model_type (t5: T5ForConditionalGeneration)")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")


def run(args: argparse.Namespace) -> int:
  from punified_jax import hf_interop  # pylint: disable=g-import-not-at-top
  from punified_jax import model_info  # pylint: disable=g-import-not-at-top
  from punified_jax import run_dir  # pylint: disable=g-import-not-at-top
  try:
    info = model_info.load_model_info(args.model_dir)
    result = run_dir.export_checkpoint(args.model_dir, args.output, checkpoint=args.checkpoint,
                                       model_type=args.model_type, overwrite=args.overwrite)
  except (hf_interop.HfInteropError, model_info.ModelInfoError, FileNotFoundError,
          ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"exported {result.checkpoint} ({info.t5_config.num_encoder_layers}+"
        f"{info.t5_config.num_decoder_layers} layers, emb_dim {info.t5_config.emb_dim})")
  print(f"wrote {result.exported.output_dir}: {', '.join(result.exported.files)}")
  return 0
