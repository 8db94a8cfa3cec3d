"""Replicas behind one endpoint on Ray Serve (the optional `ray` extra).

Each replica is the same Starlette app as `serve` (engine, dynamic batcher, limits, metrics,
demo page), built inside the replica with its own model (one model per replica; give each
replica a device with `ray_actor_options`). The replica warms up (compiles every bucket)
before its constructor returns, so Ray Serve routes to it only once it is ready; Ray Serve's
proxy spreads requests over the replicas and replaces one that dies.

    python -m punified_jax serve --model_dir M --ray_replicas 2      # or, from Python:
    from punified_jax.serving import ray_serve
    ray_serve.run(model_dir="M", num_replicas=2, port=8000)
"""

from __future__ import annotations

import os
from typing import Any, Optional


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


def deployment(serve_args: dict[str, Any], *, num_replicas: int = 2,
               num_cpus_per_replica: float = 1.0, max_ongoing_requests: int = 256):
  """A bound Ray Serve application of `num_replicas` replicas of the service."""
  from ray import serve  # pylint: disable=g-import-not-at-top

  @serve.deployment(name="punified_ner", num_replicas=num_replicas,
                    ray_actor_options={"num_cpus": num_cpus_per_replica},
                    max_ongoing_requests=max_ongoing_requests,
                    health_check_period_s=5, health_check_timeout_s=30)
  @serve.ingress()
  class NerReplica:
    """One replica: one model, one batcher."""

    def __init__(self, options: dict[str, Any]):
      self.options = options

    def __serve_build_asgi_app__(self):
      return build_app(self.options)

  return NerReplica.bind(serve_args)


def run(*, model_dir: str, num_replicas: int = 2, host: str = "127.0.0.1", port: int = 8000,
        address: Optional[str] = None, num_cpus_per_replica: float = 1.0,
        blocking: bool = False, **serve_args: Any):
  """Starts (or joins) Ray, deploys the replicas at http://host:port/ and returns the handle;
  blocking=True waits until SIGTERM/SIGINT, then shuts Serve down."""
  import ray  # pylint: disable=g-import-not-at-top
  from ray import serve  # pylint: disable=g-import-not-at-top
  if not ray.is_initialized():
    ray.init(address=address, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
  serve.start(http_options={"host": host, "port": port})
  application = deployment({"model_dir": model_dir, **serve_args}, num_replicas=num_replicas,
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
