"""The beam-grouped self-attention cache (attention._beam_group_attention,
generate.reorder_beam_cache / group_beam_cache) against the eager re-ordering it replaces, and
beam search with the output layer after the loop (decoding.beam_search's output_layer).

The grouped cache is never copied when beams are re-ordered: only an ancestry table follows
the beams.  It must give the decoder the same logits as the eagerly gathered cache for every
ancestry, across a growing cache and a switch from eager to grouped mid-search, and the
searches through generate.decode_batch must return the same ids and scores either way.
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import decoding
from punified_jax import generate
from punified_jax import model as model_lib

import test_inference as shared

pytestmark = pytest.mark.usefixtures("fast_compiles")

TINY = model_lib.T5Config(vocab_size=24, emb_dim=32, num_heads=2, head_dim=8, mlp_dim=64,
                          num_encoder_layers=1, num_decoder_layers=2, dropout_rate=0.0)
NET = model_lib.Transformer(TINY)
BATCH, BEAM, STEPS = 2, 3, 9
INPUTS = jnp.array([[5, 6, 7, 8, 1, 0], [9, 4, 9, 3, 1, 0]], jnp.int32)
# The cache grows from 3 to 6 to 9 positions (generate.grow_cache), as a real search's does.
GROW_AT = (3, 6)


@pytest.fixture(scope="module")
def params():
  return shared.random_params(TINY, seed=5)


@functools.partial(jax.jit, static_argnames=("mode",))
def _logits_under_ancestry(params, tokens, parents, *, mode):
  """The decoder's logits at every step [STEPS, rows, vocab] when the beams follow `parents`
  [STEPS, BATCH, BEAM] and feed `tokens` [STEPS, rows].  mode: "eager" (gather_beams every
  step), "grouped" (grouped from the start) or "switch" (eager, grouped from the first
  growth on, as a single example's search does)."""
  step_fn, cache, _ = generate.init_decoding(NET, params, INPUTS, beam_size=BEAM,
                                             max_decode_length=GROW_AT[0],
                                             beam_grouped_cache=mode == "grouped")
  out = []
  for step in range(STEPS):
    if step in GROW_AT:
      if mode == "switch" and not generate.is_beam_grouped(cache):
        cache = generate.group_beam_cache(cache, BEAM)
      cache = generate.grow_cache(cache, step + 3)
    logits, cache = step_fn(tokens[step], cache, jnp.array(step))
    out.append(logits)
    if mode == "eager":
      cache = decoding.gather_beams(cache, parents[step], BATCH, BEAM)
    else:
      cache = generate.reorder_beam_cache(cache, parents[step], BATCH, BEAM)
  return jnp.stack(out)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(parents=st.lists(st.integers(0, BEAM - 1), min_size=STEPS * BATCH * BEAM,
                                   max_size=STEPS * BATCH * BEAM),
                  tokens=st.lists(st.integers(2, TINY.vocab_size - 1),
                                  min_size=STEPS * BATCH * BEAM,
                                  max_size=STEPS * BATCH * BEAM))
def test_grouped_cache_equals_eager_reordering_on_random_ancestries(params, parents, tokens):
  parents = jnp.asarray(parents, jnp.int32).reshape(STEPS, BATCH, BEAM)
  tokens = jnp.asarray(tokens, jnp.int32).reshape(STEPS, BATCH * BEAM)
  eager = _logits_under_ancestry(params, tokens, parents, mode="eager")
  for mode in ("grouped", "switch"):
    np.testing.assert_allclose(_logits_under_ancestry(params, tokens, parents, mode=mode),
                               eager, atol=1e-5, rtol=1e-5, err_msg=mode)


def test_group_beam_cache_layout_literal():
  """Row r's history goes to slot r % beams of its example; keys transposed; the ancestry
  table marks the written positions as the row's own slot."""
  values = jnp.arange(4 * 1 * 3 * 1, dtype=jnp.float32).reshape(4, 1, 3, 1)  # rows 4, len 3
  cache = {"decoder": {"cache_index": jnp.array(2, jnp.int32),
                       "layers_0": {"self_attention": {"cached_key": values,
                                                       "cached_value": values}}}}
  grouped = generate.group_beam_cache(cache, 2)
  attention = grouped["decoder"]["layers_0"]["self_attention"]
  assert attention["cached_value"][:, 0, :, 0].tolist() == [[0, 1, 2, 3, 4, 5],
                                                             [6, 7, 8, 9, 10, 11]]
  assert attention["cached_key"][:, 0, 0, :].tolist() == [[0, 1, 2, 3, 4, 5],
                                                           [6, 7, 8, 9, 10, 11]]
  source = np.asarray(grouped["decoder"]["beam_source"])  # [rows, len, beams]
  assert source[:, :, 0].astype(int).tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]]
  assert source[:, :, 1].astype(int).tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 0]]
  assert generate.is_beam_grouped(grouped) and not generate.is_beam_grouped(cache)


