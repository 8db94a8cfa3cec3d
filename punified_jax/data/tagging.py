"""Tag sequences (BIO, BIOES, BMES, BIES) <-> spans over tokens.

Release formats that put one character per line label each character with a tag
`<prefix><sep><type>` (sep `-` or `_`, e.g. `B-ORG`, `B_LOC`, `M-NAME`) or the bare outside tag
`O`. The schemes differ only in which prefixes they use:

  BIO   : B (begin), I (inside); a span ends where the next token is not its I.
  BIOES : B, I, E (end), S (single); every span must be closed by E, or be one S.
  BMES  : as BIOES with M instead of I (Resume, OntoNotes 4.0 `*.char.bmes`).
  BIES  : the name CCKS2021 uses for BIOES (its files still use O); decoded exactly as BIOES.

Decoding works on token indices; readers map tokens to character offsets (a token is one
character except in a few release quirks). Malformed sequences are reported through a callback
with one of these kinds, and repaired by the rule given here:

  unknown_tag        a tag that is not `O` and not `<prefix of the scheme><sep><type>`, or
                     whose type is not in the allowed types: read as O.
  orphan_inside_tag  I-/M-/E-X with no open span of type X: starts a new X span (an orphan E-X
                     makes a one-token span).
  unclosed_span      (BIOES/BMES/BIES only) a span interrupted by B/S/O/another type or the end
                     of the sentence before its E: it is closed at its last token.

Without a callback the first problem raises ValueError; readers turn problems into
`DataFormatError` (strict) or `RepairReport` entries (lenient).
"""

from __future__ import annotations

import re
from typing import Callable, Collection, Iterable, Optional, Sequence

SCHEMES: tuple[str, ...] = ("BIO", "BIOES", "BMES", "BIES")

# prefix letters each scheme allows, as (begin, inside, end, single); None = not in the scheme.
_PREFIXES: dict[str, tuple[str, str, Optional[str], Optional[str]]] = {
    "BIO": ("B", "I", None, None),
    "BIOES": ("B", "I", "E", "S"),
    "BMES": ("B", "M", "E", "S"),
    "BIES": ("B", "I", "E", "S"),
}

OUTSIDE = "O"
_TAG_RE = re.compile(r"([A-Z])[-_](\S+)")

# (token_index, kind, detail) -> None; raise inside it to stop decoding.
ProblemCallback = Callable[[int, str, str], None]


def check_scheme(scheme: str) -> str:
  """Returns the canonical (upper-case) scheme name, or raises ValueError."""
  canonical = scheme.upper()
  if canonical not in _PREFIXES:
    raise ValueError(f"unknown tagging scheme {scheme!r}; known: {', '.join(SCHEMES)}")
  return canonical


def split_tag(tag: str) -> Optional[tuple[str, str]]:
  """`B-ORG` -> ("B", "ORG"); `O` -> ("O", ""); anything else -> None."""
  if tag == OUTSIDE:
    return OUTSIDE, ""
  match = _TAG_RE.fullmatch(tag)
  return (match.group(1), match.group(2)) if match else None


def detect_scheme(tags: Iterable[str]) -> str:
  """Picks the scheme a file uses from the prefixes its tags carry.

  Any `M-` -> BMES; else any `E-`/`S-` -> BIOES; else BIO. A file whose spans happen to need no
  E/S/M tags (e.g. only O) decodes the same under every scheme, so the guess is always safe.
  """
  prefixes = set()
  for tag in tags:
    parts = split_tag(tag)
    if parts is not None:
      prefixes.add(parts[0])
  if "M" in prefixes:
    return "BMES"
  if "E" in prefixes or "S" in prefixes:
    return "BIOES"
  return "BIO"


def _raise_problem(index: int, kind: str, detail: str) -> None:
  raise ValueError(f"token {index}: {kind}: {detail}")


def decode_tags(tags: Sequence[str], scheme: str, *, types: Optional[Collection[str]] = None,
                on_problem: Optional[ProblemCallback] = None) -> list[tuple[int, int, str]]:
  """Token spans `(start, end_exclusive, type)` encoded by `tags` under `scheme`.

  `types`, when given, is the set of allowed entity types (others are `unknown_tag`).
  `on_problem(token_index, kind, detail)` is told about every malformation (kinds in the module
  docstring) and decoding continues with the documented repair; without it, ValueError.
  """
  begin, inside, end, single = _PREFIXES[check_scheme(scheme)]
  needs_end = end is not None
  report = on_problem or _raise_problem
  spans: list[tuple[int, int, str]] = []
  open_start: Optional[int] = None  # token index where the open span began
  open_type = ""

  def close(at: int, properly: bool) -> None:
    nonlocal open_start
    if open_start is None:
      return
    if needs_end and not properly:
      report(at, "unclosed_span",
             f"{open_type} span from token {open_start} has no {end}-{open_type} tag")
    spans.append((open_start, at, open_type))
    open_start = None

  for i, tag in enumerate(tags):
    parts = split_tag(tag)
    if parts is not None and parts[0] != OUTSIDE:
      if parts[0] not in (begin, inside, end, single) or (types is not None and parts[1] not in types):
        parts = None
    if parts is None:
      report(i, "unknown_tag", f"tag {tag!r} is not valid in {scheme.upper()}"
             + (f" with types {sorted(types)}" if types is not None else ""))
      parts = (OUTSIDE, "")
    prefix, kind = parts
    if prefix == OUTSIDE:
      close(i, properly=False)
    elif prefix == begin:
      close(i, properly=False)
      open_start, open_type = i, kind
    elif prefix == single:
      close(i, properly=False)
      spans.append((i, i + 1, kind))
    else:  # inside or end
      if open_start is None or open_type != kind:
        close(i, properly=False)
        report(i, "orphan_inside_tag", f"{tag} without an open {kind} span")
        open_start, open_type = i, kind
      if prefix == end:
        close(i + 1, properly=True)
  close(len(tags), properly=False)
  return spans


def encode_spans(length: int, spans: Iterable[tuple[int, int, str]], scheme: str, *,
                 separator: str = "-") -> list[str]:
  """The `length` tags that encode non-overlapping token `spans` under `scheme`.

  Inverse of `decode_tags` for well-formed input; raises ValueError on overlapping, empty or
  out-of-range spans, which no tag sequence can express.
  """
  begin, inside, end, single = _PREFIXES[check_scheme(scheme)]
  tags = [OUTSIDE] * length
  covered = [False] * length
  for start, stop, kind in sorted(spans):
    if not 0 <= start < stop <= length:
      raise ValueError(f"span {start}:{stop} does not fit {length} tokens")
    if any(covered[start:stop]):
      raise ValueError(f"span {start}:{stop} ({kind}) overlaps another span")
    if _TAG_RE.fullmatch(f"B-{kind}") is None:
      raise ValueError(f"type {kind!r} cannot be written in a tag (empty or has whitespace)")
    covered[start:stop] = [True] * (stop - start)
    if stop - start == 1 and single is not None:
      tags[start] = f"{single}{separator}{kind}"
      continue
    tags[start] = f"{begin}{separator}{kind}"
    for i in range(start + 1, stop):
      tags[i] = f"{inside}{separator}{kind}"
    if end is not None:
      tags[stop - 1] = f"{end}{separator}{kind}"
  return tags
