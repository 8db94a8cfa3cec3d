"""Generated text -> (type, span) pairs, and (type, span) pairs -> character offsets.

`parse_generation` reads the target grammar of `prompts.format_target`,

    ((TYPE:SPAN),(TYPE:SPAN),...)          a type without mention: (TYPE:NULL)

and never raises on any generation (garbage, truncated, empty). Spans are copies of the input
text, so they may themselves contain "," ":" "(" ")" or their full-width forms; the parser
therefore does not split on those characters. It recognises *item starts* instead:

* the first item starts at the first "((" + TYPE + ":" in the generation;
* every later item starts at "),(" + TYPE + ":" (the previous item's ")" and the "," separator);
* an item's span runs from after "TYPE:" to the next item start, and the last item's span to
  the final "))" of the generation (trailing whitespace after it is ignored).

With `types` given (the requested types), TYPE must be one of them (longest name tried first;
a ":" must follow the name, so 地点 vs 地点泛指 or 兴趣点 vs 次兴趣点 cannot be confused).
Without `types`, TYPE is any non-empty run of characters other than "(" ")" ":" "," before
the first ":", so a span cannot then contain "),(" + <such a run> + ":".

Documented limitation (both cases): a span containing the literal sequence "),(" + TYPE + ":"
for a recognised TYPE is split there. `prompts.format_target` refuses to write such a target.

Truncated generations (decoding stopped at the length limit) end without the final "))": the
last, unfinished item is DROPPED (a cut span would be a wrong span, so dropping is the choice
that protects precision) and `ParseResult.truncated` is set so the caller can count it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Iterable, NamedTuple, Optional, Sequence

from punified_jax.prompts import NULL

_FIRST_ITEM = "(("  # the target's "(" then the first item's "("
_NEXT_ITEM = "),("  # an item's ")", the separator, the next item's "("
_END = "))"  # the last item's ")" then the target's ")"

# Without a type list, a type is a non-empty run up to the first ":" that contains none of the
# grammar's own separators.
_ANY_TYPE = re.compile(r"[^():,]+(?=:)")


@dataclasses.dataclass(frozen=True)
class ParseResult:
  """What `parse_generation_details` found in one generation.

  mentions: (type, span) pairs in output order, NULL items and empty spans left out, a repeated
    pair kept once (first wins).
  items: items recognised, counting NULL, empty, duplicate and the truncated last one.
  null_items, empty_spans, duplicates: how many items were left out for each reason.
  repeats: complete items equal (type and span) to an earlier item of the generation, NULL
    and empty items too: what the constraint's repeat rule counts (constraints module
    docstring, "A repeat ends the output"); `duplicates` are the non-NULL, non-empty ones.
  truncated: the generation ended inside an item (no final "))"); that item was dropped.
  unparsed: the generation is not empty but no item start was found in it at all.
  """
  mentions: list[tuple[str, str]]
  items: int = 0
  null_items: int = 0
  empty_spans: int = 0
  duplicates: int = 0
  repeats: int = 0
  truncated: bool = False
  unparsed: bool = False


@functools.lru_cache(maxsize=256)
def _type_pattern(types: tuple[str, ...]) -> re.Pattern:
  # Longest name first so that, at one position, the alternation prefers 地点泛指 to 地点; the
  # lookahead for ":" already rules out a shorter name matching inside a longer one.
  ordered = sorted(set(types), key=lambda t: (-len(t), t))
  return re.compile("(?:" + "|".join(re.escape(t) for t in ordered) + ")(?=:)")


def _check_types(types: Sequence[str]) -> tuple[str, ...]:
  if isinstance(types, str):
    raise TypeError(f"types must be a sequence of type names, not the string {types!r}")
  out = tuple(types)
  for t in out:
    if not isinstance(t, str) or not t or ":" in t:
      raise ValueError(f"type name {t!r} must be a non-empty string without ':'")
  return out


def _match_type(pattern: re.Pattern, generation: str, pos: int) -> Optional[re.Match]:
  return pattern.match(generation, pos)


def parse_generation_details(generation: str,
                             types: Optional[Sequence[str]] = None) -> ParseResult:
  """Parses one generation; never raises on any `generation` (see module docstring).

  `types` (optional) are the type names whose items are recognised; a bad `types` argument
  (a plain string, an empty name, a name with ":") is a programming error and raises.
  """
  checked = None if types is None else _check_types(types)
  if not isinstance(generation, str):
    # Robustness for callers handing over bytes from a numpy array.
    if isinstance(generation, (bytes, bytearray)):
      generation = bytes(generation).decode("utf-8", errors="replace")
    else:
      generation = "" if generation is None else str(generation)
  if checked is not None and not checked:  # nothing requested: nothing can be recognised
    return ParseResult(mentions=[], unparsed=bool(generation))
  pattern = _ANY_TYPE if checked is None else _type_pattern(checked)

  # The first item: the earliest "((" followed by a recognised TYPE and ":".
  match = None
  search_from = 0
  while match is None:
    i = generation.find(_FIRST_ITEM, search_from)
    if i < 0:
      return ParseResult(mentions=[], unparsed=bool(generation))
    match = _match_type(pattern, generation, i + len(_FIRST_ITEM))
    search_from = i + 1

  raw_items: list[tuple[str, str]] = []
  truncated = False
  while True:
    type_name = match.group(0)
    span_start = match.end() + 1  # skip the ":" the lookahead saw
    next_match = None
    k = generation.find(_NEXT_ITEM, span_start)
    while k >= 0:
      next_match = _match_type(pattern, generation, k + len(_NEXT_ITEM))
      if next_match is not None:
        break
      k = generation.find(_NEXT_ITEM, k + 1)
    if next_match is not None:
      raw_items.append((type_name, generation[span_start:k]))
      match = next_match
      continue
    # Last item: complete only when the generation ends with "))" after "TYPE:". Whitespace
    # after that final "))" (a decoder's trailing space) is ignored; it cannot be in a span.
    end = len(generation.rstrip())
    if generation.endswith(_END, 0, end) and end - len(_END) >= span_start:
      raw_items.append((type_name, generation[span_start:end - len(_END)]))
    else:
      truncated = True
    break

  mentions: list[tuple[str, str]] = []
  seen: set[tuple[str, str]] = set()
  null_items = empty_spans = duplicates = 0
  for pair in raw_items:
    span = pair[1]
    if span == NULL:
      null_items += 1
    elif not span:
      empty_spans += 1
    elif pair in seen:
      duplicates += 1
    else:
      seen.add(pair)
      mentions.append(pair)
  return ParseResult(mentions=mentions, items=len(raw_items) + int(truncated),
                     null_items=null_items, empty_spans=empty_spans, duplicates=duplicates,
                     repeats=len(raw_items) - len(set(raw_items)), truncated=truncated)


def parse_generation(generation: str,
                     types: Optional[Sequence[str]] = None) -> list[tuple[str, str]]:
  """(type, span) pairs of `generation` in output order; NULL items dropped, duplicates kept
  once (first wins), a truncated last item dropped. Never raises on any generation."""
  return parse_generation_details(generation, types).mentions


# --------------------------------------------------------------------------------------------
# Mention -> character offsets


class LocatedMentions(NamedTuple):
  """located: dicts {"type", "text", "start", "end"} (end exclusive, Python str indices, so
  text[start:end] == the span text), sorted by (start, end, input order).
  not_located: (type, span) pairs whose span text does not occur in the text at all (or is
  empty), in input order. Nothing given is lost: each distinct pair is in one of the two."""
  located: list[dict]
  not_located: list[tuple[str, str]]


def locate_mentions(text: str, mentions: Iterable[tuple[str, str]]) -> LocatedMentions:
  """Maps (type, span text) pairs to character offsets in `text`: THE rule for repeated text.

  1. Repeated (type, span) pairs are taken once (first wins).
  2. Mentions claim occurrences longest span first, so 北京 inside 北京大学 is not claimed
     when 北京大学 is itself a mention. Ties (same length): the mention whose text occurs first
     in `text` goes first; then input order. So for the SAME text under two types (e.g.
     (地点, 北京) and (组织, 北京)), the one given first claims the occurrences.
  3. A mention is mapped to EVERY occurrence of its text, scanned left to right, that does not
     overlap a span already claimed (by itself or an earlier mention); each such occurrence is
     then claimed.
  4. A mention with occurrences but none free is mapped to its first occurrence anyway
     (overlapping, unclaimed), so no predicted mention disappears.
  5. A mention whose text does not occur (or is empty) goes to `not_located`.
  """
  if not isinstance(text, str):
    raise TypeError(f"text must be a str, got {type(text).__name__}")
  unique: list[tuple[str, str]] = []
  for i, mention in enumerate(mentions):
    if not (isinstance(mention, (tuple, list)) and len(mention) == 2
            and all(isinstance(x, str) for x in mention)):
      raise ValueError(f"mention #{i} must be a (type, span text) pair of strings, "
                       f"got {mention!r}")
    pair = (mention[0], mention[1])
    if pair not in unique:
      unique.append(pair)

  not_located = []
  candidates = []  # (order key, input index, type, span, first occurrence)
  for index, (type_name, span) in enumerate(unique):
    first = text.find(span) if span else -1
    if first < 0:
      not_located.append((type_name, span))
    else:
      candidates.append(((-len(span), first, index), index, type_name, span, first))
  candidates.sort(key=lambda c: c[0])

  claimed = bytearray(len(text))  # 1 where a character belongs to a claimed occurrence
  located = []
  for _, index, type_name, span, first in candidates:
    width = len(span)
    starts = []
    pos = first
    while pos >= 0:
      if not any(claimed[pos:pos + width]):
        starts.append(pos)
        claimed[pos:pos + width] = b"\x01" * width
      pos = text.find(span, pos + 1)
    for start in starts or [first]:
      located.append((start, start + width, index, type_name, span))
  located.sort(key=lambda r: r[:3])
  return LocatedMentions(
      located=[{"type": t, "text": s, "start": b, "end": e} for b, e, _, t, s in located],
      not_located=not_located)


def align_span(text: str, span: str) -> Optional[str]:
  """The substring of `text` that `span` stands for, or None.

  `span` itself when it occurs in `text`. Otherwise the first substring of `text` that equals
  `span` after case-folding both and removing all whitespace: a lossy vocabulary (BERT
  WordPiece lowercases and re-spaces ASCII words) decodes "XK-200" as "xk - 200", and this maps
  it back to the user's own characters. The returned substring starts and ends on a
  non-whitespace character.
  """
  if not span:
    return None
  if span in text:
    return span
  target = "".join(ch for ch in span.casefold() if not ch.isspace())
  if not target:
    return None
  # Normalised text plus, for each of its characters, the index of its source character.
  # casefold() can expand one character into several (ß -> ss); each piece keeps the source.
  normalised: list[str] = []
  source: list[int] = []
  for i, ch in enumerate(text):
    if ch.isspace():
      continue
    for piece in ch.casefold():
      normalised.append(piece)
      source.append(i)
  found = "".join(normalised).find(target)
  if found < 0:
    return None
  start = source[found]
  end = source[found + len(target) - 1] + 1
  return text[start:end]
