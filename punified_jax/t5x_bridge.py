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

Conversion output (`convert` / `python -m punified_jax from_t5x`), a model directory:

    <output>/checkpoints/<step>/state   our params-only checkpoint ({"params": tree}); loads with
                                        checkpoints.restore_params / INITIAL_CHECKPOINT_PATH
    <output>/checkpoints/<step>/meta    {"step", "source": "t5x", ...}
    <output>/model.json                 T5Config fields, vocabulary, feature lengths, provenance
    <output>/model.gin                  the same config as a model gin file (like
                                        gin/models/<size>.gin): --gin_file=<output>/model.gin
    <output>/vocab/<name>               a copy of the vocabulary, when one was given
    <output>/punified_model.json        model_info's description (what our trainer writes), when
                                        the vocabulary and the feature lengths are known (the
                                        lengths come from the t5x run's config.gin or the caller)

`load_model_dir(path)` reads such a directory back (config, params, vocabulary path), and
`inference.Extractor.load(path)` serves it (model_info reads punified_model.json, or model.json
when the feature lengths were unknown).

The module also holds `padded_vocab_size`, which gin/t5x/vocabulary.gin calls to size t5x's
embedding from our vocabulary.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
from typing import Any, Mapping, Optional

import numpy as np

from punified_jax import model as model_lib

# t5x names step directories `checkpoint_<step>` (t5x.checkpoint_utils.get_checkpoint_prefix).
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")
ORBAX_STATE_ITEM = "state"      # t5x's orbax item holding the train state
MSGPACK_FILE = "checkpoint"     # t5x's legacy msgpack file inside a step directory
PARAMS_KEY = "target"           # t5x's key of the model parameters in the train state
MODEL_JSON = "model.json"
MODEL_GIN = "model.gin"
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
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(path)


def _strip(path: str) -> str:
  path = os.fspath(path)
  stripped = path.rstrip("/")
  if "://" not in stripped:
    stripped = os.path.abspath(stripped)
  return stripped or path


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


def read_params(checkpoint: T5xCheckpoint | str) -> dict[str, Any]:
  """The model parameters ("target") of a t5x checkpoint: nested dict of float32 numpy arrays."""
  if not isinstance(checkpoint, T5xCheckpoint):
    checkpoint = locate_checkpoint(checkpoint)
  if checkpoint.kind == "orbax":
    params = _read_orbax(checkpoint.path)
  elif checkpoint.kind == "msgpack":
    params = _read_msgpack(checkpoint.path)
  else:
    raise BridgeError(f"{checkpoint.path}: unknown checkpoint kind {checkpoint.kind!r}; "
                      f"kinds: {', '.join(KINDS)}")
  return _as_float32(params, checkpoint.path)


def _as_float32(tree: Any, source: str, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, Mapping):
    raise BridgeError(f"{source}: expected a dict of parameters at {prefix or 'the top'}, got "
                      f"{type(tree).__name__}")
  out = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      out[str(key)] = _as_float32(value, source, name)
      continue
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
      raise BridgeError(f"{source}: parameter {name!r} has dtype {array.dtype}, expected floats")
    out[str(key)] = array.astype(np.float32)
  return out


def _read_orbax(step_dir: str) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  item = os.fspath(_epath(step_dir) / ORBAX_STATE_ITEM)
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  from punified_jax import checkpoints  # pylint: disable=g-import-not-at-top
  # orbax warns that the item directory has no step metadata file: t5x writes that file one
  # level up (checkpoint_<step>/_CHECKPOINT_METADATA), which is expected, so mute the warning.
  quiet = checkpoints.quiet_missing_step_metadata()
  quiet.__enter__()
  try:
    metadata = checkpointer.metadata(item)
    tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", None)
    if tree is None:  # older orbax: the metadata is the tree itself
      tree = getattr(metadata, "item_metadata", metadata)
    if not isinstance(tree, Mapping) or PARAMS_KEY not in tree:
      keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
      raise BridgeError(f"{item}: no {PARAMS_KEY!r} entry in the orbax train state (found "
                        f"{keys}); is this a t5x checkpoint?")
    wanted = tree[PARAMS_KEY]
    # Restore "target" only (optimizer slots can be as large as the model), as host numpy.
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    template = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), wanted)
    restored = checkpointer.restore(
        item, args=ocp.args.PyTreeRestore(item={PARAMS_KEY: template},
                                          restore_args={PARAMS_KEY: restore_args},
                                          partial_restore=True))
  except BridgeError:
    raise
  except Exception as error:  # orbax raises many types; name the directory
    raise BridgeError(f"{item}: cannot read the orbax checkpoint: {error}") from error
  finally:
    quiet.__exit__(None, None, None)
    checkpointer.close()
  return restored[PARAMS_KEY]


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


