"""Entity scores computed from the scored tokens only (punified_jax/entity_scores.py).

The greedy searches over the allowed tokens can return their final hidden states instead of
every token's model log-prob (generate.decode_batch(token_log_probs=False)); the Extractor then
computes the log-probs of the tokens its entity scores read. The contract: the same entities
and scores as from every token's log-prob, on the tiny T5 overfit to test_inference's examples
and on a random model that runs away, with the "allowed" and "fast" searches.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import constraints
from punified_jax import entity_scores
from punified_jax import generate
from punified_jax import inference
from punified_jax import model as model_lib
from punified_jax import output_log_probs

import test_fast_decoding as fast_tests
import test_inference as shared
# The overfit tiny model and its vocabulary (module-scoped fixtures of test_inference).
from test_inference import config, sp_vocab, trained_params, vocab_path  # pylint: disable=unused-import

pytestmark = pytest.mark.usefixtures("fast_compiles")


def test_scored_positions_are_each_items_tokens_after_its_open_bracket():
  # "((地点:北京),(组织:NULL))": items at (1, 4, 7) and (9, 12, 14) of 16 tokens.
  np.testing.assert_array_equal(
      np.flatnonzero(entity_scores.scored_positions([(1, 4, 7), (9, 12, 14)], 16)),
      [2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14])
  # An item that was not found: its score is the whole output's, so every position.
  assert entity_scores.scored_positions([(1, 4, 7), None], 16).all()
  assert not entity_scores.scored_positions([], 16).any()


@pytest.mark.parametrize("search", ["allowed", "fast"])
def test_hidden_states_give_the_searchs_own_token_log_probs(config, trained_params, sp_vocab,
                                                           search):
  net = model_lib.Transformer(config)
  constraint = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = jnp.asarray([fast_tests._encode(sp_vocab, text, shared.TYPES)  # pylint: disable=protected-access
                        for text in fast_tests.TRAIN_TEXTS], jnp.int32)
  run = lambda token_log_probs: generate.decode_batch(
      net, trained_params, inputs, constraint, max_decode_length=fast_tests.DECODE_LEN,
      eos_id=sp_vocab.eos_id, search=search, token_log_probs=token_log_probs)
  full, lean = run(True), run(False)
  assert full.hidden is None and lean.hidden is not None
  np.testing.assert_array_equal(np.asarray(lean.tokens), np.asarray(full.tokens))
  np.testing.assert_array_equal(np.asarray(lean.scores), np.asarray(full.scores))
  assert not np.asarray(lean.token_log_probs).any()  # not computed
  tokens = np.asarray(lean.tokens)[:, 0]
  kernel = generate.output_kernel(config, trained_params)
  again = output_log_probs.model_token_log_probs(jnp.asarray(lean.hidden), jnp.asarray(tokens),
                                                 kernel)
  np.testing.assert_allclose(np.asarray(again), np.asarray(full.token_log_probs)[:, 0],
                             atol=1e-5)
  # Only some positions: the others stay 0.
  some = np.zeros(tokens.shape, bool)
  some[:, 2:5] = tokens[:, 2:5] > 0
  part = entity_scores.log_probs_at(np.asarray(lean.hidden), tokens, np.asarray(kernel), some)
  np.testing.assert_allclose(part[some], np.asarray(full.token_log_probs)[:, 0][some], atol=1e-5)
  assert not part[~some].any()


@pytest.mark.parametrize("search", ["allowed", "fast"])
def test_extractor_scores_from_the_scored_tokens_equal_all_tokens(config, trained_params,
                                                                  sp_vocab, search, monkeypatch):
  calls = []
  log_probs_at = entity_scores.log_probs_at
  def recording(hidden, tokens, kernel, scored):
    # Per row with a scored token: (scored tokens, output tokens).
    calls.extend((int(s.sum()), int((t > 0).sum())) for s, t in zip(scored, tokens) if s.any())
    return log_probs_at(hidden, tokens, kernel, scored)
  monkeypatch.setattr(entity_scores, "log_probs_at", recording)
  def make(params, after_parse, **options):
    extractor = inference.Extractor(model_lib.Transformer(config), params, sp_vocab, beam_size=1,
                                    batch_size=shared.BATCH_SIZE, search=search, **options)
    extractor._score_after_parse = after_parse  # pylint: disable=protected-access
    return extractor
  trained = dict(max_input_length=shared.FEATURE_LENGTHS["inputs"],
                 max_decode_length=shared.FEATURE_LENGTHS["targets"])
  runaway = dict(max_input_length=64, max_decode_length=128, output_budget=0, end_at_repeat=0)
  cases = [(trained_params, [text for text, _ in shared.TRAIN_EXAMPLES], trained),
           (shared.random_params(config, seed=1),
            ["北京大学在北京。", "上海", "Apple（苹果）在上海：北京", "张三去了北京大学", ""], runaway)]
  for params, texts, options in cases:
    got = make(params, True, **options).extract(texts, types=list(shared.TYPES))
    want = make(params, False, **options).extract(texts, types=list(shared.TYPES))
    assert [shared._plain(e) for e in got] == [shared._plain(e) for e in want]  # pylint: disable=protected-access
    for g, w in zip(got, want):
      np.testing.assert_allclose([e["score"] for e in g], [e["score"] for e in w], rtol=1e-5)
    if params is trained_params:
      assert [shared._plain(e) for e in got] == shared.EXPECTED  # pylint: disable=protected-access
  # The lean path ran, and it scored fewer tokens than the outputs hold (NULL items, brackets).
  assert calls and all(s <= t for s, t in calls) and any(s < t for s, t in calls)


@pytest.mark.parametrize("after_parse", [True, False])
def test_each_output_is_parsed_once(config, trained_params, sp_vocab, after_parse, monkeypatch):
  """The scored-token path parses an output to choose its scored tokens and hands that parse
  on to the entities (output_reader); the other path parses in _entities: once either way."""
  from punified_jax import output_reader  # pylint: disable=g-import-not-at-top
  parsed = []
  parse = output_reader.OutputReader.parse
  def counting(self, types, output):
    parsed.append(tuple(output))
    return parse(self, types, output)
  monkeypatch.setattr(output_reader.OutputReader, "parse", counting)
  extractor = inference.Extractor(
      model_lib.Transformer(config), trained_params, sp_vocab, beam_size=1,
      batch_size=shared.BATCH_SIZE, max_input_length=shared.FEATURE_LENGTHS["inputs"],
      max_decode_length=shared.FEATURE_LENGTHS["targets"])
  extractor._score_after_parse = after_parse  # pylint: disable=protected-access
  texts = [text for text, _ in shared.TRAIN_EXAMPLES]
  got = extractor.extract(texts, types=list(shared.TYPES))
  assert [shared._plain(e) for e in got] == shared.EXPECTED  # pylint: disable=protected-access
  assert len(parsed) == len(set(parsed)) == len(texts)
