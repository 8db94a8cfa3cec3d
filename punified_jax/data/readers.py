"""One reader per release format; each yields `Example(text, spans)` with raw type labels.

Every reader has the shape `read_x(path, *, strict=True, report=None, ...) -> Iterator[Example]`.
`strict=True` raises `DataFormatError` ("path:line: kind: detail") at the first malformation.
`strict=False` applies the documented repair and counts it by kind in `report` (a
`RepairReport`); if no report is passed, the counts are logged as a warning when the file has
been read, so nothing is ever repaired or dropped silently.

Repair kinds shared by all readers:
  invalid_utf8            bytes that are not UTF-8: decoded with U+FFFD in their place.
  unknown_tag / orphan_inside_tag / unclosed_span   tag-sequence problems, see `tagging`.
  unknown_type            a span whose type is not one of the dataset's types: span dropped.
Format-specific kinds are listed with each reader.

Readers never swallow a file:
  * Lenient mode raises `DataFormatError` (naming the file and its first bad line) when more than
    raw_files.REPAIR_SHARE_LIMIT (half) of a file's non-blank lines need a repair, once at least
    REPAIR_SHARE_MIN_LINES (10) lines do. A file that broken is the wrong file or the wrong
    format; repairing most of it would train on noise. (The floor keeps tiny hand-made files,
    whose few repairs are still counted, from tripping the share rule.)
  * A release file in which not one line carries a label (a tag column, a `/tag`, a CLUENER
    "label", a PUnifiedNER span list) is read as UNLABELED: Examples without spans, no repair
    counted, the path recorded in `RepairReport.unlabeled_files`, so the split is known to have
    no gold annotations (sources.LoadedDataset.unlabeled) and evaluation refuses to score it.

Text is kept exactly as the file has it: no normalisation, no stripping inside a sentence.
Files are read as bytes split on b"\\n" only (a trailing \\r is removed), so characters such as
U+0085 or U+2028 that Python's `splitlines` treats as breaks stay inside their sentence.
"""


from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable, Collection, Iterator, Optional, Sequence

from punified_jax.data import tagging
from punified_jax.data.example import Example, RepairReport, Span
from punified_jax.data.raw_files import (LONE_SURROGATE_RE, PathLike, Problems, any_line,
                                         decode_sentence, example_from_tokens, is_blank,
                                         iter_lines, join_surrogates)

logger = logging.getLogger(__name__)

# Span type the PUnifiedNER CCKS2021 JSON uses for runs of unlabelled characters; the paper skips
# these spans (they are not entities), and so do we (counted as `skipped_o_label`).
_O_LABELS = frozenset({"o", "O"})

MSRA_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
PD1998_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG", "t": "T"}
BOSON_TYPES = ("person_name", "location", "time", "org_name", "company_name", "product_name")


# --------------------------------------------------------------------------------------------
# One character per line: `char<sep>tag` (Resume, OntoNotes 4.0, Ecommerce, CCKS2021, Weibo).


def _split_char_line(line: str) -> tuple[str, Optional[str]]:
  """`char<TAB or SPACE>tag` -> (char field, tag or None when the line has no tag).

  The separator is the last tab if the line has one, else the last space, so a character that
  is itself a space (`" \\tO"`, `"  O"`) survives. Trailing spaces/tabs are ignored.
  """
  body = line.rstrip(" \t")
  for sep in ("\t", " "):
    if sep in body:
      field, tag = body.rsplit(sep, 1)
      return field, tag
  return body, None


_WEIBO_FIELD_RE = re.compile(r"(.+?)([0-9]+)", re.DOTALL)


