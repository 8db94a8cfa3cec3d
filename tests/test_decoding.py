"""Tests for punified_jax.decoding and punified_jax.generate.

Two kinds of decoder: a synthetic bigram "model" whose probabilities are written out here, so
greedy/beam results are literal; and the tiny T5 (random, and overfit to one example with
optax.adam) to check the search against the real model's teacher-forced log-probabilities.
"""

import collections
import dataclasses
import functools

import flax.struct
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from punified_jax import decoding
from punified_jax import generate
from punified_jax import model as model_lib

import test_inference as shared

pytestmark = pytest.mark.usefixtures("fast_compiles")


PAD, EOS, A, B = 0, 1, 2, 3

# P(next | last) of the bigram model; the start token is PAD.  Rows: last token.
_BIGRAM = np.array([
    [0.0, 0.0, 0.6, 0.4],    # after start: a .6, b .4
    [1.0, 0.0, 0.0, 0.0],    # after EOS (ignored)
    [0.0, 0.5, 0.1, 0.4],    # after a: eos .5, a .1, b .4
    [0.0, 0.9, 0.06, 0.04],  # after b: eos .9, a .06, b .04
])
_BIGRAM_LOGITS = jnp.asarray(np.log(np.maximum(_BIGRAM, 1e-30)), jnp.float32)


def _bigram_step(token_ids, cache, step):
  """StepFn of the bigram model; the cache is a per-row step counter (gathered by beams)."""
  del step
  return _BIGRAM_LOGITS[token_ids], cache + 1


def _bigram_inputs(batch, beam=1):
  rows = batch * beam
  return jnp.zeros((rows,), jnp.int32), jnp.full((rows, 3), 7, jnp.int32)


def _lp(length, alpha):
  return ((5.0 + length) / 6.0) ** alpha


# ----------------------------------------------------------------------------------------------
# Helpers: length penalty, beam layout.
# ----------------------------------------------------------------------------------------------


def test_length_penalty_literals():
  np.testing.assert_allclose(decoding.length_penalty(jnp.array(5), 0.6), (10 / 6) ** 0.6,
                             rtol=1e-6)
  assert float(decoding.length_penalty(jnp.array(9), 0.0)) == 1.0
  np.testing.assert_allclose(decoding.length_penalty(jnp.array(1), 1.0), 1.0)


def test_expand_and_gather_beams_literal():
  tree = {"rows": jnp.array([[10], [20]]), "index": jnp.array(4)}
  expanded = decoding.expand_to_beams(tree, 3)
  assert expanded["rows"][:, 0].tolist() == [10, 10, 10, 20, 20, 20]
  assert int(expanded["index"]) == 4  # scalars are shared, not repeated
  values = {"rows": jnp.arange(6) * 10, "index": jnp.array(4)}
  gathered = decoding.gather_beams(values, jnp.array([[2, 2, 0], [1, 0, 0]]), 2, 3)
  assert gathered["rows"].tolist() == [20, 20, 0, 40, 30, 30]
  assert int(gathered["index"]) == 4


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=3,
                           max_size=3))
def test_gather_beams_matches_numpy_indexing(parents):
  batch, beam = 3, 4
  values = np.arange(batch * beam * 2).reshape(batch * beam, 2)
  parents = np.array(parents)
  gathered = np.asarray(decoding.gather_beams(jnp.asarray(values), jnp.asarray(parents), batch,
                                              beam))
  expected = values.reshape(batch, beam, 2)[np.arange(batch)[:, None], parents].reshape(-1, 2)
  np.testing.assert_array_equal(gathered, expected)


def test_gather_beams_rejects_wrong_row_count():
  with pytest.raises(ValueError, match="expected batch \\* beam = 6 rows"):
    decoding.gather_beams(jnp.zeros((5, 2)), jnp.zeros((2, 3), jnp.int32), 2, 3)


# ----------------------------------------------------------------------------------------------
# Literal searches on the bigram model.
# ----------------------------------------------------------------------------------------------


def _count_steps(step_fn, counter):
  def counted(token_ids, cache, step):
    jax.debug.callback(lambda: counter.append(1))
    return step_fn(token_ids, cache, step)
  return counted


