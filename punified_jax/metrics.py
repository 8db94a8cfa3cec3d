"""SeqIO postprocessor and metric functions for prompted NER.

Flow inside seqio 0.0.20's evaluator (seqio/metrics.py, `PassthroughLegacyMetric`):
`ner_postprocessor(text, example=ex, is_target=...)` turns each target string
(`targets_pretokenized`) and each decoded prediction into a *record*, then
`metric_fn(targets, predictions)` receives the two lists of records. SeqIO picks the metric
kind from the names of the positional parameters without defaults, so every metric here has
exactly `(targets, predictions)` positionally and everything else keyword-only.

A record is a plain dict (JSON-friendly, so seqio's loggers can write it):
  "mentions":   [(type, span text), ...] distinct pairs in output order
  "types":      requested type names recovered from the input prompt, or None
  "text":       the original sentence recovered from the input prompt, or None
  "gold_spans": [(type, start, end), ...] from the example's gold offset features (targets
                only, when the task carries them), else None
  "truncated", "unparsed": parser flags (see parsing.ParseResult); "realigned": spans mapped
                back to the input's own characters by parsing.align_span

Metric conventions: all scores are percentages (0..100, like the paper's tables). A type with
zero gold and zero predicted mentions has undefined precision/recall/F1: its values are NaN,
it is left out of the macro mean and counted in "excluded_types". Otherwise a 0/0 precision or
recall is 0. `macro_f1` (the paper's number) is the mean of per-type F1 over the dataset's types.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from punified_jax import entity_types
from punified_jax import parsing
from punified_jax import prompts

# Features of a preprocessed eval example that the postprocessor reads.
INPUTS_FEATURE = "inputs_pretokenized"
# Optional gold offsets (relative to the sentence text, end exclusive) for offset_exact_f1;
# three parallel 1-D arrays: int starts, int ends, prompt-name types (bytes or str).
GOLD_STARTS_FEATURE = "gold_starts"
GOLD_ENDS_FEATURE = "gold_ends"
GOLD_TYPES_FEATURE = "gold_types"

TypeMerge = Optional[Mapping[str, str]]


def _as_str(value: Any, what: str) -> str:
  """A feature value (str, bytes, numpy scalar/0-d array) as str."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, (bytes, bytearray)):
    try:
      return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"feature {what!r} is not valid UTF-8: {e}") from None
  if isinstance(value, str):
    return value
  raise ValueError(f"feature {what!r} must be a string, got {type(value).__name__}")


def _prompt_of(example: Optional[Mapping[str, Any]]) -> tuple[Optional[tuple], Optional[str]]:
  """(requested types, sentence text) from the example's input prompt, or (None, None)."""
  if example is None or INPUTS_FEATURE not in example:
    return None, None
  inputs = _as_str(example[INPUTS_FEATURE], INPUTS_FEATURE)
  try:
    return prompts.parse_input(inputs)
  except ValueError as e:
    raise ValueError(f"feature {INPUTS_FEATURE!r}: {e}") from None


def _gold_spans_of(example: Optional[Mapping[str, Any]], text: Optional[str]) -> Optional[list]:
  """[(type, start, end)] from the example's gold offset features, or None if it has none."""
  names = (GOLD_STARTS_FEATURE, GOLD_ENDS_FEATURE, GOLD_TYPES_FEATURE)
  if example is None or not any(n in example for n in names):
    return None
  missing = [n for n in names if n not in example]
  if missing:
    raise ValueError(f"example has some gold offset features but not {', '.join(missing)}")
  starts = np.asarray(example[GOLD_STARTS_FEATURE]).reshape(-1)
  ends = np.asarray(example[GOLD_ENDS_FEATURE]).reshape(-1)
  types = np.asarray(example[GOLD_TYPES_FEATURE], dtype=object).reshape(-1)
  if not len(starts) == len(ends) == len(types):
    raise ValueError(f"gold offset features have different lengths: {GOLD_STARTS_FEATURE}="
                     f"{len(starts)}, {GOLD_ENDS_FEATURE}={len(ends)}, "
                     f"{GOLD_TYPES_FEATURE}={len(types)}")
  spans = []
  for start, end, type_value in zip(starts.tolist(), ends.tolist(), types.tolist()):
    type_name = _as_str(type_value, GOLD_TYPES_FEATURE)
    if text is not None and not 0 <= start < end <= len(text):
      raise ValueError(f"gold span {start}:{end} ({type_name}) does not fit a text of "
                       f"{len(text)} characters")
    spans.append((type_name, int(start), int(end)))
  return spans


