"""One request validator for the HTTP service, the `extract` CLI and `Extractor.extract`.

A public endpoint sees hostile input. Everything a caller sends goes through this module before
any model code sees it, and every problem becomes an `InvalidRequest` that names the field
(`texts[3]`, `types[0]`, `body`, `id`), carries an HTTP status (413 for "too much", 422 for
"malformed") and echoes at most a short, escaped preview of the offending value.

What is checked (limits in `Limits`; None = unlimited):
* Bytes: the body/line size; strict UTF-8 (invalid bytes are reported with their offset).
* JSON: nesting depth (checked by a linear scan BEFORE parsing, so a 100,000-deep array costs
  one pass and no recursion), numbers of more than `max_number_chars` characters (a 5000-digit
  integer is refused before Python converts it), NaN/Infinity, duplicate object keys.
* Strings: lone surrogates ("a\\ud800b", legal in JSON escapes and in Python strings, but not
  encodable as UTF-8, which the tokenizer and every writer need) are refused wherever they
  appear, including object keys and echoed ids.
* Request shape: known fields only; `texts` (list) or `text`; `types` (list) or `dataset`;
  `beam_size` (one of the values the server has compiled), `constrained` (bool); counts and
  lengths of texts and type names; unknown type names (the message lists the known ones).
* Cost: one request's decoding cost is bounded by a budget of WINDOWS (model inputs of at most
  `max_input_length` tokens, each decoded to at most `max_decode_length` tokens), so a request
  costs at most `max_windows` x one beam search, whatever the text holds; and by a limit on
  characters outside the model's vocabulary (`max_oov_chars`): such characters cost several
  byte tokens each (an extension-B CJK character is 4), and a text made of them (emoji, rare
  characters) drives the model to its output limit in every window. Both are checked before
  the request is queued.

Errors never echo more than `PREVIEW_CHARS` characters of a value, with surrogates and control
characters escaped, so an error message is always writable as UTF-8 and its size is bounded.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from punified_jax import entity_types
from punified_jax import prompts

PREVIEW_CHARS = 40
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Characters escaped in previews: C0/C1 controls, surrogates, line/paragraph separators.
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
# A JSON string literal (for the depth scan: brackets inside strings do not nest).
_JSON_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class InvalidRequest(ValueError):
  """A request the caller must fix: `field` names where, `status` is the HTTP status.

  `str(error)` is the message alone (the Python API's historical messages are kept);
  `to_json()` is what the service and the CLI return.
  """

  def __init__(self, field: str, message: str, status: int = 422):
    super().__init__(message)
    self.field = field
    self.message = message
    self.status = status

  def to_json(self) -> dict[str, Any]:
    return {"field": self.field, "error": self.message}


class InvalidRequestType(InvalidRequest, TypeError):
  """A value of the wrong type (also a TypeError, as the Python API has always raised)."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """Bounds on one request. None means unlimited.

  The defaults are the service's (and the CLI's, per line). `Limits.library()` are the Python
  API's: no size or cost limits (a library caller may process a long document), the same
  checks of types, strings and surrogates, and the same bounded echo.
  """
  max_body_bytes: Optional[int] = 1 << 20      # 1 MiB of JSON per request / line
  max_json_depth: Optional[int] = 16           # a request needs 3 levels
  max_number_chars: Optional[int] = 20         # beam_size, an integer id
  max_texts: Optional[int] = 64                # texts per request
  max_text_chars: Optional[int] = 20_000       # characters per text (longer: 413, never cut)
  max_total_chars: Optional[int] = 100_000     # characters over all texts of a request
  max_types: Optional[int] = 64                # type names per request (37 exist)
  max_type_chars: Optional[int] = 32           # characters per type name (the longest is 6)
  max_id_chars: Optional[int] = 256            # an echoed CLI line id
  max_oov_chars: Optional[int] = 2_000         # characters outside the vocabulary per request
  max_windows: Optional[int] = 64              # model windows per request: the decode budget

  @classmethod
  def library(cls) -> "Limits":
    return cls(**{field.name: None for field in dataclasses.fields(cls)})

  def to_json(self) -> dict[str, Optional[int]]:
    return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------
# Echo-safe previews.
# ------------------------------------------------------------------------------------------


def escape(text: str, limit: int = PREVIEW_CHARS) -> str:
  """`text` cut at `limit` characters (the full length said) with control characters and lone
  surrogates written as \\uXXXX: safe to print, log and encode as UTF-8."""
  shown = _UNSAFE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text[:limit])
  return shown + (f"… ({len(text)} characters)" if len(text) > limit else "")


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
  """A short, printable, UTF-8-safe rendering of `value` for an error message: strings quoted
  and escaped (`escape`), small numbers as they are, containers by their size."""
  if isinstance(value, str):
    suffix = f"… ({len(value)} characters)" if len(value) > limit else ""
    return f"'{escape(value[:limit], limit)}'{suffix}"
  if value is None or isinstance(value, (bool, float)):
    return repr(value)
  if isinstance(value, int):
    return repr(value) if abs(value) < 10 ** 30 else "a very large integer"
  if isinstance(value, (list, tuple)):
    return f"a list of {len(value)} items"
  if isinstance(value, Mapping):
    return f"an object with {len(value)} fields"
  return f"a {type(value).__name__}"


def _type_name(value: Any) -> str:
  """The JSON-facing name of a value's type."""
  if value is None:
    return "NoneType"
  return type(value).__name__


