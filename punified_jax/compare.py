"""Cross-run reports: several training runs side by side.

For each run directory it reads what the run recorded about itself and how it scored:
  punified_model.json        model shape, feature lengths, mixture, vocabulary (our trainer)
  data_manifest.json         the data a run was made from, with the mixing scheme and the
                             per-task rates and probabilities (punified_jax/data/manifest.py)
  config.gin                 the operative gin config, when the run has one (t5x writes it)
  eval/step_<N>.json         our evaluator's reports (per-task macro F1, ...), one per step
  metrics.jsonl              training curves (train/loss per logged step)
  inference_eval/<task>-metrics.jsonl   t5x's evaluation output (one JSON line per step)
Evaluation reports written elsewhere (`python -m punified_jax eval` or `t5x.eval` with their own
EVAL_OUTPUT_DIR) are added per run with `extra_eval_dirs`.

and produces: per dataset, the best macro F1 (and its step) and the last one; the mean over
datasets; F1 over steps; the training loss curves; and the settings in which the runs differ
(every recorded setting, flattened to dotted keys, kept where the runs disagree). As a text
table, a JSON document and a PNG.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

from punified_jax import bootstrap
from punified_jax import reports
from punified_jax import run_dir
from punified_jax import storage

# The run directory's file names (run_dir.py owns the layout).
MODEL_INFO_FILE = run_dir.MODEL_INFO_FILE
DATA_MANIFEST_FILE = run_dir.DATA_MANIFEST_FILE
CONFIG_GIN_FILE = run_dir.CONFIG_GIN_FILE
METRICS_FILE = run_dir.METRICS_FILE
EVAL_SUBDIR = run_dir.EVAL_DIR
T5X_EVAL_SUBDIR = "inference_eval"
_T5X_METRICS_RE = re.compile(r"(?P<task>.+)-metrics\.jsonl")
# Settings whose values are long lists that never help tell runs apart in a table.
_SKIPPED_SETTINGS = ("model.extra.prompt_names",)


@dataclasses.dataclass
class Run:
  """One run's recorded settings and scores."""
  label: str
  path: str
  settings: dict[str, Any] = dataclasses.field(default_factory=dict)
  f1: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)  # ds -> step -> F1
  loss: list[tuple[int, float]] = dataclasses.field(default_factory=list)
  sources: list[str] = dataclasses.field(default_factory=list)  # files read
  eval_dirs: list[str] = dataclasses.field(default_factory=list)  # our evaluator's output dirs


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": [1, 2]} (lists are leaves)."""
  if isinstance(value, Mapping):
    out = {}
    for key, inner in value.items():
      out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out
  return {prefix: value}


