"""Orbax checkpoints: periodic/final saves, keep-N, resume, params-only restore, best-by-F1,
preemption.  Orbax only: where a run keeps its checkpoints and which one to load is run_dir.py's
business; this module is handed directories.

A step directory holds these items (the trainer also saves `input`; the best tracker state and meta):

    <directory>/<step>/state/   the train state {"step", "params", "opt_state"}
    <directory>/<step>/meta/    JSON: step, consumed batches, data settings
    <directory>/<step>/input/   each input shard's tf.data iterator state (input_state.py)

Atomicity: orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it to `<step>`
only after every item (and, on several hosts, every process) is finished; `latest_step()` lists
finished steps only, so a save killed half-way leaves a temporary directory that is ignored (and
deleted at the next start), never a "latest" that cannot be restored.

Resume: the trainer restores the state, then the input position from the `input` item (or, when
a step has none, skips the consumed batches the meta item records; see input_state.py).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from punified_jax import storage

logger = logging.getLogger(__name__)

STATE_ITEM = "state"
META_ITEM = "meta"


def _abspath(path: str) -> str:
  # orbax wants absolute paths (it resolves relative ones against its own cwd assumptions).
  return storage.absolute(path)


class Checkpointer:
  """An orbax CheckpointManager for the train state and its JSON metadata.

  Args:
    directory: where steps are written (usually `<MODEL_DIR>/checkpoints`).
    max_to_keep: the newest N steps are kept (None = all).
    save_interval_steps: periodic saves happen at multiples of this; `save(force=True)` ignores it.
    async_save: write in a background thread while training continues (`wait()` joins it).
    best_fn / best_mode: keep the best steps by a metric instead of the newest (the "best" dir).
    extra_item_names: more items a step may hold (see `save(extra_items=...)`).
  """

  def __init__(self, directory: str, *, max_to_keep: int | None = 3, save_interval_steps: int = 1000,
               async_save: bool = True, best_metric: str | None = None, best_mode: str = "max",
               read_only: bool = False, extra_item_names: tuple[str, ...] = ()):
    self.directory = _abspath(directory)
    self.save_interval_steps = max(1, int(save_interval_steps))
    best_fn = (lambda metrics: float(metrics[best_metric])) if best_metric else None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=1,  # the period is ours (multiples of it, like t5x), see should_save
        best_fn=best_fn,
        best_mode=best_mode,
        keep_checkpoints_without_metrics=best_fn is None,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=async_save,
        create=not read_only,
        read_only=read_only,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE_ITEM, META_ITEM, *extra_item_names))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def should_save(self, step: int) -> bool:
    """Periodic saves land on multiples of `save_interval_steps`."""
    return step % self.save_interval_steps == 0

  def save(self, step: int, state: Any, meta: Mapping[str, Any], *, force: bool = False,
           metrics: Mapping[str, float] | None = None, extra_items: Mapping[str, Any] | None = None) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save was started.

    `extra_items`: more orbax items of the step ({name: CheckpointArgs}, e.g. the input position
    of input_state.py), committed atomically with the state.
    """
    if not force and not self.should_save(step):
      return False
    if step in self._manager.all_steps():
      return False  # e.g. the final save right after a periodic one at the same step
    return self._manager.save(
        step,
        args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                   META_ITEM: ocp.args.JsonSave(dict(meta)), **dict(extra_items or {})}),
        metrics=dict(metrics) if metrics is not None else None,
        force=True,
    )

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores `step` (default latest) into the structure/shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_state),
                                   META_ITEM: ocp.args.JsonRestore()}),
    )
    return restored[STATE_ITEM], dict(restored[META_ITEM] or {})

  def restore_item(self, step: int, name: str, args: Any) -> Any | None:
    """Restores one extra item of `step` (see `save`); None when that step has no such item."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**{name: args}))
    except KeyError:
      return None
    return restored[name]

  def reached_preemption(self, step: int) -> bool:
    """True on every host at the step JAX's preemption service chose after a SIGTERM (multi-host)."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class _DropMissingStepMetadata(logging.Filter):
  """Drops orbax's "Metadata file does not exist: .../_CHECKPOINT_METADATA" warning: restoring a
  lone item directory (params only, or a t5x `state` item) has no step metadata by design."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "_CHECKPOINT_METADATA" not in record.getMessage()


@contextlib.contextmanager
def quiet_missing_step_metadata():
  absl_logger = logging.getLogger("absl")
  drop = _DropMissingStepMetadata()
  absl_logger.addFilter(drop)
  try:
    yield
  finally:
    absl_logger.removeFilter(drop)


def restore_params(item_dir: str, abstract_params: Any) -> Any:
  """Loads only the parameters of a `state` item (optimizer state and step are ignored).

  `abstract_params` gives the structure, dtypes and shardings (jax.ShapeDtypeStruct leaves with
  `.sharding`); the checkpoint may have been written with another mesh or optimizer.  Which item
  to load (best, latest, a step, a Hugging Face directory) is decided by run_dir.load_params.
  """
  item_dir = _abspath(item_dir)
  if not storage.isdir(item_dir):
    raise FileNotFoundError(f"checkpoint item {item_dir} does not exist")
  restore_args = jax.tree.map(
      lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype),
      abstract_params)
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  try:
    with quiet_missing_step_metadata():
      _check_params_match(item_dir, checkpointer, abstract_params)
      restored = checkpointer.restore(
          item_dir,
          args=ocp.args.PyTreeRestore(item={"params": abstract_params},
                                      restore_args={"params": restore_args}, partial_restore=True))
  except (KeyError, ValueError) as error:
    raise ValueError(f"cannot load parameters from {item_dir}: {error} (is it a checkpoint of the same model "
                     "configuration?)") from error
  finally:
    checkpointer.close()
  logger.info("loaded parameters from %s", item_dir)
  return restored["params"]


def _flat_shapes(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  result = {}
  for path, leaf in flat:
    name = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
    result[name] = tuple(leaf.shape)
  return result


def _check_params_match(item_dir: str, checkpointer, abstract_params) -> None:
  """orbax's partial restore silently keeps targets it cannot find: check names and shapes first."""
  metadata = checkpointer.metadata(item_dir)
  tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", None)
  if tree is None or "params" not in tree:
    raise ValueError(f"cannot load parameters from {item_dir}: the checkpoint has no 'params' entry")
  saved = _flat_shapes(tree["params"])
  wanted = _flat_shapes(abstract_params)
  missing = sorted(set(wanted) - set(saved))
  wrong = sorted(name for name in set(wanted) & set(saved) if wanted[name] != saved[name])
  if missing or wrong:
    details = [f"missing {name}" for name in missing[:5]]
    details += [f"{name}: checkpoint {saved[name]} vs model {wanted[name]}" for name in wrong[:5]]
    raise ValueError(f"cannot load parameters from {item_dir}: {len(missing)} missing, {len(wrong)} with another "
                     f"shape ({'; '.join(details)}) - is it a checkpoint of the same model configuration?")
  extra = sorted(set(saved) - set(wanted))
  if extra:
    logger.warning("%s: %d checkpoint parameters are not in the model and are ignored (e.g. %s)", item_dir,
                   len(extra), extra[0])