def ner_postprocessor(output: Any, example: Optional[Mapping[str, Any]] = None,
                      is_target: bool = False, *, realign_spans: bool = True) -> dict:
  """Target string or decoded prediction -> record (see module docstring). Never raises on
  the model's output; raises ValueError for a malformed `example` feature.

  Targets are parsed with the requested types from the prompt (exact, they are our own
  strings). Predictions are parsed with the requested types plus every registry prompt name,
  so an unrequested but known type still starts an item instead of corrupting the previous
  span (the metric counts it). Without an example, items are recognised by the type-free rule.
  With `realign_spans`, a predicted span that is not a substring of the input but matches one
  after case-folding and whitespace removal is replaced by the input's own substring (a lossy
  vocabulary's decoding, e.g. WordPiece lowercasing, must not cost a correct span).
  """
  types, text = _prompt_of(example)
  if is_target:
    parse_types = types
  elif types is not None:
    parse_types = tuple(dict.fromkeys(types + entity_types.ALL_PROMPT_NAMES))
  else:
    parse_types = None
  result = parsing.parse_generation_details(output, parse_types)
  mentions = result.mentions
  realigned = 0
  if realign_spans and not is_target and text is not None:
    fixed = []
    for type_name, span in mentions:
      aligned = parsing.align_span(text, span)
      if aligned is not None and aligned != span:
        realigned += 1
        span = aligned
      if (type_name, span) not in fixed:
        fixed.append((type_name, span))
    mentions = fixed
  return {
      "mentions": mentions,
      "types": types,
      "text": text,
      "gold_spans": _gold_spans_of(example, text) if is_target else None,
      "truncated": result.truncated,
      "unparsed": result.unparsed,
      "realigned": realigned,
  }


def _record(value: Any, index: int, which: str) -> dict:
  """A record from a record dict, a generation string or a list of (type, span) pairs."""
  if isinstance(value, Mapping):
    if "mentions" not in value:
      raise ValueError(f"{which}[{index}] has no 'mentions' key (keys: {sorted(value)})")
    record = dict(value)
  elif isinstance(value, (str, bytes)):
    record = ner_postprocessor(value, None, is_target=(which == "targets"))
  elif isinstance(value, (list, tuple)):
    record = {"mentions": value}
  else:
    raise ValueError(f"{which}[{index}] must be a record dict, a generation string or a list "
                     f"of (type, span) pairs, got {type(value).__name__}")
  mentions = []
  for m in record["mentions"]:
    if not (isinstance(m, (tuple, list)) and len(m) == 2 and all(isinstance(x, str) for x in m)):
      raise ValueError(f"{which}[{index}]: a mention must be a (type, span) pair of strings, "
                       f"got {m!r}")
    mentions.append((m[0], m[1]))
  record["mentions"] = mentions
  for key in ("types", "text", "gold_spans"):
    record.setdefault(key, None)
  return record


def _records(targets: Sequence[Any], predictions: Sequence[Any]) -> tuple[list, list]:
  if len(targets) != len(predictions):
    raise ValueError(f"targets has {len(targets)} sentences but predictions has "
                     f"{len(predictions)}")
  return ([_record(t, i, "targets") for i, t in enumerate(targets)],
          [_record(p, i, "predictions") for i, p in enumerate(predictions)])


def _merged_names(names: Iterable[str], merge: Mapping[str, str]) -> tuple[str, ...]:
  return tuple(dict.fromkeys(merge.get(n, n) for n in names))


def _resolve_type_names(type_names: Optional[Sequence[str]], gold_records: list,
                        merge: Mapping[str, str]) -> tuple[str, ...]:
  """The types of the macro mean: `type_names` if given (merged), else every requested and
  every gold type seen in the targets, in first-seen order (merged)."""
  if type_names is not None:
    if isinstance(type_names, str):
      raise TypeError(f"type_names must be a sequence of names, not the string {type_names!r}")
    return _merged_names(type_names, merge)
  seen = []
  for record in gold_records:
    seen.extend(record["types"] or ())
    seen.extend(t for t, _ in record["mentions"])
  return _merged_names(seen, merge)


