"""Glue between the T5 model and the decoding loops: params + encoder ids -> decoded ids.

`predict_batch` is one jitted function (encoder pass, cache set-up, search loop) used by the
trainer's evaluation and by the extractor.  It compiles once per (model config, input shape,
beam_size, max_decode_length, alpha, eos_id, constraint type) and is reused afterwards.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from punified_jax import decoding
from punified_jax import fast_decoding
from punified_jax.model import Embed, T5Config, Transformer

Array = jax.Array


def init_decoding(model: Transformer, params: Any, encoder_input_tokens: Array, *,
                  beam_size: int, max_decode_length: int) -> tuple[decoding.StepFn, Any, Array]:
  """Encode once and set up incremental decoding for batch * beam_size rows.

  Returns (step_fn, cache, row_inputs): the `decoding.StepFn` that feeds one token per row to
  the model, the initial self-attention cache, and the encoder ids repeated per beam
  [batch * beam_size, input_len] (what the search and a constraint's `init` receive).
  Call inside jit; `predict_batch` does.
  """
  variables = {"params": params}
  encoder_input_tokens = encoder_input_tokens.astype(jnp.int32)
  encoded = model.apply(variables, encoder_input_tokens, enable_dropout=False,
                        method=Transformer.encode)
  # Beams of one example share its encoder output: encode the batch, then repeat.
  row_inputs = decoding.expand_to_beams(encoder_input_tokens, beam_size)
  row_encoded = decoding.expand_to_beams(encoded, beam_size)
  rows = row_inputs.shape[0]
  # The cache-initialising call: allocates the self-attention cache [rows, max_len, ...] and
  # computes the cross-attention keys/values once.  Its logits (for a dummy token) are unused.
  _, caches = model.apply(
      variables, row_encoded, row_inputs, jnp.zeros((rows, 1), jnp.int32),
      enable_dropout=False, decode=True, max_decode_length=max_decode_length,
      method=Transformer.decode, mutable=["cache", "encoder_cache"])
  # The encoder cache is constant for the whole search (never reordered by beams), so it is
  # closed over instead of being carried through the loop.
  encoder_cache = caches["encoder_cache"]

  def step_fn(token_ids: Array, cache: Any, step: Array) -> tuple[Array, Any]:
    del step  # The model keeps its own position (cache_index).
    logits, updated = model.apply(
        {"params": params, "cache": cache, "encoder_cache": encoder_cache}, None, row_inputs,
        token_ids[:, None], enable_dropout=False, decode=True, method=Transformer.decode,
        mutable=["cache"])
    return logits[:, 0, :], updated["cache"]

  def chunk_fn(token_ids: Array, start_positions: Array, cache: Any) -> tuple[Array, Any]:
    """fast_decoding.ChunkFn: token_ids [rows, K] at positions start_positions[r] + 0..K-1."""
    positions = start_positions[:, None] + jnp.arange(token_ids.shape[1], dtype=jnp.int32)
    logits, updated = model.apply(
        {"params": params, "cache": cache, "encoder_cache": encoder_cache}, None, row_inputs,
        token_ids, decoder_positions=positions, enable_dropout=False, decode=True,
        method=Transformer.decode, mutable=["cache"])
    return logits, updated["cache"]

  def hidden_step_fn(token_ids: Array, cache: Any, step: Array) -> tuple[Array, Any]:
    """step_fn without the output layer: the final hidden state [rows, d] (its input)."""
    with nn.intercept_methods(_output_layer_input):
      return step_fn(token_ids, cache, step)

  def hidden_chunk_fn(token_ids: Array, start_positions: Array, cache: Any) -> tuple[Array, Any]:
    """chunk_fn without the output layer: the final hidden states [rows, K, d]."""
    with nn.intercept_methods(_output_layer_input):
      return chunk_fn(token_ids, start_positions, cache)

  step_fn.chunk_fn = chunk_fn  # the same decoder, a chunk of tokens per call
  step_fn.hidden_step_fn = hidden_step_fn
  step_fn.hidden_chunk_fn = hidden_chunk_fn
  return step_fn, caches["cache"], row_inputs


def _output_layer_input(next_fun, args, kwargs, context):
  """flax method interceptor: the output layer (logits_dense, or the tied embedding's
  `attend`) returns its input instead of the logits, so the decoder yields its final hidden
  state (the model then divides a tied layer's output by sqrt(d): output_kernel's logits of
  that state are the same product)."""
  module = context.module
  if ((context.method_name == "__call__" and module.name == "logits_dense")
      or (context.method_name == "attend" and isinstance(module, Embed))):
    return args[0].astype(jnp.float32)
  return next_fun(*args, **kwargs)


def output_kernel(config: T5Config, params: Any) -> Array:
  """float32 [d, vocab]: the output layer, so that logits = hidden_step_fn's state @ it."""
  if config.logits_via_embedding:
    return jnp.asarray(params["token_embedder"]["embedding"], jnp.float32).T
  return jnp.asarray(params["decoder"]["logits_dense"]["kernel"], jnp.float32)


# The first self-attention cache length of a search; it doubles while rows are still going.
# 64 holds most NER targets of the small datasets; shorter searches use a single length.
FIRST_CACHE_LENGTH = 64
# The shortest padded input length of a decoding batch; buckets double up to the maximum.
FIRST_INPUT_BUCKET = 32


def doubling_lengths(maximum: int, first: int) -> tuple[int, ...]:
  """(first, 2 * first, ...) below `maximum`, then `maximum` itself: few distinct shapes (each
  compiles once) that never pad more than twice over."""
  lengths = []
  length = first
  while length < maximum:
    lengths.append(length)
    length *= 2
  return tuple(lengths) + (maximum,)


def cache_lengths(max_decode_length: int) -> tuple[int, ...]:
  """(64, 128, ..., max_decode_length): the growing self-attention cache of a search."""
  return doubling_lengths(max_decode_length, FIRST_CACHE_LENGTH)


def input_buckets(max_input_length: int) -> tuple[int, ...]:
  """Padded input lengths of decoding batches: 32, 48, 64, 96, 128, 192, ... and the maximum.

  Half steps between the doublings: the encoder and every decoder step's cross-attention
  cost grow with the padded input length, and with doublings alone a batch pads up to 2x
  (CLUENER's prompted sentences, up to ~85 tokens, went to 128); at most 1.5x now, for a few
  more compiled shapes."""
  lengths = []
  for length in doubling_lengths(max_input_length, FIRST_INPUT_BUCKET)[:-1]:
    lengths += [length] + ([length * 3 // 2] if length * 3 // 2 < max_input_length else [])
  return tuple(lengths) + (max_input_length,)


def trim_to_bucket(encoder_input_tokens: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
  """Cuts a 0-padded [batch, len] id batch to the shortest bucket that holds its longest row.
  The model masks padding, so the decoded output does not change; the work does."""
  longest = int(np.max(np.nonzero(encoder_input_tokens.any(axis=0))[0], initial=0)) + 1
  return encoder_input_tokens[:, :next(b for b in buckets if b >= longest)]


def grow_cache(cache: Any, length: int) -> Any:
  """Pads the self-attention caches ([rows, heads, len, kv]) with zeros to `length` positions;
  the scalar cache index is kept.  Positions past the index are masked, so zeros are inert."""

  def grow(x):
    if jnp.ndim(x) == 0:
      return x
    return jnp.pad(x, [(0, 0), (0, 0), (0, length - x.shape[2]), (0, 0)])

  return jax.tree_util.tree_map(grow, cache)


# decode_batch's `search` (constrained decoding; without a constraint all three are the plain
# step-by-step search):
#   "allowed" (the default): step by step over the tokens the constraint can allow
#     (decoding.CandidateTable: the input's ids and the grammar's 6 tokens) instead of the
#     vocabulary: the same outputs and scores as "stepwise" (to float rounding), a cheaper step
#     (BENCHMARKS.md 2b).
#   "stepwise": step by step over the whole vocabulary (the reference the others are tested
#     against).
#   "fast": fast_decoding (forced tokens and drafted guesses fed as chunks: the same results in
#     0.15-0.35x the decoder calls); on the CPU-sized `mini` model the decoder is compute-bound
#     (a chunk of K tokens costs about K single steps), so it measured no faster than "allowed"
#     at greedy and 2x slower at beam 4 (BENCHMARKS.md 2c): "allowed" stays the default.
SEARCHES = ("allowed", "stepwise", "fast")
DEFAULT_SEARCH = "allowed"


def _decode(model: Transformer, params: Any, encoder_input_tokens: Array,
            constraint: Optional[decoding.LogitsConstraint], *, beam_size: int,
            max_decode_length: int, alpha: float, eos_id: int,
            stopping: str, search: str = DEFAULT_SEARCH,
            chunk_length: int = fast_decoding.DEFAULT_CHUNK_LENGTH) -> decoding.DecodeOutput:
  lengths = cache_lengths(max_decode_length)
  fast = search == "fast" and constraint is not None
  allowed_only = search == "allowed" and hasattr(constraint, "candidate_table")
  # A chunk written at the last position of a cache length L reaches L + chunk - 1.
  slack = chunk_length if fast else 0
  step_fn, cache, row_inputs = init_decoding(model, params, encoder_input_tokens,
                                             beam_size=beam_size,
                                             max_decode_length=lengths[0] + slack)
  start = model.config.decoder_start_token_id
  common = dict(max_decode_length=max_decode_length, start_token_id=start, eos_id=eos_id,
                alpha=alpha, constraint=constraint, cache_lengths=lengths,
                grow_cache=grow_cache)
  if fast:
    fast_args = dict(common, chunk_length=chunk_length)
    if beam_size == 1:
      # Chunks without the output layer: candidates scored in the loop, the model's
      # per-token log-probs after it (fast_decoding.ChunkOutputLayer).
      output_layer = fast_decoding.ChunkOutputLayer(step_fn.hidden_chunk_fn,
                                                    output_kernel(model.config, params))
      return fast_decoding.fast_greedy_decode(step_fn.chunk_fn, cache, row_inputs,
                                              output_layer=output_layer, **fast_args)
    return fast_decoding.fast_beam_search(step_fn.chunk_fn, cache, row_inputs,
                                          beam_size=beam_size, stopping=stopping, **fast_args)
  if beam_size == 1:
    # Greedy keeps each step's hidden state and applies the output layer after the loop
    # (decoding.OutputLayer); beam search would have to re-order those states with the beams.
    output_layer = (decoding.OutputLayer(step_fn.hidden_step_fn,
                                         output_kernel(model.config, params))
                    if allowed_only else None)
    return decoding.greedy_decode(step_fn, cache, row_inputs, score_candidates=allowed_only,
                                  output_layer=output_layer, **common)
  return decoding.beam_search(step_fn, cache, row_inputs, beam_size=beam_size,
                              stopping=stopping, score_candidates=allowed_only, **common)


@functools.lru_cache(maxsize=None)
def _shared_transformer(config: T5Config) -> Transformer:
  return Transformer(config)


def decode_batch(model: Transformer, params: Any, encoder_input_tokens: Array,
                 constraint: Optional[decoding.LogitsConstraint] = None, *, beam_size: int = 1,
                 max_decode_length: int, alpha: float = 0.6, eos_id: int = 1,
                 stopping: str = "all", search: str = DEFAULT_SEARCH,
                 chunk_length: int = fast_decoding.DEFAULT_CHUNK_LENGTH
                 ) -> decoding.DecodeOutput:
  """Jitted decoding returning tokens, summed log-probs and length-normalised scores.

  Shapes: tokens and token_log_probs [batch, k, max_decode_length], log_probs and scores
  [batch, k], k = beam_size (greedy when beam_size == 1), best first.  `constraint` must be a pytree (its arrays are
  traced).  The compiled program is cached per model configuration (flax modules hash by
  identity, so plain `Transformer`s are replaced by one shared instance per `T5Config`).
  `stopping`: decoding.beam_search's rule ("all", "best", "early"); greedy ignores it.
  `search`: how a constrained search runs (SEARCHES): "allowed" (default; step by step,
  scoring only the tokens the constraint can allow), "stepwise" (step by step over the whole
  vocabulary) or "fast" (chunks of `chunk_length` tokens per decoder call:
  punified_jax.fast_decoding).  All give the same outputs.  Without a constraint all are the
  step-by-step search.
  """
  _validate(encoder_input_tokens, beam_size, max_decode_length, eos_id, model)
  if search not in SEARCHES:
    raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
  if not isinstance(chunk_length, numbers.Integral) or chunk_length < 2:
    raise ValueError(f"chunk_length must be an int >= 2, got {chunk_length!r}")
  if type(model) is Transformer:
    model = _shared_transformer(model.config)
  # Plain python scalars as static arguments (numpy ints hash differently and would recompile).
  return _decode_batch_jit(model, params, encoder_input_tokens, constraint,
                           beam_size=int(beam_size), max_decode_length=int(max_decode_length),
                           alpha=float(alpha), eos_id=int(eos_id),
                           stopping=str(stopping), search=str(search),
                           chunk_length=int(chunk_length))


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_decode_length", "alpha",
                                             "eos_id", "stopping", "search", "chunk_length"))
def _decode_batch_jit(model: Transformer, params: Any, encoder_input_tokens: Array,
                      constraint: Optional[decoding.LogitsConstraint], *, beam_size: int,
                      max_decode_length: int, alpha: float, eos_id: int,
                      stopping: str, search: str, chunk_length: int) -> decoding.DecodeOutput:
  output = _decode(model, params, encoder_input_tokens, constraint, beam_size=beam_size,
                   max_decode_length=max_decode_length, alpha=alpha, eos_id=eos_id,
                   stopping=stopping, search=search, chunk_length=chunk_length)
  if beam_size == 1:
    output = decoding.DecodeOutput(output.tokens[:, None, :], output.log_probs[:, None],
                                   output.scores[:, None], output.token_log_probs[:, None, :],
                                   output.decoder_calls)
  return output


def predict_batch(model: Transformer, params: Any, encoder_input_tokens: Array, *,
                  beam_size: int = 1, max_decode_length: int, alpha: float = 0.6,
                  constraint: Optional[decoding.LogitsConstraint] = None,
                  eos_id: int = 1, stopping: str = "all",
                  search: str = DEFAULT_SEARCH) -> tuple[Array, Array]:
  """Decode a batch: (tokens int32 [batch, k, len], scores float32 [batch, k]), best first.

  encoder_input_tokens: int [batch, input_len], 0-padded.  k = beam_size.  Scores are
  log_prob / ((5 + length) / 6) ** alpha (length includes EOS), greedy as well as beam, so
  they are comparable.  Tokens after EOS are 0.  Empty beam slots have score -inf.
  """
  output = decode_batch(model, params, encoder_input_tokens, constraint, beam_size=beam_size,
                        max_decode_length=max_decode_length, alpha=alpha, eos_id=eos_id,
                        stopping=stopping, search=search)
  return output.tokens, output.scores


def _validate(encoder_input_tokens: Array, beam_size: int, max_decode_length: int, eos_id: int,
              model: Transformer) -> None:
  if encoder_input_tokens.ndim != 2:
    raise ValueError(f"encoder_input_tokens must be [batch, input_len], got shape "
                     f"{encoder_input_tokens.shape}")
  if not jnp.issubdtype(encoder_input_tokens.dtype, jnp.integer):
    raise TypeError(f"encoder_input_tokens must be integer ids, got "
                    f"{encoder_input_tokens.dtype}")
  for name, value in (("beam_size", beam_size), ("max_decode_length", max_decode_length)):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if not 0 <= eos_id < model.config.vocab_size:
    raise ValueError(f"eos_id {eos_id} is not in [0, vocab_size={model.config.vocab_size})")
