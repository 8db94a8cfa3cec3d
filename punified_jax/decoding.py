"""Jitted greedy and beam-search decoding over a KV cache, with a logits-constraint hook.

Model-agnostic: the decoder is a `step_fn(token_ids [rows], cache, step) -> (logits [rows,
vocab], cache)` that consumes one token per row and returns the next-token logits; the cache is
any pytree whose non-scalar leaves have `rows` as their leading axis (scalar leaves, such as a
cache index, are shared by all rows).  `punified_jax.generate` builds it from the T5 model.

Everything runs inside `jax.lax.while_loop`s with a static maximum length, so the whole
search compiles once per (batch, beam, length) shape and stops early when every row is done.

Growing cache.  A step's cost grows with the cache length (attention reads the whole cache
and beam search reorders it), while most outputs end long before `max_decode_length`.  With
`cache_lengths=(64, 128, 256)` and a `grow_cache(cache, length)` function the search starts
on a 64-position cache and runs one loop per length, growing the cache (padding) only when a
row is still going at position 64, then 128.  The results are identical; only the cost of the
early steps falls.  (One loop body is compiled per length.)

Retiring finished rows (greedy, `retire_rows=True`).  Rows of a batch end at very different
steps (a quarter to a half of a batch's row-steps come after the row's EOS on the dev sets,
BENCHMARKS.md 2o), and a step of fewer rows costs less.  Once at most half of the rows are
still going, the search gathers them (and as many finished rows as fill the slots) into a
batch of half the rows and goes on with it, then again at a quarter (RETIRE_HALVINGS); results
go back to their rows when the search ends.  A row's tokens and scores are those of the full
batch (each row's computation depends on its own row only; the matrix products differ only in
float rounding).  The step function must offer `select_rows(index) -> StepFn` for a subset of
its rows (generate's does), as must an OutputLayer's hidden_step_fn.  Each stage compiles one
more loop body.

Rows.  Greedy decodes `batch` rows.  Beam search decodes `batch * beam_size` rows laid out
example-major (row = example * beam_size + beam); `expand_to_beams` makes that layout.

Constraint hook.  A `LogitsConstraint` is called inside the loop at every step, on every row,
before the next token is chosen.  Its state is any pytree of arrays with leading axis `rows`
(for the NER copy constraint, e.g. [rows, input_len] booleans plus small ints); beam search
reorders it together with the KV cache whenever beams are reordered.

Re-ordering the cache.  By default (gather_beams) beam search copies every row of the cache
at every step, a cost that grows with the cache length.  `beam_search(reorder_cache=...)`
lets the decoder do it more cheaply: generate's T5 decoder keeps a beam-grouped cache that is
never copied, only an ancestry table follows the beams (generate.reorder_beam_cache; the
same results, BENCHMARKS.md 2f).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Protocol

import flax.struct
import jax
import jax.numpy as jnp

from punified_jax import output_log_probs

Array = jax.Array
PyTree = Any
StepFn = Callable[[Array, PyTree, Array], tuple[Array, PyTree]]

# What a constraint writes into the logits of a forbidden token.  Finite so that a row whose
# tokens are all forbidden does not turn the softmax into NaN; any logit at or below
# FORBIDDEN_LOGIT / 2 is treated by the search as forbidden (log-prob -inf, never chosen).
FORBIDDEN_LOGIT = -1e10


class LogitsConstraint(Protocol):
  """Restricts which tokens may come next.  Must be a pytree (e.g. a `flax.struct.dataclass`):
  it is passed through `jax.jit`, its array fields are traced and static configuration belongs
  in `flax.struct.field(pytree_node=False)`.
  """

  def init(self, encoder_input_tokens: Array) -> PyTree:
    """State for all rows, from the encoder input ids [rows, input_len] (int32).

    Rows follow the decoding layout (example-major, beams adjacent).  Whatever the steps need
    from the input (ids, copy positions, allowed types) belongs in this state.
    """

  def step(self, state: PyTree, token_ids: Array, logits: Array,
           step: Array) -> tuple[Array, PyTree]:
    """One decoding step.

    token_ids [rows] int32: the token the decoder consumed at this step, i.e. the token chosen
      at step - 1 (at step 0 it is the decoder start token, not a generated token).
    logits [rows, vocab] float32: scores for the token to choose at this step.
    step: int32 scalar, 0-based.
    Returns (logits with forbidden tokens set to FORBIDDEN_LOGIT, state after `token_ids`).
    Rows that already ended keep being stepped; their results are ignored.
    """


@flax.struct.dataclass
class AllowedTokensConstraint:
  """The simplest constraint: a fixed boolean vocabulary mask per example.

  allowed: bool [batch, vocab]; True where the token may be generated.  Remember to allow the
  EOS token, or the row can only end at the maximum length.
  """
  allowed: Array

  def init(self, encoder_input_tokens: Array) -> Array:
    rows = encoder_input_tokens.shape[0]
    batch = self.allowed.shape[0]
    if rows % batch:
      raise ValueError(f"AllowedTokensConstraint has {batch} examples but decoding has "
                       f"{rows} rows (not a multiple)")
    return jnp.repeat(self.allowed.astype(bool), rows // batch, axis=0)

  def step(self, state: Array, token_ids: Array, logits: Array,
           step: Array) -> tuple[Array, Array]:
    del token_ids, step  # The mask does not depend on the history.
    return jnp.where(state, logits, FORBIDDEN_LOGIT), state

  def candidate_table(self, encoder_input_tokens: Array) -> "CandidateTable":
    """Every token is a candidate (CandidateTable), so the searches over candidates run with
    this constraint too, at the cost of the vocabulary."""
    vocab = self.allowed.shape[1]
    ids = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32)[None],
                           (encoder_input_tokens.shape[0], vocab))
    return CandidateTable(ids, ids)

  def step_candidates(self, state: Array, token_ids: Array, step: Array,
                      table: "CandidateTable") -> tuple[Array, Array]:
    del token_ids, step, table
    return state, state


class CandidateTable(NamedTuple):
  """The tokens a constraint can ever allow for each row, fixed for the whole search.

  ids int32 [rows, C]: candidate token ids (may repeat); slot int32 [rows, C]: the index of the
  first candidate with the same id.  A constraint that offers `candidate_table(encoder_input_
  tokens) -> CandidateTable` and `step_candidates(state, token_ids, step, table) -> (allowed
  bool [rows, C], state)` (True only at first slots; otherwise as `step`) can be searched over
  its C candidates instead of the vocabulary (`greedy_decode` / `beam_search` with
  score_candidates=True).
  """
  ids: Array
  slot: Array


class OutputLayer(NamedTuple):
  """The decoder split before its output layer, for greedy_decode over candidates.

  hidden_step_fn: like a StepFn, but returns the final hidden state [rows, d] (the output
  layer's input) instead of the logits.  kernel: float32 [d, vocab] (logits = hidden @ kernel).
  The greedy search then scores a row's C candidates with C dot products, keeps each step's
  hidden state, and computes the model's per-token log-probs (whose normaliser needs every
  logit) after the loop, as a few large matrix products over the outputs instead of one
  [rows, d] x [d, vocab] product per step.  token_log_probs=False: not even that
  (output_log_probs.after_loop: DecodeOutput.hidden instead).
  """
  hidden_step_fn: Callable[[Array, PyTree, Array], tuple[Array, PyTree]]
  kernel: Array
  token_log_probs: bool = True


class DecodeOutput(NamedTuple):
  """tokens: int32 [batch, len] (greedy) or [batch, beam, len] (beam); after EOS (included)
  every position is 0.  log_probs: summed token log-probabilities (under the constrained
  distribution when a constraint is used).  scores: log_probs / length_penalty(length), the
  ranking score; beams are sorted by it, best first.  A hypothesis that does not exist (a beam
  slot left empty, or a row with every token forbidden) has score and log_prob -inf and, in beam
  search, all-zero tokens.
  token_log_probs: float32, shaped like tokens: each token's log-probability under the MODEL's
  own (unconstrained) softmax, 0 after the end; what a teacher-forced pass over the output
  would give, without running one.
  decoder_calls: int32 [batch]: how many decoder calls the search made while the example was
  still undecided (step by step: one per output position; fast_decoding: fewer).  Decoder calls
  per generated token, the measure of fast_decoding's saving, is this over the output length.
  hidden: float32 [batch, >= len, d], only from a greedy search whose output layer was asked
  for no token_log_probs (they are 0 then): each position's final hidden state, for a caller
  that needs the log-probs of a few tokens (output_log_probs.model_token_log_probs, `real`).
  """
  tokens: Array
  log_probs: Array
  scores: Array
  token_log_probs: Optional[Array] = None
  decoder_calls: Optional[Array] = None
  hidden: Optional[Array] = None


def length_penalty(length: Array, alpha: float) -> Array:
  """GNMT / T5 length penalty ((5 + length) / 6) ** alpha; length counts the EOS token."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def expand_to_beams(tree: PyTree, beam_size: int) -> PyTree:
  """[batch, ...] -> [batch * beam_size, ...] with each example's copies adjacent."""
  return jax.tree_util.tree_map(
      lambda x: x if jnp.ndim(x) == 0 else jnp.repeat(x, beam_size, axis=0), tree)


