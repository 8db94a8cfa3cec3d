"""The windows of a request: a text cut into pieces that fit the model's input next to the
prompt, each encoded with its character offsets (the Extractor's step 1; "Windows" in
punified_jax.inference's module docstring says the rule).

A text whose tokens fit the budget is one window.  A longer one is split after sentence-ending
characters (SENTENCE_END_CHARS) and consecutive sentences are packed greedily into windows
that fit; a single sentence longer than a window is cut at token boundaries into windows of
the full length, consecutive ones overlapping by a quarter of a window.  Cuts fall on
character boundaries, and a piece whose own tokenization does not fit after all (a WordPiece
word cut in two) is halved until it does.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Callable, Optional

from punified_jax import parsing
from punified_jax import prompts
from punified_jax import vocab as vocab_lib

# Characters after which a long text may be split into windows.
SENTENCE_END_CHARS = "。！？!?；;\n"
# Type lists whose encoded prompt and all-NULL target length an Extractor keeps (a service sees
# arbitrary type lists: the oldest entry goes first).
PROMPT_CACHE_SIZE = 1024


@dataclasses.dataclass
class Window:
  """One piece of one request, ready to be decoded (`Extractor.plan_windows`)."""
  request: int           # index of the text in the call
  offset: int            # where `text` starts in the request's text
  text: str
  types: tuple[str, ...]
  input_ids: list[int]   # prompt + text + EOS
  text_ids: list[int]    # the text region's ids (after the <text> marker)
  text_spans: list[tuple[int, int]]  # their character spans in `text`


def sentence_ends(text: str) -> list[int]:
  """Positions just after each sentence-ending character (and len(text)), increasing."""
  ends = [i + 1 for i, char in enumerate(text) if char in SENTENCE_END_CHARS]
  if not ends or ends[-1] != len(text):
    ends.append(len(text))
  return ends


def encode_text(vocabulary: Any, text_id: int,
                text: str) -> tuple[list[int], list[tuple[int, int]]]:
  """The ids of `text` as it is tokenized after a prompt's <text> marker (`text_id`), and their
  character spans in `text`.

  Only `TEXT_MARKER + text` is encoded, not the whole prompt: the marker is one atomic token
  (a user-defined piece of SentencePiece, a reserved token of WordPiece), so what follows it
  tokenizes the same whatever precedes it (a property test checks this against the whole
  prompt).  The prompt's type names are most of a prompt's tokens, and the Extractor encodes
  them once per type list instead of once per window.
  """
  ids, spans = vocab_lib.encode_with_offsets(vocabulary, prompts.TEXT_MARKER + text)
  marker = ids.index(text_id)
  shift = len(prompts.TEXT_MARKER)
  return ids[marker + 1:], [(start - shift, end - shift) for start, end in spans[marker + 1:]]


_Encoded = tuple[list[int], list[tuple[int, int]]]  # encode_text's (ids, spans)


def split_text(vocabulary: Any, text_id: int, text: str, budget: int) -> list[tuple[int, int]]:
  """Character ranges of `text` whose tokens each fit `budget` (module docstring)."""
  encoded = encode_text(vocabulary, text_id, text)
  if len(encoded[0]) <= budget:
    return [(0, len(text))]
  return [(start, end) for start, end, _ in _split(vocabulary, text_id, text, budget, encoded)]


def _split(vocabulary: Any, text_id: int, text: str, budget: int,
           encoded: _Encoded) -> list[tuple[int, int, Optional[_Encoded]]]:
  """split_text's ranges of a text longer than `budget` (`encoded`: its encode_text), each
  with its own encode_text when the fit check made it (None for a one-character piece)."""
  spans = encoded[1]
  token_starts = [start for start, _ in spans]  # non-decreasing

  def count(start: int, end: int) -> int:
    return bisect.bisect_left(token_starts, end) - bisect.bisect_left(token_starts, start)

  pieces: list[tuple[int, int]] = []
  window_start = 0
  previous_end = 0
  for end in sentence_ends(text):
    if count(window_start, end) <= budget:
      previous_end = end
      continue
    if previous_end > window_start:  # close the window before this sentence
      pieces.append((window_start, previous_end))
      window_start = previous_end
    if count(window_start, end) <= budget:
      previous_end = end
      continue
    pieces.extend(_cut(token_starts, window_start, end, budget))
    window_start = previous_end = end
  if previous_end > window_start:
    pieces.append((window_start, previous_end))
  # Tokenizing a piece alone can differ from its tokens inside the whole text (a WordPiece
  # word cut in two): halve any piece that does not fit after all.
  fitted: list[tuple[int, int, Optional[_Encoded]]] = []
  stack = list(reversed(pieces))
  while stack:
    start, end = stack.pop()
    piece = encode_text(vocabulary, text_id, text[start:end]) if end - start > 1 else None
    if piece is not None and len(piece[0]) > budget:
      middle = (start + end) // 2
      stack.extend([(middle, end), (start, middle)])
    else:
      fitted.append((start, end, piece))
  return fitted


def _cut(token_starts: list[int], start: int, end: int, budget: int) -> list[tuple[int, int]]:
  """Cuts [start, end) at token starts into windows of at most `budget` tokens, each
  starting a quarter window before the previous one ends.  Cuts fall on character
  boundaries (byte-fallback tokens of one character share its start)."""
  first = bisect.bisect_left(token_starts, start)
  last = bisect.bisect_left(token_starts, end)  # one past the range's last token

  def boundary_before(k: int) -> int:  # the largest character-initial token index <= k
    while k > first and token_starts[k] == token_starts[k - 1]:
      k -= 1
    return k

  def boundary_after(k: int) -> int:  # the smallest character-initial token index >= k
    while first < k < last and token_starts[k] == token_starts[k - 1]:
      k += 1
    return k

  stride = max(1, budget - budget // 4)
  pieces = []
  index = first
  while index + budget < last:
    stop = boundary_before(index + budget)
    if stop <= index:
      stop = boundary_after(index + 1)
    pieces.append((token_starts[index], token_starts[stop]))
    following = boundary_before(min(index + stride, stop))
    index = following if following > index else stop
  pieces.append((token_starts[index], end))
  return pieces


def plan_windows(vocabulary: Any, text_id: int, eos_id: int, prompt_ids: list[int],
                 request: int, text: str, names: tuple[str, ...], budget: int) -> list[Window]:
  """The encoded windows of `text` (not blank) under the prompt `prompt_ids` (the encoded
  `format_input("", names)`, ending with the <text> marker), each holding at most `budget`
  text tokens; whitespace-only pieces are dropped.  Every piece is encoded once: a text that
  fits (the common case) as a whole; a longer one as a whole to split it, then each piece
  (split_text's fit check)."""
  encoded = encode_text(vocabulary, text_id, text)
  pieces = ([(0, len(text), encoded)] if len(encoded[0]) <= budget
            else _split(vocabulary, text_id, text, budget, encoded))
  windows = []
  for start, end, piece_encoded in pieces:
    piece = text[start:end]
    if piece.strip():
      ids, spans = piece_encoded or encode_text(vocabulary, text_id, piece)
      windows.append(Window(request, start, piece, names, prompt_ids + ids + [eos_id], ids,
                            spans))
  return windows


def cached(cache: dict, key: Any, compute: Callable[[], Any]) -> Any:
  """cache[key], computed on first use; at PROMPT_CACHE_SIZE entries the oldest goes."""
  value = cache.get(key)
  if value is None:
    value = compute()
    if len(cache) >= PROMPT_CACHE_SIZE:
      cache.pop(next(iter(cache)))
    cache[key] = value
  return value


def realign(vocabulary: Any, window: Window, span: str, span_ids: Optional[list[int]]
            ) -> Optional[str]:
  """The window's own characters for a span of a lossy vocabulary (WordPiece), or None.

  First the span's output tokens as a contiguous run of the window's text tokens (what the
  constraint copies; the first run wins, locate_mentions then finds every occurrence), then
  the decoded span re-encoded the same way, then parsing.align_span on the strings.
  """
  candidates = [span_ids] if span_ids else []
  encoded: list[int] = []
  for index, part in enumerate(span.split("[UNK]")):  # how WordPiece decodes [UNK]
    if index:
      encoded.append(vocabulary.unk_id)
    encoded.extend(vocabulary.encode(part))
  candidates.append(encoded)
  for ids in candidates:
    width = len(ids)
    for start in range(len(window.text_ids) - width + 1 if width else 0):
      if window.text_ids[start:start + width] == ids:
        return window.text[window.text_spans[start][0]:window.text_spans[start + width - 1][1]]
  return parsing.align_span(window.text, span)