def test_greedy_on_bigram_is_literal_and_stops_early():
  calls = []
  cache, inputs = _bigram_inputs(batch=2)
  out = decoding.greedy_decode(_count_steps(_bigram_step, calls), cache, inputs,
                               max_decode_length=8, start_token_id=PAD, eos_id=EOS, alpha=0.6)
  assert out.tokens.tolist() == [[A, EOS, 0, 0, 0, 0, 0, 0]] * 2
  np.testing.assert_allclose(out.log_probs, [np.log(0.3)] * 2, rtol=1e-5)
  np.testing.assert_allclose(out.scores, [np.log(0.3) / _lp(2, 0.6)] * 2, rtol=1e-5)
  assert len(calls) == 2  # both rows ended at step 1: the loop stopped there, not at 8


def test_beam_on_bigram_is_literal_and_stops_early():
  calls = []
  cache, inputs = _bigram_inputs(batch=2, beam=3)
  out = decoding.beam_search(_count_steps(_bigram_step, calls), cache, inputs, beam_size=3,
                             max_decode_length=8, start_token_id=PAD, eos_id=EOS, alpha=0.6)
  # Beam search finds "b" (.4 * .9 = .36), which greedy misses, then "a" (.3), "a b" (.216).
  expected_tokens = [[B, EOS, 0, 0, 0, 0, 0, 0], [A, EOS, 0, 0, 0, 0, 0, 0],
                     [A, B, EOS, 0, 0, 0, 0, 0]]
  assert out.tokens.tolist() == [expected_tokens] * 2
  np.testing.assert_allclose(out.log_probs, [np.log([0.36, 0.3, 0.216])] * 2, rtol=1e-5)
  expected_scores = np.log([0.36, 0.3, 0.216]) / _lp(np.array([2, 2, 3]), 0.6)
  np.testing.assert_allclose(out.scores, [expected_scores] * 2, rtol=1e-5)
  # After step 2 the pool is full and no alive hypothesis (at most .6 * .4 * .06) can win.
  assert len(calls) == 3


@pytest.mark.parametrize("stopping, second, calls", [
    ("all", [A, B, EOS, 0], 3),   # exact: waits for "a b" (.216, length 3), which wins at alpha 3
    ("best", [A, B, EOS, 0], 3),  # "b" is not settled before "a b" is out of reach: same here
    ("early", [A, EOS, 0, 0], 2),  # stops once two hypotheses ("b", "a") have finished
])
def test_stopping_rules_on_bigram(stopping, second, calls):
  counted = []
  cache, inputs = _bigram_inputs(batch=1, beam=2)
  out = decoding.beam_search(_count_steps(_bigram_step, counted), cache, inputs, beam_size=2,
                             max_decode_length=4, start_token_id=PAD, eos_id=EOS, alpha=3.0,
                             stopping=stopping)
  assert out.tokens.tolist() == [[[B, EOS, 0, 0], second]]
  assert len(counted) == calls


def test_stopping_rule_is_checked():
  cache, inputs = _bigram_inputs(batch=1, beam=2)
  with pytest.raises(ValueError, match="stopping must be one of"):
    decoding.beam_search(_bigram_step, cache, inputs, beam_size=2, max_decode_length=4,
                         stopping="never")


@functools.partial(jax.jit, static_argnames=("beam_size", "alpha", "stopping"))
def _table_search(logits_table, *, beam_size, alpha, stopping):
  """Beam search over a bigram model given by `logits_table` [vocab, vocab] (start = PAD),
  counting the loop's steps in the cache."""

  def step_fn(token_ids, cache, step):
    del step
    return logits_table[token_ids], cache + 1

  cache, inputs = _bigram_inputs(batch=1, beam=beam_size)
  out = decoding.beam_search(step_fn, cache, inputs, beam_size=beam_size, max_decode_length=7,
                             start_token_id=PAD, eos_id=EOS, alpha=alpha, stopping=stopping)
  return out, cache


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(table=st.lists(st.floats(-4.0, 4.0), min_size=25, max_size=25),
                  beam_size=st.sampled_from([2, 3]), alpha=st.sampled_from([0.6, 2.0]))
