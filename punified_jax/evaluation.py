"""Evaluation: beam-search decode every task's validation split, run its seqio metrics, pick the best.

`Evaluator` wraps `seqio.Evaluator` (seqio 0.0.20): seqio selects the tasks of the mixture that
have the split and metric functions, caches their examples once, converts them without packing,
and after our `predict_fn` returns token ids per example index it decodes them with the task's
vocabulary, applies the task's postprocessor and metric functions. We add the decoding (jitted
beam search from generate.py on the same mesh as training), the mean of the selection metric over
tasks (the paper picks checkpoints by mean F1 over datasets), a JSON report per evaluation
(`<report_dir>/step_<N>.json`) and `evaluate_checkpoint`, the standalone mode behind
`python -m punified_jax.eval`.

Every host runs the same evaluation (each holds the whole, small, eval set): the input batch is
a global array sharded over `data`, and the decoded ids are gathered back to every host. Only
process 0 writes the report.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping

import gin
import jax
import jax.numpy as jnp
import numpy as np

from punified_jax import checkpoints as checkpoints_lib
from punified_jax import generate
from punified_jax import partitioning
from punified_jax import run_dir
from punified_jax import storage

logger = logging.getLogger(__name__)


def _json_ready(value: Any) -> Any:
  """Metric values -> strict JSON (NaN/inf become null; numpy -> Python; tuples -> lists)."""
  if isinstance(value, Mapping):
    return {str(k): _json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_ready(v) for v in value]
  if isinstance(value, np.ndarray):
    return _json_ready(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else None
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if hasattr(value, "value") and not isinstance(value, (str, int)):  # seqio.metrics.Scalar & co.
    return _json_ready(value.value)
  return value


def clean_prediction(tokens: np.ndarray, eos_id: int) -> list[int]:
  """A decoded row with everything after the first EOS set to 0 (padding); length kept.

  seqio's evaluator stacks all predictions of a task into one numpy array, so rows must keep a
  common length; `Vocabulary.decode` stops at EOS.
  """
  ids = [int(t) for t in tokens]
  if eos_id in ids:
    end = ids.index(eos_id) + 1
    ids = ids[:end] + [0] * (len(ids) - end)
  return ids


@gin.configurable(denylist=["mixture_or_task_name", "model", "partitioner"])
class Evaluator:
  """Decodes and scores the validation split of every task (with metrics) of a mixture.

  Args:
    mixture_or_task_name: the training mixture or a task; tasks without the split or without
      metric_fns are skipped by seqio (prefix-LM tasks, for instance).
    model: the flax module.
    partitioner: the training partitioner (decoding runs on the same mesh and parameters).
    eval_split: seqio split name.
    max_examples: the first N examples of each task (EVAL_MAX_EXAMPLES); None = all.
    batch_size: decoding batch (padded to a multiple of the data-parallel size).
    beam_size, alpha: beam search width and length penalty (beam_size 1 = greedy).
    max_decode_length: None = the longest target in the eval data (seqio measures it).
    feature_lengths: None = automatic (longest inputs/targets of the eval data).
    selection_metric: the metric whose mean over tasks selects the best checkpoint.
    constrained: decode with constraints.NerCopyConstraint (types copied from the prompt, spans
      from the input text; GUIDE section 4). The paper decodes unconstrained (the default).
    constraint_factory: any other `vocabulary -> decoding.LogitsConstraint` (wins over
      `constrained`).
    stopping: the beam search's stopping rule (decoding.beam_search). "best" (default) is
      exact for the best hypothesis, the only one evaluated: the same predictions as t5x's
      "all" in fewer steps; "early" is Hugging Face's early_stopping=True.
  """

  def __init__(self, *, mixture_or_task_name: str, model, partitioner: partitioning.Partitioner,
               eval_split: str = "validation", max_examples: int | None = None, batch_size: int = 32,
               beam_size: int = 4, alpha: float = 0.6, max_decode_length: int | None = None,
               feature_lengths: Mapping[str, int] | None = None, selection_metric: str = "macro_f1",
               constrained: bool = False, constraint_factory: Callable[[Any], Any] | None = None,
               stopping: str = "best"):
    import seqio  # pylint: disable=g-import-not-at-top
    if batch_size < 1:
      raise ValueError(f"Evaluator.batch_size must be >= 1, got {batch_size}")
    if beam_size < 1:
      raise ValueError(f"Evaluator.beam_size must be >= 1, got {beam_size}")
    if max_examples is not None and max_examples < 1:
      raise ValueError(f"EVAL_MAX_EXAMPLES must be >= 1 or None, got {max_examples}")
    self.model = model
    self.partitioner = partitioner
    self.selection_metric = selection_metric
    self.beam_size = beam_size
    self.alpha = alpha
    self.stopping = stopping
    data_size = partitioner.mesh_sizes[partitioning.DATA_AXIS]
    self.batch_size = -(-batch_size // data_size) * data_size
    self._seqio = seqio.Evaluator(
        mixture_or_task_name,
        feature_converter=seqio.EncDecFeatureConverter(pack=False),
        eval_split=eval_split,
        sequence_length=dict(feature_lengths) if feature_lengths else None,
        num_examples=max_examples,
        async_compute_metrics=False,
        use_memory_cache=True,
    )
    self.enabled = bool(self._seqio.eval_tasks)
    if not self.enabled:
      logger.warning("%s: no task has a %r split with metric functions; evaluation disabled",
                     mixture_or_task_name, eval_split)
      return
    vocabulary = self._seqio.eval_tasks[0].output_features["targets"].vocabulary
    self.eos_id = vocabulary.eos_id
    target_shape = self._seqio.model_feature_shapes["decoder_target_tokens"]
    self.max_decode_length = int(max_decode_length or target_shape[-1])
    if constraint_factory is None and constrained:
      from punified_jax import constraints  # pylint: disable=g-import-not-at-top
      constraint_factory = constraints.NerCopyConstraint.from_vocabulary
    self.constraint = constraint_factory(vocabulary) if constraint_factory else None
    self.task_names = [task.name for task in self._seqio.eval_tasks]
    self.num_examples = {name: int(ds.cardinality().numpy())
                         for name, ds in self._seqio.cached_task_datasets.items()}

  # Decoding --------------------------------------------------------------------------------

  def _decode(self, params, encoder_input_tokens: np.ndarray) -> np.ndarray:
    """[batch, input_len] host ids -> [batch, max_decode_length] best-beam ids on every host."""
    sharding = self.partitioner.data_sharding
    tokens = jax.make_array_from_callback(encoder_input_tokens.shape, sharding,
                                          lambda index: encoder_input_tokens[index])
    with self.partitioner.activation_context():
      decoded, _ = generate.predict_batch(self.model, params, tokens, beam_size=self.beam_size,
                                          max_decode_length=self.max_decode_length, alpha=self.alpha,
                                          constraint=self.constraint, eos_id=self.eos_id,
                                          stopping=self.stopping)
    best = decoded[:, 0, :]
    if best.is_fully_addressable:
      return np.asarray(best)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(best, tiled=True))

  def _predict_fn(self, params):

    def predict_fn(dataset, model_feature_shapes=None):
      """Decodes every example; batches of similar length, each cut to its input bucket.

      seqio pads every input to the task's feature length, but most inputs are far shorter:
      sorted by length, a batch is cut to the shortest bucket (generate.input_buckets) that
      holds its longest input, so the encoder and cross-attention skip the padding. Every host
      iterates the same data, so all hosts form the same batches.
      """
      del model_feature_shapes
      examples = [(int(index), features["encoder_input_tokens"].astype(np.int32))
                  for index, features in dataset.as_numpy_iterator()]
      if not examples:
        return []
      buckets = generate.input_buckets(examples[0][1].shape[-1])
      examples.sort(key=lambda item: int(np.count_nonzero(item[1])))
      results = []
      for begin in range(0, len(examples), self.batch_size):
        chunk = examples[begin:begin + self.batch_size]
        batch = np.zeros((self.batch_size, chunk[0][1].shape[-1]), np.int32)
        batch[:len(chunk)] = np.stack([inputs for _, inputs in chunk])
        decoded = self._decode(params, generate.trim_to_bucket(batch, buckets))
        for (index, _), row in zip(chunk, decoded[:len(chunk)]):
          results.append((index, clean_prediction(row, self.eos_id)))
      return results

    return predict_fn

  # Public API ------------------------------------------------------------------------------

  def evaluate(self, params, *, step: int, report_dir: str | None = None) -> dict:
    """Decodes, scores, averages; writes `<report_dir>/step_<step>.json` (process 0).

    Returns {"step", "tasks": {task: {metric: value}}, "mean", "selection_metric",
    "num_examples", "beam_size"}; "mean" is the mean of `selection_metric` over the tasks that
    report a finite value (None if none does).
    """
    if not self.enabled:
      return {"step": step, "tasks": {}, "mean": None, "selection_metric": self.selection_metric}
    metrics_future, _ = self._seqio.evaluate(compute_metrics=True, step=step, predict_fn=self._predict_fn(params))
    all_metrics = metrics_future.result() or {}
    tasks = {name: _json_ready(dict(values)) for name, values in all_metrics.items()}
    selected = []
    for name, values in tasks.items():
      value = values.get(self.selection_metric)
      if value is None:
        if self.selection_metric not in values:
          logger.warning("task %s reports no %r (it reports %s)", name, self.selection_metric, sorted(values))
        continue
      selected.append(float(value))
    mean = float(np.mean(selected)) if selected else None
    result = {"step": int(step), "selection_metric": self.selection_metric, "mean": mean, "tasks": tasks,
              "num_examples": dict(self.num_examples), "beam_size": self.beam_size,
              "constrained": self.constraint is not None}
    if report_dir and jax.process_index() == 0:
      storage.write_json_atomic(storage.join(report_dir, f"step_{int(step)}.json"), result,
                                sort_keys=False, allow_nan=False)
    return result

  def close(self) -> None:
    if getattr(self, "_seqio", None) is not None:
      self._seqio.close()


@gin.configurable
def evaluate_checkpoint(
    *,
    model=gin.REQUIRED,
    checkpoint_path: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    partitioner: partitioning.Partitioner | None = None,
) -> dict:
  """Standalone evaluation of one checkpoint (a run dir -- its best checkpoint if kept, else the
  latest, run_dir's rule --, a checkpoints/ or best/ dir, or a step dir; local or gs://).

  Writes `<output_dir>/step_<N>.json` (N = the checkpoint's step) and returns the result.
  """
  partitioner = partitioner or partitioning.Partitioner()
  chosen = run_dir.resolve_checkpoint_path(checkpoint_path)
  item_dir, step = chosen.item_dir, chosen.step
  abstract_boxed = jax.eval_shape(
      lambda rng: model.init(rng, jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32),
                             jnp.ones((1, 1), jnp.int32), enable_dropout=False)["params"],
      jax.random.key(0))
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  specs = partitioner.param_specs(abstract_boxed)
  shardings = partitioner.shardings_from_specs(specs)
  abstract = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                          nn.meta.unbox(abstract_boxed), shardings)
  params = checkpoints_lib.restore_params(item_dir, abstract)
  evaluator = Evaluator(mixture_or_task_name=mixture_or_task_name, model=model, partitioner=partitioner)
  try:
    result = evaluator.evaluate(params, step=step if step is not None else 0, report_dir=output_dir)
  finally:
    evaluator.close()
  result["checkpoint"] = item_dir
  if jax.process_index() == 0:
    mean = result.get("mean")
    print(f"checkpoint {item_dir}: mean {result['selection_metric']} = "
          f"{'n/a' if mean is None else f'{mean:.2f}'}", flush=True)
    for task, metrics in result["tasks"].items():
      value = metrics.get(result["selection_metric"])
      print(f"  {task}: {result['selection_metric']} = {value}", flush=True)
  return result
