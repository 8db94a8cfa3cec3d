"""Hugging Face T5 v1.1 / MT5 directories <-> our parameter tree.

Import (`t5_config_from_hf`, `load_hf_params`): a directory as `save_pretrained` writes it
(`config.json` + `model.safetensors`, a sharded `model.safetensors.index.json`, or the older
`pytorch_model.bin`) becomes our `model.T5Config` and parameter tree.  safetensors is read with
its numpy API (no torch needed); `pytorch_model.bin` needs torch, and without it the error says
how to convert the file with the comparison env (`tools/env/torch_env.sh`, `tools/hf_check.py`).

Export (`export_hf`): our parameters -> a directory that `transformers` loads with
`T5ForConditionalGeneration.from_pretrained` (config.json, model.safetensors and tokenizer files).

Name and layout mapping (HF `nn.Linear` stores weight [out, in], our kernels are [in, out]):

  shared.weight [vocab, d]                           token_embedder/embedding [vocab, d]
  {stack}.block.{i}.layer.{j}.{Attn}.{q,k,v}.weight  {stack}/layers_{i}/{attn}/{query,key,value}/kernel (T)
  {stack}.block.{i}.layer.{j}.{Attn}.o.weight        {stack}/layers_{i}/{attn}/out/kernel (T)
  {stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, heads]
                                                     {stack}/relpos_bias/rel_embedding [heads, buckets] (T)
  {stack}.block.{i}.layer.{j}.DenseReluDense.{wi_0,wi_1,wo}.weight
                                                     {stack}/layers_{i}/mlp/{wi_0,wi_1,wo}/kernel (T)
  {stack}.block.{i}.layer.{j}.layer_norm.weight      the matching pre_*_layer_norm/scale
  encoder.final_layer_norm / decoder.final_layer_norm  encoder/encoder_norm, decoder/decoder_norm
  lm_head.weight [vocab, d]                          decoder/logits_dense/kernel [d, vocab] (T)

Encoder layer j: 0 self-attention, 1 MLP.  Decoder layer j: 0 self-attention, 1 cross-attention
("EncDecAttention"), 2 MLP.  HF keeps the relative-position table in block 0 of each stack only,
as we keep one per stack.

The output head.  Two independent facts decide what HF computes:
  * whether the checkpoint has its own `lm_head.weight` (else the head IS `shared.weight`: tied);
  * whether the decoder output is multiplied by d_model ** -0.5 before the head ("scaled").
Original T5 ties and scales; T5 v1.1 / MT5 have an untied head and no scaling.  In transformers
5.x (what we compare against), T5 scales iff config.json's `scale_decoder_outputs` says so, or,
in older files without that key, iff `tie_word_embeddings` is not false; MT5 never scales; a head
missing from the weights is tied to `shared` in both.  (transformers 4.x MT5 scaled a tied head:
a tied MT5 checkpoint, which no public MT5 is, reads differently in 4.x.)  Our model has two
heads: `logits_via_embedding=True` (tied AND scaled, t5x's) and an untied `logits_dense`, so:
  tied + scaled      -> logits_via_embedding=True
  own head, unscaled -> logits_dense = lm_head^T                (T5 v1.1, MT5, UER)
  own head, scaled   -> logits_dense = lm_head^T * d ** -0.5    (the scale folded into the kernel)
  tied, unscaled     -> logits_dense = shared^T                 (an untied copy from then on)
(`logits_via_embedding=False` can also be asked for a tied + scaled checkpoint: shared^T * d ** -0.5.)
Export writes `tie_word_embeddings` true and no lm_head for logits_via_embedding (transformers 4.x
and 5.x then tie and scale), else false with lm_head (both versions: own head, unscaled).

Relative position buckets: our bucket formula adds float32 eps inside the log (as t5x does), HF
does not.  For 16/32/64 buckets, max distance 64/128/256, both directions, they give the same
bucket for every |distance| <= 5000 (checked once against transformers 5.17; the test pins
|distance| <= 600 with a stored table of HF's buckets), so no config option is needed.

UER's Chinese checkpoints (BERT WordPiece vocab.txt): pad = [PAD] = 0, decoder start = [CLS] =
101 (UER's pre-training; config.json's decoder_start_token_id, else pass 101), end of sequence
= [SEP] = 102 (WordPieceVocabulary.eos_id, which seqio appends to inputs and targets); the prompt
markers use the reserved [unused1..3] (ids 1-3).  Inputs are `text [SEP]`, without [CLS].

Tokenizer files written by export (details in `export_hf`):
  WordPiece: vocab.txt (marker lines renamed, same ids), tokenizer_config.json (BertTokenizer,
    markers as non-special added tokens), special_tokens_map.json.  HF's BertTokenizer then gives
    our ids; its default [CLS] ... [SEP] wrapping differs from our `text [SEP]`.
  SentencePiece (our char model): spiece.model, plus a tokenizer.json that reproduces it exactly
    (HF's T5Tokenizer cannot load it and would not round-trip: see
    `hf_files.write_sentencepiece_tokenizer`).
"""


