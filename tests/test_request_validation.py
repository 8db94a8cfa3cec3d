"""Tests for punified_jax.request_validation: literal errors for each hostile input of issue 12,
and property tests that arbitrary bytes / JSON / strings never get past the validator as
anything but a valid request or a bounded, UTF-8-writable InvalidRequest."""

import json

import hypothesis
import hypothesis.strategies as st
import pytest

from punified_jax import inference
from punified_jax import request_validation as rv
from punified_jax import vocab as vocab_lib

import test_inference as shared

KNOWN = ("地点", "组织", "名称")
LIMITS = rv.Limits()


def validate(body, limits=LIMITS, **overrides):
  options = dict(known_types=KNOWN, allow_unseen_types=False, beam_sizes=(1, 4),
                 default_beam_size=4, default_constrained=True, allow_unconstrained=False,
                 limits=limits)
  options.update(overrides)
  if isinstance(body, (bytes, str)):
    body = rv.parse_json(body, limits)
  return rv.validate_extract_request(body, **options)


def error_of(body, **kwargs) -> tuple[int, str, str]:
  with pytest.raises(rv.InvalidRequest) as info:
    validate(body, **kwargs)
  return info.value.status, info.value.field, info.value.message


def test_a_valid_request():
  request = validate(b'{"texts": ["\xe5\x8c\x97\xe4\xba\xac", ""], "types": ["\xe5\x9c\xb0\xe7\x82\xb9"], '
                     b'"beam_size": 1}')
  assert request == rv.ExtractRequest(texts=("北京", ""), types=("地点",), beam_size=1,
                                      constrained=True, single=False)
  request = validate({"text": "北京", "dataset": "msra"})
  assert request.texts == ("北京",) and request.single and request.types == ("地点", "名称", "组织")


@pytest.mark.parametrize("body, expected", [
    # Bytes and JSON.
    (b'{"text": "\xff"}', (422, "body", "not valid UTF-8: byte 10 (0xff) invalid start byte")),
    (b"[" * 100_000 + b"]" * 100_000,
     (422, "body", "JSON nested 100000 levels deep, more than the limit 16")),
    (b'{"text": "x", "beam_size": ' + b"4" * 5000 + b"}",
     (422, "body", "a number of 5000 characters, more than the limit 20")),
    (b'{"text": "x", "beam_size": NaN}', (422, "body", "NaN is not a JSON number")),
    (b'{"text": "x", "text": "y"}', (422, "text", "field 'text' is given twice")),
    (b'{"text": "x",', (422, "body", "not valid JSON: Expecting property name enclosed in "
                                     "double quotes at line 1 column 14")),
    (b"[1]", (422, "body", "expected a JSON object, got list")),
    (b" " * (LIMITS.max_body_bytes + 1),
     (413, "body", f"{LIMITS.max_body_bytes + 1} bytes, more than the limit 1048576")),
    # Lone surrogates wherever they are.
    ({"texts": ["ok", "a\ud800b"], "types": ["地点"]},
     (422, "texts[1]", "texts[1] contains a lone surrogate \\ud800 at character 1: not valid "
                       "Unicode (send UTF-8 text)")),
    (b'{"text": "x", "types": ["\\udfff"]}',
     (422, "types[0]", "types[0] contains a lone surrogate \\udfff at character 0: not valid "
                       "Unicode (send UTF-8 text)")),
    (b'{"text": "x", "\\ud800x": 1}',
     (422, "body", "a field name contains a lone surrogate \\ud800 at character 0: not valid "
                   "Unicode (send UTF-8 text)")),
    # Shape.
    ({"text": "x", "colour": 1, "types": ["地点"]},
     (422, "colour", "unknown field 'colour' (fields: texts, text, types, dataset, beam_size, "
                     "constrained)")),
    ({"types": ["地点"]}, (422, "texts", "missing: give texts (a list of strings) or text")),
    ({"text": "x", "texts": ["y"], "types": ["地点"]},
     (422, "text", "give either text (one string) or texts (a list), not both")),
    ({"texts": ["x", 3], "types": ["地点"]}, (422, "texts[1]", "texts[1] is a int, not a str")),
    ({"texts": "x", "types": ["地点"]},
     (422, "texts", "texts must be a list of strings (wrap a single text in a list), got str")),
    ({"text": "x"}, (422, "types", "no entity types requested: give types (a list of type names) "
                                   "or a dataset (one of ecommerce, msra, ontonotes4, "
                                   "peoples_daily, boson, resume, cluener, ccks2021, weibo, "
                                   "peoples_daily_1998)")),
    ({"text": "x", "types": ["地点", "城堡"]},
     (422, "types[1]", "unknown entity type(s) 城堡; known types: 地点, 组织, 名称 "
                       "(allow_unseen_types=True lets other names through)")),
    ({"text": "x", "types": ["地:点"]},
     (422, "types[0]", "types[0]: entity type name '地:点' contains ':', which the target "
                       "format uses as a separator")),
    ({"text": "x", "types": ["地点", "地点"]},
     (422, "types", "entity type names are repeated in the prompt: 地点")),
    ({"text": "x", "types": []}, (422, "types", "types is empty: request at least one entity "
                                                "type")),
    ({"text": "x", "dataset": "nope" * 100},
     (422, "dataset", "unknown dataset 'nopenopenopenopenopenopenopenopenopenope'… (400 "
                      "characters); known datasets: ecommerce, msra, ontonotes4, peoples_daily, "
                      "boson, resume, cluener, ccks2021, weibo, peoples_daily_1998")),
    ({"text": "x", "types": ["地点"], "beam_size": 3},
     (422, "beam_size", "beam_size 3 is not served; choose one of 1, 4")),
    ({"text": "x", "types": ["地点"], "beam_size": True},
     (422, "beam_size", "beam_size must be an integer, got boolean")),
    ({"text": "x", "types": ["地点"], "constrained": "no"},
     (422, "constrained", "constrained must be true or false, got string")),
    ({"text": "x", "types": ["地点"], "constrained": False},
     (422, "constrained", "this server only decodes with the copy constraint (start it with "
                          "--allow_unconstrained)")),
    # Sizes.
    ({"texts": ["x"] * 65, "types": ["地点"]},
     (413, "texts", "texts has 65 texts, more than the limit 64")),
    ({"texts": ["x" * 20_001], "types": ["地点"]},
     (413, "texts[0]", "texts[0] has 20001 characters, more than the limit 20000 (longer texts "
                       "are split into windows, never cut, up to this limit)")),
    ({"texts": ["x" * 20_000] * 6, "types": ["地点"]},
     (413, "texts", "texts hold 120000 characters together, more than the limit 100000")),
    ({"text": "x", "types": ["类" * 5_000_000]},
     (422, "types[0]", "types[0] is a type name of 5000000 characters, more than the limit 32")),
    ({"text": "x", "types": [f"t{i}" for i in range(65)]},
     (413, "types", "types has 65 names, more than the limit 64")),
])
def test_literal_errors(body, expected):
  assert error_of(body) == expected


