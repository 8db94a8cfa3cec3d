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

The split is `eval_split` (gin `EVAL_SPLIT` in eval_base.gin, `--split` on the eval command;
training always selects its best checkpoint on `validation`). A split without gold annotations
is never scored: a task whose source says the split is unlabeled (CLUENER's test file, an
untagged release file) or whose split holds no gold mention is left out and named in the
report's "unscored"; when that leaves nothing to score, it is an error.

Beside each `step_<N>.json`, every task's per-example predictions are written as JSON lines to
`<report_dir>/predictions/<task>_step_<N>.jsonl`: for NER tasks {"index", "id", "text", "types",
"gold", "predicted", "per_type": {type: {"gold", "predicted"}}, "generation"}, mentions as
[type, span text] pairs.
"""

from __future__ import annotations

import functools
import json
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
from punified_jax import sharded_decoding
from punified_jax import storage

logger = logging.getLogger(__name__)

PREDICTIONS_SUBDIR = run_dir.PREDICTIONS_DIR  # under the eval report directory (see module docstring)


class UnlabeledSplitError(ValueError):
  """Evaluation was asked to score only splits that carry no gold annotations."""


def predictions_path(report_dir: str, task_name: str, step: int) -> str:
  return storage.join(report_dir, PREDICTIONS_SUBDIR, f"{task_name}_step_{int(step)}.jsonl")


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
    forbid_repeats, follow_order: with `constrained`, the constraint's optional rules
      (constraints module docstring, BENCHMARKS.md 2e),
      e.g. `--gin.evaluation.Evaluator.follow_order=True`.
    output_budget, end_at_repeat: with `constrained`, the constraint's output budget factor and
      repeat count that ends an output (constraints module docstring); None = the Extractor's
      defaults (constraints.OUTPUT_BUDGET_FACTOR, constraints.END_AT_REPEAT), so a constrained
      evaluation decodes as the Extractor does; 0 = none.
    stopping: the beam search's stopping rule (decoding.beam_search). "best" (default) is
      exact for the best hypothesis, the only one evaluated: the same predictions as t5x's
      "all" in fewer steps; "early" is Hugging Face's early_stopping=True.
  """

  def __init__(self, *, mixture_or_task_name: str, model, partitioner: partitioning.Partitioner,
               eval_split: str = "validation", max_examples: int | None = None, batch_size: int = 32,
               beam_size: int = 4, alpha: float = 0.6, max_decode_length: int | None = None,
               feature_lengths: Mapping[str, int] | None = None, selection_metric: str = "macro_f1",
               constrained: bool = False, constraint_factory: Callable[[Any], Any] | None = None,
               stopping: str = "best", forbid_repeats: bool = False, follow_order: bool = False,
               output_budget: float | None = None, end_at_repeat: int | None = None):
    import seqio  # pylint: disable=g-import-not-at-top
    if batch_size < 1:
      raise ValueError(f"Evaluator.batch_size must be >= 1, got {batch_size}")
    if beam_size < 1:
      raise ValueError(f"Evaluator.beam_size must be >= 1, got {beam_size}")
    if max_examples is not None and max_examples < 1:
      raise ValueError(f"EVAL_MAX_EXAMPLES must be >= 1 or None, got {max_examples}")
    if (forbid_repeats or follow_order or end_at_repeat is not None
        or output_budget is not None) and (
        constraint_factory is not None or not constrained):
      raise ValueError("Evaluator.forbid_repeats / follow_order / end_at_repeat / output_budget "
                       "need constrained=True and no constraint_factory")
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
    self.eval_split = eval_split
    self.unscored = self._drop_unlabeled_tasks(mixture_or_task_name, eval_split)
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
      constraint_factory = functools.partial(
          constraints.NerCopyConstraint.from_vocabulary, forbid_repeats=forbid_repeats,
          follow_order=follow_order,
          end_at_repeat=(constraints.END_AT_REPEAT if end_at_repeat is None else end_at_repeat),
          budget_factor=(constraints.OUTPUT_BUDGET_FACTOR if output_budget is None
                         else output_budget))
    self.constraint = constraint_factory(vocabulary) if constraint_factory else None
    self.task_names = [task.name for task in self._seqio.eval_tasks]
    self.num_examples = {name: int(ds.cardinality().numpy())
                         for name, ds in self._seqio.cached_task_datasets.items()}

  def _drop_unlabeled_tasks(self, name: str, split: str) -> dict[str, str]:
    """Leaves out tasks whose `split` has no gold annotations; {task: reason}. Raises when no
    task is left to score (a split with no gold is never scored, not even as an F1 of zero)."""
    unscored = {}
    for task in self._seqio.eval_tasks:
      gold_problem = getattr(task.source, "gold_problem", None)
      reason = gold_problem(split) if callable(gold_problem) else None
      if reason:
        unscored[task.name] = reason
    if not unscored:
      return {}
    for task_name, reason in unscored.items():
      logger.warning("%s: not scored on %r: %s", task_name, split, reason)
      if jax.process_index() == 0:
        print(f"not scored: {task_name} ({split}): {reason}", flush=True)
    # seqio iterates `eval_tasks` when it decodes and scores; the cached datasets of the tasks
    # left out are simply not used.
    self._seqio._eval_tasks = [t for t in self._seqio.eval_tasks  # pylint: disable=protected-access
                               if t.name not in unscored]
    if not self._seqio.eval_tasks:
      raise UnlabeledSplitError(
          f"{name}: nothing to score on the {split!r} split: "
          + "; ".join(f"{t}: {r}" for t, r in unscored.items())
          + ". Use `python -m punified_jax.infer` (INFER_SPLIT) to write predictions for an "
          "unlabeled split.")
    return unscored

  # Decoding --------------------------------------------------------------------------------

  def _decode(self, params, encoder_input_tokens: np.ndarray) -> np.ndarray:
    """[batch, input_len] host ids -> [batch, max_decode_length] best-beam ids on every host.

    Rows over the mesh's `data` axis, parameters as they are sharded, the result gathered to
    every host (sharded_decoding.MeshDecoder)."""
    decoded = sharded_decoding.MeshDecoder(self.partitioner).decode(
        self.model, params, encoder_input_tokens, self.constraint, beam_size=self.beam_size,
        max_decode_length=self.max_decode_length, alpha=self.alpha, eos_id=self.eos_id,
        stopping=self.stopping, log_prob_beams=1)
    return decoded.tokens[:, 0, :]

  def _predict_fn(self, params):

    def predict_fn(dataset, model_feature_shapes=None):
      """Decodes every example; batches of similar length, each cut to its input bucket.

      seqio pads every input to the task's feature length, but most inputs are far shorter:
      sorted by length, a batch is cut to the shortest bucket (generate.input_buckets) that
      holds its longest input, so the encoder and cross-attention skip the padding. Every host
      iterates the same data, so all hosts form the same batches.  Batches are decoded
      MeshDecoder.concurrent_decodes() at a time (several on a process-local CPU mesh, one at a
      time in order elsewhere: sharded_decoding, "Concurrent decodes").
      """
      del model_feature_shapes
      examples = [(int(index), features["encoder_input_tokens"].astype(np.int32))
                  for index, features in dataset.as_numpy_iterator()]
      if not examples:
        return []
      buckets = generate.input_buckets(examples[0][1].shape[-1])
      examples.sort(key=lambda item: int(np.count_nonzero(item[1])))
      chunks = [examples[begin:begin + self.batch_size]
                for begin in range(0, len(examples), self.batch_size)]

      def decode_chunk(chunk):
        batch = np.zeros((self.batch_size, chunk[0][1].shape[-1]), np.int32)
        batch[:len(chunk)] = np.stack([inputs for _, inputs in chunk])
        return self._decode(params, generate.trim_to_bucket(batch, buckets))

      workers = sharded_decoding.MeshDecoder(self.partitioner).concurrent_decodes()
      results = []
      for chunk, decoded in zip(chunks, sharded_decoding.map_in_order(decode_chunk, chunks,
                                                                      workers)):
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
    metrics_future, outputs = self._seqio.evaluate(compute_metrics=True, step=step,
                                                   predict_fn=self._predict_fn(params))
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
              "num_examples": {k: v for k, v in self.num_examples.items() if k in tasks},
              "beam_size": self.beam_size, "constrained": self.constraint is not None,
              "split": self.eval_split, "unscored": dict(self.unscored)}
    if report_dir and jax.process_index() == 0:
      self._write_predictions(outputs, report_dir, step)
      storage.write_json_atomic(storage.join(report_dir, f"step_{int(step)}.json"), result,
                                sort_keys=False, allow_nan=False)
    return result

  def _write_predictions(self, outputs: Mapping[str, Any], report_dir: str, step: int) -> None:
    """One JSON line per evaluated example and task (see the module docstring)."""
    import seqio  # pylint: disable=g-import-not-at-top
    for task in self._seqio.eval_tasks:
      tokens = outputs.get(task.name, {}).get(seqio.metrics.ModelOutputType.PREDICTION)
      if tokens is None:
        continue
      vocabulary = task.output_features["targets"].vocabulary
      examples = self._seqio.cached_task_datasets[task.name].as_numpy_iterator()
      lines = [json.dumps(_json_ready(prediction_record(task, index, example, vocabulary.decode(
          [int(t) for t in ids]))), ensure_ascii=False, allow_nan=False)
               for index, (example, ids) in enumerate(zip(examples, tokens))]
      storage.write_text_atomic(predictions_path(report_dir, task.name, step),
                                "".join(line + "\n" for line in lines))

  def close(self) -> None:
    if getattr(self, "_seqio", None) is not None:
      self._seqio.close()