def find_surrogate(text: str) -> Optional[int]:
  """Index of the first lone surrogate in `text`, or None."""
  match = _SURROGATE_RE.search(text)
  return match.start() if match else None


def check_string(value: str, field: str, what: Optional[str] = None) -> str:
  """Refuses strings that are not valid Unicode (lone surrogates: not UTF-8 encodable).
  `what` names the string in the message (default: the field)."""
  index = find_surrogate(value)
  if index is not None:
    raise InvalidRequest(field, f"{what or field} contains a lone surrogate "
                         f"\\u{ord(value[index]):04x} "
                         f"at character {index}: not valid Unicode (send UTF-8 text)")
  return value


# ------------------------------------------------------------------------------------------
# Bytes and JSON.
# ------------------------------------------------------------------------------------------


def decode_utf8(data: bytes, field: str = "body") -> str:
  """Strict UTF-8 decoding; an error names the byte offset (an initial BOM is dropped)."""
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as error:
    raise InvalidRequest(field, f"not valid UTF-8: byte {error.start} "
                         f"(0x{data[error.start]:02x}) {error.reason}") from None
  return text[1:] if text.startswith("\ufeff") else text


def json_depth(data: bytes) -> int:
  """Maximum bracket nesting of a JSON document (strings ignored), in one linear pass."""
  stripped = _JSON_STRING_RE.sub(b"", data)
  codes = np.frombuffer(stripped, np.uint8)
  steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int32)
           - np.isin(codes, (ord("]"), ord("}"))).astype(np.int32))
  return int(np.cumsum(steps).max()) if len(steps) else 0


def parse_json(data: bytes | str, limits: Limits, field: str = "body") -> Any:
  """Parses one JSON document within `limits` (size, UTF-8, depth, numbers, keys)."""
  if isinstance(data, str):
    check_string(data, field)
    data = data.encode("utf-8")
  if limits.max_body_bytes is not None and len(data) > limits.max_body_bytes:
    raise InvalidRequest(field, f"{len(data)} bytes, more than the limit "
                         f"{limits.max_body_bytes}", status=413)
  text = decode_utf8(data, field)
  if limits.max_json_depth is not None:
    depth = json_depth(data)
    if depth > limits.max_json_depth:
      raise InvalidRequest(field, f"JSON nested {depth} levels deep, more than the "
                           f"limit {limits.max_json_depth}")

  def number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(literal: str) -> Any:
      if limits.max_number_chars is not None and len(literal) > limits.max_number_chars:
        raise InvalidRequest(field, f"a number of {len(literal)} characters, more "
                             f"than the limit {limits.max_number_chars}")
      return kind(literal)
    return convert

  def no_constant(name: str) -> Any:
    raise InvalidRequest(field, f"{name} is not a JSON number")

  def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
      check_string(key, field, "a field name")
      if key in result:
        raise InvalidRequest(escape(key) or field, f"field {preview(key)} is given twice")
      result[key] = value
    return result

  try:
    return json.loads(text, parse_int=number(int), parse_float=number(float),
                      parse_constant=no_constant, object_pairs_hook=unique_keys)
  except json.JSONDecodeError as error:
    raise InvalidRequest(field, f"not valid JSON: {error.msg} at line {error.lineno} column "
                         f"{error.colno}") from None
  except RecursionError:  # the depth scan is off (no limit): still a clean error
    raise InvalidRequest(field, "JSON nested too deeply") from None


