"""Glue between the T5 model and the decoding loops: params + encoder ids -> decoded ids.

`predict_batch` is one jitted function (encoder pass, cache set-up, search loop) used by the
trainer's evaluation and by the extractor.  It compiles once per (model config, input shape,
beam_size, max_decode_length, alpha, eos_id, constraint type) and is reused afterwards.

Beam search's self-attention cache is beam-grouped (reorder_beam_cache, group_beam_cache):
the beams' keys and values stay where their rows wrote them and only an ancestry table is
re-ordered, instead of copying the whole cache at every step (gather_beams: the cost that
grew with the cache length and made a long request's step 2x a short one's at 1 example, and
most of a beam-4 step at 32 examples; BENCHMARKS.md 2f).  A single example switches to it at
GROUP_SINGLE_EXAMPLE_BEAMS_FROM positions; `decode_batch(beam_grouped_cache=False)` keeps
the old eager copy (benchmarks/step_cost.py's A/B).
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
from punified_jax import output_log_probs
from punified_jax import searches
from punified_jax.model import Embed, T5Config, Transformer

Array = jax.Array


def init_decoding(model: Transformer, params: Any, encoder_input_tokens: Array, *,
                  beam_size: int, max_decode_length: int,
                  beam_grouped_cache: bool = False) -> tuple[decoding.StepFn, Any, Array]:
  """Encode once and set up incremental decoding for batch * beam_size rows.

  beam_grouped_cache (beam search, one token per call): a self-attention cache grouped per
  example that the search never copies; it must then re-order with `reorder_beam_cache`
  instead of decoding.gather_beams (see reorder_beam_cache).

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
      beam_groups=beam_size if beam_grouped_cache else None,
      method=Transformer.decode, mutable=["cache", "encoder_cache"])
  # The encoder cache is constant for the whole search (never reordered by beams), so it is
  # closed over instead of being carried through the loop.
  step_fn = _decoder_functions(model, params, caches["encoder_cache"], row_inputs)
  return step_fn, caches["cache"], row_inputs


def _decoder_functions(model: Transformer, params: Any, encoder_cache: Any,
                       row_inputs: Array) -> decoding.StepFn:
  """The step function of init_decoding for the rows of `encoder_cache` / `row_inputs`, with
  its chunk_fn, hidden_step_fn and hidden_chunk_fn, and `select_rows(index)` on the step
  functions: the same functions for a subset of the rows (decoding.greedy_decode's
  retire_rows)."""

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

  def select_rows(index: Array) -> decoding.StepFn:
    rows = row_inputs.shape[0]
    return _decoder_functions(model, params, decoding.take_rows(encoder_cache, index, rows),
                              row_inputs[index])

  step_fn.chunk_fn = chunk_fn  # the same decoder, a chunk of tokens per call
  step_fn.hidden_step_fn = hidden_step_fn
  step_fn.hidden_chunk_fn = hidden_chunk_fn
  step_fn.select_rows = select_rows
  hidden_step_fn.select_rows = lambda index: select_rows(index).hidden_step_fn
  return step_fn


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


# The first self-attention cache length of a search; it grows while rows are still going.
# 64 holds most NER targets of the small datasets; shorter searches use a single length.
FIRST_CACHE_LENGTH = 64
# The shortest padded input length of a decoding batch; buckets double up to the maximum.
FIRST_INPUT_BUCKET = 32
# How a search's cache lengths grow (cache_lengths): "double" (64, 128, 256, ...: the default),
# "half" (64, 96, 128, 192, 256, ...: half steps between the doublings) or "whole" (one cache
# of max_decode_length: the reference the growing ones are tested against).  A 32-row step is
# bound by reading its caches (BENCHMARKS.md 2h), so with half steps a batch whose longest
# output ends at 140 runs its last steps on 192 positions instead of 256; but the cache-bound
# part of a step is small, and on 64 dev sentences of each of CLUENER, CCKS2021 and Resume
# (benchmarks/cache_steps.py, BENCHMARKS.md 2i) "half" measured 0.95-1.11x the CPU time of
# "double" (within this shared machine's noise) while each program took 1.2-1.5x as long to
# compile (two more loop bodies): "double" stays the default.
CACHE_STEPS = ("double", "half", "whole")
DEFAULT_CACHE_STEPS = "double"
# decode_batch's retire_rows default (greedy; decoding.greedy_decode): on.  32-row batches of
# 64 dev sentences, constrained greedy (benchmarks/cache_steps.py --steps double,double+retire,
# BENCHMARKS.md 2p): 1.48x / 1.03x / 1.65x wall on CLUENER / CCKS2021 / Resume, where a batch's
# rows end far apart; about twice the compile time of a greedy program (two more loop bodies).
# The Extractor turns it off (inference.py: its batches end together).
DEFAULT_RETIRE_ROWS = True


