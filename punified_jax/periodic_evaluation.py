"""Evaluation during training: every `period` steps, decode the validation splits, log the scores
and keep the best checkpoint.

`PeriodicEvaluator` is what `trainer.train` holds instead of closure state. It builds the
evaluator (evaluation.Evaluator, or any factory with its interface) at the first evaluation only,
because building it reads and caches every validation split; an evaluator that says it has
nothing to score (`enabled` False) switches evaluation off for the rest of the run. The best
checkpoint (the paper's rule: the best mean of the selection metric over tasks) goes to the run
directory's best/ with its value in eval/best.json (checkpoints.BestCheckpointTracker).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping

import jax

from punified_jax import checkpoints as checkpoints_lib
from punified_jax import evaluation
from punified_jax import run_dir

logger = logging.getLogger(__name__)


class PeriodicEvaluator:
  """Evaluates at every multiple of `period` steps (None or 0: never).

  Args:
    period: evaluate when `step % period == 0`.
    factory: `factory(mixture_or_task_name=, model=, partitioner=)` -> an evaluator with
      `enabled`, `selection_metric`, `evaluate(params, step=, report_dir=)` and `close()`;
      None = `evaluation.Evaluator` (through gin).
    mixture_or_task_name, model, partitioner: what the evaluator decodes with.
    model_dir: the run directory (reports under eval/, the best checkpoint under best/).
    writer: the run's metric writer (`write_scalars(step, scalars)`).
  """

  def __init__(self, *, period: int | None, factory: Callable[..., Any] | None, mixture_or_task_name: str,
               model: Any, partitioner: Any, model_dir: str, writer: Any):
    self._period = period or 0
    self._factory = factory
    self._provider_args = dict(mixture_or_task_name=mixture_or_task_name, model=model, partitioner=partitioner)
    self._layout = run_dir.Layout(model_dir)
    self._writer = writer
    self._disabled = not self._period
    self.evaluator = None
    self.best: checkpoints_lib.BestCheckpointTracker | None = None

  def due(self, step: int) -> bool:
    """Whether `step` is an evaluation step (and evaluation has not been switched off)."""
    return not self._disabled and step % self._period == 0

  def evaluate(self, step: int, state: Any, meta: Mapping[str, Any]) -> dict | None:
    """Evaluates `state` (a TrainState) at `step`; returns the evaluator's result, or None when
    there is nothing to evaluate. `meta` is the checkpoint meta the best checkpoint is saved with."""
    if self._disabled or not self._ensure_evaluator():
      return None
    evaluator = self.evaluator
    result = evaluator.evaluate(state.params, step=step, report_dir=self._layout.eval_dir)
    self._write_scalars(step, result, evaluator.selection_metric)
    mean = result.get("mean")
    if jax.process_index() == 0:
      print(f"eval at step {step}: mean {evaluator.selection_metric} = "
            f"{'n/a' if mean is None else f'{mean:.2f}'} over {len(result['tasks'])} task(s)", flush=True)
    if mean is not None and math.isfinite(mean) and self.best.update(step, mean, state.as_tree(), meta):
      logger.info("new best checkpoint at step %d (%s)", step, mean)
    return result

  def close(self) -> None:
    if self.best is not None:
      self.best.close()
    if self.evaluator is not None:
      self.evaluator.close()

  def _ensure_evaluator(self) -> bool:
    if self.evaluator is not None:
      return True
    evaluator = (self._factory or evaluation.Evaluator)(**self._provider_args)
    if not evaluator.enabled:
      self._disabled = True
      return False
    self.evaluator = evaluator
    self.best = checkpoints_lib.BestCheckpointTracker(self._layout.best, self._layout.best_summary,
                                                      metric=evaluator.selection_metric)
    return True

  def _write_scalars(self, step: int, result: Mapping[str, Any], selection_metric: str) -> None:
    """eval/<task>/<metric> for every numeric per-task value, and eval/mean_<selection metric>."""
    scalars = {}
    for task, metrics in result["tasks"].items():
      for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          scalars[f"eval/{task}/{key}"] = value
    if result.get("mean") is not None:
      scalars[f"eval/mean_{selection_metric}"] = result["mean"]
    if scalars:
      self._writer.write_scalars(step, scalars)
