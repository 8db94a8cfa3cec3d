"""The one record every reader yields, and the error/repair bookkeeping readers share.

`Example(text, spans)`: `text` is the sentence exactly as the file has it (no lowercasing, no
normalisation); each `Span(start, end, type)` covers `text[start:end]` (end exclusive) and carries
the dataset's raw label. Readers build spans from the file's own structure and check them with
`Example.validate`, so an offset that does not fit its text never travels further.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterable, Optional


@dataclasses.dataclass(frozen=True, order=True)
class Span:
  start: int
  end: int  # exclusive
  type: str

  def text_in(self, text: str) -> str:
    return text[self.start:self.end]


@dataclasses.dataclass(frozen=True)
class Example:
  text: str
  spans: tuple[Span, ...] = ()

  def __post_init__(self):
    # Accept any iterable of spans (or (start, end, type) triples) but store a sorted tuple.
    spans = tuple(s if isinstance(s, Span) else Span(*s) for s in self.spans)
    object.__setattr__(self, "spans", tuple(sorted(spans)))

  def validate(self) -> "Example":
    """Raises ValueError when a span is empty, reversed or outside the text."""
    for s in self.spans:
      if not (0 <= s.start < s.end <= len(self.text)):
        raise ValueError(f"span {s.start}:{s.end} ({s.type}) does not fit a text of "
                         f"{len(self.text)} characters")
    return self

  def mentions(self) -> list[tuple[str, str]]:
    """(type, surface text) for every span, in text order."""
    return [(s.type, s.text_in(self.text)) for s in self.spans]


class DataFormatError(ValueError):
  """Malformed input, located by file and 1-based line number."""

  def __init__(self, path: os.PathLike | str, line: Optional[int], message: str):
    self.path = os.fspath(path)
    self.line = line
    self.message = message
    where = f"{self.path}:{line}" if line is not None else self.path
    super().__init__(f"{where}: {message}")


class RepairReport:
  """Counts lenient-mode repairs by kind and keeps the first few locations of each.

  A reader in strict mode raises `DataFormatError` where a lenient reader calls `repair(...)`;
  the kinds are short snake_case names documented next to the rule that applies them.
  """

  MAX_LOCATIONS = 5

  def __init__(self):
    self.counts: collections.Counter[str] = collections.Counter()
    self.locations: dict[str, list[str]] = collections.defaultdict(list)
    # Files read as unlabeled (not one line carries a label): not repairs, but the caller must
    # know that their Examples have no gold spans.
    self.unlabeled_files: list[str] = []

  def repair(self, kind: str, path: os.PathLike | str, line: Optional[int], detail: str = ""):
    self.counts[kind] += 1
    if len(self.locations[kind]) < self.MAX_LOCATIONS:
      where = f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
      self.locations[kind].append(f"{where}: {detail}" if detail else where)

  def merge(self, other: "RepairReport") -> "RepairReport":
    for kind, n in other.counts.items():
      self.counts[kind] += n
      room = self.MAX_LOCATIONS - len(self.locations[kind])
      self.locations[kind].extend(other.locations[kind][:max(room, 0)])
    self.unlabeled_files.extend(f for f in other.unlabeled_files if f not in self.unlabeled_files)
    return self

  def as_dict(self) -> dict[str, int]:
    return dict(sorted(self.counts.items()))

  def __bool__(self):
    return bool(self.counts)

  def __repr__(self):
    return f"RepairReport({self.as_dict()})"


def count_mentions(examples: Iterable[Example]) -> tuple[int, int, collections.Counter]:
  """(sentences, mentions, per-raw-type mention counts) over `examples`."""
  sentences = mentions = 0
  per_type: collections.Counter[str] = collections.Counter()
  for ex in examples:
    sentences += 1
    mentions += len(ex.spans)
    per_type.update(s.type for s in ex.spans)
  return sentences, mentions, per_type