def parse_gin_config(text: str) -> dict[str, str]:
  """Top-level bindings of a gin config (`KEY = VALUE`; a value may continue on indented lines
  or inside brackets), as text. Comments, imports and includes are skipped."""
  bindings: dict[str, str] = {}
  key, parts, depth = None, [], 0
  for line in text.splitlines():
    stripped = line.split("#", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
    if key is not None and (depth > 0 or (stripped and line[:1].isspace())):
      parts.append(stripped.strip().rstrip("\\").strip())
      depth += _bracket_depth(stripped)
      continue
    if key is not None:
      bindings[key] = " ".join(p for p in parts if p)
      key = None
    if not stripped or stripped.startswith(("import ", "from ", "include ")):
      continue
    name, sep, value = stripped.partition(" = ")
    if sep and not line[:1].isspace():
      key, parts, depth = name.strip(), [value.rstrip("\\").strip()], _bracket_depth(value)
  if key is not None:
    bindings[key] = " ".join(p for p in parts if p)
  return bindings


def _bracket_depth(text: str) -> int:
  return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def _read_json(path: str) -> Any:
  try:
    return json.loads(storage.read_text(path))
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None


def _number(value: Any) -> Optional[float]:
  if value is None or isinstance(value, bool):
    return None
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def read_t5x_eval(directory: str) -> dict[str, dict[int, float]]:
  """t5x's `<task>-metrics.jsonl` files -> {dataset: {step: macro_f1}} ({} if none)."""
  if not storage.isdir(directory):
    return {}
  scores: dict[str, dict[int, float]] = {}
  for name in storage.listdir(directory):
    match = _T5X_METRICS_RE.fullmatch(name)
    if not match:
      continue
    for record in storage.read_jsonl(storage.join(directory, name)):
      value = _number(record.get("macro_f1"))
      if value is not None and "step" in record:
        scores.setdefault(reports.dataset_of(match.group("task")), {})[int(record["step"])] = value
  return scores


def read_run(path: str, label: Optional[str] = None,
             extra_eval_dirs: Sequence[str] = ()) -> Run:
  """Everything `compare` uses from one run directory (see the module docstring)."""
  if not storage.isdir(path):
    raise FileNotFoundError(f"run directory {path}: not found")
  run = Run(label=label or os.path.basename(os.path.normpath(path)), path=path)

  def present(name: str) -> Optional[str]:
    full = storage.join(path, name)
    if storage.exists(full):
      run.sources.append(full)
      return full
    return None

  for name, prefix in ((MODEL_INFO_FILE, "model"), (DATA_MANIFEST_FILE, "data")):
    full = present(name)
    if full:
      run.settings.update(flatten(_read_json(full), prefix))
  full = present(CONFIG_GIN_FILE)
  if full:
    run.settings.update({f"gin.{k}": v for k, v in
                         parse_gin_config(storage.read_text(full)).items()})
  full = present(METRICS_FILE)
  if full:
    steps, losses = reports.curve(storage.read_jsonl(full), "train/loss")
    run.loss = list(zip(steps, losses))

  step_reports: dict[int, dict] = {}
  for directory in [storage.join(path, EVAL_SUBDIR), *extra_eval_dirs]:
    found = reports.read_step_reports(directory)
    if found:
      run.sources.append(directory)
      run.eval_dirs.append(directory)
    step_reports.update(found)
  for dataset, by_step in reports.f1_history(step_reports).items():
    run.f1.setdefault(dataset, {}).update(by_step)
  if step_reports:
    last = step_reports[max(step_reports)]
    run.settings.update({f"eval.{k}": v for k, v in last.items()
                         if k not in ("tasks", "step", "mean") and not isinstance(v, dict)})
  # t5x: the training run's own inference evaluation, and `t5x.eval` output given as an extra
  # directory (its EVAL_OUTPUT_DIR, or the inference_eval directory inside it).
  t5x_dirs = [storage.join(path, T5X_EVAL_SUBDIR)]
  for directory in extra_eval_dirs:
    t5x_dirs += [directory, storage.join(directory, T5X_EVAL_SUBDIR)]
  for t5x_dir in t5x_dirs:
    t5x_scores = read_t5x_eval(t5x_dir)
    if t5x_scores:
      run.sources.append(t5x_dir)
    for dataset, by_step in t5x_scores.items():
      run.f1.setdefault(dataset, {}).update(by_step)
  run.f1 = {ds: dict(sorted(by_step.items())) for ds, by_step in sorted(run.f1.items())}
  for key in _SKIPPED_SETTINGS:
    run.settings.pop(key, None)
  return run


# ------------------------------------------------------------------------------------------
# Comparing
# ------------------------------------------------------------------------------------------


def differing_settings(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
  """{setting: {label: value or None}} for the settings that take two or more values among the
  runs that record them. Settings that only name each run's own directory are left out
  (MODEL_DIR and the like always differ); settings some runs do not record but that agree
  wherever recorded are counted by `unrecorded_settings` instead (a run made before a file
  existed would otherwise fill the table with every line of that file)."""
  keys = sorted(set().union(*(run.settings for run in runs)))
  out = {}
  for key in keys:
    present = [run for run in runs if key in run.settings]
    if len({json.dumps(run.settings[key], sort_keys=True, default=str)
            for run in present}) <= 1:
      continue
    if all(isinstance(run.settings[key], str) and _names_own_dir(run, run.settings[key])
           for run in present):
      continue
    out[key] = {run.label: run.settings.get(key) for run in runs}
  return out


def unrecorded_settings(runs: Sequence[Run]) -> dict[str, int]:
  """{label: how many settings other runs record and this one does not} (non-zero only)."""
  keys = set().union(*(run.settings for run in runs))
  missing = {run.label: len(keys - set(run.settings)) for run in runs}
  return {label: n for label, n in missing.items() if n}


def _names_own_dir(run: Run, value: str) -> bool:
  own = os.path.normpath(run.path)
  return own in value or os.path.abspath(own) in value


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def run_summary(run: Run, datasets: Sequence[str]) -> dict:
  """Best (and its step) and last macro F1 per dataset; the mean over datasets at every step
  where all were evaluated, and the best of those means (the paper's checkpoint rule)."""
  per_dataset = {}
  for ds in datasets:
    by_step = run.f1.get(ds, {})
    if not by_step:
      per_dataset[ds] = {"best": None, "best_step": None, "last": None, "last_step": None}
      continue
    best_step = max(by_step, key=lambda s: (by_step[s], -s))  # ties: the earliest step
    last_step = max(by_step)
    per_dataset[ds] = {"best": by_step[best_step], "best_step": best_step,
                       "last": by_step[last_step], "last_step": last_step}
  common_steps = sorted(set.intersection(*(set(run.f1.get(ds, {})) for ds in datasets))
                        if datasets else set())
  mean_by_step = {s: _mean(run.f1[ds][s] for ds in datasets) for s in common_steps}
  best_mean_step = (max(mean_by_step, key=lambda s: (mean_by_step[s], -s))
                    if mean_by_step else None)
  return {
      "path": run.path, "sources": run.sources, "datasets": per_dataset,
      "mean_of_best": _mean(v["best"] for v in per_dataset.values()),
      "mean_last": mean_by_step[max(mean_by_step)] if mean_by_step else None,
      "mean_by_step": mean_by_step,
      "best_mean": mean_by_step.get(best_mean_step), "best_mean_step": best_mean_step,
      "f1_by_step": {ds: run.f1.get(ds, {}) for ds in datasets},
      "loss": [[s, v] for s, v in run.loss],
  }


def summarize(runs: Sequence[Run]) -> dict:
  """The JSON document of a comparison."""
  labels = [run.label for run in runs]
  duplicates = sorted({label for label in labels if labels.count(label) > 1})
  if duplicates:
    raise ValueError(f"two runs are labelled {', '.join(duplicates)}: give labels "
                     "(LABEL=RUN_DIR)")
  datasets = sorted(set().union(*(run.f1 for run in runs)))
  return {"datasets": datasets, "runs": {run.label: run_summary(run, datasets) for run in runs},
          "differences": differing_settings(runs), "unrecorded": unrecorded_settings(runs)}


def bootstrap_against_first(runs: Sequence[Run], datasets: Sequence[str], *,
                            samples: int, seed: int = 0) -> dict:
  """Per dataset, each later run's macro F1 minus the first run's, at each run's last
  evaluated step, with a paired bootstrap's 95% interval over the evaluated sentences
  (punified_jax.bootstrap: evaluation-sample noise only, not seed noise).  A pair without
  prediction files on both sides gets a "missing" note instead of numbers."""
  baseline, others = runs[0], runs[1:]
  result: dict[str, Any] = {"baseline": baseline.label, "samples": samples, "datasets": {}}
  for ds in datasets:
    row = result["datasets"][ds] = {}
    for other in others:
      files = []
      for run in (baseline, other):
        steps = run.f1.get(ds)
        files.append(bootstrap.find_prediction_file(run.eval_dirs, ds, max(steps))
                     if steps else None)
      if None in files:
        row[other.label] = {"missing": "no per-sentence predictions for " + " and ".join(
            run.label for run, path in zip((baseline, other), files) if path is None)}
        continue
      row[other.label] = bootstrap.paired_bootstrap(
          bootstrap.read_predictions(files[0]), bootstrap.read_predictions(files[1]), ds,
          samples=samples, seed=seed, what=f"{files[0]} and {files[1]}")
      row[other.label]["files"] = files
  return result


def _cell(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.2f}"


def _text_table(rows: list[list[str]]) -> list[str]:
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(row, widths))).rstrip() for row in rows]
  lines.insert(1, "-" * max(len(line) for line in lines))
  return lines