@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("eos_allowed", [False, True])
def test_decode_batch_gives_the_same_beams_as_the_old_search(params, rows, eos_allowed,
                                                             monkeypatch):
  """Old search (eager gather, output layer in the loop) against the grouped cache with the
  output layer in the loop, and with it after the loop (the default): the same ids, scores
  and the model's per-token log-probs."""
  # Short cache lengths (2, 4, 8, 9) so that the searches grow, and switch, within 9 steps.
  monkeypatch.setattr(generate, "FIRST_CACHE_LENGTH", 2)
  monkeypatch.setattr(generate, "GROUP_SINGLE_EXAMPLE_BEAMS_FROM", 4)
  inputs = jnp.concatenate([INPUTS, INPUTS[:, :1]], axis=1)[:rows]  # a shape of its own
  eos = 1 if eos_allowed else 23
  # Token 23 never allowed: with eos 23 every beam runs all 9 steps; with eos 1 hypotheses
  # end at different steps (the finished pool keeps where each token was scored).  Token 0 may
  # be generated too: it still has a log-prob inside a hypothesis.
  ids = jnp.arange(TINY.vocab_size)[None].repeat(rows, 0)
  allowed = decoding.AllowedTokensConstraint(ids < 23)
  outputs = [generate.decode_batch(NET, params, inputs, allowed, beam_size=BEAM,
                                   max_decode_length=9, eos_id=eos,
                                   beam_grouped_cache=grouped,
                                   beam_output_layer_in_loop=in_loop)
             for grouped, in_loop in ((False, True), (True, True), (True, False))]
  old = outputs[0]
  if eos_allowed:
    lengths = (np.asarray(old.tokens) > 0).sum(-1)
    assert len(np.unique(lengths)) > 1  # hypotheses of several lengths: the test can fail
  else:
    assert (np.asarray(old.tokens)[:, :, -1] > 0).all()  # every beam ran all 9 steps
  for new in outputs[1:]:
    np.testing.assert_array_equal(np.asarray(new.tokens), np.asarray(old.tokens))
    np.testing.assert_allclose(new.scores, old.scores, atol=1e-5)
    np.testing.assert_allclose(new.token_log_probs, old.token_log_probs, atol=1e-5)


@pytest.mark.parametrize("in_loop", [False, True])
@pytest.mark.parametrize("kept", [1, 2])
def test_log_prob_beams_keeps_the_best_beams_log_probs(params, in_loop, kept):
  """log_prob_beams=k: the same search, the same per-token log-probs for the best k beams
  (computed after the loop, or taken from the loop), NaN for the others."""
  allowed = decoding.AllowedTokensConstraint(jnp.arange(TINY.vocab_size)[None].repeat(2, 0) < 23)
  kwargs = dict(beam_size=BEAM, max_decode_length=9, beam_output_layer_in_loop=in_loop)
  every = generate.decode_batch(NET, params, INPUTS, allowed, **kwargs)
  best = generate.decode_batch(NET, params, INPUTS, allowed, log_prob_beams=kept, **kwargs)
  np.testing.assert_array_equal(np.asarray(best.tokens), np.asarray(every.tokens))
  np.testing.assert_array_equal(np.asarray(best.scores), np.asarray(every.scores))
  got = np.asarray(best.token_log_probs)
  np.testing.assert_allclose(got[:, :kept], np.asarray(every.token_log_probs)[:, :kept],
                             atol=1e-6)
  assert np.isnan(got[:, kept:]).all()
  assert np.isfinite(got[:, :kept]).all()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_log_prob_beams_must_be_a_positive_int(params, bad):
  with pytest.raises(ValueError, match="log_prob_beams"):
    generate.decode_batch(NET, params, INPUTS, beam_size=BEAM, max_decode_length=4,
                          log_prob_beams=bad)


def test_grouped_cache_rejects_chunks(params):
  step_fn, cache, _ = generate.init_decoding(NET, params, INPUTS, beam_size=BEAM,
                                             max_decode_length=4, beam_grouped_cache=True)
  with pytest.raises(ValueError, match="one token per call"):
    step_fn.chunk_fn(jnp.ones((BATCH * BEAM, 2), jnp.int32),
                     jnp.zeros((BATCH * BEAM,), jnp.int32), cache)