def _char_tag_tokens(path: PathLike, problems: Problems, *, weibo: bool, cesu8: bool,
                     unlabeled: bool = False) -> Iterator[list[tuple[int, str, str]]]:
  """Sentences as lists of (line number, token text, tag); lenient repairs applied.

  `unlabeled`: the file has no tag column at all; every character is tagged O, no repair.

  Kinds: `missing_tag` (a line with no tag: tag O), `multi_char_token` (a char field longer
  than one character: kept whole, the tag covers all of it), `missing_position_digit` (Weibo:
  no trailing word-position digits: the whole field is the character).
  """
  sentence: list[tuple[int, str, str]] = []
  for lineno, line in iter_lines(path, problems, cesu8=cesu8):
    if is_blank(line):
      if sentence:
        yield sentence
        sentence = []
      continue
    field, tag = _split_char_line(line)
    if tag is None:
      if not unlabeled:
        problems(lineno, "missing_tag", f"line {line!r} has no tag; read as O")
      tag = tagging.OUTSIDE
    if weibo:
      match = _WEIBO_FIELD_RE.fullmatch(field)
      if match is None:
        problems(lineno, "missing_position_digit",
                 f"field {field!r} does not end in word-position digits")
      else:
        field = match.group(1)
        # The 2nd release writes a character it could not decode (outside the BMP) as two
        # U+FFFD on one line; the line is still one character, so it is read as one U+FFFD
        # (as in the paper's JSON).
        if len(field) > 1 and set(field) == {"\ufffd"}:
          field = "\ufffd"
    if len(field) > 1:
      problems(lineno, "multi_char_token", f"field {field!r} holds more than one character")
    # The Ecommerce release writes a space character as an empty field (`\tO`).
    sentence.append((lineno, field or " ", tag))
  if sentence:
    yield sentence


def _read_tag_file(path: PathLike, *, scheme: Optional[str], strict: bool,
                   report: Optional[RepairReport], types: Optional[Collection[str]],
                   weibo: bool, cesu8: bool) -> Iterator[Example]:
  problems = Problems(path, strict, report)
  unlabeled = not any_line(path, lambda line: _split_char_line(line)[1] is not None, cesu8=cesu8)
  if unlabeled:
    problems.mark_unlabeled()
    scheme = scheme or "BIO"  # only O tags: every scheme decodes them alike
  # The scheme is a property of the whole file, so sentences are collected before decoding.
  sentences = list(_char_tag_tokens(path, problems, weibo=weibo, cesu8=cesu8, unlabeled=unlabeled))
  if scheme is None:
    scheme = tagging.detect_scheme(tag for s in sentences for _, _, tag in s)
  scheme = tagging.check_scheme(scheme)
  for sentence in sentences:
    if cesu8:
      sentence = _merge_split_surrogates(sentence, problems)
    lines = [lineno for lineno, _, _ in sentence]
    tokens = [token for _, token, _ in sentence]
    tags = [tag for _, _, tag in sentence]
    yield decode_sentence(tokens, tags, lines, scheme, types, problems)
  problems.finish()


def _merge_split_surrogates(sentence: list[tuple[int, str, str]], problems: Problems
                            ) -> list[tuple[int, str, str]]:
  """Joins a token ending in a high surrogate with a next token starting with a low surrogate.

  Weibo's first release wrote characters outside the BMP as CESU-8 surrogates; when the two
  halves sit on two lines they are one character, tagged by the first line. The second tag must
  continue the first (`O` after `O`, `I-X` after `B-X`/`I-X`), else `split_surrogate_tag`.
  Surrogates that still have no partner: `unpaired_surrogate`, replaced by U+FFFD.
  """
  merged: list[tuple[int, str, str]] = []
  i = 0
  while i < len(sentence):
    lineno, token, tag = sentence[i]
    if (token and "\ud800" <= token[-1] <= "\udbff" and i + 1 < len(sentence)
        and sentence[i + 1][1][:1] and "\udc00" <= sentence[i + 1][1][0] <= "\udfff"):
      next_line, next_token, next_tag = sentence[i + 1]
      first = tagging.split_tag(tag)
      expected = (tagging.OUTSIDE if first is None or first[0] == tagging.OUTSIDE
                  else f"I-{first[1]}")
      if next_tag != expected and next_tag.replace("_", "-") != expected:
        problems(next_line, "split_surrogate_tag",
                 f"second half of a split character is tagged {next_tag}, expected {expected}")
      token = join_surrogates(token + next_token)
      i += 1
    if LONE_SURROGATE_RE.search(token):
      problems(lineno, "unpaired_surrogate", "a surrogate code point without its partner")
      token = LONE_SURROGATE_RE.sub("\ufffd", token)
    merged.append((lineno, token, tag))
    i += 1
  return merged