def gather_beams(tree: PyTree, beam_indices: Array, batch: int, beam_size: int) -> PyTree:
  """Reorder rows: new row (b, k) takes old row (b, beam_indices[b, k]).  Scalars are kept."""

  # One flat row index: a gather of whole rows (XLA lowers take_along_axis over the beam axis
  # of a [batch, beam, ...] cache into selects over every element, ~3x slower on CPU).
  rows = (jnp.arange(batch, dtype=jnp.int32)[:, None] * beam_size
          + beam_indices.astype(jnp.int32)).reshape(-1)

  def gather(x):
    if jnp.ndim(x) == 0:
      return x
    if x.shape[0] != batch * beam_size:
      raise ValueError(f"state leaf with leading axis {x.shape[0]} cannot be gathered by beam: "
                       f"expected batch * beam = {batch * beam_size} rows")
    return jnp.take(x, rows, axis=0, mode="clip")

  return jax.tree_util.tree_map(gather, tree)


# reorder_cache(cache, parent [batch, beam], batch, beam_size) -> cache (beam_search).
ReorderFn = Callable[[PyTree, Array, int, int], PyTree]


def _next_token_log_probs(step_fn: StepFn, constraint: Optional[LogitsConstraint],
                          token_ids: Array, cache: PyTree, constraint_state: PyTree,
                          step: Array) -> tuple[Array, Array, PyTree, PyTree]:
  """Run the decoder and the constraint.

  Returns (log_probs, model_log_probs, cache, constraint_state): float32 [rows, vocab] each;
  log_probs is the search's distribution (-inf = forbidden), model_log_probs the model's own
  softmax (the same array when there is no constraint).
  """
  logits, cache = step_fn(token_ids, cache, step)
  logits = logits.astype(jnp.float32)
  model_log_probs = jax.nn.log_softmax(logits, axis=-1)
  if constraint is None:
    return model_log_probs, model_log_probs, cache, constraint_state
  logits, constraint_state = constraint.step(constraint_state, token_ids, logits, step)
  forbidden = logits <= FORBIDDEN_LOGIT / 2
  log_probs = jnp.where(forbidden, -jnp.inf, jax.nn.log_softmax(logits, axis=-1))
  return log_probs, model_log_probs, cache, constraint_state