from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from typing import Any, Mapping, Optional

import jax
import numpy as np

from punified_jax import hf_files
from punified_jax import model as model_lib
from punified_jax import storage
from punified_jax.hf_files import (CONFIG_FILE, SAFETENSORS_FILE, HfInteropError, read_hf_config,
                                   read_hf_tensors)
# Re-exported: gin/runs/adapt_from_hf.gin (and users' gin files) call it as
# `hf_interop.hf_vocabulary_path`.
from punified_jax.hf_files import hf_vocabulary_path  # pylint: disable=unused-import

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("t5", "mt5")
# gelu_new and gelu_pytorch_tanh are both the tanh approximation our MLP uses.
_GATED_TANH_GELU = ("gated-gelu", "gated-gelu_new", "gated-gelu_pytorch_tanh")
# Our LayerNorm's epsilon (model.LayerNorm), the T5 value.
LAYER_NORM_EPSILON = 1e-6
# HF's default T5 special ids (SentencePiece: pad 0, eos 1), used when the file has none.
_HF_DEFAULT_PAD_ID = 0
_HF_DEFAULT_EOS_ID = 1

# Tensors a T5/MT5 checkpoint may hold that we drop on purpose: copies of `shared` (checked to be
# equal, since we have one embedding) and a table HF declares unused.
_EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


# ----------------------------------------------------------------------------------------------
# The name table.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParameterName:
  """One parameter in both worlds; `transpose`: our array is the HF tensor's transpose."""
  hf_name: str
  path: str  # ours, "/"-separated
  transpose: bool


def _attention_names(hf_prefix: str, our_prefix: str) -> list[ParameterName]:
  pairs = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
  return [ParameterName(f"{hf_prefix}.{hf}.weight", f"{our_prefix}/{ours}/kernel", True)
          for hf, ours in pairs]


def _mlp_names(hf_prefix: str, our_prefix: str) -> list[ParameterName]:
  return [ParameterName(f"{hf_prefix}.DenseReluDense.{name}.weight", f"{our_prefix}/mlp/{name}/kernel",
                        True) for name in ("wi_0", "wi_1", "wo")]


def parameter_names(config) -> list[ParameterName]:
  """Every parameter of `Transformer(config)` with its HF name, in a stable order.

  The output head is listed only when the config has `logits_dense` (untied).
  """
  names = [ParameterName("shared.weight", "token_embedder/embedding", False)]
  for stack, layers in (("encoder", config.num_encoder_layers),
                        ("decoder", config.num_decoder_layers)):
    names.append(ParameterName(
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        f"{stack}/relpos_bias/rel_embedding", True))
    for i in range(layers):
      hf, ours = f"{stack}.block.{i}", f"{stack}/layers_{i}"
      if stack == "encoder":
        names.append(ParameterName(f"{hf}.layer.0.layer_norm.weight",
                                   f"{ours}/pre_attention_layer_norm/scale", False))
        names += _attention_names(f"{hf}.layer.0.SelfAttention", f"{ours}/attention")
        names.append(ParameterName(f"{hf}.layer.1.layer_norm.weight",
                                   f"{ours}/pre_mlp_layer_norm/scale", False))
        names += _mlp_names(f"{hf}.layer.1", ours)
      else:
        names.append(ParameterName(f"{hf}.layer.0.layer_norm.weight",
                                   f"{ours}/pre_self_attention_layer_norm/scale", False))
        names += _attention_names(f"{hf}.layer.0.SelfAttention", f"{ours}/self_attention")
        names.append(ParameterName(f"{hf}.layer.1.layer_norm.weight",
                                   f"{ours}/pre_cross_attention_layer_norm/scale", False))
        names += _attention_names(f"{hf}.layer.1.EncDecAttention",
                                  f"{ours}/encoder_decoder_attention")
        names.append(ParameterName(f"{hf}.layer.2.layer_norm.weight",
                                   f"{ours}/pre_mlp_layer_norm/scale", False))
        names += _mlp_names(f"{hf}.layer.2", ours)
    norm = "encoder_norm" if stack == "encoder" else "decoder_norm"
    names.append(ParameterName(f"{stack}.final_layer_norm.weight", f"{stack}/{norm}/scale", False))
  if not config.logits_via_embedding:
    names.append(ParameterName("lm_head.weight", "decoder/logits_dense/kernel", True))
  return names


