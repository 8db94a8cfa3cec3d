"""SeqIO Tasks and Mixtures for PUnifiedNER.

Tasks, per dataset `<ds>` in `entity_types.DATASETS`:
  punified_prefix_lm_<ds>        language-model adaptation: a sentence split at a random
                                 character; inputs = left part, targets = right part.
  punified_ner_<ds>              dataset-dependent prompt (all of the dataset's types; the paper's
                                 best setup).
  punified_ner_<ds>_random       random prompt (a random subset of the 37 paper types).
  punified_ner_<ds>_random_exact random prompt + exact-match prompt (two examples a sentence).
Validation and test splits are always prompted with the dataset's own types, whatever the task's
training mode: the paper evaluates every setup that way.

Mixtures, over the configured datasets that have a train split:
  punified_prefix_lm, punified_ner_joint, punified_ner_joint_random,
  punified_ner_joint_random_exact.
Mixing rates follow a scheme (mixing.py): "uniform" (each dataset equally likely, the
paper's "each batch draws examples from all datasets"), "proportional" (rate = min(n_train, cap))
or "temperature" (rate = min(n_train, cap) ** (1 / T)), chosen by a gin/mixtures/*.gin file
(works under t5x too) or by the environment below.

Where the data and vocabulary come from is a `DataConfig`, read from environment variables (so a
real t5x install and every host of a pod see the same thing) and overridable from gin through
`tasks.configure` (which our trainer calls after parsing gin):
  PUNIFIED_RAW_DIR      root of the user's downloads (release formats), or `builtin` for the
                        built-in synthetic corpus
  PUNIFIED_TFDS_DIR     read TFDS datasets prepared by `python -m punified_jax prepare` instead
                        (needs no raw directory: splits and the default vocabulary come from it)
  (neither set: no data source. Nothing is registered, a warning is logged, and
  `require_data_source` -- called by our train/eval/infer entry points -- raises
  NoDataSourceError naming these settings. The synthetic corpus is never a silent default.)
  PUNIFIED_FORMAT       read every dataset in this format (e.g. punified_json); unset -> release
  PUNIFIED_VOCAB        a SentencePiece .model or a BERT vocab.txt; unset -> a character-level
                        SentencePiece model trained on the configured datasets' train text and
                        cached under $PUNIFIED_CACHE (default ~/.cache/punified_jax)
  PUNIFIED_DATASETS     comma-separated datasets of the mixtures (default: the paper's eight)
  PUNIFIED_SPLIT_SEED   seed of the paper's held-out splits (MSRA, Boson, People Daily)
  PUNIFIED_MIXTURE_RATE uniform | proportional | temperature;  PUNIFIED_MIXTURE_TEMPERATURE, _CAP
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
from typing import Iterable, Mapping, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from punified_jax import entity_types
from punified_jax import metrics
from punified_jax import prompts
from punified_jax import storage
from punified_jax.data import sources
from punified_jax.data.example import Example, Span
from punified_jax.tasks import mixing
from punified_jax.tasks import names

# data/tfds_builder.py (tensorflow_datasets) and vocab.py (sentencepiece, tensorflow_text) are
# imported inside the functions that use them: only TFDS mode and the first tokenization need
# them, and every `import tasks` (t5x, each gin run) imports this module.

# The prompt mode (prompts.make_ner_example) of each NER task kind on its train split.
NER_MODES = {names.NER: "dataset", names.NER_RANDOM: "random", names.NER_RANDOM_EXACT: "random_exact"}
MIXTURES = names.MIXTURES
RATE_MODES = mixing.SCHEMES

# Features of the raw source, one record a sentence. Spans are three parallel vectors.
SOURCE_FEATURES = {
    "id": tf.TensorSpec([], tf.string),
    "split": tf.TensorSpec([], tf.string),
    "text": tf.TensorSpec([], tf.string),
    "span_start": tf.TensorSpec([None], tf.int32),
    "span_end": tf.TensorSpec([None], tf.int32),
    "span_type": tf.TensorSpec([None], tf.string),
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where examples and the vocabulary come from, and how the mixtures are weighted.

  `raw_dir` is a directory or `sources.BUILTIN` ("builtin"); `tfds_dir` alone also works. With
  neither, `has_source` is False and no task is registered.
  """
  raw_dir: Optional[str] = None
  data_format: Optional[str] = None
  tfds_dir: Optional[str] = None
  vocabulary: Optional[str] = None
  datasets: tuple[str, ...] = entity_types.PAPER_DATASETS
  split_seed: int = 0
  mixture_rate: str = "uniform"
  temperature: float = 1.0
  cap: Optional[int] = None

  def __post_init__(self):
    for ds in self.datasets:
      entity_types.check_dataset(ds)
    if self.mixture_rate not in RATE_MODES:
      raise ValueError(f"mixture_rate {self.mixture_rate!r}: expected one of {RATE_MODES}")
    if self.temperature <= 0:
      raise ValueError(f"mixture temperature must be > 0, got {self.temperature}")
    mixing.scheme_from_config(self)  # rejects a cap/temperature the scheme would ignore

  @classmethod
  def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "DataConfig":
    env = os.environ if environ is None else environ
    get = lambda key: env.get(key) or None  # an empty variable counts as unset
    values = dict(
        raw_dir=get("PUNIFIED_RAW_DIR"), data_format=get("PUNIFIED_FORMAT"),
        tfds_dir=get("PUNIFIED_TFDS_DIR"), vocabulary=get("PUNIFIED_VOCAB"),
        split_seed=int(get("PUNIFIED_SPLIT_SEED") or 0),
        mixture_rate=get("PUNIFIED_MIXTURE_RATE") or "uniform",
        temperature=float(get("PUNIFIED_MIXTURE_TEMPERATURE") or 1.0),
        cap=int(get("PUNIFIED_MIXTURE_CAP")) if get("PUNIFIED_MIXTURE_CAP") else None)
    if get("PUNIFIED_DATASETS"):
      values["datasets"] = tuple(d.strip() for d in get("PUNIFIED_DATASETS").split(",")
                                 if d.strip())
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("datasets"), str):
      values["datasets"] = tuple(d.strip() for d in values["datasets"].split(",") if d.strip())
    return cls(**values)

  @property
  def has_source(self) -> bool:
    return bool(self.raw_dir or self.tfds_dir)

  @property
  def is_builtin(self) -> bool:
    return self.raw_dir == sources.BUILTIN and not self.tfds_dir

  def describe_source(self) -> str:
    """One line for logs and messages: where the examples come from."""
    if self.tfds_dir:
      return f"TFDS datasets in {self.tfds_dir}"
    if self.raw_dir == sources.BUILTIN:
      return "the built-in synthetic corpus (PUNIFIED_RAW_DIR=builtin)"
    if self.raw_dir:
      return f"raw files under {self.raw_dir}"
    return "no data source"

  def format_for(self, dataset: str) -> Optional[str]:
    """The configured format if this dataset can be read in it, else its release format."""
    if self.data_format and self.data_format in sources.DATASET_FORMATS[dataset]:
      return self.data_format
    return None


