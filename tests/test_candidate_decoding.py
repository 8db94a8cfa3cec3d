"""The search over a constraint's candidates (decoding's score_candidates, generate's
search="allowed") against the search over the vocabulary.

The contract is the vocabulary search's result: same output ids, scores, log-probs and
per-token model log-probs within 1e-5.  Checked three ways: the candidate mask of
NerCopyConstraint against its vocabulary mask along random walks through the grammar
(hypothesis); both searches driven by the same random logits (a fake decoder, greedy and beam
4, hypothesis over texts, types and seeds); and the tiny trained T5 through decode_batch (in
tests/test_fast_decoding.py, which compares all searches).
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import constraints
from punified_jax import decoding
from punified_jax import prompts

import test_inference as shared
from test_inference import sp_vocab, vocab_path  # pylint: disable=unused-import

pytestmark = pytest.mark.usefixtures("fast_compiles")

INPUT_LEN = 32
DECODE_LEN = 24
ROWS = 4
# The grammar's own characters, full-width punctuation, repeated characters (an id allowed at
# two input positions is one candidate), "NULL" letters and byte-fallback characters.
_ALPHABET = "北京北京大学上海和(),:（），：。 NULLa1é😀"
TYPE_POOL = ["地点", "组织", "地点泛指", "名称"]


def _encode_input(vocab, text, types):
  ids = vocab.encode(prompts.format_input(text, types))[:INPUT_LEN - 1] + [vocab.eos_id]
  return ids + [0] * (INPUT_LEN - len(ids))


def _requests():
  return st.lists(
      st.tuples(st.text(alphabet=st.sampled_from(_ALPHABET), max_size=12),
                st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=2, unique=True)),
      min_size=ROWS, max_size=ROWS)


@functools.partial(jax.jit, static_argnames=("vocab_size",))
def _masks(c, state, token, step, table, *, vocab_size):
  """(vocabulary mask, candidate mask, state) after `token`, by both routes."""
  masked, vocab_state = c.step(state, token, jnp.zeros((token.shape[0], vocab_size)), step)
  allowed, candidate_state = c.step_candidates(state, token, step, table)
  same_state = jnp.all(jnp.stack([jnp.all(a == b) for a, b in zip(
      jax.tree_util.tree_leaves(vocab_state), jax.tree_util.tree_leaves(candidate_state))]))
  return masked > decoding.FORBIDDEN_LOGIT / 2, allowed, vocab_state, same_state


def check_random_walk(c, inputs, *, seed: int, steps: int, vocab_size: int,
                      check_step=None) -> None:
  """Walks every row of `inputs` through `c`'s grammar for `steps` steps by a random allowed
  token (EOS once it is the only way on), asserting at each step that the candidate route
  allows every allowed token exactly once and nothing else, and that both routes reach the
  same state; check_step(step, token, vocab_mask) adds the caller's own assertions (token:
  the tokens just consumed, vocab_mask: numpy bool [rows, vocab])."""
  table = c.candidate_table(inputs)
  ids = np.asarray(table.ids)
  state = c.init(inputs)
  token = jnp.zeros((inputs.shape[0],), jnp.int32)  # the decoder start token
  rng = np.random.default_rng(seed)
  for step in range(steps):
    vocab_mask, candidate_mask, state, same_state = _masks(
        c, state, token, jnp.asarray(step), table, vocab_size=vocab_size)
    assert bool(same_state)
    vocab_mask, candidate_mask = np.asarray(vocab_mask), np.asarray(candidate_mask)
    for row in range(inputs.shape[0]):
      chosen = ids[row][candidate_mask[row]]
      assert sorted(chosen.tolist()) == np.flatnonzero(vocab_mask[row]).tolist(), (row, step)
    if check_step is not None:
      check_step(step, token, vocab_mask)
    token = jnp.asarray([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in vocab_mask],
                        jnp.int32)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(requests=_requests(), seed=st.integers(0, 2**16))
def test_candidates_are_the_allowed_tokens_along_random_walks(sp_vocab, requests, seed):
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = jnp.asarray([_encode_input(sp_vocab, t, types) for t, types in requests], jnp.int32)
  assert c.candidate_table(inputs).ids.shape == (ROWS, INPUT_LEN + 6)
  check_random_walk(c, inputs, seed=seed, steps=DECODE_LEN, vocab_size=sp_vocab.vocab_size)


@functools.partial(jax.jit, static_argnames=("beam_size", "stopping", "score_candidates"))
def _search(table, inputs, constraint, *, beam_size, stopping, score_candidates):
  """A fake decoder: logits = table[step] + table[last token % steps] (no model)."""
  def step_fn(token_ids, cache, step):
    return table[step] + table[token_ids % table.shape[0]], cache

  rows = decoding.expand_to_beams(inputs, beam_size)
  cache = jnp.zeros((rows.shape[0],), jnp.int32)
  kwargs = dict(max_decode_length=DECODE_LEN, constraint=constraint,
                score_candidates=score_candidates)
  if beam_size == 1:
    return decoding.greedy_decode(step_fn, cache, rows, **kwargs)
  return decoding.beam_search(step_fn, cache, rows, beam_size=beam_size, stopping=stopping,
                              **kwargs)


def assert_same_search(reference, got):
  """Same ids, decoder calls; scores and log-probs within 1e-5 (-inf where they are)."""
  np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(reference.tokens))
  np.testing.assert_array_equal(np.asarray(got.decoder_calls),
                                np.asarray(reference.decoder_calls))
  for name in ("scores", "log_probs", "token_log_probs"):
    want, have = np.asarray(getattr(reference, name)), np.asarray(getattr(got, name))
    np.testing.assert_array_equal(np.isfinite(have), np.isfinite(want), err_msg=name)
    finite = np.isfinite(want)
    np.testing.assert_allclose(have[finite], want[finite], atol=1e-5, rtol=1e-5, err_msg=name)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(requests=_requests(), seed=st.integers(0, 2**16),
                  search=st.sampled_from([(1, "all"), (4, "all"), (4, "best")]))
def test_candidate_search_equals_the_vocabulary_search(sp_vocab, requests, seed, search):
  beam_size, stopping = search
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = jnp.asarray([_encode_input(sp_vocab, t, types) for t, types in requests], jnp.int32)
  rng = np.random.default_rng(seed)
  table = jnp.asarray(rng.normal(size=(DECODE_LEN, sp_vocab.vocab_size)) * 2, jnp.float32)
  run = functools.partial(_search, table, inputs, c, beam_size=beam_size, stopping=stopping)
  reference, got = run(score_candidates=False), run(score_candidates=True)
  assert_same_search(reference, got)
  # Not vacuous: the random logits make most rows choose among several tokens.
  assert np.isfinite(np.asarray(reference.scores)).any()


def test_candidate_search_needs_a_candidate_constraint():
  step_fn = lambda token_ids, cache, step: (jnp.zeros((token_ids.shape[0], 8)), cache)
  with pytest.raises(ValueError, match="score_candidates needs a constraint"):
    decoding.greedy_decode(step_fn, jnp.zeros((1,)), jnp.ones((1, 4), jnp.int32),
                           max_decode_length=3, score_candidates=True)
  with pytest.raises(ValueError, match="score_candidates needs a constraint"):
    decoding.beam_search(step_fn, jnp.zeros((2,)), jnp.ones((2, 4), jnp.int32), beam_size=2,
                         max_decode_length=3, score_candidates=True)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_vocabulary_mask_searches_the_same_over_candidates(beam_size):
  # AllowedTokensConstraint's candidates are the whole vocabulary.
  rng = np.random.default_rng(0)
  table = jnp.asarray(rng.normal(size=(DECODE_LEN, 16)), jnp.float32)
  allowed = np.ones((2, 16), bool)
  allowed[0, [3, 5, 7]] = False
  allowed[1, 1] = False  # no EOS: the row runs to the maximum length
  constraint = decoding.AllowedTokensConstraint(jnp.asarray(allowed))
  inputs = jnp.ones((2, 4), jnp.int32)
  run = functools.partial(_search, table, inputs, constraint, beam_size=beam_size,
                          stopping="all")
  reference, got = run(score_candidates=False), run(score_candidates=True)
  assert_same_search(reference, got)
  assert not np.isin(np.asarray(got.tokens)[0], [3, 5, 7]).any()


def test_gather_beams_takes_whole_rows():
  # Row (b, k) takes old row (b, parent[b, k]); scalars stay; other leading sizes are refused.
  tree = {"cache": jnp.arange(12).reshape(6, 2), "index": jnp.array(7)}
  out = decoding.gather_beams(tree, jnp.asarray([[2, 2, 0], [1, 0, 1]]), 2, 3)
  assert np.asarray(out["cache"]).tolist() == [[4, 5], [4, 5], [0, 1], [8, 9], [6, 7], [8, 9]]
  assert int(out["index"]) == 7
  with pytest.raises(ValueError, match="cannot be gathered by beam"):
    decoding.gather_beams({"x": jnp.zeros((5, 2))}, jnp.zeros((2, 3), jnp.int32), 2, 3)
