"""The self-description of a model directory: what is needed to serve its checkpoints.

A checkpoint holds parameters only.  To use it one also needs the network's shape (T5Config),
the exact vocabulary it was trained with, and the feature lengths it saw.  The trainer writes
them at start-up with `save_model_info`:

    <model_dir>/punified_model.json     {"format_version", "t5_config": {...},
                                         "vocabulary": {"file": "vocab/<name>", "sha256",
                                         "kind", "size"}, "task_feature_lengths", "extra"}
    <model_dir>/vocab/<name>            a copy of the vocabulary file (.model or vocab.txt)

so `load_model_info(model_dir)` (and `inference.Extractor.load`) need nothing but the
directory, even after the original vocabulary file has moved.  The copy's sha256 is checked
on load: a vocabulary edited after training would silently change every token id.

Directories written by `python -m punified_jax from_t5x` (run_dir.convert_t5x, `model.json`)
load too; they carry no feature lengths (None).

Local or gs:// directories alike (all IO through `storage`).  Light to import: the model module
(jax, flax) is imported only when a T5Config is built, so run_dir can import this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

from punified_jax import storage

MODEL_INFO_FILE = "punified_model.json"
VOCAB_SUBDIR = "vocab"
FORMAT_VERSION = 1
# What `python -m punified_jax from_t5x` writes (run_dir.convert_t5x).
CONVERTED_MODEL_JSON = "model.json"

# T5Config fields that change the parameter shapes or their meaning: a directory that already
# describes other values holds checkpoints of another network.
_SHAPE_FIELDS = ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
                 "num_decoder_layers", "head_dim", "mlp_dim", "relative_attention_num_buckets",
                 "relative_attention_max_distance", "logits_via_embedding",
                 "decoder_start_token_id")


class ModelInfoError(ValueError):
  """A model directory's description is missing, malformed or inconsistent (names the file)."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What `load_model_info` read.

  vocabulary_path: absolute path of the vocabulary copy inside the model directory.
  task_feature_lengths: {"inputs": N, "targets": M} the model was trained with, or None
    (unknown, e.g. a converted t5x checkpoint).
  """
  model_dir: str
  t5_config: Any  # model.T5Config
  vocabulary_path: str
  vocabulary_sha256: str
  task_feature_lengths: Optional[dict[str, int]]
  extra: dict
  format_version: int

  def vocabulary(self):
    """The seqio vocabulary (SentencePiece for `.model`, WordPiece for `.txt`)."""
    from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    return vocab_lib.get_vocabulary(self.vocabulary_path)


def file_sha256(path: str) -> str:
  return storage.sha256(path)


def _vocabulary_kind(path: str) -> str:
  if path.endswith(".model"):
    return "sentencepiece"
  if path.endswith(".txt"):
    return "wordpiece"
  raise ModelInfoError(f"{path}: unknown vocabulary kind (expected a SentencePiece '.model' or "
                       "a WordPiece 'vocab.txt')")


def _check_feature_lengths(lengths: Any, where: str) -> Optional[dict[str, int]]:
  if lengths is None:
    return None
  if not isinstance(lengths, Mapping):
    raise ModelInfoError(f"{where}: task_feature_lengths must be a mapping like "
                         f"{{'inputs': 512, 'targets': 512}}, got {lengths!r}")
  out = {}
  for key in ("inputs", "targets"):
    value = lengths.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ModelInfoError(f"{where}: task_feature_lengths[{key!r}] must be a positive int, "
                           f"got {value!r}")
    out[key] = value
  return out


def save_model_info(model_dir: str, *, t5_config, vocabulary_path: str,
                    task_feature_lengths: Mapping[str, int],
                    extra: Optional[Mapping[str, Any]] = None) -> str:
  """Copies the vocabulary into `<model_dir>/vocab/` and writes `<model_dir>/punified_model.json`.

  Safe to call at every (re)start of a run: an existing description is checked first, and a
  different vocabulary (by sha256) or a different network shape raises ModelInfoError instead
  of mixing two models in one directory.  Feature lengths, non-shape config fields (dropout,
  dtype, remat) and `extra` (JSON-serialisable, e.g. {"mixture": ..., "prompt_names": [...]})
  are updated.  Call it from one process only (process 0).  Returns the JSON file's path.
  """
  from punified_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  if not isinstance(t5_config, model_lib.T5Config):
    raise TypeError(f"t5_config must be a model.T5Config, got {type(t5_config).__name__}")
  vocabulary_path = os.fspath(vocabulary_path)
  if not storage.isfile(vocabulary_path):
    raise FileNotFoundError(f"vocabulary file not found: {vocabulary_path}")
  kind = _vocabulary_kind(vocabulary_path)
  lengths = _check_feature_lengths(dict(task_feature_lengths), "save_model_info")
  extra = dict(extra or {})
  try:
    json.dumps(extra)
  except (TypeError, ValueError) as error:
    raise TypeError(f"save_model_info: extra must be JSON-serialisable: {error}") from None

  sha = file_sha256(vocabulary_path)
  name = storage.basename(vocabulary_path)
  config = dataclasses.asdict(t5_config)
  info_path = storage.join(model_dir, MODEL_INFO_FILE)
  if storage.exists(info_path):
    previous = load_model_info(model_dir)
    if previous.vocabulary_sha256 != sha:
      raise ModelInfoError(
          f"{info_path}: this directory was written with vocabulary "
          f"{previous.vocabulary_path} (sha256 {previous.vocabulary_sha256[:12]}...), not "
          f"{vocabulary_path} (sha256 {sha[:12]}...); use a new MODEL_DIR")
    changed = [f"{field}: {getattr(previous.t5_config, field)!r} -> {config[field]!r}"
               for field in _SHAPE_FIELDS if getattr(previous.t5_config, field) != config[field]]
    if changed:
      raise ModelInfoError(f"{info_path}: this directory holds another network "
                           f"({'; '.join(changed)}); use a new MODEL_DIR")
    name = storage.basename(previous.vocabulary_path)  # keep the existing copy

  target = storage.join(model_dir, VOCAB_SUBDIR, name)
  if not storage.exists(target) or file_sha256(target) != sha:
    storage.copy(vocabulary_path, target)
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  size = int(vocab_lib.get_vocabulary(target).vocab_size)
  if size > t5_config.vocab_size:
    raise ModelInfoError(f"vocabulary {vocabulary_path} has {size} entries but "
                         f"T5Config.vocab_size is {t5_config.vocab_size}")
  storage.write_json_atomic(info_path, {
      "format_version": FORMAT_VERSION,
      "t5_config": config,
      "vocabulary": {"file": f"{VOCAB_SUBDIR}/{name}", "sha256": sha, "kind": kind,
                     "size": size, "source": storage.absolute(vocabulary_path)},
      "task_feature_lengths": lengths,
      "extra": extra,
  })
  return info_path


def _config_from(fields: Any, where: str):
  from punified_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  if not isinstance(fields, Mapping):
    raise ModelInfoError(f"{where}: t5_config must be an object, got {fields!r}")
  known = {f.name for f in dataclasses.fields(model_lib.T5Config)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ModelInfoError(f"{where}: unknown T5Config fields {unknown} (written by a newer "
                         "version?)")
  try:
    return model_lib.T5Config(**fields)
  except (TypeError, ValueError) as error:
    raise ModelInfoError(f"{where}: invalid t5_config: {error}") from None


def load_model_info(model_dir: str) -> ModelInfo:
  """Reads `<model_dir>/punified_model.json` (or a from_t5x `model.json`) and checks it.

  Raises FileNotFoundError when the directory has neither file, ModelInfoError (a ValueError
  naming the file) when the description is malformed or the vocabulary copy is missing or
  no longer matches its recorded sha256.
  """
  model_dir = storage.absolute(model_dir)
  path = storage.join(model_dir, MODEL_INFO_FILE)
  if not storage.exists(path):
    bridge = storage.join(model_dir, CONVERTED_MODEL_JSON)
    if storage.exists(bridge):
      return _load_bridge_description(model_dir, bridge)
    raise FileNotFoundError(f"{model_dir} has no {MODEL_INFO_FILE}: not a model directory "
                            "written by the trainer (or from_t5x)")
  description = _read_json_object(path)
  version = description.get("format_version")
  if version != FORMAT_VERSION:
    raise ModelInfoError(f"{path}: format_version {version!r} is not supported (this code "
                         f"reads version {FORMAT_VERSION})")
  config = _config_from(description.get("t5_config"), path)
  vocabulary = description.get("vocabulary")
  if not isinstance(vocabulary, dict) or not isinstance(vocabulary.get("file"), str):
    raise ModelInfoError(f"{path}: 'vocabulary' must be an object with a 'file'")
  vocabulary_path = storage.join(model_dir, vocabulary["file"])
  if not storage.isfile(vocabulary_path):
    raise ModelInfoError(f"{path}: the vocabulary copy {vocabulary_path} is missing")
  sha = file_sha256(vocabulary_path)
  if vocabulary.get("sha256") != sha:
    raise ModelInfoError(f"{path}: {vocabulary_path} has sha256 {sha[:12]}... but "
                         f"{str(vocabulary.get('sha256'))[:12]}... was recorded: the vocabulary "
                         "changed after training")
  lengths = _check_feature_lengths(description.get("task_feature_lengths"), path)
  extra = description.get("extra") or {}
  if not isinstance(extra, dict):
    raise ModelInfoError(f"{path}: 'extra' must be an object")
  return ModelInfo(model_dir, config, vocabulary_path, sha, lengths, extra, version)


def _read_json_object(path: str) -> dict:
  try:
    description = json.loads(storage.read_text(path))
  except json.JSONDecodeError as error:
    raise ModelInfoError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
  if not isinstance(description, dict):
    raise ModelInfoError(f"{path}: expected a JSON object")
  return description


def _load_bridge_description(model_dir: str, path: str) -> ModelInfo:
  description = _read_json_object(path)
  config = _config_from(description.get("config"), path)
  vocabulary = description.get("vocabulary")
  if not isinstance(vocabulary, str):
    raise ModelInfoError(f"{path}: no vocabulary was given to from_t5x (--vocabulary), so "
                         "this directory cannot be served")
  vocabulary_path = storage.join(model_dir, vocabulary)
  if not storage.isfile(vocabulary_path):
    raise ModelInfoError(f"{path}: the vocabulary copy {vocabulary_path} is missing")
  return ModelInfo(model_dir, config, vocabulary_path, file_sha256(vocabulary_path), None,
                   {"converted_from": description.get("converted_from")}, 0)