def _candidate_log_probs(step_fn: StepFn, constraint: LogitsConstraint, table: CandidateTable,
                         token_ids: Array, cache: PyTree, constraint_state: PyTree,
                         step: Array) -> tuple[Array, Array, PyTree, PyTree]:
  """_next_token_log_probs restricted to the constraint's candidates (CandidateTable).

  Returns (log_probs, model_log_probs, cache, constraint_state), float32 [rows, C] each: the
  search's distribution (-inf where forbidden) and the model's own log-softmax, at the
  candidates.  The decoder still computes every logit (the model's log-probs need the
  normaliser over the whole vocabulary: one logsumexp), but the rest of the step (the
  constraint's mask, the renormalised softmax, arg-max or beam top-k) works on C values per
  row instead of the vocabulary.  Same values as _next_token_log_probs up to float rounding
  (a forbidden logit contributes exactly 0 to the constrained softmax either way).
  """
  logits, cache = step_fn(token_ids, cache, step)
  logits = logits.astype(jnp.float32)
  normaliser = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  candidate_logits = jnp.take_along_axis(logits, table.ids, axis=1)
  allowed, constraint_state = constraint.step_candidates(constraint_state, token_ids, step,
                                                         table)
  return (masked_candidate_log_probs(candidate_logits, allowed), candidate_logits - normaliser,
          cache, constraint_state)


def masked_candidate_log_probs(candidate_logits: Array, allowed: Array) -> Array:
  """The search's log-probs over candidates: log-softmax over the allowed ones, -inf elsewhere."""
  masked = jnp.where(allowed, candidate_logits, FORBIDDEN_LOGIT)
  return jnp.where(allowed, jax.nn.log_softmax(masked, axis=-1), -jnp.inf)


def _hidden_candidate_log_probs(output_layer: OutputLayer, constraint: LogitsConstraint,
                                table: CandidateTable, candidate_columns: Array,
                                token_ids: Array, cache: PyTree, constraint_state: PyTree,
                                step: Array,
                                states: Array) -> tuple[Array, Array, PyTree, PyTree]:
  """_candidate_log_probs without the output layer: (search log_probs [rows, C], `states`
  [rows, len, d] with this step's hidden state written at `step`, cache, constraint_state);
  the searches compute the model's log-probs from `states` after the loop.
  candidate_columns [rows, C, d]: the output layer's columns of each row's candidates."""
  hidden, cache = output_layer.hidden_step_fn(token_ids, cache, step)
  hidden = hidden.astype(jnp.float32)
  candidate_logits = jnp.einsum("rd,rcd->rc", hidden, candidate_columns)
  allowed, constraint_state = constraint.step_candidates(constraint_state, token_ids, step,
                                                         table)
  states = jax.lax.dynamic_update_slice_in_dim(states, hidden[:, None], step, axis=1)
  return (masked_candidate_log_probs(candidate_logits, allowed), states, cache,
          constraint_state)


def check_candidate_scoring(score_candidates: bool,
                            constraint: Optional[LogitsConstraint]) -> None:
  if score_candidates and not hasattr(constraint, "candidate_table"):
    raise ValueError(f"score_candidates needs a constraint with candidate_table and "
                     f"step_candidates, got {type(constraint).__name__}")


GrowCacheFn = Callable[[PyTree, int], PyTree]


def checked_cache_lengths(cache_lengths: Optional[tuple[int, ...]], max_decode_length: int,
                          grow_cache: Optional[GrowCacheFn]) -> tuple[int, ...]:
  """The cache lengths of a growing-cache search (default: one segment of max_decode_length);
  they must increase strictly up to max_decode_length, and more than one needs grow_cache."""
  lengths = tuple(cache_lengths or (max_decode_length,))
  if (list(lengths) != sorted(set(lengths)) or lengths[-1] != max_decode_length
      or lengths[0] < 1):
    raise ValueError(f"cache_lengths must increase strictly up to max_decode_length="
                     f"{max_decode_length}, got {lengths}")
  if len(lengths) > 1 and grow_cache is None:
    raise ValueError("several cache_lengths need a grow_cache function")
  return lengths


