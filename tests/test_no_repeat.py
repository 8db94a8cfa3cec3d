"""The no-repeat rule of constraints.NerCopyConstraint: an item already written in this output
cannot be closed again.

Checked on literal inputs (the allowed tokens after a repeated item, a new span of the same type,
the same span under another type, NULL twice, spans occurring twice, the escape when a repeat
is the only way on, a ")" that is both a copy and a close); by a property test that every gold
target prompts.format_target writes (random texts with the grammar's own characters, random
mentions) is accepted token by token; and by searches (random logits that loop without the
rule, and the tiny trained T5 at greedy and beam 4) whose outputs never repeat an item unless
the repeat was the only way on.
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
from punified_jax import prompts

import test_inference as shared
from test_candidate_decoding import check_random_walk  # candidate == vocabulary masks
from test_fast_decoding import _assert_same  # same ids, scores within 1e-5
from test_inference import config, sp_vocab, trained_params, vocab_path  # pylint: disable=unused-import

pytestmark = pytest.mark.usefixtures("fast_compiles")

INPUT_LEN = 40
DECODE_LEN = shared.FEATURE_LENGTHS["targets"]
ROWS = shared.BATCH_SIZE


def _encode(vocab, text, types, length=INPUT_LEN):
  ids = vocab.encode(prompts.format_input(text, types)) + [vocab.eos_id]
  assert len(ids) <= length, (text, types)
  return ids + [0] * (length - len(ids))


@functools.partial(jax.jit, static_argnames=("vocab_size",))
def _step(c, state, token, step, *, vocab_size):
  masked, state = c.step(state, token, jnp.zeros((token.shape[0], vocab_size)), step)
  return masked > decoding.FORBIDDEN_LOGIT / 2, state


def _allowed_after(vocab, text, types, prefix, forbid_repeats=True, follow_order=False,
                   end_at_repeat=0):
  """The set of token strings allowed after the output `prefix` (a string)."""
  c = constraints.NerCopyConstraint.from_vocabulary(vocab, forbid_repeats=forbid_repeats,
                                                    follow_order=follow_order,
                                                    end_at_repeat=end_at_repeat)
  inputs = jnp.asarray([_encode(vocab, text, types)], jnp.int32)
  state = c.init(inputs)
  token = jnp.zeros((1,), jnp.int32)  # the decoder start token
  for step, next_id in enumerate(vocab.encode(prefix) + [None]):
    allowed, state = _step(c, state, token, jnp.asarray(step), vocab_size=vocab.vocab_size)
    allowed = np.asarray(allowed[0])
    if next_id is None:
      return {"</s>" if i == vocab.eos_id else vocab.decode([int(i)])
              for i in np.flatnonzero(allowed)}
    assert allowed[next_id], (prefix, step, vocab.decode([next_id]))
    token = jnp.asarray([next_id], jnp.int32)


# ------------------------------------------------------------------------------------------
# Literal cases.
# ------------------------------------------------------------------------------------------


def test_a_repeated_item_cannot_be_closed(sp_vocab):
  after = functools.partial(_allowed_after, sp_vocab, "北京和上海", ["地点"])
  assert after("((地点:北京),(地点:北京") == {"和"}  # only the span's continuation
  assert after("((地点:北京),(地点:上海") == {")"}  # another span of the type
  assert after("((地点:北京),(地点:上海),(地点:北京") == {"和"}
  assert after("((地点:北京),(地点:北京和") == {"上", ")"}  # a longer span is new
  # The rule off: the grammar as before.
  assert _allowed_after(sp_vocab, "北京和上海", ["地点"], "((地点:北京),(地点:北京",
                        forbid_repeats=False) == {"和", ")"}


def test_the_same_span_under_another_type_is_a_new_item(sp_vocab):
  after = functools.partial(_allowed_after, sp_vocab, "北京和上海", ["地点", "组织"])
  assert after("((地点:北京),(组织:北京") == {"和", ")"}
  assert after("((地点:北京),(组织:北京),(组织:北京") == {"和"}


def test_null_twice_is_a_repeat(sp_vocab):
  after = functools.partial(_allowed_after, sp_vocab, "北京和上海", ["地点", "组织"])
  starts = {"北", "京", "和", "上", "海"}
  assert after("((地点:NULL),(地点:") == starts  # NULL is not offered again
  assert after("((地点:NULL),(组织:") == starts | {"NULL"}  # another type's NULL is new
  assert after("((地点:北京),(地点:") == starts | {"NULL"}


def test_a_span_occurring_twice_in_the_text(sp_vocab):
  # "北京" ends at two input positions, "京北" once; repeated characters inside the span.
  after = functools.partial(_allowed_after, sp_vocab, "北京北京上海海", ["地点"])
  assert after("((地点:北京),(地点:北京") == {"北", "上"}
  assert after("((地点:北京北京),(地点:北京") == {"北", "上", ")"}
  assert after("((地点:北京北京),(地点:北京北京") == {"上"}
  assert after("((地点:海),(地点:海") == {"海"}  # "海" ends at two positions
  assert after("((地点:海),(地点:海海") == {")"}
  assert after("((地点:京北),(地点:京北") == {"京"}


def test_a_repeat_stays_allowed_when_it_is_the_only_way_on(sp_vocab):
  # "上海" ends the text: nothing else may follow it, so its close stays allowed (no dead end).
  assert _allowed_after(sp_vocab, "北京和上海", ["地点"], "((地点:上海),(地点:上海") == {")"}
  # No text at all: NULL is the only span, so (地点:NULL) may be written again.
  after = functools.partial(_allowed_after, sp_vocab, "", ["地点"])
  assert after("((地点:NULL),(地点:") == {"NULL"}
  assert after("((地点:NULL),(地点:NULL") == {")"}


def test_the_nth_closed_repeat_ends_the_target(sp_vocab):
  after = functools.partial(_allowed_after, sp_vocab, "北京和上海", ["地点", "组织"],
                            forbid_repeats=False)
  once = "((地点:北京),(地点:北京)"
  assert after(once, end_at_repeat=1) == {")"}  # no "," after the first repeat
  assert after(once + ")", end_at_repeat=1) == {"</s>"}
  assert after(once, end_at_repeat=2) == {",", ")"}  # one repeat is not yet the end
  assert after(once + ",(组织:北京),(地点:北京)", end_at_repeat=2) == {")"}
  assert after("((地点:NULL),(地点:NULL)", end_at_repeat=1) == {")"}  # NULL twice too
  # Writing the repeat stays allowed (unlike forbid_repeats), new items do not count.
  assert after("((地点:北京),(地点:北京", end_at_repeat=1) == {"和", ")"}
  assert after("((地点:北京),(组织:北京)", end_at_repeat=1) == {",", ")"}
  assert after("((地点:北京),(地点:北京和上海)", end_at_repeat=1) == {",", ")"}
  # The rule off: the grammar as before.
  assert after(once, end_at_repeat=0) == {",", ")"}


def test_end_at_repeat_must_be_a_count(sp_vocab):
  for bad in (-1, 1.5, True, "2"):
    with pytest.raises(ValueError, match="end_at_repeat must be an int >= 0"):
      constraints.NerCopyConstraint.from_vocabulary(sp_vocab, end_at_repeat=bad)


def test_a_repeat_close_that_is_also_a_copy_does_not_end_the_target(sp_vocab):
  # After the second "(地点:北京)" the span may still be "北京)上海": not a sure repeat yet.
  after = functools.partial(_allowed_after, sp_vocab, "北京)上海北京", ["地点"],
                            forbid_repeats=False, end_at_repeat=1)
  assert after("((地点:北京),(地点:北京)") == {"上", ",", ")"}
  assert after("((地点:北京),(地点:北京)上海),(地点:北京)上海)") == {")"}


def test_a_close_that_is_also_a_copy_is_not_recorded(sp_vocab):
  # After "(地点:北京)" the span may still be "北京)上海", so (地点, 北京) is not written yet:
  # the gold target ((地点:北京)上海),(地点:北京)) must stay possible.
  after = functools.partial(_allowed_after, sp_vocab, "北京)上海北京", ["地点"])
  assert after("((地点:北京)上海),(地点:北京") == {")"}
  # (地点, 北京)上海) was surely closed (no ")" follows "上海" in the text): a repeat.
  assert after("((地点:北京)上海),(地点:北京)上海") == {"北"}


def test_overflow_of_the_written_items_only_forbids_less(sp_vocab):
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, forbid_repeats=True, max_items=1)
  inputs = jnp.asarray([_encode(sp_vocab, "北京和上海", ["地点"])], jnp.int32)
  state = c.init(inputs)
  token = jnp.zeros((1,), jnp.int32)
  prefix = sp_vocab.encode("((地点:北京),(地点:上海),(地点:上海")
  for step, next_id in enumerate(prefix + [None]):
    allowed, state = _step(c, state, token, jnp.asarray(step), vocab_size=sp_vocab.vocab_size)
    if next_id is not None:
      token = jnp.asarray([next_id], jnp.int32)
  # Only (地点, 北京) fits: the repeated (地点, 上海) is not known, so it may close.
  assert bool(np.asarray(allowed)[0, int(c.close_id)])
  assert int(state["written_count"][0]) == 1
  with pytest.raises(ValueError, match="max_items"):
    constraints.NerCopyConstraint.from_vocabulary(sp_vocab, max_items=0)


def test_target_order_types_in_prompt_order_and_null_alone(sp_vocab):
  after = functools.partial(_allowed_after, sp_vocab, "北京和上海", ["地点", "组织"],
                            follow_order=True)
  assert after("((组织:北京),(") == {"组"}  # no going back to an earlier type
  assert after("((地点:北京),(") == {"地", "组"}
  assert after("((地点:NULL),(") == {"组"}  # NULL is its type's only item
  assert after("((地点:NULL),(组织:NULL)") == {")"}  # no type left: no ","
  # Without the rule, any order.
  assert _allowed_after(sp_vocab, "北京和上海", ["地点", "组织"], "((组织:北京),(") == {"地", "组"}


def test_target_order_spans_of_a_type_in_text_order(sp_vocab):
  after = functools.partial(_allowed_after, sp_vocab, "北京和上海北京", ["地点", "组织"],
                            follow_order=True)
  assert after("((地点:北京),(地点:") == {"京", "和", "上", "海", "北"}  # no NULL after a span
  assert after("((地点:上海),(地点:") == {"海", "北", "京"}  # only after "上海"
  assert after("((地点:上海),(地点:北") == {"京", ")"}  # the "北" after it
  # "北京" occurs at 0 and 5: its first occurrence sets the bar, "和" (2) may follow.
  assert after("((地点:北京),(地点:和") == {"上", ")"}
  # A span at the end of the text: nothing may start after it, so no "," for its type...
  only = functools.partial(_allowed_after, sp_vocab, "北京和上海", ["地点"], follow_order=True)
  assert only("((地点:海)") == {")"}
  # ... and with a later type, "," opens that one only.
  later = functools.partial(_allowed_after, sp_vocab, "北京和上海", ["地点", "组织"],
                            follow_order=True)
  assert later("((地点:海),(") == {"组"}


# ------------------------------------------------------------------------------------------
# Every gold target is accepted.
# ------------------------------------------------------------------------------------------

# The grammar's own characters, full-width punctuation, NULL, repeated characters.
# A small alphabet with many ")" so that spans often end just before a ")" of the text.
_GOLD_ALPHABET = "北京北京)))),:（），：NULLa"
TYPE_POOL = ["地点", "组织", "地点泛指", "名称"]


def _text_tokens(c, input_ids):
  ids = list(input_ids)
  start = ids.index(int(c.text_id)) + 1
  return [t for t in ids[start:] if t not in (int(c.eos_id), int(c.pad_id))]


def _type_tokens(c, input_ids):
  """{type index: its prompt tokens}."""
  ids = list(input_ids)
  segments, current = [], None
  for token in ids[:ids.index(int(c.text_id))]:
    if token == int(c.entity_id):
      current = []
      segments.append(current)
    else:
      current.append(token)
  return segments


def gold_target_ids(vocab, c, input_ids, types, mentions):
  """The token ids of prompts.format_target(mentions) with each span copied from the input's
  tokens; mentions are (type, start, end) token runs of the text.  Checks that they decode to
  format_target's string."""
  text = _text_tokens(c, input_ids)
  type_ids = _type_tokens(c, input_ids)
  pairs = [(types[t], vocab.decode(text[s:e])) for t, s, e in mentions]
  expected = prompts.format_target(pairs, types)  # ValueError for an unreadable span
  spans = {}
  for (t, s, e), (_, span) in zip(mentions, pairs):
    spans.setdefault(t, {}).setdefault(span, text[s:e])  # a repeated pair is written once
  items = []
  for t in range(len(types)):
    for run in (list(spans[t].values()) if t in spans else [[int(c.null_id)]]):
      items.append([int(c.open_id)] + type_ids[t] + [int(c.colon_id)] + run + [int(c.close_id)])
  ids = [int(c.open_id)]
  for index, item in enumerate(items):
    ids += ([int(c.comma_id)] if index else []) + item
  ids += [int(c.close_id), vocab.eos_id]
  assert vocab.decode(ids[:-1]) == expected
  return ids