# ----------------------------------------------------------------------------------------------
# Config.
# ----------------------------------------------------------------------------------------------


def _config_int(config: Mapping[str, Any], key: str, source: str, default: Any = None) -> int:
  value = config.get(key, default)
  if value is None:
    raise HfInteropError(f"{source}: field {key!r} is missing")
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise HfInteropError(f"{source}: field {key!r} must be a positive integer, got {value!r}")
  return value


def _check_architecture(config: Mapping[str, Any], source: str) -> str:
  model_type = config.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise HfInteropError(f"{source}: model_type {model_type!r} is not supported (expected one of "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}: a T5 v1.1 / MT5 encoder-decoder)")
  if config.get("is_encoder_decoder", True) is False:
    raise HfInteropError(f"{source}: is_encoder_decoder is false; only the encoder-decoder T5 is "
                         "supported")
  # T5 defaults to the ReLU MLP of original T5; MT5 to gated-gelu.
  projection = config.get("feed_forward_proj", "gated-gelu" if model_type == "mt5" else "relu")
  if projection not in _GATED_TANH_GELU:
    hint = (" This is an original-T5 (1.0) checkpoint with a ReLU MLP (e.g. "
            "uer/t5-base-chinese-cluecorpussmall); our model is T5 v1.1 (gated GELU): use a v1.1 "
            "checkpoint such as uer/t5-v1_1-base-chinese-cluecorpussmall."
            if projection == "relu" else "")
    raise HfInteropError(f"{source}: feed_forward_proj {projection!r} is not supported: our model "
                         f"has a gated tanh-GELU MLP ({', '.join(_GATED_TANH_GELU)}).{hint}")
  epsilon = config.get("layer_norm_epsilon", LAYER_NORM_EPSILON)
  if not isinstance(epsilon, (int, float)) or abs(float(epsilon) - LAYER_NORM_EPSILON) > 1e-12:
    raise HfInteropError(f"{source}: layer_norm_epsilon {epsilon!r} differs from our layer "
                         f"norm's {LAYER_NORM_EPSILON}")
  return model_type


def head_is_scaled(config: Mapping[str, Any]) -> bool:
  """Whether transformers 5.x multiplies the decoder output by d_model ** -0.5 (module docstring)."""
  if config.get("model_type") == "mt5":
    return False
  if "scale_decoder_outputs" in config:
    return bool(config["scale_decoder_outputs"])
  return config.get("tie_word_embeddings", True) is not False