def _run_segments(body: Callable[[Any], Any], state: Any, *, max_decode_length: int,
                  cache_lengths: Optional[tuple[int, ...]],
                  grow_cache: Optional[GrowCacheFn],
                  also: Optional[Callable[[Any], Array]] = None) -> Any:
  """Runs `body` until every row is done or `max_decode_length` steps, one while_loop per
  cache length (see "Growing cache" in the module docstring), and while `also(state)` holds
  when given.  `state` is a search state (_GreedyState or _BeamState: fields `step`, `done`,
  `cache`).  The cache leaves `max_decode_length` positions long whenever the loops stop."""
  lengths = checked_cache_lengths(cache_lengths, max_decode_length, grow_cache)
  for index, end in enumerate(lengths):
    if index:
      state = state._replace(cache=grow_cache(state.cache, end))

    def going(s, end=end):
      result = (s.step < end) & ~jnp.all(s.done)
      return result if also is None else result & also(s)

    state = jax.lax.while_loop(going, body, state)
  return state


def _check_args(encoder_input_tokens: Array, max_decode_length: int, eos_id: int,
                rows_per_example: int) -> None:
  if encoder_input_tokens.ndim != 2:
    raise ValueError(f"encoder_input_tokens must be [rows, input_len], got "
                     f"{encoder_input_tokens.shape}")
  if encoder_input_tokens.shape[0] % rows_per_example:
    raise ValueError(f"{encoder_input_tokens.shape[0]} rows is not a multiple of beam_size "
                     f"{rows_per_example}: expand inputs with expand_to_beams first")
  if not isinstance(max_decode_length, int) or max_decode_length < 1:
    raise ValueError(f"max_decode_length must be a positive int, got {max_decode_length!r}")
  if eos_id < 0:
    raise ValueError(f"eos_id must be >= 0, got {eos_id}")


class _GreedyState(NamedTuple):
  step: Array             # int32 scalar
  tokens: Array           # int32 [rows, len]
  token_log_probs: Array  # float32 [rows, len]: the model's log-prob of each token
  current: Array          # int32 [rows]: the token the decoder consumes next
  done: Array             # bool [rows]: produced EOS
  log_prob: Array         # float32 [rows]: summed log-probs of the search's distribution
  length: Array           # int32 [rows]: tokens produced, EOS included
  calls: Array            # int32 [rows]: decoder calls made while the row was not done
  cache: PyTree
  constraint_state: PyTree
  hidden: Optional[Array] = None  # float32 [rows, len + block, d]: with an OutputLayer


# Greedy's retire_rows: how many times the batch may halve (8 rows -> 4 -> 2).
RETIRE_HALVINGS = 2


def take_rows(tree: PyTree, index: Array, rows: int) -> PyTree:
  """The rows `index` [k] of every non-scalar leaf (leading axis `rows`); scalars kept."""
  def take(x):
    if jnp.ndim(x) == 0:
      return x
    if x.shape[0] != rows:
      raise ValueError(f"search state leaf with leading axis {x.shape[0]} cannot be split by "
                       f"row: expected {rows} rows")
    return jnp.take(x, index, axis=0)
  return jax.tree_util.tree_map(take, tree)


def _select_rows(fn: Callable[..., Any], index: Array) -> Callable[..., Any]:
  select = getattr(fn, "select_rows", None)
  if select is None:
    raise ValueError("retire_rows needs a step function with select_rows(index) (generate's "
                     "step functions have it)")
  return select(index)