@st.composite
def _gold_requests(draw):
  text = draw(st.text(alphabet=st.sampled_from(_GOLD_ALPHABET), max_size=14))
  types = draw(st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=3, unique=True))
  return text, types, draw(st.data())


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(request=_gold_requests(), follow_order=st.booleans(),
                  end_at_repeat=st.sampled_from([0, 1]))
def test_every_gold_target_is_accepted(sp_vocab, request, follow_order, end_at_repeat):
  """Any mentions without the order rule; with it, mentions as the readers give them: in text
  order, no two of one type starting at the same token (flat NER).  A gold target holds no
  repeat, so a repeat never ends it early (end_at_repeat=1, the strictest setting)."""
  text, types, data = request
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, forbid_repeats=True,
                                                    follow_order=follow_order,
                                                    end_at_repeat=end_at_repeat)
  input_ids = _encode(sp_vocab, text, types)
  length = len(_text_tokens(c, input_ids))
  runs = st.tuples(st.integers(0, len(types) - 1), st.integers(0, max(length - 1, 0)),
                   st.integers(1, 4))
  mentions = []
  for t, s, n in data.draw(st.lists(runs, max_size=6)) if length else []:
    mentions.append((t, s, min(s + n, length)))
    # Often also a prefix of it under the same type, after it: the case where a ")" that
    # continues the longer span could be mistaken for the close of the shorter one.
    if data.draw(st.booleans()):
      mentions.append((t, s, s + data.draw(st.integers(1, max(1, min(s + n, length) - s)))))
  if follow_order:
    first = {}
    for t, s, e in sorted(mentions, key=lambda m: m[1]):
      first.setdefault((t, s), (t, s, e))
    mentions = list(first.values())
  try:
    target = gold_target_ids(sp_vocab, c, input_ids, types, mentions)
  except ValueError:
    hypothesis.assume(False)  # format_target refuses the span (",(TYPE:" inside, or NULL)
  state = c.init(jnp.asarray([input_ids], jnp.int32))
  token = jnp.zeros((1,), jnp.int32)
  for step, next_id in enumerate(target):
    allowed, state = _step(c, state, token, jnp.asarray(step), vocab_size=sp_vocab.vocab_size)
    assert bool(np.asarray(allowed)[0, next_id]), (
        sp_vocab.decode(target[:step]), sp_vocab.decode([next_id]))
    token = jnp.asarray([next_id], jnp.int32)


