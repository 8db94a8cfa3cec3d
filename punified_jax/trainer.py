"""The training loop: `train(*, ...)`, configured by gin with t5x's macro names.

One call does: build the mesh and shardings (partitioning.py), the optimizer (optimizers.py),
the input pipeline (seqio mixture -> EncDecFeatureConverter with packing -> per-host shard), the
jitted train step (in/out shardings, the state donated), orbax checkpoints (periodic, final,
on SIGTERM/SIGINT; resume from the latest; params-only INITIAL_CHECKPOINT_PATH), evaluation
every EVAL_PERIOD steps (periodic_evaluation.py) and metric writers (metric_writers.py).

Decisions worth knowing:

* Loss normalisation. The loss (and so the gradient) is the sum of per-token losses divided by
  the number of non-padding target tokens in the *global* batch (summed over micro-batches and
  hosts), i.e. the mean loss per target token. t5x's default configs divide by a constant
  (batch size x target length, "Mesh TensorFlow compatible") so each token weighs the same
  whatever the batch holds; we use the per-token mean because packed NER batches vary in how
  many target tokens they hold, the paper's AdamW learning rate (1e-4) was tuned for a mean
  per-token loss, and the logged loss is then comparable across batch sizes and lengths. A
  constant is available: `train.loss_normalizer = 2048.0` (any float).

* Gradient accumulation is a `lax.scan` over micro-batches inside the one jitted step (not
  optax.MultiSteps): one compiled function, one optimizer update per train step (so the step
  counter, schedules and checkpoints mean the same thing with or without accumulation), no
  extra optimizer state, and the accumulated gradient is normalised by the whole batch's token
  count, so accumulation changes memory use, not the update. Micro-batch m takes rows
  m, m + M, m + 2M, ... so every device keeps an equal share of each micro-batch.

* Data order and position (input_state.py). The input pipeline is a pure function of (mixture,
  seed, feature lengths, batch size, number of input shards): the global batch is the
  concatenation of `data_shards` per-shard batches, shard i read with seqio.ShardInfo(i,
  data_shards), and each host reads only the shards its devices need, so a run on one host with
  data_shards=2 sees exactly the batches of a run on two hosts. Every checkpoint also holds each
  input shard's tf.data iterator state (an orbax item beside the train state), so resuming puts
  the input where it was in constant time, whatever the step; a checkpoint without it (older
  runs, a pipeline tf.data cannot save) is resumed by skipping the consumed batches, with a line
  saying so.

* RNG. Parameters are initialised from `seed`; dropout in step s uses fold_in(seed key, s)
  (and the micro-batch index), so a resumed run draws the same masks as an uninterrupted one.
  JAX's partitionable threefry makes the masks independent of the sharding.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from punified_jax import checkpoints as checkpoints_lib
from punified_jax import entity_types
from punified_jax import input_state
from punified_jax import metric_writers as writers_lib
from punified_jax import model as model_lib
from punified_jax import model_info
from punified_jax import optimizers
from punified_jax import partitioning
from punified_jax import periodic_evaluation
from punified_jax import run_dir
from punified_jax import storage
from punified_jax import vocab as vocab_lib
from punified_jax.data import manifest
from punified_jax.tasks import mixing
from punified_jax.tasks import names as task_names

logger = logging.getLogger(__name__)

# The input pipeline lives in input_state.py; these names stay importable from here.
make_train_iterator = input_state.make_train_iterator
host_shard_range = input_state.host_shard_range
shard_batch_sizes = input_state.shard_batch_sizes

# Model features of seqio's EncDecFeatureConverter (packed adds segment ids and positions).
_TOKEN_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
_PACKING_FEATURES = ("encoder_segment_ids", "decoder_segment_ids", "encoder_positions", "decoder_positions")
_WEIGHTS_FEATURE = "decoder_loss_weights"
_DROPOUT_STREAM = 1  # fold_in constants separating the init and dropout random streams
_INIT_STREAM = 0


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint must hold to continue: step, parameters, optimizer state."""
  step: jax.Array
  params: Any
  opt_state: Any

  def as_tree(self) -> dict:
    return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

  @classmethod
  def from_tree(cls, tree: Mapping[str, Any]) -> "TrainState":
    return cls(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])


