"""Replicas behind one endpoint on Ray Serve (the optional `ray` extra).

    HTTP --> Ray Serve proxy --> punified_router (R replicas) --handle--> punified_ner (N replicas)

Each `punified_ner` replica is the same Starlette app as `serve` (engine, dynamic batcher,
limits, metrics, demo page), built inside the replica with its own model (one model per
replica; give each replica a device with `ray_actor_options`).  The replica warms up (compiles
every bucket) before its constructor returns, so Serve routes to it only once it is ready.

Why a router in front: when a replica dies (killed, out of memory, its node lost) the requests
in flight on it fail inside Ray, and with the replicas as Serve's HTTP ingress those callers got
500 from Serve's proxy.  `FailoverRouter` is the ingress instead: it forwards each HTTP request
through a deployment handle to a replica (`NerReplica.forward` runs it through the replica's
app in-process, so the answer is byte for byte what `serve` would send), and when the replica
dies under it (`ray.exceptions.RayActorError`: ActorDiedError, ActorUnavailableError) it retries
ONCE (Serve's handle router marks the dead replica and picks another); if that fails too, or no
replica answers within the deadline, the caller gets 503 with Retry-After, never 500 or a hang.
Retrying is safe: an extraction request has no side effects (the same text gives the same
answer).  The router does no model work (num_cpus 0); it is one more process, not a bottleneck
at the request rates one CPU model serves.  `router_replicas` (`--ray_router_replicas`) runs
more than one, so that no single router process stands between the proxy and the replicas;
the proxy spreads requests over them.

    python -m punified_jax serve --model_dir M --ray_replicas 2      # or, from Python:
    from punified_jax.serving import ray_serve
    ray_serve.run(model_dir="M", num_replicas=2, port=8000)
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Optional

logger = logging.getLogger(__name__)

REPLICA_NAME = "punified_ner"
ROUTER_NAME = "punified_router"


def build_app(serve_args: dict[str, Any]):
  """The replica's ASGI app, warmed up. `serve_args`: the `serve` command's options."""
  import argparse  # pylint: disable=g-import-not-at-top
  from punified_jax.serving import options  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  options.add_arguments(parser)
  args = parser.parse_args(["--model_dir", serve_args["model_dir"]])
  for key, value in serve_args.items():
    setattr(args, key, value)
  app = options.build_app(args)
  app.state.service.warm_up()  # before the replica reports itself started
  if not app.state.service.ready.is_set():
    raise RuntimeError(f"warm-up failed: {app.state.service.warm_up_error}")
  return app


async def call_asgi(app, method: str, path: str, query: bytes,
                    headers: list[tuple[bytes, bytes]],
                    body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
  """Runs one HTTP request through an ASGI app in this process: (status, headers, body)."""
  scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
           "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
           "query_string": query, "root_path": "", "headers": headers,
           "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 80), "state": {}}
  delivered = False
  never = asyncio.get_running_loop().create_future()

  async def receive():
    nonlocal delivered
    if not delivered:
      delivered = True
      return {"type": "http.request", "body": body, "more_body": False}
    await never  # the client never disconnects; the app stops listening once it answered
    return {"type": "http.disconnect"}

  status, response_headers, chunks = 500, [], []

  async def send(message):
    nonlocal status, response_headers
    if message["type"] == "http.response.start":
      status = message["status"]
      response_headers = list(message.get("headers", []))
    elif message["type"] == "http.response.body":
      chunks.append(message.get("body", b""))

  await app(scope, receive, send)
  return status, response_headers, b"".join(chunks)


def _dead_replica_errors() -> tuple[type, ...]:
  """The exceptions that mean "the replica died or cannot be reached" (ray 2.x)."""
  from ray import exceptions  # pylint: disable=g-import-not-at-top
  return (exceptions.RayActorError,)  # ActorDiedError and ActorUnavailableError subclass it


def _unavailable(message: str):
  from starlette.responses import JSONResponse  # pylint: disable=g-import-not-at-top
  return JSONResponse({"error": {"status": 503, "field": None, "message": message}},
                      status_code=503, headers={"Retry-After": "1"})


class FailoverRouter:
  """The ingress: forwards each HTTP request to a replica through `replicas` (a deployment
  handle whose `forward` is `NerReplica.forward`), retrying once on another replica when the
  first dies, else 503 (module docstring).  `deadline`: seconds to wait for one attempt."""

  def __init__(self, replicas, deadline: float = 60.0, max_body_bytes: Optional[int] = None):
    self.replicas = replicas
    self.deadline = deadline
    self.max_body_bytes = max_body_bytes
    self.failovers = 0  # requests retried after a dead replica (logged)

  async def __call__(self, request):
    from starlette.responses import JSONResponse  # pylint: disable=g-import-not-at-top
    body = b""
    async for chunk in request.stream():
      body += chunk
      if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
        return JSONResponse({"error": {"status": 413, "field": "body", "message":
                                       f"more than the limit of {self.max_body_bytes} bytes"}},
                            status_code=413)
    return await self.forward(request.method, request.url.path,
                              request.url.query.encode("latin-1"), list(request.headers.raw),
                              body)

  async def forward(self, method: str, path: str, query: bytes,
                    headers: list[tuple[bytes, bytes]], body: bytes):
    from starlette.responses import Response  # pylint: disable=g-import-not-at-top
    dead = _dead_replica_errors()
    for attempt in range(2):
      try:
        status, response_headers, content = await asyncio.wait_for(
            self._send(method, path, query, headers, body), self.deadline)
      except dead as error:
        logger.warning("a replica died under %s %s (attempt %d): %s", method, path,
                       attempt + 1, type(error).__name__)
        if attempt == 0:
          self.failovers += 1
        continue
      except asyncio.TimeoutError:
        return _unavailable(f"no replica answered within {self.deadline:g} s; retry later")
      response = Response(content, status_code=status)
      response.raw_headers = [(name, value) for name, value in response_headers]
      if attempt:  # tell the caller (and the load test) that this answer was failed over
        response.raw_headers.append((b"x-punified-failover", b"1"))
      return response
    return _unavailable("the replica serving this request died and so did the retry; "
                        "retry later")

  async def _send(self, method, path, query, headers, body):
    return await self.replicas.forward.remote(method, path, query, headers, body)


class NerReplica:
  """One replica: one model, one batcher, the `serve` app (module docstring)."""

  def __init__(self, options: dict[str, Any]):
    self.app = build_app(options)

  async def forward(self, method: str, path: str, query: bytes,
                    headers: list[tuple[bytes, bytes]], body: bytes):
    return await call_asgi(self.app, method, path, query, headers, body)


def deployment(serve_args: dict[str, Any], *, num_replicas: int = 2, router_replicas: int = 1,
               num_cpus_per_replica: float = 1.0, max_ongoing_requests: int = 256):
  """The bound Ray Serve application: `router_replicas` routers in front of `num_replicas`
  replicas."""
  from ray import serve  # pylint: disable=g-import-not-at-top
  from punified_jax import request_validation as validation  # pylint: disable=g-import-not-at-top
  replica = serve.deployment(
      NerReplica, name=REPLICA_NAME, num_replicas=num_replicas,
      ray_actor_options={"num_cpus": num_cpus_per_replica},
      max_ongoing_requests=max_ongoing_requests, health_check_period_s=5,
      health_check_timeout_s=30)
  if router_replicas < 1 or num_replicas < 1:
    raise ValueError(f"router_replicas and num_replicas must be >= 1, got {router_replicas}, "
                     f"{num_replicas}")
  router = serve.deployment(FailoverRouter, name=ROUTER_NAME, num_replicas=router_replicas,
                            ray_actor_options={"num_cpus": 0},
                            max_ongoing_requests=max_ongoing_requests * num_replicas)
  # The router's deadline per attempt: the replica's own deadline (504) plus a margin.
  deadline = float(serve_args.get("request_timeout") or 30.0) + 30.0
  max_body = serve_args.get("max_body_bytes", validation.Limits().max_body_bytes) or None
  return router.bind(replica.bind(serve_args), deadline=deadline, max_body_bytes=max_body)


def run(*, model_dir: str, num_replicas: int = 2, router_replicas: int = 1,
        host: str = "127.0.0.1", port: int = 8000,
        address: Optional[str] = None, num_cpus_per_replica: float = 1.0,
        blocking: bool = False, **serve_args: Any):
  """Starts (or joins) Ray, deploys the router and replicas at http://host:port/ and returns
  the handle; blocking=True waits until SIGTERM/SIGINT, then shuts Serve down."""
  import ray  # pylint: disable=g-import-not-at-top
  from ray import serve  # pylint: disable=g-import-not-at-top
  if not ray.is_initialized():
    ray.init(address=address, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
  serve.start(http_options={"host": host, "port": port})
  application = deployment({"model_dir": model_dir, **serve_args}, num_replicas=num_replicas,
                           router_replicas=router_replicas,
                           num_cpus_per_replica=num_cpus_per_replica)
  handle = serve.run(application, name="punified", route_prefix="/")
  if blocking:
    import signal  # pylint: disable=g-import-not-at-top
    import threading  # pylint: disable=g-import-not-at-top
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
      signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
  return handle


def replica_actor_names() -> list[tuple[str, str]]:
  """(name, namespace) of the live model replicas' actors (tests and the load test kill one)."""
  import ray  # pylint: disable=g-import-not-at-top
  return [(actor["name"], actor["namespace"])
          for actor in ray.util.list_named_actors(all_namespaces=True)
          if REPLICA_NAME in actor["name"]]