def test_gold_targets_with_repeated_mentions_literal(sp_vocab):
  # The same text at two places, a span with ")" that also closes, NULL, every type.
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, forbid_repeats=True)
  text, types = "北京)上海北京)", ["地点", "组织"]
  input_ids = _encode(sp_vocab, text, types)
  mentions = [(0, 0, 2), (0, 0, 5), (0, 5, 7), (0, 5, 8), (0, 3, 5)]
  target = gold_target_ids(sp_vocab, c, input_ids, types, mentions)
  assert sp_vocab.decode(target[:-1]) == (
      "((地点:北京),(地点:北京)上海),(地点:北京)),(地点:上海),(组织:NULL))")
  state = c.init(jnp.asarray([input_ids], jnp.int32))
  token = jnp.zeros((1,), jnp.int32)
  for step, next_id in enumerate(target):
    allowed, state = _step(c, state, token, jnp.asarray(step), vocab_size=sp_vocab.vocab_size)
    assert bool(np.asarray(allowed)[0, next_id]), sp_vocab.decode(target[:step])
    token = jnp.asarray([next_id], jnp.int32)


# ------------------------------------------------------------------------------------------
# Searches never write a repeat unless it is the only way on.
# ------------------------------------------------------------------------------------------

# No grammar characters: every output splits into items unambiguously.
_PLAIN_ALPHABET = "北京大学上海和在了去张三今天"


