"""PeriodicEvaluator, the trainer's evaluation every EVAL_PERIOD steps, on its own: when it runs,
what it writes, which checkpoint it keeps as best. A scripted evaluator stands in for decoding
(the trainer tests run the real one)."""

import json
import os

import jax.numpy as jnp

from punified_jax import periodic_evaluation
from punified_jax import trainer


class ScriptedEvaluator:
  """Returns the next scripted result at every `evaluate`; records its calls."""

  def __init__(self, results, *, enabled=True, **provider_args):
    self.provider_args = provider_args
    self.enabled = enabled
    self.selection_metric = "macro_f1"
    self.results = list(results)
    self.calls = []
    self.closed = False

  def evaluate(self, params, *, step, report_dir):
    self.calls.append((step, report_dir, float(params["w"])))
    return self.results.pop(0)

  def close(self):
    self.closed = True


class RecordingWriter:

  def __init__(self):
    self.written = []

  def write_scalars(self, step, scalars):
    self.written.append((step, dict(scalars)))


def _state(value):
  return trainer.TrainState(step=jnp.asarray(0, jnp.int32), params={"w": jnp.asarray(value, jnp.float32)},
                            opt_state={})


def _result(mean, f1):
  return {"mean": mean, "tasks": {"punified_ner_resume": {"macro_f1": f1, "exact_match": 3, "constrained": True}}}


def _periodic(tmp_path, factory, period=10):
  writer = RecordingWriter()
  periodic = periodic_evaluation.PeriodicEvaluator(
      period=period, factory=factory, mixture_or_task_name="mix", model="the model", partitioner="the mesh",
      model_dir=str(tmp_path), writer=writer)
  return periodic, writer


def test_evaluates_at_multiples_and_keeps_the_best_checkpoint(tmp_path):
  built = []

  def factory(**kwargs):
    built.append(ScriptedEvaluator([_result(60.0, 60.0), _result(40.0, 40.0), _result(80.0, 80.0)], **kwargs))
    return built[-1]

  periodic, writer = _periodic(tmp_path, factory)
  assert [step for step in range(1, 31) if periodic.due(step)] == [10, 20, 30]
  assert built == []  # nothing read before the first evaluation
  means = [periodic.evaluate(step, _state(weight), {"step": step})["mean"]
           for step, weight in ((10, 1.0), (20, 2.0), (30, 3.0))]
  assert means == [60.0, 40.0, 80.0]
  assert len(built) == 1
  assert built[0].provider_args == {"mixture_or_task_name": "mix", "model": "the model", "partitioner": "the mesh"}
  assert built[0].calls == [(10, str(tmp_path / "eval"), 1.0), (20, str(tmp_path / "eval"), 2.0),
                            (30, str(tmp_path / "eval"), 3.0)]
  # Numeric per-task values (not booleans) and the mean of the selection metric.
  assert writer.written[0] == (10, {"eval/punified_ner_resume/macro_f1": 60.0,
                                    "eval/punified_ner_resume/exact_match": 3, "eval/mean_macro_f1": 60.0})
  assert [step for step, _ in writer.written] == [10, 20, 30]
  # Step 20 (40.0) did not beat step 10; step 30 (80.0) did.
  assert json.loads((tmp_path / "eval" / "best.json").read_text()) == {"metric": "macro_f1", "value": 80.0,
                                                                      "step": 30}
  periodic.close()
  assert sorted(os.listdir(tmp_path / "best")) == ["30"]
  assert built[0].closed


def test_no_period_never_builds_an_evaluator(tmp_path):
  def factory(**kwargs):
    raise AssertionError("built an evaluator without an eval period")

  for period in (None, 0):
    periodic, writer = _periodic(tmp_path, factory, period=period)
    assert not any(periodic.due(step) for step in range(1, 50))
    assert periodic.evaluate(10, _state(1.0), {}) is None
    periodic.close()
    assert writer.written == []


def test_an_evaluator_with_nothing_to_score_switches_evaluation_off(tmp_path):
  built = []

  def factory(**kwargs):
    built.append(ScriptedEvaluator([], enabled=False, **kwargs))
    return built[-1]

  periodic, writer = _periodic(tmp_path, factory)
  assert periodic.due(10)
  assert periodic.evaluate(10, _state(1.0), {}) is None
  assert not periodic.due(20) and periodic.evaluate(20, _state(1.0), {}) is None
  assert len(built) == 1 and built[0].calls == [] and writer.written == []
  periodic.close()
  assert not os.path.exists(tmp_path / "best") and not os.path.exists(tmp_path / "eval" / "best.json")


def test_no_mean_writes_task_scores_and_keeps_no_best(tmp_path):
  evaluator = ScriptedEvaluator([_result(None, 50.0), _result(float("nan"), 50.0)])
  periodic, writer = _periodic(tmp_path, lambda **kwargs: evaluator)
  assert periodic.evaluate(10, _state(1.0), {})["mean"] is None
  periodic.evaluate(20, _state(1.0), {})
  assert writer.written[0] == (10, {"eval/punified_ner_resume/macro_f1": 50.0,
                                    "eval/punified_ner_resume/exact_match": 3})
  periodic.close()
  assert not os.path.exists(tmp_path / "eval" / "best.json") and evaluator.closed
