"""The model's per-token log-probabilities of a search's outputs, computed after its loop.

The step-by-step searches over the constraint's candidates (decoding.greedy_decode and
beam_search with an OutputLayer, fast_decoding) leave the output layer out of their loops: they
keep each step's final hidden state and score only the candidates.  The model's own log-softmax
of every output token (DecodeOutput.token_log_probs), whose normaliser needs every logit, is
computed here afterwards, from those hidden states, as a few large matrix products over the
real output tokens only.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
# A decoding.DecodeOutput (not imported: decoding imports this module).
DecodeOutput = Any

# Output positions per matrix product when the model log-probs are computed after the loop.
LOG_PROB_BLOCK = 32
# Output tokens per matrix product there: the tokens of all rows are packed together first.
# 512 suits batches (32 rows x ~76 tokens on CLUENER); a search of a few rows writes far fewer
# tokens, and one block of 512 ([512, d] x [d, vocab], ~7 ms on the mini model) cost more
# than its whole loop, so the block shrinks with the rows: _PACKED_TOKENS_PER_ROW per row,
# between _MIN_PACKED_BLOCK and _PACKED_BLOCK (BENCHMARKS.md 2f).
_PACKED_BLOCK = 512
_MIN_PACKED_BLOCK = 64
_PACKED_TOKENS_PER_ROW = 16


def model_token_log_probs(hidden: Array, tokens: Array, kernel: Array,
                          real: Optional[Array] = None) -> Array:
  """float32 [rows, len]: log-softmax(hidden @ kernel)[token] at every position where the token
  is not 0, or where `real` (bool [rows, len]) is True when given (0 elsewhere).
  hidden [rows, >= len, d], tokens [rows, len].

  The output layer and its normaliser (every logit) run only on the real output tokens: those
  of all rows are packed into blocks of _PACKED_BLOCK, so rows that ended early and the
  padding after EOS cost nothing (a batch's rows end at very different lengths: packing
  computes ~60% of the [rows, longest] positions on CLUENER, BENCHMARKS.md 2c).
  """
  rows, length = tokens.shape
  block = min(_PACKED_BLOCK, max(_MIN_PACKED_BLOCK, _PACKED_TOKENS_PER_ROW * rows))
  flat_tokens = tokens.reshape(-1)
  flat_hidden = hidden[:, :length].reshape(rows * length, -1)
  total = rows * length
  real = flat_tokens != 0 if real is None else real.reshape(-1)
  count = jnp.sum(real, dtype=jnp.int32)
  # packed[i]: the flat position of the i-th real token; `total` (a scratch slot) past them.
  slot = jnp.where(real, jnp.cumsum(real) - 1, total + block)
  packed = jnp.full((total + block,), total, jnp.int32).at[slot].set(
      jnp.arange(total, dtype=jnp.int32), mode="drop")
  columns = kernel.T  # [vocab, d]
  flat_hidden = jnp.concatenate([flat_hidden, jnp.zeros_like(flat_hidden[:1])])
  flat_tokens = jnp.concatenate([flat_tokens, jnp.zeros_like(flat_tokens[:1])])

  def body(carry):
    start, out = carry
    where = jax.lax.dynamic_slice_in_dim(packed, start, block)
    states = flat_hidden[where]  # [block, d]
    normaliser = jax.nn.logsumexp(jnp.einsum("bd,dv->bv", states, kernel), axis=-1)
    chosen = jnp.einsum("bd,bd->b", states, jnp.take(columns, flat_tokens[where], axis=0))
    return start + block, out.at[where].set(chosen - normaliser)

  out = jnp.zeros((total + 1,), jnp.float32)
  _, out = jax.lax.while_loop(lambda c: c[0] < count, body, (jnp.array(0, jnp.int32), out))
  # The scratch slot took the padding's values; positions without a token stay 0.
  return jnp.where(real.reshape(rows, length), out[:total].reshape(rows, length), 0.0)


def after_loop(hidden: Array, tokens: Array, output_layer: Any) -> tuple[Array, Optional[Array]]:
  """(token_log_probs, hidden) of a greedy search that kept its hidden states: the model's
  per-token log-probs and None, or, when output_layer.token_log_probs is False, zeros and the
  hidden states themselves (DecodeOutput.hidden: the caller scores the tokens it needs)."""
  if output_layer.token_log_probs:
    return model_token_log_probs(hidden, tokens, output_layer.kernel.astype(jnp.float32)), None
  return jnp.zeros(tokens.shape, jnp.float32), hidden


def keep_token_log_probs(output: DecodeOutput,
                         log_prob_beams: Optional[int]) -> DecodeOutput:
  """`output` with the per-token log-probs of beams past the best `log_prob_beams` set to NaN
  (beam_search's log_prob_beams; None keeps all)."""
  if log_prob_beams is None or log_prob_beams >= output.token_log_probs.shape[1]:
    return output
  beam = jnp.arange(output.token_log_probs.shape[1])[None, :, None]
  return output._replace(token_log_probs=jnp.where(
      beam < max(1, int(log_prob_beams)), output.token_log_probs, jnp.nan))


def beam_token_log_probs(hidden: Array, output: DecodeOutput, kernel: Array,
                          eos_id: int, log_prob_beams: Optional[int] = None) -> Array:
  """The model's per-token log-probs [batch, beam, len] of beam_search's returned hypotheses
  from the hidden states [batch * beam, len, d] the loop kept: position t of a hypothesis was
  scored by row (example, slot) at step t, slot = output.token_log_probs[b, k, t] (what the
  loop filed there).  A hypothesis's tokens run up to its first EOS (all of them without
  one; a generated 0 counts); empty slots have none.  Only the best `log_prob_beams`
  hypotheses are scored (all when None); the others' log-probs are NaN."""
  batch, beam_size, length = output.tokens.shape
  scored = beam_size if log_prob_beams is None else max(1, min(int(log_prob_beams), beam_size))
  tokens = output.tokens[:, :scored]
  rows = (jnp.arange(batch)[:, None, None] * beam_size
          + output.token_log_probs[:, :scored].astype(jnp.int32))
  states = hidden[rows, jnp.arange(length)[None, None, :]]  # [batch, scored, len, d]
  is_eos = tokens == eos_id
  ends = jnp.where(jnp.any(is_eos, axis=-1), jnp.argmax(is_eos, axis=-1) + 1, length)
  real = ((jnp.arange(length)[None, None, :] < ends[..., None])
          & (output.scores[:, :scored] > -jnp.inf)[..., None])
  log_probs = model_token_log_probs(states.reshape(batch * scored, length, -1),
                                    tokens.reshape(batch * scored, length), kernel,
                                    real.reshape(batch * scored, length))
  log_probs = log_probs.reshape(batch, scored, length)
  if scored == beam_size:
    return log_probs
  return jnp.concatenate(
      [log_probs, jnp.full((batch, beam_size - scored, length), jnp.nan, log_probs.dtype)],
      axis=1)