def items_of(c, output_ids):
  """[(type tokens, span tokens or None for NULL)] of an output without grammar characters in
  its spans (tokens up to EOS)."""
  ids = [int(t) for t in output_ids]
  if int(c.eos_id) in ids:
    ids = ids[:ids.index(int(c.eos_id))]
  items, current = [], None
  for token in ids:
    if token == int(c.open_id):
      current = []
    elif token == int(c.close_id) and current is not None:
      colon = current.index(int(c.colon_id))
      span = current[colon + 1:]
      items.append((tuple(current[:colon]),
                    None if span == [int(c.null_id)] else tuple(span)))
      current = None
    elif current is not None:
      current.append(token)
  return items


def forced_repeat(text_ids, span):
  """May this repeated span be written again?  Only where its close was the only way on: no
  occurrence of the span in the text is followed by another text token (NULL: no text)."""
  if span is None:
    return not text_ids
  n = len(span)
  ends = [s + n for s in range(len(text_ids) - n + 1) if tuple(text_ids[s:s + n]) == span]
  return all(end == len(text_ids) for end in ends)


def assert_no_repeats(c, input_ids, output_ids):
  """Returns the number of repeated items (forced ones only)."""
  text = _text_tokens(c, input_ids)
  seen, repeats = set(), 0
  for item in items_of(c, output_ids):
    if item in seen:
      assert forced_repeat(text, item[1]), (input_ids, output_ids, item)
      repeats += 1
    seen.add(item)
  return repeats