def _value_text(value: Any, limit: int = 40) -> str:
  if isinstance(value, float):  # rates as integers, shares to 4 significant digits
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
  text = "-" if value is None else value if isinstance(value, str) else json.dumps(
      value, ensure_ascii=False, sort_keys=True)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def format_tables(summary: Mapping[str, Any]) -> str:
  """Macro F1 (best@step and last per run), the means, the final loss, the differing settings."""
  labels = list(summary["runs"])
  rows = [["macro F1"] + [f"{label} {part}" for label in labels for part in ("best@step", "last")]]
  for ds in summary["datasets"]:
    row = [ds]
    for label in labels:
      entry = summary["runs"][label]["datasets"][ds]
      best = ("-" if entry["best"] is None
              else f"{entry['best']:.2f}@{entry['best_step']}")
      row += [best, _cell(entry["last"])]
    rows.append(row)
  row = ["mean"]
  for label in labels:
    run = summary["runs"][label]
    best = ("-" if run["best_mean"] is None
            else f"{run['best_mean']:.2f}@{run['best_mean_step']}")
    row += [best, _cell(run["mean_last"])]
  rows.append(row)
  row = ["final loss"]
  for label in labels:
    loss = summary["runs"][label]["loss"]
    row += ["", "-" if not loss else f"{loss[-1][1]:.4f}@{loss[-1][0]}"]
  rows.append(row)
  lines = _text_table(rows)
  lines.append("(mean: over the datasets, at the steps where every dataset was evaluated; "
               "best@step: the step with the best mean)")
  differences = summary["differences"]
  if differences:
    lines.append("")
    lines += _text_table([["setting"] + labels] + [
        [key] + [_value_text(values.get(label)) for label in labels]
        for key, values in differences.items()])
  else:
    lines.append("\nno recorded setting differs between the runs")
  lines += _bootstrap_table(summary.get("bootstrap"))
  unrecorded = summary.get("unrecorded") or {}
  if unrecorded:
    lines.append("settings that other runs record and these do not (elsewhere equal, so not "
                 "listed): " + ", ".join(f"{label} {n}" for label, n in unrecorded.items()))
  return "\n".join(lines)


