"""From one decoded output to the Extractor's entities: parse, score, locate (`OutputReader`).

The Extractor (inference.py) decodes windows; this module reads what came back.  An output is
decoded to text and parsed once (`OutputReader.parse` -> `Parsed`: the text, the written type
forms, parsing.parse_generation_details and each mention's item tokens).  On the greedy
constrained path the Extractor parses right after the search, to choose the tokens whose
log-probs it computes (`scored`; entity_scores), and hands the same `Parsed` on to `entities`,
so no output is decoded or parsed twice.

Scores and offsets are described in inference.py's module docstring ("Score", "Offsets").
"""

from __future__ import annotations

import collections
import logging
from typing import Any, NamedTuple, Optional

import numpy as np

from punified_jax import entity_scores
from punified_jax import parsing
from punified_jax import windows as windows_lib

logger = logging.getLogger(__name__)


class Parsed(NamedTuple):
  generation: str                  # the output decoded to text
  written: dict[str, str]          # written type form -> requested name
  details: parsing.ParseResult
  # Per mention, the output indices of its item's "(", ":" and ")" (None: not found);
  # empty when there are no mentions.
  items: list[Optional[tuple[int, int, int]]]


class OutputReader:
  """Reads the outputs of one vocabulary and syntax (the Extractor's `_reader`).

  syntax_ids: the ids of "(", ":" and ")".  lossy: the vocabulary does not decode its
  encoding exactly (WordPiece): types are parsed in the form they decode to and spans are
  re-aligned to the window's text (windows.realign)."""

  def __init__(self, vocabulary: Any, syntax_ids: tuple[int, int, int], lossy: bool):
    self.vocabulary = vocabulary
    self.syntax_ids = syntax_ids
    self.lossy = lossy
    self._written_types: dict[str, str] = {}

  def written_type(self, name: str) -> str:
    """How the model's output spells type `name` once decoded."""
    if not self.lossy:
      return name  # SentencePiece with byte fallback decodes exactly
    if name not in self._written_types:
      self._written_types[name] = self.vocabulary.decode(self.vocabulary.encode(name))
    return self._written_types[name]

  def parse(self, types: tuple[str, ...], output: list[int]) -> Parsed:
    """The output of a window prompted with `types`, decoded and parsed."""
    generation = self.vocabulary.decode(output)
    # A lossy vocabulary writes a type the way it decodes ("Person" -> "person"): parse with
    # those forms, report the requested names (the first of two that decode alike wins).
    written: dict[str, str] = {}
    for name in types:
      form = self.written_type(name)
      if form and ":" not in form:
        written.setdefault(form, name)
    details = parsing.parse_generation_details(generation, tuple(written))
    items = (entity_scores.item_tokens(self.vocabulary, self.syntax_ids, output, generation,
                                       details.mentions) if details.mentions else [])
    return Parsed(generation, written, details, items)

  @staticmethod
  def scored(parsed: Parsed, length: int) -> np.ndarray:
    """bool [length]: the output positions its entity scores read (entity_scores)."""
    if not parsed.details.mentions:
      return np.zeros((length,), bool)
    return entity_scores.scored_positions(parsed.items, length)

  def entities(self, window: windows_lib.Window, output: list[int], log_probs: np.ndarray,
               parsed: Parsed, *, constrained: bool, end_at_repeat: int,
               stats: collections.Counter) -> list[dict]:
    """The window's entities (offsets in the request's text) from its parsed output and the
    model's per-token log-probs (those of the scored positions at least); counts what it saw
    into `stats` (the Extractor's statistics)."""
    details, written = parsed.details, parsed.written
    stats["truncated"] += int(details.truncated)
    stats["unparsed"] += int(details.unparsed)
    if constrained and end_at_repeat and details.repeats >= end_at_repeat:
      # From the end_at_repeat-th repeat on the constraint forbids ",": the rule closed this
      # output (or it closed there anyway).
      stats["repeat_limit"] += 1
    stats["mentions"] += len(details.mentions)
    if not constrained:
      stats["unrequested_type_items"] += sum(
          type_name not in written
          for type_name, _ in parsing.parse_generation(parsed.generation, None))
    if not details.mentions:
      return []
    aligned: list[tuple[str, str]] = []
    score_of: dict[tuple[str, str], float] = {}
    for (type_name, span), item in zip(details.mentions, parsed.items):
      if item is None:
        stats["score_fallback"] += 1
        score = entity_scores.geometric_mean(log_probs)  # the whole output's
      else:
        open_index, colon_index, close_index = item
        score = entity_scores.geometric_mean(log_probs[open_index + 1:close_index + 1])
      surface = span
      if self.lossy:
        span_ids = None if item is None else output[colon_index + 1:close_index]
        # None: reported below
        surface = windows_lib.realign(self.vocabulary, window, span, span_ids) or span
      pair = (written[type_name], surface)
      if pair not in score_of:
        aligned.append(pair)
      score_of[pair] = max(score, score_of.get(pair, 0.0))
    located = parsing.locate_mentions(window.text, aligned)
    stats["located_mentions"] += len({(e["type"], e["text"]) for e in located.located})
    for type_name, span in located.not_located:
      stats["not_located"] += 1
      logger.warning("span %r of type %s is not in the text %r: not returned", span, type_name,
                     window.text[:80])
    entities = [{"type": entity["type"], "text": entity["text"],
                 "start": entity["start"] + window.offset,
                 "end": entity["end"] + window.offset,
                 "score": score_of[(entity["type"], entity["text"])]}
                for entity in located.located]
    stats["entities"] += len(entities)
    return entities
