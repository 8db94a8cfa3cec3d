"""T5 v1.1 encoder-decoder in Flax linen, with logical axis names, a KV cache and the loss.

Why linen (and not nnx): t5x's parameter tree, its logical partitioning helpers
(`flax.linen.partitioning`, `nn.with_logical_partitioning`) and its checkpoints are all linen.
Keeping linen and t5x's module names lets a t5x (or converted Hugging Face) T5 v1.1 checkpoint
load into our tree by renaming nothing, and lets the trainer shard parameters with t5x's
`standard_logical_axis_rules` unchanged.

The architecture is T5 v1.1 exactly:
  * RMS ("T5") LayerNorm, pre-norm: no mean subtraction, no bias, eps 1e-6.
  * gated-GELU MLP: (gelu_tanh(x @ wi_0) * (x @ wi_1)) @ wo.  The tanh approximation is the one
    T5 v1.1 was trained with (Hugging Face calls it "gelu_new").
  * relative position buckets (32 buckets, max distance 128), bidirectional in the encoder and
    causal in the decoder; one bias table per stack, shared by all its layers.
  * no biases anywhere, no scaling of the embedding output, no 1/sqrt(head_dim) on the attention
    logits (T5 folds it into the query initialisation), untied LM head `logits_dense`.

Parameter tree (kernels are 2-D, as in t5x, so that sharding rules see two logical axes):

  token_embedder/embedding                              [vocab, embed]
  encoder/relpos_bias/rel_embedding                     [heads, relpos_buckets]
  encoder/layers_{i}/pre_attention_layer_norm/scale     [embed]
  encoder/layers_{i}/attention/{query,key,value}/kernel [embed, joined_kv]
  encoder/layers_{i}/attention/out/kernel               [joined_kv, embed]
  encoder/layers_{i}/pre_mlp_layer_norm/scale           [embed]
  encoder/layers_{i}/mlp/{wi_0,wi_1}/kernel             [embed, mlp]
  encoder/layers_{i}/mlp/wo/kernel                      [mlp, embed]
  encoder/encoder_norm/scale                            [embed]
  decoder/relpos_bias/rel_embedding
  decoder/layers_{i}/pre_self_attention_layer_norm/scale, self_attention/...
  decoder/layers_{i}/pre_cross_attention_layer_norm/scale, encoder_decoder_attention/...
  decoder/layers_{i}/pre_mlp_layer_norm/scale, mlp/...
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                           [embed, vocab]

Parameters are created float32 and boxed with their logical axis names
(`nn.Partitioned`); `init_params` unboxes them and `param_logical_axes` returns the matching
tree of logical `PartitionSpec`s for the trainer's sharding rules.

Incremental decoding uses two variable collections:
  * "cache": per-step state, gathered by beam search when beams are reordered:
      decoder/cache_index (int32 scalar: the position the next token is written to) and
      decoder/layers_{i}/self_attention/{cached_key,cached_value} [batch, heads, max_len, kv].
    Beam search can instead ask for a beam-grouped cache (`decode(..., beam_groups=beams)` on
    the cache-initialising call): keys/values grouped per example and never re-ordered, plus
    decoder/beam_source [batch, max_len, beams], the ancestry table the search re-orders in
    their place (punified_jax.attention._beam_group_attention; generate.reorder_beam_cache).
  * "encoder_cache": the cross-attention keys/values of the encoder output, computed once by
    the cache-initialising call, constant afterwards (so beam search never needs to gather them):
      decoder/layers_{i}/encoder_decoder_attention/{cached_key,cached_value}
      [batch, heads, input_len, kv].
  Both caches are stored heads-first.  A decoding step has a single query, so its attention is
  a batch of [1, kv] x [kv, len] products per (row, head); with the keys laid out [batch, len,
  heads, kv] XLA transposes the whole cache at every step to form that batch (measured on a
  2-core CPU: 5-13x slower attention at 64-256 positions, the largest cost of a beam-search
  step).  Heads-first, the contraction reads the cache in place.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
from flax import traverse_util
import gin
import jax
import jax.numpy as jnp
import numpy as np

# Moved to punified_jax.attention; re-exported here (callers use model.relative_position_bucket etc.).
from punified_jax.attention import (_MASK_LOGIT, Dense, MultiHeadAttention,  # pylint: disable=unused-import
                                    RelativePositionBiases, _param, beam_group_mask_and_bias,
                                    relative_position_bucket)

Array = jax.Array
Initializer = Callable[..., Array]

_REMAT_POLICIES = {
    # Save nothing: recompute the whole layer in the backward pass (least memory).
    "full": None,
    # Save matmul outputs that have no batch dimension in the contraction (t5x's usual choice):
    # recompute only the cheap element-wise ops.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


VOCAB_SIZE_MULTIPLE = 128


def round_up_vocab_size(size: int, multiple: int = VOCAB_SIZE_MULTIPLE) -> int:
  """Embedding rows for a vocabulary of `size` ids: rounded up to a multiple of 128, which keeps
  the vocab axis divisible on TPU cores and model-parallel meshes (t5x's 32100 -> 32128).

  The one rounding rule: the gin entry points (gin_utils.fill_vocab_size) and the t5x gin files
  (t5x_interop.padded_vocab_size) both call it.
  """
  if multiple < 1:
    raise ValueError(f"multiple must be >= 1, got {multiple}")
  return -(-int(size) // multiple) * multiple


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of the network.  Frozen (hashable) so a model can be a static jit arg.

  vocab_size: embedding rows and logits width.  Set by the run from its vocabulary (gin macro
    `VOCAB_SIZE`): our SentencePiece vocabulary is small; UER's Chinese T5 WordPiece vocabulary
    has 21228 entries; t5x's English one is 32128 (32100 rounded up to a multiple of 128).
  dtype: activation / compute dtype, "float32" or "bfloat16".  Parameters are always float32;
    layer norms, softmax, attention logits and the output logits are computed in float32.
  decoder_start_token_id: the token the decoder sees at the first position of every target.
    seqio/t5x shift targets right with 0 (pad), so 0 is the default and needs nothing; UER's
    Chinese T5 checkpoints start with [CLS] = 101.  When nonzero, `Transformer.decode` replaces
    the decoder input at every segment start (position 0 of each packed segment) with it, so
    the data pipeline can stay seqio's.
  remat_policy: "none" (keep activations), "full" or "dots" (jax.checkpoint per layer, to trade
    compute for memory in training; not used in incremental decoding).
  """
  vocab_size: int
  emb_dim: int = 512
  num_heads: int = 6
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  head_dim: int = 64
  mlp_dim: int = 1024
  dropout_rate: float = 0.1
  dtype: str = "float32"
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  logits_via_embedding: bool = False
  decoder_start_token_id: int = 0
  remat_policy: str = "none"

  def __post_init__(self):
    positive = ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers", "num_decoder_layers",
                "head_dim", "mlp_dim", "relative_attention_num_buckets",
                "relative_attention_max_distance")
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"T5Config.{name} must be a positive integer, got {value!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"T5Config.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
    if self.relative_attention_num_buckets % 2:
      # The bidirectional encoder splits the buckets into two halves (before / after).
      raise ValueError("T5Config.relative_attention_num_buckets must be even, got "
                       f"{self.relative_attention_num_buckets}")
    if not 0 <= self.decoder_start_token_id < self.vocab_size:
      raise ValueError(f"T5Config.decoder_start_token_id {self.decoder_start_token_id} is not "
                       f"in [0, vocab_size={self.vocab_size})")
    if self.remat_policy != "none" and self.remat_policy not in _REMAT_POLICIES:
      raise ValueError(f"T5Config.remat_policy must be one of "
                       f"{['none', *_REMAT_POLICIES]}, got {self.remat_policy!r}")

  @property
  def activation_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


