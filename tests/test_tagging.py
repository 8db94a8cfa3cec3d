"""Tag decoding per scheme, orphan/unclosed repairs, scheme detection, encode/decode round trip."""

import hypothesis
from hypothesis import strategies as st
import pytest

from punified_jax.data import tagging


def _decode_lenient(tags, scheme, types=None):
  problems = []
  spans = tagging.decode_tags(tags, scheme, types=types,
                              on_problem=lambda i, kind, _: problems.append((i, kind)))
  return spans, problems


@pytest.mark.parametrize("scheme,tags,expected", [
    ("BIO", ["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),
    ("BIO", ["B-PER", "B-PER", "I-PER"], [(0, 1, "PER"), (1, 3, "PER")]),
    ("BIO", ["B_LOC", "I_LOC", "B_T"], [(0, 2, "LOC"), (2, 3, "T")]),  # People Daily 2014
    ("BIO", ["B-PER.NAM", "I-PER.NAM", "B-GPE.NOM"], [(0, 2, "PER.NAM"), (2, 3, "GPE.NOM")]),
    ("BMES", ["B-NAME", "M-NAME", "E-NAME", "O", "S-LOC"], [(0, 3, "NAME"), (4, 5, "LOC")]),
    ("BIOES", ["S-HP", "B-HC", "I-HC", "E-HC", "O"], [(0, 1, "HP"), (1, 4, "HC")]),
    ("BIES", ["B-prov", "E-prov", "B-city", "I-city", "E-city", "O"],
     [(0, 2, "prov"), (2, 5, "city")]),
    ("BIOES", [], []),
    ("BMES", ["O", "O"], []),
])
def test_decode_valid(scheme, tags, expected):
  assert tagging.decode_tags(tags, scheme) == expected


@pytest.mark.parametrize("scheme,tags,expected_spans,expected_problems", [
    # BIO: I- without B-, and I- of another type, each start a new span.
    ("BIO", ["O", "I-PER", "I-PER"], [(1, 3, "PER")], [(1, "orphan_inside_tag")]),
    ("BIO", ["B-PER", "I-LOC"], [(0, 1, "PER"), (1, 2, "LOC")], [(1, "orphan_inside_tag")]),
    # BMES: a span cut by a sentence end, then the rest of it as an orphan (Resume's case).
    ("BMES", ["B-ORG", "M-ORG"], [(0, 2, "ORG")], [(2, "unclosed_span")]),
    ("BMES", ["M-ORG", "E-ORG", "O"], [(0, 2, "ORG")], [(0, "orphan_inside_tag")]),
    # An orphan E makes a one-token span.
    ("BMES", ["O", "E-ORG"], [(1, 2, "ORG")], [(1, "orphan_inside_tag")]),
    # BIOES: B followed by B (Ecommerce's case): the first span is closed where it stands.
    ("BIOES", ["B-HC", "B-HC", "E-HC"], [(0, 1, "HC"), (1, 3, "HC")], [(1, "unclosed_span")]),
    ("BIOES", ["B-HC", "I-HC", "O"], [(0, 2, "HC")], [(2, "unclosed_span")]),
    ("BIOES", ["B-HC", "S-HP"], [(0, 1, "HC"), (1, 2, "HP")], [(1, "unclosed_span")]),
    # Type change inside a BIOES span: unclosed + orphan.
    ("BIOES", ["B-HC", "I-HP", "E-HP"], [(0, 1, "HC"), (1, 3, "HP")],
     [(1, "unclosed_span"), (1, "orphan_inside_tag")]),
    # Tags that do not belong to the scheme are read as O.
    ("BIO", ["B-PER", "E-PER"], [(0, 1, "PER")], [(1, "unknown_tag")]),
    ("BMES", ["I-PER"], [], [(0, "unknown_tag")]),
    ("BIO", ["X", "b-PER", "B-", "o"], [], [(0, "unknown_tag"), (1, "unknown_tag"),
                                          (2, "unknown_tag"), (3, "unknown_tag")]),
])
def test_decode_repairs(scheme, tags, expected_spans, expected_problems):
  spans, problems = _decode_lenient(tags, scheme)
  assert spans == expected_spans
  assert problems == expected_problems
  with pytest.raises(ValueError):
    tagging.decode_tags(tags, scheme)


def test_decode_unknown_type():
  spans, problems = _decode_lenient(["B-PER", "I-PER", "B-FOO"], "BIO", types={"PER"})
  assert spans == [(0, 2, "PER")]
  assert problems == [(2, "unknown_tag")]


@pytest.mark.parametrize("tags,expected", [
    (["O", "O"], "BIO"),
    (["B-X", "I-X"], "BIO"),
    (["B-X", "E-X"], "BIOES"),
    (["S-X", "O"], "BIOES"),
    (["B-X", "M-X", "E-X"], "BMES"),
    (["garbage", "B_LOC"], "BIO"),
])
def test_detect_scheme(tags, expected):
  assert tagging.detect_scheme(tags) == expected


def test_encode_literal():
  spans = [(0, 1, "A"), (2, 5, "B")]
  assert tagging.encode_spans(6, spans, "BIO") == ["B-A", "O", "B-B", "I-B", "I-B", "O"]
  assert tagging.encode_spans(6, spans, "BIOES") == ["S-A", "O", "B-B", "I-B", "E-B", "O"]
  assert tagging.encode_spans(6, spans, "BMES") == ["S-A", "O", "B-B", "M-B", "E-B", "O"]
  assert tagging.encode_spans(3, [(0, 2, "LOC")], "BIO", separator="_") == [
      "B_LOC", "I_LOC", "O"]


@pytest.mark.parametrize("spans", [[(0, 2, "A"), (1, 3, "B")], [(2, 2, "A")], [(0, 9, "A")],
                                   [(0, 1, "a b")]])
def test_encode_rejects_inexpressible_spans(spans):
  with pytest.raises(ValueError):
    tagging.encode_spans(4, spans, "BIO")


def test_unknown_scheme():
  with pytest.raises(ValueError, match="known: BIO, BIOES, BMES, BIES"):
    tagging.decode_tags(["O"], "IOB2")


@st.composite
def _token_spans(draw):
  length = draw(st.integers(0, 30))
  cuts = sorted(draw(st.sets(st.integers(0, length), max_size=12)))
  spans = []
  for start, end in zip(cuts, cuts[1:]):
    if draw(st.booleans()):
      spans.append((start, end, draw(st.sampled_from(["PER", "LOC", "PER.NAM", "poi", "T"]))))
  return length, spans


@hypothesis.given(_token_spans(), st.sampled_from(tagging.SCHEMES))
def test_encode_decode_round_trip(length_and_spans, scheme):
  length, spans = length_and_spans
  tags = tagging.encode_spans(length, spans, scheme)
  assert tagging.decode_tags(tags, scheme) == spans
  # The detected scheme decodes the same spans.
  assert tagging.decode_tags(tags, tagging.detect_scheme(tags)) == spans