def read_char_tags(path: PathLike, *, scheme: Optional[str] = None, strict: bool = True,
                   report: Optional[RepairReport] = None,
                   types: Optional[Collection[str]] = None) -> Iterator[Example]:
  """Reads `char<sep>tag` lines (sep tab or space), one blank line between sentences.

  Resume/OntoNotes `*.char.bmes` (BMES), Ecommerce `*.txt.bieos` (BIOES; an empty char field
  is a space), CCKS2021 `*.conll` (BIES). `scheme` None detects it from the file's tags.
  """
  return _read_tag_file(path, scheme=scheme, strict=strict, report=report, types=types,
                        weibo=False, cesu8=False)


def read_weibo(path: PathLike, *, version: int = 2, scheme: Optional[str] = None,
               strict: bool = True, report: Optional[RepairReport] = None,
               types: Optional[Collection[str]] = None) -> Iterator[Example]:
  """Reads Weibo NER `char<digits>\\ttag` lines (BIO, e.g. `科0\\tB-PER.NAM`).

  The trailing digits are the character's position in its jieba word, not text, and are
  removed. `version=1` (`weiboNER.conll.*`) also decodes CESU-8 surrogate pairs into the real
  character. The 2nd release writes such a character as `\ufffd\ufffd<digits>`; that line is
  read as one U+FFFD (one line, one character; the paper's JSON does the same).
  """
  if version not in (1, 2):
    raise ValueError(f"Weibo release version must be 1 or 2, got {version!r}")
  return _read_tag_file(path, scheme=scheme, strict=strict, report=report, types=types,
                        weibo=True, cesu8=version == 1)


# --------------------------------------------------------------------------------------------
# MSRA: one sentence per line, `word/tag` tokens.


def read_msra(path: PathLike, *, strict: bool = True, report: Optional[RepairReport] = None
              ) -> Iterator[Example]:
  """Reads MSRA (SIGHAN 2006) `word/tag` lines; every `nr`/`ns`/`nt` word is one PER/LOC/ORG.

  Tokens are separated by spaces (runs and trailing spaces allowed). Adjacent entity words of
  the same type stay separate mentions: the release marks each word, and its 74703 train
  mentions count them that way. Kinds: `missing_tag` (no `/tag`: the token is text tagged o),
  `unknown_tag` (a tag other than o/nr/ns/nt: read as o), `empty_word` (`/o`: nothing to add,
  skipped). Blank lines separate nothing and are skipped.
  """
  problems = Problems(path, strict, report)
  unlabeled = not any_line(path, lambda line: "/" in line)
  if unlabeled:
    problems.mark_unlabeled()
  for lineno, line in iter_lines(path, problems):
    if is_blank(line):
      continue
    words: list[str] = []
    spans: list[tuple[int, int, str]] = []
    for token in line.split(" "):
      if not token:
        continue
      if "/" not in token:
        if not unlabeled:
          problems(lineno, "missing_tag", f"token {token!r} has no /tag; read as o")
        word, tag = token, "o"
      else:
        word, tag = token.rsplit("/", 1)
      if not word:
        problems(lineno, "empty_word", f"token {token!r} has no word")
        continue
      if tag != "o" and tag not in MSRA_TYPES:
        problems(lineno, "unknown_tag", f"tag {tag!r} is not one of o nr ns nt; read as o")
        tag = "o"
      if tag in MSRA_TYPES:
        spans.append((len(words), len(words) + 1, MSRA_TYPES[tag]))
      words.append(word)
    if not words:
      problems(lineno, "dropped_empty_sentence", "line has no words")
      continue
    yield example_from_tokens(words, spans)
  problems.finish()


# --------------------------------------------------------------------------------------------
# JSON lines: CLUENER and the paper's own processed files.