def t5_config_from_hf(hf_dir: str, *, dropout_rate: Optional[float] = None, dtype: str = "float32",
                      decoder_start_token_id: Optional[int] = None, remat_policy: str = "none",
                      logits_via_embedding: Optional[bool] = None):
  """The `model.T5Config` of an HF T5 v1.1 / MT5 directory.

  Shapes come from config.json; whether the head is tied comes from the weights (see the module
  docstring): tied + scaled gives `logits_via_embedding=True`, anything else an untied
  `logits_dense`.  Pass `logits_via_embedding` to choose (False always works; True only for a
  tied, scaled checkpoint).  `decoder_start_token_id` defaults to config.json's (else the pad id
  0); UER's Chinese checkpoints start with [CLS] = 101.  `dropout_rate` defaults to config.json's.
  Usable from gin (gin/runs/adapt_from_hf.gin builds the model with it).
  """
  hf_dir = os.fspath(hf_dir)
  config = read_hf_config(hf_dir)
  source = os.path.join(hf_dir, CONFIG_FILE)
  _check_architecture(config, source)
  num_layers = _config_int(config, "num_layers", source)
  names = set(hf_files.hf_weight_names(hf_dir))
  tied = "lm_head.weight" not in names
  natural = tied and head_is_scaled(config)
  if logits_via_embedding is None:
    logits_via_embedding = natural
  elif logits_via_embedding and not natural:
    raise HfInteropError(f"{hf_dir}: logits_via_embedding=True needs a tied head scaled by "
                         f"d_model ** -0.5; this checkpoint has "
                         f"{'a tied unscaled head' if tied else 'its own lm_head.weight'}")
  if decoder_start_token_id is None:
    decoder_start_token_id = config.get("decoder_start_token_id")
    if decoder_start_token_id is None:
      decoder_start_token_id = config.get("pad_token_id") or _HF_DEFAULT_PAD_ID
  if dropout_rate is None:
    dropout_rate = float(config.get("dropout_rate", 0.1))
  values = dict(
      vocab_size=_config_int(config, "vocab_size", source),
      emb_dim=_config_int(config, "d_model", source),
      num_heads=_config_int(config, "num_heads", source),
      head_dim=_config_int(config, "d_kv", source),
      mlp_dim=_config_int(config, "d_ff", source),
      num_encoder_layers=num_layers,
      num_decoder_layers=_config_int(config, "num_decoder_layers", source, num_layers),
      relative_attention_num_buckets=_config_int(config, "relative_attention_num_buckets",
                                                 source, 32),
      relative_attention_max_distance=_config_int(config, "relative_attention_max_distance",
                                                  source, 128),
      dropout_rate=dropout_rate, dtype=dtype, logits_via_embedding=bool(logits_via_embedding),
      decoder_start_token_id=int(decoder_start_token_id), remat_policy=remat_policy)
  try:
    return model_lib.T5Config(**values)
  except (TypeError, ValueError) as error:
    raise HfInteropError(f"{source}: {error}") from error


# ----------------------------------------------------------------------------------------------
# Import.
# ----------------------------------------------------------------------------------------------


def _describe_problems(problems: list[str], source: str) -> str:
  more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
  return f"{source}: {len(problems)} parameter mismatch(es): " + "; ".join(problems[:10]) + more