@dataclasses.dataclass
class TrainSummary:
  """What `train` returns: where it stopped and the logged metrics (one dict per log step)."""
  start_step: int
  final_step: int
  stopped_by: str | None  # None, or the signal name that ended the run early
  history: list[dict]
  eval_results: list[dict]
  state: Any = None  # the final TrainState (device arrays, sharded as trained)


# ----------------------------------------------------------------------------------------------
# The step.
# ----------------------------------------------------------------------------------------------


def _model_inputs(batch: Mapping[str, jax.Array]) -> dict:
  inputs = {name: batch[name] for name in _TOKEN_FEATURES}
  for name in _PACKING_FEATURES:
    if name in batch:
      inputs[name] = batch[name]
  return inputs


def make_loss_fn(model: nn.Module, *, z_loss: float, label_smoothing: float):
  """(params, batch, dropout_rng) -> (loss_sum, (z_loss_sum, weight_sum)): sums, not means."""

  def loss_fn(params, batch, dropout_rng):
    logits = model.apply({"params": params}, **_model_inputs(batch), enable_dropout=True,
                         rngs={"dropout": dropout_rng})
    weights = batch.get(_WEIGHTS_FEATURE)
    if weights is None:
      weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
    loss_sum, z_loss_sum, weight_sum = model_lib.compute_loss(
        logits, batch["decoder_target_tokens"], weights, z_loss=z_loss, label_smoothing=label_smoothing)
    return loss_sum, (z_loss_sum, weight_sum)

  return loss_fn


def _split_microbatches(batch: Mapping[str, jax.Array], microbatches: int) -> dict:
  """[B, ...] -> [M, B/M, ...] with micro-batch m = rows m, m+M, ... (keeps rows on their device)."""

  def split(x):
    rows = x.shape[0]
    if rows % microbatches:
      raise ValueError(f"batch of {rows} rows is not divisible into {microbatches} micro-batches")
    x = x.reshape((rows // microbatches, microbatches) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  return {key: split(value) for key, value in batch.items()}


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    schedule: Callable[[Any], Any], *, seed: int, microbatches: int = 1,
                    z_loss: float = 1e-4, label_smoothing: float = 0.0,
                    loss_normalizer: str | float = "num_tokens"):
  """The (unjitted) train step: (state, batch) -> (state, metrics)."""
  loss_fn = make_loss_fn(model, z_loss=z_loss, label_smoothing=label_smoothing)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches < 1:
    raise ValueError(f"microbatches must be >= 1, got {microbatches}")
  if loss_normalizer != "num_tokens" and not (isinstance(loss_normalizer, (int, float)) and loss_normalizer > 0):
    raise ValueError(f"loss_normalizer must be 'num_tokens' or a positive number, got {loss_normalizer!r}")

  def step_fn(state: TrainState, batch: Mapping[str, jax.Array]):
    dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _DROPOUT_STREAM), state.step)
    if microbatches == 1:
      (loss_sum, (z_loss_sum, weight_sum)), grads = grad_fn(state.params, batch, dropout_key)
    else:
      micro = _split_microbatches(batch, microbatches)

      def accumulate(carry, inputs):
        index, micro_batch = inputs
        (loss_m, (z_m, w_m)), grads_m = grad_fn(state.params, micro_batch, jax.random.fold_in(dropout_key, index))
        grads_acc, loss_acc, z_acc, w_acc = carry
        grads_acc = jax.tree.map(jnp.add, grads_acc, grads_m)
        return (grads_acc, loss_acc + loss_m, z_acc + z_m, w_acc + w_m), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
      (grads, loss_sum, z_loss_sum, weight_sum), _ = jax.lax.scan(
          accumulate, init, (jnp.arange(microbatches), micro))
    if loss_normalizer == "num_tokens":
      normalizer = jnp.maximum(weight_sum, 1.0)  # an all-padding batch must not divide by 0
    else:
      normalizer = jnp.asarray(loss_normalizer, jnp.float32)
    grads = jax.tree.map(lambda g: g / normalizer, grads)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss_sum / normalizer,
        "z_loss": z_loss_sum / normalizer,
        "cross_entropy": (loss_sum - z_loss_sum) / normalizer,
        "grad_norm": grad_norm,
        "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
        "target_tokens": weight_sum,
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step_fn


