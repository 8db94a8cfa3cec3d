"""The ASGI app: `POST /v1/extract`, `/health`, `/ready`, `/info`, `/metrics`, OpenAPI, demo.

Starlette (on uvicorn) rather than FastAPI: the service has one JSON endpoint whose validation
must be OURS (request_validation, shared with the CLI and the Python API: bounded errors that
name `texts[3]`, limits before parsing, surrogate checks), so FastAPI's pydantic layer would be
a second, different validator (its 422s echo the input back) plus a large dependency; Starlette
is the small routing/ASGI core FastAPI itself is built on. The OpenAPI document is written here.

Status codes: 200; 413 (body, texts, characters, types or windows over a limit); 422 (malformed,
naming the field); 429 + Retry-After (queue full); 503 (warming up or draining); 504 (the
request's deadline passed; its queued windows are dropped); 500 (a bug: logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import threading
import time
from typing import Any, Optional

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from punified_jax import entity_types
from punified_jax import request_validation as validation
from punified_jax.serving import batcher as batcher_lib
from punified_jax.serving import engine as engine_lib
from punified_jax.serving import metrics as metrics_lib
from punified_jax.serving import openapi
from punified_jax.serving import trace as trace_lib

logger = logging.getLogger(__name__)
STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
VERSION = "0.1.0"


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the service batches and bounds work (the `serve` command's flags)."""
  max_batch: Optional[int] = None      # windows per batch (default: the extractor's batch)
  max_wait: float = 0.01               # seconds the oldest window may wait for batch-mates
  max_queue_windows: int = 512         # queued windows before 429
  request_timeout: float = 30.0        # per-request deadline (504)
  decode_workers: int = 1              # threads decoding batches concurrently (batcher.py)
  warm_up: bool = True                 # compile every bucket before /ready
  gc_freeze: bool = True               # gc.freeze() after warm-up (see Service.warm_up)
  model_dir: Optional[str] = None      # shown by /info


class Service:
  """State shared by the routes: engine, batcher, metrics, readiness."""

  def __init__(self, engine: engine_lib.Engine, settings: Settings):
    self.engine = engine
    self.settings = settings
    self.metrics = metrics_lib.ServiceMetrics(engine.batch_size)
    self.batcher = batcher_lib.Batcher(
        engine, max_batch=settings.max_batch or engine.batch_size, max_wait=settings.max_wait,
        max_queue_windows=settings.max_queue_windows, metrics=self.metrics,
        workers=settings.decode_workers)
    self.metrics.workers.set(settings.decode_workers)
    self.ready = threading.Event()
    self.warm_up_error: Optional[str] = None
    self.warm_up_seconds: Optional[float] = None
    self.draining = False

  def warm_up(self) -> None:
    """Compiles every (beam size, constraint, bucket, batch size) program the service can
    use."""
    started = time.monotonic()
    try:
      if self.settings.warm_up:
        self.engine.warm_up()
    except Exception as error:  # pylint: disable=broad-except
      logger.exception("warm-up failed")
      self.warm_up_error = f"{type(error).__name__}: {error}"
      return
    self.warm_up_seconds = time.monotonic() - started
    if self.settings.gc_freeze:
      # Everything alive after warm-up (model, compiled programs, tokenizer) lives as long as
      # the process: frozen, later full collections do not walk it again (shorter pauses of
      # the whole process, event loop and decoding threads alike; punified_gc_pause_seconds).
      gc.collect()
      gc.freeze()
    self.metrics.watch_gc()
    self.metrics.ready.set(1)
    self.ready.set()

  def info(self) -> dict[str, Any]:
    extractor = self.engine.extractor
    config = dataclasses.asdict(extractor.model.config)
    known = set(extractor.known_types)
    return {
        "version": VERSION,
        "model": {"model_dir": self.settings.model_dir,
                  "checkpoint": extractor.checkpoint_path,
                  "config": config,
                  "vocab_size": int(extractor.vocabulary.vocab_size)},
        "decoding": {"beam_sizes": list(self.engine.beam_sizes),
                     "default_beam_size": self.engine.default_beam_size,
                     "constrained": True,
                     "allow_unconstrained": self.engine.allow_unconstrained,
                     "stopping": extractor.stopping,
                     "forbid_repeats": extractor.forbid_repeats,
                     "follow_order": extractor.follow_order,
                     "output_budget": extractor.output_budget,
                     "end_at_repeat": extractor.end_at_repeat,
                     "search": extractor.search,
                     "max_input_length": extractor.max_input_length,
                     "max_decode_length": extractor.max_decode_length,
                     "buckets": list(self.engine.buckets),
                     "batch_size": self.engine.batch_size,
                     "batch_sizes": list(self.engine.batch_sizes),
                     "output_limits": {str(bucket): self.engine.output_limit(bucket)
                                       for bucket in self.engine.buckets},
                     "max_batch": self.batcher.max_batch,
                     "max_wait_seconds": self.settings.max_wait,
                     "decode_workers": self.batcher.workers},
        "types": list(extractor.known_types),
        "allow_unseen_types": extractor.allow_unseen_types,
        "datasets": {name: list(entity_types.prompt_names(name))
                     for name in entity_types.DATASETS
                     if set(entity_types.prompt_names(name)) <= known},
        "limits": {**self.engine.limits.to_json(),
                   "max_queue_windows": self.settings.max_queue_windows,
                   "request_timeout_seconds": self.settings.request_timeout},
        "ready": self.ready.is_set(),
        "process": os.getpid(),
        "warm_up_seconds": self.warm_up_seconds,
    }