def _locate(text: str, surface: str, near: int) -> Optional[int]:
  """Start of the occurrence of `surface` in `text` nearest to `near` (ties: the earlier)."""
  best = None
  start = text.find(surface)
  while start != -1:
    if best is None or abs(start - near) < abs(best - near):
      best = start
    start = text.find(surface, start + 1)
  return best


def _checked_span(text: str, start: Any, end_inclusive: Any, surface: Any, kind: Any,
                  lineno: int, problems: Problems, types: Optional[Collection[str]]
                  ) -> Optional[Span]:
  """A validated span from `[start, end_inclusive]` and its surface text, or None if dropped.

  Kinds: `offset_repaired` (offsets do not cover `surface`: moved to the nearest occurrence of
  `surface`), `dropped_span_not_found` (surface not in the text), `dropped_bad_span` (fields of
  the wrong JSON type or an empty surface), `unknown_type` (dropped).
  """
  if not (isinstance(start, int) and isinstance(end_inclusive, int) and isinstance(surface, str)
          and isinstance(kind, str)) or not surface or isinstance(start, bool):
    problems(lineno, "dropped_bad_span",
             f"span {[start, end_inclusive, surface, kind]!r} is not [int, int, text, type]")
    return None
  if types is not None and kind not in types:
    problems(lineno, "unknown_type", f"type {kind!r} is not one of {sorted(types)}")
    return None
  if 0 <= start <= end_inclusive < len(text) and text[start:end_inclusive + 1] == surface:
    return Span(start, end_inclusive + 1, kind)
  found = _locate(text, surface, start)
  if found is None:
    problems(lineno, "dropped_span_not_found",
             f"{kind} span {surface!r} at {start}:{end_inclusive} is not in the text")
    return None
  problems(lineno, "offset_repaired", f"{kind} span {surface!r}: offsets {start}:{end_inclusive} "
           f"do not cover it; it occurs at {found}:{found + len(surface) - 1}")
  return Span(found, found + len(surface), kind)


def _json_records(path: PathLike, problems: Problems) -> Iterator[tuple[int, Any]]:
  """(line number, parsed JSON) per non-blank line; `dropped_bad_json` for unparsable lines."""
  for lineno, line in iter_lines(path, problems):
    if not line.strip():
      continue
    try:
      yield lineno, json.loads(line)
    except json.JSONDecodeError as e:
      problems(lineno, "dropped_bad_json", f"not JSON ({e.msg} at column {e.colno})")


def _text_field(record: Any, lineno: int, problems: Problems) -> Optional[str]:
  text = record.get("text") if isinstance(record, dict) else None
  if not isinstance(text, str):
    problems(lineno, "dropped_bad_record", 'record has no "text" string')
    return None
  if not text:
    problems(lineno, "dropped_empty_text", "record has an empty text")
    return None
  return text


def read_cluener_json(path: PathLike, *, strict: bool = True,
                      report: Optional[RepairReport] = None,
                      types: Optional[Collection[str]] = None,
                      require_labels: bool = False) -> Iterator[Example]:
  """Reads CLUENER2020 JSON lines `{"text", "label": {type: {entity: [[start, end_incl]]}}}`.

  A record without "label" (the test file) is an unlabeled Example with no spans; whether a
  split is labeled is recorded in `sources`. With `require_labels`, a missing label is
  `missing_label` (kept with no spans). Nested spans (a company inside a book title) are kept as
  annotated. Other kinds: `dropped_bad_json`, `dropped_bad_record`, `dropped_empty_text`,
  `dropped_bad_label` (label is not the documented shape; the record keeps its other spans) and
  the span kinds of `_checked_span`.
  """
  problems = Problems(path, strict, report)
  unlabeled = not any_line(path, lambda line: '"label"' in line)
  if unlabeled:
    problems.mark_unlabeled()
  for lineno, record in _json_records(path, problems):
    text = _text_field(record, lineno, problems)
    if text is None:
      continue
    label = record.get("label")
    spans: list[Span] = []
    if label is None:
      if require_labels and not unlabeled:
        problems(lineno, "missing_label", 'record has no "label"; read with no entities')
    elif not isinstance(label, dict):
      problems(lineno, "dropped_bad_label", '"label" is not an object')
    else:
      for kind, entities in label.items():
        if not isinstance(entities, dict):
          problems(lineno, "dropped_bad_label", f"label {kind!r} is not an object")
          continue
        for surface, positions in entities.items():
          if not isinstance(positions, list) or not all(
              isinstance(p, list) and len(p) == 2 for p in positions):
            problems(lineno, "dropped_bad_label",
                     f"positions of {surface!r} are not [[start, end], ...]")
            continue
          for start, end_inclusive in positions:
            span = _checked_span(text, start, end_inclusive, surface, kind, lineno, problems,
                                 types)
            if span is not None:
              spans.append(span)
    yield Example(text, spans).validate()
  problems.finish()


