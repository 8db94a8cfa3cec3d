"""A Hugging Face model directory's files: reading config and weights, the tokenizer files.

What `hf_interop` needs from the directory format and nothing about parameter trees: the file
names `save_pretrained` uses, `config.json` and the weights (safetensors, sharded safetensors,
pytorch_model.bin) as numpy arrays, which vocabulary file a directory carries, and writing our
vocabulary as HF tokenizer files (what export writes: see `hf_interop`'s docstring).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from punified_jax import storage

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PYTORCH_FILE = "pytorch_model.bin"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
WORDPIECE_VOCAB_FILE = "vocab.txt"
SENTENCEPIECE_FILE = "spiece.model"
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, PYTORCH_FILE)


class HfInteropError(ValueError):
  """A Hugging Face directory that cannot be read, or that does not fit our model."""


def write_json(path: str, value: Any) -> None:
  storage.write_json_atomic(path, value, indent=2, allow_nan=False)


# ----------------------------------------------------------------------------------------------
# Reading a directory.
# ----------------------------------------------------------------------------------------------


def is_hf_checkpoint_dir(path: str) -> bool:
  """True for a directory with config.json and HF weights (what INITIAL_CHECKPOINT_PATH may be)."""
  path = os.fspath(path)
  return (storage.isdir(path) and storage.isfile(storage.join(path, CONFIG_FILE))
          and any(storage.isfile(storage.join(path, name)) for name in WEIGHT_FILES))


def read_json(path: str) -> Any:
  try:
    return json.loads(storage.read_bytes(path).decode("utf-8"))
  except FileNotFoundError:
    raise
  except json.JSONDecodeError as error:
    raise HfInteropError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
  except UnicodeDecodeError as error:
    raise HfInteropError(f"{path}: not UTF-8 ({error.reason})") from None


def read_hf_config(hf_dir: str) -> dict[str, Any]:
  """config.json of an HF directory as a dict (errors name the file)."""
  hf_dir = os.fspath(hf_dir)
  if not storage.isdir(hf_dir):
    raise HfInteropError(f"HF directory {hf_dir!r} does not exist")
  path = storage.join(hf_dir, CONFIG_FILE)
  try:
    config = read_json(path)
  except FileNotFoundError:
    present = ", ".join(storage.listdir(hf_dir)[:10]) or "nothing"
    raise HfInteropError(f"{path} does not exist: not a Hugging Face model directory (it holds "
                         f"{present})") from None
  if not isinstance(config, dict):
    raise HfInteropError(f"{path}: expected a JSON object, got {type(config).__name__}")
  return config


def _weights_source(hf_dir: str) -> tuple[str, str]:
  """(kind, path) of the weights: safetensors, a safetensors index, or a pytorch .bin."""
  for kind, name in (("safetensors", SAFETENSORS_FILE), ("index", SAFETENSORS_INDEX_FILE),
                     ("pytorch", PYTORCH_FILE)):
    path = storage.join(hf_dir, name)
    if storage.isfile(path):
      return kind, path
  raise HfInteropError(f"{hf_dir}: no weights found (expected one of {', '.join(WEIGHT_FILES)}; "
                       "sharded pytorch checkpoints and TF/Flax weights are not read: save the "
                       "model again with save_pretrained(safe_serialization=True))")


def _safetensors_index(path: str) -> dict[str, str]:
  index = read_json(path)
  weight_map = index.get("weight_map") if isinstance(index, dict) else None
  if not isinstance(weight_map, dict) or not weight_map:
    raise HfInteropError(f"{path}: no 'weight_map' object (not a safetensors index)")
  return {str(name): str(shard) for name, shard in weight_map.items()}


def hf_weight_names(hf_dir: str) -> list[str]:
  """Names of the tensors in the directory's weights, read from headers only where possible."""
  kind, path = _weights_source(os.fspath(hf_dir))
  if kind == "safetensors":
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    try:
      with safe_open(storage.local_copy(path), framework="numpy") as handle:
        return list(handle.keys())
    except Exception as error:  # safetensors raises its own SafetensorError
      raise HfInteropError(f"{path}: not a readable safetensors file ({error})") from error
  if kind == "index":
    return list(_safetensors_index(path))
  return list(_read_pytorch_bin(path))