def _error(status: int, field: Optional[str], message: str,
           headers: Optional[dict[str, str]] = None) -> JSONResponse:
  return JSONResponse({"error": {"status": status, "field": field, "message": message}},
                      status_code=status, headers=headers)


async def _read_body(request: Request, limit: Optional[int]) -> bytes:
  """The request body, refusing (413) beyond `limit` bytes without reading the rest."""
  declared = request.headers.get("content-length")
  if limit is not None and declared and declared.isdigit() and int(declared) > limit:
    raise validation.InvalidRequest("body", f"{int(declared)} bytes, more than the limit "
                                    f"{limit}", status=413)
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if limit is not None and size > limit:
      raise validation.InvalidRequest("body", f"more than the limit of {limit} bytes",
                                      status=413)
    chunks.append(chunk)
  return b"".join(chunks)


def create_app(engine: engine_lib.Engine, settings: Settings = Settings()) -> Starlette:
  """The Starlette app; warm-up starts with the app's lifespan, in a background thread."""
  service = Service(engine, settings)

  async def extract(request: Request) -> Response:
    started = time.monotonic()
    service.metrics.in_flight.inc()
    try:
      response = await _extract(request, started)
    except Exception:  # pylint: disable=broad-except
      logger.exception("unexpected error in /v1/extract")
      response = _error(500, None, "internal error (logged)")
    finally:
      service.metrics.in_flight.dec()
    service.metrics.requests.labels(str(response.status_code)).inc()
    service.metrics.latency.observe(time.monotonic() - started)
    return response

  async def _extract(request: Request, started: float) -> Response:
    if service.draining:
      return _error(503, None, "the server is shutting down", {"Retry-After": "1"})
    if not service.ready.is_set():
      return _error(503, None, service.warm_up_error or "warming up: compiling the length "
                    "buckets (see /ready)", {"Retry-After": "5"})
    try:
      body = await _read_body(request, engine.limits.max_body_bytes)
      parsed = validation.parse_json(body, engine.limits)
      extract_request = engine.validate(parsed)
      read_done = time.monotonic()
      works = await anyio.to_thread.run_sync(engine.prepare, extract_request)
    except validation.InvalidRequest as error:
      return _error(error.status, error.field, error.message)
    request_trace = trace_lib.RequestTrace(read=read_done - started,
                                           encode=time.monotonic() - read_done)
    loop = asyncio.get_running_loop()
    job = batcher_lib.Job(extract_request, works, loop, loop.create_future())
    try:
      service.batcher.submit(job)
    except batcher_lib.QueueFull as error:
      return _error(429, None, str(error), {"Retry-After": str(error.retry_after)})
    except batcher_lib.ShuttingDown:
      return _error(503, None, "the server is shutting down", {"Retry-After": "1"})
    remaining = settings.request_timeout - (time.monotonic() - started)
    try:
      await asyncio.wait_for(asyncio.shield(job.future), max(0.0, remaining))
    except asyncio.TimeoutError:
      job.cancelled = True
      return _error(504, None, f"not answered within the {settings.request_timeout:g} s "
                    "deadline (the server is overloaded); its queued work was dropped")
    except RuntimeError as error:
      return _error(500, None, str(error))
    results = [engine_lib.text_result(text, work)
               for text, work in zip(extract_request.texts, job.works)]
    service.metrics.texts.inc(len(results))
    service.metrics.characters.inc(sum(len(text) for text in extract_request.texts))
    request_trace.windows = job.traces
    body = {"results": results, "types": list(extract_request.types),
            "beam_size": extract_request.beam_size, "constrained": extract_request.constrained}
    response = JSONResponse(body)
    response.headers.update(request_trace.headers(time.monotonic() - started))
    return response

  async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})

  async def ready(_: Request) -> Response:
    if service.ready.is_set() and not service.draining:
      return JSONResponse({"ready": True, "warm_up_seconds": service.warm_up_seconds})
    reason = ("draining" if service.draining else service.warm_up_error or "warming up")
    return JSONResponse({"ready": False, "reason": reason}, status_code=503)

  async def info(_: Request) -> Response:
    return JSONResponse(service.info())

  async def metrics(_: Request) -> Response:
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)

  async def openapi_json(_: Request) -> Response:
    return JSONResponse(openapi.document(service.info()))

  async def docs(_: Request) -> Response:
    return HTMLResponse(openapi.docs_page())

  async def index(_: Request) -> Response:
    return FileResponse(os.path.join(STATIC_DIR, "index.html"))

  @contextlib.asynccontextmanager
  async def lifespan(_: Starlette):
    if not service.ready.is_set():  # (Ray Serve replicas warm up before they start)
      threading.Thread(target=service.warm_up, name="punified-warm-up", daemon=True).start()
    try:
      yield
    finally:  # uvicorn got SIGTERM/SIGINT and closed its connections: drain the queue
      service.draining = True
      await anyio.to_thread.run_sync(service.batcher.close)
      service.metrics.watch_gc(False)
      logger.info("drained: every queued window was decoded")

  app = Starlette(routes=[
      Route("/", index),
      Route("/v1/extract", extract, methods=["POST"]),
      Route("/health", health),
      Route("/ready", ready),
      Route("/info", info),
      Route("/metrics", metrics),
      Route("/openapi.json", openapi_json),
      Route("/docs", docs),
      Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
  ], lifespan=lifespan)
  app.state.service = service
  return app