def read_punified_json(path: PathLike, *, strict: bool = True,
                       report: Optional[RepairReport] = None,
                       types: Optional[Collection[str]] = None) -> Iterator[Example]:
  """Reads the paper's JSON lines `[text, [start, end_incl, span_text, TYPE], ...]` / `[text]`.

  `{"id", "text"}` records (cluener_test.json) are unlabeled Examples. Spans labelled `o` (the
  CCKS2021 file's unlabelled runs) are not entities and are skipped in both modes, counted as
  `skipped_o_label`. Offsets that do not cover their span text (about 8% of the Boson file) are
  `offset_repaired` (strict mode raises). Other kinds: `dropped_bad_json`, `dropped_bad_record`,
  `dropped_empty_text` and the span kinds of `_checked_span`.
  """
  problems = Problems(path, strict, report)
  if not any_line(path, lambda line: line.lstrip().startswith("[")):
    problems.mark_unlabeled()  # only {"id", "text"} records (cluener_test.json)
  for lineno, record in _json_records(path, problems):
    if isinstance(record, dict):
      text = _text_field(record, lineno, problems)
      if text is not None:
        yield Example(text)
      continue
    if not isinstance(record, list) or not record or not isinstance(record[0], str):
      problems(lineno, "dropped_bad_record", "record is not [text, [start, end, span, type], ...]")
      continue
    text = record[0]
    if not text:
      problems(lineno, "dropped_empty_text", "record has an empty text")
      continue
    spans: list[Span] = []
    for entry in record[1:]:
      if not isinstance(entry, list) or len(entry) != 4:
        problems(lineno, "dropped_bad_span", f"span {entry!r} is not [start, end, span, type]")
        continue
      if isinstance(entry[3], str) and entry[3] in _O_LABELS:
        problems.note(lineno, "skipped_o_label", f"span {entry[2]!r} labelled {entry[3]!r}")
        continue
      span = _checked_span(text, *entry, lineno, problems, types)
      if span is not None:
        spans.append(span)
    yield Example(text, spans).validate()
  problems.finish()


# --------------------------------------------------------------------------------------------
# Boson: paragraphs with inline `{{type:text}}` markup, split into sentences.

# Sentence enders: a sentence always ends after a run of these ...
HARD_ENDERS = frozenset("。！？!?")
# ... and after a run of these once it is at least SOFT_SPLIT_MIN_CHARS long.
SOFT_ENDERS = frozenset("；;…")
# Long enough that a ；-joined list of short clauses stays one sentence, short enough that a
# long run-on paragraph is cut near the length of an ordinary news sentence.
SOFT_SPLIT_MIN_CHARS = 64
# Closing quotes/brackets right after an ender belong to the sentence it ends.
_CLOSERS = frozenset("”’」』）)】》〉\"'")
_EDGE_SPACE = " \t\u3000"
# The Boson release writes line breaks inside a paragraph as the two characters `\n`.
_ESCAPED_NEWLINE = "\\n"


