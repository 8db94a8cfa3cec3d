"""`python -m punified_jax extract`: entities with character offsets from a trained model, as JSON.

One text:

  python -m punified_jax extract --model_dir /runs/joint --types 地点,组织 --text "张三去了北京大学。"
  -> {"text": "张三去了北京大学。", "entities": [{"type": "组织", "text": "北京大学", "start": 4,
      "end": 8, "score": 0.91}]}

JSON lines on stdin (without --text), one output line per input line, in order:

  {"text": "...", "types": ["地点", "组织"]}     or   {"text": "...", "dataset": "resume"}
  -> {"text": "...", "entities": [...]}

A line may also carry an "id" (any JSON value), echoed back.  A line without "types" and
"dataset" uses --types / --dataset.  A bad line (not JSON, not an object, a missing or
non-string "text", bad "types"/"dataset", an unknown field) produces
{"line": N, "field": "...", "error": "..."} in its place (and the same message on stderr); the
other lines are still processed and the exit code is 1 at the end.  Blank lines are skipped.
Lines are read in chunks of --chunk_lines and decoded together (batched and bucketed).

Exit codes: 0 all lines succeeded, 1 some line failed, 2 bad arguments or an unusable model
directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, Optional, TextIO

HELP = "extract requested entity types with character offsets (JSON) from a trained model"

_LINE_FIELDS = ("text", "types", "dataset", "id")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model_dir", required=True,
                      help="a run directory (punified_model.json + checkpoints) or a from_t5x "
                           "output")
  parser.add_argument("--types", default=None,
                      help="comma-separated entity type names, e.g. 地点,组织")
  parser.add_argument("--dataset", default=None,
                      help="request all types of this dataset (e.g. resume) instead of --types")
  parser.add_argument("--text", default=None,
                      help="the text to analyse; without it, JSON lines are read from stdin")
  parser.add_argument("--beam_size", type=int, default=4, help="beam width (1 = greedy)")
  parser.add_argument("--unconstrained", action="store_true",
                      help="decode without the copy constraint (types and spans may then be "
                           "invented; such spans are counted and not returned)")
  parser.add_argument("--stopping", choices=("best", "all", "early"), default="best",
                      help="beam-search stopping rule: best (default: stop once the best "
                      "hypothesis is settled), all (t5x's search, same result, slower), early "
                      "(Hugging Face's early_stopping=True)")
  parser.add_argument("--allow_unseen_types", action="store_true",
                      help="accept type names the model was not trained on (zero-shot)")
  parser.add_argument("--checkpoint", default="auto",
                      help="auto (best if kept, else latest), best, latest, or a checkpoint path")
  parser.add_argument("--batch_size", type=int, default=8, help="windows per decoding batch")
  parser.add_argument("--max_input_length", type=int, default=None,
                      help="window length in tokens (default: the run's inputs length)")
  parser.add_argument("--max_decode_length", type=int, default=None,
                      help="output length limit (default: the run's targets length)")
  parser.add_argument("--chunk_lines", type=int, default=64,
                      help="stdin lines decoded together")
  parser.add_argument("--stats", action="store_true",
                      help="print the extractor's counters as JSON on stderr at the end")


def _split_types(value: Optional[str]) -> Optional[list[str]]:
  if value is None:
    return None
  return [name.strip() for name in value.split(",")]


def _error(line: int, field: str, message: str, out: TextIO) -> None:
  out.write(json.dumps({"line": line, "field": field, "error": message},
                       ensure_ascii=False) + "\n")
  print(f"error: line {line}: {field}: {message}", file=sys.stderr)


def _request(extractor, raw: str, number: int, default_types, default_dataset):
  """(request dict, None) for a valid line, else (None, (field, message))."""
  try:
    value = json.loads(raw)
  except json.JSONDecodeError as error:
    return None, ("json", f"not valid JSON: {error.msg} at column {error.colno}")
  if not isinstance(value, dict):
    return None, ("json", f"expected a JSON object, got {type(value).__name__}")
  unknown = sorted(set(value) - set(_LINE_FIELDS))
  if unknown:
    return None, (unknown[0], f"unknown field {unknown[0]!r} (fields: "
                              f"{', '.join(_LINE_FIELDS)})")
  if "text" not in value:
    return None, ("text", "missing")
  if not isinstance(value["text"], str):
    return None, ("text", f"must be a string, got {type(value['text']).__name__}")
  types, dataset = value.get("types"), value.get("dataset")
  if "types" not in value and "dataset" not in value:
    types, dataset = default_types, default_dataset
  field = "dataset" if "dataset" in value and "types" not in value else "types"
  try:
    names = extractor.resolve_types(types, dataset)
  except (TypeError, ValueError) as error:
    return None, (field, str(error))
  request = {"text": value["text"], "types": names}
  if "id" in value:
    request["id"] = value["id"]
  return request, None


def _chunks(lines: Iterable[str], size: int):
  chunk = []
  for number, raw in enumerate(lines, start=1):
    chunk.append((number, raw))
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _extract_isolating_errors(extractor, requests: list[dict]) -> list[Any]:
  """Entities per request, or the exception that request alone raised (e.g. a prompt too long
  for the model): one failing request must not fail its whole chunk."""
  pairs = [(r["text"], r["types"]) for r in requests]
  try:
    return list(extractor.extract_requests(pairs))
  except (TypeError, ValueError):
    results: list[Any] = []
    for pair in pairs:
      try:
        results.extend(extractor.extract_requests([pair]))
      except (TypeError, ValueError) as error:
        results.append(error)
    return results


def process_lines(extractor, lines: Iterable[str], out: TextIO, *,
                  default_types: Optional[list[str]] = None,
                  default_dataset: Optional[str] = None, chunk_lines: int = 64) -> int:
  """Answers JSON-line requests; returns the number of failed lines."""
  failed = 0
  for chunk in _chunks(lines, max(1, chunk_lines)):
    answers: list[tuple[int, Optional[dict], Optional[tuple[str, str]]]] = []
    for number, raw in chunk:
      if not raw.strip():
        continue
      request, error = _request(extractor, raw, number, default_types, default_dataset)
      answers.append((number, request, error))
    valid = [request for _, request, _ in answers if request is not None]
    results = _extract_isolating_errors(extractor, valid)
    for number, request, error in answers:
      if error is None:
        result = results.pop(0)
        if isinstance(result, Exception):
          error = ("types", str(result))
      if error is not None:
        failed += 1
        _error(number, error[0], error[1], out)
        continue
      answer: dict[str, Any] = {}
      if "id" in request:
        answer["id"] = request["id"]
      answer["text"] = request["text"]
      answer["entities"] = result
      out.write(json.dumps(answer, ensure_ascii=False) + "\n")
    out.flush()
  return failed


def run(args: argparse.Namespace) -> int:
  from punified_jax import inference  # pylint: disable=g-import-not-at-top
  from punified_jax import xla_cache  # pylint: disable=g-import-not-at-top
  xla_cache.enable_persistent_compilation_cache()
  types = _split_types(args.types)
  if args.types is not None and args.dataset is not None:
    print("error: give --types or --dataset, not both", file=sys.stderr)
    return 2
  try:
    extractor = inference.Extractor.load(
        args.model_dir, checkpoint=args.checkpoint, beam_size=args.beam_size,
        constrained=not args.unconstrained, allow_unseen_types=args.allow_unseen_types,
        batch_size=args.batch_size, max_input_length=args.max_input_length,
        max_decode_length=args.max_decode_length, stopping=args.stopping)
  except (OSError, ValueError, TypeError) as error:
    print(f"error: --model_dir {args.model_dir}: {error}", file=sys.stderr)
    return 2

  if args.text is not None:
    try:
      entities = extractor.extract([args.text], types=types, dataset=args.dataset)[0]
    except (TypeError, ValueError) as error:
      field = "--dataset" if args.dataset is not None else "--types"
      print(f"error: {field}: {error}", file=sys.stderr)
      return 2
    print(json.dumps({"text": args.text, "entities": entities}, ensure_ascii=False))
    status = 0
  else:
    if types is not None or args.dataset is not None:
      try:  # check the defaults once, before reading any line
        extractor.resolve_types(types, args.dataset)
      except (TypeError, ValueError) as error:
        print(f"error: {'--dataset' if args.dataset else '--types'}: {error}", file=sys.stderr)
        return 2
    failed = process_lines(extractor, sys.stdin, sys.stdout, default_types=types,
                           default_dataset=args.dataset, chunk_lines=args.chunk_lines)
    if failed:
      print(f"{failed} line(s) failed", file=sys.stderr)
    status = 1 if failed else 0
  if args.stats:
    print(json.dumps({"stats": extractor.stats}, ensure_ascii=False), file=sys.stderr)
  return status
