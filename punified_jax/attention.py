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
               max_decode_length: Optional[int] = None) -> Array:
    """inputs_q [b, q, embed]; inputs_kv [b, k, embed]; mask bool [b|1, 1, q, k];
    bias float [b|1, heads, q, k].  Returns [b, q, embed]."""
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
      cached_key = self.variable("cache", "cached_key", jnp.zeros, cache_shape, key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, cache_shape, value.dtype)
      if initialised:
        if key.shape[0] != cached_key.value.shape[0]:
          raise ValueError(f"decode batch {key.shape[0]} does not match the cache batch "
                           f"{cached_key.value.shape[0]}")
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
    attended = nn.with_logical_constraint(attended, ("batch", "length", "heads", "kv"))
    attended = attended.reshape(attended.shape[:2] + (self.num_heads * self.head_dim,))
    out = Dense(inputs_q.shape[-1], kernel_axes=("joined_kv", "embed"), dtype=self.dtype,
                kernel_init=kernel_init, name="out")(attended)
    return nn.with_logical_constraint(out, ("batch", "length", "embed"))


def _heads_first(x: Array) -> Array:
  """[batch, len, heads, kv] -> [batch, heads, len, kv] (the decoding caches' layout)."""
  return nn.with_logical_constraint(jnp.swapaxes(x, 1, 2), ("batch", "heads", "length", "kv"))