class NoDataSourceError(ValueError):
  """Neither a raw directory nor a TFDS directory is configured."""


NO_DATA_SOURCE_MESSAGE = (
    "no data source configured. Set one of: PUNIFIED_RAW_DIR=/path/to/downloads (gin: "
    "tasks.configure.raw_dir = '/path'), PUNIFIED_TFDS_DIR=/path/to/tfds (gin: "
    "tasks.configure.tfds_dir = '/path', datasets built by `python -m punified_jax prepare`), "
    "or PUNIFIED_RAW_DIR=builtin (gin: tasks.configure.raw_dir = 'builtin') for the built-in "
    "synthetic corpus. An unset PUNIFIED_RAW_DIR no longer means the built-in corpus.")


def require_data_source(config: Optional[DataConfig] = None) -> DataConfig:
  """The config in effect; raises NoDataSourceError when it names no data source."""
  config = config or _current or DataConfig.from_env()
  if not config.has_source:
    raise NoDataSourceError(NO_DATA_SOURCE_MESSAGE)
  return config


# ------------------------------------------------------------------------------------------
# Loading examples (cached: tasks, mixtures and the vocabulary share one read of each file).
# ------------------------------------------------------------------------------------------

_load_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _load(dataset: str, raw_dir: Optional[str], data_format: Optional[str], seed: int):
  with _load_lock:
    loaded = sources.load_dataset(dataset, raw_dir, format=data_format, seed=seed)
  for split, report in loaded.repairs.items():
    if report:
      logging.warning("%s/%s: lenient reader repaired %s", dataset, split, report.as_dict())
  return loaded


