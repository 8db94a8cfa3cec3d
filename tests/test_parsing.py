"""parse_generation (never raises; round trip with format_target) and locate_mentions."""

import hypothesis
from hypothesis import strategies as st
import pytest

from punified_jax import entity_types as et
from punified_jax.parsing import (ParseResult, align_span, locate_mentions, parse_generation,
                                  parse_generation_details)
from punified_jax.prompts import NULL, format_target

TYPES = ("地点", "组织", "时间")


# --------------------------------------------------------------------------------------------
# parse_generation: literal cases


def test_parses_the_format_example():
  gen = "((地点:北京),(地点:上海),(组织:北京大学),(时间:NULL))"
  assert parse_generation(gen, TYPES) == [("地点", "北京"), ("地点", "上海"), ("组织", "北京大学")]
  assert parse_generation(gen) == [("地点", "北京"), ("地点", "上海"), ("组织", "北京大学")]
  details = parse_generation_details(gen, TYPES)
  assert (details.items, details.null_items, details.truncated, details.unparsed) == (4, 1, False,
                                                                                      False)


def test_spans_with_separators_and_full_width_punctuation():
  gen = "((书籍:《三体：黑暗森林》),(公司:华为(深圳),有限公司),(地点:A,B:C),(地点:（东）区))"
  assert parse_generation(gen, ("书籍", "公司", "地点")) == [
      ("书籍", "《三体：黑暗森林》"), ("公司", "华为(深圳),有限公司"), ("地点", "A,B:C"),
      ("地点", "（东）区")]


def test_span_ending_with_parenthesis_in_last_and_middle_item():
  gen = "((组织:北京大学(北大)),(地点:海淀(区)))"
  assert parse_generation(gen, ("组织", "地点")) == [("组织", "北京大学(北大)"), ("地点", "海淀(区)")]


def test_longest_type_first_for_prefix_sharing_names():
  types = ("地点", "地点泛指", "兴趣点", "次兴趣点")
  gen = "((地点泛指:那里),(地点:北京),(次兴趣点:3号门),(兴趣点:公园))"
  assert parse_generation(gen, types) == [("地点泛指", "那里"), ("地点", "北京"),
                                          ("次兴趣点", "3号门"), ("兴趣点", "公园")]


def test_only_requested_types_start_items_when_types_given():
  # "人名" is not requested, so "),(人名:" is part of the 地点 span.
  gen = "((地点:北京),(人名:张三))"
  assert parse_generation(gen, ("地点",)) == [("地点", "北京),(人名:张三")]
  # Without types, any colon-terminated run starts an item.
  assert parse_generation(gen) == [("地点", "北京"), ("人名", "张三")]


def test_documented_limitation_split_at_item_start_pattern():
  # Meant as one 地点 item with the span "甲),(组织:乙", but a span literally containing
  # "),(组织:" is split there (format_target refuses to write such a target).
  gen = "((地点:甲),(组织:乙))"
  assert parse_generation(gen, ("地点", "组织")) == [("地点", "甲"), ("组织", "乙")]


def test_duplicates_kept_once_first_wins_and_empty_spans_dropped():
  details = parse_generation_details("((地点:北京),(组织:北京),(地点:北京),(地点:))", TYPES)
  assert details.mentions == [("地点", "北京"), ("组织", "北京")]
  assert (details.items, details.duplicates, details.empty_spans) == (4, 1, 1)
  assert details.repeats == 1


def test_repeats_count_null_and_empty_items_too():
  details = parse_generation_details(
      "((地点:NULL),(组织:北京),(地点:NULL),(组织:北京),(组织:),(组织:),(组织:北京))", TYPES)
  assert (details.duplicates, details.null_items, details.empty_spans) == (2, 2, 2)
  # The second (地点:NULL), (组织:) and both later (组织:北京): 4 repeats.
  assert details.repeats == 4
  # A truncated last item is no item: not a repeat either.
  assert parse_generation_details("((地点:NULL),(地点:NULL", TYPES).repeats == 0


def test_truncated_last_item_is_dropped_and_flagged():
  details = parse_generation_details("((地点:北京),(组织:北京大", TYPES)
  assert details.mentions == [("地点", "北京")]
  assert details.truncated and details.items == 2
  # One closing parenthesis is not enough: the item or the whole target is unfinished.
  details = parse_generation_details("((地点:北京),(组织:北京大学)", TYPES)
  assert details.mentions == [("地点", "北京")] and details.truncated
  details = parse_generation_details("((地点:", TYPES)
  assert details.mentions == [] and details.truncated
  assert not parse_generation_details("((地点:北京))", TYPES).truncated
  # Trailing whitespace after the final "))" is not a truncation; spaces inside a span stay.
  assert parse_generation_details("((地点:北京 )) \n", TYPES) == ParseResult(
      mentions=[("地点", "北京 ")], items=1)


