"""The output budget of constraints.NerCopyConstraint: at most the all-NULL target +
ceil(factor x text tokens) + slack tokens, EOS included; then only EOS.

Checked on a literal prompt (the budget against the all-NULL target format_target writes, and
the allowed tokens when it runs out); by property tests that the integer formula gives the
same numbers for ints and jax arrays, that every gold target within its budget is still
accepted token by token, and that greedy search with a budget is greedy search without one
cut at the budget (random logits); that the fast search equals the step-by-step one when the
budget cuts (the tiny trained T5, greedy and beam 4); and through the Extractor (a random
model that loops: every output within its budget, counted in stats["budget_cut"]).
"""

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import constraints
from punified_jax import inference
from punified_jax import model as model_lib
from punified_jax import parsing
from punified_jax import prompts

import test_inference as shared
from test_constraints import _random_logits, _search_random_logits  # fake decoder, no model
from test_fast_decoding import TRAIN_TEXTS, _assert_same, _decode_both
from test_fast_decoding import _encode as _encode_fast
from test_inference import config, sp_vocab, trained_params, vocab_path  # pylint: disable=unused-import
from test_no_repeat import _GOLD_ALPHABET, _encode, _gold_requests, _step, _text_tokens
from test_no_repeat import gold_target_ids

pytestmark = pytest.mark.usefixtures("fast_compiles")


def _budget_of(c, input_ids):
  return int(np.asarray(c.init(jnp.asarray([input_ids], jnp.int32))["budget"])[0])


def test_budget_is_the_null_target_plus_the_text_share(sp_vocab):
  types = ["地点", "组织"]
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, budget_factor=2.0)
  input_ids = _encode(sp_vocab, "北京大学在上海", types)
  text_tokens = len(_text_tokens(c, input_ids))
  null = len(sp_vocab.encode(prompts.format_target([], types))) + 1  # with EOS
  assert text_tokens == len(sp_vocab.encode("北京大学在上海"))
  assert _budget_of(c, input_ids) == null + 2 * text_tokens + constraints.OUTPUT_BUDGET_SLACK
  # Off: no bound of its own.
  off = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  assert _budget_of(off, input_ids) == np.iinfo(np.int32).max


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(type_tokens=st.integers(0, 500), types=st.integers(0, 60),
                  text=st.integers(0, 5000), factor=st.floats(0.001, 100),
                  slack=st.integers(1, 64))
def test_budget_formula_is_the_same_for_ints_and_arrays(type_tokens, types, text, factor, slack):
  plain = constraints.output_budget(type_tokens, types, text, factor, slack)
  array = constraints.output_budget(jnp.asarray([type_tokens]), jnp.asarray([types]),
                                    jnp.asarray([text]), factor, slack)
  assert isinstance(plain, int) and int(array[0]) == plain
  # ceil(factor * text) up to the factor's rounding to thousandths
  assert plain - type_tokens - 5 * types - 2 - slack == -(-round(factor * 1000) * text // 1000)


def test_bad_budget_settings_are_refused(sp_vocab):
  for factor, slack in ((-1.0, 8), (True, 8), ("2", 8), (2.0, 0), (2.0, 1.5)):
    with pytest.raises(ValueError, match="budget_"):
      constraints.NerCopyConstraint.from_vocabulary(sp_vocab, budget_factor=factor,
                                                    budget_slack=slack)


def test_a_spent_budget_allows_only_eos(sp_vocab):
  """A target longer than its budget: accepted up to the budget's last token, then only EOS."""
  types = ["地点"]
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, budget_factor=0.001,
                                                    budget_slack=1)
  input_ids = _encode(sp_vocab, "北京和上海", types)
  budget = _budget_of(c, input_ids)
  target = sp_vocab.encode("((地点:北京),(地点:上海))") + [sp_vocab.eos_id]
  null = len(sp_vocab.encode(prompts.format_target([], types))) + 1
  assert budget == null + 1 + 1 and len(target) > budget
  state = c.init(jnp.asarray([input_ids], jnp.int32))
  token = jnp.zeros((1,), jnp.int32)
  for step in range(budget):
    allowed, state = _step(c, state, token, jnp.asarray(step), vocab_size=sp_vocab.vocab_size)
    allowed = np.flatnonzero(np.asarray(allowed)[0]).tolist()
    if step < budget - 1:
      assert target[step] in allowed, step
    else:  # the budget's last token
      assert allowed == [sp_vocab.eos_id]
    token = jnp.asarray([target[step]], jnp.int32)


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(request=_gold_requests())
def test_gold_targets_within_their_budget_are_accepted(sp_vocab, request):
  text, types, data = request
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, budget_factor=2.0)
  input_ids = _encode(sp_vocab, text, types)
  length = len(_text_tokens(c, input_ids))
  runs = st.tuples(st.integers(0, len(types) - 1), st.integers(0, max(length - 1, 0)),
                   st.integers(1, 4))
  mentions = [(t, s, min(s + n, length)) for t, s, n in data.draw(st.lists(runs, max_size=6))
              ] if length else []
  try:
    target = gold_target_ids(sp_vocab, c, input_ids, types, mentions)
  except ValueError:
    hypothesis.assume(False)  # format_target refuses the span
  hypothesis.assume(len(target) <= _budget_of(c, input_ids))
  state = c.init(jnp.asarray([input_ids], jnp.int32))
  token = jnp.zeros((1,), jnp.int32)
  for step, next_id in enumerate(target):
    allowed, state = _step(c, state, token, jnp.asarray(step), vocab_size=sp_vocab.vocab_size)
    assert bool(np.asarray(allowed)[0, next_id]), (sp_vocab.decode(target[:step]), step)
    token = jnp.asarray([next_id], jnp.int32)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(texts=st.lists(st.text(alphabet=st.sampled_from(_GOLD_ALPHABET), max_size=10),
                                 min_size=shared.BATCH_SIZE, max_size=shared.BATCH_SIZE),
                  seed=st.integers(0, 2**16), factor=st.sampled_from([0.25, 1.0, 2.0]),
                  slack=st.sampled_from([1, 4]))