def _to_float32(name: str, array: np.ndarray, path: str) -> np.ndarray:
  if not (np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16"):
    raise HfInteropError(f"{path}: tensor {name!r} has dtype {array.dtype}, expected floats")
  return np.asarray(array, dtype=np.float32)


def _read_safetensors(path: str, names: Optional[Iterable[str]] = None) -> dict[str, np.ndarray]:
  import ml_dtypes  # pylint: disable=g-import-not-at-top,unused-import  # numpy learns "bfloat16"
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  tensors = {}
  try:
    # safetensors maps a local file: a gs:// file is read through a cached local copy.
    with safe_open(storage.local_copy(path), framework="numpy") as handle:
      for name in (handle.keys() if names is None else names):
        tensors[name] = _to_float32(name, handle.get_tensor(name), path)
  except HfInteropError:
    raise
  except Exception as error:  # SafetensorError, OSError, TypeError on an unknown dtype
    raise HfInteropError(f"{path}: cannot read the safetensors file ({error})") from error
  return tensors


def _read_pytorch_bin(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    hf_dir = os.path.dirname(path)
    raise HfInteropError(
        f"{path}: reading pytorch_model.bin needs torch, which is not installed here. Convert it "
        f"once with the comparison env: `bash tools/env/torch_env.sh && .venv-torch/bin/python "
        f"tools/hf_check.py convert-bin {hf_dir}` (writes {SAFETENSORS_FILE} beside it), or "
        "install torch in this environment") from None
  try:
    # weights_only: a checkpoint is data; never run the pickle's code.
    state = torch.load(storage.local_copy(path), map_location="cpu", weights_only=True)
  except Exception as error:  # pickle / zip errors
    raise HfInteropError(f"{path}: cannot read the pytorch checkpoint ({error})") from error
  if not isinstance(state, Mapping):
    raise HfInteropError(f"{path}: expected a state dict, got {type(state).__name__}")
  tensors = {}
  for name, tensor in state.items():
    if not hasattr(tensor, "detach"):
      raise HfInteropError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
    tensors[str(name)] = _to_float32(name, tensor.detach().to(torch.float32).cpu().numpy(), path)
  return tensors


def read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  """Every tensor of the directory's weights as float32 numpy arrays, by HF name."""
  hf_dir = os.fspath(hf_dir)
  kind, path = _weights_source(hf_dir)
  if kind == "safetensors":
    return _read_safetensors(path)
  if kind == "pytorch":
    return _read_pytorch_bin(path)
  by_shard: dict[str, list[str]] = {}
  for name, shard in _safetensors_index(path).items():
    by_shard.setdefault(shard, []).append(name)
  tensors = {}
  for shard, names in sorted(by_shard.items()):
    shard_path = storage.join(hf_dir, shard)
    if not storage.isfile(shard_path):
      raise HfInteropError(f"{path}: shard {shard!r} (holding {names[0]!r}) does not exist")
    tensors.update(_read_safetensors(shard_path, names))
  return tensors


# ----------------------------------------------------------------------------------------------
# Vocabulary of an HF directory.
# ----------------------------------------------------------------------------------------------


def hf_vocabulary_path(hf_dir: str) -> str:
  """vocab.txt (BERT WordPiece, the UER checkpoints) or spiece.model (SentencePiece) of `hf_dir`."""
  hf_dir = os.fspath(hf_dir)
  for name in (WORDPIECE_VOCAB_FILE, SENTENCEPIECE_FILE):
    path = storage.join(hf_dir, name)
    if storage.isfile(path):
      return path
  raise HfInteropError(f"{hf_dir}: no vocabulary file ({WORDPIECE_VOCAB_FILE} or "
                       f"{SENTENCEPIECE_FILE}); a tokenizer.json-only directory is not supported: "
                       "pass our own vocabulary instead")


def hf_lower_case(hf_dir: str) -> bool:
  """BertTokenizer's do_lower_case from tokenizer_config.json (default True, as BERT's)."""
  path = storage.join(os.fspath(hf_dir), TOKENIZER_CONFIG_FILE)
  if not storage.isfile(path):
    return True
  config = read_json(path)
  value = config.get("do_lower_case", True) if isinstance(config, dict) else True
  if not isinstance(value, bool):
    raise HfInteropError(f"{path}: do_lower_case must be true or false, got {value!r}")
  return value


def hf_vocabulary(hf_dir: str):
  """The seqio vocabulary of an HF directory (WordPiece with its lower-casing, or SentencePiece)."""
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  path = hf_vocabulary_path(hf_dir)
  if path.endswith(".txt"):
    return vocab_lib.WordPieceVocabulary(path, lower_case=hf_lower_case(hf_dir),
                                         markers=wordpiece_markers(path))
  return vocab_lib.get_vocabulary(path)


def wordpiece_markers(vocab_path: str) -> dict[str, str]:
  """Markers -> tokens for a vocab.txt: BERT's reserved [unusedN], or the markers themselves when
  the file names them (a vocab.txt written by `export_hf`)."""
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  tokens = set(line.rstrip("\r") for line in storage.read_text(vocab_path).split("\n"))
  return {marker: marker if marker in tokens else token
          for marker, token in vocab_lib.WORDPIECE_MARKER_TOKENS.items()}


# ----------------------------------------------------------------------------------------------
# Tokenizer files (written by hf_interop.export_hf).
# ----------------------------------------------------------------------------------------------


def _added_token(content: str, *, special: bool) -> dict[str, Any]:
  return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
          "single_word": False, "special": special}


def write_wordpiece_tokenizer(directory: str, vocab) -> None:
  tokens = [vocab.id_to_token(i) for i in range(vocab.vocab_size)]
  for marker, token_id in vocab.marker_ids.items():
    tokens[token_id] = marker
  with open(os.path.join(directory, WORDPIECE_VOCAB_FILE), "w", encoding="utf-8") as handle:
    handle.write("".join(f"{token}\n" for token in tokens))
  specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
              "sep_token": "[SEP]", "mask_token": "[MASK]"}
  specials = {key: value for key, value in specials.items() if vocab.token_to_id(value) is not None}
  added = {}
  for value in specials.values():
    added[str(vocab.token_to_id(value))] = _added_token(value, special=True)
  for marker, token_id in vocab.marker_ids.items():
    # Not special: skip_special_tokens=True must keep NULL (and the markers) in decoded text.
    added[str(token_id)] = _added_token(marker, special=False)
  write_json(os.path.join(directory, TOKENIZER_CONFIG_FILE), {
      "tokenizer_class": "BertTokenizer",
      "do_lower_case": bool(vocab.lower_case),
      "do_basic_tokenize": True,
      "tokenize_chinese_chars": True,
      "strip_accents": None,
      "model_max_length": 512,
      "added_tokens_decoder": added,
      **specials,
  })
  write_json(os.path.join(directory, SPECIAL_TOKENS_MAP_FILE), specials)


