"""Attention for the T5 model (punified_jax.model): relative position biases, multi-head
attention with its decoding caches, and the bias-free Dense projection they are built from.

Split out of model.py (which re-exports these names) to keep each module under ~800 lines;
the decoding caches' layout is described in model.py's module docstring.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Initializer = Callable[..., Array]

# Added to masked attention logits.  Finite (not -inf) so that a fully masked row (a padding
# query) gives a uniform softmax instead of NaN; the result of such rows is never used.
_MASK_LOGIT = -1e10


def _param(module: nn.Module, name: str, init: Initializer, shape: tuple[int, ...],
           axes: tuple[str, ...]) -> Array:
  """A float32 parameter boxed with its logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class Dense(nn.Module):
  """x @ kernel over the last axis, no bias; kernel float32 [in, out], computed in `dtype`."""
  features: int
  kernel_axes: tuple[str, str]
  dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = _param(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                    self.kernel_axes)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))



def relative_position_bucket(relative_position: Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """T5's bucketing of (key position - query position) into [0, num_buckets).

  Half of the buckets (per direction) hold exact small distances; the rest cover distances up to
  `max_distance` logarithmically; anything farther shares the last bucket.  In the causal
  (unidirectional) case, keys after the query all fall into bucket 0 (they are masked anyway).
  """
  distance = -relative_position  # > 0 when the key is before the query.
  bucket = jnp.zeros_like(distance)
  if bidirectional:
    num_buckets //= 2
    bucket += (distance < 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(distance)
  else:
    distance = jnp.maximum(distance, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # The float epsilon keeps log() finite at distance 0 (that branch is not selected anyway).
  log_ratio = (jnp.log(distance.astype(jnp.float32) / max_exact + np.finfo(np.float32).eps)
               / np.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, distance, large)


class RelativePositionBiases(nn.Module):
  """Per-head attention bias from bucketed relative positions; one table per stack."""
  num_buckets: int
  max_distance: int
  num_heads: int

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array, *,
               bidirectional: bool) -> Array:
    """Positions [batch or 1, q_len] and [batch or 1, k_len] -> float32 bias [b, heads, q, k]."""
    table = _param(self, "rel_embedding",
                   nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"))
    relative = key_positions[:, None, :] - query_positions[:, :, None]  # [b, q, k]
    buckets = relative_position_bucket(relative, bidirectional=bidirectional,
                                       num_buckets=self.num_buckets,
                                       max_distance=self.max_distance)
    bias = jnp.take(table, buckets, axis=1)  # [heads, b, q, k]
    return jnp.transpose(bias, (1, 0, 2, 3))


class MultiHeadAttention(nn.Module):
  """T5 multi-head dot-product attention (no 1/sqrt(d) scaling, no biases).

  mode "full": attend over `inputs_kv` (training / scoring).
  mode "self_decode": one query step; keys/values come from the "cache" collection.
  mode "cross_decode": keys/values of the encoder output from the "encoder_cache" collection,
    computed and stored on the first call.
  """
  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0

  def _projection(self, name: str, init: Initializer) -> Dense:
    return Dense(self.num_heads * self.head_dim, kernel_axes=("embed", "joined_kv"),
                 dtype=self.dtype, kernel_init=init, name=name)

  def _split_heads(self, x: Array) -> Array:
    x = x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))
    return nn.with_logical_constraint(x, ("batch", "length", "heads", "kv"))

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Optional[Array], mask: Optional[Array],
               bias: Optional[Array], *, deterministic: bool, mode: str = "full",
               cache_index: Optional[Array] = None,
               max_decode_length: Optional[int] = None,
               beam_groups: Optional[int] = None) -> Array:
    """inputs_q [b, q, embed]; inputs_kv [b, k, embed]; mask bool [b|1, 1, q, k];
    bias float [b|1, heads, q, k].  Returns [b, q, embed].

    beam_groups (self_decode, cache-initialising call only; > 1): lay the self-attention
    cache out per example, values [b / beam_groups, heads, beam_groups * len, kv] and keys
    transposed [b / beam_groups, heads, kv, beam_groups * len], for a beam search
    that never re-orders it (see `_beam_group_attention`); later steps recognise the layout
    (fewer cache rows than decoding rows) and take a mask [b / beam_groups, 1, beam_groups,
    beam_groups * len]."""
    kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    # The 1/sqrt(head_dim) that T5 never applies to the logits lives in the query init.
    query_init = lambda *args: kernel_init(*args) / np.sqrt(self.head_dim)
    query = self._split_heads(self._projection("query", query_init)(inputs_q))

    if mode == "full":
      key = self._split_heads(self._projection("key", kernel_init)(inputs_kv))
      value = self._split_heads(self._projection("value", kernel_init)(inputs_kv))
    # Keys/values are [batch, len, heads, kv], or heads-first [batch, heads, len, kv] when they
    # come from a decoding cache (see the module docstring).
    heads_first = False
    if mode == "cross_decode":
      heads_first = True
      if self.has_variable("encoder_cache", "cached_key"):
        key = self.get_variable("encoder_cache", "cached_key")
        value = self.get_variable("encoder_cache", "cached_value")
      else:
        if inputs_kv is None:
          raise ValueError("the first decode call must receive the encoder output: it fills "
                           "the cross-attention cache")
        key = _heads_first(self._split_heads(self._projection("key", kernel_init)(inputs_kv)))
        value = _heads_first(self._split_heads(
            self._projection("value", kernel_init)(inputs_kv)))
        self.put_variable("encoder_cache", "cached_key", key)
        self.put_variable("encoder_cache", "cached_value", value)
    elif mode == "self_decode":
      key = self._split_heads(self._projection("key", kernel_init)(inputs_q))
      value = self._split_heads(self._projection("value", kernel_init)(inputs_q))
      initialised = self.has_variable("cache", "cached_key")
      batch, _, heads, head_dim = key.shape
      cache_shape = (batch, heads, max_decode_length or inputs_q.shape[1], head_dim)
      if beam_groups and not initialised:
        if batch % beam_groups:
          raise ValueError(f"{batch} decoding rows are not whole groups of {beam_groups} beams")
        cache_shape = (batch // beam_groups, heads, beam_groups * cache_shape[2], head_dim)
      # A beam-grouped cache keeps its keys transposed (_beam_group_attention).
      key_shape = cache_shape[:2] + cache_shape[:1:-1] if beam_groups else cache_shape
      cached_key = self.variable("cache", "cached_key", jnp.zeros, key_shape, key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, cache_shape, value.dtype)
      if initialised:
        cache_rows = cached_key.value.shape[0]
        if key.shape[0] % cache_rows:
          raise ValueError(f"decode batch {key.shape[0]} does not match the cache batch "
                           f"{cache_rows}")
        if key.shape[0] != cache_rows:  # beam-grouped: rows / cache_rows beams per example
          attended = _beam_group_attention(query, key, value, cached_key, cached_value, mask,
                                           bias, cache_index, self.dtype)
          return self._output(attended, inputs_q.shape[-1])
        if jnp.ndim(cache_index) == 0:
          # One token per call: write its key/value at `cache_index`, attend to the whole
          # cache (the caller's mask hides positions > cache_index).
          if query.shape[1] != 1:
            raise ValueError(f"incremental decoding takes one token per call, got "
                             f"{query.shape[1]}")
          write = lambda cache, new: jax.lax.dynamic_update_slice_in_dim(
              cache, new, cache_index, axis=2)
        else:
          # A chunk of tokens per row, row r's first one at position cache_index[r] (int32
          # [batch]); the caller keeps cache_index + chunk length <= cache length (a slice
          # that would overflow is clamped by XLA, writing at the wrong place).
          write = jax.vmap(lambda cache, new, start: jax.lax.dynamic_update_slice_in_dim(
              cache, new, start, axis=1))
          write = functools.partial(write, start=cache_index)
        cached_key.value = write(cached_key.value,
                                 _heads_first(key).astype(cached_key.value.dtype))
        cached_value.value = write(cached_value.value,
                                   _heads_first(value).astype(cached_value.value.dtype))
        key, value = cached_key.value, cached_value.value
        heads_first = True
    elif mode != "full":
      raise ValueError(f"unknown attention mode {mode!r}")

    # Attention logits and softmax in float32 (bfloat16 logits lose the small differences that
    # decide the argmax); weights go back to the compute dtype for the value contraction.
    # Heads-first caches: [b, h, ...] contractions (mixed layouts: 1.4-4x slower on XLA:CPU).
    q_layout, kv_layout = ("bhqd", "bhkd") if heads_first else ("bqhd", "bkhd")
    query = jnp.swapaxes(query, 1, 2) if heads_first else query
    logits = jnp.einsum(f"{q_layout},{kv_layout}->bhqk", query, key,
                        preferred_element_type=jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, _MASK_LOGIT)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    # T5 drops whole key columns, shared over the query positions.
    weights = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(2,))(
        weights, deterministic=deterministic)
    attended = jnp.einsum(f"bhqk,{kv_layout}->{q_layout}", weights, value.astype(self.dtype))
    attended = jnp.swapaxes(attended, 1, 2) if heads_first else attended
    return self._output(attended, inputs_q.shape[-1])

  def _output(self, attended: Array, features: int) -> Array:
    """[b, q, heads, kv] -> the output projection [b, q, features]."""
    attended = nn.with_logical_constraint(attended, ("batch", "length", "heads", "kv"))
    attended = attended.reshape(attended.shape[:2] + (self.num_heads * self.head_dim,))
    kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    out = Dense(features, kernel_axes=("joined_kv", "embed"), dtype=self.dtype,
                kernel_init=kernel_init, name="out")(attended)
    return nn.with_logical_constraint(out, ("batch", "length", "embed"))