def test_best_rule_finds_the_exact_searchs_best_hypothesis(table, beam_size, alpha):
  logits = jnp.asarray(np.asarray(table, np.float32).reshape(5, 5))

  def steps_of(stopping):
    counted = []
    jax.effects_barrier()
    out = decoding.beam_search(
        _count_steps(lambda t, c, s: (logits[t], c + 1), counted),
        *_bigram_inputs(batch=1, beam=beam_size), beam_size=beam_size, max_decode_length=7,
        start_token_id=PAD, eos_id=EOS, alpha=alpha, stopping=stopping)
    jax.effects_barrier()
    return out, len(counted)

  exact, exact_steps = steps_of("all")
  best, best_steps = steps_of("best")
  assert best.tokens[0, 0].tolist() == exact.tokens[0, 0].tolist()
  np.testing.assert_allclose(best.scores[0, 0], exact.scores[0, 0], rtol=1e-6)
  assert best_steps <= exact_steps


def test_beam_without_finished_hypotheses_returns_alive_ones():
  cache, inputs = _bigram_inputs(batch=1, beam=2)
  out = decoding.beam_search(_bigram_step, cache, inputs, beam_size=2, max_decode_length=1,
                             start_token_id=PAD, eos_id=EOS, alpha=1.0)
  assert out.tokens.tolist() == [[[A], [B]]]
  np.testing.assert_allclose(out.log_probs, [np.log([0.6, 0.4])], rtol=1e-5)
  np.testing.assert_allclose(out.scores, [np.log([0.6, 0.4])], rtol=1e-5)  # lp(1) = 1


# ----------------------------------------------------------------------------------------------
# Constraints on the bigram model.
# ----------------------------------------------------------------------------------------------


def test_allowed_tokens_constraint_on_bigram():
  cache, inputs = _bigram_inputs(batch=2, beam=2)
  allowed = jnp.array([[False, True, True, False],    # example 0: never "b"
                       [False, True, False, True]])   # example 1: never "a"
  out = decoding.beam_search(_bigram_step, cache, inputs, beam_size=2, max_decode_length=4,
                             start_token_id=PAD, eos_id=EOS, alpha=0.0,
                             constraint=decoding.AllowedTokensConstraint(allowed))
  # Probabilities renormalised over the allowed tokens: after start a is certain (ex. 0), and
  # after a, eos/a = 5/6, 1/6.
  assert out.tokens[0].tolist() == [[A, EOS, 0, 0], [A, A, EOS, 0]]
  np.testing.assert_allclose(out.log_probs[0], np.log([5 / 6, 1 / 6 * 5 / 6]), rtol=1e-5)
  assert out.tokens[1].tolist() == [[B, EOS, 0, 0], [B, B, EOS, 0]]
  np.testing.assert_allclose(out.log_probs[1], np.log([0.9 / 0.94, 0.04 / 0.94 * 0.9 / 0.94]),
                             rtol=1e-5)


def test_every_token_forbidden_gives_minus_infinity():
  allowed = jnp.array([[True, True, True, True], [False, False, False, False]])
  constraint = decoding.AllowedTokensConstraint(allowed)
  cache, inputs = _bigram_inputs(batch=2)
  greedy = decoding.greedy_decode(_bigram_step, cache, inputs, max_decode_length=3,
                                  constraint=constraint)
  assert greedy.tokens.tolist() == [[A, EOS, 0], [EOS, 0, 0]]
  assert np.isfinite(greedy.scores[0]) and np.isneginf(greedy.scores[1])
  cache, inputs = _bigram_inputs(batch=2, beam=2)
  beam = decoding.beam_search(_bigram_step, cache, inputs, beam_size=2, max_decode_length=3,
                              constraint=constraint)
  assert np.isfinite(beam.scores[0]).all()
  assert np.isneginf(beam.scores[1]).all() and np.isneginf(beam.log_probs[1]).all()
  assert beam.tokens[1].tolist() == [[0, 0, 0], [0, 0, 0]]


def test_allowed_tokens_constraint_rejects_row_mismatch():
  constraint = decoding.AllowedTokensConstraint(jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match="2 examples but decoding has 3 rows"):
    constraint.init(jnp.zeros((3, 5), jnp.int32))


@pytest.mark.parametrize("kwargs, message", [
    (dict(beam_size=0), "beam_size"),
    (dict(beam_size=2, max_decode_length=0), "max_decode_length"),
    (dict(beam_size=4), "not a multiple of beam_size"),
    (dict(beam_size=2, eos_id=-1), "eos_id"),
    (dict(beam_size=2, alpha=-0.5), "alpha"),
])
def test_search_rejects_bad_arguments(kwargs, message):
  cache, inputs = _bigram_inputs(batch=6)
  kwargs = {"max_decode_length": 4, **kwargs}
  with pytest.raises(ValueError, match=message):
    decoding.beam_search(_bigram_step, cache, inputs, **kwargs)