def test_unseen_types_and_unconstrained_when_allowed():
  request = validate({"text": "x", "types": ["城堡"], "constrained": False},
                     allow_unseen_types=True, allow_unconstrained=True)
  assert request.types == ("城堡",) and request.constrained is False


def test_json_depth_ignores_brackets_in_strings():
  assert rv.json_depth(b'{"a": "[[[[{{", "b": [[1], {"c": "]]]"}]}') == 3
  assert rv.json_depth(b'"\\"[["') == 0
  assert rv.json_depth(b"") == 0


def test_preview_and_escape_are_bounded_and_writable():
  assert rv.preview("a\ud800\x00b") == "'a\\ud800\\u0000b'"
  assert rv.preview("x" * 50, limit=5) == "'xxxxx'… (50 characters)"
  assert rv.preview(10 ** 40) == "a very large integer"
  assert rv.preview([1, 2]) == "a list of 2 items"
  assert rv.escape("é\u2028" * 3, limit=4) == "é\\u2028é\\u2028… (6 characters)"


def test_line_requests():
  options = dict(default_types=["地点"], default_dataset=None, known_types=KNOWN,
                 allow_unseen_types=False, limits=LIMITS)
  request = rv.validate_line_request({"text": "北京", "id": 7}, **options)
  assert request == rv.LineRequest(text="北京", types=("地点",), id=7, has_id=True)
  assert rv.validate_line_request({"text": "北京", "dataset": "ecommerce"},
                                  **options).types == ("品牌", "商品")
  with pytest.raises(rv.InvalidRequest, match=r"^id has 300 characters, more than the limit 256$"):
    rv.validate_line_request({"text": "x", "id": "i" * 300}, **options)
  with pytest.raises(rv.InvalidRequest, match="^unknown field 'x' "):
    rv.validate_line_request({"text": "x", "x": 1}, **options)


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory):
  return vocab_lib.get_vocabulary(shared.train_vocab(tmp_path_factory.mktemp("vocab")))


