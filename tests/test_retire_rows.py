"""Greedy decoding that retires finished rows (decoding.greedy_decode(retire_rows=True)):
once at most half of a batch's rows are still going, the search goes on with half the batch.

The contract is the step-by-step search's result: same output ids, scores, log-probs and
per-token model log-probs within 1e-5, same decoder calls, on the tiny T5 overfit to
test_inference's examples (whose rows end at different steps), with the grammar constraint
over the allowed tokens (the Extractor's search), over the vocabulary, and without a
constraint; over random texts and requested types (hypothesis).
"""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import constraints
from punified_jax import decoding
from punified_jax import generate
from punified_jax import model as model_lib

import test_fast_decoding as fast_tests
import test_inference as shared
# The overfit tiny model and its vocabulary (module-scoped fixtures of test_inference).
from test_inference import config, sp_vocab, trained_params, vocab_path  # pylint: disable=unused-import

pytestmark = pytest.mark.usefixtures("fast_compiles")


def _both(config, params, vocab, inputs, *, search, constrained=True):
  """(without, with) retire_rows outputs of one greedy search."""
  net = model_lib.Transformer(config)
  constraint = constraints.NerCopyConstraint.from_vocabulary(vocab) if constrained else None
  run = lambda retire: generate.decode_batch(
      net, params, jnp.asarray(inputs, jnp.int32), constraint,
      max_decode_length=fast_tests.DECODE_LEN, eos_id=vocab.eos_id, search=search,
      retire_rows=retire)
  return run(False), run(True)


def _assert_same(reference, retired):
  fast_tests._assert_same(reference, retired)  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.asarray(retired.decoder_calls),
                                np.asarray(reference.decoder_calls))


def _lengths(output):
  return fast_tests._tokens_out(output)  # pylint: disable=protected-access


@pytest.mark.parametrize("search,constrained", [("allowed", True), ("stepwise", True),
                                                ("stepwise", False)])
def test_retiring_rows_gives_the_same_search_on_rows_that_end_apart(config, trained_params,
                                                                    sp_vocab, search,
                                                                    constrained):
  # Rows ask for both trained types, one, or an untrained one: outputs of different lengths.
  type_lists = [shared.TYPES, ["组织"], ["地点"], ["公司", "地点"]]
  inputs = [fast_tests._encode(sp_vocab, text, types)  # pylint: disable=protected-access
            for text, types in zip(fast_tests.TRAIN_TEXTS, type_lists)]
  reference, retired = _both(config, trained_params, sp_vocab, inputs, search=search,
                             constrained=constrained)
  _assert_same(reference, retired)
  lengths = sorted(_lengths(reference))
  # The second stage ran: two of the 4 rows end before the longest, which goes on with one
  # other row in a batch of 2.
  assert lengths[1] < lengths[-1], lengths


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(requests=fast_tests._requests(),  # pylint: disable=protected-access
                  search=st.sampled_from(["allowed", "stepwise"]))
def test_retiring_rows_gives_the_same_search_on_random_requests(config, trained_params,
                                                                sp_vocab, requests, search):
  inputs = [fast_tests._encode(sp_vocab, text, types)  # pylint: disable=protected-access
            for text, types in requests]
  _assert_same(*_both(config, trained_params, sp_vocab, inputs, search=search))


def test_stage_sizes():
  assert decoding.retire_stage_sizes(8) == (8, 4, 2)
  assert decoding.retire_stage_sizes(32) == (32, 16, 8)
  assert decoding.retire_stage_sizes(4) == (4, 2, 1)
  assert decoding.retire_stage_sizes(3) == (3, 1)
  assert decoding.retire_stage_sizes(1) == (1,)


def test_a_step_function_without_select_rows_is_refused():
  vocab = 5

  def step_fn(token_ids, cache, step):
    del step
    return jnp.zeros((token_ids.shape[0], vocab)), cache

  inputs = jnp.ones((4, 3), jnp.int32)
  cache = {"x": jnp.zeros((4, 2))}
  # Without retirement it decodes; with it, the missing select_rows is named.
  decoding.greedy_decode(step_fn, cache, inputs, max_decode_length=3)
  with pytest.raises(ValueError, match="select_rows"):
    decoding.greedy_decode(step_fn, cache, inputs, max_decode_length=3, retire_rows=True)


def test_take_rows_names_a_leaf_that_is_not_per_row():
  tree = {"per_row": jnp.arange(8).reshape(4, 2), "index": jnp.array(3)}
  taken = decoding.take_rows(tree, jnp.array([2, 0]), 4)
  np.testing.assert_array_equal(np.asarray(taken["per_row"]), [[4, 5], [0, 1]])
  assert int(taken["index"]) == 3
  with pytest.raises(ValueError, match="leading axis 5"):
    decoding.take_rows({"bad": jnp.zeros((5, 2))}, jnp.array([0]), 4)


def test_decode_batch_default_is_read_at_call_time(monkeypatch, config, trained_params,
                                                   sp_vocab):
  inputs = jnp.asarray([fast_tests._encode(sp_vocab, text, shared.TYPES)  # pylint: disable=protected-access
                        for text in fast_tests.TRAIN_TEXTS], jnp.int32)
  seen = []
  real = decoding.greedy_decode
  monkeypatch.setattr(decoding, "greedy_decode",
                      lambda *a, **kw: seen.append(kw["retire_rows"]) or real(*a, **kw))
  net = model_lib.Transformer(config)
  for default in (True, False):
    monkeypatch.setattr(generate, "DEFAULT_RETIRE_ROWS", default)
    jax.clear_caches()
    generate.decode_batch(net, trained_params, inputs, max_decode_length=4)
  assert seen == [True, False]
