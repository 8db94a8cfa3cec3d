"""The service's view of an `Extractor`: requests -> windows, a batch of windows -> entities.

Why not `Extractor.extract_requests`: it pads each decoding batch to the bucket of its LONGEST
window, so a short text's input shape (and hence, in the last bits of float arithmetic, its
scores) would depend on what it was batched with. The service instead batches only windows of
the SAME bucket (and the same beam size and constraint), in batches of exactly `batch_size`
rows (missing rows repeat the last window), so every window is decoded in the same shape and
program whatever its batch-mates: a request's answer never depends on them (tested).

This module is the one place that uses the Extractor's window-level steps (`_windows`,
`_decode`, `_entities`); the windowing, the parsing, the offsets and the scores are the
Extractor's own, so the service answers exactly as `Extractor.extract` would.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import threading
from typing import Any, Optional, Sequence

from punified_jax import request_validation as validation

# (beam size, constrained, input bucket): windows sharing a key can share a decoding batch.
BatchKey = tuple[int, bool, int]


@dataclasses.dataclass
class TextWork:
  """One text of a request: its windows and the entities found so far."""
  windows: list[Any]                       # inference._Window
  found: dict[tuple[str, int, int], dict] = dataclasses.field(default_factory=dict)


class Engine:
  """Owns the Extractor variants (one per served beam size / constraint setting)."""

  def __init__(self, extractor, *, beam_sizes: Sequence[int], allow_unconstrained: bool,
               limits: validation.Limits):
    self.extractor = extractor
    self.beam_sizes = tuple(sorted(set(int(b) for b in beam_sizes) | {extractor.beam_size}))
    self.default_beam_size = extractor.beam_size
    self.allow_unconstrained = allow_unconstrained
    self.limits = limits
    self.batch_size = extractor.batch_size
    self.buckets = tuple(extractor.buckets)
    self.coverage = validation.VocabularyCoverage(extractor.vocabulary)
    self._variants: dict[tuple[int, bool], Any] = {}
    self._lock = threading.Lock()
    for beam in self.beam_sizes:
      for constrained in ((True, False) if allow_unconstrained else (True,)):
        self._variant(beam, constrained)

  def _variant(self, beam_size: int, constrained: bool):
    """A shallow copy of the extractor with another beam size / constraint: same parameters,
    vocabulary and compiled-program caches."""
    with self._lock:
      key = (beam_size, constrained)
      if key not in self._variants:
        variant = copy.copy(self.extractor)
        variant.beam_size = beam_size
        variant.constrained = constrained
        self._variants[key] = variant
      return self._variants[key]

  # -- requests ------------------------------------------------------------------------------

  def validate(self, body: Any) -> validation.ExtractRequest:
    return validation.validate_extract_request(
        body, known_types=self.extractor.known_types,
        allow_unseen_types=self.extractor.allow_unseen_types, beam_sizes=self.beam_sizes,
        default_beam_size=self.default_beam_size, default_constrained=True,
        allow_unconstrained=self.allow_unconstrained, limits=self.limits)

  def prepare(self, request: validation.ExtractRequest) -> list[TextWork]:
    """Windows of every text; InvalidRequest beyond the cost limits (checked before any
    decoding: out-of-vocabulary characters first, then the window budget)."""
    fields = ["text"] if request.single else None
    validation.check_cost(request.texts, None, self.coverage, self.limits, fields)
    try:
      works = [TextWork(self.extractor._windows(index, text, request.types))  # pylint: disable=protected-access
               for index, text in enumerate(request.texts)]
    except ValueError as error:  # the prompt of these types leaves no room for text
      raise validation.InvalidRequest("types", validation.escape(str(error), 400)) from None
    validation.check_cost(request.texts, [len(work.windows) for work in works], None,
                          self.limits, fields)
    return works

  def key(self, request: validation.ExtractRequest, window) -> BatchKey:
    length = len(window.input_ids)
    return (request.beam_size, request.constrained,
            self.buckets[bisect.bisect_left(self.buckets, length)])

  # -- decoding (worker thread only) -----------------------------------------------------------

  def decode(self, key: BatchKey, windows: list[Any]) -> list[list[dict]]:
    """Entities (text offsets) of each window; all windows share `key`, at most batch_size."""
    assert 0 < len(windows) <= self.batch_size, len(windows)
    beam_size, constrained, _ = key
    variant = self._variant(beam_size, constrained)
    entities: dict[int, list[dict]] = {}
    position = {id(window): index for index, window in enumerate(windows)}
    for window, output, log_probs in variant._decode(windows):  # pylint: disable=protected-access
      entities[position[id(window)]] = variant._entities(window, output, log_probs)  # pylint: disable=protected-access
    return [entities.get(index, []) for index in range(len(windows))]

  def warm_up_windows(self, bucket: int) -> list[Any]:
    """A batch of synthetic windows padded to `bucket` (decoding it compiles that shape)."""
    extractor = self.extractor
    names = (extractor.known_types[0],)
    prompt = extractor._prompt_length(names)  # pylint: disable=protected-access
    length = max(1, min(extractor._text_budget(names), bucket - prompt - 1))  # pylint: disable=protected-access
    filler = "北京大学在北京。" * (length // 8 + 1)
    window = extractor._encode_window(0, 0, filler[:length], names)  # pylint: disable=protected-access
    while len(window.input_ids) > bucket and length > 1:  # a vocabulary with multi-token chars
      length -= 1
      window = extractor._encode_window(0, 0, filler[:length], names)  # pylint: disable=protected-access
    return [window] * self.batch_size


def merge(work: TextWork, entities: list[dict]) -> None:
  """Adds one window's entities to its text (a duplicate from overlapping windows keeps its
  best score), as Extractor.extract_requests does."""
  for entity in entities:
    key = (entity["type"], entity["start"], entity["end"])
    previous = work.found.get(key)
    if previous is None or previous["score"] < entity["score"]:
      work.found[key] = entity


def text_result(text: str, work: TextWork) -> dict[str, Any]:
  """The answer for one text: sorted entities and the character ranges decoded."""
  ordered = sorted(work.found.values(), key=lambda e: (e["start"], e["end"], e["type"]))
  for entity in ordered:
    assert text[entity["start"]:entity["end"]] == entity["text"]
  return {"entities": ordered,
          "windows": [[w.offset, w.offset + len(w.text)] for w in work.windows]}