@functools.partial(jax.jit, static_argnames=("beam_size",))
def _search_random_logits(table, inputs, constraint, *, beam_size):
  """A fake decoder whose logits depend on the last token only: it loops on items."""
  def step_fn(token_ids, cache, step):
    return table[token_ids % table.shape[0]], cache

  rows = decoding.expand_to_beams(inputs, beam_size)
  cache = jnp.zeros((rows.shape[0],), jnp.int32)
  if beam_size == 1:
    out = decoding.greedy_decode(step_fn, cache, rows, max_decode_length=DECODE_LEN,
                                 constraint=constraint, score_candidates=True)
    return out.tokens[:, None], out.scores[:, None]
  out = decoding.beam_search(step_fn, cache, rows, beam_size=beam_size,
                             max_decode_length=DECODE_LEN, constraint=constraint)
  return out.tokens, out.scores


def _random_logit_outputs(vocab, c, texts, types, seed, beam_size):
  """[(input ids, output ids)] of every hypothesis that exists, searched with `c` over random
  logits that favour "," (more items, so loops)."""
  inputs = [_encode(vocab, text, t) for text, t in zip(texts, types)]
  rng = np.random.default_rng(seed)
  table = jnp.asarray(rng.normal(size=(vocab.vocab_size, vocab.vocab_size)), jnp.float32)
  table = table.at[:, int(c.comma_id)].add(3.0)  # favour more items
  tokens, scores = _search_random_logits(table, jnp.asarray(inputs, jnp.int32), c,
                                         beam_size=beam_size)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  return [(inputs[e], tokens[e, k]) for e in range(len(texts)) for k in range(beam_size)
          if np.isfinite(scores[e, k])]