def retire_stage_sizes(rows: int) -> tuple[int, ...]:
  """Batch sizes of greedy's retire_rows stages: rows, then halvings (at least 1 row)."""
  sizes = [rows]
  while len(sizes) <= RETIRE_HALVINGS and sizes[-1] // 2 >= 1:
    sizes.append(sizes[-1] // 2)
  return tuple(sizes)


def greedy_decode(step_fn: StepFn, cache: PyTree, encoder_input_tokens: Array, *,
                  max_decode_length: int, start_token_id: int = 0, eos_id: int = 1,
                  alpha: float = 0.6,
                  constraint: Optional[LogitsConstraint] = None,
                  cache_lengths: Optional[tuple[int, ...]] = None,
                  grow_cache: Optional[GrowCacheFn] = None,
                  score_candidates: bool = False,
                  output_layer: Optional[OutputLayer] = None,
                  retire_rows: bool = False) -> DecodeOutput:
  """Arg-max decoding of `rows` sequences; stops when every row has produced EOS.

  cache: the decoder cache for `rows` = encoder_input_tokens.shape[0] rows (of length
  cache_lengths[0] when cache_lengths is given; see "Growing cache").
  Returns tokens [rows, max_decode_length], log_probs [rows], scores [rows] (log_probs over the
  length penalty with `alpha`, comparable with beam-search scores).
  score_candidates: search over the constraint's candidates (CandidateTable) instead of the
  vocabulary: the same result, a cheaper step.  output_layer (with score_candidates): skip
  the output layer in the loop (OutputLayer); the same result again.
  retire_rows: go on with half the batch once at most half of its rows are still going (see
  "Retiring finished rows"); the same result.
  """
  _check_args(encoder_input_tokens, max_decode_length, eos_id, 1)
  check_candidate_scoring(score_candidates, constraint)
  rows = encoder_input_tokens.shape[0]
  constraint_state = None if constraint is None else constraint.init(encoder_input_tokens)
  if output_layer is not None and not score_candidates:
    raise ValueError("output_layer needs score_candidates=True")
  table = candidate_columns = None
  if score_candidates:
    table = constraint.candidate_table(encoder_input_tokens)
  if output_layer is not None:
    kernel = output_layer.kernel.astype(jnp.float32)
    candidate_columns = jnp.take(kernel.T, table.ids, axis=0)  # [rows, C, d]
  decoder = output_layer.hidden_step_fn if output_layer is not None else step_fn

  def make_body(decoder, table, candidate_columns):
    """The loop body for the rows that `decoder`, `table` and `candidate_columns` hold."""

    def body(state: _GreedyState) -> _GreedyState:
      step, done = state.step, state.done
      hidden = state.hidden
      if output_layer is not None:
        log_probs, hidden, cache, constraint_state = _hidden_candidate_log_probs(
            output_layer._replace(hidden_step_fn=decoder), constraint, table,
            candidate_columns, state.current, state.cache, state.constraint_state, step,
            hidden)
        choice = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
        model_log_prob = jnp.zeros((done.shape[0], 1), jnp.float32)  # computed after the loop
      else:
        search_fn = _candidate_log_probs if score_candidates else _next_token_log_probs
        log_probs, model_log_probs, cache, constraint_state = search_fn(
            decoder, constraint, *([table] if score_candidates else []), state.current,
            state.cache, state.constraint_state, step)
        choice = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)  # a token or a candidate
        model_log_prob = jnp.take_along_axis(model_log_probs, choice[:, None], axis=1)
      best = (jnp.take_along_axis(table.ids, choice[:, None], axis=1)[:, 0]
              if score_candidates else choice)
      best_log_prob = jnp.max(log_probs, axis=-1)
      # A row with every token forbidden ends here (EOS) with log-prob -inf.
      best = jnp.where(jnp.isneginf(best_log_prob), eos_id, best)
      best = jnp.where(done, 0, best)
      return _GreedyState(
          step=step + 1,
          tokens=jax.lax.dynamic_update_slice_in_dim(state.tokens, best[:, None], step, axis=1),
          token_log_probs=jax.lax.dynamic_update_slice_in_dim(
              state.token_log_probs, jnp.where(done[:, None], 0.0, model_log_prob), step,
              axis=1),
          current=best,
          done=done | (best == eos_id),
          log_prob=state.log_prob + jnp.where(done, 0.0, best_log_prob),
          length=state.length + (~done).astype(jnp.int32),
          calls=state.calls + (~done).astype(jnp.int32),
          cache=cache, constraint_state=constraint_state, hidden=hidden)

    return body

  hidden = None
  if output_layer is not None:
    hidden = jnp.zeros(
        (rows, max_decode_length + output_log_probs.LOG_PROB_BLOCK, kernel.shape[0]),
        jnp.float32)
  state = _GreedyState(
      step=jnp.array(0, jnp.int32), tokens=jnp.zeros((rows, max_decode_length), jnp.int32),
      token_log_probs=jnp.zeros((rows, max_decode_length), jnp.float32),
      current=jnp.full((rows,), start_token_id, jnp.int32), done=jnp.zeros((rows,), bool),
      log_prob=jnp.zeros((rows,), jnp.float32), length=jnp.zeros((rows,), jnp.int32),
      calls=jnp.zeros((rows,), jnp.int32), cache=cache, constraint_state=constraint_state,
      hidden=hidden)
  sizes = retire_stage_sizes(rows) if retire_rows else (rows,)

  def going_beyond(size):
    """Stage condition: more rows going than the next stage holds."""
    return lambda s: jnp.sum(~s.done, dtype=jnp.int32) > size

  state = _run_segments(make_body(decoder, table, candidate_columns), state,
                        max_decode_length=max_decode_length, cache_lengths=cache_lengths,
                        grow_cache=grow_cache,
                        also=going_beyond(sizes[1]) if len(sizes) > 1 else None)
  if len(sizes) > 1:
    # Later stages: the rows still going (and finished ones to fill the batch), on the cache
    # of max_decode_length positions that the first stage's loops leave.
    outputs = state  # every row's final values, updated at the end of each stage
    index = jnp.arange(rows, dtype=jnp.int32)  # original row of each row of `state`
    for stage, size in enumerate(sizes[1:], start=1):
      order = jnp.argsort(state.done, stable=True)[:size]  # going rows first
      index = index[order]
      state = take_rows(state, order, state.done.shape[0])
      body = make_body(
          _select_rows(decoder, index),
          None if table is None else take_rows(table, index, rows),
          None if candidate_columns is None else candidate_columns[index])
      following = sizes[stage + 1] if stage + 1 < len(sizes) else 0
      # One loop on the whole cache (cache_lengths None): the first stage's loops grew it.
      state = _run_segments(body, state, max_decode_length=max_decode_length,
                            cache_lengths=None, grow_cache=None,
                            also=going_beyond(following))
      outputs = jax.tree_util.tree_map(
          lambda full, part: full if jnp.ndim(full) == 0 else full.at[index].set(part),
          outputs._replace(cache=None, constraint_state=None),
          state._replace(cache=None, constraint_state=None))
    state = outputs._replace(step=state.step)
  token_log_probs, hidden = state.token_log_probs, None
  if output_layer is not None:
    token_log_probs, hidden = output_log_probs.after_loop(state.hidden, state.tokens,
                                                          output_layer)
  return DecodeOutput(state.tokens, state.log_prob,
                      state.log_prob / length_penalty(state.length, alpha), token_log_probs,
                      state.calls, hidden)


# Beam-search stopping rules (beam_search's docstring).
STOPPING_RULES = ("all", "best", "early")


