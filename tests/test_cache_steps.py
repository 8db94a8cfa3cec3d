"""Growing caches in half steps (generate.cache_lengths, CACHE_STEPS "half": 64, 96, 128, 192,
256, ...) and in doublings (the default "double": 64, 128, 256, ...).

The cache lengths change only the work: a search whose cache grows in half steps, or in
doublings, must return what one cache of max_decode_length returns (same ids; scores, log-probs
and the model's per-token log-probs within 1e-6), for greedy and beam search over the allowed
tokens (generate.decode_batch's default), through decode_batch.  The first cache length is cut
to 4 here (generate.FIRST_CACHE_LENGTH) so that outputs of up to 24 tokens cross every kind of
boundary: half steps grow at 6, 8, 12, 16 and 24; doublings at 8, 16 and 24.
"""

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import constraints
from punified_jax import generate
from punified_jax import model as model_lib
from punified_jax import prompts

import test_inference as shared
# The tiny config and its vocabulary (module-scoped fixtures of test_inference).
from test_inference import config, sp_vocab, vocab_path  # pylint: disable=unused-import

pytestmark = pytest.mark.usefixtures("fast_compiles")

INPUT_LEN = shared.FEATURE_LENGTHS["inputs"]
DECODE_LEN = 24
FIRST = 4
GROWTHS = {"half": [6, 8, 12, 16, 24], "double": [8, 16, 24], "whole": []}
TYPE_POOL = ["地点", "组织", "名称", "公司"]
_ALPHABET = "北京大学上海张三和在了去。，：（）(),: NULLAple苹果今天"
# Literal requests on which the random model's outputs end in different segments, some
# running to DECODE_LEN (checked in the test below: it can fail).
TEXTS = ["北京大学在上海", "张三去了苹果", "今天", "上海和北京大学张三"]
TYPES = [["地点", "组织"], ["名称"], ["公司", "地点", "组织"], ["组织"]]


def test_cache_lengths_literals():
  # The default stays the doublings (BENCHMARKS.md 2i); tests/test_decoding.py has their
  # literals.
  assert generate.DEFAULT_CACHE_STEPS == "double"
  assert generate.cache_lengths(256) == (64, 128, 256)
  assert generate.cache_lengths(6, "half") == (6,)
  assert generate.cache_lengths(64, "half") == (64,)
  assert generate.cache_lengths(65, "half") == (64, 65)
  assert generate.cache_lengths(96, "half") == (64, 96)
  assert generate.cache_lengths(100, "half") == (64, 96, 100)
  assert generate.cache_lengths(200, "half") == (64, 96, 128, 192, 200)
  assert generate.cache_lengths(256, "half") == (64, 96, 128, 192, 256)
  assert generate.cache_lengths(512, "half") == (64, 96, 128, 192, 256, 384, 512)
  assert generate.cache_lengths(256, "whole") == (256,)
  assert generate.half_step_lengths(100, 32) == generate.input_buckets(100)
  with pytest.raises(ValueError, match="cache steps must be one of"):
    generate.cache_lengths(256, "triple")