def test_vocabulary_coverage_and_cost(sp_vocab):
  coverage = rv.VocabularyCoverage(sp_vocab)
  assert coverage.outside("北京 和上海\n") == 0
  assert coverage.outside("北京😀😀𠀀") == 3       # emoji and an extension-B character
  rv.check_cost(["北京😀"], [1], coverage, rv.Limits(max_oov_chars=1, max_windows=1))
  with pytest.raises(rv.InvalidRequest) as info:
    rv.check_cost(["北京😀", "😀"], [1, 1], coverage, rv.Limits(max_oov_chars=1))
  assert (info.value.status, info.value.field) == (413, "texts[1]")
  with pytest.raises(rv.InvalidRequest) as info:
    rv.check_cost(["a", "b", "c"], [2, 2, 2], None, rv.Limits(max_windows=5))
  assert info.value.field == "texts[2]" and info.value.message == (
      "the request needs 6 model windows by texts[2], more than the per-request decode budget "
      "of 5 windows; send shorter or fewer texts")


def test_python_api_refuses_lone_surrogates_with_the_field_named(sp_vocab):
  """Before: an undocumented RuntimeError from the tokenizer. Validation runs before any
  decoding, so no parameters are needed."""
  extractor = inference.Extractor(shared.tiny_config(sp_vocab.vocab_size), None, sp_vocab,
                                  batch_size=shared.BATCH_SIZE, max_input_length=32,
                                  max_decode_length=40)
  with pytest.raises(rv.InvalidRequest, match=r"^texts\[1\] contains a lone surrogate \\ud800"):
    extractor.extract(["北京", "a\ud800b"], types=["地点"])
  with pytest.raises(ValueError) as info:
    extractor.extract(["北京"], types=["地点", "类" * 1_000_000], )
  assert info.value.field == "types[1]" and len(str(info.value)) < 500


# ------------------------------------------------------------------------------------------
# Property tests: nothing crashes, every error is bounded and writable.
# ------------------------------------------------------------------------------------------

# Any code point, lone surrogates included (hypothesis leaves them out by default).
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None,
                         exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=30)
FIELD_NAMES = st.sampled_from(rv.SERVICE_FIELDS + ("id", "x")) | ANY_TEXT
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | ANY_TEXT | st.sampled_from(KNOWN + ("msra",)))
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(FIELD_NAMES, inner, max_size=4), max_leaves=12)
REQUESTS = st.fixed_dictionaries({}, optional={
    "texts": st.lists(ANY_TEXT | SCALARS, max_size=3) | JSON_VALUES,
    "text": ANY_TEXT | JSON_VALUES,
    "types": st.lists(st.sampled_from(KNOWN) | ANY_TEXT, max_size=3) | JSON_VALUES,
    "dataset": st.sampled_from(("msra", "resume")) | JSON_VALUES,
    "beam_size": st.sampled_from((1, 4)) | JSON_VALUES,
    "constrained": st.booleans() | JSON_VALUES,
}) | JSON_VALUES

SMALL = rv.Limits(max_texts=2, max_text_chars=20, max_total_chars=30, max_types=2,
                  max_type_chars=4, max_json_depth=3)


def _check_outcome(body, limits) -> None:
  try:
    request = validate(body, limits=limits)
  except rv.InvalidRequest as error:
    assert error.status in (413, 422)
    encoded = json.dumps(error.to_json(), ensure_ascii=False).encode("utf-8")  # never raises
    assert len(encoded) < 2000
    assert error.field and error.message
    return
  assert all(isinstance(t, str) and rv.find_surrogate(t) is None for t in request.texts)
  assert set(request.types) <= set(KNOWN) | {n for ds in ("msra", "resume")
                                             for n in rv.check_dataset(ds)}
  assert request.beam_size in (1, 4) and request.constrained is True


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(REQUESTS, st.sampled_from([LIMITS, SMALL]))
def test_arbitrary_objects_never_crash(body, limits):
  _check_outcome(body, limits)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(REQUESTS, st.sampled_from([LIMITS, SMALL]))
def test_arbitrary_json_documents_never_crash(body, limits):
  # json.dumps escapes lone surrogates as \udXXX: the parser sees them as a client sends them.
  _check_outcome(json.dumps(body).encode("ascii"), limits)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.binary(max_size=200) | st.builds(
    lambda prefix, body: prefix + body, st.sampled_from([b"", b"[[[[", b'{"text": "']),
    st.binary(max_size=60)))
def test_arbitrary_bytes_never_crash(data):
  _check_outcome(data, SMALL)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(ANY_TEXT, st.integers(1, 50))
def test_escape_is_always_writable_and_bounded(text, limit):
  shown = rv.escape(text, limit)
  shown.encode("utf-8")
  assert len(shown) <= 6 * limit + 30
  assert shown == text or len(text) > limit or rv._UNSAFE_RE.search(text)