def convert_hf_tensors(tensors: Mapping[str, np.ndarray], hf_config: Mapping[str, Any], config, *,
                       source: str = "HF checkpoint") -> dict[str, Any]:
  """HF tensors (by name) -> our parameter tree for `Transformer(config)` (float32 numpy).

  Every parameter must be present with the shape `config` implies and nothing may be left over
  (a silent partial load would serve a half-random model); errors name each parameter in both
  naming schemes and both shapes.  The head follows the module docstring.
  """
  expected = {name: tuple(leaf.shape)
              for name, leaf in model_lib.flatten_params(model_lib.param_shapes(config)).items()}
  table = parameter_names(config)
  tensors = dict(tensors)
  problems = []
  out = {}
  d_model = config.emb_dim

  has_head = "lm_head.weight" in tensors
  scaled = head_is_scaled(hf_config)
  if config.logits_via_embedding and (has_head or not scaled):
    problems.append(f"our config ties the head (logits_via_embedding=True, scaled by "
                    f"d_model ** -0.5) but the checkpoint has "
                    f"{'its own lm_head.weight' if has_head else 'a tied unscaled head'}: use "
                    "logits_via_embedding=False")
  if not config.logits_via_embedding and not has_head and "shared.weight" in tensors:
    # A tied head becomes our untied logits_dense: a copy of the embedding.
    tensors["lm_head.weight"] = tensors["shared.weight"]

  for entry in table:
    want = expected.get(entry.path)
    if want is None:  # cannot happen unless parameter_names and the model disagree
      raise AssertionError(f"{entry.path} is not a parameter of the model")
    if entry.hf_name not in tensors:
      problems.append(f"{entry.hf_name!r} (our {entry.path!r}, shape {want}) is missing from the "
                      "checkpoint")
      continue
    array = np.asarray(tensors.pop(entry.hf_name), np.float32)
    if entry.transpose:
      if array.ndim != 2:
        problems.append(f"{entry.hf_name!r} (our {entry.path!r}): checkpoint shape {array.shape} "
                        f"is not 2-D; our model expects {want} (transposed {want[::-1]})")
        continue
      array = array.T
    if array.shape != want:
      shown = f"{array.shape[::-1]}, i.e. {array.shape} as ours" if entry.transpose else array.shape
      problems.append(f"{entry.hf_name!r} (our {entry.path!r}): checkpoint shape {shown} != our "
                      f"model's {want}")
      continue
    if entry.path == "decoder/logits_dense/kernel" and scaled:
      # HF multiplies the decoder output by d_model ** -0.5 before this (own or tied) head.
      array = array * np.float32(d_model ** -0.5)
    out[entry.path] = np.ascontiguousarray(array)

  shared = out.get("token_embedder/embedding")
  for name in _EMBEDDING_COPIES:
    if name in tensors:
      copy = tensors.pop(name)
      if shared is not None and (np.shape(copy) != shared.shape or not np.array_equal(copy, shared)):
        problems.append(f"{name!r} differs from shared.weight: our model has one embedding for "
                        "the encoder, the decoder (and a tied head)")
  if not has_head:
    tensors.pop("lm_head.weight", None)
  for name in _IGNORED:
    tensors.pop(name, None)
  for name in sorted(tensors):
    problems.append(f"{name!r} (shape {tuple(np.shape(tensors[name]))}) has no counterpart in our "
                    f"T5 v1.1 model ({config.num_encoder_layers} encoder + "
                    f"{config.num_decoder_layers} decoder layers)")
  if problems:
    raise HfInteropError(_describe_problems(problems, source))
  return model_lib.unflatten_params(out)


def load_hf_params(hf_dir: str, t5_config=None) -> dict[str, Any]:
  """Our parameter tree (float32 numpy) from an HF T5 v1.1 / MT5 directory.

  `t5_config` defaults to `t5_config_from_hf(hf_dir)`; pass the run's config to check the
  checkpoint against it (a mismatch names the parameter and both shapes).
  """
  hf_dir = os.fspath(hf_dir)
  hf_config = read_hf_config(hf_dir)
  _check_architecture(hf_config, storage.join(hf_dir, CONFIG_FILE))
  if t5_config is None:
    t5_config = t5_config_from_hf(hf_dir)
  return convert_hf_tensors(read_hf_tensors(hf_dir), hf_config, t5_config, source=hf_dir)


def restore_hf_params(hf_dir: str, abstract_params: Any, t5_config=None) -> Any:
  """`load_hf_params`, placed like `abstract_params` (ShapeDtypeStructs with `.sharding`).

  The INITIAL_CHECKPOINT_PATH hook: same contract as `checkpoints.restore_params`;
  run_dir.load_params calls it for an HF directory.  Without `t5_config` the network comes from
  the directory, with the head `abstract_params` has (an untied `decoder/logits_dense` or the tied embedding); any other
  difference is reported per parameter.  Each process builds its addressable shards from the
  host copy (works on several hosts).
  """
  if t5_config is None:
    untied = "logits_dense" in abstract_params.get("decoder", {})
    t5_config = t5_config_from_hf(hf_dir, logits_via_embedding=not untied)
  params = load_hf_params(hf_dir, t5_config)
  flat_params = model_lib.flatten_params(params)
  flat_abstract = model_lib.flatten_params(abstract_params)
  if set(flat_params) != set(flat_abstract):
    missing = sorted(set(flat_abstract) - set(flat_params))
    extra = sorted(set(flat_params) - set(flat_abstract))
    raise HfInteropError(f"{hf_dir}: the model's parameters do not match the checkpoint's "
                         f"(missing {missing[:5]}, extra {extra[:5]})")

  def place(name: str, leaf) -> Any:
    array = flat_params[name]
    if tuple(leaf.shape) != array.shape:
      raise HfInteropError(f"{hf_dir}: parameter {name!r}: checkpoint {array.shape} vs model "
                           f"{tuple(leaf.shape)}")
    array = array.astype(leaf.dtype)
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
      return jax.numpy.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

  return model_lib.unflatten_params({name: place(name, leaf) for name, leaf in flat_abstract.items()})