def check_stopping(stopping: str) -> None:
  """Raises ValueError unless `stopping` is one of STOPPING_RULES."""
  if stopping not in STOPPING_RULES:
    raise ValueError(f"stopping must be one of {STOPPING_RULES}, got {stopping!r}")


class BeamPools(NamedTuple):
  """The per-example part of a beam search: what `beam_step` updates."""
  alive_tokens: Array    # int32 [batch, beam, len]: hypotheses still growing
  alive_token_log_probs: Array  # float32 [batch, beam, len]: the model's log-prob per token
  alive_log_probs: Array  # float32 [batch, beam]; -inf for empty slots
  finished_tokens: Array  # int32 [batch, beam, len]: hypotheses that ended with EOS
  finished_token_log_probs: Array  # float32 [batch, beam, len]
  finished_log_probs: Array  # float32 [batch, beam]
  finished_scores: Array  # float32 [batch, beam], sorted best first; -inf for empty slots
  done: Array            # bool [batch]: nothing alive can beat the finished pool

  @classmethod
  def empty(cls, batch: int, beam_size: int, length: int) -> "BeamPools":
    # Only beam 0 starts alive, so the first step does not pick beam_size copies of one token.
    initial_alive = jnp.tile(
        jnp.array([0.0] + [-jnp.inf] * (beam_size - 1), jnp.float32)[None], (batch, 1))
    empty_tokens = jnp.zeros((batch, beam_size, length), jnp.int32)
    empty_token_log_probs = jnp.zeros((batch, beam_size, length), jnp.float32)
    empty_scores = jnp.full((batch, beam_size), -jnp.inf, jnp.float32)
    return cls(empty_tokens, empty_token_log_probs, initial_alive, empty_tokens,
               empty_token_log_probs, empty_scores, empty_scores, jnp.zeros((batch,), bool))


def _write_at(x: Array, index: Array, value: Array) -> Array:
  """x [batch, n, len] with x[b, :, index[b]] = value[b, :]."""
  hit = jnp.arange(x.shape[-1])[None, None, :] == index[:, None, None]
  return jnp.where(hit, value[:, :, None], x)


def beam_step(pools: BeamPools, log_probs: Array, model_log_probs: Array, step: Array, *, alpha: float, eos_id: int, max_decode_length: int,
              stopping: str, candidate_ids: Optional[Array] = None
              ) -> tuple[BeamPools, Array, Array]:
  """One step of beam search for every example (see `beam_search`).

  log_probs / model_log_probs: float32 [batch * beam, vocab], the search's and the model's
  distributions of the token after each alive hypothesis.  With `candidate_ids` int32
  [batch * beam, C], both are over those candidates instead of the vocabulary.  step int32 [batch]: the tokens
  every alive hypothesis of the example already has (examples may be at different steps).
  Examples already done are left exactly as they are, so an example's result does not depend
  on how long the other examples of its batch run.
  Returns (pools, parent [batch, beam]: the old slot each new alive hypothesis extends,
  token int32 [batch, beam]: its last token).  Done examples get parent = slot, token = 0.
  """
  batch, beam_size = pools.alive_log_probs.shape
  vocab = log_probs.shape[-1]
  # [batch, beam * vocab]: total log-prob of every one-token extension.
  candidates = (pools.alive_log_probs[:, :, None]
                + log_probs.reshape(batch, beam_size, vocab)).reshape(batch, -1)
  top_log_probs, top_index = jax.lax.top_k(candidates, 2 * beam_size)
  source_beam = top_index // vocab  # [batch, 2 * beam]
  if candidate_ids is None:
    top_token = (top_index % vocab).astype(jnp.int32)
  else:
    top_token = jnp.take_along_axis(candidate_ids.reshape(batch, -1), top_index, axis=1)
  top_tokens = _write_at(jnp.take_along_axis(pools.alive_tokens, source_beam[:, :, None],
                                             axis=1), step, top_token)
  top_model_log_prob = jnp.take_along_axis(model_log_probs.reshape(batch, -1), top_index,
                                           axis=1)
  top_token_log_probs = _write_at(
      jnp.take_along_axis(pools.alive_token_log_probs, source_beam[:, :, None], axis=1), step,
      top_model_log_prob)
  ends = top_token == eos_id
  exists = top_log_probs > -jnp.inf

  # Merge the candidates that end here into the finished pool.
  new_scores = jnp.where(ends & exists,
                         top_log_probs / length_penalty(step + 1, alpha)[:, None], -jnp.inf)
  pool_scores = jnp.concatenate([pools.finished_scores, new_scores], axis=1)
  pool_log_probs = jnp.concatenate([pools.finished_log_probs, top_log_probs], axis=1)
  pool_tokens = jnp.concatenate([pools.finished_tokens, top_tokens], axis=1)
  pool_token_log_probs = jnp.concatenate(
      [pools.finished_token_log_probs, top_token_log_probs], axis=1)
  finished_scores, keep = jax.lax.top_k(pool_scores, beam_size)
  finished_log_probs = jnp.take_along_axis(pool_log_probs, keep, axis=1)
  finished_log_probs = jnp.where(finished_scores > -jnp.inf, finished_log_probs, -jnp.inf)
  finished_tokens = jnp.take_along_axis(pool_tokens, keep[:, :, None], axis=1)
  finished_token_log_probs = jnp.take_along_axis(pool_token_log_probs, keep[:, :, None],
                                                 axis=1)

  # The best candidates that do not end stay alive; the caller makes the cache and the
  # constraint state follow `parent`.
  alive_log_probs, keep = jax.lax.top_k(jnp.where(ends, -jnp.inf, top_log_probs), beam_size)
  alive_tokens = jnp.take_along_axis(top_tokens, keep[:, :, None], axis=1)
  alive_token_log_probs = jnp.take_along_axis(top_token_log_probs, keep[:, :, None], axis=1)
  parent = jnp.take_along_axis(source_beam, keep, axis=1)
  token = jnp.take_along_axis(top_token, keep, axis=1)

  best_possible_penalty = length_penalty(jnp.array(max_decode_length), alpha)
  best_alive_bound = jnp.max(alive_log_probs, axis=1) / best_possible_penalty
  pool_full = finished_scores[:, -1] > -jnp.inf
  if stopping == "all":
    settled = pool_full & (finished_scores[:, -1] >= best_alive_bound)
  elif stopping == "best":
    settled = (finished_scores[:, 0] > -jnp.inf) & (finished_scores[:, 0] >= best_alive_bound)
  else:  # "early"
    settled = pool_full
  done = pools.done | settled | jnp.all(jnp.isneginf(alive_log_probs), axis=1)
  new = BeamPools(alive_tokens, alive_token_log_probs, alive_log_probs, finished_tokens,
                  finished_token_log_probs, finished_log_probs, finished_scores, done)
  frozen = pools.done

  def keep_done(new_leaf, old_leaf):
    return jnp.where(frozen.reshape(frozen.shape + (1,) * (new_leaf.ndim - 1)), old_leaf,
                     new_leaf)

  new = jax.tree_util.tree_map(keep_done, new, pools)
  slots = jnp.broadcast_to(jnp.arange(beam_size, dtype=parent.dtype)[None], parent.shape)
  parent = jnp.where(frozen[:, None], slots, parent)
  token = jnp.where(frozen[:, None], 0, token)
  return new, parent, token