def _text(value: Any) -> str | None:
  if value is None:
    return None
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def prediction_record(task, index: int, example: Mapping[str, Any], generation: str) -> dict:
  """One example's line of the predictions file: gold and predicted mentions, also per type.

  NER tasks (our postprocessor) are parsed as the metric parses them; other tasks get their
  input, target and generation as text.
  """
  from punified_jax import metrics  # pylint: disable=g-import-not-at-top
  targets = _text(example.get("targets_pretokenized"))
  if getattr(task, "_postprocess_fn", None) is not metrics.ner_postprocessor:  # seqio keeps it there
    return {"index": index, "inputs": _text(example.get("inputs_pretokenized")), "target": targets,
            "generation": generation}
  gold = metrics.ner_postprocessor(targets, example=example, is_target=True)
  predicted = metrics.ner_postprocessor(generation, example=example, is_target=False)
  types = list(gold["types"] or [])
  for type_name, _ in gold["mentions"] + predicted["mentions"]:
    if type_name not in types:
      types.append(type_name)  # an unrequested type the model produced still gets a row
  return {
      "index": index,
      "id": _text(example.get("id")),
      "text": gold["text"],
      "types": gold["types"],
      "gold": [list(m) for m in gold["mentions"]],
      "predicted": [list(m) for m in predicted["mentions"]],
      "per_type": {name: {"gold": [s for t, s in gold["mentions"] if t == name],
                          "predicted": [s for t, s in predicted["mentions"] if t == name]}
                   for name in types},
      "generation": generation,
  }