# ------------------------------------------------------------------------------------------
# Texts and types.
# ------------------------------------------------------------------------------------------


def check_text(text: Any, limits: Limits, field: str) -> str:
  """One text: a valid string within the length limit."""
  if not isinstance(text, str):
    raise InvalidRequestType(field, f"{field} is a {_type_name(text)}, not a str")
  if limits.max_text_chars is not None and len(text) > limits.max_text_chars:
    raise InvalidRequest(field, f"{field} has {len(text)} characters, more than the limit "
                         f"{limits.max_text_chars} (longer texts are split into windows, "
                         "never cut, up to this limit)", status=413)
  return check_string(text, field)


def check_texts(texts: Any, limits: Limits, field: str = "texts") -> list[str]:
  """A list of valid strings within the count and length limits."""
  if isinstance(texts, str) or not isinstance(texts, Iterable) or isinstance(texts, Mapping):
    raise InvalidRequestType(field, f"{field} must be a list of strings (wrap a single text in "
                             f"a list), got {_type_name(texts)}")
  texts = list(texts)
  if limits.max_texts is not None and len(texts) > limits.max_texts:
    raise InvalidRequest(field, f"{field} has {len(texts)} texts, more than the limit "
                         f"{limits.max_texts}", status=413)
  total = 0
  for index, text in enumerate(texts):
    total += len(check_text(text, limits, f"{field}[{index}]"))
  if limits.max_total_chars is not None and total > limits.max_total_chars:
    raise InvalidRequest(field, f"{field} hold {total} characters together, more than the "
                         f"limit {limits.max_total_chars}", status=413)
  return texts


def check_types(types: Any, *, known_types: Sequence[str], allow_unseen_types: bool,
                limits: Limits, field: str = "types") -> tuple[str, ...]:
  """Type names: a list of distinct, writable, bounded names the model knows.

  The messages are the Python API's (`Extractor.resolve_types`), now with the field named and
  every echoed name bounded.
  """
  if isinstance(types, str) or not isinstance(types, Iterable) or isinstance(types, Mapping):
    shown = f" {preview(types)}" if isinstance(types, str) else ""
    raise InvalidRequestType(field, f"{field} must be a list of type names, got "
                             f"{_type_name(types)}{shown}")
  names = list(types)
  if not names:
    raise InvalidRequest(field, f"{field} is empty: request at least one entity type")
  if limits.max_types is not None and len(names) > limits.max_types:
    raise InvalidRequest(field, f"{field} has {len(names)} names, more than the limit "
                         f"{limits.max_types}", status=413)
  for index, name in enumerate(names):
    item = f"{field}[{index}]"
    if not isinstance(name, str):
      raise InvalidRequestType(item, f"{item} is a {_type_name(name)}, not a string")
    if limits.max_type_chars is not None and len(name) > limits.max_type_chars:
      raise InvalidRequest(item, f"{item} is a type name of {len(name)} characters, more than "
                           f"the limit {limits.max_type_chars}")
    check_string(name, item)
    try:
      prompts.check_type_names([name])
    except ValueError as error:
      raise InvalidRequest(item, f"{item}: {error}") from None
  try:
    names = list(prompts.check_type_names(names))  # repeats
  except ValueError as error:
    raise InvalidRequest(field, str(error)) from None
  known = set(known_types)
  unknown = [(index, name) for index, name in enumerate(names) if name not in known]
  if unknown and not allow_unseen_types:
    raise InvalidRequest(
        f"{field}[{unknown[0][0]}]",
        f"unknown entity type(s) {', '.join(escape(name) for _, name in unknown[:10])}"
        f"{' and more' if len(unknown) > 10 else ''}; known types: "
        f"{', '.join(known_types)} (allow_unseen_types=True lets other names through)")
  return tuple(names)


def check_dataset(dataset: Any, field: str = "dataset") -> tuple[str, ...]:
  """A dataset name -> its prompt names."""
  if not isinstance(dataset, str):
    raise InvalidRequestType(field, f"{field} must be a string, got {_type_name(dataset)}")
  if dataset not in entity_types.DATASETS:
    raise InvalidRequest(field, f"unknown dataset {preview(dataset)}; known datasets: "
                         f"{', '.join(entity_types.DATASETS)}")
  return entity_types.prompt_names(dataset)


