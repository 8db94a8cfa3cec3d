"""Tests for punified_jax.constraints.NerCopyConstraint.

The automaton is checked three ways: step by step on a literal input (the allowed tokens at
every step, including the moments when a span's own ")" also closes the item); against an
independent backtracking checker of the grammar on the outputs of beam 1 and beam 4 searches
driven by random logits (hypothesis: random texts with ( ) , : and full-width punctuation,
random requested types, SentencePiece and WordPiece); and on the tiny random T5 through
generate.decode_batch.
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
from punified_jax import generate
from punified_jax import model as model_lib
from punified_jax import parsing
from punified_jax import prompts
from punified_jax import vocab as vocab_lib

import test_inference as shared

INPUT_LEN = 32
DECODE_LEN = shared.FEATURE_LENGTHS["targets"]
ROWS = shared.BATCH_SIZE


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory):
  return vocab_lib.get_vocabulary(shared.train_vocab(tmp_path_factory.mktemp("sp")))


@pytest.fixture(scope="module")
def wp_vocab(tmp_path_factory, sp_vocab):
  path = tmp_path_factory.mktemp("wp") / "vocab.txt"
  path.write_text("\n".join(shared.wordpiece_tokens(sp_vocab.vocab_size)) + "\n",
                  encoding="utf-8")
  return vocab_lib.get_vocabulary(str(path))


# ------------------------------------------------------------------------------------------
# Construction.
# ------------------------------------------------------------------------------------------


def test_from_vocabulary_reads_the_syntax_tokens(sp_vocab, wp_vocab):
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  for name, text in (("open_id", "("), ("close_id", ")"), ("comma_id", ","), ("colon_id", ":")):
    assert sp_vocab.decode([int(getattr(c, name))]) == text
  assert (int(c.entity_id), int(c.text_id), int(c.null_id), int(c.eos_id), int(c.pad_id)) == (
      3, 4, 5, 1, 0)
  # Byte pieces <0x00>.. start at id 6: the continuation bytes <0x80>..<0xBF> are 134..197.
  assert np.flatnonzero(np.asarray(c.continuation)).tolist() == list(range(134, 198))

  w = constraints.NerCopyConstraint.from_vocabulary(wp_vocab)
  tokens = shared.wordpiece_tokens(sp_vocab.vocab_size)
  assert [int(w.open_id), int(w.close_id), int(w.comma_id), int(w.colon_id)] == [
      tokens.index(t) for t in "(),:"]
  assert (int(w.entity_id), int(w.text_id), int(w.null_id), int(w.eos_id)) == (
      1, 2, 3, tokens.index("[SEP]"))
  assert not np.asarray(w.continuation).any()
  # The gin-friendly factory builds the same constraint.
  same = constraints.ner_copy_constraint(wp_vocab)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), same, w))


def test_from_vocabulary_rejects_multi_token_or_unknown_syntax(tmp_path):
  no_markers = vocab_lib.get_vocabulary(vocab_lib.train_sentencepiece(
      shared.CORPUS, str(tmp_path / "plain.model"), markers=()))
  with pytest.raises(ValueError, match="needs 'NULL' to be one known token"):
    constraints.NerCopyConstraint.from_vocabulary(no_markers)
  tokens = [t for t in shared.wordpiece_tokens(300) if t != ":"]
  (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
  with pytest.raises(ValueError, match="needs ':' to be one known token.*encodes as \\[10\\]"):
    constraints.NerCopyConstraint.from_vocabulary(
        vocab_lib.get_vocabulary(str(tmp_path / "vocab.txt")))


# ------------------------------------------------------------------------------------------
# The automaton, step by step.
# ------------------------------------------------------------------------------------------


def _encode_input(vocab, text, types, length=INPUT_LEN):
  ids = vocab.encode(prompts.format_input(text, types)) + [vocab.eos_id]
  assert len(ids) <= length
  return ids + [0] * (length - len(ids))


def _allowed_strings(vocab, allowed_row):
  return {"</s>" if i == vocab.eos_id else vocab.decode([i]) for i in np.flatnonzero(allowed_row)}


def test_allowed_tokens_step_by_step(sp_vocab):
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = jnp.asarray([_encode_input(sp_vocab, "北京)好", ["地点", "地点泛指"])], jnp.int32)
  target = sp_vocab.encode("((地点:京)好),(地点泛指:NULL))") + [sp_vocab.eos_id]
  span_start = {"北", "京", ")", "好", "NULL"}
  expected = [
      {"("}, {"("}, {"地"}, {"点"}, {":", "泛"},
      span_start,
      {")"},              # after 京: the text's ")" and the item's ")" are the same token
      {"好", ")", ","},   # after 京): the span goes on, or the item closed (then "," or ")")
      {")"},              # after 京)好: the text ends
      {",", ")"}, {"("}, {"地"}, {"点"}, {":", "泛"}, {"指"}, {":"},
      span_start,
      {")"},              # after NULL
      {",", ")"},
      {"</s>"},           # after the closing "))"
      set(),              # after EOS: nothing
  ]
  state = c.init(inputs)
  logits = jnp.zeros((1, sp_vocab.vocab_size), jnp.float32)
  previous = jnp.zeros((1,), jnp.int32)  # the decoder start token
  for step, want in enumerate(expected):
    masked, state = c.step(state, previous, logits, jnp.asarray(step))
    allowed = np.asarray(masked[0] > decoding.FORBIDDEN_LOGIT / 2)
    assert _allowed_strings(sp_vocab, allowed) == want, step
    if step < len(target):
      assert allowed[target[step]]
      previous = jnp.asarray([target[step]], jnp.int32)


def test_rows_without_a_prompt_allow_nothing_after_the_brackets(sp_vocab):
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = jnp.zeros((1, 8), jnp.int32)  # a padding row
  state = c.init(inputs)
  logits = jnp.zeros((1, sp_vocab.vocab_size), jnp.float32)
  open_id = int(c.open_id)
  for step, (previous, want) in enumerate([(0, {"("}), (open_id, {"("}), (open_id, set())]):
    masked, state = c.step(state, jnp.asarray([previous]), logits, jnp.asarray(step))
    assert _allowed_strings(sp_vocab, np.asarray(masked[0] > -1e9)) == want


# ------------------------------------------------------------------------------------------
# An independent checker of the grammar, on token ids.
# ------------------------------------------------------------------------------------------


def _regions(input_ids, c):
  ids = [int(i) for i in input_ids]
  text_at = ids.index(int(c.text_id))
  types, current = [], None
  for token in ids[:text_at]:
    if token == int(c.entity_id):
      if current:
        types.append(tuple(current))
      current = []
    elif current is not None:
      current.append(token)
  if current:
    types.append(tuple(current))
  text = [t for t in ids[text_at + 1:] if t not in (int(c.pad_id), int(c.eos_id))]
  return types, text


def check_output(input_ids, output_ids, c) -> bool:
  """Asserts that `output_ids` is in the grammar for `input_ids` (or, without EOS, a prefix of
  a word of it); returns whether it is complete.  Written from the grammar, not the automaton:
  a backtracking search over item boundaries."""
  types, text = _regions(input_ids, c)
  continuation = np.asarray(c.continuation)
  is_continuation = lambda t: t < len(continuation) and continuation[t]
  output = [int(t) for t in output_ids]
  eos = int(c.eos_id)
  complete = eos in output
  # Without EOS the hypothesis hit the length limit: every position is an output token.
  body = output[:output.index(eos)] if complete else output
  op, cl, comma, colon, null = (int(c.open_id), int(c.close_id), int(c.comma_id),
                                int(c.colon_id), int(c.null_id))

  def run_at(seq, closed):
    """seq is a run of the text starting on a character (and, if closed, ending on one)."""
    for s in range(len(text) - len(seq) + 1):
      if text[s:s + len(seq)] == seq and not is_continuation(text[s]):
        if not closed or s + len(seq) == len(text) or not is_continuation(text[s + len(seq)]):
          return True
    return False

  @functools.lru_cache(maxsize=None)
  def items_from(pos):  # body[pos:] continues after the target's "(" or a ","
    if pos == len(body):
      return not complete
    if body[pos] != op:
      return False
    for type_ids in types:
      seg = body[pos + 1:pos + 1 + len(type_ids)]
      if len(seg) < len(type_ids):
        if not complete and tuple(seg) == type_ids[:len(seg)]:
          return True
        continue
      if tuple(seg) != type_ids:
        continue
      q = pos + 1 + len(type_ids)
      if q == len(body):
        if not complete:
          return True
        continue
      if body[q] != colon:
        continue
      q += 1
      if q == len(body) and not complete:
        return True
      if q < len(body) and body[q] == null:
        if q + 1 == len(body) and not complete:
          return True
        if q + 1 < len(body) and body[q + 1] == cl and after_item(q + 2):
          return True
      for end in range(q + 1, len(body) + 1):
        if end == len(body):
          if not complete and run_at(body[q:end], closed=False):
            return True
        elif body[end] == cl and run_at(body[q:end], closed=True) and after_item(end + 1):
          return True
    return False

  @functools.lru_cache(maxsize=None)
  def after_item(pos):
    if pos == len(body):
      return not complete
    if body[pos] == comma:
      return items_from(pos + 1)
    return body[pos] == cl and pos + 1 == len(body)

  assert body and body[0] == op and items_from(1), (input_ids, output_ids)
  return complete


def _check_strings(vocab, text, types, output):
  """Complete outputs parse, and what they say is requested and copied."""
  details = parsing.parse_generation_details(vocab.decode(output), types)
  assert not details.truncated and not details.unparsed
  for type_name, span in details.mentions:
    assert type_name in types
    if not isinstance(vocab, vocab_lib.WordPieceVocabulary):
      assert span in text  # SentencePiece decodes exactly


def test_checker_rejects_what_the_grammar_forbids(sp_vocab):
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = _encode_input(sp_vocab, "北京)好", ["地点"])
  eos = [sp_vocab.eos_id]
  good = sp_vocab.encode("((地点:京)好),(地点:NULL))") + eos
  assert check_output(inputs, good, c)
  assert check_output(inputs, good[:7], c) is False  # a valid prefix, not complete
  for bad in ["((组织:北京))", "((地点:上海))", "((地点:京好))", "((地点:北京)", "(地点:北京)",
              "((地点:))", "((地点:北京),)"]:
    with pytest.raises(AssertionError):
      check_output(inputs, sp_vocab.encode(bad) + eos, c)


# ------------------------------------------------------------------------------------------
# Beam 1 and 4 on random logits: every output is in the grammar.
# ------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("beam_size",))
def _search_random_logits(table, bias, inputs, constraint, *, beam_size):
  """A fake decoder: logits = table[step] + table[last token % steps] + bias (no model)."""
  def step_fn(token_ids, cache, step):
    return table[step] + table[token_ids % table.shape[0]] + bias, cache

  rows = decoding.expand_to_beams(inputs, beam_size)
  cache = jnp.zeros((rows.shape[0],), jnp.int32)
  if beam_size == 1:
    out = decoding.greedy_decode(step_fn, cache, rows, max_decode_length=DECODE_LEN,
                                 constraint=constraint)
    return out.tokens[:, None], out.scores[:, None]
  out = decoding.beam_search(step_fn, cache, rows, beam_size=beam_size,
                             max_decode_length=DECODE_LEN, constraint=constraint)
  return out.tokens, out.scores


# ASCII and full-width punctuation (the grammar's own characters among them), CJK, a space,
# the letters of "NULL" and characters outside the SentencePiece vocabulary (byte fallback).
_SP_ALPHABET = "北京大学上海和(),:（），：。 NULLa1é😀"
_WP_ALPHABET = "北京大学上海和(),:（），：。 NewYorkiphone12é😀"
TYPE_POOL = ["地点", "组织", "地点泛指", "名称"]


def _random_logits(vocab, c, seed):
  rng = np.random.default_rng(seed)
  table = jnp.asarray(rng.normal(size=(DECODE_LEN, vocab.vocab_size)) * 2, jnp.float32)
  # Favour closing spans and the target, so that most outputs finish within DECODE_LEN.
  bias = np.zeros((vocab.vocab_size,), np.float32)
  bias[int(c.close_id)] = 3.0
  bias[int(c.comma_id)] = 1.0
  bias[vocab.eos_id] = 3.0
  return table, jnp.asarray(bias)


def _search_and_check(vocab, texts, types, seed, beam_size):
  c = constraints.NerCopyConstraint.from_vocabulary(vocab)
  inputs = [_encode_input(vocab, text, t) for text, t in zip(texts, types)]
  table, bias = _random_logits(vocab, c, seed)
  tokens, scores = _search_random_logits(table, bias, jnp.asarray(inputs, jnp.int32), c,
                                         beam_size=beam_size)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  complete = 0
  for e, (text, requested) in enumerate(zip(texts, types)):
    for k in range(beam_size):
      if not np.isfinite(scores[e, k]):
        continue
      if check_output(inputs[e], tokens[e, k], c):
        complete += 1
        _check_strings(vocab, text, requested, tokens[e, k].tolist())
  return complete


def _requests(alphabet):
  return st.lists(
      st.tuples(st.text(alphabet=st.sampled_from(alphabet), max_size=12),
                st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=2, unique=True)),
      min_size=ROWS, max_size=ROWS)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(requests=_requests(_SP_ALPHABET), seed=st.integers(0, 2**16),
                  beam_size=st.sampled_from([1, 4]))
def test_sentencepiece_outputs_follow_the_grammar(sp_vocab, requests, seed, beam_size):
  texts, types = zip(*requests)
  _search_and_check(sp_vocab, texts, types, seed, beam_size)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(requests=_requests(_WP_ALPHABET), seed=st.integers(0, 2**16),
                  beam_size=st.sampled_from([1, 4]))
def test_wordpiece_outputs_follow_the_grammar(wp_vocab, requests, seed, beam_size):
  texts, types = zip(*requests)
  _search_and_check(wp_vocab, texts, types, seed, beam_size)


def test_random_logits_mostly_finish_and_fail_without_the_constraint(sp_vocab):
  texts = ["北京(大学):好", "上海，（和）", "", "NULL北京"]
  types = [["地点", "组织"], ["地点泛指", "地点"], ["名称"], ["组织"]]
  # Enough complete outputs that the string checks above are not vacuous.
  assert _search_and_check(sp_vocab, texts, types, seed=7, beam_size=4) >= 8
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  table, bias = _random_logits(sp_vocab, c, 7)
  inputs = jnp.asarray([_encode_input(sp_vocab, t, ty) for t, ty in zip(texts, types)])
  free, _ = _search_random_logits(table, bias, inputs, None, beam_size=4)
  with pytest.raises(AssertionError):  # the checker can fail
    for e in range(ROWS):
      check_output(inputs[e], np.asarray(free)[e, 0], c)


# ------------------------------------------------------------------------------------------
# The tiny random T5 through generate.decode_batch (the Extractor's compiled shapes).
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def t5(sp_vocab):
  config = shared.tiny_config(sp_vocab.vocab_size)
  return model_lib.Transformer(config), shared.random_params(config, seed=3)


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(requests=_requests(_SP_ALPHABET), beam_size=st.sampled_from([1, 4]))
def test_tiny_t5_outputs_follow_the_grammar(sp_vocab, t5, requests, beam_size):
  net, params = t5
  texts, types = zip(*requests)
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = [_encode_input(sp_vocab, text, t) for text, t in zip(texts, types)]
  out = generate.decode_batch(net, params, jnp.asarray(inputs, jnp.int32), c,
                              beam_size=beam_size, max_decode_length=DECODE_LEN,
                              eos_id=sp_vocab.eos_id)
  tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
  for e, (text, requested) in enumerate(zip(texts, types)):
    for k in range(beam_size):
      if np.isfinite(scores[e, k]) and check_output(inputs[e], tokens[e, k], c):
        _check_strings(sp_vocab, text, requested, tokens[e, k].tolist())


def test_draft_guess_follows_the_prompt_order(sp_vocab):
  """fast_decoding's guesses where the grammar leaves a choice: the next prompt type, NULL,
  "," while types remain and ")" after the last, the next input token inside a copy."""
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab)
  inputs = jnp.asarray([_encode_input(sp_vocab, "北京大学", ["地点", "组织"])], jnp.int32)
  target = sp_vocab.encode("((地点:北京),(组织:NULL))") + [sp_vocab.eos_id]
  pieces = ["</s>" if i == sp_vocab.eos_id else sp_vocab.decode([i]) for i in target]
  assert pieces == ["(", "(", "地", "点", ":", "北", "京", ")", ",", "(", "组", "织", ":",
                    "NULL", ")", ")", "</s>"]
  # The guess for the token after each prefix (None: no guess, the grammar forces it).
  expected = [None, None, "地", "点", None, "NULL", "京", "大", ",", None, "组", "织", None,
              "NULL", None, ")", None]
  state = c.init(inputs)
  previous = jnp.zeros((1,), jnp.int32)  # the decoder start token
  for step, want in enumerate(expected):
    _, state = c.step(state, previous, jnp.zeros((1, sp_vocab.vocab_size)), jnp.asarray(step))
    token, exists = c.draft_guess(state)
    got = sp_vocab.decode([int(token[0])]) if bool(exists[0]) else None
    assert got == want, (step, pieces[:step])
    previous = jnp.asarray([target[step]], jnp.int32)