# ----------------------------------------------------------------------------------------------
# Building blocks (Dense and the attention modules live in punified_jax.attention).
# ----------------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
  """T5 LayerNorm (RMSNorm): x / sqrt(mean(x^2) + eps) * scale; statistics in float32."""
  dtype: Any = jnp.float32
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.astype(jnp.float32)
    mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    y = x * jax.lax.rsqrt(mean_square + self.epsilon)
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    return (y * scale).astype(self.dtype)


class Embed(nn.Module):
  """Token embedding table [vocab, embed]; `attend` is its transpose for tied logits."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    # T5 initialises the shared embedding with unit variance (no output scaling afterwards).
    self.embedding = _param(self, "embedding", nn.initializers.normal(stddev=1.0),
                            (self.num_embeddings, self.features), ("vocab", "embed"))

  def __call__(self, token_ids: Array) -> Array:
    if not jnp.issubdtype(token_ids.dtype, jnp.integer):
      raise TypeError(f"token ids must be integers, got dtype {token_ids.dtype}")
    x = jnp.take(self.embedding, token_ids, axis=0).astype(self.dtype)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))

  def attend(self, query: Array) -> Array:
    # float32: these are the output logits.
    return jnp.dot(query.astype(jnp.float32), self.embedding.T)



class MlpBlock(nn.Module):
  """Gated-GELU feed-forward: (gelu_tanh(x wi_0) * x wi_1) wo."""
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    dense = lambda features, axes, name: Dense(features, kernel_axes=axes, dtype=self.dtype,
                                               name=name)
    gate = jax.nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), "wi_0")(x), approximate=True)
    hidden = gate * dense(self.mlp_dim, ("embed", "mlp"), "wi_1")(x)
    hidden = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))(
        hidden, deterministic=deterministic)
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    out = dense(x.shape[-1], ("mlp", "embed"), "wo")(hidden)
    return nn.with_logical_constraint(out, ("batch", "length", "embed"))


def _dropout(config: T5Config, x: Array, deterministic: bool) -> Array:
  """Residual-path dropout, one mask per (example, feature) shared along the length axis."""
  return nn.Dropout(rate=config.dropout_rate, broadcast_dims=(-2,))(
      x, deterministic=deterministic)


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, mask: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    dtype = cfg.activation_dtype
    y = LayerNorm(dtype=dtype, name="pre_attention_layer_norm")(x)
    y = MultiHeadAttention(cfg.num_heads, cfg.head_dim, dtype, cfg.dropout_rate,
                           name="attention")(y, y, mask, bias, deterministic=deterministic)
    x = x + _dropout(cfg, y, deterministic)
    y = LayerNorm(dtype=dtype, name="pre_mlp_layer_norm")(x)
    y = MlpBlock(cfg.mlp_dim, dtype, cfg.dropout_rate, name="mlp")(y, deterministic=deterministic)
    x = x + _dropout(cfg, y, deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, encoded: Optional[Array], self_mask: Array, self_bias: Array,
               cross_mask: Array, deterministic: bool, decode: bool = False,
               cache_index: Optional[Array] = None,
               max_decode_length: Optional[int] = None,
               beam_groups: Optional[int] = None) -> Array:
    cfg = self.config
    dtype = cfg.activation_dtype
    y = LayerNorm(dtype=dtype, name="pre_self_attention_layer_norm")(x)
    y = MultiHeadAttention(cfg.num_heads, cfg.head_dim, dtype, cfg.dropout_rate,
                           name="self_attention")(
        y, y, self_mask, self_bias, deterministic=deterministic,
        mode="self_decode" if decode else "full", cache_index=cache_index,
        max_decode_length=max_decode_length, beam_groups=beam_groups)
    x = x + _dropout(cfg, y, deterministic)
    y = LayerNorm(dtype=dtype, name="pre_cross_attention_layer_norm")(x)
    y = MultiHeadAttention(cfg.num_heads, cfg.head_dim, dtype, cfg.dropout_rate,
                           name="encoder_decoder_attention")(
        y, encoded, cross_mask, None, deterministic=deterministic,
        mode="cross_decode" if decode else "full")
    x = x + _dropout(cfg, y, deterministic)
    y = LayerNorm(dtype=dtype, name="pre_mlp_layer_norm")(x)
    y = MlpBlock(cfg.mlp_dim, dtype, cfg.dropout_rate, name="mlp")(y, deterministic=deterministic)
    x = x + _dropout(cfg, y, deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def _maybe_remat(layer_cls: type[nn.Module], config: T5Config, decode: bool) -> type[nn.Module]:
  if config.remat_policy == "none" or decode:
    return layer_cls
  # Argument 4 of EncoderLayer/DecoderLayer.__call__ (counting `self` as 0) is the python bool
  # `deterministic` for the encoder; the decoder's python args are 6 (`deterministic`) and 7.
  static = (4,) if layer_cls is EncoderLayer else (6, 7)
  return nn.remat(layer_cls, policy=_REMAT_POLICIES[config.remat_policy],
                  static_argnums=static)


def _positions_or_arange(positions: Optional[Array], length: int) -> Array:
  if positions is None:
    return jnp.arange(length, dtype=jnp.int32)[None, :]
  return positions.astype(jnp.int32)


class Encoder(nn.Module):
  config: T5Config
  embedder: nn.Module

  @nn.compact
  def __call__(self, tokens: Array, mask: Array, positions: Optional[Array],
               deterministic: bool) -> Array:
    cfg = self.config
    query_positions = _positions_or_arange(positions, tokens.shape[1])
    bias = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                  cfg.relative_attention_max_distance, cfg.num_heads,
                                  name="relpos_bias")(query_positions, query_positions,
                                                      bidirectional=True)
    x = _dropout(cfg, self.embedder(tokens), deterministic)
    layer_cls = _maybe_remat(EncoderLayer, cfg, decode=False)
    for index in range(cfg.num_encoder_layers):
      x = layer_cls(cfg, name=f"layers_{index}")(x, mask, bias, deterministic)
    x = LayerNorm(dtype=cfg.activation_dtype, name="encoder_norm")(x)
    return _dropout(cfg, x, deterministic)


class Decoder(nn.Module):
  config: T5Config
  embedder: nn.Module

  @nn.compact
  def __call__(self, encoded: Optional[Array], tokens: Array, self_mask: Optional[Array],
               cross_mask: Array, positions: Optional[Array], deterministic: bool,
               decode: bool, max_decode_length: Optional[int],
               beam_groups: Optional[int] = None) -> Array:
    cfg = self.config
    relpos = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads,
                                    name="relpos_bias")
    cache_index = None
    if decode:
      initialised = self.has_variable("cache", "cache_index")
      index_var = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
      grouped = self.has_variable("cache", "beam_source")
      if grouped and positions is not None:
        raise ValueError("a beam-grouped cache (beam_groups) takes one token per call")
      if initialised and positions is not None:
        # A chunk: tokens [batch, q] at per-row decoder positions [batch, q] (consecutive,
        # row r from positions[r, 0]); fast_decoding feeds tokens the grammar forced, or
        # drafted, this way.  Each query sees the cache up to its own position; the shared
        # cache_index is neither read nor advanced.
        cache_length = self.variables["cache"]["layers_0"]["self_attention"][
            "cached_key"].shape[2]
        key_positions = jnp.arange(cache_length, dtype=jnp.int32)[None, :]
        query_positions = positions.astype(jnp.int32)
        self_bias = relpos(query_positions, key_positions, bidirectional=False)
        # [batch, 1, q, cache_length]
        self_mask = (key_positions[:, None, :] <= query_positions[:, :, None])[:, None]
        cache_index = query_positions[:, 0]
      elif grouped:
        # Single step over a beam-grouped cache that the beam search never re-orders.
        cache_index = index_var.value
        self_mask, self_bias = beam_group_mask_and_bias(self.variable("cache", "beam_source"),
                                                        cache_index, relpos)
        index_var.value = cache_index + 1
      elif initialised:
        # Single step at position `cache_index` over a cache of static length.
        cache_index = index_var.value
        cache_length = self.variables["cache"]["layers_0"]["self_attention"][
            "cached_key"].shape[2]
        key_positions = jnp.arange(cache_length, dtype=jnp.int32)[None, :]
        self_bias = relpos(cache_index[None, None], key_positions, bidirectional=False)
        # [1, 1, 1, cache_length]: the step may only see positions already written.
        self_mask = (key_positions <= cache_index)[:, None, :]
        self_mask = self_mask[:, None]
        index_var.value = cache_index + 1
      else:
        # Cache-initialising call: an ordinary causal pass over the given tokens.
        query_positions = _positions_or_arange(None, tokens.shape[1])
        self_bias = relpos(query_positions, query_positions, bidirectional=False)
        self_mask = _causal_mask(tokens.shape[1])
        if beam_groups:
          # The beam search's ancestry table (attention.beam_group_mask_and_bias).
          self.variable("cache", "beam_source", jnp.zeros,
                        (tokens.shape[0], max_decode_length, beam_groups), bool)
    else:
      query_positions = _positions_or_arange(positions, tokens.shape[1])
      self_bias = relpos(query_positions, query_positions, bidirectional=False)
    if decode and initialised:
      # Materialise the step's mask and bias once.  Left alone, XLA fuses their computation
      # (relative-position buckets with a log, the ancestry table's transpose) into every
      # layer's masked-scores select, recomputed per head and query: at 1 example, beam 4,
      # cache 256 that fusion was the largest op of a step (BENCHMARKS.md 2k).
      self_mask, self_bias = jax.lax.optimization_barrier((self_mask, self_bias))

    y = _dropout(cfg, self.embedder(tokens), deterministic)
    layer_cls = _maybe_remat(DecoderLayer, cfg, decode)
    for index in range(cfg.num_decoder_layers):
      y = layer_cls(cfg, name=f"layers_{index}")(
          y, encoded, self_mask, self_bias, cross_mask, deterministic, decode, cache_index,
          max_decode_length, beam_groups)
    y = LayerNorm(dtype=cfg.activation_dtype, name="decoder_norm")(y)
    y = _dropout(cfg, y, deterministic)
    if cfg.logits_via_embedding:
      # Tied head: rescale, because the embedding has unit-variance rows.
      logits = self.embedder.attend(y) / np.sqrt(y.shape[-1])
    else:
      logits = Dense(cfg.vocab_size, kernel_axes=("embed", "vocab"), dtype=jnp.float32,
                     name="logits_dense")(y)
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


# ----------------------------------------------------------------------------------------------
# Masks.  All boolean, shaped [batch or 1, 1 (heads), q_len, k_len].
# ----------------------------------------------------------------------------------------------


def _pair_mask(query_valid: Array, key_valid: Array) -> Array:
  return (query_valid[:, :, None] & key_valid[:, None, :])[:, None]


def _same_segment_mask(query_segments: Array, key_segments: Array) -> Array:
  return (query_segments[:, :, None] == key_segments[:, None, :])[:, None]


def _causal_mask(length: int) -> Array:
  positions = jnp.arange(length)
  return (positions[None, :] <= positions[:, None])[None, None]


def segment_start_mask(decoder_target_tokens: Array, segment_ids: Optional[Array],
                       positions: Optional[Array]) -> Array:
  """True where a (packed) target segment starts: position 0 of every non-padding segment."""
  batch, length = decoder_target_tokens.shape
  if positions is not None:
    starts = positions == 0
    if segment_ids is not None:
      starts &= segment_ids > 0
    return starts
  if segment_ids is not None:
    previous = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
    return (segment_ids != previous) & (segment_ids > 0)
  return jnp.zeros((batch, length), bool).at[:, 0].set(True)


# ----------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------


class Transformer(nn.Module):
  """T5 v1.1 encoder-decoder with t5x's `EncoderDecoder` call signature.

  Token id 0 is padding everywhere (masked as a key; padded query rows produce ignorable
  outputs).  Packed inputs (seqio's EncDecFeatureConverter with pack=True) pass
  `*_segment_ids` (attention never crosses segments) and `*_positions` (relative positions are
  computed from them).
  """
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.activation_dtype)
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Optional[Array] = None,
             encoder_positions: Optional[Array] = None, *,
             enable_dropout: bool = True) -> Array:
    """[batch, input_len] int -> encoded [batch, input_len, embed] in the activation dtype."""
    _check_tokens("encoder_input_tokens", encoder_input_tokens)
    valid = encoder_input_tokens > 0
    mask = _pair_mask(valid, valid)
    if encoder_segment_ids is not None:
      mask &= _same_segment_mask(encoder_segment_ids, encoder_segment_ids)
    return self.encoder(encoder_input_tokens, mask, encoder_positions, not enable_dropout)

  def decode(self, encoded: Optional[Array], encoder_input_tokens: Array,
             decoder_input_tokens: Array, decoder_target_tokens: Optional[Array] = None,
             encoder_segment_ids: Optional[Array] = None,
             decoder_segment_ids: Optional[Array] = None,
             decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
             decode: bool = False, max_decode_length: Optional[int] = None,
             beam_groups: Optional[int] = None) -> Array:
    """Decoder logits, float32 [batch, target_len, vocab].

    Training / scoring (decode=False): `decoder_target_tokens` gives the padding mask (id 0)
    and `decoder_segment_ids` the packing; attention is causal within a segment.

    Incremental decoding (decode=True): call once with mutable=["cache", "encoder_cache"],
    the real `encoded`, any [batch, 1] decoder tokens and `max_decode_length` to create the
    caches (this call fills the cross-attention keys/values and returns ordinary logits); then
    call with one token per row ([batch, 1]) and mutable=["cache"] for each step: the token is
    placed at `cache_index`, which then advances.  Steps do not read `encoded` (may be None).
    The caller feeds `config.decoder_start_token_id` as the first token.  Packing is not
    supported in this mode.  A step may instead feed a chunk [batch, q] with
    `decoder_positions` [batch, q] (each row's own consecutive positions): its keys/values are
    written there and logits for all q come back (punified_jax.fast_decoding).
    beam_groups (the cache-initialising call of a beam search, rows example-major): a
    self-attention cache that beam search need not re-order (attention._beam_group_attention;
    the search re-orders only the "beam_source" table: generate.reorder_beam_cache).
    """
    cfg = self.config
    _check_tokens("decoder_input_tokens", decoder_input_tokens)
    encoder_valid = encoder_input_tokens > 0
    if decode:
      if encoder_segment_ids is not None or decoder_segment_ids is not None:
        raise ValueError("packed (segment_ids) inputs cannot be decoded incrementally")
      self_mask = None  # built by the decoder from the cache index
      cross_mask = encoder_valid[:, None, None, :]
    else:
      if decoder_target_tokens is None:
        raise ValueError("decoder_target_tokens is required when decode=False (padding mask)")
      if decoder_target_tokens.shape != decoder_input_tokens.shape:
        raise ValueError(f"decoder_target_tokens shape {decoder_target_tokens.shape} != "
                         f"decoder_input_tokens shape {decoder_input_tokens.shape}")
      target_valid = decoder_target_tokens > 0
      self_mask = _pair_mask(target_valid, target_valid) & _causal_mask(
          decoder_input_tokens.shape[1])
      cross_mask = _pair_mask(target_valid, encoder_valid)
      if decoder_segment_ids is not None:
        self_mask &= _same_segment_mask(decoder_segment_ids, decoder_segment_ids)
      if encoder_segment_ids is not None:
        if decoder_segment_ids is None:
          raise ValueError("encoder_segment_ids given without decoder_segment_ids")
        cross_mask &= _same_segment_mask(decoder_segment_ids, encoder_segment_ids)
      if cfg.decoder_start_token_id:
        starts = segment_start_mask(decoder_target_tokens, decoder_segment_ids,
                                    decoder_positions)
        decoder_input_tokens = jnp.where(starts, cfg.decoder_start_token_id,
                                         decoder_input_tokens)
    return self.decoder(encoded, decoder_input_tokens, self_mask, cross_mask, decoder_positions,
                        not enable_dropout, decode, max_decode_length, beam_groups)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None,
               encoder_positions: Optional[Array] = None,
               decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
               decode: bool = False, max_decode_length: Optional[int] = None) -> Array:
    """Teacher-forced logits, float32 [batch, target_len, vocab]."""
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                          enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                       decoder_positions, enable_dropout=enable_dropout, decode=decode,
                       max_decode_length=max_decode_length)


def _check_tokens(name: str, tokens: Array) -> None:
  if tokens.ndim != 2:
    raise ValueError(f"{name} must be [batch, length], got shape {tokens.shape}")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"{name} must be integer token ids, got dtype {tokens.dtype}")


# ----------------------------------------------------------------------------------------------
# Parameters.
# ----------------------------------------------------------------------------------------------


def _dummy_batch(batch: int = 1, input_len: int = 1, target_len: int = 1) -> dict[str, Array]:
  ones = lambda length: jnp.ones((batch, length), jnp.int32)
  return dict(encoder_input_tokens=ones(input_len), decoder_input_tokens=ones(target_len),
              decoder_target_tokens=ones(target_len))


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: T5Config, rng: Array) -> dict[str, Any]:
  """Fresh float32 parameters (unboxed plain arrays) for `Transformer(config)`.

  Jitted (one compiled program instead of thousands of eager ops).  To create sharded
  parameters directly, jit `_init_boxed` with out_shardings from `param_logical_axes`.
  """
  return nn.unbox(_init_boxed(config, rng)["params"])


def _init_boxed(config: T5Config, rng: Array) -> dict[str, Any]:
  return Transformer(config).init(rng, **_dummy_batch(), enable_dropout=False)


def param_logical_axes(config: T5Config) -> Any:
  """Tree of logical `PartitionSpec`s matching `init_params`, computed without allocating."""
  abstract = jax.eval_shape(functools.partial(_init_boxed, config), jax.random.key(0))
  return nn.get_partition_spec(abstract["params"])


def param_shapes(config: T5Config) -> Any:
  """Tree of `jax.ShapeDtypeStruct`s of the parameters, computed without allocating."""
  return jax.eval_shape(lambda rng: init_params(config, rng), jax.random.key(0))


def flatten_params(tree: Mapping[str, Any]) -> dict[str, Any]:
  """{"encoder": {"encoder_norm": {"scale": x}}} -> {"encoder/encoder_norm/scale": x}: the
  slash-joined names checkpoint converters (HF, t5x) match parameters by."""
  return {"/".join(path): leaf for path, leaf in traverse_util.flatten_dict(dict(tree)).items()}


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
  """The inverse of `flatten_params`."""
  return traverse_util.unflatten_dict({tuple(name.split("/")): leaf for name, leaf in flat.items()})


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (arrays, boxed arrays or ShapeDtypeStructs)."""
  leaves = jax.tree_util.tree_leaves(nn.unbox(params))
  return int(sum(int(np.prod(leaf.shape)) for leaf in leaves))


# ----------------------------------------------------------------------------------------------
# Loss.
# ----------------------------------------------------------------------------------------------


def compute_loss(logits: Array, targets: Array, weights: Optional[Array], *,
                 z_loss: float = 1e-4,
                 label_smoothing: float = 0.0) -> tuple[Array, Array, Array]:
  """Weighted token cross entropy plus z-loss, as sums (normalising is the trainer's choice).

  logits float [batch, len, vocab]; targets int [batch, len]; weights [batch, len] (0 for
  padding; None means every position counts).  Computed in float32.

  Per token: CE(soft targets, softmax(logits)) + z_loss * log(Z)^2, where Z is the softmax
  normaliser: the z-loss (mesh-tf / t5x) keeps log(Z) near 0 so bfloat16 logits stay stable.
  With label smoothing the target puts 1 - label_smoothing on the gold token and spreads the
  rest uniformly; the entropy of that target is subtracted, so a perfect prediction has loss 0.

  Returns (loss_sum, z_loss_sum, weight_sum); loss_sum includes z_loss_sum.
  """
  if logits.shape[:-1] != targets.shape:
    raise ValueError(f"logits {logits.shape} and targets {targets.shape} disagree")
  if weights is not None and weights.shape != targets.shape:
    raise ValueError(f"weights {weights.shape} and targets {targets.shape} disagree")
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, len]
  log_probs = logits - log_z[..., None]
  confidence = 1.0 - label_smoothing
  if label_smoothing:
    off_value = label_smoothing / (vocab - 1)
    one_hot = jax.nn.one_hot(targets, vocab, dtype=jnp.float32)
    soft_targets = one_hot * confidence + (1.0 - one_hot) * off_value
    target_entropy = -(confidence * np.log(confidence)
                       + (vocab - 1) * off_value * np.log(off_value + 1e-20))
    cross_entropy = -jnp.sum(soft_targets * log_probs, axis=-1) - target_entropy
  else:
    cross_entropy = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  token_z_loss = z_loss * jnp.square(log_z)
  if weights is None:
    weights = jnp.ones(targets.shape, jnp.float32)
  weights = weights.astype(jnp.float32)
  z_loss_sum = jnp.sum(token_z_loss * weights)
  loss_sum = jnp.sum(cross_entropy * weights) + z_loss_sum
  return loss_sum, z_loss_sum, jnp.sum(weights)