def load_examples(config: DataConfig, dataset: str) -> dict[str, list[Example]]:
  """Every split of `dataset` as Examples, from the raw files or (TFDS mode) the TFDS data."""
  if config.tfds_dir:
    return {split: _tfds_examples(config, dataset, split)
            for split in available_splits(config, dataset)}
  return loaded_dataset(config, dataset).splits


def loaded_dataset(config: DataConfig, dataset: str) -> sources.LoadedDataset:
  """The reader's whole result for `dataset` (splits, repairs, unlabeled splits); raw mode."""
  require_data_source(config)
  if not config.raw_dir:
    raise ValueError(f"{dataset}: TFDS mode has no raw files to read (PUNIFIED_TFDS_DIR="
                     f"{config.tfds_dir}, PUNIFIED_RAW_DIR unset)")
  return _load(dataset, config.raw_dir, config.format_for(dataset), config.split_seed)


def _tfds_builder(config: DataConfig, dataset: str):
  from punified_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
  return tfds_builder.make_builder(dataset, format=config.format_for(dataset),
                                   seed=config.split_seed, data_dir=config.tfds_dir)


@functools.lru_cache(maxsize=None)
def _tfds_split_names(config: DataConfig, dataset: str) -> tuple[str, ...]:
  builder = _tfds_builder(config, dataset)
  if not builder.is_prepared():
    return ()
  return tuple(name for name in sources.SPLITS if name in builder.info.splits)


def _tfds_examples(config: DataConfig, dataset: str, split: str) -> list[Example]:
  from punified_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
  # The vocabulary may first be needed inside a tf.data graph (tokenization): read eagerly.
  with tf.init_scope():
    records = _tfds_builder(config, dataset).as_dataset(split=split, shuffle_files=False)
    return [tfds_builder.examples_from_tfds(r) for r in records.as_numpy_iterator()]


def available_splits(config: DataConfig, dataset: str) -> tuple[str, ...]:
  """Splits of `dataset` in the config's data (empty when it is not there).

  TFDS mode lists the splits the prepared TFDS dataset holds (no raw directory needed; `prepare`
  writes no empty split). No data source: nothing.
  """
  if config.tfds_dir:
    return _tfds_split_names(config, dataset)
  if not config.raw_dir:
    return ()
  try:
    return sources.available_splits(dataset, config.raw_dir, format=config.format_for(dataset))
  except sources.MissingDataError:
    return ()


class ExamplesSource(seqio.DataSource):
  """A seqio DataSource over the Examples a reader returns (read lazily, on first use).

  Records carry the sentence, its gold spans (raw labels) and the split name, which the prompt
  preprocessor uses to prompt held-out splits with the dataset's own types.
  """

  def __init__(self, config: DataConfig, dataset: str, splits: Sequence[str]):
    self._config = config
    self._dataset = dataset
    super().__init__(splits=splits, caching_permitted=False)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True  # we shard records ourselves, by index

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def num_input_examples(self, split: str) -> int:
    return len(load_examples(self._config, self._dataset)[split])

  def gold_problem(self, split: str) -> Optional[str]:
    """Why `split` cannot be scored (no gold annotations), or None; read by the Evaluator."""
    return _gold_problem(self._config, self._dataset, split)

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs
    examples = load_examples(self._config, self._dataset)[split]
    order = np.arange(len(examples))
    if shuffle and seed is not None:
      order = np.random.default_rng(int(seed)).permutation(len(examples))
    if shard_info and shard_info.num_shards > 1:
      order = order[shard_info.index::shard_info.num_shards]
    # Tensors, not a Python generator: a tf.data iterator over tensor slices can be checkpointed
    # (punified_jax/input_state.py saves the training input position that way); a generator's
    # cannot. Spans are ragged rows: slicing yields one dense vector per sentence.
    chosen = [examples[i] for i in order]
    spans = [ex.spans for ex in chosen]
    lengths = np.array([len(s) for s in spans], np.int64)

    def ragged(values, dtype):
      return tf.RaggedTensor.from_row_lengths(tf.constant(values, dtype, shape=[len(values)]), lengths)

    # tf.constant of Python strings, not numpy bytes_ arrays (which drop trailing NUL bytes).
    return tf.data.Dataset.from_tensor_slices({
        "id": tf.constant([f"{self._dataset}-{split}-{i}" for i in order], tf.string, shape=[len(order)]),
        "split": tf.constant([split] * len(order), tf.string, shape=[len(order)]),
        "text": tf.constant([ex.text for ex in chosen], tf.string, shape=[len(order)]),
        "span_start": ragged([s.start for row in spans for s in row], tf.int32),
        "span_end": ragged([s.end for row in spans for s in row], tf.int32),
        "span_type": ragged([s.type for row in spans for s in row], tf.string),
    })


