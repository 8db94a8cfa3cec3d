"""`python -m punified_jax serve --model_dir M`: the HTTP service (punified_jax/serving/).

Loads the model once, compiles every length bucket in the background (`/ready` answers 503 until
then), and serves `POST /v1/extract`, `/health`, `/ready`, `/info`, `/metrics`, `/openapi.json`,
`/docs` and the demo page at `/`. SIGTERM or Ctrl-C: stop accepting, answer what is in flight,
exit 0. Listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

# The service's options and app factory live in punified_jax/serving/options.py (Ray Serve
# replicas build their app from the same options); the command adds only `run`.
from punified_jax.serving.options import add_arguments, build_app, limits_from_args  # pylint: disable=unused-import

HELP = "serve on-demand extraction over HTTP (dynamic batching, limits, metrics, demo page)"


def run(args: argparse.Namespace) -> int:
  import uvicorn  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=args.log_level.upper(),
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  from punified_jax.serving import options as options_lib  # pylint: disable=g-import-not-at-top
  largest = max(options_lib.batch_sizes(args))
  if args.max_batch is not None and not 1 <= args.max_batch <= largest:
    print(f"error: --max_batch must be in 1..{largest} (the largest batch size)",
          file=sys.stderr)
    return 2
  if args.output_limit_factor < 0:
    print("error: --output_limit_factor must be >= 0", file=sys.stderr)
    return 2
  if args.ray_replicas:
    from punified_jax.serving import ray_serve  # pylint: disable=g-import-not-at-top
    options = {key: value for key, value in vars(args).items()
               if not key.startswith("ray_") and key not in ("host", "port", "log_level")}
    if args.ray_router_replicas < 1:
      print("error: --ray_router_replicas must be >= 1", file=sys.stderr)
      return 2
    ray_serve.run(num_replicas=args.ray_replicas, router_replicas=args.ray_router_replicas,
                  host=args.host, port=args.port, address=args.ray_address, blocking=True,
                  **options)
    return 0
  try:
    app = build_app(args)
  except (OSError, ValueError, TypeError) as error:
    print(f"error: --model_dir {args.model_dir}: {error}", file=sys.stderr)
    return 2
  # uvicorn handles SIGTERM/SIGINT: stop accepting, let in-flight requests finish (the app's
  # lifespan then drains the batch queue), exit 0.
  config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                          timeout_graceful_shutdown=max(5.0, args.request_timeout + 5),
                          access_log=False)
  server = uvicorn.Server(config)
  # uvicorn re-raises the signal it caught once it has shut down, to the handler that was
  # installed before it; a no-op there makes a graceful shutdown exit 0 (not -SIGTERM).
  received = []
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda number, _frame: received.append(number))
  server.run()
  if received:
    logging.getLogger(__name__).info("shut down on signal %s after draining", received[-1])
  return 0