# ----------------------------------------------------------------------------------------------
# Export.
# ----------------------------------------------------------------------------------------------


def hf_config_dict(config, *, eos_token_id: int, pad_token_id: int = 0,
                   model_type: str = "t5", extra: Optional[Mapping[str, Any]] = None) -> dict:
  """config.json for `T5ForConditionalGeneration` (or MT5) equal to our `config`."""
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise HfInteropError(f"model_type must be one of {SUPPORTED_MODEL_TYPES}, got {model_type!r}")
  if model_type == "mt5" and config.logits_via_embedding:
    raise HfInteropError("a tied, scaled head (logits_via_embedding=True) cannot be exported as "
                         "mt5 (transformers 5.x MT5 never scales the head): use model_type='t5'")
  architecture = "MT5ForConditionalGeneration" if model_type == "mt5" else "T5ForConditionalGeneration"
  values = {
      "architectures": [architecture],
      "model_type": model_type,
      "vocab_size": int(config.vocab_size),
      "d_model": int(config.emb_dim),
      "d_kv": int(config.head_dim),
      "d_ff": int(config.mlp_dim),
      "num_layers": int(config.num_encoder_layers),
      "num_decoder_layers": int(config.num_decoder_layers),
      "num_heads": int(config.num_heads),
      "relative_attention_num_buckets": int(config.relative_attention_num_buckets),
      "relative_attention_max_distance": int(config.relative_attention_max_distance),
      "dropout_rate": float(config.dropout_rate),
      "layer_norm_epsilon": LAYER_NORM_EPSILON,
      "initializer_factor": 1.0,
      "feed_forward_proj": "gated-gelu",
      "is_encoder_decoder": True,
      "use_cache": True,
      "pad_token_id": int(pad_token_id),
      "eos_token_id": int(eos_token_id),
      "decoder_start_token_id": int(config.decoder_start_token_id),
      # True: transformers ties the head to `shared` and scales by d_model ** -0.5, which is
      # exactly our logits_via_embedding; False plus lm_head.weight: an own, unscaled head.
      "tie_word_embeddings": bool(config.logits_via_embedding),
  }
  values.update(extra or {})
  return values


def hf_tensors_from_params(params: Mapping[str, Any], config) -> dict[str, np.ndarray]:
  """Our parameter tree -> HF tensors by name (float32, C-contiguous, as safetensors wants)."""
  flat = {name: np.asarray(value, np.float32) for name, value in model_lib.flatten_params(params).items()}
  tensors = {}
  problems = []
  for entry in parameter_names(config):
    if entry.path not in flat:
      problems.append(f"our parameter {entry.path!r} (HF {entry.hf_name!r}) is missing")
      continue
    array = flat.pop(entry.path)
    tensors[entry.hf_name] = np.ascontiguousarray(array.T if entry.transpose else array)
  for name in sorted(flat):
    problems.append(f"our parameter {name!r} has no HF counterpart for this config")
  if problems:
    raise HfInteropError(_describe_problems(problems, "export"))
  entries = {entry.path: entry for entry in parameter_names(config)}
  for name, leaf in model_lib.flatten_params(model_lib.param_shapes(config)).items():
    entry = entries[name]
    got = tensors[entry.hf_name].shape
    ours = got[::-1] if entry.transpose else got
    if ours != tuple(leaf.shape):
      problems.append(f"our parameter {name!r} has shape {ours}, but the config implies "
                      f"{tuple(leaf.shape)}")
  if problems:
    raise HfInteropError(_describe_problems(problems, "export"))
  return tensors


@dataclasses.dataclass(frozen=True)
class Exported:
  """What `export_hf` wrote."""
  output_dir: str
  files: tuple[str, ...]
  tokenizer: Optional[str]  # "wordpiece", "sentencepiece" or None