def resolve_types(types: Any, dataset: Any, *, known_types: Sequence[str],
                  allow_unseen_types: bool, limits: Limits) -> tuple[str, ...]:
  """`types` or `dataset` (exactly one) -> the type names to request."""
  if types is None and dataset is None:
    raise InvalidRequest("types", "no entity types requested: give types (a list of type "
                         f"names) or a dataset (one of {', '.join(entity_types.DATASETS)})")
  if types is not None and dataset is not None:
    raise InvalidRequest("types", "give either types or dataset, not both")
  if dataset is not None:
    return check_dataset(dataset)
  return check_types(types, known_types=known_types, allow_unseen_types=allow_unseen_types,
                     limits=limits)


# ------------------------------------------------------------------------------------------
# Cost: characters outside the vocabulary, windows.
# ------------------------------------------------------------------------------------------


class VocabularyCoverage:
  """Counts characters a vocabulary has no single token for (they cost several byte tokens
  or become unknown).  Built once per vocabulary from its single-character pieces; whitespace
  counts as covered.  An approximation for cost control, not a tokenizer."""

  def __init__(self, vocabulary: Any):
    self.known = frozenset(self._single_characters(vocabulary))
    self.lower_case = bool(getattr(vocabulary, "lower_case", False))

  @staticmethod
  def _single_characters(vocabulary: Any) -> Iterable[str]:
    tokenizer = getattr(vocabulary, "tokenizer", None)  # seqio.SentencePieceVocabulary
    if tokenizer is not None and hasattr(tokenizer, "id_to_piece"):
      for index in range(tokenizer.get_piece_size()):
        if tokenizer.is_byte(index) or tokenizer.is_unknown(index) or tokenizer.is_control(index):
          continue
        piece = tokenizer.id_to_piece(index)
        if len(piece) == 1:
          yield piece
      return
    id_to_token = getattr(vocabulary, "id_to_token", None)  # vocab.WordPieceVocabulary
    if id_to_token is not None:
      for index in range(vocabulary.vocab_size):
        token = id_to_token(index)
        token = token[2:] if token.startswith("##") else token
        if len(token) == 1:
          yield token
      return
    raise TypeError(f"cannot list the characters of a {type(vocabulary).__name__}")

  def outside(self, text: str) -> int:
    """How many characters of `text` have no token of their own."""
    known = self.known
    count = 0
    for char in set(text):
      if char in known or char.isspace() or (self.lower_case and char.lower() in known):
        continue
      count += text.count(char)
    return count


def check_cost(texts: Sequence[str], window_counts: Optional[Sequence[int]],
               coverage: Optional[VocabularyCoverage], limits: Limits,
               fields: Optional[Sequence[str]] = None) -> None:
  """Refuses a request beyond the per-request decode budget or the out-of-vocabulary limit.

  window_counts: windows of each text (from the Extractor's windowing), or None to skip.
  fields: each text's field name (default `texts[i]`).
  """
  fields = list(fields or (f"texts[{index}]" for index in range(len(texts))))
  if coverage is not None and limits.max_oov_chars is not None:
    total = 0
    for index, text in enumerate(texts):
      outside = coverage.outside(text)
      total += outside
      if total > limits.max_oov_chars:
        raise InvalidRequest(fields[index], f"{fields[index]}: {outside} characters "
                             f"outside the model's vocabulary ({total} in the request so far), "
                             f"more than the limit {limits.max_oov_chars}: such characters "
                             "(emoji, rare characters) cost several tokens each", status=413)
  if window_counts is not None and limits.max_windows is not None:
    total = 0
    for index, count in enumerate(window_counts):
      total += count
      if total > limits.max_windows:
        raise InvalidRequest(fields[index], f"the request needs {total} model windows by "
                             f"{fields[index]}, more than the per-request decode budget of "
                             f"{limits.max_windows} windows; send shorter or fewer texts",
                             status=413)


# ------------------------------------------------------------------------------------------
# Whole requests.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExtractRequest:
  """A valid `POST /v1/extract` body."""
  texts: tuple[str, ...]
  types: tuple[str, ...]
  beam_size: int
  constrained: bool
  single: bool            # the caller sent "text" (one string) rather than "texts"
  dataset: Optional[str] = None


SERVICE_FIELDS = ("texts", "text", "types", "dataset", "beam_size", "constrained")