# ----------------------------------------------------------------------------------------------
# State construction.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StateLayout:
  """Abstract train state and its shardings (what jit and orbax need)."""
  abstract_state: TrainState      # ShapeDtypeStruct leaves
  specs: TrainState               # PartitionSpec leaves
  shardings: TrainState           # NamedSharding leaves
  init_fn: Callable[[jax.Array], TrainState]
  model: Any = None
  optimizer: Any = None

  def abstract_with_shardings(self) -> TrainState:
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                        self.abstract_state, self.shardings)


def _dummy_inputs() -> dict:
  """A [1, 1] batch: parameter shapes do not depend on the batch or the lengths."""
  ones = jnp.ones((1, 1), jnp.int32)
  return dict(encoder_input_tokens=ones, decoder_input_tokens=ones, decoder_target_tokens=ones)


def build_state_layout(model: nn.Module, optimizer: optax.GradientTransformation,
                       partitioner: partitioning.Partitioner) -> StateLayout:
  """Computes parameter / optimizer-state shapes and shardings without allocating anything."""

  def init_boxed(rng):
    return model.init(rng, **_dummy_inputs(), enable_dropout=False)["params"]

  abstract_boxed = jax.eval_shape(init_boxed, jax.random.key(0))
  param_specs = partitioner.param_specs(abstract_boxed)
  abstract_params = nn.meta.unbox(abstract_boxed)
  abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
  opt_specs = partitioner.optimizer_state_specs(abstract_opt_state, abstract_params, param_specs)
  specs = TrainState(step=PartitionSpec(), params=param_specs, opt_state=opt_specs)
  abstract_state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                              opt_state=abstract_opt_state)
  shardings = partitioner.shardings_from_specs(specs)

  def init_fn(rng):
    params = nn.meta.unbox(init_boxed(rng))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

  return StateLayout(abstract_state=abstract_state, specs=specs, shardings=shardings, init_fn=init_fn,
                     model=model, optimizer=optimizer)


# Jitted functions of recent train() calls, so that several runs in one process (a sweep, a
# notebook, the tests) with the same model, optimizer and layout compile once. Keys hold the
# (hashable) model, optimizer and shardings; a handful of entries is plenty.
_JIT_CACHE: dict = {}
_JIT_CACHE_SIZE = 8


def _cached_jit(key, build: Callable[[], Callable]) -> Callable:
  try:
    hash(key)
  except TypeError:
    return build()  # an unhashable model/optimizer: no reuse, still correct
  if key not in _JIT_CACHE:
    if len(_JIT_CACHE) >= _JIT_CACHE_SIZE:
      _JIT_CACHE.pop(next(iter(_JIT_CACHE)))
    _JIT_CACHE[key] = build()
  return _JIT_CACHE[key]


def _sharding_key(shardings) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(shardings)
  return tuple(leaves), treedef


def initialize_state(layout: StateLayout, partitioner: partitioning.Partitioner, seed: int) -> TrainState:
  rng = jax.random.fold_in(jax.random.key(seed), _INIT_STREAM)
  key = ("init", layout.model, layout.optimizer, _sharding_key(layout.shardings))
  init = _cached_jit(key, lambda: jax.jit(layout.init_fn, out_shardings=layout.shardings))
  with partitioner.activation_context():
    return init(rng)


def initialize_state_from_params(layout: StateLayout, partitioner: partitioning.Partitioner,
                                 optimizer: optax.GradientTransformation, path: str) -> TrainState:
  """Step 0, fresh optimizer state, parameters from `path` (INITIAL_CHECKPOINT_PATH)."""
  abstract = layout.abstract_with_shardings()
  params = run_dir.load_params(path, abstract.params)

  def fresh(params):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

  with partitioner.activation_context():
    return jax.jit(fresh, in_shardings=(layout.shardings.params,), out_shardings=layout.shardings)(params)


# ----------------------------------------------------------------------------------------------
# train().
# ----------------------------------------------------------------------------------------------