def _pct(numerator: int, denominator: int) -> float:
  return 100.0 * numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
  return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _score(gold_sets: list[set], pred_sets: list[set], type_names: Sequence[str],
           prefix: str = "") -> dict[str, float]:
  """Per-type, macro and micro scores from per-sentence sets of keys whose [0] is the type."""
  tp = collections.Counter()
  n_gold = collections.Counter()
  n_pred = collections.Counter()
  for gold, pred in zip(gold_sets, pred_sets):
    n_gold.update(k[0] for k in gold)
    n_pred.update(k[0] for k in pred)
    tp.update(k[0] for k in gold & pred)
  out: dict[str, float] = {}
  f1s, precisions, recalls = [], [], []
  excluded = 0
  for t in type_names:
    if n_gold[t] == 0 and n_pred[t] == 0:
      excluded += 1  # nothing to score: undefined, kept out of the macro mean
      p = r = f = math.nan
    else:
      p, r = _pct(tp[t], n_pred[t]), _pct(tp[t], n_gold[t])
      f = _f1(p, r)
      f1s.append(f)
      precisions.append(p)
      recalls.append(r)
    out[f"{prefix}f1/{t}"] = f
    out[f"{prefix}precision/{t}"] = p
    out[f"{prefix}recall/{t}"] = r
    out[f"{prefix}support/{t}"] = float(n_gold[t])
  total_tp, total_gold, total_pred = sum(tp.values()), sum(n_gold.values()), sum(n_pred.values())
  micro_p, micro_r = _pct(total_tp, total_pred), _pct(total_tp, total_gold)
  micro_defined = total_gold or total_pred
  out.update({
      f"{prefix}macro_f1": float(np.mean(f1s)) if f1s else math.nan,
      f"{prefix}macro_precision": float(np.mean(precisions)) if precisions else math.nan,
      f"{prefix}macro_recall": float(np.mean(recalls)) if recalls else math.nan,
      f"{prefix}micro_f1": _f1(micro_p, micro_r) if micro_defined else math.nan,
      f"{prefix}precision": micro_p if micro_defined else math.nan,
      f"{prefix}recall": micro_r if micro_defined else math.nan,
      f"{prefix}excluded_types": float(excluded),
      f"{prefix}num_sentences": float(len(gold_sets)),
      f"{prefix}num_gold": float(total_gold),
      f"{prefix}num_predicted": float(total_pred),
      f"{prefix}true_positives": float(total_tp),
  })
  return out


def span_macro_f1(targets: Sequence[Any], predictions: Sequence[Any], *,
                  type_names: Optional[Sequence[str]] = None,
                  type_merge: TypeMerge = None) -> dict[str, float]:
  """The paper's metric: macro F1 over types of (type, span text) matches per sentence.

  Within a sentence, a distinct predicted (type, span text) pair is a true positive when the
  same pair is a gold mention of that sentence; each distinct pair counts once per sentence
  (a repeated mention is one pair, as in the target format). `type_merge` maps type names
  before matching, on both sides (e.g. entity_types.ONTONOTES_EVAL_MERGE: GPE -> 地点, the
  paper's OntoNotes evaluation). `type_names` are the types of the macro mean (the dataset's
  prompt names); None means every requested or gold type seen in the targets.

  Micro scores ("micro_f1", "precision", "recall") count every pair, including predictions of
  types outside `type_names`. Diagnostics: "unrequested_type_predictions" (distinct predicted
  pairs whose type the sentence's prompt did not request), "span_not_in_input" (predicted spans
  that are not substrings of the sentence), "truncated_generations", "unparsed_generations",
  "realigned_spans". Targets/predictions: records from `ner_postprocessor`, generation
  strings, or lists of (type, span) pairs.
  """
  gold_records, pred_records = _records(targets, predictions)
  merge = dict(type_merge or {})
  names = _resolve_type_names(type_names, gold_records, merge)
  gold_sets, pred_sets = [], []
  unrequested = not_in_input = truncated = unparsed = realigned = 0
  for gold, pred in zip(gold_records, pred_records):
    gold_sets.append({(merge.get(t, t), s) for t, s in gold["mentions"]})
    pred_sets.append({(merge.get(t, t), s) for t, s in pred["mentions"]})
    requested = pred["types"] if pred["types"] is not None else gold["types"]
    text = pred["text"] if pred["text"] is not None else gold["text"]
    for type_name, span in set(pred["mentions"]):
      if requested is not None and type_name not in requested:
        unrequested += 1
      if text is not None and span not in text:
        not_in_input += 1
    truncated += bool(pred.get("truncated"))
    unparsed += bool(pred.get("unparsed"))
    realigned += int(pred.get("realigned") or 0)
  out = _score(gold_sets, pred_sets, names)
  out.update({
      "unrequested_type_predictions": float(unrequested),
      "span_not_in_input": float(not_in_input),
      "truncated_generations": float(truncated),
      "unparsed_generations": float(unparsed),
      "realigned_spans": float(realigned),
  })
  return out