def test_junk_before_the_first_item_and_unparsed_outputs():
  assert parse_generation("好的：((地点:北京))", TYPES) == [("地点", "北京")]
  for junk in ["", "北京", "(地点:北京)", "((人名:张三))", ")))(((", ":::"]:
    details = parse_generation_details(junk, TYPES)
    assert details.mentions == []
    assert details.unparsed == bool(junk) or details.truncated, junk
  assert parse_generation_details("", TYPES) == ParseResult(mentions=[])


def test_bytes_and_none_generation_do_not_raise():
  assert parse_generation("((地点:北京))".encode("utf-8"), TYPES) == [("地点", "北京")]
  assert parse_generation(b"\xff((\xfe", TYPES) == []
  assert parse_generation(None, TYPES) == []


def test_bad_types_argument_raises():
  with pytest.raises(TypeError, match="not the string"):
    parse_generation("((地点:北京))", "地点")
  with pytest.raises(ValueError, match="without ':'"):
    parse_generation("((地点:北京))", ("地:点",))
  assert parse_generation("((地点:北京))", ()) == []


# --------------------------------------------------------------------------------------------
# parse_generation: properties

SPAN_ALPHABET = (",:()，：（）【】《》、 \t" + "abcXYZ019" + "北京大学地点泛指兴趣次公司有限上海")
# Fragments that look like grammar pieces, so spans hit the interesting paths often.
FRAGMENTS = ["),(", "((", "))", ":", "NULL", "(地点:", "),(地点:", "),(地点泛指:", "),(组织",
             "兴趣点:", "),(次兴趣点:", ")", "("]
PREFIX_GROUPS = [("地点", "地点泛指"), ("兴趣点", "次兴趣点"), ("地缘政治实体", "地缘政治实体泛指"),
                 ("组织", "组织泛指"), ()]


@st.composite
def type_lists(draw):
  names = draw(st.lists(st.sampled_from(et.ALL_PROMPT_NAMES), min_size=0, max_size=6))
  names += list(draw(st.sampled_from(PREFIX_GROUPS)))
  names = list(dict.fromkeys(names)) or ["地点"]
  return draw(st.permutations(names))


span_texts = st.lists(st.one_of(st.sampled_from(SPAN_ALPHABET), st.sampled_from(FRAGMENTS)),
                      min_size=1, max_size=8).map("".join)


def _representable(span, types):
  return span and span != NULL and not any(f"),({t}:" in span for t in types)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(data=st.data())
def test_round_trip_format_target_then_parse(data):
  types = data.draw(type_lists())
  other = [n for n in et.ALL_PROMPT_NAMES if n not in types][:3]
  mentions = data.draw(st.lists(st.tuples(st.sampled_from(list(types) + other), span_texts),
                                max_size=8))
  hypothesis.assume(all(_representable(s, types) for t, s in mentions if t in types))
  target = format_target(mentions, types)
  expected = []
  for t in types:  # grouped by prompt order, mention order inside a type, each pair once
    for m in mentions:
      if m[0] == t and m not in expected:
        expected.append(m)
  assert parse_generation(target, types) == expected
  details = parse_generation_details(target, types)
  assert not details.truncated and not details.unparsed


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(data=st.data())
def test_round_trip_without_types_when_spans_avoid_item_separator(data):
  types = data.draw(type_lists())
  spans = st.lists(st.one_of(st.sampled_from(SPAN_ALPHABET),
                             st.sampled_from([f for f in FRAGMENTS if "),(" not in f])),
                   min_size=1, max_size=8).map("".join)
  mentions = data.draw(st.lists(st.tuples(st.sampled_from(types), spans), max_size=6))
  hypothesis.assume(all(_representable(s, types) and "),(" not in s for _, s in mentions))
  expected = [m for t in types for m in dict.fromkeys(mentions) if m[0] == t]
  assert parse_generation(format_target(mentions, types)) == expected


generations = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS + ["地点", "组织", "NULL", "))", ""]),
                       st.text(max_size=3)), max_size=20).map("".join))


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(generation=generations, types=st.one_of(st.none(), type_lists()))
def test_parse_never_raises_and_output_is_clean(generation, types):
  details = parse_generation_details(generation, types)
  assert len(details.mentions) == len(set(details.mentions))
  for type_name, span in details.mentions:
    assert span and span != NULL
    if types is not None:
      assert type_name in types
    assert span in generation and type_name in generation
  assert details.items >= len(details.mentions)


# --------------------------------------------------------------------------------------------
# locate_mentions


def _spans(result):
  return [(m["type"], m["text"], m["start"], m["end"]) for m in result.located]


def test_longer_mentions_claim_first():
  text = "北京大学在北京"
  result = locate_mentions(text, [("地点", "北京"), ("组织", "北京大学")])
  assert _spans(result) == [("组织", "北京大学", 0, 4), ("地点", "北京", 5, 7)]
  assert result.not_located == []


