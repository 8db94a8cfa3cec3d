"""The built-in corpus: seeded, generated Chinese NER sentences in every release format.

Why: a fresh machine has no data downloads, yet the readers, SeqIO tasks, trainer and the main
job must run end to end. It invents sentences from templates and our own lexicons
(`builtin_sentences.py`, `lexicon.py`) and writes them (`builtin_formats.py`) into a directory laid out exactly like a download root, each
dataset in its release format and file names, so the real readers read it. It exercises the
pipeline and is NOT a benchmark; a tiny model should still learn it, since entities come from
lexicons and sit in consistent contexts.

    generate_dataset("resume", "train", 240, seed=0)  -> list[Example] (raw type labels)
    write_corpus(out_dir, seed=0)                      -> out_dir (all ten datasets)
    builtin_corpus_dir(seed=0)                         -> a cached copy, written once

Templates are strings with slots in braces:
  `{city}`      a phrase from lexicon `city`; it is an entity when the dataset maps the lexicon
                to one of its raw types (`LEXICON_TYPES`), plain text otherwise;
  `{person#a}`  slots with the same `#a` label repeat one drawn phrase (a repeated mention);
  `{|甲|乙}`     one of the alternatives, as plain text.

Held-out splits: MSRA, Boson and the People's Daily corpora have no dev file in their release
formats; readers make the paper's held-out splits with a seeded sample (2000 sentences on real
data). For this corpus the file holds train + held-out sentences and `BUILTIN_CORPUS.json` at
the root records the held-out sizes the reader should use (`held_out_sizes`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from typing import Mapping, Optional

from punified_jax import entity_types
from punified_jax import storage
from punified_jax.data import builtin_formats
from punified_jax.data import builtin_sentences
from punified_jax.data import lexicon
from punified_jax.data.builtin_sentences import BUILTIN_VERSION, generate_sentences, split_key

MARKER_FILE = "BUILTIN_CORPUS.json"
MARKER_NOTE = "synthetic corpus for exercising the pipeline, not a benchmark"
# Sentences per split. Small enough that the whole corpus is written in about a second.
DEFAULT_SIZES: Mapping[str, int] = {"train": 240, "validation": 60, "test": 60}
# Sentences per held-out split (validation, and test where the release has none) that a reader
# should sample from the single release file of MSRA / Boson / People's Daily. Equal to the
# default dev size so every dataset's validation split has the same size.
BUILTIN_HELD_OUT = DEFAULT_SIZES["validation"]

# Folder of each dataset inside a download root.
DATASET_DIRS: Mapping[str, str] = {
    "ecommerce": "ecommerce", "msra": "msra", "ontonotes4": "ontonotes4",
    "peoples_daily": "peoples_daily_2014", "boson": "boson", "resume": "resume",
    "cluener": "cluener2020", "ccks2021": "ccks2021_address", "weibo": "weibo",
    "peoples_daily_1998": "peoples_daily_1998",
}
# Splits whose sentences are written to one file and held out by the reader; the release has a
# separate file for every other split (MSRA has a test file but no dev file).
HELD_OUT_SPLITS: Mapping[str, tuple[str, ...]] = {
    "msra": ("validation",),
    "boson": ("validation", "test"),
    "peoples_daily": ("validation", "test"),
    "peoples_daily_1998": ("validation", "test"),
}
# Splits each dataset's release has (CCKS2021 publishes no labelled test; ours neither).
DATASET_SPLITS: Mapping[str, tuple[str, ...]] = {
    ds: ("train", "validation") if ds == "ccks2021" else ("train", "validation", "test")
    for ds in entity_types.DATASETS
}


def _write_text(path: str, text: str):
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write(text)


def corpus_sizes(sizes: Optional[Mapping[str, int]] = None) -> dict[str, int]:
  """Normalised per-split sizes: keys train/validation/test (`dev` is accepted)."""
  out = dict(DEFAULT_SIZES)
  for key, value in (sizes or {}).items():
    split = split_key(key)
    if not isinstance(value, int) or value < 0:
      raise ValueError(f"size of split {key!r} must be a non-negative int, got {value!r}")
    out[split] = value
  return out


def held_out_plan(sizes: Mapping[str, int]) -> dict[str, dict[str, int]]:
  """Dataset -> held-out split -> number of sentences the reader should sample."""
  return {ds: {split: sizes[split] for split in splits} for ds, splits in HELD_OUT_SPLITS.items()}


def generator_digest() -> str:
  """A short digest of the generator's modules: part of the cache directory name."""
  digest = hashlib.sha256()
  for module_file in (__file__, builtin_sentences.__file__, builtin_formats.__file__,
                      lexicon.__file__):
    with open(module_file, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()[:12]


def write_corpus(out_dir: str | os.PathLike, *, seed: int = 0,
                 sizes: Optional[Mapping[str, int]] = None) -> str:
  """Writes every dataset, in its release format, under `out_dir`; returns `out_dir`.

  Layout (as a download root): resume/, ontonotes4/, ecommerce/, msra/, cluener2020/,
  ccks2021_address/, weibo/, peoples_daily_1998/, boson/, peoples_daily_2014/, plus the marker
  file `BUILTIN_CORPUS.json`. Same seed and sizes -> byte-identical files.
  """
  out_dir = os.fspath(out_dir)
  sizes = corpus_sizes(sizes)
  counts = {}
  for dataset in entity_types.DATASETS:
    splits = {split: generate_sentences(dataset, split, sizes[split], seed)
              for split in DATASET_SPLITS[dataset]}
    counts[dataset] = {split: len(s) for split, s in splits.items()}
    folder = os.path.join(out_dir, DATASET_DIRS[dataset])
    os.makedirs(folder, exist_ok=True)
    layout_rng = random.Random(f"punified_jax.builtin/v{BUILTIN_VERSION}/{seed}/{dataset}/layout")
    for name, data in builtin_formats.release_files(dataset, splits, layout_rng).items():
      with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
  marker = {
      "name": "punified-jax built-in corpus",
      "note": MARKER_NOTE,
      "version": BUILTIN_VERSION,
      "generator_digest": generator_digest(),
      "seed": seed,
      "sizes": sizes,
      "held_out": held_out_plan(sizes),
      "sentences": counts,
      "dataset_dirs": dict(DATASET_DIRS),
  }
  _write_text(os.path.join(out_dir, MARKER_FILE),
              json.dumps(marker, ensure_ascii=False, indent=2) + "\n")
  return out_dir


def read_marker(raw_dir: str | os.PathLike) -> Optional[dict]:
  """The built-in corpus marker of `raw_dir` (a corpus root or one dataset folder in it), or None
  when `raw_dir` is not a built-in corpus. This is how a reader detects the built-in corpus."""
  raw_dir = storage.absolute(raw_dir)  # local or gs://
  for candidate in (raw_dir, storage.dirname(raw_dir)):
    path = storage.join(candidate, MARKER_FILE)
    if storage.isfile(path):
      return storage.read_json(path)
  return None


def held_out_sizes(raw_dir: str | os.PathLike, dataset: str) -> Optional[dict[str, int]]:
  """Held-out split sizes a reader should use for `dataset` in `raw_dir`: {"validation": n, ...}
  for the built-in corpus, None for any other directory (use the paper's 2000)."""
  marker = read_marker(raw_dir)
  if marker is None:
    return None
  return dict(marker["held_out"].get(entity_types.check_dataset(dataset), {}))


def default_cache_root() -> str:
  return os.environ.get("PUNIFIED_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "punified_jax")


def builtin_corpus_dir(seed: int = 0, *, cache_root: Optional[str] = None) -> str:
  """Writes the default-size corpus once into the cache and returns its directory.

  The directory `builtin-v<version>-<digest>-seed<seed>` under `$PUNIFIED_CACHE` (default
  `~/.cache/punified_jax`) is written into a temporary sibling and renamed into place, so a
  reader never sees a half-written corpus; when two processes race, the first rename wins and
  the other's copy is removed.
  """
  root = cache_root or default_cache_root()
  final = os.path.join(root, f"builtin-v{BUILTIN_VERSION}-{generator_digest()}-seed{seed}")
  if os.path.isfile(os.path.join(final, MARKER_FILE)):
    return final
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".builtin-tmp-", dir=root)
  try:
    write_corpus(tmp, seed=seed)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is readable like any download
    try:
      os.rename(tmp, final)
    except OSError:
      # Another process renamed its copy first (the target exists and is not empty).
      if not os.path.isfile(os.path.join(final, MARKER_FILE)):
        raise
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return final

