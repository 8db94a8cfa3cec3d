"""On-demand entity extraction with character offsets: `Extractor`.

    extractor = Extractor.load("/runs/joint")
    extractor.extract(["张三昨天去了北京大学。"], types=["地点", "组织"])
    -> [[{"type": "组织", "text": "北京大学", "start": 6, "end": 10, "score": 0.93}]]

What it guarantees, for every input:
* `text == original[start:end]` for every entity: offsets index the caller's own string (Python
  str indices, end exclusive), never a normalised copy.
* With constrained decoding (the default, constraints.NerCopyConstraint) every type is one of
  the requested types and every span is a copy of the input text, so nothing is invented.
  Without it (constrained=False, for comparison) the parser only recognises requested types
  and a span that does not occur in the text is counted (`stats["not_located"]`) and logged,
  never guessed at.

Pipeline for one call:
1. Requests are validated (texts are strings; types given, known, writable) and each text is
   cut into WINDOWS that fit the model's input length together with the prompt (below).
2. Windows are encoded (`<entity>T1<entity>T2<text>` + window + EOS, as the training tasks do),
   sorted by length and partitioned into batches of least estimated cost (batch_plan: one long
   window no longer pads a batch of short ones; rows 1, 2, 4, ... batch_size, missing rows
   repeat the last window; on a CPU a short input is spread over at least 4 batches per
   decode thread: batch_plan.spread_rows), each padded to the bucket of its longest window (32, 48, 64, 96,
   ...: generate.input_buckets), so a bounded set of shapes compiles.  Beam search (greedy at
   beam_size=1) keeps the best beam.
3. Each output is parsed (parsing.parse_generation_details, with the requested types) and its
   (type, span) pairs are mapped to offsets with parsing.locate_mentions on the window's text:
   THE repeated-mention rule (longest span first; a mention takes every free occurrence of its
   text; see that function).  The rule applies per window: a mention the model names in one
   window is not looked for in other windows.
4. Entities of all windows of a text are shifted back to text offsets; an entity found twice
   (same type, start, end: overlapping windows) is kept once with its best score.

Windows (punified_jax.windows).  A text whose prompt + tokens + EOS fit `max_input_length` is
one window.  A longer text is split after sentence-ending characters (。！？!?；; and newlines)
and consecutive sentences are packed greedily into windows that fit.  A single sentence longer than a window is
cut into windows of the full length at token boundaries; consecutive cut windows overlap by a
quarter of a window so that an entity cut by one window boundary is whole in the next one (an
entity longer than the overlap can still be cut).  Windows holding only whitespace are skipped.

Long outputs.  A greedy batch runs until its longest row ends, and a model that loops on one
item runs to max_decode_length (BENCHMARKS.md 2e: one CLUENER dev sentence in 128 did, and
its batch of 32 then paid 256 steps instead of ~90).  So `extract` decodes each greedy batch
to a FIRST LIMIT, the shortest of the search's cache lengths (generate.cache_lengths: 64, 128,
..., max_decode_length) that holds every window's all-NULL target plus one token per text
token and EOS, and decodes only the windows that did not end there again, from the start, to
max_decode_length, in a batch of the fewest rows that holds them (`stats["redecoded"]`), at
once on the thread that decoded their batch, while the other threads' batches go on.  A
greedy row does not depend on the output limit or its batch-mates until it ends, so the
entities are the same as in one pass; the cost is the re-decoded rows' first steps.  Beam
search keeps one pass: its stopping bound depends on max_decode_length.  And with constrained
decoding every output also has a budget of its own (constraints module docstring, "Output
budget": the all-NULL target + `output_budget` x the window's text tokens + slack), so a short
window that loops ends after about its own length, not at max_decode_length.

Lossy vocabularies.  BERT's WordPiece decodes lower-cased and re-spaced text, so a decoded span
is first realigned to the window's own characters: its tokens are looked up as a contiguous run
of the window's text tokens (token offsets from vocab.encode_with_offsets), falling back to
parsing.align_span (case- and whitespace-insensitive).  The first matching run gives the
surface string, and locate_mentions then finds every occurrence of that surface: a text with
"Apple" and "APPLE" (both decoded "apple") gets the occurrences of the first one only.  Types
are parsed the way the vocabulary writes them ("Person" decodes as "person") and reported
with the requested name.  SentencePiece decoding is exact and spans are used as they are.

Score.  The search records each output token's log-probability under the model's own
(unconstrained) softmax as it goes (decoding.DecodeOutput.token_log_probs: what a
teacher-forced pass over the output gives, without running one).  An entity's score is
exp(mean log-prob of its item's tokens TYPE ":" SPAN ")"), i.e. the geometric-mean per-token
probability of naming this type, copying this span and ending it there, in [0, 1].  Several
occurrences of one mention share its score.  If the item's tokens cannot be found in the output
(should not happen), the mean over the whole output is used and `stats["score_fallback"]`
counts it.

Types.  `types` must be names the model knows: `model_info.extra["prompt_names"]` when the
training run recorded it, else every prompt name of entity_types.ALL_PROMPT_NAMES.  With
`allow_unseen_types=True` any other name (without the grammar characters ( ) : , or the
markers) is written into the prompt as is: the model has never been trained to find it, so
what comes back is its zero-shot guess, but the constraint still only lets it copy the
requested name and input text.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import logging
import math
import threading
from typing import Any, Iterable, Optional, Sequence

import jax
import numpy as np
import seqio

from punified_jax import batch_plan
from punified_jax import checkpoints as checkpoints_lib
from punified_jax import constraints as constraints_lib
from punified_jax import decoding as decoding_lib
from punified_jax import entity_scores
from punified_jax import entity_types
from punified_jax import generate
from punified_jax import model_info as model_info_lib
from punified_jax import output_reader
from punified_jax import prompts
from punified_jax import request_validation
from punified_jax import run_dir
from punified_jax import searches
from punified_jax import sharded_decoding
from punified_jax import vocab as vocab_lib
from punified_jax import windows as windows_lib
from punified_jax.model import T5Config, Transformer

logger = logging.getLogger(__name__)

# A greedy batch's first output limit holds its windows' all-NULL targets plus this many tokens
# per text token ("Long outputs" in the module docstring).
FIRST_PASS_TEXT_FACTOR = 1.0
# How windows are cut into decoding batches (Extractor's `batching`).
BATCHING = ("cost", "consecutive")
# Used when a model directory does not record its feature lengths (t5x conversions): the
# lengths of our gin run recipes.
DEFAULT_FEATURE_LENGTH = 512


# The windows of a request (punified_jax.windows), under the names this module always had.
Window = windows_lib.Window
_Window = Window  # the name the private methods below were written with
sentence_ends = windows_lib.sentence_ends
SENTENCE_END_CHARS = windows_lib.SENTENCE_END_CHARS


@dataclasses.dataclass(frozen=True)
class _DecodeSettings:
  """What one decode call uses (Extractor.decode_windows may override the Extractor's)."""
  beam_size: int
  constrained: bool
  rows: int                # the most rows of a decoding batch
  max_decode_length: int
  # Greedy only: decode each batch to a shorter first limit and re-decode the rows that did
  # not end there (module docstring, "Long outputs").
  first_pass: bool = False
  # "cost": batch_plan's partition; "consecutive": chunks of `rows` windows in `rows` rows.
  batching: str = "consecutive"


class _ThreadCounters:
  """Counters that threads update without a lock: each thread adds to its own Counter
  (`current`), and `total` sums them.  The Extractor's statistics are bumped from every
  thread that decodes (the service's decode workers call decode_windows at once), and
  `counter[key] += n` on one shared Counter could lose updates between threads."""

  def __init__(self):
    self._lock = threading.Lock()
    self._local = threading.local()
    self._all: list[collections.Counter] = []

  def current(self) -> collections.Counter:
    counter = getattr(self._local, "counter", None)
    if counter is None:
      counter = self._local.counter = collections.Counter()
      with self._lock:
        self._all.append(counter)
    return counter

  def total(self) -> collections.Counter:
    with self._lock:
      return sum((collections.Counter(dict(c)) for c in self._all), collections.Counter())

  def clear(self) -> None:
    with self._lock:
      for counter in self._all:
        counter.clear()


@functools.lru_cache(maxsize=None)
def _transformer(config: T5Config) -> Transformer:
  # One module per config, so jit caches keyed on the (identity-hashed) module are shared.
  return Transformer(config)


class Extractor:
  """Extracts the requested entity types from texts, with character offsets and scores.

  Args:
    model: a `model.Transformer` (or its T5Config).
    params: its parameters (unboxed tree).
    vocabulary: the seqio vocabulary the model was trained with.
    beam_size: beam width (1 = greedy).
    constrained: NerCopyConstraint decoding (types only from the request, spans only copies of
      the input); False decodes freely (for comparisons).
    allow_unseen_types: let type names the model does not know through (module docstring).
    batch_size: the most windows per decoding batch.
    batching: "cost" (default): batch_plan's batches (module docstring); "consecutive": chunks
      of batch_size windows in batch_size rows (the old plan).
    max_input_length: encoder length a window (prompt + text + EOS) must fit; also the largest
      bucket.
    max_decode_length: the output limit; an output cut there loses its unfinished last item
      (`stats["truncated"]`).
    alpha: length penalty of the beam search.
    stopping: the beam search's stopping rule (decoding.beam_search). "best" (default): stop
      once the best hypothesis is settled (exact for the one the Extractor uses, without
      waiting for the other beams); "all": t5x's search (the same best hypothesis, slower);
      "early": Hugging Face's early_stopping=True (stop when beam_size hypotheses have
      finished; can cut off a better, longer one).
    known_types: type names accepted without allow_unseen_types (default: every prompt name of
      the registry).
    partitioning: the devices and parameter layout of decoding (sharded_decoding.MeshDecoder):
      None = data-parallel over all of this process's devices (jax.local_devices(); parameters
      replicated), a preset name ('data_parallel', 'fsdp', 'tensor_parallel', '2d': parameters
      sharded by the same rules as training, for models that do not fit one device), a
      partitioning.Partitioner (any mesh, e.g. every host's devices) or a MeshDecoder.  The
      batch is split over the mesh's `data` axis: batch_size is rounded up to a multiple of it.
    first_pass: greedy `extract` decodes each batch to a first, shorter output limit and only
      the windows that did not end there again to max_decode_length (module docstring, "Long
      outputs"): the same entities, without a long output holding its whole batch.
    forbid_repeats, follow_order: the constraint's optional rules, off by default (constraints
      module docstring; BENCHMARKS.md 2e): no item closed twice / items in format_target's
      order (then no output runs to the length limit, but it cost the bench model F1).
    end_at_repeat: the constraint ends an output once it has closed this many items it had
      written before (constraints module docstring, "A repeat ends the output"; default
      constraints.END_AT_REPEAT, BENCHMARKS.md 2o); 0 = never.
    output_budget: the constraint's output budget factor (constraints module docstring: at
      most the all-NULL target + output_budget x text tokens + slack, `stats["budget_cut"]`
      counts outputs that reached it); 0 = none (only max_decode_length).
    search: the constrained search (punified_jax/searches.py): "auto" (default: "fast" at
      greedy, "allowed" at beam sizes > 1), "allowed", "stepwise", "fast"; the same entities.
    decode_threads: decoding batches run at once (threads); None: the decoder's
      `concurrent_decodes()` (sharded_decoding: the CPU cores on a process-local CPU mesh,
      else 1).  Results do not depend on it.
  """

  def __init__(self, model: Any, params: Any, vocabulary: Any, *, beam_size: int = 4,
               constrained: bool = True, allow_unseen_types: bool = False,
               batch_size: int = 8, max_input_length: int = DEFAULT_FEATURE_LENGTH,
               max_decode_length: int = DEFAULT_FEATURE_LENGTH, alpha: float = 0.6,
               stopping: str = "best", known_types: Optional[Sequence[str]] = None,
               partitioning: sharded_decoding.PartitioningArg = None,
               first_pass: bool = True, forbid_repeats: bool = False, follow_order: bool = False,
               batching: str = "cost", decode_threads: Optional[int] = None,
               output_budget: float = constraints_lib.OUTPUT_BUDGET_FACTOR,
               end_at_repeat: int = constraints_lib.END_AT_REPEAT,
               search: str = searches.AUTO):
    config = model if isinstance(model, T5Config) else getattr(model, "config", None)
    if not isinstance(config, T5Config):
      raise TypeError(f"model must be a model.Transformer or a T5Config, got "
                      f"{type(model).__name__}")
    for name, value, low in (("beam_size", beam_size, 1), ("batch_size", batch_size, 1),
                             ("max_input_length", max_input_length, 8),
                             ("max_decode_length", max_decode_length, 4)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    inner = getattr(vocabulary, "vocabulary", None)  # tasks' LazyVocabulary wraps the real one
    if isinstance(inner, seqio.Vocabulary):
      vocabulary = inner
    if vocabulary.vocab_size > config.vocab_size:
      raise ValueError(f"the vocabulary has {vocabulary.vocab_size} tokens but the model only "
                       f"{config.vocab_size}: not the vocabulary it was trained with")
    self.model = _transformer(config)
    self.decoder = sharded_decoding.MeshDecoder.create(partitioning)
    # None: an Extractor for request checking only (decoding would fail).
    self.params = None if params is None else self.decoder.place_params(params, config)
    self.vocabulary = vocabulary
    self.beam_size = int(beam_size)
    self.constrained = bool(constrained)
    self.allow_unseen_types = bool(allow_unseen_types)
    self.batch_size = self.decoder.padded_size(int(batch_size))
    if self.batch_size != batch_size:
      logger.info("extractor: batch_size %d rounded up to %d (a multiple of the %d-way data "
                  "axis)", batch_size, self.batch_size, self.decoder.data_size)
    self.max_input_length = int(max_input_length)
    self.max_decode_length = int(max_decode_length)
    self.alpha = float(alpha)
    decoding_lib.check_stopping(stopping)  # at construction, not at the first extract()
    self.stopping = stopping
    searches.check_search(search, allow_auto=True)
    self.search = search
    self.first_pass = bool(first_pass)
    if decode_threads is not None and (isinstance(decode_threads, bool) or not isinstance(
        decode_threads, (int, np.integer)) or decode_threads < 1):
      raise ValueError(f"decode_threads must be None or an int >= 1, got {decode_threads!r}")
    self.decode_threads = (self.decoder.concurrent_decodes() if decode_threads is None
                           else int(decode_threads))
    self.batching = _checked_batching(batching)
    self.known_types: tuple[str, ...] = tuple(known_types or entity_types.ALL_PROMPT_NAMES)
    self.buckets = generate.input_buckets(self.max_input_length)
    self.eos_id = int(vocabulary.eos_id)
    # Built even when unconstrained: it checks that the syntax tokens are single tokens, and
    # the parser-side token ids come from it.
    self._constraint = constraints_lib.NerCopyConstraint.from_vocabulary(
        vocabulary, forbid_repeats=forbid_repeats, follow_order=follow_order,
        budget_factor=output_budget, end_at_repeat=end_at_repeat)
    self.output_budget = self._constraint.budget_factor
    self.end_at_repeat = self._constraint.end_at_repeat  # 0 = off
    self.forbid_repeats, self.follow_order = bool(forbid_repeats), bool(follow_order)
    self._text_id = int(self._constraint.text_id)
    self._open_id = int(self._constraint.open_id)
    self._close_id = int(self._constraint.close_id)
    self._colon_id = int(self._constraint.colon_id)
    self._syntax_ids = (self._open_id, self._colon_id, self._close_id)
    # Greedy constrained outputs: log-probs only of the tokens entity scores read (_decode_rows).
    self._score_after_parse, self._kernel = True, None
    self._lossy = isinstance(vocabulary, vocab_lib.WordPieceVocabulary)
    self._reader = output_reader.OutputReader(vocabulary, self._syntax_ids, self._lossy)
    self._counters = _ThreadCounters()
    self._null_lengths: dict[tuple[str, ...], int] = {}
    self._prompts: dict[tuple[str, ...], list[int]] = {}
    self.checkpoint_path: Optional[str] = None

  # -- construction from a model directory ---------------------------------------------------

  @classmethod
  def load(cls, model_dir: str, *, checkpoint: str = "auto",
           max_input_length: Optional[int] = None, max_decode_length: Optional[int] = None,
           partitioning: sharded_decoding.PartitioningArg = None, **options: Any) -> "Extractor":
    """An Extractor for the model in `model_dir` (written by the trainer or from_t5x).

    Reads `punified_model.json` (model_info), the vocabulary copy and one parameter checkpoint,
    chosen by run_dir's rule: checkpoint="auto" (default) takes the best-by-mean-F1 checkpoint
    (`<model_dir>/best/`) when the run kept one, else the latest in `<model_dir>/checkpoints/`;
    "best" and "latest" insist on one of them; a step number; any other value is a checkpoint
    path (run, step or state dir).  `model_dir` may be local or gs://.
    max_input_length / max_decode_length default to the run's task feature lengths (512 when
    unrecorded).  `partitioning` and the `options` (beam_size, batch_size, ...) as in the
    constructor; the parameters are restored straight into its shardings (with 'fsdp' or '2d'
    no device holds the whole model).
    """
    info = model_info_lib.load_model_info(model_dir)
    vocabulary = info.vocabulary()
    chosen = run_dir.checkpoint_for(info.model_dir, checkpoint)
    decoder = sharded_decoding.MeshDecoder.create(partitioning)
    abstract = decoder.abstract_params(info.t5_config)
    params = checkpoints_lib.restore_params(chosen.item_dir, abstract)
    lengths = info.task_feature_lengths or {}
    extractor = cls(
        info.t5_config, params, vocabulary,
        max_input_length=max_input_length or lengths.get("inputs", DEFAULT_FEATURE_LENGTH),
        max_decode_length=max_decode_length or lengths.get("targets", DEFAULT_FEATURE_LENGTH),
        known_types=info.extra.get("prompt_names"), partitioning=decoder, **options)
    extractor.checkpoint_path = chosen.item_dir
    logger.info("extractor: %s (beam %d, %s, %r)", extractor.checkpoint_path,
                extractor.beam_size,
                "constrained" if extractor.constrained else "unconstrained", decoder)
    return extractor

  # -- public API ----------------------------------------------------------------------------

  @property
  def stats(self) -> dict[str, int]:
    """Counters since construction (or `reset_stats`): texts, windows, split_texts, outputs,
    no_hypothesis, truncated, budget_cut, repeat_limit (constrained outputs that reached
    end_at_repeat repeated items, after which the constraint closes the target), unparsed,
    mentions (distinct parsed (type, span) pairs),
    located_mentions + not_located (what became of them after realignment), entities
    (returned occurrences, before merging across windows), duplicates_merged,
    score_fallback, unrequested_type_items (items naming a type that was not requested, read
    by the type-agnostic parser: only possible without the constraint)."""
    return dict(self._counters.total())

  def reset_stats(self) -> None:
    self._counters.clear()

  @property
  def _stats(self) -> collections.Counter:
    """This thread's counters (`stats` sums every thread's)."""
    return self._counters.current()

  def resolve_types(self, types: Optional[Sequence[str]] = None,
                    dataset: Optional[str] = None) -> tuple[str, ...]:
    """The type names a request asks for; raises request_validation.InvalidRequest (a
    ValueError; InvalidRequestType is also a TypeError) on a bad request.

    types=None and a dataset: the dataset's prompt names.  Errors: neither or both given, an
    unknown dataset, `types` a plain string or with a non-string, an empty list, a repeated or
    empty name, a name with ( ) : , or a marker, an unknown name (unless allow_unseen_types).
    The checks are request_validation.resolve_types' (one validator for the service, the CLI
    and this API) with the library's limits.
    """
    return request_validation.resolve_types(
        types, dataset, known_types=self.known_types,
        allow_unseen_types=self.allow_unseen_types, limits=request_validation.Limits.library())

  def _validated_requests(self, requests: Any) -> list[tuple[str, tuple[str, ...]]]:
    """[(text, types)] checked by request_validation, fields named `requests[i].text` /
    `requests[i].types[j]`."""
    limits = request_validation.Limits.library()
    if isinstance(requests, (str, bytes)) or not isinstance(requests, Iterable):
      raise request_validation.InvalidRequestType(
          "requests", f"requests must be a list of (text, types) pairs, got "
          f"{type(requests).__name__}")
    checked = []
    valid: dict[tuple, tuple[str, ...]] = {}  # type lists already checked in this call
    for index, pair in enumerate(requests):
      field = f"requests[{index}]"
      if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise request_validation.InvalidRequestType(
            field, f"{field} must be a (text, types) pair, got {type(pair).__name__}")
      text, types = pair
      text = request_validation.check_text(text, limits, f"{field}.text")
      # `extract` passes one type list with every text: check it once.
      key = tuple(types) if isinstance(types, (tuple, list)) and all(
          type(name) is str for name in types) else None
      names = valid.get(key) if key is not None else None
      if names is None:
        names = request_validation.check_types(
            types, known_types=self.known_types, allow_unseen_types=self.allow_unseen_types,
            limits=limits, field=f"{field}.types")
        if key is not None:
          valid[key] = names
      checked.append((text, names))
    return checked

  def extract(self, texts: Sequence[str], types: Optional[Sequence[str]] = None,
              dataset: Optional[str] = None) -> list[list[dict]]:
    """Entities of `types` (or of `dataset`'s types) in each text.

    Returns one list per text of {"type", "text", "start", "end", "score"}, sorted by
    (start, end, type); `text == texts[i][start:end]`.  An empty text gives [].
    Raises request_validation.InvalidRequest (a ValueError; InvalidRequestType is also a
    TypeError) naming the field (`texts[1]`, `types[0]`) for a bad request: texts not a list of
    strings or holding a lone surrogate (not encodable as UTF-8), bad types (see
    `resolve_types`).  Echoed values are cut short and escaped.
    """
    limits = request_validation.Limits.library()
    texts = request_validation.check_texts(texts, limits)
    names = request_validation.resolve_types(
        types, dataset, known_types=self.known_types,
        allow_unseen_types=self.allow_unseen_types, limits=limits)
    return self.extract_requests([(text, names) for text in texts])

  def extract_requests(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[dict]]:
    """Like `extract`, with each text's own type names: [(text, types)].  Requests with
    different types share decoding batches.

    Each pair goes through request_validation (the validator of the HTTP service and the CLI,
    with the library's limits: `Limits.library()`); a bad one raises InvalidRequest naming
    `requests[i].text` / `requests[i].types[j]`."""
    requests = self._validated_requests(requests)
    self._stats["texts"] += len(requests)
    windows: list[Window] = []
    for index, (text, names) in enumerate(requests):
      windows.extend(self._windows(index, text, names))
    found: list[dict[tuple[str, int, int], dict]] = [{} for _ in requests]
    for window, entities in zip(windows, self.decode_windows(
        windows, first_pass=self.first_pass, batching=self.batching)):
      for entity in entities:
        key = (entity["type"], entity["start"], entity["end"])
        previous = found[window.request].get(key)
        if previous is not None:
          self._stats["duplicates_merged"] += 1
          if previous["score"] >= entity["score"]:
            continue
        found[window.request][key] = entity
    results = []
    for (text, _), entities in zip(requests, found):
      ordered = sorted(entities.values(), key=lambda e: (e["start"], e["end"], e["type"]))
      for entity in ordered:
        assert text[entity["start"]:entity["end"]] == entity["text"]  # the guarantee
      results.append(ordered)
    return results

  def window_ranges(self, text: str, types: Sequence[str]) -> list[tuple[int, int]]:
    """The character ranges `extract` would decode `text` in, for `types` (module docstring;
    whitespace-only ranges are listed here but skipped by `extract`)."""
    names = self.resolve_types(types)
    (text,) = _check_texts([text])
    return windows_lib.split_text(self.vocabulary, self._text_id, text,
                                  self._text_budget(names))

  # -- window-level batch API (the HTTP service's engine batches windows of many requests) ---

  def text_budget(self, types: Sequence[str]) -> int:
    """Text tokens one window may hold next to the prompt for `types` and the EOS; ValueError
    when the prompt leaves no room."""
    return self._text_budget(tuple(types))

  def plan_windows(self, text: str, types: Sequence[str], request: int = 0) -> list[Window]:
    """The windows `extract` decodes `text` in for `types` (already validated: see
    `resolve_types`), encoded and tagged with `request`; [] for an empty or blank text.
    ValueError when the prompt for `types` leaves no room for text."""
    return self._windows(request, text, tuple(types))

  def decode_windows(self, windows: Sequence[Window], *, beam_size: Optional[int] = None,
                     constrained: Optional[bool] = None, rows: Optional[int] = None,
                     max_decode_length: Optional[int] = None,
                     first_pass: bool = False,
                     batching: str = "consecutive") -> list[list[dict]]:
    """Entities of each window (offsets in its request's text), in the order given.

    The windows are decoded as `extract` does (length-sorted, in batches of at most `rows`
    rows, each padded to the bucket of its longest window; `batching` as the constructor's,
    "consecutive" here so that a service's batch is one decode of `rows` rows); the
    keyword arguments override this Extractor's beam_size, constrained, batch_size and
    max_decode_length for this call only (each distinct value compiles its own program).
    first_pass: greedy in two passes ("Long outputs"; `extract` passes the Extractor's
    `first_pass`; off here, so that a service compiles only the shapes it warms up).
    Merging the windows of one text is the caller's (`extract_requests` keeps a duplicate
    entity once, with its best score).
    """
    for name, value, low in (("beam_size", beam_size, 1), ("rows", rows, 1),
                             ("max_decode_length", max_decode_length, 4)):
      if value is not None and (isinstance(value, bool) or
                                not isinstance(value, (int, np.integer)) or value < low):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    _checked_batching(batching)
    rows = self.batch_size if rows is None else self.decoder.padded_size(int(rows))
    settings = _DecodeSettings(
        beam_size=self.beam_size if beam_size is None else int(beam_size),
        constrained=self.constrained if constrained is None else bool(constrained),
        rows=rows,
        max_decode_length=(self.max_decode_length if max_decode_length is None
                           else int(max_decode_length)),
        first_pass=bool(first_pass), batching=batching)
    found: dict[int, list[dict]] = {}
    position = {id(window): index for index, window in enumerate(windows)}
    for window, output, log_probs, parsed in self._decode(list(windows), settings):
      found[position[id(window)]] = self._entities(window, output, log_probs,
                                                   settings.constrained, parsed)
    return [found.get(index, []) for index in range(len(windows))]

  # -- windows -------------------------------------------------------------------------------

  def _text_budget(self, names: tuple[str, ...]) -> int:
    """Text tokens a window may hold next to the prompt for `names` and the EOS."""
    prompt = self._prompt_length(names)
    budget = self.max_input_length - 1 - prompt
    if budget < 4:  # room for at least one character in byte fallback (4 UTF-8 bytes)
      raise ValueError(f"the prompt for types {list(names)} takes {prompt} tokens: "
                       f"max_input_length={self.max_input_length} leaves no room for text; "
                       "request fewer types or raise max_input_length")
    return budget

  def _prompt_length(self, names: tuple[str, ...]) -> int:
    return len(self._prompt_ids(names))

  def _prompt_ids(self, names: tuple[str, ...]) -> list[int]:
    """The encoded prompt for `names` (`<entity>T1...<text>`), once per type list (the cache
    is bounded: a service sees arbitrary type lists)."""
    def encode():
      ids = list(self.vocabulary.encode(prompts.format_input("", names)))
      if not ids or ids[-1] != self._text_id:
        raise AssertionError(f"the prompt for {list(names)} does not end with the text marker")
      return ids
    return windows_lib.cached(self._prompts, names, encode)

  def _windows(self, request: int, text: str, names: tuple[str, ...]) -> list[_Window]:
    budget = self._text_budget(names)  # checked even for an empty text: the request is bad
    if not text.strip():
      return []
    windows = windows_lib.plan_windows(self.vocabulary, self._text_id, self.eos_id,
                                       self._prompt_ids(names), request, text, names, budget)
    if len(windows) > 1 or (windows and len(windows[0].text) < len(text)):
      self._stats["split_texts"] += 1
    return windows

  # -- decoding ------------------------------------------------------------------------------

  def _decode(self, windows: list[_Window], settings: "_DecodeSettings"):
    """Yields (window, best output ids up to EOS, their log-probs) for every window that has
    a hypothesis, in the order their batches finish (not in the order given).  Batches run
    `decode_threads` at a time (sharded_decoding.map_as_completed); the statistics are counted
    here, in the caller's thread."""
    self._stats["windows"] += len(windows)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    longest = len(windows[order[-1]].input_ids) if order else 0
    if longest > self.max_input_length:
      raise AssertionError(f"window of {longest} tokens exceeds {self.max_input_length}")
    two_pass = settings.first_pass and settings.beam_size == 1
    batches = [(chunk, rows, self._first_pass_limit([windows[i] for i in chunk],
                                                    settings.max_decode_length)
                if two_pass else settings.max_decode_length)
               for chunk, rows in self._batches(windows, order, settings, redecode=False)]
    for outputs, redecoded in sharded_decoding.map_as_completed(
        lambda batch: self._decode_batch(windows, batch, settings), batches,
        self.decode_threads):
      self._stats["redecoded"] += redecoded
      for index, output in outputs:
        self._stats["outputs"] += 1
        if output is None:
          self._stats["no_hypothesis"] += 1
          continue
        if settings.constrained and len(output[0]) == self.budget_of(windows[index]):
          self._stats["budget_cut"] += 1
        yield (windows[index], *output)

  def _decode_batch(self, windows: list[_Window], batch: tuple[list[int], int, int],
                    settings: "_DecodeSettings") -> tuple[list[tuple[int, Any]], int]:
    """One batch (window indices, rows, output limit): [(window index, output)] and how many
    of its windows were decoded twice.  The windows of a greedy first pass that ran into its
    limit are decoded again at once, from the start, to max_decode_length, in the fewest rows
    that hold them ("Long outputs"), in this thread: while the other threads go on."""
    chunk, rows, limit = batch
    outputs = list(zip(chunk, self._decode_rows(windows, chunk, rows, limit, settings)))
    if limit >= settings.max_decode_length:
      return outputs, 0
    unfinished = [i for i, output in outputs
                  if output is not None and self.eos_id not in output[0]]
    outputs = [(i, output) for i, output in outputs if i not in unfinished]
    for again, again_rows in self._batches(windows, unfinished, settings, redecode=True):
      outputs.extend(zip(again, self._decode_rows(windows, again, again_rows,
                                                  settings.max_decode_length, settings)))
    return outputs, len(unfinished)

  def _batches(self, windows: list[_Window], order: list[int], settings: "_DecodeSettings",
               redecode: bool) -> list[tuple[list[int], int]]:
    """(window indices, rows) of each decoding batch of windows[order] (length-sorted), by
    settings.batching: batch_plan.plan_batches, each output estimated from its window's
    all-NULL target and text (re-decoded ones: max_decode_length), or consecutive chunks."""
    limit = settings.max_decode_length
    if settings.batching == "consecutive":
      plan = batch_plan.consecutive_plan(len(order), settings.rows,
                                         self.decoder.padded_size if redecode else None)
    else:
      steps = [limit if redecode else batch_plan.estimated_steps(
          self._null_target_length(windows[i].types), len(windows[i].text_ids), limit)
               for i in order]
      rows = batch_plan.row_options(settings.rows, self.decoder.padded_size)
      # Spread a short input over more batches (measured on CPU only: on an accelerator
      # one wide batch is the cheap one); re-decoded windows are few: they keep every option.
      if not redecode and self.decoder.on_local_cpu():
        rows = batch_plan.spread_rows(rows, len(order), self.decode_threads)
      plan = batch_plan.plan_batches([len(windows[i].input_ids) for i in order], steps,
                                     self.buckets, rows, beam_size=settings.beam_size)
    return [(order[batch.begin:batch.end], batch.rows) for batch in plan]

  def _decode_rows(self, windows: list[_Window], chunk: list[int], batch_size: int,
                   max_decode_length: int, settings: "_DecodeSettings"):
    """Decodes windows[chunk] (length-sorted) in `batch_size` rows (the last window repeated),
    padded to a bucket; yields per window (output ids with EOS, their log-probs) or None."""
    bucket = self.buckets[bisect.bisect_left(self.buckets, len(windows[chunk[-1]].input_ids))]
    rows = np.zeros((batch_size, bucket), np.int32)
    for row in range(batch_size):
      ids = windows[chunk[min(row, len(chunk) - 1)]].input_ids  # padding repeats the last
      rows[row, :len(ids)] = ids
    # Greedy over the allowed tokens: the search returns its hidden states and only the
    # scored tokens get the model's log-softmax (entity_scores; a process-local decoder).
    search = searches.resolve(self.search, settings.beam_size)
    after_parse = (self._score_after_parse and settings.beam_size == 1 and settings.constrained
                   and search != "stepwise" and self.decoder.on_local_cpu())
    decoded = self.decoder.decode(
        self.model, self.params, rows, self._constraint if settings.constrained else None,
        beam_size=settings.beam_size, max_decode_length=max_decode_length, alpha=self.alpha,
        eos_id=self.eos_id, stopping=self.stopping, search=search,
        log_prob_beams=1,  # only the best beam is used: skip the others' output layer
        # Whole batches: length-sorted windows under the first pass's limit end close together,
        # so retiring rows measured 0.95x here for twice the compile time (BENCHMARKS.md 2p).
        retire_rows=False, token_log_probs=not after_parse)
    tokens = decoded.tokens[:, 0, :]
    exists = np.isfinite(decoded.scores[:, 0])
    outputs: list[Optional[list[int]]] = []
    for row in range(len(chunk)):  # rows past the chunk repeat its last window
      ids = tokens[row].tolist() if exists[row] else None
      outputs.append(ids if ids is None or self.eos_id not in ids
                     else ids[:ids.index(self.eos_id) + 1])
    # Parsed here only on the scored-token path, which needs it first; else in _entities.
    parsed = [None] * len(chunk)
    if after_parse:
      parsed = [None if ids is None else self._reader.parse(windows[index].types, ids)
                for ids, index in zip(outputs, chunk)]
      log_probs = self._scored_log_probs(parsed, outputs, tokens, decoded.hidden)
    else:
      log_probs = decoded.token_log_probs[:, 0, :]
    for row, ids in enumerate(outputs):
      yield None if ids is None else (ids, log_probs[row, :len(ids)], parsed[row])

  def budget_of(self, window: _Window) -> Optional[int]:
    """The window's output budget in tokens with EOS (constraints.output_budget) under
    constrained decoding; None without one."""
    if not self.output_budget:
      return None
    types = len(window.types)  # the prompt: a marker + the name per type, then <text>
    return constraints_lib.output_budget(len(self._prompt_ids(window.types)) - types - 1,
                                         types, len(window.text_ids), self.output_budget,
                                         self._constraint.budget_slack)

  def _first_pass_limit(self, batch: list[_Window], max_decode_length: int) -> int:
    """The first output limit of a greedy batch ("Long outputs"): the shortest cache length
    (generate.cache_lengths) that holds, for every window, the all-NULL target of its types
    plus one token per text token and EOS; max_decode_length when none is shorter."""
    longest = max(self._null_target_length(w.types)
                  + math.ceil(FIRST_PASS_TEXT_FACTOR * len(w.text_ids)) + 1 for w in batch)
    return next((length for length in generate.cache_lengths(max_decode_length)
                 if length >= longest), max_decode_length)

  def _null_target_length(self, names: tuple[str, ...]) -> int:
    return windows_lib.cached(self._null_lengths, names,
                              lambda: len(self.vocabulary.encode(prompts.format_target([], names))))

  # -- output -> entities --------------------------------------------------------------------

  def _entities(self, window: _Window, output: list[int], log_probs: np.ndarray,
                constrained: Optional[bool] = None,
                parsed: Optional[output_reader.Parsed] = None) -> list[dict]:
    """The window's entities (output_reader); `parsed`: its output already parsed."""
    if parsed is None:
      parsed = self._reader.parse(window.types, output)
    return self._reader.entities(
        window, output, log_probs, parsed,
        constrained=self.constrained if constrained is None else constrained,
        end_at_repeat=self.end_at_repeat, stats=self._stats)

  def _scored_log_probs(self, parsed: list[Optional[output_reader.Parsed]],
                        outputs: list[Optional[list[int]]], tokens: np.ndarray,
                        hidden: np.ndarray) -> np.ndarray:
    """The model's log-probs of a greedy batch's output tokens that `_entities` reads (the
    items of parsed mentions; entity_scores), from the search's final hidden states; per
    row its parsed output and its ids up to EOS (None: no hypothesis)."""
    scored = np.zeros(tokens.shape, bool)
    for row, (this, ids) in enumerate(zip(parsed, outputs)):
      if this is not None:
        scored[row, :len(ids)] = self._reader.scored(this, len(ids))
    if self._kernel is None:
      self._kernel = np.asarray(generate.output_kernel(self.model.config, self.params))
    return entity_scores.log_probs_at(hidden, tokens, self._kernel, scored)


def _checked_batching(batching: str) -> str:
  if batching not in BATCHING:
    raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
  return batching


def _check_texts(texts: Any) -> list[str]:
  if isinstance(texts, str) or not isinstance(texts, Iterable):
    raise TypeError(f"texts must be a list of strings (wrap a single text in a list), got "
                    f"{type(texts).__name__}")
  texts = list(texts)
  for index, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{index}] is a {type(text).__name__}, not a str")
  return texts