def save_params(directory: str, params: Any, *, step: int = 0, meta: Mapping[str, Any] | None = None) -> str:
  """Writes a parameters-only checkpoint in the run layout (for converted/pretrained weights).

  The result loads with `restore_params` / INITIAL_CHECKPOINT_PATH. Returns the step directory.
  """
  checkpointer = Checkpointer(directory, max_to_keep=None, async_save=False)
  try:
    checkpointer._manager.save(  # pylint: disable=protected-access
        step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave({"params": params}),
                                         META_ITEM: ocp.args.JsonSave(dict(meta or {"step": step}))}),
        force=True)
    checkpointer.wait()
  finally:
    checkpointer.close()
  return storage.join(_abspath(directory), str(step))


def read_tree_entry(item_dir: str, key: str) -> Any:
  """One top-level entry of an orbax PyTree item, as host numpy arrays in the saved dtypes.

  For checkpoints written by others (t5x's train state: its "target" is the model's parameters);
  the rest of the item (optimizer slots, as large as the model) is not read.  Raises KeyError
  when the item has no such entry, ValueError (naming the item) when orbax cannot read it.
  """
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  try:
    with quiet_missing_step_metadata():
      try:
        metadata = checkpointer.metadata(item_dir)
        tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", None)
        if tree is None:  # older orbax: the metadata is the tree itself
          tree = getattr(metadata, "item_metadata", metadata)
      except Exception as error:  # orbax raises many types; name the directory
        raise ValueError(f"{item_dir}: cannot read the orbax checkpoint: {error}") from error
      if not isinstance(tree, Mapping) or key not in tree:
        keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise KeyError(f"no {key!r} entry in the orbax item (found {keys})")
      wanted = tree[key]
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
      template = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), wanted)
      try:
        restored = checkpointer.restore(
            item_dir, args=ocp.args.PyTreeRestore(item={key: template}, restore_args={key: restore_args},
                                                  partial_restore=True))
      except Exception as error:  # pylint: disable=broad-except
        raise ValueError(f"{item_dir}: cannot read the orbax checkpoint: {error}") from error
  finally:
    checkpointer.close()
  return restored[key]