def test_search_rejects_one_dimensional_inputs():
  with pytest.raises(ValueError, match="encoder_input_tokens must be"):
    decoding.greedy_decode(_bigram_step, jnp.zeros((2,)), jnp.zeros((2,), jnp.int32),
                           max_decode_length=3)


# ----------------------------------------------------------------------------------------------
# The tiny T5: generate.py end to end.
# ----------------------------------------------------------------------------------------------

TINY = model_lib.T5Config(vocab_size=24, emb_dim=32, num_heads=2, head_dim=8, mlp_dim=64,
                          num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
NET = model_lib.Transformer(TINY)
# All model decodes use this input shape and length, so they share compiled programs.
INPUTS = jnp.array([[5, 6, 7, 8, 1, 0], [9, 4, 9, 3, 1, 0]], jnp.int32)
TRAIN_TARGET = jnp.array([[10, 11, 12, 1]], jnp.int32)
MAX_LEN = 6


@pytest.fixture(scope="module")
def random_params():
  """Random parameters drawn with numpy (no init program to compile: test_model covers it),
  scaled as T5 initialises them (test_inference.random_params)."""
  return shared.random_params(TINY, seed=3)


@pytest.fixture(scope="module")
def trained_params(random_params):
  """The tiny model overfit (optax.adam, 150 steps) to INPUTS[0] -> TRAIN_TARGET."""
  enc = INPUTS[:1]
  dec_in = jnp.pad(TRAIN_TARGET[:, :-1], ((0, 0), (1, 0)))
  optimizer = optax.adam(1e-2)

  @jax.jit
  def train_step(params, opt_state):
    def loss_fn(p):
      logits = NET.apply({"params": p}, enc, dec_in, TRAIN_TARGET, enable_dropout=False)
      loss, _, weight = model_lib.compute_loss(logits, TRAIN_TARGET, None)
      return loss / weight
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, opt_state = random_params, optimizer.init(random_params)
  losses = []
  for _ in range(150):
    params, opt_state, loss = train_step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.01 < losses[0]
  return params


def _hypothesis_lengths(tokens):
  """Tokens up to and including the first EOS (all of them when there is none)."""
  has_eos = (tokens == EOS).any(-1)
  return np.where(has_eos, np.argmax(tokens == EOS, axis=-1) + 1, tokens.shape[-1])


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced_log_probs(net, params, enc, tokens, lengths):
  """Sum of log P(token) under a full (uncached) forward pass: [rows] for tokens [rows, len].

  Positions from `lengths` on are ignored (the causal mask keeps them from affecting the
  earlier ones).  The decoder input is the shifted tokens with 0 first, as seqio makes it.
  """
  dec_in = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  logits = net.apply({"params": params}, enc, dec_in, jnp.ones_like(tokens),
                     enable_dropout=False)
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens[..., None], -1)[..., 0]
  in_hypothesis = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
  return jnp.sum(jnp.where(in_hypothesis, log_probs, 0.0), axis=-1)


def test_overfit_model_decodes_its_target_with_greedy_and_beam(trained_params):
  expected = [10, 11, 12, 1, 0, 0]
  tokens, scores = generate.predict_batch(NET, trained_params, INPUTS,
                                          max_decode_length=MAX_LEN)
  assert tokens.shape == (2, 1, MAX_LEN) and scores.shape == (2, 1)
  assert tokens[0, 0].tolist() == expected
  tokens, scores = generate.predict_batch(NET, trained_params, INPUTS, beam_size=4,
                                          max_decode_length=MAX_LEN)
  assert tokens.shape == (2, 4, MAX_LEN) and scores.shape == (2, 4)
  assert tokens[0, 0].tolist() == expected
  assert scores[0, 0] > -0.05  # near-certain after overfitting