def test_greedy_with_a_budget_is_greedy_without_cut_at_the_budget(sp_vocab, texts, seed, factor,
                                                                  slack):
  """Random logits that depend on the step and the last token only: until the budget runs out
  both searches choose the same tokens, then the budgeted one writes EOS."""
  inputs = [_encode(sp_vocab, text, ["地点", "组织"]) for text in texts]
  free = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  bounded = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, budget_factor=factor,
                                                          budget_slack=slack)
  table, bias = _random_logits(sp_vocab, free, seed)
  bias = bias.at[sp_vocab.eos_id].set(-3.0)  # long outputs: the budget has work to do
  rows = jnp.asarray(inputs, jnp.int32)
  want = np.asarray(_search_random_logits(table, bias, rows, free, beam_size=1)[0])[:, 0]
  got = np.asarray(_search_random_logits(table, bias, rows, bounded, beam_size=1)[0])[:, 0]
  eos = sp_vocab.eos_id
  for row, input_ids in enumerate(inputs):
    budget = _budget_of(bounded, input_ids)
    free_ids = want[row].tolist()
    # Without EOS the free output ran to the limit: ending it needs one token more.
    free_length = free_ids.index(eos) + 1 if eos in free_ids else len(free_ids) + 1
    if free_length <= budget or budget > len(free_ids):  # the budget never bit
      assert got[row].tolist() == free_ids
    else:
      assert got[row, :budget - 1].tolist() == free_ids[:budget - 1]
      assert got[row, budget - 1] == eos


@pytest.mark.parametrize("beam_size,stopping", [(1, "all"), (4, "all"), (4, "best")])
def test_fast_search_equals_stepwise_when_the_budget_cuts(config, trained_params, sp_vocab,
                                                          beam_size, stopping):
  tight = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, budget_factor=0.25,
                                                        budget_slack=2)
  inputs = [_encode_fast(sp_vocab, text, list(shared.TYPES)) for text in TRAIN_TEXTS]
  reference, fast = _decode_both(config, trained_params, sp_vocab, inputs, beam_size=beam_size,
                                 stopping=stopping, allowed_too=True, constraint=tight)
  _assert_same(reference, fast)
  # The case under test happened: some best output ends at its budget, before its target.
  best = np.asarray(reference.tokens)[:, 0]
  cut = 0
  for row, (input_ids, (_, mentions)) in enumerate(zip(inputs, shared.TRAIN_EXAMPLES)):
    target = sp_vocab.encode(prompts.format_target(mentions, shared.TYPES)) + [1]
    budget = _budget_of(tight, input_ids)
    ids = best[row].tolist()
    assert 1 in ids and ids.index(1) + 1 <= budget
    cut += len(target) > budget
  assert cut > 0


def test_extractor_outputs_stay_within_their_budget(config, sp_vocab):
  """A random model loops (test_inference's two-pass case); with the default budget no output
  runs past it, and those that reach it are counted (the repeat rule off: it would end most
  of these loops before their budget)."""
  extractor = inference.Extractor(
      model_lib.Transformer(config), shared.random_params(config, seed=1), sp_vocab, beam_size=1,
      batch_size=shared.BATCH_SIZE, max_input_length=64, max_decode_length=128, end_at_repeat=0)
  assert extractor.output_budget == constraints.OUTPUT_BUDGET_FACTOR
  texts = ["北京大学在北京。", "上海", "Apple（苹果）在上海：北京", "张三去了北京大学", "组织"]
  windows = [w for i, t in enumerate(texts)
             for w in extractor.plan_windows(t, shared.TYPES, i)]
  settings = inference._DecodeSettings(beam_size=1, constrained=True, rows=shared.BATCH_SIZE,
                                       max_decode_length=128, first_pass=False,
                                       batching="consecutive")
  rows = list(extractor._decode(windows, settings))
  assert len(rows) == len(windows)
  lengths = {id(window): len(ids) for window, ids, *_ in rows}
  for window in windows:
    assert lengths[id(window)] <= extractor.budget_of(window)
  assert extractor.stats.get("budget_cut", 0) == sum(
      lengths[id(w)] == extractor.budget_of(w) for w in windows) > 0


def test_extractor_counts_outputs_that_reach_the_repeat_limit(config, sp_vocab):
  """The same looping random model with the repeat rule at 2: no output holds more than 2
  repeated items, and those with 2 are counted in stats["repeat_limit"]."""
  extractor = inference.Extractor(
      model_lib.Transformer(config), shared.random_params(config, seed=1), sp_vocab, beam_size=1,
      batch_size=shared.BATCH_SIZE, max_input_length=64, max_decode_length=128, end_at_repeat=2)
  outputs = []
  entities = extractor._entities  # pylint: disable=protected-access

  def spy(window, output, *args, **kwargs):
    outputs.append(list(output))
    return entities(window, output, *args, **kwargs)

  extractor._entities = spy  # pylint: disable=protected-access
  extractor.extract(["北京大学在北京。", "上海", "Apple（苹果）在上海：北京", "张三去了北京大学", "组织"],
                    types=list(shared.TYPES))
  repeats = [parsing.parse_generation_details(sp_vocab.decode(ids), shared.TYPES).repeats
             for ids in outputs]
  assert len(outputs) >= 5 and max(repeats) <= 2
  assert extractor.stats.get("repeat_limit", 0) == sum(r == 2 for r in repeats) > 0