def _read_msgpack(step_dir: str) -> dict[str, Any]:
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
  128 keeps the vocab axis divisible on TPU cores and model-parallel meshes.
  """
  if multiple < 1:
    raise ValueError(f"multiple must be >= 1, got {multiple}")
  size = int(vocabulary.vocab_size)
  return -(-size // multiple) * multiple


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


@dataclasses.dataclass(frozen=True)
class Converted:
  """What `convert` wrote."""
  output_dir: str
  checkpoint_dir: str      # <output>/checkpoints/<step>
  step: int
  config: Any              # model.T5Config
  num_params: int
  source: T5xCheckpoint
  vocabulary: Optional[str]                        # the copy inside output_dir, if any
  task_feature_lengths: Optional[dict[str, int]]   # recorded for serving, if known


def _check_lengths(lengths: Any) -> Optional[dict[str, int]]:
  if lengths is None:
    return None
  if (not isinstance(lengths, Mapping) or set(lengths) < {"inputs", "targets"}
      or not all(isinstance(lengths[k], int) and lengths[k] > 0 for k in ("inputs", "targets"))):
    raise BridgeError(f"task feature lengths must be {{'inputs': N, 'targets': M}} with "
                      f"positive ints, got {lengths!r}")
  return {"inputs": lengths["inputs"], "targets": lengths["targets"]}


def convert(checkpoint: str, output_dir: str, *, step: Optional[int] = None,
            vocabulary: Optional[str] = None,
            task_feature_lengths: Optional[Mapping[str, int]] = None, overwrite: bool = False,
            **config_overrides) -> Converted:
  """Converts a t5x checkpoint into our model directory (layout in the module docstring).

  `vocabulary`: the SentencePiece .model / BERT vocab.txt the t5x run used; its size must fit
  the checkpoint's vocab_size. With it the directory is a complete model directory: the
  vocabulary is copied to `vocab/` and, when the feature lengths are known
  (`task_feature_lengths`, else the t5x run's config.gin), `punified_model.json` is written with
  model_info.save_model_info, as our trainer does, so `inference.Extractor.load` serves it.
  `config_overrides` set what shapes cannot tell (dtype, dropout_rate, decoder_start_token_id).
  Without a dropout_rate override the t5x run's DROPOUT_RATE (config.gin) is recorded, so that
  further fine-tuning of the directory keeps the run's dropout instead of T5Config's default.
  """
  from punified_jax import checkpoints as checkpoints_lib  # pylint: disable=g-import-not-at-top
  from punified_jax import model_info  # pylint: disable=g-import-not-at-top
  located = locate_checkpoint(checkpoint, step=step)
  t5x_params = read_params(located)
  settings = t5x_run_settings(located)
  if config_overrides.get("dropout_rate") is None and isinstance(
      settings.get("DROPOUT_RATE"), (int, float)):
    config_overrides["dropout_rate"] = float(settings["DROPOUT_RATE"])
  config = config_from_params(t5x_params, source=located.path, **config_overrides)
  params = to_model_params(t5x_params, config, source=located.path)
  lengths = _check_lengths(task_feature_lengths if task_feature_lengths is not None
                           else settings.get("TASK_FEATURE_LENGTHS"))

  vocab_file = None
  if vocabulary is not None:
    from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    try:
      loaded = vocab_lib.get_vocabulary(vocabulary)
    except (FileNotFoundError, ValueError) as error:
      raise BridgeError(f"--vocabulary: {error}") from error
    if loaded.vocab_size > config.vocab_size:
      raise BridgeError(f"vocabulary {vocabulary} has {loaded.vocab_size} entries but the "
                        f"checkpoint's embedding has only {config.vocab_size} rows: not the "
                        "vocabulary this model was trained with")
    vocab_file = f"{model_info.VOCAB_SUBDIR}/{os.path.basename(vocabulary)}"

  output = _strip(output_dir)
  checkpoints_dir = os.path.join(output, checkpoints_lib.CHECKPOINTS_SUBDIR)
  descriptions = [os.path.join(output, name) for name in (MODEL_JSON, model_info.MODEL_INFO_FILE)]
  if (os.path.exists(checkpoints_dir) and os.listdir(checkpoints_dir)) or any(
      os.path.exists(path) for path in descriptions):
    if not overwrite:
      raise BridgeError(f"{output} already holds a model (checkpoints or a description); pass "
                        "--overwrite to replace it")
    if os.path.exists(checkpoints_dir):
      shutil.rmtree(checkpoints_dir)
    for path in descriptions:
      if os.path.exists(path):
        os.remove(path)
  os.makedirs(output, exist_ok=True)
  out_step = int(located.step or 0)
  converted_from = {"path": located.path, "format": located.kind, "step": located.step}
  meta = {"step": out_step, "source": "t5x", "t5x_checkpoint": located.path,
          "t5x_format": located.kind}
  step_dir = checkpoints_lib.save_params(checkpoints_dir, params, step=out_step, meta=meta)
  if vocab_file is not None:
    extra = {"converted_from": converted_from}
    if isinstance(settings.get("MIXTURE_OR_TASK_NAME"), str):
      extra["mixture_or_task_name"] = settings["MIXTURE_OR_TASK_NAME"]
    if lengths is not None:
      model_info.save_model_info(output, t5_config=config, vocabulary_path=vocabulary,
                                 task_feature_lengths=lengths, extra=extra)
    else:  # model.json alone describes the directory (model_info reads it too)
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      os.makedirs(os.path.join(output, model_info.VOCAB_SUBDIR), exist_ok=True)
      tf.io.gfile.copy(vocabulary, os.path.join(output, vocab_file), overwrite=True)
  description = {
      "config": _config_dict(config),
      "vocabulary": vocab_file,
      "vocabulary_source": (os.path.abspath(vocabulary) if "://" not in vocabulary
                            else vocabulary) if vocabulary else None,
      "task_feature_lengths": lengths,
      "step": out_step,
      "checkpoint": os.path.relpath(step_dir, output),
      "converted_from": converted_from,
  }
  _write_text(os.path.join(output, MODEL_JSON),
              json.dumps(description, ensure_ascii=False, indent=1) + "\n")
  _write_text(os.path.join(output, MODEL_GIN), model_gin_text(
      config, comment=f"Written by `python -m punified_jax from_t5x` from {located.path}."))
  count = sum(int(np.prod(leaf.shape)) for leaf in model_lib.flatten_params(params).values())
  return Converted(output, step_dir, out_step, config, count, located,
                   os.path.join(output, vocab_file) if vocab_file else None, lengths)


def _write_text(path: str, text: str) -> None:
  temporary = path + ".tmp"
  with open(temporary, "w", encoding="utf-8") as handle:
    handle.write(text)
  os.replace(temporary, path)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  config: Any                 # model.T5Config
  params: Any                 # our parameter tree (jax arrays)
  vocabulary: Optional[str]   # path of the copied vocabulary file, if any
  step: int


def load_model_dir(model_dir: str) -> LoadedModel:
  """Reads a directory written by `convert`: config, parameters and vocabulary path."""
  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import checkpoints as checkpoints_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(_strip(model_dir), MODEL_JSON)
  try:
    with open(path, encoding="utf-8") as handle:
      description = json.load(handle)
    config = model_lib.T5Config(**description["config"])
  except FileNotFoundError as error:
    raise BridgeError(f"{path} does not exist: not a directory written by from_t5x") from error
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
    raise BridgeError(f"{path}: not a valid model description: {error}") from error
  shapes = model_lib.param_shapes(config)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                            sharding=device), shapes)
  step_dir = os.path.join(_strip(model_dir), description.get("checkpoint", ""))
  params = checkpoints_lib.restore_params(step_dir, abstract)
  vocabulary = description.get("vocabulary")
  return LoadedModel(config, params,
                     os.path.join(_strip(model_dir), vocabulary) if vocabulary else None,
                     int(description.get("step", 0)))