def offset_exact_f1(targets: Sequence[Any], predictions: Sequence[Any], *,
                    type_names: Optional[Sequence[str]] = None,
                    type_merge: TypeMerge = None) -> dict[str, float]:
  """Stricter variant: a prediction must match a gold (type, start, end).

  Gold offsets come from the targets' "gold_spans" (the example's gold offset features);
  predicted pairs are placed with `parsing.locate_mentions` on the sentence text (every free
  occurrence, longest first: the same rule the extraction API uses), so a repeated mention
  predicted once can match every gold occurrence. Predicted spans absent from the text are
  counted as predictions that match nothing ("offset_span_not_in_input"). All keys carry the
  "offset_" prefix so this metric can run next to span_macro_f1 in one SeqIO task.
  """
  gold_records, pred_records = _records(targets, predictions)
  merge = dict(type_merge or {})
  names = _resolve_type_names(type_names, gold_records, merge)
  gold_sets, pred_sets = [], []
  not_in_input = 0
  for i, (gold, pred) in enumerate(zip(gold_records, pred_records)):
    if gold["gold_spans"] is None:
      raise ValueError(f"targets[{i}] has no gold offsets: offset_exact_f1 needs the example "
                       f"features {GOLD_STARTS_FEATURE}, {GOLD_ENDS_FEATURE}, "
                       f"{GOLD_TYPES_FEATURE}")
    text = pred["text"] if pred["text"] is not None else gold["text"]
    if text is None:
      raise ValueError(f"targets[{i}]/predictions[{i}] carry no sentence text to locate "
                       "predicted spans in")
    gold_sets.append({(merge.get(t, t), s, e) for t, s, e in gold["gold_spans"]})
    placed = parsing.locate_mentions(text, pred["mentions"])
    keys = {(merge.get(m["type"], m["type"]), m["start"], m["end"]) for m in placed.located}
    # A span that is not in the text still counts as a (false) prediction: give it an
    # impossible offset so it lands in the type's prediction count and matches nothing.
    keys |= {(merge.get(t, t), -1 - j, -1) for j, (t, _) in enumerate(placed.not_located)}
    not_in_input += len(placed.not_located)
    pred_sets.append(keys)
  out = _score(gold_sets, pred_sets, names, prefix="offset_")
  out["offset_span_not_in_input"] = float(not_in_input)
  return out


MetricFn = Callable[[Sequence[Any], Sequence[Any]], dict]


def make_metric_fn(dataset: str, *, variant: str = "span",
                   type_merge: Union[TypeMerge, str] = "paper") -> MetricFn:
  """A SeqIO metric fn `(targets, predictions) -> dict` bound to `dataset`'s prompt names.

  variant: "span" (span_macro_f1, the paper's metric) or "offset" (offset_exact_f1).
  type_merge: "paper" applies the paper's evaluation protocol (OntoNotes: 地缘政治实体 and 地点
  both scored as 地点; no merge elsewhere); None or {} disables merging; a mapping is used as is.
  """
  type_names = entity_types.prompt_names(dataset)
  if isinstance(type_merge, str):
    if type_merge != "paper":
      raise ValueError(f"type_merge must be 'paper', None or a mapping, got {type_merge!r}")
    type_merge = entity_types.ONTONOTES_EVAL_MERGE if dataset == "ontonotes4" else None
  merge = dict(type_merge or {})
  if variant == "span":
    score = span_macro_f1
  elif variant == "offset":
    score = offset_exact_f1
  else:
    raise ValueError(f"unknown metric variant {variant!r}; variants: span, offset")

  def metric_fn(targets, predictions):
    return score(targets, predictions, type_names=type_names, type_merge=merge)

  metric_fn.__name__ = f"{score.__name__}_{dataset}"
  metric_fn.__qualname__ = metric_fn.__name__
  return metric_fn
