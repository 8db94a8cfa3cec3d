"""Paired bootstrap over evaluation sentences: is run B's macro F1 above run A's beyond the luck
of which sentences were evaluated?

Input: the evaluator's per-sentence prediction files of two runs on the SAME sentences
(`<eval_dir>/predictions/<task>_step_<N>.jsonl`, written by `evaluation`; each line has the
sentence's gold and predicted (type, span) pairs).  Both runs are resampled with the same
sentence indices (a paired bootstrap), and the dataset's macro F1 (metrics.make_metric_fn's:
the paper's span metric, its prompt types, its type merge) is recomputed for each sample.  The
result is the difference B - A with a 95% percentile interval and the share of samples in which
B is ahead.

What it measures, and what not: the noise of a finite evaluation set (300 sentences per dataset
in our CPU-scale runs).  Training noise (another seed, another data order) is not in it: a
difference outside this interval can still be within seed-to-seed noise.

For speed the macro F1 is computed from per-sentence, per-type counts (true positives, gold
and predicted pairs) with numpy; `macro_f1_from_counts` on the unresampled counts equals
`metrics.span_macro_f1`'s macro F1 (tested).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from punified_jax import entity_types
from punified_jax import run_dir
from punified_jax import storage
from punified_jax.tasks import names as task_names

DEFAULT_SAMPLES = 1000


def prediction_file(eval_dir: str, dataset: str, step: int) -> str:
  """Where the evaluator writes `dataset`'s per-sentence predictions at `step`."""
  return storage.join(eval_dir, run_dir.PREDICTIONS_DIR,
                      f"{task_names.task_name(dataset)}_step_{step}.jsonl")


def read_predictions(path: str) -> list[dict]:
  """The lines of an evaluator prediction file; each must have id, gold and predicted."""
  records = []
  for number, line in enumerate(storage.read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
    missing = [key for key in ("gold", "predicted") if key not in record]
    if missing:
      raise ValueError(f"{path}:{number}: no {', '.join(missing)} (not an NER prediction file)")
    records.append(record)
  return records


def sentence_counts(records: Sequence[Mapping[str, Any]], dataset: str) -> np.ndarray:
  """int64 [sentences, 3, types]: per sentence and per prompt type of `dataset`, the distinct
  (type, span) pairs that are true positives, gold, predicted (metrics.span_macro_f1's
  counting: pairs after the dataset's type merge, each distinct pair once per sentence)."""
  merge = dict(entity_types.ONTONOTES_EVAL_MERGE if dataset == "ontonotes4" else {})
  types = list(dict.fromkeys(merge.get(t, t) for t in entity_types.prompt_names(dataset)))
  column = {t: i for i, t in enumerate(types)}
  counts = np.zeros((len(records), 3, len(types)), np.int64)
  for row, record in enumerate(records):
    gold = {(merge.get(t, t), s) for t, s in record["gold"]}
    predicted = {(merge.get(t, t), s) for t, s in record["predicted"]}
    for which, pairs in enumerate((gold & predicted, gold, predicted)):
      for type_name, _ in pairs:
        if type_name in column:  # a type outside the prompt is not in the macro mean
          counts[row, which, column[type_name]] += 1
  return counts


def macro_f1_from_counts(totals: np.ndarray) -> np.ndarray:
  """totals [..., 3, types] (summed over sentences) -> macro F1 [...] in percent, over the
  types with any gold or predicted pair (metrics._score's rule); NaN if there is none."""
  tp, gold, predicted = (totals[..., i, :].astype(np.float64) for i in range(3))
  with np.errstate(divide="ignore", invalid="ignore"):
    precision = np.where(predicted > 0, 100.0 * tp / predicted, 0.0)
    recall = np.where(gold > 0, 100.0 * tp / gold, 0.0)
    f1 = np.where(precision + recall > 0,
                  2 * precision * recall / (precision + recall), 0.0)
    scored = (gold > 0) | (predicted > 0)
    return np.sum(np.where(scored, f1, 0.0), axis=-1) / np.sum(scored, axis=-1)


def paired_bootstrap(records_a: Sequence[Mapping[str, Any]],
                     records_b: Sequence[Mapping[str, Any]], dataset: str, *,
                     samples: int = DEFAULT_SAMPLES, seed: int = 0,
                     what: str = "the two prediction files") -> dict[str, float]:
  """Macro F1 of A and B, B - A, its 95% interval and the share of samples where B > A."""
  ids_a = [record.get("id", record.get("index")) for record in records_a]
  ids_b = [record.get("id", record.get("index")) for record in records_b]
  if ids_a != ids_b:
    raise ValueError(f"{what} do not hold the same sentences in the same order "
                     f"({len(ids_a)} and {len(ids_b)} lines): a paired bootstrap needs both "
                     "runs evaluated on the same examples")
  if not ids_a:
    raise ValueError(f"{what}: no sentences")
  if samples < 1:
    raise ValueError(f"samples must be >= 1, got {samples}")
  counts_a, counts_b = sentence_counts(records_a, dataset), sentence_counts(records_b, dataset)
  rows = np.random.default_rng(seed).integers(0, len(ids_a), size=(samples, len(ids_a)))
  f1_a = macro_f1_from_counts(counts_a[rows].sum(axis=1))
  f1_b = macro_f1_from_counts(counts_b[rows].sum(axis=1))
  difference = f1_b - f1_a
  low, high = np.nanpercentile(difference, [2.5, 97.5])
  point_a = float(macro_f1_from_counts(counts_a.sum(axis=0)))
  point_b = float(macro_f1_from_counts(counts_b.sum(axis=0)))
  return {"a": point_a, "b": point_b, "difference": point_b - point_a,
          "low": float(low), "high": float(high),
          "b_ahead": float(np.mean(difference > 0)), "sentences": len(ids_a),
          "samples": samples}


def find_prediction_file(eval_dirs: Sequence[str], dataset: str, step: int) -> Optional[str]:
  """The first of `eval_dirs` that holds `dataset`'s predictions at `step` (None if none)."""
  for directory in eval_dirs:
    path = prediction_file(directory, dataset, step)
    if storage.exists(path):
      return path
  return None
