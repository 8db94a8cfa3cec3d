"""Evaluation reports: per-dataset and per-type precision/recall/F1 as JSON, a printed F1 table,
and a PNG with per-dataset F1 bars and training curves.

Input is what the evaluator writes (`<dir>/step_<N>.json`: {"step", "mean", "tasks": {task:
{metric: value}}, ...}) and the runs' `metrics.jsonl` files (one JSON object per logged step).
Task names map back to datasets (punified_jax/tasks/names.py), so the report speaks in
dataset names. Scores are percentages, like the paper's tables.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

from punified_jax import run_dir
from punified_jax import storage
from punified_jax.tasks import names as task_names

def dataset_of(task_name: str) -> str:
  """The dataset a report row speaks for: `punified_ner_cluener_random` -> `cluener` (the tasks'
  naming rule, tasks/names.py); a name that is not one of our tasks is kept as it is."""
  return task_names.dataset_of_task(task_name) or task_name


def _number(value: Any) -> Optional[float]:
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def summarize(eval_result: Mapping[str, Any]) -> dict:
  """The evaluator's result -> {"step", "mean_macro_f1", "datasets": {ds: {...}}}.

  Per dataset: macro_f1, micro_f1, precision, recall, offset_macro_f1 (when present), the
  diagnostic counters, and "types": {type: {"precision", "recall", "f1", "support"}}.
  """
  datasets = {}
  for task, values in sorted(eval_result.get("tasks", {}).items()):
    per_type: dict[str, dict] = {}
    for key, value in values.items():
      for field in ("precision", "recall", "f1", "support"):
        if key.startswith(field + "/"):
          per_type.setdefault(key[len(field) + 1:], {})[field] = _number(value)
    entry = {k: _number(values.get(k)) for k in (
        "macro_f1", "micro_f1", "precision", "recall", "offset_macro_f1")
             if k in values}
    for counter in ("unrequested_type_predictions", "span_not_in_input", "truncated_generations",
                    "unparsed_generations"):
      if counter in values:
        entry[counter] = _number(values[counter])
    entry["types"] = per_type
    entry["task"] = task
    datasets[dataset_of(task)] = entry
  return {"step": eval_result.get("step"), "mean_macro_f1": _number(eval_result.get("mean")),
          "beam_size": eval_result.get("beam_size"),
          "constrained": eval_result.get("constrained"), "datasets": datasets}


def format_f1_table(summary: Mapping[str, Any], *, paper: bool = True) -> str:
  """A plain-text table: one row per dataset (macro F1, micro F1, P, R), the mean, and the paper's
  joint-model F1 for reference when `paper` (Table 1; real data only - a reader of a built-in
  corpus table must not compare them)."""
  rows = [("dataset", "macro F1", "micro F1", "precision", "recall")]
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  for ds, entry in summary["datasets"].items():
    rows.append((ds, fmt(entry.get("macro_f1")), fmt(entry.get("micro_f1")),
                 fmt(entry.get("precision")), fmt(entry.get("recall"))))
  rows.append(("mean", fmt(summary.get("mean_macro_f1")), "", "", ""))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(row, widths))) for row in rows]
  lines.insert(1, "-" * len(lines[0]))
  lines.insert(len(lines) - 1, "-" * len(lines[0]))
  if paper:
    refs = [f"{ds} {PAPER_JOINT_F1[ds]:.2f}" for ds in summary["datasets"] if ds in PAPER_JOINT_F1]
    if refs:
      lines.append("paper (PUnifiedNER, Table 1, test/dev sets): " + ", ".join(refs))
  return "\n".join(lines)


# The paper's Table 1, PUnifiedNER row (macro F1).
PAPER_JOINT_F1 = {"msra": 87.07, "ontonotes4": 82.56, "resume": 97.18, "cluener": 77.00,
                  "ecommerce": 71.32, "peoples_daily": 94.49, "boson": 83.58, "ccks2021": 85.34}


def read_metrics_jsonl(path: str) -> list[dict]:
  """Records of a metrics.jsonl file; a malformed line raises an error naming file and line."""
  return storage.read_jsonl(path)


def curve(records: Iterable[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
  steps, values = [], []
  for record in records:
    if "step" in record and _number(record.get(key)) is not None:
      steps.append(int(record["step"]))
      values.append(float(record[key]))
  return steps, values


def read_step_reports(directory: str) -> dict[int, dict]:
  """{step: report} of the evaluator's `step_<N>.json` files in `directory` ({} if none)."""
  if not storage.isdir(directory):
    return {}
  found = {}
  for name in storage.listdir(directory):
    match = re.fullmatch(r"step_(\d+)\.json", name)
    if match:
      path = storage.join(directory, name)
      try:
        report = json.loads(storage.read_text(path))
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
      found[int(report.get("step", match.group(1)))] = report
  return dict(sorted(found.items()))


