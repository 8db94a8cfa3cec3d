"""`python -m punified_jax extract`: entities with character offsets from a trained model, as JSON.

One text:

  python -m punified_jax extract --model_dir /runs/joint --types 地点,组织 --text "张三去了北京大学。"
  -> {"text": "张三去了北京大学。", "entities": [{"type": "组织", "text": "北京大学", "start": 4,
      "end": 8, "score": 0.91}]}

JSON lines on stdin (without --text), one output line per input line, in order:

  {"text": "...", "types": ["地点", "组织"]}     or   {"text": "...", "dataset": "resume"}
  -> {"text": "...", "entities": [...]}

A line may also carry an "id" (a string of at most 256 characters, an integer or null), echoed
back.  A line without "types" and "dataset" uses --types / --dataset.  Every line goes through
punified_jax/request_validation.py (the validator the HTTP service and the Python API use): a
bad line (invalid UTF-8, not JSON, nested too deeply, a number of more than 20 characters, not
an object, an unknown or repeated field, a missing or non-string "text", a lone surrogate
anywhere, bad "types"/"dataset", a text beyond --max_text_chars, more than --max_oov_chars
characters outside the vocabulary or more than --max_windows model windows) produces
{"line": N, "field": "...", "error": "..."} in its place (and the same message on stderr), with
echoed values cut short and escaped; the other lines are still processed.  Blank lines are
skipped.  Lines are read as bytes in chunks of --chunk_lines and decoded together (batched and
bucketed).

Exit codes: 0 every line answered with entities; 3 some line was answered with an error object
(the others were processed); 2 bad arguments or an unusable model directory; 1 an unexpected
error (a bug: the traceback is on stderr, lines already answered stay written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Iterable, Optional, TextIO

from punified_jax import request_validation as validation
from punified_jax import output_limits
from punified_jax import searches

HELP = "extract requested entity types with character offsets (JSON) from a trained model"

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_SOME_LINES_FAILED = 0, 1, 2, 3


PARTITIONING_PRESETS = ("data_parallel", "fsdp", "tensor_parallel", "2d")


def add_grammar_rule_arguments(parser: argparse.ArgumentParser) -> None:
  """--forbid_repeats / --follow_order / --end_at_repeat / --output_budget: the constraint's
  rules (extract, extract_corpus and serve; constraints module docstring, BENCHMARKS.md 2e, 2n
  and 2o); --search: how the constrained search runs (punified_jax/searches.py)."""
  parser.add_argument("--search", choices=(searches.AUTO,) + searches.SEARCHES,
                      default=searches.AUTO,
                      help="constrained search: 'allowed' step by step over the tokens the "
                           "grammar allows; 'fast' feeds forced tokens and drafted guesses to "
                           "the decoder in chunks (0.14-0.36 decoder calls per token); "
                           "'stepwise' over the whole vocabulary; 'auto' (default): 'fast' at "
                           "greedy, 'allowed' with beams (BENCHMARKS 2r). The same entities "
                           "with each")
  parser.add_argument("--forbid_repeats", action="store_true",
                      help="constrained decoding may not close an item already written")
  parser.add_argument("--follow_order", action="store_true",
                      help="constrained decoding keeps the training targets' item order (types "
                           "in prompt order, NULL alone, spans in text order): no runaway "
                           "outputs, but it cost the bench model 1.6-3 macro F1 (BENCHMARKS 2e)")
  parser.add_argument("--end_at_repeat", type=_repeat_count,
                      default=output_limits.END_AT_REPEAT, metavar="N",
                      help="constrained decoding ends an output once it has closed N items it "
                           "had written before (a loop); 0 = never (default %(default)s: no "
                           "gold target repeats an item; BENCHMARKS 2o)")
  parser.add_argument("--output_budget", type=_budget_factor,
                      default=output_limits.OUTPUT_BUDGET_FACTOR,
                      help="constrained decoding ends an output (EOS) after its all-NULL target "
                           "+ this many tokens per text token + 8; 0 = only "
                           "--max_decode_length (default %(default)s: 14 of the 120,548 gold "
                           "targets of the real datasets are longer; BENCHMARKS 2n)")


def _repeat_count(value: str) -> int:
  """--end_at_repeat: an int >= 0."""
  try:
    count = int(value)
    output_limits.check_end_at_repeat(count)
  except ValueError as error:
    raise argparse.ArgumentTypeError(f"{value!r}: {error}") from None
  return count


def _budget_factor(value: str) -> float:
  """--output_budget: a factor output_budget.check accepts."""
  try:
    factor = float(value)
    output_limits.check(factor, output_limits.OUTPUT_BUDGET_SLACK)
  except ValueError as error:
    raise argparse.ArgumentTypeError(f"{value!r}: {error}") from None
  return factor


def add_decode_threads_argument(parser: argparse.ArgumentParser) -> None:
  """--decode_threads: decoding batches run at once (extract, extract_corpus)."""
  parser.add_argument("--decode_threads", type=int, default=None,
                      help="decoding batches run at once, in threads (default: the CPU cores, "
                           "up to 4, on CPU; 1 on accelerators): XLA:CPU runs one batch's search "
                           "on about one core; results do not depend on it")


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
  add_grammar_rule_arguments(parser)
  add_decode_threads_argument(parser)
  parser.add_argument("--checkpoint", default="auto",
                      help="auto (best if kept, else latest), best, latest, or a checkpoint path")
  parser.add_argument("--batch_size", type=int, default=8, help="windows per decoding batch")
  # Literal names keep jax out of argument parsing; the test checks them against
  # partitioning.PRESET_LAYOUTS.
  parser.add_argument("--partitioning", choices=PARTITIONING_PRESETS, default="data_parallel",
                      help="how the local devices share the decoding: the batch over all of them "
                           "(data_parallel, the default) or the parameters sharded as the gin "
                           "preset of that name lays them out (fsdp, 2d, tensor_parallel) for a "
                           "model that does not fit one device")
  parser.add_argument("--max_input_length", type=int, default=None,
                      help="window length in tokens (default: the run's inputs length)")
  parser.add_argument("--max_decode_length", type=int, default=None,
                      help="output length limit (default: the run's targets length)")
  parser.add_argument("--chunk_lines", type=int, default=64,
                      help="stdin lines decoded together")
  defaults = validation.Limits()
  parser.add_argument("--max_line_bytes", type=int, default=defaults.max_body_bytes,
                      help="longest input line in bytes (0 = unlimited)")
  parser.add_argument("--max_text_chars", type=int, default=defaults.max_text_chars,
                      help="longest text of a line in characters (longer texts are windowed, "
                           "never cut, up to this; 0 = unlimited)")
  parser.add_argument("--max_windows", type=int, default=defaults.max_windows,
                      help="decode budget of a line: model windows its text may need "
                           "(0 = unlimited)")
  parser.add_argument("--max_oov_chars", type=int, default=defaults.max_oov_chars,
                      help="characters outside the model's vocabulary a line may hold "
                           "(0 = unlimited)")
  parser.add_argument("--stats", action="store_true",
                      help="print the extractor's counters as JSON on stderr at the end")


def limits_from_args(args: argparse.Namespace) -> validation.Limits:
  """The per-line limits: the service's defaults with the CLI's overrides (0 = unlimited)."""
  return dataclasses.replace(
      validation.Limits(), max_body_bytes=args.max_line_bytes or None,
      max_text_chars=args.max_text_chars or None,
      max_total_chars=None, max_windows=args.max_windows or None,
      max_oov_chars=args.max_oov_chars or None)


def _split_types(value: Optional[str]) -> Optional[list[str]]:
  if value is None:
    return None
  return [name.strip() for name in value.split(",")]


def _error(line: int, field: str, message: str, out: TextIO, quiet: bool = False) -> None:
  out.write(json.dumps({"line": line, "field": field, "error": message},
                       ensure_ascii=False) + "\n")
  if not quiet:
    print(f"error: line {line}: {field}: {message}", file=sys.stderr)


class LineChecker:
  """Turns one raw input line into a validated request (or an InvalidRequest)."""

  def __init__(self, extractor, limits: validation.Limits, default_types, default_dataset):
    self.extractor = extractor
    self.limits = limits
    self.default_types = default_types
    self.default_dataset = default_dataset
    self.coverage = (validation.VocabularyCoverage(extractor.vocabulary)
                     if limits.max_oov_chars is not None else None)

  def check(self, raw: bytes | str) -> validation.LineRequest:
    value = validation.parse_json(raw, self.limits, field="json")
    request = validation.validate_line_request(
        value, default_types=self.default_types, default_dataset=self.default_dataset,
        known_types=self.extractor.known_types,
        allow_unseen_types=self.extractor.allow_unseen_types, limits=self.limits)
    windows = None
    if self.limits.max_windows is not None:
      try:
        windows = [len(self.extractor.window_ranges(request.text, request.types))]
      except ValueError as error:  # the prompt leaves no room for text
        raise validation.InvalidRequest("types", str(error)) from None
    validation.check_cost([request.text], windows, self.coverage, self.limits,
                          fields=["text"])
    return request


def _chunks(lines: Iterable[bytes | str], size: int, first_line: int = 1):
  chunk = []
  for number, raw in enumerate(lines, start=first_line):
    chunk.append((number, raw))
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _extract_isolating_errors(extractor, requests: list[validation.LineRequest]) -> list[Any]:
  """Entities per request, or the exception that request alone raised (e.g. a prompt too long
  for the model): one failing request must not fail its whole chunk."""
  pairs = [(request.text, request.types) for request in requests]
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


def process_lines(extractor, lines: Iterable[bytes | str], out: TextIO, *,
                  default_types: Optional[list[str]] = None,
                  default_dataset: Optional[str] = None, chunk_lines: int = 64,
                  limits: Optional[validation.Limits] = None, first_line: int = 1,
                  quiet: bool = False) -> int:
  """Answers JSON-line requests (bytes or str lines); returns the number of failed lines.
  first_line: the number of the first line (error objects name lines by number); quiet: no
  error lines on stderr."""
  checker = LineChecker(extractor, limits or validation.Limits(), default_types,
                        default_dataset)
  failed = 0
  for chunk in _chunks(lines, max(1, chunk_lines), first_line):
    answers: list[tuple[int, Any]] = []  # (line number, LineRequest or InvalidRequest)
    for number, raw in chunk:
      if not raw.strip():
        continue
      try:
        answers.append((number, checker.check(raw)))
      except validation.InvalidRequest as error:
        answers.append((number, error))
    valid = [item for _, item in answers if isinstance(item, validation.LineRequest)]
    results = iter(_extract_isolating_errors(extractor, valid))
    for number, item in answers:
      if isinstance(item, validation.LineRequest):
        result = next(results)
        if isinstance(result, Exception):
          item = validation.InvalidRequest("types", validation.escape(str(result), 400))
      if isinstance(item, validation.InvalidRequest):
        failed += 1
        _error(number, item.field, item.message, out, quiet)
        continue
      answer: dict[str, Any] = {}
      if item.has_id:
        answer["id"] = item.id
      answer["text"] = item.text
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
    return EXIT_USAGE
  try:
    extractor = inference.Extractor.load(
        args.model_dir, checkpoint=args.checkpoint, beam_size=args.beam_size,
        constrained=not args.unconstrained, allow_unseen_types=args.allow_unseen_types,
        batch_size=args.batch_size, max_input_length=args.max_input_length,
        max_decode_length=args.max_decode_length, stopping=args.stopping,
        partitioning=args.partitioning, forbid_repeats=args.forbid_repeats,
        follow_order=args.follow_order, decode_threads=args.decode_threads,
        output_budget=args.output_budget, end_at_repeat=args.end_at_repeat, search=args.search)
  except (OSError, ValueError, TypeError) as error:
    print(f"error: --model_dir {args.model_dir}: {error}", file=sys.stderr)
    return EXIT_USAGE
  limits = limits_from_args(args)
  types_flag = "--dataset" if args.dataset is not None else "--types"
  if types is not None or args.dataset is not None:
    try:  # check the defaults once, before reading any line
      validation.resolve_types(types, args.dataset, known_types=extractor.known_types,
                               allow_unseen_types=extractor.allow_unseen_types, limits=limits)
    except validation.InvalidRequest as error:
      print(f"error: {types_flag}: {error}", file=sys.stderr)
      return EXIT_USAGE

  if args.text is not None:
    if types is None and args.dataset is None:
      print(f"error: {types_flag}: no entity types requested: give --types or --dataset",
            file=sys.stderr)
      return EXIT_USAGE
    try:
      request = LineChecker(extractor, limits, types, args.dataset).check(
          json.dumps({"text": validation.check_string(args.text, "--text")}))
    except validation.InvalidRequest as error:
      field = "--text" if error.field in ("text", "json") else error.field
      print(f"error: {field}: {error}", file=sys.stderr)
      return EXIT_USAGE
    entities = extractor.extract_requests([(request.text, request.types)])[0]
    print(json.dumps({"text": args.text, "entities": entities}, ensure_ascii=False))
    status = EXIT_OK
  else:
    stdin = getattr(sys.stdin, "buffer", sys.stdin)  # bytes: invalid UTF-8 is one bad line
    failed = process_lines(extractor, stdin, sys.stdout, default_types=types,
                           default_dataset=args.dataset, chunk_lines=args.chunk_lines,
                           limits=limits)
    if failed:
      print(f"{failed} line(s) failed", file=sys.stderr)
    status = EXIT_SOME_LINES_FAILED if failed else EXIT_OK
  if args.stats:
    print(json.dumps({"stats": extractor.stats}, ensure_ascii=False), file=sys.stderr)
  return status
