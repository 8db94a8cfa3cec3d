"""Cross-request dynamic batching: a bounded queue of windows and N decoding threads.

    handler --submit(job)--> per-key FIFO queues --N worker threads--> Engine.decode --> futures

* Bounded: the queue holds at most `max_queue_windows` windows; a request that does not fit is
  refused at once (`QueueFull`, the service answers 429 with Retry-After), never parked.
* Workers: `workers` threads take batches from the same queues and decode them concurrently.
  Why: XLA:CPU runs one search (a jitted while loop of small ops) on about one core, so one
  decoding thread leaves the other cores idle; two searches started from two threads run side
  by side (on the 2-core bench machine two 32-row CCKS batches took 0.25 s together against
  0.45 s one after the other).  On a GPU/TPU the device is the shared resource: one worker.
* Batches: windows are keyed by (beam size, constraint, input bucket); a worker takes the key
  whose oldest window has waited longest (no starvation), and decodes a batch of that key as
  soon as the batch the engine would form has no padding rows (`Engine.full`: e.g. one window
  for the 1-row program), or it has `max_batch` windows, or the oldest has waited `max_wait`
  seconds. How many windows the batch takes is the engine's choice among its compiled batch
  sizes (`Engine.take`): the queued windows are shared out among the idle workers (two idle
  workers and two queued windows: two 1-row batches side by side), then each share runs the
  size with the least measured time per window. Windows of different requests and different
  type lists share a batch (each row carries its own prompt).
* Off the event loop: decoding runs in the worker threads; a job's result is handed to its
  event loop with call_soon_threadsafe, so the server keeps accepting while batches run.
* Answers do not depend on the number of workers: a window's entities depend on its own
  input, its bucket and the batch SIZE (engine.py, "Batch-mates"), never on the thread.
* A job's windows may be decoded by several workers: merging their entities, counting the
  windows left and answering happen under the job's lock, so a job is answered exactly once.
* Cancellation: a job whose caller gave up (deadline) is marked; its windows still queued are
  dropped when reached, never decoded.
* Drain: `close()` stops accepting; the workers finish every queued window, then exit; close
  returns when all of them have.
* Errors: an exception while decoding a batch fails the jobs of that batch (500) and the worker
  goes on; no job is ever left without an answer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import threading
import time
from typing import Any, Callable, Optional

from punified_jax.serving import engine as engine_lib

logger = logging.getLogger(__name__)


class QueueFull(Exception):
  """The queue cannot take the request now; `retry_after` is a hint in whole seconds."""

  def __init__(self, retry_after: int, queued: int, capacity: int):
    super().__init__(f"the queue holds {queued} of {capacity} windows; retry in "
                     f"{retry_after} s")
    self.retry_after = retry_after


class ShuttingDown(Exception):
  """The server is draining and takes no new work."""


@dataclasses.dataclass
class Job:
  """One request on its way through the queue."""
  request: Any                                   # validation.ExtractRequest
  works: list[engine_lib.TextWork]
  loop: asyncio.AbstractEventLoop
  future: asyncio.Future
  remaining: int = 0
  cancelled: bool = False
  failed: bool = False
  # One per decoded window (trace.py), appended by the decoding threads; read once answered.
  traces: list = dataclasses.field(default_factory=list)
  # Guards works' entities, remaining, failed and traces: several workers may decode windows
  # of this job at once.
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def resolve(self, setter: Callable[[Any], None], value: Any) -> None:
    def apply():
      if not self.future.done():
        setter(value)
    self.loop.call_soon_threadsafe(apply)


@dataclasses.dataclass
class _Item:
  job: Job
  text_index: int
  window: Any
  arrival: float


class Batcher:
  """See the module docstring."""

  def __init__(self, engine: engine_lib.Engine, *, max_batch: int, max_wait: float,
               max_queue_windows: int, metrics=None, workers: int = 1):
    if not 1 <= max_batch <= engine.batch_size:
      raise ValueError(f"max_batch must be in 1..{engine.batch_size} (the compiled batch "
                       f"size), got {max_batch}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
      raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    self.engine = engine
    self.max_batch = max_batch
    self.max_wait = max_wait
    self.max_queue_windows = max_queue_windows
    self.metrics = metrics
    self.workers = workers
    # Guards everything below (queues, counters, the rate estimate).
    self._condition = threading.Condition()
    self._queues: dict[engine_lib.BatchKey, collections.deque[_Item]] = {}
    self._queued = 0
    self.submitted_jobs = 0  # jobs accepted so far (tests wait on it)
    self._accepting = True
    self._idle = 0           # workers waiting for a batch (in _take)
    self._busy = 0           # workers decoding
    self._windows_per_second = 0.0  # smoothed, all workers together, for Retry-After
    self._threads = [threading.Thread(target=self._run, name=f"punified-decode-{index}",
                                      daemon=True) for index in range(workers)]
    for thread in self._threads:
      thread.start()

  # -- producer side (event loop) --------------------------------------------------------------

  @property
  def queued_windows(self) -> int:
    return self._queued

  @property
  def busy_workers(self) -> int:
    return self._busy

  def submit(self, job: Job) -> None:
    """Queues every window of `job` (or none: QueueFull / ShuttingDown)."""
    items = [_Item(job, index, window, 0.0)
             for index, work in enumerate(job.works) for window in work.windows]
    job.remaining = len(items)
    if not items:  # empty or whitespace-only texts
      job.resolve(job.future.set_result, job)
      return
    with self._condition:
      if not self._accepting:
        raise ShuttingDown()
      if self._queued + len(items) > self.max_queue_windows and self._queued > 0:
        raise QueueFull(self._retry_after(), self._queued, self.max_queue_windows)
      now = time.monotonic()
      for item in items:
        item.arrival = now
        key = self.engine.key(job.request, item.window)
        self._queues.setdefault(key, collections.deque()).append(item)
      self._queued += len(items)
      self.submitted_jobs += 1
      self._set_gauges()
      # Every idle worker reconsiders: the windows may be shared out among them.
      self._condition.notify_all()

  def _retry_after(self) -> int:
    rate = self._windows_per_second or self.max_batch  # before any measurement: a guess
    return int(min(60, max(1, math.ceil(self._queued / rate))))

  def close(self, timeout: Optional[float] = None) -> None:
    """Stops accepting; waits until every queued window is decoded and every worker has
    exited (drain).  `timeout` bounds the whole wait."""
    with self._condition:
      self._accepting = False
      self._condition.notify_all()
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in self._threads:
      thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

  # -- worker side ---------------------------------------------------------------------------

  def _set_gauges(self) -> None:
    """(Under the lock.)"""
    if self.metrics is not None:
      self.metrics.queue_windows.set(self._queued)
      self.metrics.busy_workers.set(self._busy)

  def _take(self) -> Optional[tuple[engine_lib.BatchKey, list[_Item]]]:
    """The next batch (blocking), or None once closed and drained."""
    with self._condition:
      self._idle += 1
      try:
        batch = self._take_locked()
        if batch is not None:
          self._busy += 1
          self._set_gauges()
          if self._queues:  # more work: another idle worker may take it at once
            self._condition.notify()
        return batch
      finally:
        self._idle -= 1

  def _take_locked(self) -> Optional[tuple[engine_lib.BatchKey, list[_Item]]]:
    while True:
      for key in list(self._queues):  # drop cancelled work and empty queues
        queue = self._queues[key]
        while queue and queue[0].job.cancelled:
          queue.popleft()
          self._queued -= 1
        if not queue:
          del self._queues[key]
      self._set_gauges()
      if not self._queues:
        if not self._accepting:
          self._condition.notify_all()  # the other workers exit too
          return None
        self._condition.wait()
        continue
      key = min(self._queues, key=lambda k: self._queues[k][0].arrival)
      queue = self._queues[key]
      waited = time.monotonic() - queue[0].arrival
      available = min(len(queue), self.max_batch)
      if (len(queue) >= self.max_batch or waited >= self.max_wait or not self._accepting
          or self.engine.full(key, available, self._idle)):
        count = self.engine.take(key, available, self._idle)
        batch = []
        while queue and len(batch) < count:
          item = queue.popleft()
          self._queued -= 1
          if not item.job.cancelled:
            batch.append(item)
        if not queue:
          del self._queues[key]
        self._set_gauges()
        if batch:
          return key, batch
        continue
      self._condition.wait(self.max_wait - waited)

  def _run(self) -> None:
    while True:
      taken = self._take()
      if taken is None:
        return
      key, batch = taken
      try:
        self._decode(key, batch)
      finally:
        with self._condition:
          self._busy -= 1
          self._set_gauges()

  def _decode(self, key: engine_lib.BatchKey, batch: list[_Item]) -> None:
    """Decodes one batch and hands each window's entities to its job (answering the jobs
    whose last window this was), or fails the batch's jobs."""
    started = time.monotonic()
    waits = [started - item.arrival for item in batch]
    try:
      results, traces = self.engine.decode(key, [item.window for item in batch])
    except Exception as error:  # pylint: disable=broad-except
      logger.exception("decoding a batch of %d windows failed", len(batch))
      for job in {id(item.job): item.job for item in batch}.values():
        with job.lock:
          job.failed = True
          job.cancelled = True  # its other windows are not worth decoding
        job.resolve(job.future.set_exception, RuntimeError(f"decoding failed: {error}"))
      return
    elapsed = time.monotonic() - started
    with self._condition:
      # All workers together: this batch's rate times the workers decoding now.
      rate = len(batch) / max(elapsed, 1e-6) * max(1, self._busy)
      self._windows_per_second = (rate if not self._windows_per_second
                                  else 0.8 * self._windows_per_second + 0.2 * rate)
    if self.metrics is not None:  # prometheus_client objects are thread-safe
      self.metrics.batch_windows.observe(len(batch))
      self.metrics.batches.labels(str(self.engine.rows_for(len(batch)))).inc()
      self.metrics.decode_seconds.observe(elapsed)
      self.metrics.windows.inc(len(batch))
    for index, (item, entities) in enumerate(zip(batch, results)):
      job = item.job
      with job.lock:
        if index < len(traces):
          traces[index].queue_seconds = waits[index]
          job.traces.append(traces[index])
        engine_lib.merge(job.works[item.text_index], entities)
        job.remaining -= 1
        answer = job.remaining == 0 and not job.failed
      if answer:
        job.resolve(job.future.set_result, job)
