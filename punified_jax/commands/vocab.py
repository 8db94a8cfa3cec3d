"""`python -m punified_jax vocab`: train the character-level SentencePiece model.

    python -m punified_jax vocab --datasets all --raw_dir ../shared/data/raw \\
        --output vocab/punified_char.model [--skip_missing]

Trains on the TRAIN split text of the chosen datasets (as `data.sources.load_splits` reads
them; `--raw_dir builtin`: the built-in corpus) and prints the vocabulary size, the tokens per
character on that text (1.0 unless a character fell to byte fallback) and the output path.
"""

from __future__ import annotations

import argparse
import sys

HELP = "train the character-level SentencePiece vocabulary on the datasets' train text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--datasets", default="all",
                      help="'all' (every registered dataset) or a comma-separated list")
  parser.add_argument("--raw_dir", required=True,
                      help="download root (or a dataset's folder), or 'builtin' for the built-in "
                      "synthetic corpus")
  parser.add_argument("--format", default=None, help="input format passed to load_splits")
  parser.add_argument("--output", required=True, help="path of the .model file to write")
  parser.add_argument("--vocab_size", type=int, default=None,
                      help="upper bound on the vocabulary size (default: every character)")
  parser.add_argument("--character_coverage", type=float, default=1.0,
                      help="fraction of character occurrences covered by own pieces")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--skip_missing", action="store_true",
                      help="skip (and name) datasets whose files are missing instead of failing")


def _dataset_names(spec: str) -> list[str]:
  from punified_jax import entity_types
  if spec.strip() == "all":
    return list(entity_types.DATASETS)
  names = [name.strip() for name in spec.split(",") if name.strip()]
  if not names:
    raise ValueError("--datasets is empty")
  for name in names:
    entity_types.check_dataset(name)
  return list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
  from punified_jax import vocab as vocab_lib
  from punified_jax.data.example import DataFormatError
  from punified_jax.data.sources import load_splits

  if not args.output.endswith(".model"):
    print(f"error: --output must end in .model, got {args.output!r}", file=sys.stderr)
    return 2
  try:
    names = _dataset_names(args.datasets)
    texts: list[str] = []
    used, skipped = [], []
    for name in names:
      try:
        splits = load_splits(name, args.raw_dir, format=args.format)
      except FileNotFoundError as e:
        if not args.skip_missing:
          raise
        skipped.append(name)
        print(f"skipped {name}: {e}", file=sys.stderr)
        continue
      if "train" not in splits:
        raise ValueError(f"dataset {name!r} has no train split (found: {', '.join(splits)})")
      texts.extend(example.text for example in splits["train"])
      used.append((name, len(splits["train"])))
    if not used:
      raise ValueError("no dataset could be read, nothing to train on")
    vocab_lib.train_sentencepiece(texts, args.output, vocab_size=args.vocab_size,
                                  character_coverage=args.character_coverage, seed=args.seed)
  except (DataFormatError, FileNotFoundError, ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  vocab = vocab_lib.get_vocabulary(args.output)
  info = vocab_lib.vocab_info(vocab)
  characters = sum(len(t) for t in texts)
  tokens = sum(len(ids) for ids in vocab.tokenizer.encode(texts))
  print("trained on " + ", ".join(f"{name} ({n} sentences)" for name, n in used))
  if skipped:
    print(f"skipped (files missing): {', '.join(skipped)}")
  print(f"vocab_size={info['vocab_size']} pad_id={info['pad_id']} eos_id={info['eos_id']} "
        f"unk_id={info['unk_id']}")
  print(f"tokens per character on the training text: {tokens / max(characters, 1):.4f} "
        f"({tokens} tokens, {characters} characters)")
  print(f"wrote {args.output}")
  return 0