def _check_vocabulary(model: nn.Module, mixture_or_task_name: str) -> None:
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
  if vocab_size is None:
    return
  for name, feature in provider.output_features.items():
    if feature.vocabulary.vocab_size > vocab_size:
      raise ValueError(f"{mixture_or_task_name}: feature {name!r} uses a vocabulary of {feature.vocabulary.vocab_size} "
                       f"ids but the model has vocab_size={vocab_size}; set VOCAB_SIZE to at least "
                       f"{feature.vocabulary.vocab_size}")


def _describe_model_dir(model: nn.Module, model_dir: str, mixture_or_task_name: str,
                        task_feature_lengths: Mapping[str, int]) -> None:
  """Writes punified_model.json + a copy of the vocabulary, so the Extractor, export and eval can
  load the run without its gin files (model_info.py). Skipped, with a log line, when the model has
  no T5Config or the vocabulary has no file (unit tests with toy vocabularies)."""
  config = getattr(model, "config", None)
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  vocabulary = provider.output_features["targets"].vocabulary
  vocabulary = getattr(vocabulary, "vocabulary", vocabulary)  # tasks.LazyVocabulary -> the real one
  path = vocab_lib.vocab_info(vocabulary)["path"]
  if not isinstance(config, model_lib.T5Config) or not path:
    logger.info("not writing %s: no T5Config or no vocabulary file", model_info.MODEL_INFO_FILE)
    return
  datasets = task_names.datasets_of(task.name for task in getattr(provider, "tasks", [provider]))
  prompt_names = list(dict.fromkeys(n for d in datasets for n in entity_types.prompt_names(d)))
  model_info.save_model_info(
      model_dir, t5_config=config, vocabulary_path=path, task_feature_lengths=task_feature_lengths,
      extra={"mixture": mixture_or_task_name, "datasets": datasets, "prompt_names": prompt_names})


def _mixing_scheme(mixture_or_task_name: str) -> str | None:
  """The label of the mixing scheme (punified_jax/tasks/mixing.py) one of our mixtures samples with, else
  None (a task, or a mixture registered by someone else)."""
  scheme = mixing.scheme_of(seqio.get_mixture_or_task(mixture_or_task_name))
  return scheme["label"] if scheme else None


def _scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
  return {key: float(np.asarray(value)) for key, value in values.items()}