@pytest.mark.parametrize("params_name", ["random_params", "trained_params"])
def test_beam_scores_are_sorted_and_match_uncached_forward(params_name, request):
  params = request.getfixturevalue(params_name)
  out = generate.decode_batch(NET, params, INPUTS, beam_size=4, max_decode_length=MAX_LEN)
  scores = np.asarray(out.scores)
  assert np.isfinite(scores).all()
  assert (np.diff(scores, axis=1) <= 0).all()
  tokens = np.asarray(out.tokens).reshape(8, MAX_LEN)
  lengths = _hypothesis_lengths(tokens)
  # Nothing after EOS.
  assert all((row[length:] == 0).all() for row, length in zip(tokens, lengths))
  # The cached, beam-gathered search scored each hypothesis as a full forward pass does.
  log_probs = _teacher_forced_log_probs(NET, params, jnp.repeat(INPUTS, 4, axis=0),
                                        jnp.asarray(tokens), jnp.asarray(lengths))
  np.testing.assert_allclose(out.log_probs.reshape(8), log_probs, atol=1e-4)
  np.testing.assert_allclose(scores.reshape(8), log_probs / _lp(lengths, 0.6), atol=1e-4)


def test_beam_width_one_equals_greedy(random_params):
  @jax.jit
  def both(params):
    step_fn, cache, rows = generate.init_decoding(NET, params, INPUTS, beam_size=1,
                                                  max_decode_length=MAX_LEN)
    greedy = decoding.greedy_decode(step_fn, cache, rows, max_decode_length=MAX_LEN)
    beam = decoding.beam_search(step_fn, cache, rows, beam_size=1, max_decode_length=MAX_LEN)
    return greedy, beam

  greedy, beam = both(random_params)
  np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
  np.testing.assert_allclose(beam.log_probs[:, 0], greedy.log_probs, atol=1e-5)
  np.testing.assert_allclose(beam.scores[:, 0], greedy.scores, atol=1e-5)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_forbidden_tokens_never_appear(trained_params, beam_size):
  unconstrained, _ = generate.predict_batch(NET, trained_params, INPUTS, beam_size=beam_size,
                                            max_decode_length=MAX_LEN)
  assert (np.asarray(unconstrained[0]) == 11).any()  # the test below can fail
  allowed = np.ones((2, TINY.vocab_size), bool)
  allowed[0, [11, 12]] = False   # example 0 may not say 11 or 12 (its memorised target)
  allowed[1, 10:] = False        # example 1 only tokens < 10
  constraint = decoding.AllowedTokensConstraint(jnp.asarray(allowed))
  tokens, scores = generate.predict_batch(NET, trained_params, INPUTS, beam_size=beam_size,
                                          max_decode_length=MAX_LEN, constraint=constraint)
  tokens = np.asarray(tokens)
  assert not np.isin(tokens[0], [11, 12]).any()
  assert (tokens[1] < 10).all()
  assert np.isfinite(np.asarray(scores)).all()


@flax.struct.dataclass
class CopyEachInputTokenOnce:
  """Test constraint in the shape of the NER copy constraint: state [rows, input_len].

  Every generated token must be an input token not used yet (each input position once), or EOS.
  """
  vocab_size: int = flax.struct.field(pytree_node=False)
  eos_id: int = flax.struct.field(pytree_node=False, default=EOS)

  def init(self, encoder_input_tokens):
    usable = (encoder_input_tokens > 0) & (encoder_input_tokens != self.eos_id)
    return {"ids": encoder_input_tokens, "unused": usable}

  def step(self, state, token_ids, logits, step):
    # Consume the token chosen at step - 1: mark the first unused input position holding it.
    match = state["unused"] & (state["ids"] == token_ids[:, None]) & (step > 0)
    first = match & (jnp.cumsum(match, axis=1) == 1)
    unused = state["unused"] & ~first
    per_position = jax.nn.one_hot(state["ids"], self.vocab_size, dtype=bool) & unused[..., None]
    allowed = jnp.any(per_position, axis=1).at[:, self.eos_id].set(True)
    return (jnp.where(allowed, logits, decoding.FORBIDDEN_LOGIT),
            {"ids": state["ids"], "unused": unused})


def _copies_input(tokens, input_row):
  used = collections.Counter(t for t in tokens.tolist() if t not in (0, EOS))
  available = collections.Counter(t for t in input_row.tolist() if t not in (0, EOS))
  return all(available[t] >= n for t, n in used.items())