def f1_history(step_reports: Mapping[int, Mapping[str, Any]],
               key: str = "macro_f1") -> dict[str, dict[int, float]]:
  """{step: evaluator report} -> {dataset: {step: F1}} (steps ascending)."""
  history: dict[str, dict[int, float]] = {}
  for step in sorted(step_reports):
    for task, values in step_reports[step].get("tasks", {}).items():
      value = _number(values.get(key)) if isinstance(values, Mapping) else None
      if value is not None:
        history.setdefault(dataset_of(task), {})[int(step)] = value
  return dict(sorted(history.items()))


def plot_report(summary: Mapping[str, Any], runs: Mapping[str, Sequence[Mapping[str, Any]]],
                path: str, *, title: str = "PUnifiedNER",
                history: Optional[Mapping[str, Mapping[int, float]]] = None) -> str:
  """PNG: per-dataset macro F1 bars (left), per-dataset macro F1 over the evaluated steps
  (middle, from `history` = f1_history(...)) and training loss curves of each run (right)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (bars, over_steps, curves) = plt.subplots(1, 3, figsize=(17, 4.5))
  names = list(summary["datasets"])
  values = [summary["datasets"][n].get("macro_f1") or 0.0 for n in names]
  positions = range(len(names))
  bars.bar(positions, values, color="#4c72b0")
  for x, v in zip(positions, values):
    bars.text(x, v + 1, f"{v:.1f}", ha="center", fontsize=8)
  mean = summary.get("mean_macro_f1")
  if mean is not None:
    bars.axhline(mean, color="#c44e52", linestyle="--", label=f"mean {mean:.1f}")
    bars.legend(loc="lower right")
  bars.set_xticks(list(positions), names, rotation=30, ha="right")
  bars.set_ylim(0, 105)
  bars.set_ylabel("macro F1 (%)")
  bars.set_title(f"validation macro F1 (step {summary.get('step')})")

  for dataset, points in (history or {}).items():
    steps = sorted(points)
    over_steps.plot(steps, [points[step] for step in steps], marker="o", label=dataset)
  over_steps.set_xlabel("step")
  over_steps.set_ylabel("macro F1 (%)")
  over_steps.set_title("validation macro F1 over steps")
  if history:
    over_steps.legend(fontsize=8)

  for label, records in runs.items():
    steps, losses = curve(records, "train/loss")
    if steps:
      curves.plot(steps, losses, label=label)
  curves.set_xlabel("step")
  curves.set_ylabel("train loss")
  curves.set_yscale("log")
  curves.set_title("training curves")
  if runs:
    curves.legend()
  fig.suptitle(title)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=110, format="png")
  plt.close(fig)
  storage.write_bytes_atomic(path, buffer.getvalue())
  return path


# The newest `step_<N>.json` of an evaluation directory (the run directory's rule).
latest_eval_json = run_dir.latest_eval_json


def write_report(eval_json: str, output_dir: str, *,
                 runs: Optional[Mapping[str, str]] = None, title: str = "PUnifiedNER") -> dict:
  """Reads an evaluation report, writes `<output_dir>/report.json` and `report.png`.

  `runs` maps a label to a run directory (or its metrics.jsonl) for the training curves.
  Returns the summary (with the paths of what it wrote).
  """
  summary = summarize(storage.read_json(eval_json))
  curves = {}
  for label, run in (runs or {}).items():
    path = run if run.endswith(".jsonl") else run_dir.Layout(run).metrics
    if storage.exists(path):
      curves[label] = read_metrics_jsonl(path)
  summary["source"] = storage.absolute(eval_json)
  history = f1_history(read_step_reports(storage.dirname(storage.absolute(eval_json))))
  summary["f1_over_steps"] = history
  summary["png"] = plot_report(summary, curves, storage.join(output_dir, "report.png"),
                               title=title, history=history)
  summary["json"] = storage.join(output_dir, "report.json")
  storage.write_json_atomic(summary["json"], summary, sort_keys=False)
  return summary