def export_hf(params: Mapping[str, Any], config, output_dir: str, *,
              vocabulary_path: Optional[str] = None, model_type: str = "t5",
              overwrite: bool = False, lower_case: bool = True) -> Exported:
  """Writes a directory `transformers` loads: config.json, model.safetensors, tokenizer files.

  vocabulary_path: the run's vocabulary.
    * a BERT vocab.txt (WordPiece): vocab.txt with the prompt markers' reserved lines
      ([unused1..3]) renamed to the markers ("<entity>", "<text>", "NULL": same ids), plus a
      BertTokenizer tokenizer_config.json that declares them as non-special added tokens, so
      that HF's BertTokenizer turns "<entity>地点<text>..." into our ids and decodes NULL back.
      eos = [SEP], pad = [PAD]; HF's BertTokenizer still wraps text in [CLS] ... [SEP] unless
      called with add_special_tokens=False: our model was trained on `text [SEP]` (no [CLS]).
    * a SentencePiece .model: spiece.model + a T5Tokenizer tokenizer_config.json (no extra ids).
      See `tools/hf_check.py` / the tests for what HF's T5Tokenizer does with our char model.
    * None: weights and config only.
  The directory is built next to `output_dir` and renamed into place (atomic on one
  filesystem); for a gs:// `output_dir` it is built in a local temporary directory and uploaded
  file by file.  An existing non-empty `output_dir` needs `overwrite`.
  """
  output_dir = storage.absolute(output_dir)
  remote = storage.is_remote(output_dir)
  if storage.exists(output_dir) and (not storage.isdir(output_dir) or storage.listdir(output_dir)):
    if not overwrite:
      raise HfInteropError(f"{output_dir} exists and is not empty; pass overwrite=True "
                           "(--overwrite) to replace it")
  tensors = hf_tensors_from_params(params, config)
  eos_id, pad_id = _HF_DEFAULT_EOS_ID, _HF_DEFAULT_PAD_ID
  tokenizer_kind = None
  vocab = None
  if vocabulary_path is not None:
    from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    vocabulary_path = os.fspath(vocabulary_path)
    if vocabulary_path.endswith(".txt"):
      vocab = vocab_lib.WordPieceVocabulary(vocabulary_path, lower_case=lower_case,
                                            markers=hf_files.wordpiece_markers(vocabulary_path))
      tokenizer_kind = "wordpiece"
    else:
      vocab = vocab_lib.get_vocabulary(vocabulary_path)
      tokenizer_kind = "sentencepiece"
    if vocab.vocab_size > config.vocab_size:
      raise HfInteropError(f"{vocabulary_path}: {vocab.vocab_size} tokens, but the model has only "
                           f"vocab_size={config.vocab_size} embedding rows")
    eos_id, pad_id = int(vocab.eos_id), int(vocab.pad_id)
  extra = {"tokenizer_class": "BertTokenizer"} if tokenizer_kind == "wordpiece" else {}
  hf_config = hf_config_dict(config, eos_token_id=eos_id, pad_token_id=pad_id,
                             model_type=model_type, extra=extra)

  parent = None if remote else os.path.dirname(output_dir)
  if parent:
    os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f".{storage.basename(output_dir)}.tmp-")
  try:
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    # transformers refuses safetensors files without format metadata.
    save_file(tensors, os.path.join(staging, SAFETENSORS_FILE), metadata={"format": "pt"})
    hf_files.write_json(os.path.join(staging, CONFIG_FILE), hf_config)
    if tokenizer_kind == "wordpiece":
      hf_files.write_wordpiece_tokenizer(staging, vocab)
    elif tokenizer_kind == "sentencepiece":
      hf_files.write_sentencepiece_tokenizer(staging, vocabulary_path, vocab)
    files = tuple(sorted(os.listdir(staging)))
    if storage.exists(output_dir):
      storage.rmtree(output_dir) if storage.isdir(output_dir) else storage.remove(output_dir)
    if remote:
      storage.copy_tree_from_local(staging, output_dir)
      shutil.rmtree(staging, ignore_errors=True)
    else:
      os.replace(staging, output_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return Exported(output_dir, files, tokenizer_kind)
