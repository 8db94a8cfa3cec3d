"""The fast constrained search (punified_jax.fast_decoding) and the search over the allowed
tokens (generate's default, search="allowed") against the step-by-step search over the
vocabulary.

Equality is the contract: same output ids, and scores, log-probs and per-token model
log-probs within 1e-5 (absolute plus relative), for greedy and beam search (both stopping
rules that settle results exactly), on the tiny T5 overfit to test_inference's prompted
examples, over random texts and requested types (hypothesis).  Every search has the same shapes (4 rows, input 32, output 40),
so each (search, beam, stopping, chunk) compiles once for the module.
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
# The overfit tiny model and its vocabulary (module-scoped fixtures of test_inference).
from test_inference import config, sp_vocab, trained_params, vocab_path  # pylint: disable=unused-import

pytestmark = pytest.mark.usefixtures("fast_compiles")

INPUT_LEN = shared.FEATURE_LENGTHS["inputs"]
DECODE_LEN = shared.FEATURE_LENGTHS["targets"]
ROWS = shared.BATCH_SIZE
TYPE_POOL = ["地点", "组织", "名称", "公司"]
TRAIN_TEXTS = [text for text, _ in shared.TRAIN_EXAMPLES]


def _encode(vocab, text, types):
  ids = vocab.encode(prompts.format_input(text, types))[:INPUT_LEN - 1] + [vocab.eos_id]
  return ids + [0] * (INPUT_LEN - len(ids))


def _decode_both(config, params, vocab, inputs, *, beam_size, stopping="all", chunk_length=8,
                 allowed_too=False, constraint=None):
  """(stepwise, fast) outputs; with allowed_too the search="allowed" output is checked
  against stepwise here.  constraint: default the grammar alone."""
  net = model_lib.Transformer(config)
  constraint = constraint or constraints.NerCopyConstraint.from_vocabulary(vocab)
  inputs = jnp.asarray(inputs, jnp.int32)
  run = lambda search, **kw: generate.decode_batch(
      net, params, inputs, constraint, beam_size=beam_size, max_decode_length=DECODE_LEN,
      eos_id=vocab.eos_id, stopping=stopping, search=search, **kw)
  reference = run("stepwise")
  if allowed_too:
    allowed = run("allowed")
    _assert_same(reference, allowed)
    np.testing.assert_array_equal(np.asarray(allowed.decoder_calls),
                                  np.asarray(reference.decoder_calls))
  return reference, run("fast", chunk_length=chunk_length)


def _assert_same(reference, fast):
  np.testing.assert_array_equal(np.asarray(fast.tokens), np.asarray(reference.tokens))
  for name in ("scores", "log_probs", "token_log_probs"):
    want, got = np.asarray(getattr(reference, name)), np.asarray(getattr(fast, name))
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=name)
    finite = np.isfinite(want)
    # The chunk's attention runs over a wider cache with several queries: the same terms,
    # summed in another order (differences of a few 1e-6 measured, up to 2e-5 on a -1.58).
    # The search's own quantities (scores, log_probs) stay within 1e-5; the model's per-token
    # log-probs, reported alongside and never ranked on, once differed by 3.2e-5 on a -1.14
    # (hypothesis, the tiny trained model), so they get 5e-5.
    tolerance = 5e-5 if name == "token_log_probs" else 1e-5
    np.testing.assert_allclose(got[finite], want[finite], atol=tolerance, rtol=1e-5,
                               err_msg=name)


def _tokens_out(output):
  """Output tokens per example of the best hypothesis, EOS included."""
  best = np.asarray(output.tokens)[:, 0]
  return np.where((best == 1).any(-1), np.argmax(best == 1, axis=-1) + 1, best.shape[-1])


@pytest.mark.parametrize("beam_size,stopping", [(1, "all"), (4, "all"), (4, "best")])
def test_fast_search_equals_stepwise_on_the_training_sentences(config, trained_params, sp_vocab,
                                                               beam_size, stopping):
  inputs = [_encode(sp_vocab, text, shared.TYPES) for text in TRAIN_TEXTS]
  reference, fast = _decode_both(config, trained_params, sp_vocab, inputs, beam_size=beam_size,
                                 stopping=stopping, allowed_too=True)
  _assert_same(reference, fast)
  # The overfit model reproduces its targets; they end, so the calls are all counted.
  targets = [sp_vocab.encode(prompts.format_target(m, shared.TYPES)) + [1]
             for _, m in shared.TRAIN_EXAMPLES]
  for row, target in enumerate(targets):
    assert np.asarray(fast.tokens)[row, 0, :len(target)].tolist() == target
  step_calls = np.asarray(reference.decoder_calls)
  fast_calls = np.asarray(fast.decoder_calls)
  if beam_size == 1:
    # Step by step: one call per output token, EOS included.
    np.testing.assert_array_equal(step_calls, [len(t) for t in targets])
  assert np.all(fast_calls <= step_calls)
  if beam_size == 1:
    # The grammar forces most of these targets ("((", type names, ":", "),(") and the
    # span drafts hold, so greedy needs well under half the calls.
    assert fast_calls.sum() * 2 < step_calls.sum(), (fast_calls, step_calls)
  else:
    # Beam: a call ends wherever a new branch enters the beam, which junk hypotheses do often.
    assert fast_calls.sum() < step_calls.sum(), (fast_calls, step_calls)


@pytest.mark.parametrize("chunk_length", [2, 3])
def test_short_chunks_give_the_same_search(config, trained_params, sp_vocab, chunk_length):
  inputs = [_encode(sp_vocab, text, types) for text, types in zip(
      TRAIN_TEXTS, [shared.TYPES, ["组织"], ["地点", "名称"], ["公司", "地点"]])]
  for beam_size in (1, 4):
    reference, fast = _decode_both(config, trained_params, sp_vocab, inputs,
                                   beam_size=beam_size, chunk_length=chunk_length)
    _assert_same(reference, fast)


_ALPHABET = "北京大学上海张三和在了去。，：（）(),: NULLAple苹果今天"


def _requests():
  text = st.one_of(st.sampled_from(TRAIN_TEXTS),
                   st.text(alphabet=st.sampled_from(_ALPHABET), max_size=14))
  types = st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=3, unique=True)
  return st.lists(st.tuples(text, types), min_size=ROWS, max_size=ROWS)


@hypothesis.settings(max_examples=12, deadline=None)
@hypothesis.given(requests=_requests(), beam_size=st.sampled_from([1, 4]),
                  stopping=st.sampled_from(["all", "best"]))
def test_fast_search_equals_stepwise_on_random_requests(config, trained_params, sp_vocab,
                                                        requests, beam_size, stopping):
  inputs = [_encode(sp_vocab, text, types) for text, types in requests]
  reference, fast = _decode_both(config, trained_params, sp_vocab, inputs, beam_size=beam_size,
                                 stopping=stopping, allowed_too=True)
  _assert_same(reference, fast)
  assert np.all(np.asarray(fast.decoder_calls) <= np.asarray(reference.decoder_calls))


def test_search_argument_is_checked(config, trained_params, sp_vocab):
  net = model_lib.Transformer(config)
  inputs = jnp.asarray([_encode(sp_vocab, "北京", ["地点"])], jnp.int32)
  with pytest.raises(ValueError, match="search must be one of"):
    generate.decode_batch(net, trained_params, inputs, None, max_decode_length=8,
                          search="quick")
  with pytest.raises(ValueError, match="chunk_length"):
    generate.decode_batch(net, trained_params, inputs, None, max_decode_length=8,
                          chunk_length=1)


@pytest.mark.parametrize("beam_size,types", [
    (1, [shared.TYPES, ["组织"], ["地点", "名称"], ["公司", "地点"]]),
    (4, [["地点", "组织"], ["组织"], shared.TYPES, ["公司", "地点"]])])
def test_chunks_with_and_without_the_output_layer_agree(config, trained_params, sp_vocab,
                                                        beam_size, types):
  """generate runs greedy and beam chunks without the output layer (ChunkOutputLayer:
  candidates in the loop; beam search keeps the chunk rows' hidden states where they were
  computed; the model's log-probs after the loop, with beams for the best log_prob_beams
  hypotheses only); the plain ChunkFn path gives the same."""
  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import fast_decoding  # pylint: disable=g-import-not-at-top
  net = model_lib.Transformer(config)
  constraint = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = jnp.asarray([_encode(sp_vocab, text, names) for text, names in zip(TRAIN_TEXTS, types)],
                       jnp.int32)
  lengths = generate.cache_lengths(DECODE_LEN)

  @jax.jit
  def plain_chunks(params, inputs):
    step_fn, cache, rows = generate.init_decoding(net, params, inputs, beam_size=beam_size,
                                                  max_decode_length=lengths[0] + 8)
    search = dict(constraint=constraint, max_decode_length=DECODE_LEN, eos_id=sp_vocab.eos_id,
                  cache_lengths=lengths, grow_cache=generate.grow_cache)
    if beam_size == 1:
      return fast_decoding.fast_greedy_decode(step_fn.chunk_fn, cache, rows, **search)
    return fast_decoding.fast_beam_search(step_fn.chunk_fn, cache, rows, beam_size=beam_size,
                                          **search)

  plain = plain_chunks(trained_params, inputs)
  run = lambda search, **kw: generate.decode_batch(
      net, trained_params, inputs, constraint, beam_size=beam_size,
      max_decode_length=DECODE_LEN, eos_id=sp_vocab.eos_id, search=search, **kw)
  reference, hidden = run("stepwise"), run("fast")
  if beam_size == 1:  # decode_batch's greedy output has a beam axis
    plain = type(plain)(plain.tokens[:, None], plain.log_probs[:, None], plain.scores[:, None],
                        plain.token_log_probs[:, None], plain.decoder_calls)
  _assert_same(reference, plain)
  _assert_same(reference, hidden)
  np.testing.assert_array_equal(np.asarray(plain.decoder_calls),
                                np.asarray(hidden.decoder_calls))
  if beam_size > 1:
    # Only the best hypothesis's log-probs: the others' are NaN, the best's unchanged.
    got = np.asarray(run("fast", log_prob_beams=1).token_log_probs)
    assert np.isnan(got[:, 1:]).all()
    np.testing.assert_allclose(got[:, 0], np.asarray(hidden.token_log_probs)[:, 0], atol=1e-6)