def split_sentences(example: Example, *, soft_min_chars: int = SOFT_SPLIT_MIN_CHARS,
                    breaks: Collection[int] = ()) -> list[Example]:
  """Splits a paragraph into sentences, never inside a span.

  Rule: cut after a run of HARD_ENDERS (and any closing quotes/brackets after it); cut after a
  run of SOFT_ENDERS when the sentence has reached `soft_min_chars` characters; always cut at
  the offsets in `breaks` (line breaks of the release). A cut that would fall inside a span is
  not made. Spaces at a sentence's edges are removed unless a span covers them; a piece that is
  only spaces is not a sentence. Offsets are rebased to each sentence.
  """
  text = example.text
  inside = [False] * (len(text) + 1)  # inside[i]: a cut at offset i would split a span
  for span in example.spans:
    for i in range(span.start + 1, span.end):
      inside[i] = True
  cuts = {b for b in breaks if 0 < b < len(text) and not inside[b]}
  start = 0
  i = 0
  while i < len(text):
    ch = text[i]
    if ch in HARD_ENDERS or (ch in SOFT_ENDERS and i + 1 - start >= soft_min_chars):
      j = i + 1
      while j < len(text) and (text[j] in HARD_ENDERS or text[j] in SOFT_ENDERS):
        j += 1
      while j < len(text) and text[j] in _CLOSERS:
        j += 1
      if not inside[j]:
        cuts.add(j)
        start = j
      i = j
      continue
    if i in cuts:
      start = i
    i += 1
  bounds = [0] + sorted(c for c in cuts if 0 < c < len(text)) + [len(text)]
  sentences = []
  for lo, hi in zip(bounds, bounds[1:]):
    spans = [s for s in example.spans if lo <= s.start and s.end <= hi]
    first = min((s.start for s in spans), default=hi)
    last = max((s.end for s in spans), default=lo)
    while lo < first and text[lo] in _EDGE_SPACE:
      lo += 1
    while hi > last and text[hi - 1] in _EDGE_SPACE:
      hi -= 1
    if lo >= hi:
      continue
    sentences.append(Example(text[lo:hi],
                             [Span(s.start - lo, s.end - lo, s.type) for s in spans]).validate())
  return sentences


_MARKUP_OPEN = "{{"
_MARKUP_CLOSE = "}}"


def parse_boson_markup(line: str, lineno: int, problems: Callable[..., None],
                       types: Collection[str] = BOSON_TYPES) -> tuple[Example, list[int]]:
  """One Boson paragraph -> (Example with spans, offsets of its escaped line breaks).

  `{{type:text}}` becomes `text` with a span; the first `:` separates type and text. Kinds:
  `unclosed_markup` (`{{` without `}}`: kept as literal text), `bad_markup` (no `:`, e.g.
  `{{person_name}}`: kept as literal text), `unknown_type` (text kept, no span), `empty_entity`
  (`{{time:}}` or only spaces: the entity text is kept, no span). A literal `\\n` outside markup
  is removed and recorded as a sentence break.
  """
  pieces: list[str] = []
  spans: list[Span] = []
  breaks: list[int] = []
  length = 0

  def add_text(chunk: str):
    nonlocal length
    parts = chunk.split(_ESCAPED_NEWLINE)
    for k, part in enumerate(parts):
      if k:
        breaks.append(length)
      pieces.append(part)
      length += len(part)

  pos = 0
  while True:
    open_at = line.find(_MARKUP_OPEN, pos)
    if open_at == -1:
      add_text(line[pos:])
      break
    add_text(line[pos:open_at])
    close_at = line.find(_MARKUP_CLOSE, open_at + len(_MARKUP_OPEN))
    if close_at == -1:
      problems(lineno, "unclosed_markup", f"'{{{{' at column {open_at + 1} is never closed")
      add_text(line[open_at:])
      break
    inner = line[open_at + len(_MARKUP_OPEN):close_at]
    pos = close_at + len(_MARKUP_CLOSE)
    if ":" not in inner:
      problems(lineno, "bad_markup", f"markup {{{{{inner}}}}} has no 'type:' part; kept as text")
      pieces.append(line[open_at:pos])
      length += pos - open_at
      continue
    kind, surface = inner.split(":", 1)
    if kind not in types:
      problems(lineno, "unknown_type", f"markup type {kind!r} is not one of {sorted(types)}")
    elif not surface.strip(_EDGE_SPACE):
      problems(lineno, "empty_entity", f"{kind} markup has no entity text")
    else:
      spans.append(Span(length, length + len(surface), kind))
    pieces.append(surface)
    length += len(surface)
  return Example("".join(pieces), spans).validate(), breaks