def _bootstrap_table(result: Optional[Mapping[str, Any]]) -> list[str]:
  if not result or not result["datasets"]:
    return []
  labels = list(next(iter(result["datasets"].values())))
  if not labels:
    return []
  rows = [[f"minus {result['baseline']}"] + labels]
  for ds, row in result["datasets"].items():
    cells = []
    for label in labels:
      entry = row[label]
      cells.append("-" if "missing" in entry else
                   f"{entry['difference']:+.2f} [{entry['low']:+.2f}, {entry['high']:+.2f}]")
    rows.append([ds] + cells)
  return ["", *_text_table(rows),
          f"(macro F1 difference at each run's last evaluation, 95% paired bootstrap interval "
          f"over the evaluated sentences, {result['samples']} samples: evaluation-sample noise "
          "only, not seed noise)"]


def plot(summary: Mapping[str, Any], path: str, *, title: str = "runs compared") -> str:
  """PNG: one panel per dataset (macro F1 over steps, a line per run), the mean over datasets,
  and the training loss curves."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  datasets = summary["datasets"]
  panels = len(datasets) + 2
  columns = min(3, panels)
  rows = -(-panels // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
  flat = list(axes.ravel())
  labels = list(summary["runs"])
  colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
  for axis, ds in zip(flat, datasets):
    for label in labels:
      points = summary["runs"][label]["f1_by_step"].get(ds, {})
      if points:
        steps = sorted(points)
        axis.plot(steps, [points[s] for s in steps], marker="o", color=colors[label],
                  label=label)
    axis.set_title(f"{ds}: macro F1")
    axis.set_xlabel("step")
  mean_axis, loss_axis = flat[len(datasets)], flat[len(datasets) + 1]
  for label in labels:
    points = summary["runs"][label]["mean_by_step"]
    if points:
      steps = sorted(points)
      mean_axis.plot(steps, [points[s] for s in steps], marker="o", color=colors[label],
                     label=label)
    loss = summary["runs"][label]["loss"]
    if loss:
      loss_axis.plot([s for s, _ in loss], [v for _, v in loss], color=colors[label],
                     label=label)
  mean_axis.set_title("mean macro F1 over datasets")
  mean_axis.set_xlabel("step")
  loss_axis.set_title("training loss")
  loss_axis.set_xlabel("step")
  if any(summary["runs"][label]["loss"] for label in labels):
    loss_axis.set_yscale("log")
  for axis in flat[len(datasets) + 2:]:
    axis.axis("off")
  handles, names = [], []
  for axis in flat:
    for handle, name in zip(*axis.get_legend_handles_labels()):
      if name not in names:
        handles.append(handle)
        names.append(name)
  if handles:
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5))
  fig.suptitle(title)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  plt.close(fig)
  storage.write_bytes_atomic(path, buffer.getvalue())
  return path


def compare(runs: Sequence[tuple[Optional[str], str]], output_dir: str, *,
            extra_eval_dirs: Optional[Mapping[str, Sequence[str]]] = None,
            title: str = "runs compared", bootstrap_samples: int = 0) -> dict:
  """Reads `runs` ([(label or None, run_dir)]), writes `<output_dir>/compare.json` and
  `compare.png`; returns the summary (with the paths of what it wrote).  bootstrap_samples > 0
  adds `bootstrap_against_first` (differences to the first run with their intervals)."""
  if not runs:
    raise ValueError("compare needs at least one run directory")
  extra_eval_dirs = dict(extra_eval_dirs or {})
  read = []
  for label, path in runs:
    label = label or os.path.basename(os.path.normpath(path))
    read.append(read_run(path, label, extra_eval_dirs.pop(label, ())))
  if extra_eval_dirs:
    raise ValueError(f"evaluation directories given for unknown run label(s) "
                     f"{', '.join(sorted(extra_eval_dirs))}; runs: "
                     f"{', '.join(r.label for r in read)}")
  summary = summarize(read)
  if bootstrap_samples > 0 and len(read) > 1:
    summary["bootstrap"] = bootstrap_against_first(read, summary["datasets"],
                                                   samples=bootstrap_samples)
  storage.makedirs(output_dir)
  summary["png"] = plot(summary, storage.join(output_dir, "compare.png"), title=title)
  summary["json"] = storage.join(output_dir, "compare.json")
  storage.write_json_atomic(summary["json"], summary)
  return summary