@pytest.fixture(scope="module")
def short_caches():
  """FIRST_CACHE_LENGTH = 4 while this module runs, and decode_batch's compiled programs
  dropped before and after (a program traced with another first length must not be reused,
  nor ours by later tests)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(generate, "FIRST_CACHE_LENGTH", FIRST)
    generate._decode_batch_jit.clear_cache()  # pylint: disable=protected-access
    yield
    generate._decode_batch_jit.clear_cache()  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def random_params(config):
  # Random weights under the constraint write outputs of many lengths, some to the limit.
  return shared.random_params(config, seed=1)


def _encode(vocab, text, types):
  ids = vocab.encode(prompts.format_input(text, types))[:INPUT_LEN - 1] + [vocab.eos_id]
  return ids + [0] * (INPUT_LEN - len(ids))


def _decode_all(config, params, vocab, inputs, *, beam_size, stopping):
  """{steps: decode_batch output} for every CACHE_STEPS value, the same inputs."""
  net = model_lib.Transformer(config)
  constraint = constraints.NerCopyConstraint.from_vocabulary(vocab)
  inputs = jnp.asarray(inputs, jnp.int32)
  return {steps: generate.decode_batch(net, params, inputs, constraint, beam_size=beam_size,
                                       max_decode_length=DECODE_LEN, eos_id=vocab.eos_id,
                                       stopping=stopping, cache_steps=steps)
          for steps in GROWTHS}


def _assert_same(whole, grown, steps):
  np.testing.assert_array_equal(np.asarray(grown.tokens), np.asarray(whole.tokens),
                                err_msg=steps)
  np.testing.assert_array_equal(np.asarray(grown.decoder_calls),
                                np.asarray(whole.decoder_calls), err_msg=steps)
  for name in ("scores", "log_probs", "token_log_probs"):
    want, got = np.asarray(getattr(whole, name)), np.asarray(getattr(grown, name))
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=name)
    finite = np.isfinite(want)
    # Issue 13's tolerance: a longer cache sums attention over more (masked, zero-weight)
    # positions, which moves float32 sums of magnitude ~10 by a few 1e-6 (seen: 1.9e-6).
    np.testing.assert_allclose(got[finite], want[finite], atol=1e-5, rtol=1e-6,
                               err_msg=f"{steps} {name}")


@pytest.mark.parametrize("beam_size,stopping", [(1, "all"), (4, "best"), (4, "all")])
def test_growing_caches_give_the_search_of_one_whole_cache(
    short_caches, config, random_params, sp_vocab, beam_size, stopping, monkeypatch):
  """Half steps and doublings against one cache of DECODE_LEN, on literal requests whose
  outputs end in several segments; the caches really grew where cache_lengths says."""
  generate._decode_batch_jit.clear_cache()  # pylint: disable=protected-access  (traced here)
  grown_to = []

  def recording_grow_cache(cache, length):
    grown_to.append(length)  # once per growth, while the search is traced
    return grow_cache(cache, length)

  grow_cache = generate.grow_cache
  monkeypatch.setattr(generate, "grow_cache", recording_grow_cache)
  inputs = [_encode(sp_vocab, text, types) for text, types in zip(TEXTS, TYPES)]
  outputs = _decode_all(config, random_params, sp_vocab, inputs, beam_size=beam_size,
                        stopping=stopping)
  assert grown_to == [length for steps in GROWTHS for length in GROWTHS[steps]]
  whole = outputs["whole"]
  best = np.asarray(whole.tokens)[:, 0]
  lengths = np.where((best == sp_vocab.eos_id).any(-1),
                     np.argmax(best == sp_vocab.eos_id, axis=-1) + 1, DECODE_LEN)
  # Rows end in at least two half-step segments, and one runs past 16 (the last growth).
  segments = np.searchsorted(generate.cache_lengths(DECODE_LEN, "half"), lengths)
  assert len(set(segments.tolist())) >= 2 and lengths.max() > 16, lengths
  for steps in ("half", "double"):
    _assert_same(whole, outputs[steps], steps)


def _requests():
  text = st.text(alphabet=st.sampled_from(_ALPHABET), max_size=14)
  types = st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=3, unique=True)
  return st.lists(st.tuples(text, types), min_size=shared.BATCH_SIZE,
                  max_size=shared.BATCH_SIZE)


@hypothesis.settings(max_examples=8, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(requests=_requests(), beam_size=st.sampled_from([1, 4]))
def test_growing_caches_give_the_same_search_on_random_requests(
    short_caches, config, random_params, sp_vocab, requests, beam_size):
  inputs = [_encode(sp_vocab, text, types) for text, types in requests]
  outputs = _decode_all(config, random_params, sp_vocab, inputs, beam_size=beam_size,
                        stopping="best")
  for steps in ("half", "double"):
    _assert_same(outputs["whole"], outputs[steps], steps)


def test_decode_batch_rejects_unknown_cache_steps(config, random_params, sp_vocab):
  inputs = jnp.asarray([_encode(sp_vocab, "北京", ["地点"])], jnp.int32)
  with pytest.raises(ValueError, match="cache_steps must be one of"):
    generate.decode_batch(model_lib.Transformer(config), random_params, inputs, None,
                          max_decode_length=8, cache_steps="triple")
