"""The service's view of an `Extractor`: requests -> windows, a batch of windows -> entities.

Batch shapes.  The service compiles, for every input-length bucket, a few BATCH SIZES
(`batch_sizes`, e.g. 1, 4 and 16 rows; all compiled at warm-up) and decodes each batch in the
size that serves it best: a lone request runs the 1-row program instead of paying for 16 rows,
a full queue runs 16 rows at once.  Which size: the one with the least estimated time per real
window, `seconds(size) / min(queued, size)`, from each shape's decode time measured at warm-up
and then as an exponential average of real batches (`take`); the batcher then takes that many
windows.  Windows are batched only with windows of the SAME bucket, beam size and constraint.

Output limit.  The copy grammar does not bound the output (items may repeat), and a batch
decodes until its longest row ends, so one runaway row (a model repeating an item until the
limit) holds every request of its batch: with the step-1000 `mini` joint model, 28 of 200 Resume
dev windows ran to the 256-token limit (median output 68 tokens).  Each input bucket therefore
gets an output limit of `output_limit_factor` x the bucket length (capped at the model's
max_decode_length).  The default 2.25 keeps every real target: on the dev splits of cluener,
ecommerce, ontonotes4 and resume (6,602 sentences, their datasets' prompts) the longest
target is 2.23x its input's bucket.  Buckets 32 and 64 get 72 and 144 tokens; 128 and up keep
256.  Inside that shape every constrained row also stops at its own output budget (the
constraint's, `serve --output_budget`: its all-NULL target + 2 tokens per text token + 8),
which ends a short window's runaway after about its own length; a long window's budget can
exceed 256, so its runaway still costs the full limit.  The limit depends on the bucket alone
and the budget on the window alone, never on batch-mates; an output cut at either loses its
unfinished last item.

Batch-mates.  A window's input shape is its bucket whatever it is batched with, and its output
limit depends on its bucket only, so its entities never depend on its batch-mates.  Only the
batch SIZE (how many windows were queued) can change: different sizes are different XLA
programs, whose float arithmetic may differ in the last bits (scores differ by ~1e-6; with a
single --batch_sizes value answers are bit-identical).

Threads.  Several decoding threads may call `decode` at once (the batcher's decode workers: on
CPU one search runs on about one core, so two run side by side).  `decode` returns its windows'
traces with their entities (no per-engine "last batch" state), the tracer records per thread,
and the shared per-shape averages (`batch_seconds`) are updated under a lock.  A compiled
program is shared by the threads; its result does not depend on which thread runs it.

This module uses only the Extractor's public window API (`plan_windows`, `decode_windows`,
`text_budget`): the windowing, parsing, offsets and scores are the Extractor's own.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import math
import threading
import time
from typing import Any, Optional, Sequence

from punified_jax import request_validation as validation
from punified_jax.serving import trace as trace_lib

logger = logging.getLogger(__name__)

# (beam size, constrained, input bucket): windows sharing a key can share a decoding batch.
BatchKey = tuple[int, bool, int]
# The default output limit per bucket, in multiples of the bucket length (module docstring).
OUTPUT_LIMIT_FACTOR = 2.25
# Weight of a new measurement in a shape's average decode time.
_SECONDS_WEIGHT = 0.3


@dataclasses.dataclass
class TextWork:
  """One text of a request: its windows and the entities found so far."""
  windows: list[Any]                       # inference.Window
  found: dict[tuple[str, int, int], dict] = dataclasses.field(default_factory=dict)


class Engine:
  """Validates and windows requests, chooses batch shapes, decodes batches (see the module
  docstring).  `batch_sizes`: the compiled batch sizes (default: the extractor's batch_size);
  `output_limit_factor`: 0 keeps the extractor's max_decode_length for every bucket."""

  def __init__(self, extractor, *, beam_sizes: Sequence[int], allow_unconstrained: bool,
               limits: validation.Limits, batch_sizes: Optional[Sequence[int]] = None,
               output_limit_factor: float = OUTPUT_LIMIT_FACTOR):
    self.extractor = extractor
    self.beam_sizes = tuple(sorted(set(int(b) for b in beam_sizes) | {extractor.beam_size}))
    self.default_beam_size = extractor.beam_size
    self.allow_unconstrained = allow_unconstrained
    self.limits = limits
    sizes = list(batch_sizes or [extractor.batch_size])
    if min(sizes) < 1:
      raise ValueError(f"batch sizes must be >= 1, got {sizes}")
    self.batch_sizes = tuple(sorted({extractor.decoder.padded_size(int(s)) for s in sizes}))
    self.batch_size = self.batch_sizes[-1]  # the most windows one batch can hold
    self.buckets = tuple(extractor.buckets)
    if output_limit_factor < 0:
      raise ValueError(f"output_limit_factor must be >= 0, got {output_limit_factor}")
    self.output_limit_factor = float(output_limit_factor)
    self.settings = tuple((beam, constrained) for beam in self.beam_sizes
                          for constrained in ((True, False) if allow_unconstrained else (True,)))
    self.coverage = validation.VocabularyCoverage(extractor.vocabulary)
    # Times the model's search and keeps its outputs for the per-window traces (trace.py).
    self.tracer = trace_lib.install(extractor)
    self._batch_ids = itertools.count()  # tells the batches of one request's windows apart
    # Guards batch_seconds, _from_warm_up and _batch_ids against concurrent decoding threads.
    self._lock = threading.Lock()
    # Average seconds of one batch, per (key, rows): written by the decoding threads (and the
    # warm-up before them) under _lock, read by the batcher; a stale read is harmless.
    self.batch_seconds: dict[tuple[BatchKey, int], float] = {}
    # Shapes whose figure is still the warm-up's (synthetic rows, no runaway outputs: often
    # optimistic for big batches): the first real batch replaces it instead of averaging.
    self._from_warm_up: set[tuple[BatchKey, int]] = set()

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
      works = [TextWork(self.extractor.plan_windows(text, request.types, index))
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

  # -- batch shapes --------------------------------------------------------------------------

  def output_limit(self, bucket: int) -> int:
    """The output limit of windows of this input bucket (module docstring)."""
    limit = self.extractor.max_decode_length
    if self.output_limit_factor:
      limit = min(limit, max(4, math.ceil(self.output_limit_factor * bucket)))
    return limit

  def rows_for(self, windows: int) -> int:
    """The smallest compiled batch size that holds `windows` windows."""
    return self.batch_sizes[bisect.bisect_left(self.batch_sizes, windows)]

  def full(self, key: BatchKey, queued: int, workers: int = 1) -> bool:
    """Whether the batch `take` would form now has no padding rows (waiting for more windows
    could not fill it better)."""
    count = self.take(key, queued, workers)
    return self.rows_for(count) == count

  def take(self, key: BatchKey, queued: int, workers: int = 1) -> int:
    """How many of `queued` (>= 1) windows of `key` the next batch should take.

    `workers`: the idle decoding threads (this one included).  Batches on different threads
    run side by side (on CPU each search uses about one core), so the queued windows are first
    shared out among them: this batch serves ceil(queued / workers) of them.  Of that share it
    takes the size with the least estimated seconds per real window (module docstring).  Until
    every size of the key has been measured, the sizes are compared by the guess that a batch
    of n rows costs sqrt(n) times one row."""
    share = -(-queued // max(1, workers))
    measured = [self.batch_seconds.get((key, rows)) for rows in self.batch_sizes]
    if None in measured:
      measured = [rows ** 0.5 for rows in self.batch_sizes]
    best = min(range(len(self.batch_sizes)),
               key=lambda i: (measured[i] / min(share, self.batch_sizes[i]), i))
    return min(share, self.batch_sizes[best])

  # -- decoding (any number of decoding threads) -----------------------------------------------

  def decode(self, key: BatchKey, windows: list[Any], record: Any = True
             ) -> tuple[list[list[dict]], list[trace_lib.WindowTrace]]:
    """(entities (text offsets) of each window, one trace per window); all windows share
    `key`, at most batch_size, decoded in the smallest compiled batch size that holds them.
    `record`: count the time in the shape's average (False for a run that compiles;
    "warm-up" for a provisional figure).  Safe to call from several threads at once."""
    assert 0 < len(windows) <= self.batch_size, len(windows)
    beam_size, constrained, bucket = key
    rows = self.rows_for(len(windows))
    started = time.monotonic()
    with self.tracer.recording() as calls:
      entities = self.extractor.decode_windows(
          windows, beam_size=beam_size, constrained=constrained, rows=rows,
          max_decode_length=self.output_limit(bucket))
    seconds = time.monotonic() - started
    traces = self._traces(key, windows, rows, calls, seconds)
    if record:
      self._record(key, rows, seconds, provisional=record == "warm-up")
    return entities, traces

  def _record(self, key: BatchKey, rows: int, seconds: float, provisional: bool) -> None:
    """Adds a batch's time to its shape's average (a provisional warm-up figure is
    replaced by the first real batch)."""
    shape = (key, rows)
    with self._lock:
      previous = self.batch_seconds.get(shape)
      if previous is None or shape in self._from_warm_up:
        self.batch_seconds[shape] = seconds
      else:
        self.batch_seconds[shape] = previous + _SECONDS_WEIGHT * (seconds - previous)
      if provisional:
        self._from_warm_up.add(shape)
      else:
        self._from_warm_up.discard(shape)

  def _traces(self, key: BatchKey, windows: list[Any], rows: int,
              calls: list[trace_lib.DecoderCall], seconds: float) -> list[trace_lib.WindowTrace]:
    """One trace per window of a decoded batch: its output length, whether it hit the output
    limit, and the batch's search / other time (trace.py)."""
    search = sum(call.seconds for call in calls)
    with self._lock:
      batch_id = next(self._batch_ids)
    traces = [trace_lib.WindowTrace(input_tokens=len(w.input_ids), bucket=key[2], rows=rows,
                                    batch_windows=len(windows), decode_seconds=search,
                                    parse_seconds=max(0.0, seconds - search),
                                    batch_id=batch_id)
              for w in windows]
    eos_id = self.extractor.eos_id
    for call in calls:
      lengths, limited = trace_lib.output_lengths(call, eos_id)
      for window, window_trace in zip(windows, traces):
        row = trace_lib.row_of(call, list(window.input_ids))
        if row is not None and window_trace.output_tokens is None:
          window_trace.output_tokens = lengths[row]
          window_trace.hit_limit = limited[row]
          window_trace.hit_budget = key[1] and lengths[row] == self.extractor.budget_of(window)
    return traces

  def warm_up(self) -> None:
    """Compiles every (beam size, constraint, bucket, batch size) program; with several batch
    sizes, decodes each once more to measure it (the `take` estimates)."""
    for beam_size, constrained in self.settings:
      for bucket in self.buckets:
        for rows in self.batch_sizes:
          key = (beam_size, constrained, bucket)
          windows = self.warm_up_windows(bucket, rows)
          self.decode(key, windows, record=False)
          if len(self.batch_sizes) > 1:
            self.decode(key, windows, record="warm-up")
          logger.info("warm-up: beam %d, %s, bucket %d, %d rows compiled (%s)", beam_size,
                      "constrained" if constrained else "unconstrained", bucket, rows,
                      f"{self.batch_seconds[(key, rows)]:.2f} s a batch"
                      if (key, rows) in self.batch_seconds else "not timed")

  def warm_up_windows(self, bucket: int, rows: Optional[int] = None) -> list[Any]:
    """`rows` (default: the largest size) synthetic windows of `bucket`: the first fills the
    bucket, the others are shorter (different output lengths, as in a real batch, so the
    measured time includes waiting for the longest row)."""
    extractor = self.extractor
    names = (extractor.known_types[0],)
    prompt = extractor.max_input_length - 1 - extractor.text_budget(names)
    length = max(1, min(extractor.text_budget(names), bucket - prompt - 1))
    filler = "北京大学在北京。" * (length // 8 + 1)
    while True:  # a vocabulary with multi-token characters may need a shorter text
      windows = extractor.plan_windows(filler[:length], names)
      if (len(windows) == 1 and len(windows[0].input_ids) <= bucket) or length == 1:
        break
      length -= 1
    batch = [windows[0]]
    for row in range(1, rows or self.batch_size):
      shorter = extractor.plan_windows(filler[:max(1, length - row * length // 16)], names)
      batch.append(shorter[0] if len(shorter) == 1 else windows[0])
    return batch


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