def read_boson(path: PathLike, *, strict: bool = True, report: Optional[RepairReport] = None,
               types: Collection[str] = BOSON_TYPES,
               soft_min_chars: int = SOFT_SPLIT_MIN_CHARS) -> Iterator[Example]:
  """Reads BosonNLP_NER_6C.txt (one paragraph a line) and yields its sentences.

  Markup is parsed by `parse_boson_markup` and paragraphs are split by `split_sentences`; see
  both for the rules. Blank lines are skipped. The paper reports 16753 sentences from the 2000
  paragraphs; its JSON shows it also cut at `，`/`、` and dropped that punctuation, and kept
  the escaped `\n` as text. We cut less (full sentences make better NER inputs) and keep every
  character except the escaped line breaks, so our sentence count is expected to be lower; it
  has not been measured, as we have no copy of the file.
  """
  problems = Problems(path, strict, report)
  for lineno, line in iter_lines(path, problems):
    if is_blank(line):
      continue
    paragraph, breaks = parse_boson_markup(line, lineno, problems, types)
    yield from split_sentences(paragraph, soft_min_chars=soft_min_chars, breaks=breaks)
  problems.finish()


# --------------------------------------------------------------------------------------------
# People Daily 2014: parallel character and tag files.


def read_pd2014(source_path: PathLike, target_path: PathLike, *, strict: bool = True,
                report: Optional[RepairReport] = None,
                types: Optional[Collection[str]] = None) -> Iterator[Example]:
  """Reads the "2014 BIO corpus": line n of the source file (space-separated characters) is
  tagged by line n of the target file (space-separated `B_LOC I_LOC ... O`, BIO).

  Kinds: `dropped_length_mismatch` (a line pair whose token counts differ: the alignment is
  unknown, so the sentence is dropped), `dropped_unpaired_line` (one file has more lines),
  and the tag kinds of `tagging`. A pair of blank lines is skipped.
  """
  problems = Problems(target_path, strict, report)
  # Problems inside the source file (bad UTF-8) are located in the source file.
  source_problems = Problems(source_path, strict, problems.report)
  source_problems.own_report = False
  source_name, target_name = os.fspath(source_path), os.fspath(target_path)
  source_lines = iter_lines(source_path, source_problems)
  target_lines = iter_lines(target_path, problems)
  lineno = 0
  while True:
    source = next(source_lines, None)
    target = next(target_lines, None)
    if source is None and target is None:
      break
    lineno += 1
    if source is None or target is None:
      longer, shorter = (source_name, target_name) if target is None else (target_name, source_name)
      problems(lineno, "dropped_unpaired_line", f"{longer} has a line {lineno}, {shorter} ends "
               "before it", path=longer)
      continue
    chars = [c for c in source[1].split(" ") if c]
    tags = [t for t in target[1].split(" ") if t]
    if not chars and not tags:
      continue
    if len(chars) != len(tags):
      problems(lineno, "dropped_length_mismatch", f"{len(tags)} tags for {len(chars)} "
               f"characters on line {lineno} of {source_name}")
      continue
    yield decode_sentence(chars, tags, [lineno] * len(chars), "BIO", types, problems)
  problems.finish()


# --------------------------------------------------------------------------------------------
# People's Daily 1998: segmented and POS-tagged paragraphs.

_PD_DOC_ID_RE = re.compile(r"\d{8}-\d{2}-\d{3}-\d{3}/m")
_PD_WORD_RE = re.compile(r"(.+)/([A-Za-z]+)")
_PD_CLOSE_RE = re.compile(r"(.+)/([A-Za-z]+)\]([A-Za-z]+)")
# Consecutive words with these tags form one entity (a surname and given name are two `nr`
# words; a date is several `t` words: 一九九七年/t 十二月/t 三十一日/t is one time).
_PD_JOINED = frozenset({"nr", "t"})