def check_fields(value: Any, allowed: Sequence[str], field: str = "body") -> Mapping[str, Any]:
  """A JSON object with only `allowed` fields."""
  if not isinstance(value, Mapping):
    raise InvalidRequestType(field, f"expected a JSON object, got {_json_kind(value)}")
  for key in value:
    if key not in allowed:
      raise InvalidRequest(escape(key) or field, f"unknown field {preview(key)} (fields: "
                           f"{', '.join(allowed)})")
  return value


def _json_kind(value: Any) -> str:
  kinds = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
           float: "number", type(None): "null"}
  return kinds.get(type(value), type(value).__name__)


def validate_extract_request(body: Any, *, known_types: Sequence[str], allow_unseen_types: bool,
                             beam_sizes: Sequence[int], default_beam_size: int,
                             default_constrained: bool, allow_unconstrained: bool,
                             limits: Limits) -> ExtractRequest:
  """The service's request object -> ExtractRequest (InvalidRequest naming the field)."""
  body = check_fields(body, SERVICE_FIELDS)
  if "text" in body and "texts" in body:
    raise InvalidRequest("text", "give either text (one string) or texts (a list), not both")
  if "text" in body:
    texts = [check_text(body["text"], limits, "text")]
    single = True
  elif "texts" in body:
    texts = check_texts(body["texts"], limits)
    single = False
  else:
    raise InvalidRequest("texts", "missing: give texts (a list of strings) or text")
  types = resolve_types(body.get("types"), body.get("dataset"), known_types=known_types,
                        allow_unseen_types=allow_unseen_types, limits=limits)
  beam_size = body.get("beam_size", default_beam_size)
  if isinstance(beam_size, bool) or not isinstance(beam_size, int):
    raise InvalidRequestType("beam_size", f"beam_size must be an integer, got "
                             f"{_json_kind(beam_size)}")
  if beam_size not in beam_sizes:
    raise InvalidRequest("beam_size", f"beam_size {preview(beam_size)} is not served; "
                         f"choose one of {', '.join(map(str, beam_sizes))}")
  constrained = body.get("constrained", default_constrained)
  if not isinstance(constrained, bool):
    raise InvalidRequestType("constrained", f"constrained must be true or false, got "
                             f"{_json_kind(constrained)}")
  if not constrained and not allow_unconstrained:
    raise InvalidRequest("constrained", "this server only decodes with the copy constraint "
                         "(start it with --allow_unconstrained)")
  return ExtractRequest(texts=tuple(texts), types=types, beam_size=beam_size,
                        constrained=constrained, single=single, dataset=body.get("dataset"))


LINE_FIELDS = ("text", "types", "dataset", "id")


@dataclasses.dataclass(frozen=True)
class LineRequest:
  """A valid JSON line of the `extract` CLI."""
  text: str
  types: tuple[str, ...]
  id: Any = None
  has_id: bool = False


def check_id(value: Any, limits: Limits, field: str = "id") -> Any:
  """An echoed id: a bounded string, an integer (bounded by the number limit) or null."""
  if value is None or (isinstance(value, int) and not isinstance(value, bool)):
    return value
  if not isinstance(value, str):
    raise InvalidRequestType(field, f"{field} must be a string, an integer or null, got "
                             f"{_json_kind(value)}")
  if limits.max_id_chars is not None and len(value) > limits.max_id_chars:
    raise InvalidRequest(field, f"{field} has {len(value)} characters, more than the limit "
                         f"{limits.max_id_chars}")
  return check_string(value, field)


def validate_line_request(value: Any, *, default_types: Optional[Sequence[str]],
                          default_dataset: Optional[str], known_types: Sequence[str],
                          allow_unseen_types: bool, limits: Limits) -> LineRequest:
  """A parsed CLI line -> LineRequest (InvalidRequest naming the field)."""
  value = check_fields(value, LINE_FIELDS, field="json")
  request_id = check_id(value["id"], limits) if "id" in value else None
  if "text" not in value:
    raise InvalidRequest("text", "missing")
  text = check_text(value["text"], limits, "text")
  if "types" not in value and "dataset" not in value:
    types, dataset = default_types, default_dataset
  else:
    types, dataset = value.get("types"), value.get("dataset")
  names = resolve_types(types, dataset, known_types=known_types,
                        allow_unseen_types=allow_unseen_types, limits=limits)
  return LineRequest(text=text, types=names, id=request_id, has_id="id" in value)