def _count_repeats(vocab, texts, types, seed, beam_size, forbid_repeats):
  c = constraints.NerCopyConstraint.from_vocabulary(vocab, forbid_repeats=forbid_repeats)
  repeats = 0
  for input_ids, output in _random_logit_outputs(vocab, c, texts, types, seed, beam_size):
    if forbid_repeats:
      repeats += assert_no_repeats(c, input_ids, output)
    else:
      items = items_of(c, output)
      repeats += len(items) - len(set(items))
  return repeats


def _plain_requests():
  return st.lists(
      st.tuples(st.text(alphabet=st.sampled_from(_PLAIN_ALPHABET), min_size=1, max_size=10),
                st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=2, unique=True)),
      min_size=ROWS, max_size=ROWS)


def test_random_logits_repeat_without_the_rule_and_not_with_it(sp_vocab):
  texts = ["北京和上海", "张三去了北京大学", "今天", "上海大学在上海"]
  types = [["地点"], ["地点", "组织"], ["名称"], ["组织", "地点"]]
  for beam_size in (1, 4):
    assert _count_repeats(sp_vocab, texts, types, 3, beam_size, forbid_repeats=False) > 0
    _count_repeats(sp_vocab, texts, types, 3, beam_size, forbid_repeats=True)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(requests=_plain_requests(), seed=st.integers(0, 2**16),
                  beam_size=st.sampled_from([1, 4]), end_at_repeat=st.sampled_from([1, 2]))
def test_random_logit_searches_end_at_the_nth_repeat(sp_vocab, requests, seed, beam_size,
                                                     end_at_repeat):
  """Random logits that loop on items: with end_at_repeat=N every output holds at most N
  repeats, and the item that is the Nth repeat is the output's last (then "))" and EOS)."""
  texts, types = zip(*requests)
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, end_at_repeat=end_at_repeat)
  for input_ids, output in _random_logit_outputs(sp_vocab, c, texts, types, seed, beam_size):
    items = items_of(c, output)
    seen, repeats = set(), []
    for index, item in enumerate(items):
      if item in seen:
        repeats.append(index)
      seen.add(item)
    assert len(repeats) <= end_at_repeat, (sp_vocab.decode(input_ids),
                                           sp_vocab.decode(output.tolist()))
    if len(repeats) == end_at_repeat:
      assert repeats[-1] == len(items) - 1, sp_vocab.decode(output.tolist())
      ids = output.tolist()
      if sp_vocab.eos_id in ids:  # else cut at the output limit right after that item
        end = ids.index(sp_vocab.eos_id)
        assert ids[end - 2:end] == [int(c.close_id)] * 2, sp_vocab.decode(ids)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(requests=_plain_requests(), seed=st.integers(0, 2**16),
                  beam_size=st.sampled_from([1, 4]))
def test_random_logit_searches_never_repeat(sp_vocab, requests, seed, beam_size):
  texts, types = zip(*requests)
  _count_repeats(sp_vocab, texts, types, seed, beam_size, forbid_repeats=True)


@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(requests=_plain_requests(), beam_size=st.sampled_from([1, 4]),
                  search=st.sampled_from(["allowed", "fast"]))
def test_the_tiny_trained_t5_never_repeats(config, trained_params, sp_vocab, requests,
                                           beam_size, search):
  net = model_lib.Transformer(config)
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, forbid_repeats=True)
  texts, types = zip(*requests)
  inputs = [_encode(sp_vocab, text, t, shared.FEATURE_LENGTHS["inputs"])
            for text, t in zip(texts, types)]
  out = generate.decode_batch(net, trained_params, jnp.asarray(inputs, jnp.int32), c,
                              beam_size=beam_size, max_decode_length=DECODE_LEN,
                              eos_id=sp_vocab.eos_id, search=search)
  tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
  for e in range(ROWS):
    for k in range(beam_size):
      if np.isfinite(scores[e, k]):
        assert_no_repeats(c, inputs[e], tokens[e, k])


