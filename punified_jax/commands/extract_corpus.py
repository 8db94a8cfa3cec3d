"""`python -m punified_jax extract_corpus`: entities for a whole corpus, in resumable shards.

  python -m punified_jax extract_corpus --model_dir runs/main/joint --input docs.jsonl \
      --output out/ --types 地点,组织 [--shard_docs 1000] [--ray [--ray_actors 2]]

Input: JSON lines, each {"text": ..., "id": ...} (id optional; "types"/"dataset" per line
override the flags), exactly what `extract` reads. Output: `DIR/shard-00000.jsonl`, ... one
line per input line of that shard (the `extract` answer, or its error object
{"line": N, "field", "error"} with N the line number in the whole input), plus
`DIR/progress.json`. A shard file is written atomically once complete (storage layer: local or
gs://), so rerunning the same command skips finished shards and redoes only the missing ones.
Every line passes the same validator as the service (bounded cost per document).

--ray runs the same shards on Ray Data: `map_batches` over the shard list with an actor pool,
one model per actor (loaded once, reused for every shard it gets); `--ray_address` joins a
cluster, otherwise a local Ray instance is started. Exit code: 0, or 3 when some lines were
answered with errors (as `extract`).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from typing import Any, Optional

from punified_jax import request_validation as validation
from punified_jax import storage
from punified_jax.commands import extract as extract_command

HELP = "extract entities from a JSON-lines corpus into resumable shards (optionally on Ray Data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model_dir", required=True, help="a run directory")
  parser.add_argument("--input", required=True, help="JSON lines: {\"text\": ..., \"id\": ...}")
  parser.add_argument("--output", required=True, help="directory of output shards")
  parser.add_argument("--types", default=None, help="comma-separated entity type names")
  parser.add_argument("--dataset", default=None, help="all types of this dataset")
  parser.add_argument("--shard_docs", type=int, default=1000, help="input lines per shard")
  parser.add_argument("--beam_size", type=int, default=4)
  parser.add_argument("--batch_size", type=int, default=16, help="windows per decoding batch")
  parser.add_argument("--checkpoint", default="auto")
  parser.add_argument("--max_text_chars", type=int, default=validation.Limits().max_text_chars)
  parser.add_argument("--max_windows", type=int, default=validation.Limits().max_windows)
  parser.add_argument("--max_oov_chars", type=int, default=validation.Limits().max_oov_chars)
  extract_command.add_grammar_rule_arguments(parser)
  extract_command.add_decode_threads_argument(parser)
  parser.add_argument("--ray", action="store_true", help="run the shards on Ray Data")
  parser.add_argument("--ray_address", default=None, help="Ray cluster address (default: local)")
  parser.add_argument("--ray_actors", type=int, default=2, help="model actors (one model each)")
  parser.add_argument("--ray_cpus_per_actor", type=float, default=1.0)


@dataclasses.dataclass(frozen=True)
class Shard:
  index: int
  first_line: int      # 1-based line number of its first line in the input
  start: int           # byte range in the input
  end: int
  lines: int

  @property
  def name(self) -> str:
    return f"shard-{self.index:05d}.jsonl"


def plan_shards(path: str, shard_docs: int) -> list[Shard]:
  """One pass over the input: byte ranges of every `shard_docs` lines."""
  shards, start, position, lines = [], 0, 0, 0
  with storage.open_file(path, "rb") as f:
    for raw in f:
      position += len(raw)
      lines += 1
      if lines % shard_docs == 0:
        shards.append(Shard(len(shards), lines - shard_docs + 1, start, position, shard_docs))
        start = position
  if position > start:
    first = (lines // shard_docs) * shard_docs + 1
    shards.append(Shard(len(shards), first, start, position, lines - first + 1))
  return shards


def read_shard(path: str, shard: Shard) -> list[bytes]:
  with storage.open_file(path, "rb") as f:
    f.seek(shard.start)
    return f.read(shard.end - shard.start).splitlines()


@dataclasses.dataclass(frozen=True)
class JobOptions:
  """Everything a worker needs to build its extractor and check lines (picklable for Ray)."""
  model_dir: str
  input: str
  output: str
  types: Optional[tuple[str, ...]]
  dataset: Optional[str]
  beam_size: int
  batch_size: int
  checkpoint: str
  limits: validation.Limits
  forbid_repeats: bool = False
  follow_order: bool = False
  decode_threads: Optional[int] = None
  output_budget: Optional[float] = None  # None: the Extractor's default
  end_at_repeat: Optional[int] = None  # None: the Extractor's default
  search: Optional[str] = None  # None: the Extractor's default


def load_extractor(options: JobOptions):
  from punified_jax import inference  # pylint: disable=g-import-not-at-top
  from punified_jax import xla_cache  # pylint: disable=g-import-not-at-top
  xla_cache.enable_persistent_compilation_cache()
  return inference.Extractor.load(options.model_dir, checkpoint=options.checkpoint,
                                  beam_size=options.beam_size, batch_size=options.batch_size,
                                  forbid_repeats=options.forbid_repeats,
                                  follow_order=options.follow_order,
                                  decode_threads=options.decode_threads,
                                  **({} if options.output_budget is None
                                     else {"output_budget": options.output_budget}),
                                  **({} if options.end_at_repeat is None
                                     else {"end_at_repeat": options.end_at_repeat}),
                                  **({} if options.search is None else {"search": options.search}))


def process_shard(extractor, options: JobOptions, shard: Shard) -> dict[str, int]:
  """Extracts one shard and writes its output file atomically; returns its counts."""
  lines = read_shard(options.input, shard)
  out = io.StringIO()
  failed = extract_command.process_lines(
      extractor, lines, out, default_types=list(options.types) if options.types else None,
      default_dataset=options.dataset, chunk_lines=max(1, options.batch_size * 4),
      limits=options.limits, first_line=shard.first_line, quiet=True)
  storage.write_text_atomic(storage.join(options.output, shard.name), out.getvalue())
  return {"shard": shard.index, "docs": len(lines), "failed": failed}


class Progress:
  """A progress line on stderr (docs, rate, ETA) and progress.json in the output."""

  def __init__(self, output: str, total_docs: int, done_docs: int):
    self.output, self.total, self.done = output, total_docs, done_docs
    self.failed = 0
    self.started = time.monotonic()
    self.session_docs = 0

  def update(self, result: dict[str, int]) -> None:
    self.done += result["docs"]
    self.session_docs += result["docs"]
    self.failed += result["failed"]
    rate = self.session_docs / max(1e-6, time.monotonic() - self.started)
    eta = (self.total - self.done) / rate if rate else float("inf")
    print(f"[extract_corpus] {self.done}/{self.total} docs ({100 * self.done / max(1, self.total):.1f}%)"
          f" {rate:.1f} docs/s, ETA {eta:.0f} s, {self.failed} failed lines", file=sys.stderr,
          flush=True)
    storage.write_json_atomic(storage.join(self.output, "progress.json"),
                              {"docs_done": self.done, "docs_total": self.total,
                               "failed_lines_this_run": self.failed,
                               "docs_per_second": rate})


def run_local(options: JobOptions, shards: list[Shard], progress: Progress) -> None:
  extractor = load_extractor(options)
  for shard in shards:
    progress.update(process_shard(extractor, options, shard))


class _ShardActor:
  """Ray Data actor: one model, loaded once, for every shard batch it is given."""

  def __init__(self, options: JobOptions):
    self.options = options
    self.extractor = load_extractor(options)

  def __call__(self, batch: dict[str, Any]) -> dict[str, list[int]]:
    results = {"shard": [], "docs": [], "failed": []}
    for values in zip(*(batch[field.name] for field in dataclasses.fields(Shard))):
      shard = Shard(*(int(value) for value in values))
      result = process_shard(self.extractor, self.options, shard)
      for key in results:
        results[key].append(result[key])
    return results


def run_ray(options: JobOptions, shards: list[Shard], progress: Progress, *, address, actors,
            cpus_per_actor) -> None:
  import ray  # pylint: disable=g-import-not-at-top
  if not ray.is_initialized():
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
  dataset = ray.data.from_items([dataclasses.asdict(shard) for shard in shards])
  results = dataset.map_batches(_ShardActor, fn_constructor_kwargs={"options": options},
                                batch_size=1, concurrency=actors, num_cpus=cpus_per_actor,
                                batch_format="numpy")
  for row in results.iter_rows():
    progress.update({key: int(row[key]) for key in ("shard", "docs", "failed")})


def run(args: argparse.Namespace) -> int:
  if (args.types is None) == (args.dataset is None):
    print("error: give --types or --dataset (one of them)", file=sys.stderr)
    return 2
  if args.shard_docs < 1:
    print("error: --shard_docs must be >= 1", file=sys.stderr)
    return 2
  if not storage.exists(args.input):
    print(f"error: --input {args.input}: not found", file=sys.stderr)
    return 2
  limits = dataclasses.replace(validation.Limits(), max_total_chars=None,
                               max_text_chars=args.max_text_chars or None,
                               max_windows=args.max_windows or None,
                               max_oov_chars=args.max_oov_chars or None)
  types = tuple(extract_command._split_types(args.types)) if args.types else None  # pylint: disable=protected-access
  options = JobOptions(args.model_dir, args.input, args.output, types, args.dataset,
                       args.beam_size, args.batch_size, args.checkpoint, limits,
                       args.forbid_repeats, args.follow_order, args.decode_threads,
                       args.output_budget, args.end_at_repeat, args.search)
  storage.makedirs(args.output)
  shards = plan_shards(args.input, args.shard_docs)
  existing = set(storage.listdir(args.output))
  todo = [shard for shard in shards if shard.name not in existing]
  total_docs = sum(shard.lines for shard in shards)
  done_docs = sum(shard.lines for shard in shards if shard.name in existing)
  print(f"[extract_corpus] {len(shards)} shards, {len(shards) - len(todo)} already done, "
        f"{len(todo)} to do{' on Ray Data' if args.ray else ''}", file=sys.stderr, flush=True)
  progress = Progress(args.output, total_docs, done_docs)
  if todo:
    if args.ray:
      run_ray(options, todo, progress, address=args.ray_address, actors=args.ray_actors,
              cpus_per_actor=args.ray_cpus_per_actor)
    else:
      run_local(options, todo, progress)
  return extract_command.EXIT_SOME_LINES_FAILED if progress.failed else extract_command.EXIT_OK