def finish_beams(pools: BeamPools, step: Array, alpha: float,
                 calls: Optional[Array] = None) -> DecodeOutput:
  """The search's result from its final pools; step int32 [batch] (tokens of the alive
  hypotheses).  Hypotheses still alive at max_decode_length (no EOS) compete for the slots by
  the same score.  Examples that stopped early need not be checked: nothing alive could win
  there."""
  alive_scores = jnp.where(pools.done[:, None], -jnp.inf,
                           pools.alive_log_probs / length_penalty(step, alpha)[:, None])
  scores, keep = jax.lax.top_k(
      jnp.concatenate([pools.finished_scores, alive_scores], axis=1),
      pools.alive_log_probs.shape[1])
  log_probs = jnp.take_along_axis(
      jnp.concatenate([pools.finished_log_probs, pools.alive_log_probs], axis=1), keep, axis=1)
  tokens = jnp.take_along_axis(
      jnp.concatenate([pools.finished_tokens, pools.alive_tokens], axis=1), keep[:, :, None],
      axis=1)
  token_log_probs = jnp.take_along_axis(
      jnp.concatenate([pools.finished_token_log_probs, pools.alive_token_log_probs], axis=1),
      keep[:, :, None], axis=1)
  exists = scores > -jnp.inf
  return DecodeOutput(jnp.where(exists[:, :, None], tokens, 0),
                      jnp.where(exists, log_probs, -jnp.inf), scores,
                      jnp.where(exists[:, :, None], token_log_probs, 0.0), calls)


class _BeamState(NamedTuple):
  step: Array            # int32 scalar
  pools: BeamPools
  current: Array         # int32 [rows]: last token of each alive hypothesis
  calls: Array           # int32 [batch]: decoder calls made while the example was not done
  cache: PyTree
  constraint_state: PyTree
  hidden: Optional[Array] = None  # float32 [rows, len, d]: with an OutputLayer, never re-ordered

  @property
  def done(self) -> Array:
    return self.pools.done