def read_pd1998(path: PathLike, *, strict: bool = True, report: Optional[RepairReport] = None
                ) -> Iterator[Example]:
  """Reads People's Daily 1998 (`pd1998.txt.gz` or plain text): one paragraph a line.

  Each line is `<doc id>/m  word/pos  word/pos ...`; the document id is dropped. Entities:
  `nr` PER, `ns` LOC, `nt` ORG, `t` T; consecutive `nr` words join into one PER and consecutive
  `t` words into one T, while each `ns`/`nt` word is its own mention. A bracketed compound
  `[w/pos  w/pos]nt` is one ORG (`]ns` LOC, `]nr` PER) over the whole bracket, and the tags of
  the words inside it are then ignored (flat NER); other bracket labels (`]nz`, `]l`, `]i`) are
  not entities and their words are read as usual. One paragraph is one Example.
  Kinds: `missing_doc_id` (first token is not an id: read as a word), `bad_token` (not
  `word/pos`: kept as text, no tag), `unbalanced_bracket` (bracket ignored),
  `dropped_empty_paragraph` (an id and nothing else).
  """
  problems = Problems(path, strict, report)
  for lineno, line in iter_lines(path, problems):
    if is_blank(line):
      continue
    tokens = [t for t in line.split(" ") if t]
    if _PD_DOC_ID_RE.fullmatch(tokens[0]):
      tokens = tokens[1:]
    else:
      problems(lineno, "missing_doc_id", f"first token {tokens[0]!r} is not a document id")
    if not tokens:
      problems(lineno, "dropped_empty_paragraph", "the line has a document id and no words")
      continue
    words: list[str] = []
    tags: list[str] = []
    brackets: list[tuple[int, int, str]] = []  # (first word, last word + 1, label)
    open_bracket: Optional[int] = None
    for token in tokens:
      opens = token.startswith("[") and _PD_WORD_RE.fullmatch(token[1:].split("]")[0]) is not None
      if opens:
        token = token[1:]
        if open_bracket is not None:
          problems(lineno, "unbalanced_bracket", "'[' inside an open bracket; ignored")
        else:
          open_bracket = len(words)
      close = _PD_CLOSE_RE.fullmatch(token)
      if close is not None:
        word, pos, label = close.groups()
        if open_bracket is None:
          problems(lineno, "unbalanced_bracket", f"']{label}' without '['; ignored")
        else:
          brackets.append((open_bracket, len(words) + 1, label))
          open_bracket = None
      else:
        plain = _PD_WORD_RE.fullmatch(token)
        if plain is None:
          problems(lineno, "bad_token", f"token {token!r} is not word/pos; kept as text")
          word, pos = token, ""
        else:
          word, pos = plain.groups()
      words.append(word)
      tags.append(pos)
    if open_bracket is not None:
      problems(lineno, "unbalanced_bracket", "'[' never closed; ignored")
    yield example_from_tokens(words, _pd1998_word_spans(tags, brackets))
  problems.finish()


def _pd1998_word_spans(tags: Sequence[str], brackets: Sequence[tuple[int, int, str]]
                       ) -> list[tuple[int, int, str]]:
  """Word-index entity spans of one People's Daily paragraph (rules in `read_pd1998`)."""
  spans = []
  in_entity_bracket = [False] * len(tags)
  for first, stop, label in brackets:
    if label in ("nt", "ns", "nr"):
      spans.append((first, stop, PD1998_TYPES[label]))
      in_entity_bracket[first:stop] = [True] * (stop - first)
  i = 0
  while i < len(tags):
    tag = tags[i]
    if in_entity_bracket[i] or tag not in PD1998_TYPES:
      i += 1
      continue
    j = i + 1
    if tag in _PD_JOINED:
      while j < len(tags) and tags[j] == tag and not in_entity_bracket[j]:
        j += 1
    spans.append((i, j, PD1998_TYPES[tag]))
    i = j
  return spans