def test_stateful_copy_constraint_follows_the_beams(random_params):
  unconstrained = generate.decode_batch(NET, random_params, INPUTS, beam_size=4,
                                        max_decode_length=MAX_LEN)
  assert not all(_copies_input(np.asarray(unconstrained.tokens[e, k]), np.asarray(INPUTS[e]))
                 for e in range(2) for k in range(4))  # the test below can fail
  out = generate.decode_batch(NET, random_params, INPUTS,
                              CopyEachInputTokenOnce(vocab_size=TINY.vocab_size), beam_size=4,
                              max_decode_length=MAX_LEN)
  for example in range(2):
    for beam in range(4):
      if np.isfinite(out.scores[example, beam]):
        assert _copies_input(np.asarray(out.tokens[example, beam]),
                             np.asarray(INPUTS[example])), (example, beam)


def test_decoder_start_token_is_fed_first(random_params):
  config = dataclasses.replace(TINY, decoder_start_token_id=3)
  net = model_lib.Transformer(config)
  out = generate.decode_batch(net, random_params, INPUTS, beam_size=1,
                              max_decode_length=MAX_LEN)
  tokens = np.asarray(out.tokens[:, 0])
  # The search feeds 3 first; the full forward gets seqio's 0 and replaces it by 3 itself.
  lengths = _hypothesis_lengths(tokens)
  log_probs = _teacher_forced_log_probs(net, random_params, INPUTS, jnp.asarray(tokens),
                                        jnp.asarray(lengths))
  np.testing.assert_allclose(out.log_probs[:, 0], log_probs, atol=1e-4)
  # Under start id 0 the same parameters score these tokens differently.
  plain = _teacher_forced_log_probs(NET, random_params, INPUTS, jnp.asarray(tokens),
                                    jnp.asarray(lengths))
  assert np.abs(np.asarray(plain - log_probs)).max() > 1e-3


def test_bfloat16_model_decodes(random_params):
  net = model_lib.Transformer(dataclasses.replace(TINY, dtype="bfloat16"))
  tokens, scores = generate.predict_batch(net, random_params, INPUTS, beam_size=2,
                                          max_decode_length=3)
  assert tokens.shape == (2, 2, 3) and tokens.dtype == jnp.int32
  assert scores.dtype == jnp.float32 and np.isfinite(np.asarray(scores)).all()


@pytest.mark.parametrize("inputs, kwargs, error, message", [
    (INPUTS[0], {}, ValueError, "encoder_input_tokens must be"),
    (INPUTS.astype(jnp.float32), {}, TypeError, "integer"),
    (INPUTS, dict(beam_size=0), ValueError, "beam_size"),
    (INPUTS, dict(max_decode_length=0), ValueError, "max_decode_length"),
    (INPUTS, dict(eos_id=24), ValueError, "eos_id 24"),
])
def test_predict_batch_rejects_bad_arguments(random_params, inputs, kwargs, error, message):
  kwargs = {"max_decode_length": MAX_LEN, **kwargs}
  with pytest.raises(error, match=message):
    generate.predict_batch(NET, random_params, inputs, **kwargs)


def test_cache_lengths_double_from_64_up_to_the_maximum():
  assert generate.cache_lengths(6) == (6,)
  assert generate.cache_lengths(64) == (64,)
  assert generate.cache_lengths(65) == (64, 65)
  assert generate.cache_lengths(200) == (64, 128, 200)
  assert generate.cache_lengths(512) == (64, 128, 256, 512)


@pytest.mark.parametrize("params_name", ["random_params", "trained_params"])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_growing_cache_gives_the_same_search(params_name, beam_size, request):
  params = request.getfixturevalue(params_name)

  @functools.partial(jax.jit, static_argnums=1)
  def search(params, lengths):
    step_fn, cache, rows = generate.init_decoding(NET, params, INPUTS, beam_size=beam_size,
                                                  max_decode_length=lengths[0])
    kwargs = dict(max_decode_length=MAX_LEN, cache_lengths=lengths,
                  grow_cache=generate.grow_cache)
    if beam_size == 1:
      return decoding.greedy_decode(step_fn, cache, rows, **kwargs), cache
    return decoding.beam_search(step_fn, cache, rows, beam_size=beam_size, **kwargs), cache

  (whole, whole_cache) = search(params, (MAX_LEN,))
  (grown, first_cache) = search(params, (2, 3, MAX_LEN))
  # The grown search really started on a 2-position cache.
  assert first_cache["decoder"]["layers_0"]["self_attention"]["cached_key"].shape[2] == 2
  assert whole_cache["decoder"]["layers_0"]["self_attention"]["cached_key"].shape[2] == MAX_LEN
  np.testing.assert_array_equal(grown.tokens, whole.tokens)
  np.testing.assert_allclose(grown.log_probs, whole.log_probs, atol=1e-5)
  np.testing.assert_allclose(grown.scores, whole.scores, atol=1e-5)


