"""Prometheus metrics of the service (prometheus_client, on a registry of its own so several
apps in one process, e.g. tests, do not collide)."""

from __future__ import annotations

import gc
import time

import prometheus_client as prom

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
  """requests by status, latency and batch-size histograms, queue depth, texts/characters."""

  def __init__(self, batch_size: int):
    self.registry = prom.CollectorRegistry()
    registry = self.registry
    self.requests = prom.Counter("punified_requests", "HTTP requests to /v1/extract by status",
                                 ["status"], registry=registry)
    self.latency = prom.Histogram("punified_request_latency_seconds",
                                  "time from receiving a /v1/extract request to its answer",
                                  buckets=LATENCY_BUCKETS, registry=registry)
    self.batch_windows = prom.Histogram(
        "punified_batch_windows", "real (non-padding) windows per decoding batch",
        buckets=tuple(range(1, batch_size + 1)), registry=registry)
    self.batches = prom.Counter("punified_batches",
                                "decoding batches by compiled batch size (rows, padding included)",
                                ["rows"], registry=registry)
    self.decode_seconds = prom.Histogram("punified_batch_decode_seconds",
                                         "time to decode one batch", buckets=LATENCY_BUCKETS,
                                         registry=registry)
    self.queue_windows = prom.Gauge("punified_queue_windows",
                                    "windows waiting to be decoded", registry=registry)
    self.busy_workers = prom.Gauge("punified_decode_workers_busy",
                                   "decoding threads decoding a batch now", registry=registry)
    self.workers = prom.Gauge("punified_decode_workers", "decoding threads (serve "
                              "--decode_workers)", registry=registry)
    self.in_flight = prom.Gauge("punified_requests_in_flight",
                                "/v1/extract requests being answered", registry=registry)
    self.texts = prom.Counter("punified_texts", "texts processed", registry=registry)
    self.characters = prom.Counter("punified_characters", "characters of the texts processed",
                                   registry=registry)
    self.windows = prom.Counter("punified_windows", "model windows decoded", registry=registry)
    self.ready = prom.Gauge("punified_ready", "1 once warm-up has compiled every bucket",
                            registry=registry)

    self.gc_pauses = prom.Histogram(
        "punified_gc_pause_seconds", "Python garbage-collection pauses (the whole process "
        "stops: event loop and decoding threads) by generation",
        ["generation"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
        registry=registry)
    self._gc_started = None

  def _on_gc(self, phase: str, info: dict) -> None:
    if phase == "start":
      self._gc_started = time.perf_counter()
    elif self._gc_started is not None:
      self.gc_pauses.labels(str(info.get("generation"))).observe(
          time.perf_counter() - self._gc_started)
      self._gc_started = None

  def watch_gc(self, on: bool = True) -> None:
    """Starts (or stops) timing every garbage collection of the process."""
    if on and self._on_gc not in gc.callbacks:
      gc.callbacks.append(self._on_gc)
    elif not on and self._on_gc in gc.callbacks:
      gc.callbacks.remove(self._on_gc)

  def render(self) -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text exposition."""
    return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
