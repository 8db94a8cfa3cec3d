"""t5x checkpoints -> our parameter tree, without t5x installed.

A model trained under t5x (`python -m t5x.train` with gin/t5x/*.gin) serves with our decoding and
extraction code after this one-way conversion. Our `model.Transformer` mirrors the parameter
names and kernel layouts of t5x's minimal T5 (t5x/examples/t5/network.py): 2-D kernels
`[in, out]`, `encoder/relpos_bias/rel_embedding [heads, buckets]`, `decoder/logits_dense`, ...
so the conversion renames nothing; it finds the parameters inside t5x's checkpoint layout,
checks every name and shape against the model the checkpoint implies, and writes our layout.

The two layouts t5x writes (checked against google-research/t5x at 2026-04, commit cc342d4):

1. Orbax (the default of `t5x.train`, `use_orbax=True`, via `OrbaxCheckpointManagerInterface`):

       <model_dir>/checkpoint_<step>/_CHECKPOINT_METADATA       JSON, item handler names
       <model_dir>/checkpoint_<step>/state/                      an orbax PyTree item (OCDBT):
           _METADATA, manifest.ocdbt, ocdbt.process_*/, d/, _sharding, array_metadatas/
       <model_dir>/checkpoint_<step>/dataset/                    tf.data iterator (maybe empty)

   The `state` tree is t5x's `TrainState.state_dict()`: {"target": params, "state": {"step",
   "param_states": optimizer slots}, ["flax_mutables"]}. We restore only "target".

2. Legacy msgpack + TensorStore (`t5x.checkpoints.Checkpointer`; `use_orbax=False`, and every
   older t5x checkpoint, including Google's published ones):

       <dir>/checkpoint_<step>/checkpoint                        msgpack (flax.serialization):
           {"version": 3, "optimizer": {"target": params, "state": {...}}}
       <dir>/checkpoint_<step>/target.encoder.layers_0.mlp.wi_0.kernel/   zarr array (gzip)

   A leaf of the msgpack tree is either the array itself or a TensorStore spec (a dict with
   "driver": "zarr") whose kvstore path is RELATIVE to the checkpoint directory (t5x keeps
   checkpoints relocatable that way; on GCS it writes the dummy bucket "t5x-dummy-bucket").
   We resolve the path against where the checkpoint is now, on disk or on gs://.

Reading needs orbax-checkpoint, tensorstore, flax (msgpack) and etils, all our own dependencies.

What this module does NOT do: it writes nothing and knows nothing of our run directories.
`run_dir.read_t5x_params` reads a checkpoint (orbax through checkpoints.read_tree_entry, msgpack
through `read_msgpack_params` here) and `run_dir.convert_t5x` (`python -m punified_jax from_t5x`)
writes our model directory from it; this module finds the checkpoint, checks and translates the
parameter tree (`config_from_params`, `to_model_params`) and renders a model gin file.

The module also holds `padded_vocab_size`, which gin/t5x/vocabulary.gin calls to size t5x's
embedding from our vocabulary.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from typing import Any, Mapping, Optional

import numpy as np

from punified_jax import model as model_lib
from punified_jax import storage

# t5x names step directories `checkpoint_<step>` (t5x.checkpoint_utils.get_checkpoint_prefix).
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")
ORBAX_STATE_ITEM = "state"      # t5x's orbax item holding the train state
MSGPACK_FILE = "checkpoint"     # t5x's legacy msgpack file inside a step directory
PARAMS_KEY = "target"           # t5x's key of the model parameters in the train state
KINDS = ("orbax", "msgpack")


class BridgeError(ValueError):
  """A t5x checkpoint that cannot be read or does not fit our model (the message says why)."""


@dataclasses.dataclass(frozen=True)
class T5xCheckpoint:
  """One t5x checkpoint: its step directory, its step and which layout it uses."""
  path: str   # .../checkpoint_<step>
  step: Optional[int]
  kind: str   # "orbax" or "msgpack"


# ------------------------------------------------------------------------------------------
# Finding a checkpoint.
# ------------------------------------------------------------------------------------------


def _epath(path: str):
  return storage.as_path(path)


def _strip(path: str) -> str:
  return storage.absolute(path) or os.fspath(path)


def _kind_of(step_dir) -> Optional[str]:
  state = step_dir / ORBAX_STATE_ITEM
  if state.is_dir() and any((state / name).exists()
                            for name in ("_METADATA", "manifest.ocdbt", "checkpoint")):
    return "orbax"
  if (step_dir / MSGPACK_FILE).is_file():
    return "msgpack"
  return None


def _step_of(name: str) -> Optional[int]:
  match = _STEP_DIR.match(name)
  return int(match.group(1)) if match else None


def locate_checkpoint(path: str, *, step: Optional[int] = None) -> T5xCheckpoint:
  """Finds the t5x checkpoint meant by `path`.

  Accepts a t5x model directory (its newest finished `checkpoint_<step>`, or `step`), a
  `checkpoint_<step>` directory, its orbax `state` item, or its msgpack `checkpoint` file.
  Unfinished saves (orbax `*.orbax-checkpoint-tmp-*`, legacy `*.tmp-*`) never match.
  """
  given = _strip(path)
  where = _epath(given)
  if not where.exists():
    raise BridgeError(f"t5x checkpoint {given!r} does not exist")
  if where.is_file():
    if where.name != MSGPACK_FILE:
      raise BridgeError(f"{given}: not a t5x checkpoint (expected a directory or the msgpack "
                        f"file named {MSGPACK_FILE!r})")
    where = where.parent
  elif where.name == ORBAX_STATE_ITEM and _kind_of(where.parent) == "orbax":
    where = where.parent
  kind = _kind_of(where)
  if kind is not None:
    found = _step_of(where.name)
    if step is not None and found is not None and found != step:
      raise BridgeError(f"{given} is the checkpoint of step {found}, not of --step {step}")
    return T5xCheckpoint(os.fspath(where), found if found is not None else step, kind)
  steps = {}
  for child in where.iterdir():
    number = _step_of(child.name)
    if number is not None and child.is_dir() and _kind_of(child) is not None:
      steps[number] = child
  if not steps:
    raise BridgeError(f"{given} holds no t5x checkpoint: expected checkpoint_<step> directories "
                      f"(each with an orbax '{ORBAX_STATE_ITEM}' item or a msgpack "
                      f"'{MSGPACK_FILE}' file)")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise BridgeError(f"{given} has no finished checkpoint of step {step}; it has steps "
                      f"{sorted(steps)}")
  return T5xCheckpoint(os.fspath(steps[step]), step, _kind_of(steps[step]))


# ------------------------------------------------------------------------------------------
# Reading the parameters.
# ------------------------------------------------------------------------------------------


def as_float32(tree: Any, source: str, prefix: str = "") -> dict[str, Any]:
  """A parameter tree read from `source` as float32 numpy (bfloat16 included; else an error)."""
  if not isinstance(tree, Mapping):
    raise BridgeError(f"{source}: expected a dict of parameters at {prefix or 'the top'}, got "
                      f"{type(tree).__name__}")
  out = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      out[str(key)] = as_float32(value, source, name)
      continue
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
      raise BridgeError(f"{source}: parameter {name!r} has dtype {array.dtype}, expected floats")
    out[str(key)] = array.astype(np.float32)
  return out


def _is_tensorstore_spec(value: Any) -> bool:
  return isinstance(value, Mapping) and "driver" in value and ("kvstore" in value
                                                               or "path" in value)


def _absolute_spec(spec: Mapping[str, Any], step_dir: str) -> dict[str, Any]:
  """A t5x TensorStore spec with its relative path resolved against `step_dir` (file or GCS)."""
  spec = json.loads(json.dumps(spec))  # a deep, plain copy
  kvstore = spec.get("kvstore")
  if isinstance(kvstore, Mapping) and "path" in kvstore:
    relative = kvstore["path"]
  elif "path" in spec:  # tensorstore < 0.1.14 wrote the path at the top level
    relative = spec.pop("path")
  else:
    raise BridgeError(f"{step_dir}: TensorStore spec without a path: {spec}")
  match = re.fullmatch(r"gs://([^/]+)/?(.*)", step_dir)
  if match:
    spec["kvstore"] = {"driver": "gcs", "bucket": match.group(1),
                       "path": os.path.join(match.group(2), relative)}
  else:
    spec["kvstore"] = {"driver": "file", "path": os.path.join(step_dir, relative)}
  return spec


def read_msgpack_params(checkpoint: T5xCheckpoint) -> dict[str, Any]:
  """The "target" tree of a legacy msgpack checkpoint (TensorStore leaves read, file or GCS)."""
  step_dir = checkpoint.path
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  msgpack_path = _epath(step_dir) / MSGPACK_FILE
  try:
    contents = serialization.msgpack_restore(msgpack_path.read_bytes())
  except Exception as error:  # msgpack raises several types on a damaged file
    raise BridgeError(f"{msgpack_path}: not a t5x msgpack checkpoint: {error}") from error
  if not isinstance(contents, Mapping):
    raise BridgeError(f"{msgpack_path}: not a t5x msgpack checkpoint (top level is a "
                      f"{type(contents).__name__})")
  optimizer = contents.get("optimizer")
  if not isinstance(optimizer, Mapping) or PARAMS_KEY not in optimizer:
    raise BridgeError(f"{msgpack_path}: no 'optimizer/{PARAMS_KEY}' entry (found "
                      f"{sorted(contents)}); is this a t5x checkpoint?")

  def load(tree: Any, name: str) -> Any:
    if _is_tensorstore_spec(tree):
      spec = _absolute_spec(tree, step_dir)
      try:
        return ts.open(spec, open=True, read=True).result().read().result()
      except Exception as error:  # tensorstore raises ValueError and friends
        raise BridgeError(f"{step_dir}: cannot read parameter {name!r} from "
                          f"{spec['kvstore']['path']}: {error}") from error
    if isinstance(tree, Mapping):
      return {key: load(value, f"{name}/{key}" if name else key) for key, value in tree.items()}
    return tree

  return load(optimizer[PARAMS_KEY], "")


# ------------------------------------------------------------------------------------------
# Checking and converting.
# ------------------------------------------------------------------------------------------


def _layer_count(flat: Mapping[str, Any], stack: str) -> int:
  indices = {int(m.group(1)) for name in flat
             for m in [re.match(rf"{stack}/layers_(\d+)/", name)] if m}
  if indices != set(range(len(indices))):
    raise BridgeError(f"{stack} layers are not numbered 0..n-1: found {sorted(indices)}")
  return len(indices)


def _shape(flat: Mapping[str, Any], name: str, source: str) -> tuple[int, ...]:
  if name not in flat:
    raise BridgeError(f"{source}: parameter {name!r} is missing, so the model shape cannot be "
                      "inferred (is this a T5 v1.1 encoder-decoder checkpoint?)")
  return tuple(int(d) for d in np.shape(flat[name]))


def config_from_params(params: Mapping[str, Any], *, source: str = "checkpoint",
                       **overrides):
  """The `model.T5Config` whose parameter tree has these shapes.

  Shapes give vocab_size and emb_dim (embedding), num_heads and the relative-position buckets
  (rel_embedding [heads, buckets]), head_dim (query kernel [embed, heads * head_dim]), mlp_dim
  (wi_0) and the layer counts; a missing `decoder/logits_dense` means tied logits. What shapes
  cannot tell (dtype, dropout_rate; max distance 128 is fixed in t5x's network) comes from
  `overrides` or T5Config's defaults.
  """
  flat = model_lib.flatten_params(params)
  vocab_size, emb_dim = _shape(flat, "token_embedder/embedding", source)
  num_heads, buckets = _shape(flat, "encoder/relpos_bias/rel_embedding", source)
  _, joined_kv = _shape(flat, "encoder/layers_0/attention/query/kernel", source)
  if joined_kv % num_heads:
    raise BridgeError(f"{source}: query kernel width {joined_kv} is not a multiple of "
                      f"{num_heads} heads")
  _, mlp_dim = _shape(flat, "encoder/layers_0/mlp/wi_0/kernel", source)
  values = dict(
      vocab_size=vocab_size, emb_dim=emb_dim, num_heads=num_heads,
      head_dim=joined_kv // num_heads, mlp_dim=mlp_dim,
      num_encoder_layers=_layer_count(flat, "encoder"),
      num_decoder_layers=_layer_count(flat, "decoder"),
      relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
      logits_via_embedding="decoder/logits_dense/kernel" not in flat)
  values.update({k: v for k, v in overrides.items() if v is not None})
  try:
    return model_lib.T5Config(**values)
  except (TypeError, ValueError) as error:
    raise BridgeError(f"{source}: {error}") from error


def to_model_params(params: Mapping[str, Any], config, *,
                    source: str = "t5x checkpoint") -> dict[str, Any]:
  """Checks a t5x parameter tree against `Transformer(config)` and returns it as our tree.

  Every parameter of our model must be in the checkpoint with the same shape, and the
  checkpoint may hold nothing else (a T5 1.0 `wi` MLP, a different attention layout...):
  a silent partial load would serve a half-random model. Errors name each parameter and both
  shapes (the first ten problems, and how many more there are).
  """
  shapes = model_lib.flatten_params(model_lib.param_shapes(config))
  wanted = {name: tuple(leaf.shape) for name, leaf in shapes.items()}
  given = model_lib.flatten_params(params)
  problems = []
  for name, shape in sorted(wanted.items()):
    if name not in given:
      problems.append(f"parameter {name!r} is missing from the t5x checkpoint (our model "
                      f"expects shape {shape})")
    elif tuple(np.shape(given[name])) != shape:
      problems.append(f"parameter {name!r}: t5x checkpoint shape {tuple(np.shape(given[name]))}"
                      f" != our model's shape {shape}")
  for name in sorted(set(given) - set(wanted)):
    problems.append(f"parameter {name!r} (shape {tuple(np.shape(given[name]))}) of the t5x "
                    "checkpoint has no counterpart in our T5 v1.1 model")
  if problems:
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    raise BridgeError(f"{source}: {len(problems)} parameter mismatch(es): "
                      + "; ".join(problems[:10]) + more)
  return model_lib.unflatten_params({name: np.asarray(given[name], np.float32) for name in wanted})


def padded_vocab_size(vocabulary, multiple: int = 128) -> int:
  """`vocabulary.vocab_size` rounded up to a multiple of `multiple` (t5x's 32100 -> 32128).

  Called from gin/t5x/vocabulary.gin to size t5x's embedding and logits from our vocabulary;
  the rule is `model.round_up_vocab_size`, the one our own runs use.
  """
  return model_lib.round_up_vocab_size(vocabulary.vocab_size, multiple)


# ------------------------------------------------------------------------------------------
# Writing and reading our model directory.
# ------------------------------------------------------------------------------------------


def _config_dict(config) -> dict[str, Any]:
  return dataclasses.asdict(config)


def model_gin_text(config, *, comment: str = "") -> str:
  """A model gin file (the shape of gin/models/<size>.gin) binding exactly `config`."""
  cfg = _config_dict(config)
  lines = [f"# {line}" for line in comment.splitlines()] if comment else []
  lines += [
      "from __gin__ import dynamic_registration",
      "",
      "from punified_jax import model",
      "",
      f"VOCAB_SIZE = {cfg['vocab_size']}",
      f"DROPOUT_RATE = {cfg['dropout_rate']!r}",
      f"ACTIVATION_DTYPE = {cfg['dtype']!r}",
      "",
      "T5_CONFIG = @model.T5Config()",
      "model.T5Config:",
      "  vocab_size = %VOCAB_SIZE",
      "  dropout_rate = %DROPOUT_RATE",
      "  dtype = %ACTIVATION_DTYPE",
  ]
  for key, value in cfg.items():
    if key not in ("vocab_size", "dropout_rate", "dtype"):
      lines.append(f"  {key} = {value!r}")
  lines += ["", "NETWORK = @model.Transformer()", "model.Transformer.config = %T5_CONFIG",
            "MODEL = %NETWORK", ""]
  return "\n".join(lines)


def t5x_run_settings(checkpoint: T5xCheckpoint) -> dict[str, Any]:
  """TASK_FEATURE_LENGTHS, MIXTURE_OR_TASK_NAME and DROPOUT_RATE of the t5x run.

  t5x writes the operative gin config to `<MODEL_DIR>/config.gin` (the directory holding the
  `checkpoint_<step>` directories). Values that are missing or not literals are left out.
  """
  config_gin = _epath(checkpoint.path).parent / "config.gin"
  if not config_gin.is_file():
    return {}
  # gin continues long values on the next line after a backslash.
  text = config_gin.read_text().replace("\\\n", " ")
  settings = {}
  for macro in ("TASK_FEATURE_LENGTHS", "MIXTURE_OR_TASK_NAME", "DROPOUT_RATE"):
    match = re.search(rf"^{macro} = (.+)$", text, re.MULTILINE)
    if match:
      try:
        settings[macro] = ast.literal_eval(match.group(1).strip())
      except (SyntaxError, ValueError):
        pass  # a gin reference (@...) or macro (%...): unknown here
  return settings