# ------------------------------------------------------------------------------------------
# With both rules on, every search gives the same result (the contract of
# tests/test_fast_decoding.py and tests/test_candidate_decoding.py).
# ------------------------------------------------------------------------------------------


# The rules as the searches see them: forbid and order; a repeat ends the output (with the
# Extractor's output budget).
RULE_SETS = [dict(forbid_repeats=True, follow_order=True),
             dict(end_at_repeat=1, budget_factor=2.0)]


@pytest.mark.parametrize("rules", RULE_SETS, ids=["forbid+order", "end_at_repeat"])
@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(requests=_plain_requests(), beam_size=st.sampled_from([1, 4]))
def test_fast_and_allowed_searches_equal_stepwise_with_the_rules(config, trained_params,
                                                                  sp_vocab, rules, requests,
                                                                  beam_size):
  net = model_lib.Transformer(config)
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, **rules)
  inputs = jnp.asarray([_encode(sp_vocab, text, t, shared.FEATURE_LENGTHS["inputs"])
                        for text, t in requests], jnp.int32)
  run = lambda search: generate.decode_batch(
      net, trained_params, inputs, c, beam_size=beam_size, max_decode_length=DECODE_LEN,
      eos_id=sp_vocab.eos_id, stopping="best", search=search)
  reference = run("stepwise")
  _assert_same(reference, run("allowed"))
  _assert_same(reference, run("fast"))


def test_searches_agree_where_a_repeat_ends_the_output(config, sp_vocab):
  """An untrained model loops on items, so the rule fires: the fast and allowed searches still
  give the step-by-step search's result, and outputs end at their first closed repeat."""
  net = model_lib.Transformer(config)
  params = model_lib.init_params(config, jax.random.PRNGKey(7))
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, end_at_repeat=1)
  texts = ["北京和上海", "张三去了北京大学", "上海", "上海大学在上海"]
  types = [["地点"], ["地点", "组织"], ["名称"], ["组织", "地点"]]
  inputs = jnp.asarray([_encode(sp_vocab, text, t, shared.FEATURE_LENGTHS["inputs"])
                        for text, t in zip(texts, types)], jnp.int32)
  ended = 0
  for beam_size in (1, 4):
    run = lambda search, beam_size=beam_size: generate.decode_batch(
        net, params, inputs, c, beam_size=beam_size, max_decode_length=DECODE_LEN,
        eos_id=sp_vocab.eos_id, stopping="best", search=search)
    reference = run("stepwise")
    _assert_same(reference, run("allowed"))
    _assert_same(reference, run("fast"))
    best = np.asarray(reference.tokens).reshape(len(texts), beam_size, -1)[:, 0]
    for output in best:
      items = items_of(c, output)
      if len(items) != len(set(items)):
        ended += 1
        assert items[-1] in items[:-1] and len(set(items)) == len(items) - 1
  assert ended > 0  # the rule was exercised


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(requests=st.lists(
    st.tuples(st.text(alphabet=st.sampled_from(_GOLD_ALPHABET), max_size=12),
              st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=2, unique=True)),
    min_size=ROWS, max_size=ROWS), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("rules", RULE_SETS, ids=["forbid+order", "end_at_repeat"])
def test_candidate_masks_equal_vocabulary_masks_with_the_rules(sp_vocab, rules, requests, seed):
  """Random walks through the grammar with the rules: the candidate route allows exactly the
  vocabulary route's tokens, and the states agree (as test_candidate_decoding checks without
  the rules)."""
  c = constraints.NerCopyConstraint.from_vocabulary(sp_vocab, **rules)
  inputs = jnp.asarray([_encode(sp_vocab, t, types) for t, types in requests], jnp.int32)

  def never_a_dead_end(step, token, vocab_mask):
    # A row that has not ended (EOS) always has a way on.
    for row in range(ROWS):
      if int(token[row]) not in (sp_vocab.eos_id, 0):
        assert vocab_mask[row].any(), (row, step)

  check_random_walk(c, inputs, seed=seed, steps=DECODE_LEN, vocab_size=sp_vocab.vocab_size,
                    check_step=never_a_dead_end)