def beam_search(step_fn: StepFn, cache: PyTree, encoder_input_tokens: Array, *, beam_size: int,
                max_decode_length: int, start_token_id: int = 0, eos_id: int = 1,
                alpha: float = 0.6,
                constraint: Optional[LogitsConstraint] = None,
                cache_lengths: Optional[tuple[int, ...]] = None,
                grow_cache: Optional[GrowCacheFn] = None,
                stopping: str = "all",
                score_candidates: bool = False,
                reorder_cache: Optional[ReorderFn] = None,
                output_layer: Optional[OutputLayer] = None,
                log_prob_beams: Optional[int] = None) -> DecodeOutput:
  """Beam search with T5's length penalty; returns every beam, best first.

  cache and encoder_input_tokens must already have batch * beam_size rows (`expand_to_beams`);
  the cache has length cache_lengths[0] when cache_lengths is given ("Growing cache").
  Each step extends the `beam_size` alive hypotheses of an example by every token, keeps the
  best 2 * beam_size candidates (so that beam_size of them can stay alive even if the rest end),
  moves those ending in EOS into a pool of the best `beam_size` finished hypotheses (ranked by
  log_prob / length_penalty) and keeps the best non-EOS ones alive, reordering the cache and
  constraint state to follow them (`beam_step`).  An example is done when its pool is full and
  no alive hypothesis could still beat the worst pooled one (alive log-probs only fall, and the
  length penalty is largest at max_decode_length); a done example is not changed any more,
  whatever the rest of the batch does.  `stopping` says for which hypotheses this holds:
    "all" (t5x's search): every returned hypothesis is the exact result.
    "best": only the best one; an example is done once its best finished hypothesis scores at
      least the bound of every alive one, so nothing can overtake it.  Same best hypothesis as
      "all", far fewer steps (the bound, with the penalty at max_decode_length, keeps the last
      pool slots open long after the best is settled); beams 2.. may differ from "all".
    "early" (Hugging Face's early_stopping=True): done as soon as the pool is full; a longer
      hypothesis that would still have overtaken a pooled one, the best included, is cut off.
  Hypotheses that reach max_decode_length without EOS are ranked with the finished ones by the
  same score (as Hugging Face does; t5x only uses them when nothing finished), so every slot is
  filled whenever beam_size hypotheses exist; such a hypothesis has no EOS in its tokens.

  Returns tokens [batch, beam, len], log_probs [batch, beam], scores [batch, beam],
  decoder_calls [batch].  score_candidates: as greedy_decode's.
  reorder_cache(cache, parent, batch, beam_size) -> cache: makes the cache follow the beams
  (default gather_beams: a copy of every row, which grows with the cache length); a decoder
  whose cache need not move passes a cheaper one (generate.reorder_beam_cache).
  output_layer (with score_candidates): as greedy_decode's, the output layer leaves the loop:
  each step scores the candidates from the hidden state and keeps that state where its row
  computed it; the pools' token_log_probs carry, in the loop, the slot (row within the
  example) whose state scored each token, and the model's per-token log-probs are computed
  after the loop from those states (output_log_probs.model_token_log_probs).  The same result.
  log_prob_beams: the model's per-token log-probs of only the best `log_prob_beams`
  hypotheses of each example (None: all); the others' are NaN.  With an output_layer this
  saves their output-layer products after the loop (a caller that keeps the best beam only,
  as the Extractor does, passes 1).
  """
  if not isinstance(beam_size, int) or beam_size < 1:
    raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
  check_stopping(stopping)
  if alpha < 0:
    # The early stop assumes the length penalty never shrinks as hypotheses grow.
    raise ValueError(f"alpha must be >= 0, got {alpha}")
  _check_args(encoder_input_tokens, max_decode_length, eos_id, beam_size)
  check_candidate_scoring(score_candidates, constraint)
  rows = encoder_input_tokens.shape[0]
  batch = rows // beam_size
  length = max_decode_length
  constraint_state = None if constraint is None else constraint.init(encoder_input_tokens)
  table = constraint.candidate_table(encoder_input_tokens) if score_candidates else None
  if output_layer is not None:
    if not score_candidates:
      raise ValueError("output_layer needs score_candidates=True")
    kernel = output_layer.kernel.astype(jnp.float32)
    candidate_columns = jnp.take(kernel.T, table.ids, axis=0)  # [rows, C, d]
    # The "model log-prob" beam_step files with each token: the slot of the row that scored it.
    row_slot = jnp.broadcast_to((jnp.arange(rows) % beam_size).astype(jnp.float32)[:, None],
                                table.ids.shape)

  def body(state: _BeamState) -> _BeamState:
    step = state.step
    hidden = state.hidden
    if output_layer is not None:
      log_probs, hidden, cache, constraint_state = _hidden_candidate_log_probs(
          output_layer, constraint, table, candidate_columns, state.current, state.cache,
          state.constraint_state, step, hidden)
      model_log_probs = row_slot
    elif score_candidates:
      log_probs, model_log_probs, cache, constraint_state = _candidate_log_probs(
          step_fn, constraint, table, state.current, state.cache, state.constraint_state, step)
    else:
      log_probs, model_log_probs, cache, constraint_state = _next_token_log_probs(
          step_fn, constraint, state.current, state.cache, state.constraint_state, step)
    calls = state.calls + (~state.pools.done).astype(jnp.int32)
    # Beams of an example share its candidates, so the ids need no re-ordering.
    pools, parent, token = beam_step(state.pools, log_probs, model_log_probs,
                                     jnp.full((batch,), step), alpha=alpha, eos_id=eos_id,
                                     max_decode_length=length, stopping=stopping,
                                     candidate_ids=None if table is None else table.ids)
    cache = (reorder_cache or gather_beams)(cache, parent, batch, beam_size)
    constraint_state = gather_beams(constraint_state, parent, batch, beam_size)
    return _BeamState(step + 1, pools, token.reshape(rows), calls, cache, constraint_state,
                      hidden)

  hidden = None
  if output_layer is not None:
    hidden = jnp.zeros((rows, length, kernel.shape[0]), jnp.float32)
  state = _BeamState(jnp.array(0, jnp.int32), BeamPools.empty(batch, beam_size, length),
                     jnp.full((rows,), start_token_id, jnp.int32),
                     jnp.zeros((batch,), jnp.int32), cache, constraint_state, hidden)
  state = _run_segments(body, state, max_decode_length=length, cache_lengths=cache_lengths,
                        grow_cache=grow_cache)
  output = finish_beams(state.pools, jnp.full((batch,), state.step), alpha, state.calls)
  if output_layer is None:
    return output_log_probs.keep_token_log_probs(output, log_prob_beams)
  return output._replace(token_log_probs=output_log_probs.beam_token_log_probs(
      state.hidden, output, kernel, eos_id, log_prob_beams))
