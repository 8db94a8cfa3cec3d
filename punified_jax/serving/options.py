"""The `serve` command's options and the app they build, shared by the command and by each
Ray Serve replica (which rebuilds its app from the same options in its own process)."""

from __future__ import annotations

import argparse
import dataclasses

from punified_jax import request_validation as validation
from punified_jax.commands import extract as extract_command

# Request limits that are also command-line options (0 on the command line = unlimited).
LIMIT_FIELDS = ("max_body_bytes", "max_texts", "max_text_chars", "max_total_chars", "max_types",
                "max_oov_chars", "max_windows")


def _sizes(value: str) -> list[int]:
  try:
    sizes = [int(part) for part in value.split(",") if part.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}")
  if not sizes or min(sizes) < 1:
    raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {value!r}")
  return sizes


def batch_sizes(args: argparse.Namespace) -> list[int]:
  """The compiled batch sizes: --batch_sizes, else 1, 4, 16, ... below --batch_size and
  --batch_size itself (a lone request runs 1 row; a full queue runs --batch_size rows)."""
  if args.batch_sizes:
    return sorted(set(args.batch_sizes))
  sizes, size = [], 1
  while size < args.batch_size:
    sizes.append(size)
    size *= 4
  return sizes + [args.batch_size]


def _positive(value: str) -> int:
  try:
    number = int(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}")
  if number < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value!r}")
  return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
  limits = validation.Limits()
  parser.add_argument("--model_dir", required=True, help="a run directory or a from_t5x output")
  parser.add_argument("--checkpoint", default="auto",
                      help="auto (best if kept, else latest), best, latest, or a path")
  parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
  parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
  parser.add_argument("--beam_size", type=int, default=4, help="default beam width")
  parser.add_argument("--beam_sizes", type=_sizes, default=[],
                      help="other beam widths a request may ask for (each is compiled at "
                           "start-up), e.g. 1,4")
  parser.add_argument("--allow_unconstrained", action="store_true",
                      help="let requests turn the copy constraint off (compiles those too)")
  parser.add_argument("--allow_unseen_types", action="store_true",
                      help="accept type names the model was not trained on (zero-shot)")
  parser.add_argument("--stopping", choices=("best", "all", "early"), default="best",
                      help="beam-search stopping rule (see `extract --help`)")
  extract_command.add_grammar_rule_arguments(parser)
  parser.add_argument("--batch_size", type=int, default=16,
                      help="the largest decoding batch, in rows (windows)")
  parser.add_argument("--batch_sizes", type=_sizes, default=[],
                      help="the compiled batch sizes, e.g. 1,4,16 (default: 1, 4, 16, ... "
                           "below --batch_size, and --batch_size); each batch runs the size "
                           "that fits the queued windows best; one value: one fixed shape")
  parser.add_argument("--max_batch", type=int, default=None,
                      help="real windows per batch, <= the largest batch size (default: it)")
  parser.add_argument("--output_limit_factor", type=float, default=2.25,
                      help="output limit of a window = this x its input bucket length (capped "
                           "at --max_decode_length), so a runaway output holds its batch "
                           "less long; 2.25 keeps every dev target of the joint datasets; "
                           "0 = max_decode_length for all")
  parser.add_argument("--max_wait_ms", type=float, default=10.0,
                      help="how long the oldest queued window may wait for batch-mates")
  parser.add_argument("--decode_workers", type=_positive, default=None,
                      help="threads that decode batches concurrently, taking them from the "
                           "same queue (default: the decoder's concurrent_decodes: on a CPU "
                           "mesh of this process the cores it may use, at most 4, since "
                           "XLA:CPU runs one search on about one core; on GPU/TPU or a mesh "
                           "spanning processes 1, the device being busy with one program); "
                           "answers do not depend on it")
  parser.add_argument("--max_queue_windows", type=int, default=512,
                      help="windows queued before requests get 429")
  parser.add_argument("--request_timeout", type=float, default=30.0,
                      help="per-request deadline in seconds (504 after it)")
  parser.add_argument("--max_input_length", type=int, default=None,
                      help="window length in tokens (default: the run's inputs length)")
  parser.add_argument("--max_decode_length", type=int, default=None,
                      help="output length limit (default: the run's targets length)")
  for name in LIMIT_FIELDS:
    parser.add_argument(f"--{name}", type=int, default=getattr(limits, name),
                        help=f"request limit (default {getattr(limits, name)}; 0 = unlimited)")
  parser.add_argument("--no_warm_up", action="store_true",
                      help="ready at once; compile each shape on first use")
  parser.add_argument("--no_gc_freeze", action="store_true",
                      help="do not gc.freeze() the objects alive after warm-up (A/B of GC "
                           "pauses; see punified_gc_pause_seconds in /metrics)")
  parser.add_argument("--log_level", default="info")
  parser.add_argument("--ray_replicas", type=int, default=0,
                      help="serve N replicas (one model each) behind one endpoint on Ray Serve "
                           "(needs the `ray` extra)")
  parser.add_argument("--ray_router_replicas", type=int, default=1,
                      help="with --ray_replicas: replicas of the failover router in front of "
                           "them (no model, no CPU reserved; 2 = no single router process)")
  parser.add_argument("--ray_address", default=None,
                      help="join this Ray cluster (default: start a local Ray instance)")


def limits_from_args(args: argparse.Namespace) -> validation.Limits:
  overrides = {name: getattr(args, name) or None for name in LIMIT_FIELDS}
  return dataclasses.replace(validation.Limits(), **overrides)


def build_app(args: argparse.Namespace):
  """Loads the model and returns the ASGI app (also used by tests and Ray Serve)."""
  from punified_jax import inference  # pylint: disable=g-import-not-at-top
  from punified_jax import xla_cache  # pylint: disable=g-import-not-at-top
  from punified_jax.serving import app as app_lib  # pylint: disable=g-import-not-at-top
  from punified_jax.serving import engine as engine_lib  # pylint: disable=g-import-not-at-top
  xla_cache.enable_persistent_compilation_cache()
  sizes = batch_sizes(args)
  extractor = inference.Extractor.load(
      args.model_dir, checkpoint=args.checkpoint, beam_size=args.beam_size,
      allow_unseen_types=args.allow_unseen_types, batch_size=max(sizes),
      max_input_length=args.max_input_length, max_decode_length=args.max_decode_length,
      stopping=args.stopping, forbid_repeats=args.forbid_repeats,
      follow_order=args.follow_order, output_budget=args.output_budget,
      end_at_repeat=args.end_at_repeat, search=args.search)
  engine = engine_lib.Engine(extractor, beam_sizes=args.beam_sizes or [args.beam_size],
                             allow_unconstrained=args.allow_unconstrained,
                             limits=limits_from_args(args), batch_sizes=sizes,
                             output_limit_factor=args.output_limit_factor)
  settings = app_lib.Settings(max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000,
                              max_queue_windows=args.max_queue_windows,
                              request_timeout=args.request_timeout,
                              decode_workers=(args.decode_workers
                                              or extractor.decoder.concurrent_decodes()),
                              warm_up=not args.no_warm_up, model_dir=args.model_dir,
                              gc_freeze=not args.no_gc_freeze)
  return app_lib.create_app(engine, settings)