@pytest.mark.parametrize("lengths, grow, message", [
    ((4, 2, MAX_LEN), generate.grow_cache, "increase strictly"),
    ((2, 4), generate.grow_cache, "up to max_decode_length"),
    ((2, MAX_LEN), None, "grow_cache"),
])
def test_growing_cache_rejects_bad_lengths(random_params, lengths, grow, message):
  step_fn, cache, rows = generate.init_decoding(NET, random_params, INPUTS, beam_size=1,
                                                max_decode_length=lengths[0])
  with pytest.raises(ValueError, match=message):
    decoding.greedy_decode(step_fn, cache, rows, max_decode_length=MAX_LEN,
                           cache_lengths=lengths, grow_cache=grow)


def test_trim_to_bucket_cuts_to_the_shortest_holding_bucket():
  batch = np.zeros((2, 100), np.int32)
  batch[0, :5] = 7
  batch[1, :40] = 7
  assert generate.input_buckets(100) == (32, 48, 64, 96, 100)
  assert generate.trim_to_bucket(batch, generate.input_buckets(100)).shape == (2, 48)
  assert generate.trim_to_bucket(batch[:1], generate.input_buckets(100)).shape == (1, 32)
  assert generate.trim_to_bucket(np.zeros((1, 100), np.int32), (32, 64, 100)).shape == (1, 32)
  batch[1, 99] = 1
  assert generate.trim_to_bucket(batch, generate.input_buckets(100)).shape == (2, 100)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_extra_input_padding_does_not_change_the_search(trained_params, beam_size):
  # What trim_to_bucket relies on: a batch decodes the same at any padded width.
  short = generate.decode_batch(NET, trained_params, INPUTS, beam_size=beam_size,
                                max_decode_length=MAX_LEN)
  padded = generate.decode_batch(NET, trained_params, jnp.pad(INPUTS, ((0, 0), (0, 10))),
                                 beam_size=beam_size, max_decode_length=MAX_LEN)
  np.testing.assert_array_equal(padded.tokens, short.tokens)
  np.testing.assert_allclose(padded.scores, short.scores, atol=1e-5)


@pytest.mark.parametrize("params_name", ["random_params", "trained_params"])
@pytest.mark.parametrize("beam_size", [1, 4])
@pytest.mark.parametrize("constrained", [False, True])
def test_token_log_probs_are_the_models_per_token_log_probs(params_name, beam_size, constrained,
                                                            request):
  params = request.getfixturevalue(params_name)
  constraint = None
  if constrained:  # tokens 11 and 12 forbidden: the search's distribution is not the model's
    allowed = np.ones((2, TINY.vocab_size), bool)
    allowed[:, [11, 12]] = False
    constraint = decoding.AllowedTokensConstraint(jnp.asarray(allowed))
  out = generate.decode_batch(NET, params, INPUTS, constraint, beam_size=beam_size,
                              max_decode_length=MAX_LEN)
  rows = 2 * beam_size
  tokens = np.asarray(out.tokens).reshape(rows, MAX_LEN)
  token_log_probs = np.asarray(out.token_log_probs).reshape(rows, MAX_LEN)
  lengths = _hypothesis_lengths(tokens)
  # Per token, against a full forward pass (unconstrained softmax) over the same output.
  dec_in = jnp.pad(jnp.asarray(tokens)[:, :-1], ((0, 0), (1, 0)))
  logits = NET.apply({"params": params}, jnp.repeat(INPUTS, beam_size, axis=0), dec_in,
                     jnp.ones_like(dec_in), enable_dropout=False)
  expected = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, -1)), tokens[..., None],
                                -1)[..., 0]
  inside = np.arange(MAX_LEN)[None, :] < lengths[:, None]
  np.testing.assert_allclose(np.where(inside, token_log_probs, 0.0),
                             np.where(inside, expected, 0.0), atol=1e-4)
  assert (token_log_probs[~inside] == 0).all()
  if not constrained:  # then the search's log-prob is their sum
    np.testing.assert_allclose(token_log_probs.sum(-1), np.asarray(out.log_probs).reshape(rows),
                               atol=1e-4)