def _gold_problem(config: DataConfig, dataset: str, split: str) -> Optional[str]:
  if config.tfds_dir:
    unlabeled = sources.unlabeled_splits(dataset, config.format_for(dataset))
    where = f"TFDS {config.tfds_dir}"
  else:
    loaded = loaded_dataset(config, dataset)
    unlabeled = loaded.unlabeled
    where = loaded.directory
  if split in unlabeled:
    return f"the {dataset} {split} split carries no labels (an unlabeled release file in {where})"
  examples = load_examples(config, dataset).get(split, [])
  if examples and not any(ex.spans for ex in examples):
    return (f"none of the {len(examples)} sentences of the {dataset} {split} split has a gold "
            f"mention ({where}): nothing to score")
  return None


class TfdsSplitSource(seqio.TfdsDataSource):
  """TfdsDataSource whose records carry their split name (see ExamplesSource)."""

  def __init__(self, *args, config: DataConfig, dataset: str, **kwargs):
    self._config = config
    self._dataset = dataset
    super().__init__(*args, **kwargs)

  def gold_problem(self, split: str) -> Optional[str]:
    return _gold_problem(self._config, self._dataset, split)

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed=None, shard_info=None,
                  **kwargs) -> tf.data.Dataset:
    ds = super().get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info,
                             **kwargs)

    def flatten(record):
      return {"id": record["id"], "split": tf.constant(split), "text": record["text"],
              "span_start": tf.cast(record["spans"]["start"], tf.int32),
              "span_end": tf.cast(record["spans"]["end"], tf.int32),
              "span_type": record["spans"]["type"]}

    return ds.map(flatten, num_parallel_calls=tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------
# Preprocessors
# ------------------------------------------------------------------------------------------


def _example_of(text: bytes, starts, ends, types_) -> Example:
  text = text.decode("utf-8")
  return Example(text, [Span(int(s), int(e), t.decode("utf-8"))
                        for s, e, t in zip(starts, ends, types_)])


def _rng_of(seed) -> np.random.Generator:
  # seqio hands each example a stateless seed: a pair of int32.
  return np.random.default_rng([int(x) & 0xFFFFFFFF for x in np.asarray(seed).ravel()])


def prompt_ner(ds: tf.data.Dataset, *, dataset: str, mode: str) -> tf.data.Dataset:
  """Sentence records -> {"inputs", "targets"} strings in the paper's prompt format.

  Also keeps, for evaluation: "text", "id", and gold offsets ("gold_starts", "gold_ends",
  "gold_types" with prompt names) that metrics.offset_exact_f1 reads. Held-out splits always
  use the dataset prompt. A "random_exact" training record yields two examples.
  """
  prompt_mode = mode

  def build(text, split, starts, ends, types_, seed):
    example = _example_of(text, starts, ends, types_)
    use_mode = prompt_mode if split == b"train" else "dataset"
    made = prompts.make_ner_example(example, dataset, use_mode, _rng_of(seed))
    golds = [(s.start, s.end, entity_types.prompt_name(dataset, s.type)) for s in example.spans]
    # An empty object array crashes tf.numpy_function's string conversion; use bytes_ dtype.
    as_bytes = lambda values: np.array([v.encode("utf-8") for v in values], np.bytes_)
    return (as_bytes([m["inputs"] for m in made]), as_bytes([m["targets"] for m in made]),
            np.array([g[0] for g in golds], np.int32), np.array([g[1] for g in golds], np.int32),
            as_bytes([g[2] for g in golds]))

  @seqio.map_over_dataset(num_seeds=1)
  def to_prompted(record, seed):
    inputs, targets, gold_starts, gold_ends, gold_types = tf.numpy_function(
        build, [record["text"], record["split"], record["span_start"], record["span_end"],
                record["span_type"], seed],
        [tf.string, tf.string, tf.int32, tf.int32, tf.string], stateful=False)
    return {
        "inputs": tf.ensure_shape(inputs, [None]),  # [1], or [2] for random_exact training
        "targets": tf.ensure_shape(targets, [None]),
        "id": record["id"],
        "text": record["text"],
        metrics.GOLD_STARTS_FEATURE: tf.ensure_shape(gold_starts, [None]),
        metrics.GOLD_ENDS_FEATURE: tf.ensure_shape(gold_ends, [None]),
        metrics.GOLD_TYPES_FEATURE: tf.ensure_shape(gold_types, [None]),
    }

  def pick(record, index):
    return {**record, "inputs": record["inputs"][index], "targets": record["targets"][index]}

  prompted = to_prompted(ds)
  if mode != "random_exact":
    return prompted.map(lambda r: pick(r, 0), num_parallel_calls=tf.data.AUTOTUNE)

  # Two examples for a training record, one for a held-out one. (Not `unbatch`: TF 2.21
  # crashes unbatching a [n, 0] string tensor, i.e. the gold types of a sentence without
  # entities.)
  def expand(record):
    first = tf.data.Dataset.from_tensors(pick(record, 0))
    second = tf.data.Dataset.from_tensors(pick(record, tf.shape(record["inputs"])[0] - 1))
    return first.concatenate(second.take(tf.cast(tf.shape(record["inputs"])[0] > 1, tf.int64)))

  return prompted.flat_map(expand)


def prefix_lm(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Sentence records -> {"inputs": left part, "targets": right part} at a random character.

  Sentences shorter than two characters have no split point and yield no example (a documented
  property of the objective, not a repair).
  """

  def build(text, seed):
    made = prompts.make_prefix_lm_example(text.decode("utf-8"), _rng_of(seed))
    if made is None:
      return np.zeros([0], np.bytes_), np.zeros([0], np.bytes_)
    return (np.array([made["inputs"].encode("utf-8")], np.bytes_),
            np.array([made["targets"].encode("utf-8")], np.bytes_))

  @seqio.map_over_dataset(num_seeds=1)
  def split_text(record, seed):
    inputs, targets = tf.numpy_function(build, [record["text"], seed], [tf.string, tf.string],
                                        stateful=False)
    return {"inputs": tf.ensure_shape(inputs, [None]),  # [1], or [0] for a 1-character text
            "targets": tf.ensure_shape(targets, [None]), "id": record["id"]}

  return (split_text(ds).filter(lambda r: tf.shape(r["inputs"])[0] > 0)
          .map(lambda r: {**r, "inputs": r["inputs"][0], "targets": r["targets"][0]}))


# ------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------


def _cache_dir() -> str:
  return os.environ.get("PUNIFIED_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "punified_jax")


def _data_fingerprint(config: DataConfig) -> str:
  """Identifies the training text a default vocabulary is built from (paths, sizes, mtimes --
  local or gs:// alike, so a same-size rewrite within one second goes unnoticed; in TFDS mode
  the TFDS directory and the prepared split sizes)."""
  raw_dir = config.raw_dir and storage.absolute(sources.resolve_raw_dir(config.raw_dir))
  if config.tfds_dir:
    raw_dir = None  # TFDS mode reads no raw file
  parts = [json.dumps([raw_dir, config.tfds_dir, config.data_format,
                       sorted(config.datasets), config.split_seed, VOCAB_RECIPE_VERSION])]
  if config.tfds_dir:
    for dataset in sorted(config.datasets):
      if _tfds_split_names(config, dataset):
        info = _tfds_builder(config, dataset).info
        parts.append(f"{dataset}:" + ",".join(f"{name}={split.num_examples}"
                                              for name, split in sorted(info.splits.items())))
  elif raw_dir:
    for dataset in sorted(config.datasets):
      try:
        directory = sources.dataset_dir(dataset, config.raw_dir, config.format_for(dataset))
      except sources.MissingDataError:
        continue
      for name in storage.listdir(directory):  # local or gs:// alike
        stat = storage.as_path(storage.join(directory, name)).stat()
        parts.append(f"{dataset}/{name}:{stat.length}:{int(stat.mtime or 0)}")
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


VOCAB_RECIPE_VERSION = 1


def default_vocabulary_path(config: DataConfig) -> str:
  """Trains (once, then reuses) a character-level SentencePiece model on the train text."""
  from punified_jax import vocab  # pylint: disable=g-import-not-at-top
  require_data_source(config)
  path = os.path.join(_cache_dir(), "vocab", f"punified_char_{_data_fingerprint(config)}.model")
  if not os.path.exists(path):
    texts = []
    for dataset in config.datasets:
      if "train" in available_splits(config, dataset):
        texts.extend(ex.text for ex in load_examples(config, dataset)["train"])
    if not texts:
      raise ValueError(f"no training text found for datasets {config.datasets} in "
                       f"{config.describe_source()}")
    vocab.train_sentencepiece(texts, path)
    logging.info("trained the default vocabulary on %d sentences: %s", len(texts), path)
  return path


class LazyVocabulary(seqio.Vocabulary):
  """Defers building the vocabulary (reading data, maybe training it) to its first use.

  Registering tasks must be cheap (every `import tasks` does it); the vocabulary is only needed
  once a dataset is tokenized.
  """

  def __init__(self, config: DataConfig):
    self._config = config
    self._vocab = None
    self._lock = threading.Lock()
    super().__init__(extra_ids=0)

  @property
  def vocabulary(self) -> seqio.Vocabulary:
    with self._lock:
      if self._vocab is None:
        from punified_jax import vocab  # pylint: disable=g-import-not-at-top
        path = self._config.vocabulary or default_vocabulary_path(self._config)
        self._vocab = vocab.get_vocabulary(path)
      return self._vocab

  # Delegation of seqio.Vocabulary's interface.
  eos_id = property(lambda self: self.vocabulary.eos_id)
  pad_id = property(lambda self: self.vocabulary.pad_id)
  unk_id = property(lambda self: self.vocabulary.unk_id)
  _base_vocab_size = property(lambda self: self.vocabulary.vocab_size)

  def _encode(self, s):
    return self.vocabulary.encode(s)

  def _decode(self, ids):
    return self.vocabulary.decode(ids)

  def _encode_tf(self, s):
    return self.vocabulary.encode_tf(s)

  def _decode_tf(self, ids):
    return self.vocabulary.decode_tf(ids)

  def __getattr__(self, name):
    # Vocabulary-specific helpers (offsets, sentencepiece_model_file, ...) reach the real one.
    if name.startswith("__") or name in ("_config", "_vocab", "_lock"):
      raise AttributeError(name)
    return getattr(self.vocabulary, name)

  def __eq__(self, other):
    if isinstance(other, LazyVocabulary):
      return self._config == other._config
    if isinstance(other, seqio.Vocabulary):
      # e.g. t5x checks the model's explicit SentencePieceVocabulary(path) against the tasks'.
      return self.vocabulary == other
    return NotImplemented

  def __hash__(self):
    return hash(self._config)


# ------------------------------------------------------------------------------------------
# Registration
# ------------------------------------------------------------------------------------------


def _register_task(name: str, **kwargs) -> None:
  seqio.TaskRegistry.remove(name)  # re-registration (a new config) replaces the old task
  seqio.TaskRegistry.add(name, **kwargs)


def _register_mixture(name: str, tasks: list, default_rate) -> None:
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, tasks, default_rate=default_rate)


def mixture_rate_fn(config: DataConfig):
  """The mixing rate of a task under `config`: the scheme in effect when seqio samples (gin's
  tasks.mixing.scheme, else the config's), see mixing.py."""
  return mixing.rate_fn(config)


_current: Optional[DataConfig] = None


def current_config() -> Optional[DataConfig]:
  """The config of the last `register_all` call."""
  return _current


def register_all(config: Optional[DataConfig] = None) -> DataConfig:
  """(Re-)registers every task and mixture for `config` (default: from the environment)."""
  global _current
  config = config or DataConfig.from_env()
  _remove_registered()
  _current = config
  if not config.has_source:
    # Importing `tasks` must stay harmless (t5x, tests, tools); the entry points that need data
    # call require_data_source, which names the settings.
    logging.warning("PUnifiedNER tasks not registered: no data source (set PUNIFIED_RAW_DIR to a "
                    "directory or to 'builtin', or PUNIFIED_TFDS_DIR)")
    return config
  vocabulary = LazyVocabulary(config)
  output_features = {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=True),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }
  tail = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
  with_train: dict[str, list[str]] = {name: [] for name in MIXTURES}
  for dataset in entity_types.DATASETS:
    splits = available_splits(config, dataset)
    if config.tfds_dir:
      from punified_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
      name = tfds_builder.config_name(dataset, config.format_for(dataset), config.split_seed)
      if not splits:
        continue  # not prepared in this TFDS directory
      source = TfdsSplitSource(tfds_name=f"punified_ner/{name}:{tfds_builder.BUILDER_VERSION}",
                               tfds_data_dir=config.tfds_dir, config=config, dataset=dataset)
    elif splits:
      source = ExamplesSource(config, dataset, splits)
    else:
      continue
    _register_task(names.task_name(dataset, names.PREFIX_LM), source=source,
                   preprocessors=[prefix_lm, *tail], output_features=output_features)
    for kind, mode in NER_MODES.items():
      _register_task(
          names.task_name(dataset, kind), source=source,
          preprocessors=[functools.partial(prompt_ner, dataset=dataset, mode=mode), *tail],
          output_features=output_features, postprocess_fn=metrics.ner_postprocessor,
          metric_fns=[metrics.make_metric_fn(dataset),
                      metrics.make_metric_fn(dataset, variant="offset")])
    if dataset in config.datasets and "train" in splits:
      for mixture, kind in MIXTURES.items():
        with_train[mixture].append(names.task_name(dataset, kind))
  rate = mixture_rate_fn(config)
  for mixture, task_names in with_train.items():
    if task_names:
      _register_mixture(mixture, task_names, rate)
  missing = [d for d in config.datasets if names.task_name(d) not in with_train[names.JOINT_MIXTURE]]
  if missing:
    logging.warning("datasets without a train split in %s are left out of the mixtures: %s",
                    config.describe_source(), ", ".join(missing))
  logging.info("PUnifiedNER tasks registered from %s", config.describe_source())
  return config


def _remove_registered() -> None:
  """Drops every task and mixture a previous config registered (a dataset that is not in the new
  data must not linger with a stale source)."""
  for name in list(seqio.MixtureRegistry.names()):
    if name in MIXTURES:
      seqio.MixtureRegistry.remove(name)
  for name in list(seqio.TaskRegistry.names()):
    if names.parse_task_name(name):
      seqio.TaskRegistry.remove(name)


@gin.configurable(module="tasks")
def configure(raw_dir: Optional[str] = None, data_format: Optional[str] = None,
              tfds_dir: Optional[str] = None, vocabulary: Optional[str] = None,
              datasets: Optional[Sequence[str]] = None, split_seed: Optional[int] = None,
              mixture_rate: Optional[str] = None, temperature: Optional[float] = None,
              cap: Optional[int] = None) -> DataConfig:
  """Re-registers the tasks with gin-bound overrides on top of the environment's config.

  Our trainer calls this after parsing gin, so `tasks.configure.raw_dir = '/data'` (or
  `'builtin'`) in a gin file works like PUNIFIED_RAW_DIR. Returns the config in effect. (t5x
  never calls this: bindings of it then fail at gin's finalize, see
  mixing.check_configure_applied.)
  """
  mixing.note_configure_applied()
  config = DataConfig.from_env(
      raw_dir=raw_dir, data_format=data_format, tfds_dir=tfds_dir, vocabulary=vocabulary,
      datasets=tuple(datasets) if datasets is not None and not isinstance(datasets, str)
      else datasets, split_seed=split_seed, mixture_rate=mixture_rate,
      temperature=temperature, cap=cap)
  if config != _current:
    register_all(config)
  return config


def vocabulary_for(config: Optional[DataConfig] = None) -> seqio.Vocabulary:
  """The (lazy) vocabulary the tasks registered under `config` use."""
  return LazyVocabulary(config or _current or DataConfig.from_env())