def _beam_group_attention(query: Array, key: Array, value: Array, cached_key: Any,
                          cached_value: Any, mask: Array, bias: Optional[Array],
                          cache_index: Array, dtype: Any) -> Array:
  """One decoding step over a beam-grouped cache, never re-ordered by the beam search.

  The cache (flax variables cached_value [examples, heads, beams * len, kv] and cached_key,
  transposed, [examples, heads, kv, beams * len]): slot j of an example (positions
  j * len ... (j + 1) * len - 1) holds what the decoder row (example, j) computed at each
  position,
  whatever hypothesis that row followed then.  A hypothesis's own history is therefore spread
  over its example's slots, and `mask` [examples, 1, beams, beams * len] (built by the
  decoder from its ancestry table, "beam_source") says, for each of the example's queries,
  which (slot, position) keys are its ancestors'.  Each query attends over all beams * len keys
  of its example with the others masked: the same result as re-ordering the cache with the
  beams every step (masked keys get exactly zero weight), without copying the cache (the copy
  grew with the cache length and was most of a long request's step: benchmarks/step_cost.py).
  The keys are stored transposed because the scores' dot then reads them as a plain
  [kv, keys] matrix: 1.5-3x faster on XLA:CPU than [keys, kv] for these shapes (beams
  queries per example).
  query / key / value [rows, 1, heads, kv] (rows = examples * beams, example-major); the step's
  key and value are written at position `cache_index` of their own slot.
  Returns the attended values [rows, 1, heads, kv].
  """
  examples, heads, slots, kv = cached_value.value.shape
  beams = query.shape[0] // examples
  length = slots // beams
  if query.shape[1] != 1:
    raise ValueError(f"a beam-grouped cache takes one token per call, got {query.shape[1]}")

  def grouped(x):  # [rows, 1, heads, kv] -> [examples, heads, beams, kv]
    return jnp.swapaxes(x.reshape(examples, beams, heads, kv), 1, 2)

  def write(cache, new, axis):
    # One small in-place write per slot (a reshape of the cache to [.., beams, len, ..] around
    # a single write made XLA:CPU copy the whole cache for the attention's dot).
    new = grouped(new).astype(cache.dtype)  # [examples, heads, beams, kv]
    for slot in range(beams):
      column = jnp.expand_dims(new[:, :, slot], axis)
      cache = jax.lax.dynamic_update_slice_in_dim(cache, column, slot * length + cache_index,
                                                  axis=axis)
    return cache

  # The barrier keeps XLA:CPU from fusing the last write into the dot's operand, which turned
  # the in-place write into a copy of the whole cache (seen in the compiled HLO).
  keys, values = jax.lax.optimization_barrier((write(cached_key.value, key, 3),
                                               write(cached_value.value, value, 2)))
  cached_key.value, cached_value.value = keys, values
  logits = jnp.einsum("bhqd,bhdk->bhqk", grouped(query), keys,
                      preferred_element_type=jnp.float32)
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  logits = jnp.where(mask, logits, _MASK_LOGIT)
  weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
  attended = jnp.einsum("bhqk,bhkd->bhqd", weights, values.astype(dtype))
  return jnp.swapaxes(attended, 1, 2).reshape(examples * beams, 1, heads, kv)