@gin.configurable(denylist=["partitioner_override"])
def train(
    *,
    model: nn.Module = gin.REQUIRED,
    model_dir: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    batch_size: int = gin.REQUIRED,
    partitioner: partitioning.Partitioner | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate_schedule: Callable[[Any], Any] | None = None,
    seed: int = 0,
    initial_checkpoint_path: str | None = None,
    microbatches: int = 1,
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
    loss_normalizer: str | float = "num_tokens",
    pack: bool = True,
    dataset_split: str = "train",
    use_cached: bool = False,
    data_shards: int | None = None,
    checkpoint_period: int = 1000,
    checkpoint_input_state: bool = True,
    keep_checkpoints: int | None = 3,
    async_checkpointing: bool = True,
    eval_period: int | None = None,
    evaluator_factory: Callable[..., Any] | None = None,
    log_every: int = 10,
    tensorboard: bool = True,
    step_callback: Callable[[int, Any], None] | None = None,
    partitioner_override: partitioning.Partitioner | None = None,
) -> TrainSummary:
  """Trains (or continues training) `model` on a seqio mixture/task. All arguments keyword-only.

  Args:
    model: the flax module (gin: MODEL, e.g. from gin/models/tiny.gin).
    model_dir: run directory (checkpoints/, best/, eval/, tensorboard/, metrics.jsonl).
    mixture_or_task_name: a registered seqio Task or Mixture (import `tasks` registers them).
    task_feature_lengths: {"inputs": N, "targets": M}.
    train_steps: the total number of steps (absolute: a resumed run stops at the same step).
    batch_size: the global batch size in (packed) sequences.
    partitioner: mesh and logical-axis rules (gin: one of gin/partitioning/*.gin).
    optimizer: an optax optimizer (default: `optimizers.make_optimizer(learning_rate=schedule)`).
    learning_rate_schedule: for the optimizer (when built here) and for logging
      (default: `optimizers.make_schedule()`).
    seed: parameter init, data order and dropout.
    initial_checkpoint_path: parameters to start from (optimizer fresh, step 0); ignored when
      model_dir already has a checkpoint (then that run is resumed).
    microbatches: gradient accumulation steps per train step (BATCH_SIZE must divide).
    z_loss, label_smoothing: see model.compute_loss.
    loss_normalizer: "num_tokens" (mean over non-padding target tokens) or a constant.
    pack: pack several examples per sequence (seqio EncDecFeatureConverter(pack=True)).
    data_shards: input shards making up a global batch (default: one per host slice). Keep it
      fixed across restarts and host counts to keep the data order.
    checkpoint_period: save every this many steps (and at the end and on SIGTERM/SIGINT).
    checkpoint_input_state: store each input shard's iterator state in the checkpoints, so a
      resume restores the data position in constant time (input_state.py); False re-reads the
      consumed batches at resume.
    keep_checkpoints: how many recent checkpoints to keep.
    eval_period: evaluate at every multiple of this step count (so a TRAIN_STEPS that is a multiple
      ends with one); None/0 = no evaluation.
    evaluator_factory: builds the evaluator (default `evaluation.Evaluator` through gin).
    log_every: console/metric line every this many steps.
    step_callback: called as `step_callback(step, metrics)` after every step (metrics are
      device scalars; fetching them synchronises). For monitoring hooks and tests.
  """
  partitioner = partitioner_override or partitioner or partitioning.Partitioner()
  if train_steps < 0:
    raise ValueError(f"TRAIN_STEPS must be >= 0, got {train_steps}")
  if batch_size < 1:
    raise ValueError(f"BATCH_SIZE must be >= 1, got {batch_size}")
  if batch_size % microbatches:
    raise ValueError(f"BATCH_SIZE={batch_size} is not divisible by microbatches={microbatches}")
  data_size = partitioner.mesh_sizes[partitioning.DATA_AXIS]
  if batch_size % data_size or (batch_size // microbatches) % data_size:
    raise ValueError(f"BATCH_SIZE={batch_size} (/{microbatches} micro-batches) must be divisible by the "
                     f"data-parallel mesh size {data_size}")
  _check_vocabulary(model, mixture_or_task_name)

  schedule = learning_rate_schedule or optimizers.make_schedule()
  if optimizer is None:
    optimizer = optimizers.make_optimizer(learning_rate=schedule)
  process_index = jax.process_index()
  if process_index == 0:
    storage.makedirs(model_dir)
  if process_index == 0:
    _describe_model_dir(model, model_dir, mixture_or_task_name, task_feature_lengths)
  mixing_scheme = _mixing_scheme(mixture_or_task_name)  # recorded in data_manifest.json too

  layout = build_state_layout(model, optimizer, partitioner)
  for line in partitioning.describe_shardings(layout.abstract_state.params, layout.specs.params):
    logger.info("param %s", line)
  checkpointer = checkpoints_lib.Checkpointer(
      run_dir.Layout(model_dir).checkpoints, max_to_keep=keep_checkpoints,
      save_interval_steps=checkpoint_period, async_save=async_checkpointing,
      extra_item_names=(input_state.INPUT_ITEM,))

  _, host_count = partitioner.data_shard_info(batch_size)
  data_shards = data_shards or host_count
  data_settings = {"mixture_or_task_name": mixture_or_task_name, "seed": seed, "batch_size": batch_size,
                   "data_shards": data_shards, "task_feature_lengths": dict(task_feature_lengths), "pack": pack,
                   "dataset_split": dataset_split}
  if mixing_scheme is not None:  # a resume under another scheme then warns like any data change
    data_settings["mixing_scheme"] = mixing_scheme

  latest = checkpointer.latest_step()
  meta: dict = {}
  settings_changed = False
  if latest is not None:
    state_tree, meta = checkpointer.restore(layout.abstract_with_shardings().as_tree(), latest)
    state = TrainState.from_tree(state_tree)
    consumed_batches = int(meta.get("consumed_batches", latest))
    settings_changed = _warn_on_changed_data_settings(meta.get("data", {}), data_settings, latest)
    logger.info("resumed from %s step %d (%d batches consumed)", checkpointer.directory, latest, consumed_batches)
    if process_index == 0:
      print(f"resuming from checkpoint step {latest}", flush=True)
  elif initial_checkpoint_path:
    state = initialize_state_from_params(layout, partitioner, optimizer, initial_checkpoint_path)
    consumed_batches = 0
    if process_index == 0:
      print(f"initialised parameters from {initial_checkpoint_path}", flush=True)
  else:
    state = initialize_state(layout, partitioner, seed)
    consumed_batches = 0
  start_step = int(jax.device_get(state.step))

  batch_sharding = partitioner.data_sharding

  def build_step():
    step_fn = make_train_step(model, optimizer, schedule, seed=seed, microbatches=microbatches, z_loss=z_loss,
                              label_smoothing=label_smoothing, loss_normalizer=loss_normalizer)
    return jax.jit(step_fn, in_shardings=(layout.shardings, batch_sharding),
                   out_shardings=(layout.shardings, partitioner.replicated), donate_argnums=(0,))

  step_key = ("step", model, optimizer, schedule, seed, microbatches, z_loss, label_smoothing, loss_normalizer,
              _sharding_key(layout.shardings), batch_sharding)
  jitted_step = _cached_jit(step_key, build_step)

  writer = writers_lib.create_metric_writer(model_dir, process_index=process_index, resume_step=start_step,
                                            tensorboard=tensorboard)
  progress = writers_lib.ProgressLogger(train_steps, start_step=start_step, every=log_every,
                                        enabled=process_index == 0)
  evaluator = periodic_evaluation.PeriodicEvaluator(
      period=eval_period, factory=evaluator_factory, mixture_or_task_name=mixture_or_task_name, model=model,
      partitioner=partitioner, model_dir=model_dir, writer=writer)
  train_input = None
  history: list[dict] = []
  eval_results: list[dict] = []
  stopped_by = None
  step = start_step
  multi_process = jax.process_count() > 1
  if process_index == 0:
    print(f"training steps {start_step} -> {train_steps}: batch {batch_size}, mesh {dict(partitioner.mesh.shape)}, "
          f"{jax.process_count()} process(es), {data_shards} input shard(s)", flush=True)

  try:
    with checkpoints_lib.PreemptionWatcher(multi_process=multi_process) as watcher:
      if step < train_steps:
        train_input = input_state.open_train_input(
            checkpointer=checkpointer, step=latest, meta=meta, consumed_batches=consumed_batches,
            settings_changed=settings_changed, announce=process_index == 0,
            mixture_or_task_name=mixture_or_task_name, task_feature_lengths=task_feature_lengths,
            global_batch_size=batch_size, seed=seed, data_shards=data_shards,
            shard_range=host_shard_range(partitioner, batch_size, data_shards), pack=pack, split=dataset_split,
            use_cached=use_cached)
      window: list[dict] = []
      progress.reset_clock(step)
      while step < train_steps:
        local_batch = next(train_input)
        global_batch = partitioner.shard_batch(local_batch, batch_size)
        with partitioner.activation_context():
          state, metrics = jitted_step(state, global_batch)
        step += 1
        consumed_batches += 1
        window.append(metrics)
        if step == start_step + 1 and process_index == 0:
          _record_run(model_dir, mixture_or_task_name)
        if step_callback is not None:
          step_callback(step, metrics)

        if progress.should_log(step) or step == train_steps:
          history.append(_log_window(window, step, progress, writer, checkpointer))
          window = []

        if not multi_process:
          stop_requested = watcher.requested
        else:
          # SIGTERM: JAX's preemption service gives every host the same stop step, no collective.
          # A local SIGINT is shared at log steps only (an all-gather every step would stall
          # the asynchronous dispatch of steps).
          stop_requested = checkpointer.reached_preemption(step)
          if not stop_requested and progress.should_log(step):
            stop_requested = _any_process(watcher.requested)

        if evaluator.due(step) and not stop_requested:
          result = evaluator.evaluate(step, state, _checkpoint_meta(step, consumed_batches, data_settings))
          if result is not None:
            eval_results.append(result)
            progress.reset_clock(step)  # evaluation time is not training throughput
        writer.flush()  # one JSONL record per step, with its train and eval values

        if stop_requested or step == train_steps or checkpointer.should_save(step):
          _save_checkpoint(checkpointer, state, _checkpoint_meta(step, consumed_batches, data_settings),
                           train_input if checkpoint_input_state else None)
        if stop_requested:
          stopped_by = watcher.signal_name or "preemption"
          if process_index == 0:
            print(f"{stopped_by}: saved checkpoint at step {step}; exiting", flush=True)
          break
    checkpointer.wait()
  finally:
    writer.flush()
    writer.close()
    checkpointer.close()
    evaluator.close()
  return TrainSummary(start_step=start_step, final_step=step, stopped_by=stopped_by, history=history,
                      eval_results=eval_results, state=state)


def _record_run(model_dir: str, mixture_or_task_name: str) -> None:
  """config.gin (operative gin config, complete after the first step) + data_manifest.json."""
  manifest.write_run_records(model_dir, mixture_or_task_name)


def _any_process(flag: bool) -> bool:
  flags = multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))
  return bool(np.max(flags))