class BestCheckpointTracker:
  """Keeps the checkpoint with the best selection metric (the paper's rule: mean F1 over tasks).

  Backed by an orbax manager that keeps one step chosen by its metric; the best value so far is
  also written to `summary_path` (the run's eval/best.json) so a restarted run knows what to beat.
  """

  def __init__(self, directory: str, summary_path: str, *, metric: str = "mean_f1", async_save: bool = False):
    self.metric = metric
    self._summary_path = summary_path
    self._checkpointer = Checkpointer(directory, max_to_keep=1, save_interval_steps=1, async_save=async_save,
                                      best_metric=metric)
    self.best_value: float | None = None
    self.best_step: int | None = None
    if storage.exists(summary_path):
      summary = storage.read_json(summary_path)
      self.best_value, self.best_step = summary.get("value"), summary.get("step")

  def update(self, step: int, value: float, state: Any, meta: Mapping[str, Any]) -> bool:
    """Saves `state` if `value` beats the best so far. Returns whether it did."""
    if self.best_value is not None and not value > self.best_value:
      return False
    self._checkpointer.save(step, state, meta, force=True, metrics={self.metric: float(value)})
    self._checkpointer.wait()
    self.best_value, self.best_step = float(value), int(step)
    if jax.process_index() == 0:
      storage.write_json_atomic(self._summary_path,
                                {"metric": self.metric, "value": self.best_value, "step": self.best_step})
    return True

  def close(self) -> None:
    self._checkpointer.close()


class PreemptionWatcher:
  """Turns SIGTERM/SIGINT into "finish the current step, save, exit 0".

  Single process: Python handlers set a flag that the loop checks after each step. A second
  SIGINT restores the default behaviour (KeyboardInterrupt), for an impatient Ctrl-C.
  Several processes: SIGTERM is left to JAX's preemption service, which makes all hosts agree
  on the step to stop at (`Checkpointer.reached_preemption`); a Python handler would replace its
  signal handler. SIGINT still sets the local flag, which the trainer combines across hosts.
  """

  def __init__(self, *, multi_process: bool):
    self._multi_process = multi_process
    self._event = threading.Event()
    self._previous: dict[int, Any] = {}
    self.signal_name: str | None = None

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be installed from the main thread
    signals = [signal.SIGINT] if self._multi_process else [signal.SIGTERM, signal.SIGINT]
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self._event.is_set() and signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name
    logger.warning("%s received: finishing the current step, then saving and exiting", self.signal_name)
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()
    return False
