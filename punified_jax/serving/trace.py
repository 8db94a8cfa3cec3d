"""Where a request's time goes: per-window and per-request traces, sent back as headers.

Why: the latency tail at one client (p99 several times p50) had to be explained with data, not
guessed.  Every answer of `POST /v1/extract` carries

* `Server-Timing` (the standard header, milliseconds): `read` (body + JSON + validation),
  `encode` (windowing and tokenizing, `Engine.prepare`), `queue` (longest wait of one of its
  windows between submission and the start of its batch), `decode` (the model's search, summed
  over the batches that held its windows), `parse` (the rest of those batches: building the
  input rows, detokenizing, parsing, offsets and scores), `total` (receipt to answer);
* `X-Punified-Windows`: a compact JSON list, one object per window: input tokens (`in`), its
  bucket (`bucket`), output tokens up to EOS (`out`), whether the output ran to its limit with no
  EOS (`limit`), whether it ended at its output budget (`budget`: EOS forced by the constraint),
  the batch's compiled rows and real windows (`rows`, `batch`).

The model's search time is measured by wrapping the extractor's decoder (`TracingDecoder`): the
Extractor's own code is unchanged, the wrapper times each `decode` call and keeps its output
tokens, and `Engine.decode` matches each window to its row by its input ids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass
class DecoderCall:
  """One call of the wrapped decoder: its input rows, best output tokens and duration."""
  inputs: np.ndarray       # int [rows, bucket]
  tokens: np.ndarray       # int [rows, max_decode_length] (best beam)
  max_decode_length: int
  seconds: float


class TracingDecoder:
  """Wraps an Extractor's decoder: `decode` is timed and recorded for the calling thread (see
  `recording`); everything else is the wrapped decoder's."""

  def __init__(self, inner: Any):
    self.inner = inner
    self._local = threading.local()

  def __getattr__(self, name: str) -> Any:
    return getattr(self.inner, name)

  def __repr__(self) -> str:
    return repr(self.inner)

  @contextlib.contextmanager
  def recording(self):
    """Records the decode calls this thread makes inside the block into the yielded list
    (calls outside any block, e.g. a plain `extract` on the same extractor, are not kept)."""
    calls: list[DecoderCall] = []
    self._local.calls = calls
    try:
      yield calls
    finally:
      self._local.calls = None

  def decode(self, model, params, encoder_input_tokens, *args, **kwargs):
    started = time.monotonic()
    output = self.inner.decode(model, params, encoder_input_tokens, *args, **kwargs)
    seconds = time.monotonic() - started
    calls = getattr(self._local, "calls", None)
    if calls is not None:
      calls.append(DecoderCall(np.asarray(encoder_input_tokens),
                               np.asarray(output.tokens)[:, 0, :],
                               int(kwargs.get("max_decode_length", 0)), seconds))
    return output


def install(extractor) -> TracingDecoder:
  """The extractor's decoder, wrapped once (idempotent: several engines may share it)."""
  if not isinstance(extractor.decoder, TracingDecoder):
    extractor.decoder = TracingDecoder(extractor.decoder)
  return extractor.decoder


@dataclasses.dataclass
class WindowTrace:
  """One window's share of its batch."""
  input_tokens: int
  bucket: int
  output_tokens: Optional[int] = None   # None: no decoder row matched (no hypothesis)
  hit_limit: bool = False
  rows: int = 0                          # the batch's compiled rows
  batch_windows: int = 0                 # real windows in the batch
  queue_seconds: float = 0.0
  decode_seconds: float = 0.0            # the batch's model search
  parse_seconds: float = 0.0             # the batch's other work (rows, detokenize, parse)
  batch_id: int = 0                      # which batch: its windows share its two times
  hit_budget: bool = False               # the output ended at its own budget (EOS forced)

  def to_json(self) -> dict[str, Any]:
    return {"in": self.input_tokens, "bucket": self.bucket, "out": self.output_tokens,
            "limit": self.hit_limit, "budget": self.hit_budget, "rows": self.rows,
            "batch": self.batch_windows}


def output_lengths(call: DecoderCall, eos_id: int) -> tuple[list[int], list[bool]]:
  """Per row of a decoder call: output tokens up to and including EOS, and whether the row
  has no EOS (it ran to the output limit)."""
  lengths, limited = [], []
  for row in call.tokens:
    ends = np.flatnonzero(row == eos_id)
    if ends.size:
      lengths.append(int(ends[0]) + 1)
      limited.append(False)
    else:
      lengths.append(int(row.shape[0]))
      limited.append(True)
  return lengths, limited


def row_of(call: DecoderCall, input_ids: list[int]) -> Optional[int]:
  """The row of `call` whose inputs are `input_ids` followed by padding (identical windows
  share a row's output, so the first match is as good as any)."""
  length = len(input_ids)
  if length > call.inputs.shape[1]:
    return None
  ids = np.asarray(input_ids)
  for row in range(call.inputs.shape[0]):
    if np.array_equal(call.inputs[row, :length], ids) and not call.inputs[row, length:].any():
      return row
  return None


@dataclasses.dataclass
class RequestTrace:
  """A request's phases (seconds) and its windows; rendered as response headers."""
  read: float = 0.0
  encode: float = 0.0
  windows: list[WindowTrace] = dataclasses.field(default_factory=list)

  def headers(self, total: float) -> dict[str, str]:
    queue = max((w.queue_seconds for w in self.windows), default=0.0)
    # A batch that held several of the request's windows counts once.
    batches = {w.batch_id: (w.decode_seconds, w.parse_seconds) for w in self.windows}
    decode = sum(times[0] for times in batches.values())
    parse = sum(times[1] for times in batches.values())
    phases = (("read", self.read), ("encode", self.encode), ("queue", queue),
              ("decode", decode), ("parse", parse), ("total", total))
    return {"Server-Timing": ", ".join(f"{name};dur={seconds * 1000:.2f}"
                                       for name, seconds in phases),
            "X-Punified-Windows": json.dumps([w.to_json() for w in self.windows],
                                             separators=(",", ":"))}


def parse_server_timing(header: str) -> dict[str, float]:
  """`Server-Timing` back to {phase: milliseconds} (for clients such as the load test)."""
  phases = {}
  for part in header.split(","):
    name, _, rest = part.strip().partition(";dur=")
    if name and rest:
      phases[name] = float(rest)
  return phases