def test_every_free_occurrence_is_located():
  result = locate_mentions("北京和北京，北京。", [("地点", "北京")])
  assert _spans(result) == [("地点", "北京", 0, 2), ("地点", "北京", 3, 5), ("地点", "北京", 6, 8)]


def test_no_free_occurrence_falls_back_to_first_occurrence():
  # 北京 only occurs inside the claimed 北京大学: mapped to its first occurrence, overlapping.
  result = locate_mentions("北京大学", [("组织", "北京大学"), ("地点", "北京")])
  assert _spans(result) == [("地点", "北京", 0, 2), ("组织", "北京大学", 0, 4)]


def test_tie_same_text_two_types_first_given_claims_all():
  # Same text, same length: input order decides; the second type falls back to occurrence 1.
  result = locate_mentions("北京和北京", [("组织", "北京"), ("地点", "北京")])
  assert _spans(result) == [("组织", "北京", 0, 2), ("地点", "北京", 0, 2), ("组织", "北京", 3, 5)]
  result = locate_mentions("北京和北京", [("地点", "北京"), ("组织", "北京")])
  assert _spans(result) == [("地点", "北京", 0, 2), ("组织", "北京", 0, 2), ("地点", "北京", 3, 5)]


def test_tie_same_length_earliest_occurrence_goes_first():
  # AB (first at 0) and BC (first at 1) have the same length: AB claims first, whatever the
  # input order; BC has no free occurrence and falls back to 1.
  for mentions in ([("x", "BC"), ("y", "AB")], [("y", "AB"), ("x", "BC")]):
    assert _spans(locate_mentions("ABC", mentions)) == [("y", "AB", 0, 2), ("x", "BC", 1, 3)]


def test_self_overlapping_occurrences_are_taken_left_to_right():
  assert _spans(locate_mentions("哈哈哈哈", [("x", "哈哈")])) == [("x", "哈哈", 0, 2),
                                                                ("x", "哈哈", 2, 4)]
  assert _spans(locate_mentions("哈哈哈", [("x", "哈哈")])) == [("x", "哈哈", 0, 2)]


def test_missing_and_empty_spans_are_returned_separately_and_duplicates_once():
  result = locate_mentions("张三去了北京", [("名称", "李四"), ("地点", "北京"), ("地点", ""),
                                        ("地点", "北京"), ("名称", "李四")])
  assert _spans(result) == [("地点", "北京", 4, 6)]
  assert result.not_located == [("名称", "李四"), ("地点", "")]
  located, not_located = result  # a NamedTuple: unpacks
  assert len(located) == 1 and len(not_located) == 2


def test_locate_rejects_malformed_mentions():
  with pytest.raises(ValueError, match="mention #1 must be a .type, span text. pair"):
    locate_mentions("北京", [("地点", "北京"), ("地点",)])
  with pytest.raises(TypeError, match="text must be a str"):
    locate_mentions(None, [])


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(data=st.data())
def test_located_offsets_always_match_the_span(data):
  text = data.draw(st.text(alphabet="ab北京 ,", max_size=20))
  substrings = [text[i:j] for i in range(len(text)) for j in range(i + 1, len(text) + 1)]
  span = st.sampled_from(substrings) if substrings else st.just("a")
  spans = st.one_of(span, st.text(alphabet="ab北京", max_size=3))
  mentions = data.draw(st.lists(st.tuples(st.sampled_from(["x", "y"]), spans), max_size=6))
  result = locate_mentions(text, mentions)
  for m in result.located:
    assert text[m["start"]:m["end"]] == m["text"]
  distinct = list(dict.fromkeys(mentions))
  located_pairs = {(m["type"], m["text"]) for m in result.located}
  for pair in distinct:  # each distinct pair is in exactly one of the two lists
    assert (pair in located_pairs) != (pair in result.not_located)
    assert (pair in located_pairs) == (bool(pair[1]) and pair[1] in text)
  # Occurrences claimed (not fallbacks) never overlap: a pair located more than once, or at a
  # place no other pair overlaps, claimed it.
  by_pair = {}
  for m in result.located:
    by_pair.setdefault((m["type"], m["text"]), []).append((m["start"], m["end"]))
  claimed = [r for pair, rs in by_pair.items() for r in rs
             if len(rs) > 1 or not any(o[0] < r[1] and r[0] < o[1]
                                       for p2, os in by_pair.items() if p2 != pair for o in os)]
  for i, a in enumerate(claimed):
    for b in claimed[i + 1:]:
      assert not (a[0] < b[1] and b[0] < a[1])


# --------------------------------------------------------------------------------------------
# align_span


def test_align_span():
  text = "我买了XK-200 Pro手机，张三"
  assert align_span(text, "张三") == "张三"
  assert align_span(text, "xk - 200 pro") == "XK-200 Pro"
  assert align_span(text, "XK-200Pro") == "XK-200 Pro"
  assert align_span(text, "李四") is None
  assert align_span(text, "") is None and align_span(text, "   ") is None
