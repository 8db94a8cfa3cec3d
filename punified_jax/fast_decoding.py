"""Fast constrained greedy and beam search: no model step for a token the grammar decides.

Same results as the step-by-step searches of `decoding` (same output ids; scores, log-probs
and per-token log-probs equal to float rounding), with far fewer decoder calls.  Like
decoding's score_candidates search it works on the constraint's candidates
(decoding.CandidateTable: for NerCopyConstraint the input's ids and the grammar's 6 tokens)
instead of the vocabulary; only the model's normaliser (one logsumexp per position) still
reads every logit.

Chunks.  Each iteration feeds every row a CHUNK of `chunk_length` (K, static) tokens in ONE
decoder call (`ChunkFn`): the last token the search chose, then a DRAFT of what comes next,
written into the KV cache at the row's own positions.  The call returns the logits after every
chunk token, so the search can take up to K steps from one call.  The draft, built from the
constraint alone (no model), is per position:
  * the forced token when the constraint allows exactly one ("((", the rest of a type name,
    ":", ")" after NULL, EOS after "))");
  * else the constraint's guess where it offers one (`draft_guess`; else `copy_continuation`)
    and the guess is allowed: for NerCopyConstraint the next input character inside a copy,
    the next prompt type after "(", NULL after ":", "," (or ")" after the last prompt type)
    after an item's ")": what the model was trained to write, types in prompt order, most of
    them NULL, so a whole run of "(TYPE:NULL)," items is one chunk;
  * else the draft ends (the row's `count` of valid chunk tokens).
After the call the search replays its ordinary steps along the chunk: a step whose choice is the
next draft token lets the next step use the next position's logits; the first step that chooses
something else (a guess the model rejects, or the end of the draft) is still taken, and its
token opens the next chunk.  Positions written past it hold stale keys/values; the next chunk
overwrites them before any query can see them (a query at position p sees positions <= p).

Scoring a forced token.  Step by step, a forced token is chosen from a constrained softmax
with a single allowed token: its search log-probability is exactly 0, and its
`token_log_probs` entry is the model's own log-softmax at that position.  Here every step,
forced or not, computes the same two quantities from the same logits (read off the chunk's
logits at that position) with the same operations as decoding._candidate_log_probs, so the
search's scores and the reported
per-token model log-probs are those of the step-by-step search, up to the rounding of a
different attention width (|diff| ~1e-6).

Greedy: every row advances on its own (its own decoder positions, its own number of steps per
call).  Beam: the hypotheses of one example advance together (same length), examples on their
own.  An example's steps along a chunk continue while every alive hypothesis after the step is
the draft continuation of the chunk row it came from; the step at which some survivor leaves
the drafts (a new branch) is the last one from this call.  The cache is re-ordered by beam
once per call (composed parent map), not once per token.

Cost.  A call computes K positions for every row, and rows that stopped early in the chunk
still pay for them.  On the CPU `mini` model (d 128) the decoder is compute-bound: a chunk of
K positions costs about K single steps (matrix products run at the same rate whatever their
row count; BENCHMARKS.md 2c), so the saving is only the per-call overhead, while the loop
computes at least (longest output) x rows positions either way.  Both searches run their
chunks without the output layer (ChunkOutputLayer: candidates only in the loop, the
vocabulary-wide normaliser after it on the tokens taken), as the "allowed" searches do; beam
search keeps each chunk row's hidden states where the row computed them and files, with each
token, the slot of the row that scored it (decoding.beam_search's output_layer does the same
step by step), which made its decode_batch calls 9-14% faster on CCKS2021.  Measured:
0.15-0.20 decoder calls per token at greedy (CLUENER, CCKS2021, Resume), 0.34 at beam 4, and
0.95-1.5x the CPU time of the step-by-step search over the allowed tokens at greedy, 1.3-1.8x
at beam 4 (BENCHMARKS.md 2s): each token still costs a beam step (top-k, pools) and each call
a cache re-order, so generate.decode_batch uses it only when asked (search="fast").  It pays
off where one call costs about the same for 1 or K tokens per row (models bound by reading the
weights).

Requirements: the constraint offers candidate_table / step_candidates (decoding.CandidateTable;
`NerCopyConstraint` and `AllowedTokensConstraint` do), and its allowed set does not depend on
the logits (the draft asks it without any).  The cache of a `ChunkFn` needs `chunk_length` positions of slack past the longest output
(`generate` allocates them).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from punified_jax import decoding
from punified_jax import output_log_probs

Array = jax.Array
PyTree = Any
# chunk_fn(tokens int32 [rows, K], start_positions int32 [rows], cache) ->
#   (logits float [rows, K, vocab], cache): row r's tokens go to decoder positions
#   start_positions[r] + 0..K-1; logits[:, j] score the token after tokens[:, j].
ChunkFn = Callable[[Array, Array, PyTree], tuple[Array, PyTree]]

DEFAULT_CHUNK_LENGTH = 8


class ChunkOutputLayer(NamedTuple):
  """A ChunkFn split before its output layer (decoding.OutputLayer for chunks).

  hidden_chunk_fn: like a ChunkFn, but returns the final hidden states [rows, K, d].
  kernel: float32 [d, vocab].  With it the fast greedy search scores each chunk position's C
  candidates only (C dot products instead of the vocabulary) and computes the model's
  per-token log-probs after the loop (output_log_probs.model_token_log_probs), for the positions
  it took only: the output layer, the largest cost of a chunk, is not paid for drafted
  positions that are thrown away.  token_log_probs=False: not even those (as
  decoding.OutputLayer's).
  """
  hidden_chunk_fn: Callable[[Array, Array, PyTree], tuple[Array, PyTree]]
  kernel: Array
  token_log_probs: bool = True


class _Draft(NamedTuple):
  tokens: Array   # int32 [rows, K]: the chunk to feed
  count: Array    # int32 [rows]: valid tokens at its start (>= 1)
  states: PyTree  # constraint state after consuming tokens[:, :j + 1], leaves [rows, K, ...]
  allowed: Array  # bool [rows, K, C]: the candidates allowed after tokens[:, :j + 1]


def _draft(constraint: decoding.LogitsConstraint, state: PyTree, first_token: Array,
           first_step: Array, *, chunk_length: int, table: decoding.CandidateTable,
           eos_id: int) -> _Draft:
  """Drafts a chunk starting with `first_token` [rows], from the constraint `state` before it.

  first_step: int32 scalar passed to the constraint with the first token (0 when it is the
  decoder start token, which the constraint does not consume).  The loop ends as soon as no
  row's draft goes on: entries at positions >= count are left as zeros (never read).
  """
  rows = first_token.shape[0]
  candidates = table.ids.shape[1]
  # The constraint's guess where it leaves a choice (NerCopyConstraint.draft_guess), else
  # its copy continuation only, else no guess.
  continuation = (getattr(constraint, "draft_guess", None)
                  or getattr(constraint, "copy_continuation", None))
  put = lambda buffer, value, j: jax.lax.dynamic_update_index_in_dim(buffer, value, j, axis=1)

  def body(carry):
    j, token, state, going, draft = carry
    allowed, state = constraint.step_candidates(
        state, token, jnp.where(j == 0, first_step, 1).astype(jnp.int32), table)
    forced = jnp.sum(allowed, axis=1, dtype=jnp.int32) == 1
    next_token = jnp.take_along_axis(table.ids, jnp.argmax(allowed, axis=1)[:, None],
                                     axis=1)[:, 0]
    known = forced
    if continuation is not None:
      guess, has_guess = continuation(state)
      guess_allowed = jnp.any(allowed & (table.ids == guess[:, None]), axis=1)
      next_token = jnp.where(forced, next_token, guess)
      known = forced | (has_guess & guess_allowed)
    going = going & known & (token != eos_id) & (j + 1 < chunk_length)
    next_token = jnp.where(going, next_token, 0)
    draft = _Draft(
        put(draft.tokens, next_token, j + 1),
        draft.count + going.astype(jnp.int32),
        jax.tree_util.tree_map(lambda b, x: put(b, x, j), draft.states, state),
        put(draft.allowed, allowed, j))
    return j + 1, next_token, state, going, draft

  empty = _Draft(
      # One spare column: the last step writes its (unused) next token there.
      jnp.zeros((rows, chunk_length + 1), jnp.int32).at[:, 0].set(first_token),
      jnp.ones((rows,), jnp.int32),
      jax.tree_util.tree_map(lambda x: jnp.zeros((rows, chunk_length) + x.shape[1:], x.dtype),
                             state),
      jnp.zeros((rows, chunk_length, candidates), bool))
  carry = (jnp.array(0, jnp.int32), first_token.astype(jnp.int32), state,
           jnp.ones((rows,), bool), empty)
  draft = jax.lax.while_loop(lambda c: (c[0] == 0) | jnp.any(c[3]), body, carry)[-1]
  return draft._replace(tokens=draft.tokens[:, :chunk_length])


def _state_at(states: PyTree, offset: Array) -> PyTree:
  """states leaves [rows, K, ...] -> [rows, ...] at offset [rows]."""
  def take(x):
    index = offset.reshape((-1, 1) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)[:, 0]
  return jax.tree_util.tree_map(take, states)


def _search_log_probs(logits: Array, allowed: Array,
                      table: decoding.CandidateTable) -> tuple[Array, Array]:
  """(search log-probs with -inf where forbidden, model log-probs), float32 [rows, K, C] at
  the candidates: exactly the operations of decoding._candidate_log_probs (the step-by-step
  search over the allowed tokens) at every chunk position."""
  logits = logits.astype(jnp.float32)
  normaliser = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  ids = jnp.broadcast_to(table.ids[:, None, :], allowed.shape)
  candidate_logits = jnp.take_along_axis(logits, ids, axis=-1)
  return (decoding.masked_candidate_log_probs(candidate_logits, allowed),
          candidate_logits - normaliser)


def _write_chunk(buffer: Array, values: Array, going: Array, start: Array) -> Array:
  """buffer [rows, len + K, ...]: row r's positions start[r]..start[r]+K-1 take values [rows,
  K, ...] where `going` (broadcast against values), keep their own elsewhere."""
  length = values.shape[1]
  old = jax.vmap(lambda x, at: jax.lax.dynamic_slice_in_dim(x, at, length))(buffer, start)
  return jax.vmap(lambda x, new, at: jax.lax.dynamic_update_slice_in_dim(x, new, at, axis=0))(
      buffer, jnp.where(going, values, old), start)


def _segments(body: Callable[[Any], Any], state: Any, *, max_decode_length: int,
              cache_lengths: Optional[tuple[int, ...]], grow_cache, chunk_length: int,
              finished: Callable[[Any], Array], position: Callable[[Any], Array]) -> Any:
  """Like decoding._run_segments, for per-row positions: the loop of cache length L runs while
  some row is going and every going row's chunk starts before L (its chunk writes up to
  L + K - 1: the caches are L + K long)."""
  lengths = decoding.checked_cache_lengths(cache_lengths, max_decode_length, grow_cache)

  def going(s, end):
    still = ~finished(s)
    return jnp.any(still) & (jnp.max(jnp.where(still, position(s), 0)) < end)

  for index, end in enumerate(lengths):
    if index:
      state = state._replace(cache=grow_cache(state.cache, end + chunk_length))
    state = jax.lax.while_loop(lambda s, end=end: going(s, end), body, state)
  return state


def _check(constraint, chunk_length: int) -> None:
  if constraint is None:
    raise ValueError("the fast search needs a constraint (nothing is forced without one); "
                     "use decoding.greedy_decode / beam_search")
  decoding.check_candidate_scoring(True, constraint)
  if not isinstance(chunk_length, int) or chunk_length < 2:
    raise ValueError(f"chunk_length must be an int >= 2, got {chunk_length!r}")


class _GreedyState(NamedTuple):
  tokens: Array           # int32 [rows, len + K]
  hidden: Optional[Array]  # float32 [rows, len + K + block, d] with a ChunkOutputLayer
  token_log_probs: Array  # float32 [rows, len + K]
  length: Array           # int32 [rows]: tokens produced (= decoder position of draft[:, 0])
  done: Array             # bool [rows]: produced EOS
  log_prob: Array         # float32 [rows]
  calls: Array            # int32 [rows]
  draft: _Draft
  cache: PyTree


def fast_greedy_decode(chunk_fn: ChunkFn, cache: PyTree, encoder_input_tokens: Array, *,
                       constraint: decoding.LogitsConstraint,
                       max_decode_length: int, start_token_id: int = 0, eos_id: int = 1,
                       alpha: float = 0.6, chunk_length: int = DEFAULT_CHUNK_LENGTH,
                       cache_lengths: Optional[tuple[int, ...]] = None,
                       grow_cache=None,
                       output_layer: Optional[ChunkOutputLayer] = None) -> decoding.DecodeOutput:
  """decoding.greedy_decode's result (constrained) in fewer decoder calls (module docstring).

  cache: the decoder cache for the rows, cache_lengths[0] + chunk_length positions long.
  output_layer: run the chunks without the output layer (ChunkOutputLayer; chunk_fn is then
  unused): the same result, cheaper chunks.
  """
  _check(constraint, chunk_length)
  decoding._check_args(encoder_input_tokens, max_decode_length, eos_id, 1)
  rows = encoder_input_tokens.shape[0]
  length_limit = max_decode_length
  table = constraint.candidate_table(encoder_input_tokens)
  draft_args = dict(chunk_length=chunk_length, table=table, eos_id=eos_id)
  if output_layer is not None:
    kernel = output_layer.kernel.astype(jnp.float32)
    candidate_columns = jnp.take(kernel.T, table.ids, axis=0)  # [rows, C, d]

  offsets = jnp.arange(chunk_length, dtype=jnp.int32)[None, :]

  def body(state: _GreedyState) -> _GreedyState:
    draft = state.draft
    going = ~(state.done | (state.length >= length_limit))
    starts = jnp.where(going, state.length, 0)
    calls = state.calls + going.astype(jnp.int32)
    # Every chunk position at once: what the step-by-step search would choose there.
    if output_layer is None:
      logits, cache = chunk_fn(draft.tokens, starts, state.cache)
      log_probs, model_log_probs = _search_log_probs(logits, draft.allowed, table)  # [rows,K,C]
      choice = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
      model_log_prob = jnp.take_along_axis(model_log_probs, choice[..., None], axis=-1)[..., 0]
    else:
      hidden, cache = output_layer.hidden_chunk_fn(draft.tokens, starts, state.cache)
      hidden = hidden.astype(jnp.float32)  # [rows, K, d]
      candidate_logits = jnp.einsum("rkd,rcd->rkc", hidden, candidate_columns)
      log_probs = decoding.masked_candidate_log_probs(candidate_logits, draft.allowed)
      choice = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
      model_log_prob = jnp.zeros(choice.shape, jnp.float32)  # computed after the loop
    best = jnp.take_along_axis(table.ids, choice, axis=1)
    best_log_prob = jnp.max(log_probs, axis=-1)
    best = jnp.where(jnp.isneginf(best_log_prob), eos_id, best)
    # Position j is a step of the search while every earlier choice was the drafted token.
    follows = ((best[:, :-1] == draft.tokens[:, 1:]) & (best[:, :-1] != eos_id)
               & (offsets[:, 1:] < draft.count[:, None]))
    steps = (going[:, None] & (state.length[:, None] + offsets < length_limit)
             & (jnp.cumprod(jnp.concatenate([jnp.ones_like(follows[:, :1]), follows], axis=1),
                            axis=1) > 0))
    taken = jnp.sum(steps, axis=1, dtype=jnp.int32)
    log_prob = state.log_prob
    for j in range(chunk_length):  # the step-by-step order of the sum
      log_prob = log_prob + jnp.where(steps[:, j], best_log_prob[:, j], 0.0)
    last_offset = jnp.maximum(taken - 1, 0)
    last_token = jnp.take_along_axis(best, last_offset[:, None], axis=1)[:, 0]
    next_draft = _draft(constraint, _state_at(draft.states, last_offset), last_token,
                        jnp.array(1, jnp.int32), **draft_args)
    hidden_buffer = state.hidden
    if output_layer is not None:
      hidden_buffer = _write_chunk(hidden_buffer, hidden, steps[..., None], state.length)
    return _GreedyState(
        _write_chunk(state.tokens, best, steps, state.length), hidden_buffer,
        _write_chunk(state.token_log_probs, model_log_prob, steps, state.length),
        state.length + taken, state.done | jnp.any(steps & (best == eos_id), axis=1), log_prob,
        calls, next_draft, cache)

  first = _draft(constraint, constraint.init(encoder_input_tokens),
                 jnp.full((rows,), start_token_id, jnp.int32), jnp.array(0, jnp.int32),
                 **draft_args)
  # Token buffers K positions longer, so that a chunk's write never runs off the end.
  hidden = None
  if output_layer is not None:
    # Also a block longer: output_log_probs.model_token_log_probs reads whole blocks.
    hidden = jnp.zeros((rows, length_limit + chunk_length + output_log_probs.LOG_PROB_BLOCK,
                        kernel.shape[0]), jnp.float32)
  state = _GreedyState(
      jnp.zeros((rows, length_limit + chunk_length), jnp.int32), hidden,
      jnp.zeros((rows, length_limit + chunk_length), jnp.float32),
      jnp.zeros((rows,), jnp.int32), jnp.zeros((rows,), bool), jnp.zeros((rows,), jnp.float32),
      jnp.zeros((rows,), jnp.int32), first, cache)
  state = _segments(body, state, max_decode_length=length_limit, cache_lengths=cache_lengths,
                    grow_cache=grow_cache, chunk_length=chunk_length,
                    finished=lambda s: s.done | (s.length >= length_limit),
                    position=lambda s: s.length)
  token_log_probs, hidden = state.token_log_probs[:, :length_limit], None
  if output_layer is not None:
    token_log_probs, hidden = output_log_probs.after_loop(
        state.hidden[:, :length_limit + output_log_probs.LOG_PROB_BLOCK],
        state.tokens[:, :length_limit], output_layer)
  return decoding.DecodeOutput(
      state.tokens[:, :length_limit], state.log_prob,
      state.log_prob / decoding.length_penalty(state.length, alpha), token_log_probs,
      state.calls, hidden)


class _BeamState(NamedTuple):
  pools: decoding.BeamPools
  length: Array  # int32 [batch]: tokens of every alive hypothesis (= position of draft[:, 0])
  calls: Array   # int32 [batch]
  draft: _Draft  # rows = batch * beam
  cache: PyTree
  hidden: Optional[Array] = None  # float32 [rows, len + K, d] with a ChunkOutputLayer


def fast_beam_search(chunk_fn: ChunkFn, cache: PyTree, encoder_input_tokens: Array, *,
                     beam_size: int, constraint: decoding.LogitsConstraint,
                     max_decode_length: int, start_token_id: int = 0, eos_id: int = 1,
                     alpha: float = 0.6, stopping: str = "all",
                     chunk_length: int = DEFAULT_CHUNK_LENGTH,
                     cache_lengths: Optional[tuple[int, ...]] = None,
                     grow_cache=None,
                     output_layer: Optional[ChunkOutputLayer] = None,
                     log_prob_beams: Optional[int] = None) -> decoding.DecodeOutput:
  """decoding.beam_search's result (constrained) in fewer decoder calls (module docstring).

  cache and encoder_input_tokens have batch * beam_size rows (decoding.expand_to_beams); the
  cache is cache_lengths[0] + chunk_length positions long.
  output_layer: run the chunks without the output layer, as decoding.beam_search's
  output_layer does step by step: the candidates are scored from the hidden states, which stay
  where their chunk row computed them (never re-ordered); the pools file, for each token, the
  slot of the chunk row that scored it, and the model's per-token log-probs of the best
  `log_prob_beams` hypotheses (None: all; the others' are NaN) are computed after the loop.
  The same result; chunk_fn is then unused.
  """
  _check(constraint, chunk_length)
  if not isinstance(beam_size, int) or beam_size < 1:
    raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
  decoding.check_stopping(stopping)
  if alpha < 0:
    raise ValueError(f"alpha must be >= 0, got {alpha}")
  decoding._check_args(encoder_input_tokens, max_decode_length, eos_id, beam_size)
  rows = encoder_input_tokens.shape[0]
  batch = rows // beam_size
  length_limit = max_decode_length
  table = constraint.candidate_table(encoder_input_tokens)
  draft_args = dict(chunk_length=chunk_length, table=table, eos_id=eos_id)
  step_args = dict(alpha=alpha, eos_id=eos_id, max_decode_length=length_limit,
                   stopping=stopping)
  by_example = lambda x: x.reshape((batch, beam_size) + x.shape[1:])
  if output_layer is not None:
    kernel = output_layer.kernel.astype(jnp.float32)
    candidate_columns = jnp.take(kernel.T, table.ids, axis=0)  # [rows, C, d]

  def body(state: _BeamState) -> _BeamState:
    draft = state.draft
    going = ~(state.pools.done | (state.length >= length_limit))  # [batch]
    row_start = jnp.repeat(jnp.where(going, state.length, 0), beam_size)
    calls = state.calls + going.astype(jnp.int32)
    hidden_buffer = state.hidden
    if output_layer is None:
      logits, cache = chunk_fn(draft.tokens, row_start, state.cache)
      # Both distributions at every chunk position in one pass (cheaper than one per step).
      all_log_probs, all_model_log_probs = _search_log_probs(logits, draft.allowed, table)
      all_model_log_probs = by_example(all_model_log_probs)
    else:
      hidden, cache = output_layer.hidden_chunk_fn(draft.tokens, row_start, state.cache)
      hidden = hidden.astype(jnp.float32)  # [rows, K, d]
      all_log_probs = decoding.masked_candidate_log_probs(
          jnp.einsum("rkd,rcd->rkc", hidden, candidate_columns), draft.allowed)
      # Kept at the row's own positions; an example that is not going keeps its history.
      hidden_buffer = _write_chunk(hidden_buffer, hidden,
                                   jnp.repeat(going, beam_size)[:, None, None], row_start)
    all_log_probs = by_example(all_log_probs)  # [b, beam, K, C]
    chunk, count = by_example(draft.tokens), by_example(draft.count)
    # source[e, k]: the chunk row (slot of example e) whose draft alive hypothesis k follows.
    source = jnp.broadcast_to(jnp.arange(beam_size, dtype=jnp.int32)[None], (batch, beam_size))
    at = lambda x, j: jax.lax.dynamic_index_in_dim(x, j, axis=2, keepdims=False)

    def step(carry):
      j, pools, length, going, source, last_token, last_offset = carry
      pick = lambda x: jnp.take_along_axis(
          at(x, j), source.reshape(source.shape + (1,) * (x.ndim - 3)), axis=1)
      log_probs = pick(all_log_probs)
      vocab = log_probs.shape[-1]
      if output_layer is None:
        model_log_probs = pick(all_model_log_probs)
      else:  # what beam_step files with each token: the slot of the chunk row that scored it
        model_log_probs = jnp.broadcast_to(source.astype(jnp.float32)[..., None],
                                           log_probs.shape)
      # Examples not going are passed as done, so beam_step leaves them unchanged.
      stepped, parent, token = decoding.beam_step(
          pools._replace(done=pools.done | ~going), log_probs.reshape(rows, vocab),
          model_log_probs.reshape(rows, vocab), length, candidate_ids=table.ids, **step_args)
      pools = stepped._replace(done=jnp.where(going, stepped.done, pools.done))
      source = jnp.where(going[:, None], jnp.take_along_axis(source, parent, axis=1), source)
      last_token = jnp.where(going[:, None], token, last_token)
      last_offset = jnp.where(going, j, last_offset)
      length = length + going.astype(jnp.int32)
      # Go on while every alive hypothesis is the draft of its chunk row (empty slots are).
      following = jnp.minimum(j + 1, chunk_length - 1)
      drafted = jnp.take_along_axis(at(chunk, following), source, axis=1)
      valid = j + 1 < jnp.take_along_axis(count, source, axis=1)
      on_draft = (valid & (token == drafted)) | jnp.isneginf(pools.alive_log_probs)
      going = going & ~pools.done & jnp.all(on_draft, axis=1) & (length < length_limit)
      return j + 1, pools, length, going, source, last_token, last_offset

    carry = (jnp.array(0, jnp.int32), state.pools, state.length, going, source,
             jnp.zeros((batch, beam_size), jnp.int32), jnp.zeros((batch,), jnp.int32))
    _, pools, length, _, source, last_token, last_offset = jax.lax.while_loop(
        lambda c: jnp.any(c[3]), step, carry)
    # Lazy re-ordering: one gather per call, by the composed parent map.
    cache = decoding.gather_beams(cache, source, batch, beam_size)
    row_source = (jnp.arange(batch)[:, None] * beam_size + source).reshape(rows)
    states = jax.tree_util.tree_map(lambda x: x[row_source], draft.states)
    next_draft = _draft(constraint, _state_at(states, jnp.repeat(last_offset, beam_size)),
                        last_token.reshape(rows), jnp.array(1, jnp.int32), **draft_args)
    return _BeamState(pools, length, calls, next_draft, cache, hidden_buffer)

  first = _draft(constraint, constraint.init(encoder_input_tokens),
                 jnp.full((rows,), start_token_id, jnp.int32), jnp.array(0, jnp.int32),
                 **draft_args)
  hidden = None
  if output_layer is not None:
    # K positions longer: a chunk written at the last position never runs off the end.
    hidden = jnp.zeros((rows, length_limit + chunk_length, kernel.shape[0]), jnp.float32)
  state = _BeamState(decoding.BeamPools.empty(batch, beam_size, length_limit),
                     jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.int32), first,
                     cache, hidden)
  state = _segments(body, state, max_decode_length=length_limit, cache_lengths=cache_lengths,
                    grow_cache=grow_cache, chunk_length=chunk_length,
                    finished=lambda s: s.pools.done | (s.length >= length_limit),
                    position=lambda s: s.length)
  output = decoding.finish_beams(state.pools, state.length, alpha, state.calls)
  if output_layer is None:
    return output_log_probs.keep_token_log_probs(output, log_prob_beams)
  return output._replace(token_log_probs=output_log_probs.beam_token_log_probs(
      state.hidden, output, kernel, eos_id, log_prob_beams))
