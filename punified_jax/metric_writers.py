"""Metric output: TensorBoard and JSONL through CLU's MetricWriter interface, plus console lines.

Only process 0 writes (every host computes the same global scalars). The JSONL file,
`<MODEL_DIR>/metrics.jsonl`, holds one JSON object per logged step, e.g.
`{"step": 100, "train/loss": 1.23, "train/learning_rate": 0.001}`; values written for the same
step by several `write_scalars` calls are merged into one object. After a restart from step S
the records of steps > S (written by the run that died after its last checkpoint and about to be
recomputed) are removed, so the file reads like one uninterrupted run.

Console progress is plain text, one line every LOG_EVERY steps (logs and CI are not terminals):
`step 120/1000 (12.0%) | loss 1.2345 | lr 1.00e-03 | 3.21 steps/s | ETA 4m34s`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any, Mapping, TextIO

import numpy as np

from punified_jax import run_dir
from punified_jax import storage

logger = logging.getLogger(__name__)

try:  # clu.metric_writers imports TensorBoard's summary API at import time.
  from clu import metric_writers as _clu_writers
  _CLU_IMPORT_ERROR = None
except ImportError as error:  # pragma: no cover - depends on the environment
  _clu_writers = None
  _CLU_IMPORT_ERROR = error


def _to_python(value: Any) -> Any:
  """numpy/jax scalars -> JSON-ready Python numbers (NaN/inf kept as strings JSON can hold)."""
  if hasattr(value, "item") and np.ndim(value) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  return value


_Base = _clu_writers.MetricWriter if _clu_writers is not None else object


class JsonlWriter(_Base):
  """A CLU MetricWriter writing scalars (and texts/hparams) to a JSON-lines file.

  Args:
    path: the .jsonl file (appended to; a gs:// path is rewritten whole, at most once a minute).
    resume_step: if given, records with a step greater than this are dropped first.
    remote_flush_seconds: minimum time between rewrites of a remote file.
  """

  def __init__(self, path: str, resume_step: int | None = None, *, remote_flush_seconds: float = 60.0):
    self._path = path
    self._remote_flush_seconds = remote_flush_seconds
    self._last_remote_flush = 0.0
    # Object stores (gs://) cannot append: there the file is rewritten whole at every flush from
    # the lines kept in memory (a few MB for a long run).
    self._remote = storage.is_remote(path)
    self._lines: list[str] = []
    directory = storage.dirname(path)
    if directory:
      storage.makedirs(directory)
    if storage.exists(path):
      self._load_existing(resume_step)
    self._pending_step: int | None = None
    self._pending: dict[str, Any] = {}
    # Appending is a local-file operation (object stores cannot append).
    self._file = None if self._remote else open(path, "a", encoding="utf-8")

  def _load_existing(self, resume_step: int | None) -> None:
    kept = []
    changed = False
    with storage.open_file(self._path, "r") as handle:
      for line_number, line in enumerate(handle, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          # A line cut short by a kill mid-write: the only damage a crash can do here.
          logger.warning("%s:%d: dropping unreadable metrics line", self._path, line_number)
          changed = True
          continue
        if resume_step is not None and isinstance(record.get("step"), int) and record["step"] > resume_step:
          changed = True
          continue
        kept.append(json.dumps(record, ensure_ascii=False))
    if self._remote:
      self._lines = kept
    elif changed:
      storage.write_text_atomic(self._path, "".join(line + "\n" for line in kept))

  def _write_line(self, line: str) -> None:
    if self._remote:
      self._lines.append(line)
    elif self._file is not None:
      self._file.write(line + "\n")
      self._file.flush()

  def _add(self, step: int, values: Mapping[str, Any]) -> None:
    step = int(step)
    if self._pending_step is not None and step != self._pending_step:
      self._emit()
    self._pending_step = step
    self._pending.update({key: _to_python(value) for key, value in values.items()})

  def _emit(self) -> None:
    if self._pending_step is None:
      return
    record = {"step": self._pending_step, **self._pending}
    self._write_line(json.dumps(record, ensure_ascii=False))
    self._pending_step, self._pending = None, {}

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self._add(step, scalars)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    self._add(step, texts)

  def write_hparams(self, hparams: Mapping[str, Any]):
    self._emit()
    self._write_line(json.dumps({"hparams": {k: _to_python(v) for k, v in hparams.items()}}, ensure_ascii=False,
                                default=str))

  # Non-scalar kinds are not part of this project's metrics; accept and ignore them so that
  # the writer can sit in a MultiWriter with TensorBoard.
  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def flush(self, *, force: bool = False):
    self._emit()
    if self._remote:
      # Rewriting a remote object costs its whole size: at most once a minute, and at close.
      if force or time.monotonic() - self._last_remote_flush >= self._remote_flush_seconds:
        storage.write_text_atomic(self._path, "".join(line + "\n" for line in self._lines))
        self._last_remote_flush = time.monotonic()
    elif self._file is not None:
      self._file.flush()

  def close(self):
    self.flush(force=True)
    if self._file is not None:
      self._file.close()
      self._file = None
    self._remote = False  # nothing more to rewrite


class _NullWriter(_Base):
  """Writer for processes other than 0."""

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_scalars(self, step, scalars):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def create_metric_writer(model_dir: str, *, process_index: int = 0, resume_step: int | None = None,
                         tensorboard: bool = True):
  """TensorBoard (`<model_dir>/tensorboard`) + JSONL (`<model_dir>/metrics.jsonl`) on process 0."""
  if process_index != 0:
    return _NullWriter()
  if _clu_writers is None:
    raise ImportError("clu.metric_writers could not be imported (it needs the `tensorboard` package; "
                      f"pip install tensorboard==2.21.0): {_CLU_IMPORT_ERROR}")
  layout = run_dir.Layout(model_dir)
  writers = [JsonlWriter(layout.metrics, resume_step=resume_step)]
  if tensorboard and storage.is_remote(model_dir) and os.environ.get("STORAGE_EMULATOR_HOST"):
    # TensorBoard's event writer goes through TensorFlow's gfile, which ignores storage
    # emulators and would go to the real service: against an emulator there is no TensorBoard.
    logger.warning("not writing TensorBoard events to %s: STORAGE_EMULATOR_HOST is set and "
                   "TensorFlow's gfile cannot reach an emulator (metrics.jsonl is written)",
                   layout.tensorboard)
    tensorboard = False
  if tensorboard:
    writers.append(_clu_writers.SummaryWriter(layout.tensorboard))
  return _clu_writers.MultiWriter(writers)


def format_duration(seconds: float) -> str:
  """'1h02m', '4m34s', '12s' - short enough for a progress line."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


class ProgressLogger:
  """Plain-text progress lines with throughput and ETA, one every `every` steps.

  The rate is measured over the steps since the previous line (so compilation of the first
  step only affects the first line).
  """

  def __init__(self, total_steps: int, *, start_step: int = 0, every: int = 10, stream: TextIO | None = None,
               enabled: bool = True, clock=time.monotonic):
    self._total = total_steps
    self._every = max(1, every)
    self._stream = stream
    self._enabled = enabled
    self._clock = clock
    self._last_step = start_step
    self._last_time = clock()

  def should_log(self, step: int) -> bool:
    return step % self._every == 0 or step == self._total

  def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Prints one line for `step` (the number of completed steps). Returns the rates."""
    now = self._clock()
    elapsed = now - self._last_time
    steps_done = step - self._last_step
    steps_per_second = steps_done / elapsed if elapsed > 0 and steps_done > 0 else float("nan")
    remaining = self._total - step
    eta = remaining / steps_per_second if steps_per_second and steps_per_second > 0 else float("nan")
    self._last_step, self._last_time = step, now
    if self._enabled:
      parts = [f"step {step}/{self._total} ({100.0 * step / max(self._total, 1):.1f}%)"]
      for key, value in metrics.items():
        value = _to_python(value)
        if isinstance(value, float):
          parts.append(f"{key} {value:.3e}" if key in ("lr", "learning_rate") else f"{key} {value:.4f}")
        else:
          parts.append(f"{key} {value}")
      parts.append(f"{steps_per_second:.2f} steps/s")
      parts.append(f"ETA {format_duration(eta) if remaining > 0 else '0s'}")
      stream = self._stream or sys.stdout
      print(" | ".join(parts), file=stream, flush=True)
    return {"steps_per_second": steps_per_second, "seconds": elapsed}

  def reset_clock(self, step: int) -> None:
    """Restart the rate window (after an evaluation or a checkpoint, which are not training)."""
    self._last_step, self._last_time = step, self._clock()