@gin.configurable
def evaluate_checkpoint(
    *,
    model=gin.REQUIRED,
    checkpoint_path: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    partitioner: partitioning.Partitioner | None = None,
    eval_split: str = "validation",
) -> dict:
  """Standalone evaluation of one checkpoint (a run dir -- its best checkpoint if kept, else the
  latest, run_dir's rule --, a checkpoints/ or best/ dir, or a step dir; local or gs://) on
  `eval_split` (gin EVAL_SPLIT; `python -m punified_jax.eval --split test`).

  Writes `<output_dir>/step_<N>.json` (N = the checkpoint's step) and the per-example
  predictions under `<output_dir>/predictions/`, and returns the result.
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
  evaluator = Evaluator(mixture_or_task_name=mixture_or_task_name, model=model, partitioner=partitioner,
                        eval_split=eval_split)
  try:
    result = evaluator.evaluate(params, step=step if step is not None else 0, report_dir=output_dir)
  finally:
    evaluator.close()
  result["checkpoint"] = item_dir
  if jax.process_index() == 0:
    mean = result.get("mean")
    print(f"checkpoint {item_dir}, {eval_split} split: mean {result['selection_metric']} = "
          f"{'n/a' if mean is None else f'{mean:.2f}'}", flush=True)
    for task, metrics in result["tasks"].items():
      value = metrics.get(result["selection_metric"])
      print(f"  {task}: {result['selection_metric']} = {value}", flush=True)
  return result
