"""Reading a raw release file: bytes -> numbered, decoded lines; problems raised or counted.

The plumbing every reader in `readers.py` shares (see its docstring for the rules): gzip by magic
bytes, local or gs:// paths (storage), a BOM, CESU-8 surrogates, lines split on b"\\n" only, and
`Problems`, which turns a malformation into a `DataFormatError` (strict) or a counted repair
(lenient) and applies the repair-share rule (REPAIR_SHARE_LIMIT) when a file has been read.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
from typing import Callable, Collection, Iterable, Iterator, Optional, Sequence

from punified_jax import storage
from punified_jax.data import tagging
from punified_jax.data.example import DataFormatError, Example, RepairReport, Span

PathLike = os.PathLike | str

_BOM = b"\xef\xbb\xbf"
_SURROGATE_PAIR_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]")
LONE_SURROGATE_RE = re.compile("[\ud800-\udfff]")


logger = logging.getLogger(__name__)

# See readers.py's docstring: lenient mode gives up on a file when more than this share of its
# non-blank lines need repair, once at least REPAIR_SHARE_MIN_LINES lines do.
REPAIR_SHARE_LIMIT = 0.5
REPAIR_SHARE_MIN_LINES = 10


# --------------------------------------------------------------------------------------------
# Shared plumbing.


class Problems:
  """Turns a malformation into a DataFormatError (strict) or a counted repair (lenient)."""

  def __init__(self, path: PathLike, strict: bool, report: Optional[RepairReport]):
    self.path = os.fspath(path)
    self.strict = strict
    self.own_report = report is None
    self.report = RepairReport() if report is None else report
    self.lines_read = 0  # non-blank lines, counted by iter_lines
    self.bad_lines: set = set()
    self.first_bad: Optional[tuple[str, Optional[int], str]] = None

  def __call__(self, line: Optional[int], kind: str, detail: str, *, path: Optional[str] = None):
    where = self.path if path is None else path
    if self.strict:
      raise DataFormatError(where, line, f"{kind}: {detail}")
    self.report.repair(kind, where, line, detail)
    self.bad_lines.add((where, line))
    if self.first_bad is None:
      self.first_bad = (where, line, f"{kind}: {detail}")

  def mark_unlabeled(self):
    """Records that this file carries no labels at all (see the module docstring)."""
    if self.path not in self.report.unlabeled_files:
      self.report.unlabeled_files.append(self.path)
    logger.info("%s: no line carries a label; read as an unlabeled file", self.path)

  def check_repair_share(self):
    """Lenient mode: raises when most of the file needed repair (see REPAIR_SHARE_LIMIT)."""
    bad = len(self.bad_lines)
    if bad < REPAIR_SHARE_MIN_LINES or bad <= REPAIR_SHARE_LIMIT * max(self.lines_read, 1):
      return
    where, line, first = self.first_bad
    raise DataFormatError(
        where, line, f"{bad} of {self.lines_read} non-blank lines need repair (more than "
        f"{REPAIR_SHARE_LIMIT:.0%}): this is probably the wrong file or the wrong format "
        f"(--format / PUNIFIED_FORMAT), or the file is damaged; not read. First problem, at this "
        f"line: {first}. Repairs by kind: {self.report.as_dict()}")

  def note(self, line: Optional[int], kind: str, detail: str):
    """Counts a documented skip that is not an error (e.g. `skipped_o_label`), in both modes."""
    self.report.repair(kind, self.path, line, detail)

  def finish(self):
    if not self.strict:
      self.check_repair_share()
    if self.own_report and self.report:
      logger.warning("%s: repaired/skipped while reading (pass a RepairReport to collect): %s",
                     self.path, self.report.as_dict())


@contextlib.contextmanager
def open_bytes(path: PathLike):
  """Opens `path` (local or gs://) for binary reading; gzip is recognised by its magic bytes,
  not the name."""
  with storage.open_file(path, "rb") as handle:
    magic = handle.read(2)
    handle.seek(0)
    if magic == b"\x1f\x8b":
      with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
        yield unzipped
    else:
      yield handle


def join_surrogates(text: str) -> str:
  """Replaces each high+low surrogate pair with the character it encodes (CESU-8 input)."""
  return _SURROGATE_PAIR_RE.sub(
      lambda m: chr(0x10000 + ((ord(m.group()[0]) - 0xD800) << 10) + ord(m.group()[1]) - 0xDC00),
      text)


def iter_lines(path: PathLike, problems: Problems, *, cesu8: bool = False
                ) -> Iterator[tuple[int, str]]:
  """(1-based line number, decoded line without its line break) for every line of `path`.

  With `cesu8`, surrogate code points encoded as 3-byte sequences are accepted and pairs are
  joined into one character; lone surrogates are left for the caller to handle.
  """
  errors = "surrogatepass" if cesu8 else "strict"
  with open_bytes(path) as f:
    for lineno, raw in enumerate(f, 1):
      if raw.endswith(b"\n"):
        raw = raw[:-1]
      if raw.endswith(b"\r"):
        raw = raw[:-1]
      if lineno == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
      if raw.strip(b" \t"):
        problems.lines_read += 1
      try:
        line = raw.decode("utf-8", errors)
      except UnicodeDecodeError as e:
        problems(lineno, "invalid_utf8", f"byte {e.start} is not valid UTF-8")
        line = raw.decode("utf-8", "replace")
      if cesu8:
        line = join_surrogates(line)
      elif LONE_SURROGATE_RE.search(line):  # only reachable through "replace"; keep it valid
        line = LONE_SURROGATE_RE.sub("\ufffd", line)
      yield lineno, line


def is_blank(line: str) -> bool:
  return line.strip(" \t") == ""


def any_line(path: PathLike, test: Callable[[str], bool], *, cesu8: bool = False) -> bool:
  """True when some non-blank line of `path` passes `test`; stops at the first that does.

  The readers ask this before reading ("does any line carry a label?"): a labeled file answers
  at its first line, an unlabeled one is read twice.
  """
  probe = Problems(path, False, RepairReport())  # a bad byte is reported by the real read
  lines = iter_lines(path, probe, cesu8=cesu8)
  try:
    return any(not is_blank(line) and test(line) for _, line in lines)
  finally:
    lines.close()


def example_from_tokens(tokens: Sequence[str], token_spans: Iterable[tuple[int, int, str]]
                         ) -> Example:
  """Joins tokens into a text and maps token-index spans to character offsets."""
  offsets = [0]
  for token in tokens:
    offsets.append(offsets[-1] + len(token))
  spans = [Span(offsets[s], offsets[e], kind) for s, e, kind in token_spans]
  return Example("".join(tokens), spans).validate()


def decode_sentence(tokens: Sequence[str], tags: Sequence[str], lines: Sequence[int], scheme: str,
                     types: Optional[Collection[str]], problems: Problems) -> Example:
  token_spans = tagging.decode_tags(
      tags, scheme, types=types,
      on_problem=lambda i, kind, detail: problems(lines[min(i, len(lines) - 1)], kind, detail))
  return example_from_tokens(tokens, token_spans)