def _checkpoint_meta(step: int, consumed_batches: int, data_settings: Mapping[str, Any]) -> dict:
  """What a checkpoint records beside the state: how many batches the run consumed (to resume the
  data), the data settings (to warn when they change); `_save_checkpoint` adds the input position."""
  return {"step": step, "consumed_batches": consumed_batches, "data": data_settings, "input_state": None}


def _save_checkpoint(checkpointer: checkpoints_lib.Checkpointer, state: TrainState, meta: dict,
                     train_input) -> None:
  """Saves `state` at step `meta["step"]` (unless that step is saved already) with `meta` and, when
  `train_input` is given, each input shard's iterator position."""
  step = meta["step"]
  if step in checkpointer.all_steps():
    return
  items, input_meta = input_state.checkpoint_items(train_input) if train_input is not None else ({}, None)
  checkpointer.save(step, state.as_tree(), {**meta, "input_state": input_meta}, force=True, extra_items=items)


def _log_window(window: list[dict], step: int, progress: writers_lib.ProgressLogger, writer,
                checkpointer: checkpoints_lib.Checkpointer) -> dict:
  """Logs the metrics of the steps since the last log (averaged; learning rate of the last step)
  to the console and the metric writer; returns the history entry. A non-finite loss stops the
  run with FloatingPointError (the last checkpoint is still good)."""
  host_metrics = [_scalar_metrics(m) for m in jax.device_get(window)]
  averaged = {key: float(np.mean([m[key] for m in host_metrics])) for key in host_metrics[0]}
  tokens = float(np.sum([m["target_tokens"] for m in host_metrics]))
  rates = progress.log(step, {"loss": averaged["loss"], "lr": host_metrics[-1]["learning_rate"]})
  scalars = {f"train/{key}": value for key, value in averaged.items() if key != "target_tokens"}
  scalars["train/learning_rate"] = host_metrics[-1]["learning_rate"]
  scalars["train/steps_per_second"] = rates["steps_per_second"]
  scalars["train/target_tokens_per_second"] = tokens / rates["seconds"] if rates["seconds"] > 0 else float("nan")
  writer.write_scalars(step, scalars)
  if not all(math.isfinite(m["loss"]) for m in host_metrics):
    writer.flush()
    raise FloatingPointError(f"loss became {averaged['loss']} at step {step}; stopping (last good "
                             f"checkpoint: {checkpointer.latest_step()})")
  return {"step": step, **averaged, "steps_per_second": rates["steps_per_second"]}


def _warn_on_changed_data_settings(saved: Mapping[str, Any], current: Mapping[str, Any], step: int) -> bool:
  """Warns (and returns True) when the data settings differ from the checkpoint's."""
  changed = {key: (saved.get(key), value) for key, value in current.items()
             if key in saved and json.loads(json.dumps(saved[key])) != json.loads(json.dumps(value))}
  if changed:
    logger.warning("resuming step %d with changed data settings %s: the data order will not continue "
                   "the interrupted run's", step, changed)
    if jax.process_index() == 0:
      print(f"warning: data settings changed since the checkpoint (saved, now): {changed}", flush=True)
  return bool(changed)