def doubling_lengths(maximum: int, first: int) -> tuple[int, ...]:
  """(first, 2 * first, ...) below `maximum`, then `maximum` itself: few distinct shapes (each
  compiles once) that never pad more than twice over."""
  lengths = []
  length = first
  while length < maximum:
    lengths.append(length)
    length *= 2
  return tuple(lengths) + (maximum,)


def half_step_lengths(maximum: int, first: int) -> tuple[int, ...]:
  """(first, 1.5 * first, 2 * first, 3 * first, 4 * first, ...) below `maximum`, then
  `maximum`: the doublings with a half step between each two, never padding more than 1.5x."""
  lengths = []
  for length in doubling_lengths(maximum, first)[:-1]:
    lengths += [length] + ([length * 3 // 2] if length * 3 // 2 < maximum else [])
  return tuple(lengths) + (maximum,)


def cache_lengths(max_decode_length: int, steps: Optional[str] = None) -> tuple[int, ...]:
  """The growing self-attention cache of a search, up to max_decode_length: (64, 128, ...) with
  steps "double", (64, 96, 128, 192, ...) with "half", (max_decode_length,) with "whole";
  default DEFAULT_CACHE_STEPS (read at call time)."""
  steps = DEFAULT_CACHE_STEPS if steps is None else steps
  if steps not in CACHE_STEPS:
    raise ValueError(f"cache steps must be one of {CACHE_STEPS}, got {steps!r}")
  if steps == "whole":
    return (max_decode_length,)
  grow = half_step_lengths if steps == "half" else doubling_lengths
  return grow(max_decode_length, FIRST_CACHE_LENGTH)


def input_buckets(max_input_length: int) -> tuple[int, ...]:
  """Padded input lengths of decoding batches: 32, 48, 64, 96, 128, 192, ... and the maximum.

  Half steps between the doublings: the encoder and every decoder step's cross-attention
  cost grow with the padded input length, and with doublings alone a batch pads up to 2x
  (CLUENER's prompted sentences, up to ~85 tokens, went to 128); at most 1.5x now, for a few
  more compiled shapes."""
  return half_step_lengths(max_input_length, FIRST_INPUT_BUCKET)


def trim_to_bucket(encoder_input_tokens: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
  """Cuts a 0-padded [batch, len] id batch to the shortest bucket that holds its longest row.
  The model masks padding, so the decoded output does not change; the work does."""
  longest = int(np.max(np.nonzero(encoder_input_tokens.any(axis=0))[0], initial=0)) + 1
  return encoder_input_tokens[:, :next(b for b in buckets if b >= longest)]


def grow_cache(cache: Any, length: int) -> Any:
  """Pads the self-attention caches ([rows, heads, len, kv], or beam-grouped [examples, heads,
  beams * len, kv] with keys [examples, heads, kv, beams * len]: each slot's positions) and a beam_source table ([rows, len, beams]) with
  zeros (False) to `length` positions; the scalar cache index is kept.  Positions past the
  index are masked, so zeros are inert."""
  beams = max([x.shape[-1] for path, x in jax.tree_util.tree_leaves_with_path(cache)
               if _leaf_name(path) == "beam_source"] or [1])

  def grow(path, x):
    if jnp.ndim(x) == 0:
      return x
    if _leaf_name(path) == "beam_source":
      return jnp.pad(x, [(0, 0), (0, length - x.shape[1]), (0, 0)])
    # Positions run along axis 2, or axis 3 for a beam-grouped cache's transposed keys.
    axis = 3 if beams > 1 and _leaf_name(path) == "cached_key" else 2
    shape = x.shape
    x = x.reshape(shape[:axis] + (beams, shape[axis] // beams) + shape[axis + 1:])
    x = jnp.pad(x, [(0, length - x.shape[i]) if i == axis + 1 else (0, 0)
                    for i in range(x.ndim)])
    return x.reshape(shape[:axis] + (beams * length,) + shape[axis + 1:])

  return jax.tree_util.tree_map_with_path(grow, cache)


def _leaf_name(path) -> str:
  return str(getattr(path[-1], "key", path[-1]))


def is_beam_grouped(cache: Any) -> bool:
  """Whether a decoding cache is beam-grouped (it has the "beam_source" ancestry table)."""
  return "beam_source" in cache["decoder"]


def reorder_beam_cache(cache: Any, parent: Array, batch: int, beam_size: int) -> Any:
  """decoding.beam_search's reorder_cache.  A beam-grouped cache (init_decoding with
  beam_grouped_cache=True, or group_beam_cache): only the ancestry table "beam_source"
  ([rows, len, beams] bools) follows the beams; the keys and values stay where their rows
  wrote them, and attention finds a hypothesis's own through the table
  (attention._beam_group_attention): the eager re-ordering's result without copying the
  cache every step.  Any other cache: decoding.gather_beams (every row copied)."""
  if not is_beam_grouped(cache):
    return decoding.gather_beams(cache, parent, batch, beam_size)

  def reorder(path, x):
    if _leaf_name(path) != "beam_source":
      return x
    return decoding.gather_beams(x, parent, batch, beam_size)

  return jax.tree_util.tree_map_with_path(reorder, cache)


def group_beam_cache(cache: Any, beam_size: int) -> Any:
  """An eagerly re-ordered cache (row r holds hypothesis r's whole history) as the same cache
  beam-grouped (attention._beam_group_attention's layout): every hypothesis's history sits in
  its own slot, so the ancestry table starts as "own slot" at every position written."""
  index = cache["decoder"]["cache_index"]

  def convert(path, x):
    name = _leaf_name(path)
    if name not in ("cached_key", "cached_value"):
      return x
    rows, heads, length, kv = x.shape
    x = x.reshape(rows // beam_size, beam_size, heads, length, kv)
    if name == "cached_key":  # transposed: [examples, heads, kv, beams * len]
      return x.transpose(0, 2, 4, 1, 3).reshape(rows // beam_size, heads, kv, -1)
    return x.transpose(0, 2, 1, 3, 4).reshape(rows // beam_size, heads, -1, kv)

  rows, _, length, _ = cache["decoder"]["layers_0"]["self_attention"]["cached_key"].shape
  own_slot = jnp.arange(beam_size)[None, :] == (jnp.arange(rows) % beam_size)[:, None]
  written = jnp.arange(length) < index
  grouped = dict(jax.tree_util.tree_map_with_path(convert, cache))
  grouped["decoder"] = dict(grouped["decoder"],
                            beam_source=written[None, :, None] & own_slot[:, None, :])
  return grouped


# Beam search of a single example re-orders its cache eagerly (decoding.gather_beams) while the
# cache is shorter than this, and beam-grouped from there on (group_beam_cache at the growing
# cache's boundary): at 1 example (4 rows) the copy is cheaper than the grouped attention at
# 64 positions and dearer at 256 (benchmarks/step_cost.py, BENCHMARKS.md 2f).  Batches of
# several examples are grouped from the start (2x cheaper steps at 32 examples).
GROUP_SINGLE_EXAMPLE_BEAMS_FROM = 128


# decode_batch's `search` (constrained decoding): the names, the default and what each does are
# in punified_jax/searches.py (jax-free, for the command-line parsers); re-exported here.
SEARCHES = searches.SEARCHES
DEFAULT_SEARCH = searches.DEFAULT_SEARCH


def _decode(model: Transformer, params: Any, encoder_input_tokens: Array,
            constraint: Optional[decoding.LogitsConstraint], *, beam_size: int,
            max_decode_length: int, alpha: float, eos_id: int,
            stopping: str, search: str = DEFAULT_SEARCH,
            chunk_length: int = fast_decoding.DEFAULT_CHUNK_LENGTH,
            beam_grouped_cache: bool = True,
            beam_output_layer_in_loop: bool = False,
            log_prob_beams: Optional[int] = None,
            cache_steps: Optional[str] = None,
            retire_rows: bool = False,
            token_log_probs: bool = True) -> decoding.DecodeOutput:
  lengths = cache_lengths(max_decode_length, cache_steps)
  fast = search == "fast" and constraint is not None
  allowed_only = search == "allowed" and hasattr(constraint, "candidate_table")
  # A chunk written at the last position of a cache length L reaches L + chunk - 1.
  slack = chunk_length if fast else 0
  # Step-by-step beam search keeps its cache grouped by example, never copied
  # (reorder_beam_cache), from the first cache length or GROUP_SINGLE_EXAMPLE_BEAMS_FROM on.
  grouped = beam_grouped_cache and beam_size > 1 and not fast
  group_from = (lengths[0] if encoder_input_tokens.shape[0] > 1
                else GROUP_SINGLE_EXAMPLE_BEAMS_FROM)
  step_fn, cache, row_inputs = init_decoding(model, params, encoder_input_tokens,
                                             beam_size=beam_size,
                                             max_decode_length=lengths[0] + slack,
                                             beam_grouped_cache=grouped and
                                             lengths[0] >= group_from)
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
                                                    output_kernel(model.config, params),
                                                    token_log_probs)
      return fast_decoding.fast_greedy_decode(step_fn.chunk_fn, cache, row_inputs,
                                              output_layer=output_layer, **fast_args)
    # Beam chunks without the output layer too (fast_beam_search's output_layer).
    output_layer = fast_decoding.ChunkOutputLayer(step_fn.hidden_chunk_fn,
                                                  output_kernel(model.config, params))
    return fast_decoding.fast_beam_search(
        step_fn.chunk_fn, cache, row_inputs, beam_size=beam_size, stopping=stopping,
        output_layer=output_layer, log_prob_beams=log_prob_beams, **fast_args)
  if beam_size == 1:
    # Greedy keeps each step's hidden state and applies the output layer after the loop
    # (decoding.OutputLayer); beam search would have to re-order those states with the beams.
    output_layer = (decoding.OutputLayer(step_fn.hidden_step_fn,
                                         output_kernel(model.config, params), token_log_probs)
                    if allowed_only else None)
    return decoding.greedy_decode(step_fn, cache, row_inputs, score_candidates=allowed_only,
                                  output_layer=output_layer, retire_rows=retire_rows,
                                  **common)
  if grouped:
    def grow_beam_cache(cache: Any, length: int) -> Any:
      if length >= group_from and not is_beam_grouped(cache):
        cache = group_beam_cache(cache, beam_size)
      return grow_cache(cache, length)
    common.update(grow_cache=grow_beam_cache)
  # Beam search over the allowed tokens leaves the output layer out of the loop too
  # (decoding.beam_search's output_layer), unless beam_output_layer_in_loop (the old way).
  output_layer = (decoding.OutputLayer(step_fn.hidden_step_fn,
                                       output_kernel(model.config, params))
                  if allowed_only and not beam_output_layer_in_loop else None)
  return decoding.beam_search(step_fn, cache, row_inputs, beam_size=beam_size,
                              stopping=stopping, score_candidates=allowed_only,
                              reorder_cache=reorder_beam_cache if grouped else None,
                              output_layer=output_layer, log_prob_beams=log_prob_beams,
                              **common)


@functools.lru_cache(maxsize=None)
def _shared_transformer(config: T5Config) -> Transformer:
  return Transformer(config)


def decode_batch(model: Transformer, params: Any, encoder_input_tokens: Array,
                 constraint: Optional[decoding.LogitsConstraint] = None, *, beam_size: int = 1,
                 max_decode_length: int, alpha: float = 0.6, eos_id: int = 1,
                 stopping: str = "all", search: str = DEFAULT_SEARCH,
                 chunk_length: int = fast_decoding.DEFAULT_CHUNK_LENGTH,
                 beam_grouped_cache: bool = True,
                 beam_output_layer_in_loop: bool = False,
                 log_prob_beams: Optional[int] = None,
                 cache_steps: Optional[str] = None,
                 retire_rows: Optional[bool] = None,
                 token_log_probs: bool = True) -> decoding.DecodeOutput:
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
  `beam_grouped_cache`: the step-by-step beam searches keep a cache grouped per example that
  is never copied (reorder_beam_cache); False re-orders it with decoding.gather_beams every
  step, the old way (same results; kept for benchmarks/step_cost.py's A/B and the tests).
  `beam_output_layer_in_loop`: True runs the output layer at every step of the "allowed" beam
  search (the old way) instead of after the loop (decoding.beam_search's output_layer).
  `log_prob_beams`: per-token log-probs of only the best `log_prob_beams` beams (the others'
  are NaN); None: all.  Keeping the best beam only (1) saves most of the work after a
  beam-4 loop (decoding.beam_search).
  `cache_steps`: how the self-attention cache grows (cache_lengths: "double", "half" or
  "whole"; default DEFAULT_CACHE_STEPS, read at call time): the same results, less or more
  work.
  `retire_rows` (greedy step by step): go on with half the batch once at most half of its
  rows are still going (decoding.greedy_decode); default DEFAULT_RETIRE_ROWS, read at call
  time.  The same results.
  `token_log_probs=False` (greedy over the allowed tokens, "allowed" or "fast"; ignored
  elsewhere): skip the model's per-token log-probs after the loop (zeros) and return the final
  hidden states instead (DecodeOutput.hidden), for a caller that needs a few tokens' log-probs.
  """
  _validate(encoder_input_tokens, beam_size, max_decode_length, eos_id, model)
  searches.check_search(search)
  if not isinstance(chunk_length, numbers.Integral) or chunk_length < 2:
    raise ValueError(f"chunk_length must be an int >= 2, got {chunk_length!r}")
  if log_prob_beams is not None and (isinstance(log_prob_beams, bool) or not isinstance(
      log_prob_beams, numbers.Integral) or log_prob_beams < 1):
    raise ValueError(f"log_prob_beams must be None or an int >= 1, got {log_prob_beams!r}")
  cache_steps = DEFAULT_CACHE_STEPS if cache_steps is None else cache_steps
  if cache_steps not in CACHE_STEPS:
    raise ValueError(f"cache_steps must be one of {CACHE_STEPS}, got {cache_steps!r}")
  if type(model) is Transformer:
    model = _shared_transformer(model.config)
  # Plain python scalars as static arguments (numpy ints hash differently and would recompile).
  return _decode_batch_jit(model, params, encoder_input_tokens, constraint,
                           beam_size=int(beam_size), max_decode_length=int(max_decode_length),
                           alpha=float(alpha), eos_id=int(eos_id),
                           stopping=str(stopping), search=str(search),
                           chunk_length=int(chunk_length),
                           beam_grouped_cache=bool(beam_grouped_cache),
                           beam_output_layer_in_loop=bool(beam_output_layer_in_loop),
                           log_prob_beams=(None if log_prob_beams is None
                                           else int(log_prob_beams)),
                           cache_steps=str(cache_steps),
                           retire_rows=bool(DEFAULT_RETIRE_ROWS if retire_rows is None
                                            else retire_rows),
                           token_log_probs=bool(token_log_probs))


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_decode_length", "alpha",
                                             "eos_id", "stopping", "search", "chunk_length",
                                             "beam_grouped_cache",
                                             "beam_output_layer_in_loop",
                                             "log_prob_beams", "cache_steps",
                                             "retire_rows", "token_log_probs"))
def _decode_batch_jit(model: Transformer, params: Any, encoder_input_tokens: Array,
                      constraint: Optional[decoding.LogitsConstraint], *, beam_size: int,
                      max_decode_length: int, alpha: float, eos_id: int,
                      stopping: str, search: str, chunk_length: int,
                      beam_grouped_cache: bool,
                      beam_output_layer_in_loop: bool,
                      log_prob_beams: Optional[int],
                      cache_steps: str, retire_rows: bool,
                      token_log_probs: bool) -> decoding.DecodeOutput:
  output = _decode(model, params, encoder_input_tokens, constraint, beam_size=beam_size,
                   max_decode_length=max_decode_length, alpha=alpha, eos_id=eos_id,
                   stopping=stopping, search=search, chunk_length=chunk_length,
                   beam_grouped_cache=beam_grouped_cache,
                   beam_output_layer_in_loop=beam_output_layer_in_loop,
                   log_prob_beams=log_prob_beams,
                   cache_steps=cache_steps, retire_rows=retire_rows,
                   token_log_probs=token_log_probs)
  if beam_size == 1:
    output = decoding.DecodeOutput(output.tokens[:, None, :], output.log_probs[:, None],
                                   output.scores[:, None], output.token_log_probs[:, None, :],
                                   output.decoder_calls, output.hidden)
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