def _heads_first(x: Array) -> Array:
  """[batch, len, heads, kv] -> [batch, heads, len, kv] (the decoding caches' layout)."""
  return nn.with_logical_constraint(jnp.swapaxes(x, 1, 2), ("batch", "heads", "length", "kv"))



def beam_group_mask_and_bias(source: Any, cache_index: Array,
                             relpos: Callable[..., Array]) -> tuple[Array, Array]:
  """The self-attention mask and bias of one step over a beam-grouped cache.

  source: the flax variable "beam_source", bool [rows, len, beams]: source[r, p, j] is True
  when hypothesis r's key/value at position p is in its example's slot j (one True per written
  position; none past the positions written).  This step's row r writes slot r % beams at
  `cache_index`, recorded here; the beam search re-orders this table (not the cache) with the
  beams.  relpos: the decoder's RelativePositionBiases.
  Returns (mask bool [examples, 1, beams, beams * len], bias float [1, heads, 1, beams * len]),
  keys ordered (slot, position) as in _beam_group_attention.
  """
  rows, length, beams = source.value.shape
  own_slot = jnp.arange(beams)[None, :] == (jnp.arange(rows) % beams)[:, None]
  source.value = jax.lax.dynamic_update_slice_in_dim(source.value, own_slot[:, None, :],
                                                     cache_index, axis=1)
  mask = jnp.swapaxes(source.value.reshape(rows // beams, beams, length, beams), 2, 3)
  mask = mask.reshape(rows // beams, 1, beams, beams * length)
  key_positions = jnp.arange(length, dtype=jnp.int32)[None, :]
  bias = relpos(cache_index[None, None], key_positions, bidirectional=False)
  return mask, jnp.tile(bias, (1, 1, 1, beams))