def write_sentencepiece_tokenizer(directory: str, model_path: str, vocab) -> None:
  """spiece.model (a copy, for reference) + tokenizer.json reproducing our char model exactly.

  HF's T5Tokenizer cannot stand in for our model: transformers 5.x rebuilds it as a Unigram
  with a Precompiled normalizer, which fails on our identity model ("Cannot parse
  precompiled_charsmap": identity normalization has an empty charsmap), and even without that
  its WhitespaceSplit + Metaspace pre-tokenizers collapse whitespace and prepend "▁" to every
  word, and it has no byte fallback: no round trip.  So the export writes a `tokenizer.json`
  (the tokenizers library's format) with the same pieces and ids, no normalizer or
  per-character pre-tokenizer, byte fallback, the markers as non-special added tokens (matched anywhere, like
  SentencePiece's user-defined symbols), `$A </s>` as post-processing (our inputs end with EOS)
  and a byte-fallback + fuse decoder; tokenizer_config.json names PreTrainedTokenizerFast so
  AutoTokenizer loads that file as it is.
  """
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  model_bytes = storage.read_bytes(model_path)
  storage.write_bytes_atomic(os.path.join(directory, SENTENCEPIECE_FILE), model_bytes)
  proto = sentencepiece_model_pb2.ModelProto.FromString(model_bytes)
  if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.CHAR:
    # Not our char model (e.g. mT5's unigram spiece.model): HF's own T5Tokenizer reads those.
    specials = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    write_json(os.path.join(directory, TOKENIZER_CONFIG_FILE),
                {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, **specials})
    write_json(os.path.join(directory, SPECIAL_TOKENS_MAP_FILE), specials)
    return
  piece_type = sentencepiece_model_pb2.ModelProto.SentencePiece.Type
  pieces, added = [], []
  unk_id = None
  for index, piece in enumerate(proto.pieces):
    score = float(piece.score)
    if not np.isfinite(score):
      # Required characters the trainer never saw get -inf; JSON has no infinity.
      score = -1e4
    if piece.type == piece_type.BYTE:
      # Byte pieces stand for bytes only (never chosen for text, see the pre-tokenizer).
      score = -1e9
    elif piece.type == piece_type.UNKNOWN:
      unk_id = index
    pieces.append([piece.piece, score])
    if piece.type in (piece_type.CONTROL, piece_type.UNKNOWN, piece_type.USER_DEFINED):
      special = piece.type != piece_type.USER_DEFINED
      added.append({"id": index, **_added_token(piece.piece, special=special)})
  if unk_id is None:
    raise HfInteropError(f"{model_path}: the SentencePiece model has no unknown piece")
  eos = proto.pieces[vocab.eos_id].piece
  tokenizer = {
      "version": "1.0",
      "truncation": None,
      "padding": None,
      "added_tokens": added,
      "normalizer": None,
      # One pre-token per character, as the char model segments: a multi-character piece (a
      # byte piece's name "<0x41>") can then never match text.  [\s\S]: `.` skips newlines.
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"}, "behavior": "Isolated",
                        "invert": False},
      "post_processor": {
          "type": "TemplateProcessing",
          "single": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}}],
          "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": eos, "type_id": 0}},
                   {"Sequence": {"id": "B", "type_id": 0}},
                   {"SpecialToken": {"id": eos, "type_id": 0}}],
          "special_tokens": {eos: {"id": eos, "ids": [int(vocab.eos_id)], "tokens": [eos]}},
      },
      "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
      "model": {"type": "Unigram", "unk_id": unk_id, "vocab": pieces, "byte_fallback": True},
  }
  write_json(os.path.join(directory, "tokenizer.json"), tokenizer)
  specials = {"pad_token": proto.pieces[vocab.pad_id].piece, "eos_token": eos,
              "unk_token": proto.pieces[unk_id].piece}
  write_json(os.path.join(directory, TOKENIZER_CONFIG_FILE), {
      "tokenizer_class": "PreTrainedTokenizerFast",
      "model_max_length": 512,
      "clean_up_tokenization_spaces": False,
      **specials,
  })
  write_json(os.path.join(directory, SPECIAL_TOKENS_MAP_FILE), specials)


# ----------------------------------------------------------------------------------------------
# Model directories (the import_hf / export commands).
# ----------------------------------------------------------------------------------------------


def canonical_wordpiece(vocab_path: str, directory: str) -> str:
  """`vocab_path` itself, or (for a vocab.txt written by `export_hf`) a copy in `directory` with
  the markers' lines renamed back to BERT's reserved [unusedN] tokens (same ids), so that
  `vocab.get_vocabulary` reads it with its default markers."""
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  markers = wordpiece_markers(vocab_path)
  renamed = {marker: token for marker, token in vocab_lib.WORDPIECE_MARKER_TOKENS.items()
             if markers[marker] == marker}
  if not renamed:
    return vocab_path
  lines = storage.read_text(vocab_path).split("\n")
  lines = [renamed.get(line.rstrip("\r"), line) for line in lines]
  path = storage.join(directory, WORDPIECE_VOCAB_FILE)
  storage.write_text_atomic(path, "\n".join(lines))
  return path
