"""The training input and its position: built per input shard, resumed in O(1) from a checkpoint.

Input order. The global batch b is the concatenation over input shards i of batch b of shard i
(`seqio.ShardInfo(i, data_shards)`, shuffled with the run's seed, repeated forever,
`BATCH_SIZE / data_shards` rows per shard). Each host reads only the shards its devices hold, so
one host with data_shards=2 sees exactly the batches two hosts see.

Position. We checkpoint the tf.data iterator of every shard (t5x's `checkpoint_dataset`
approach) instead of re-reading the consumed batches at start-up (what this project did before:
`dataset.skip(consumed_batches)`, whose cost grows with the step, minutes at 100K steps) or
deriving the position from a deterministic index (which needs a random-access source: seqio's
mixtures sample between tasks and the feature converter packs a variable number of examples per
row, so "batch n" has no address without replaying the stream). The iterator state holds the
shuffle buffers, the mixture's sampling state, the packer's partial rows and the prefetched
elements: a few MB per shard, about two seconds to write for the 8-dataset mixture, and
restoring it costs the same at step 20 and at step 100K (benchmarks/restart.py).

Where it is stored. `tf.io.gfile` cannot talk to a `gs://` emulator (and tf.train.Checkpoint
writes through it), so each shard's iterator is written to a local temporary directory, read
back as bytes, and handed to orbax as one more item of the step (`input/`), written through
`punified_jax.storage` by `InputStateHandler`. It is therefore committed atomically with the
train state: a step directory either has both or does not exist. Files are named by input
shard, `shard-00001-of-00004.index` / `.data-00000-of-00001`, not by host: every host writes
and reads the shards it reads, so the state survives a change of host count as long as
`data_shards` is kept (as the data order does).

When it cannot be used. A pipeline containing a Python generator or a stateful py_function
cannot be checkpointed by tf.data; saving then prints why once and the checkpoint records no
input state. Resuming from such a checkpoint (or an older one, or after the data settings
changed) falls back to skipping the consumed batches and says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import orbax.checkpoint as ocp

from punified_jax import storage

logger = logging.getLogger(__name__)

INPUT_ITEM = "input"  # the orbax item of a checkpoint step holding the iterator states
STATE_KIND = "tf.data iterator per input shard"


def shard_batch_sizes(global_batch_size: int, data_shards: int) -> int:
  """Rows each input shard contributes to a global batch."""
  if data_shards < 1:
    raise ValueError(f"data_shards must be >= 1, got {data_shards}")
  if global_batch_size % data_shards:
    raise ValueError(f"BATCH_SIZE={global_batch_size} is not divisible by the {data_shards} input shards")
  return global_batch_size // data_shards


def host_shard_range(partitioner, global_batch_size: int, data_shards: int) -> tuple[int, int]:
  """The input shards [start, stop) whose rows this host's devices hold."""
  host_index, host_count = partitioner.data_shard_info(global_batch_size)
  if data_shards % host_count:
    raise ValueError(f"data_shards={data_shards} must be a multiple of the {host_count} hosts that read "
                     "distinct batch slices")
  per_host = data_shards // host_count
  return host_index * per_host, (host_index + 1) * per_host


def shard_prefix(index: int, count: int) -> str:
  """File prefix of input shard `index` of `count` in a checkpoint's `input/` item."""
  return f"shard-{index:05d}-of-{count:05d}"


class TrainInput:
  """This host's rows of every global batch (numpy dicts), from input shards [start, stop).

  `skip_batches` > 0 re-reads and drops that many batches (the old resume, O(steps)); the
  O(1) resume is `restore_state` with what `state_files` returned at the checkpoint.
  """

  def __init__(self, *, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
               global_batch_size: int, seed: int, data_shards: int, shard_range: tuple[int, int],
               skip_batches: int = 0, pack: bool = True, split: str = "train", use_cached: bool = False):
    import seqio  # pylint: disable=g-import-not-at-top
    per_shard = shard_batch_sizes(global_batch_size, data_shards)
    start, stop = shard_range
    if not 0 <= start < stop <= data_shards:
      raise ValueError(f"shard range {shard_range} is not within [0, {data_shards})")
    self.data_shards = data_shards
    self.shard_indices = tuple(range(start, stop))
    self._unsupported: str | None = None  # why the iterators cannot be checkpointed, once known
    self._iterators = []
    for index in self.shard_indices:
      dataset = seqio.get_dataset(
          mixture_or_task_name, task_feature_lengths=dict(task_feature_lengths),
          feature_converter=seqio.EncDecFeatureConverter(pack=pack), dataset_split=split,
          use_cached=use_cached, shuffle=True, num_epochs=None,
          shard_info=seqio.ShardInfo(index=index, num_shards=data_shards), seed=seed,
          batch_size=per_shard, verbose=False)
      if skip_batches:
        dataset = dataset.skip(skip_batches)
      self._iterators.append(iter(dataset))

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    parts = [{key: value.numpy() for key, value in next(iterator).items()} for iterator in self._iterators]
    if len(parts) == 1:
      return parts[0]
    return {key: np.concatenate([part[key] for part in parts], axis=0) for key in parts[0]}

  # -- position --------------------------------------------------------------------------------

  def state_files(self) -> dict[str, bytes] | None:
    """The iterators' current states as {file name: bytes}; None if the pipeline cannot be saved."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._unsupported is not None:
      return None
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="punified_input_state_") as local:
      for index, iterator in zip(self.shard_indices, self._iterators):
        prefix = shard_prefix(index, self.data_shards)
        try:
          tf.train.Checkpoint(iterator=iterator).write(os.path.join(local, prefix))
        except (tf.errors.UnimplementedError, tf.errors.FailedPreconditionError,
                tf.errors.InvalidArgumentError) as error:
          self._unsupported = _short_tf_error(error)
          message = (f"the input pipeline cannot be checkpointed ({self._unsupported}); checkpoints hold no "
                     "input position and a resume will re-read the consumed batches")
          logger.warning(message)
          print(f"warning: {message}", flush=True)
          return None
      for name in sorted(os.listdir(local)):
        if name.startswith("shard-"):
          with open(os.path.join(local, name), "rb") as handle:
            files[name] = handle.read()
    return files

  def restore_state(self, files: Mapping[str, bytes]) -> None:
    """Puts every iterator at the position `state_files` recorded (before the first batch)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory(prefix="punified_input_state_") as local:
      for name, data in files.items():
        with open(os.path.join(local, os.path.basename(name)), "wb") as handle:
          handle.write(data)
      for index, iterator in zip(self.shard_indices, self._iterators):
        prefix = shard_prefix(index, self.data_shards)
        if f"{prefix}.index" not in files:
          raise FileNotFoundError(f"input state of shard {prefix} missing (have {sorted(files)})")
        tf.train.Checkpoint(iterator=iterator).read(os.path.join(local, prefix)).assert_consumed()

  def wanted_prefixes(self) -> list[str]:
    """The file prefixes of this host's shards in a checkpoint's input item."""
    return [shard_prefix(index, self.data_shards) for index in self.shard_indices]


def _short_tf_error(error: Exception) -> str:
  """`{{function_node ...}} PyFunc is stateful. [Op:SerializeIterator] name:` -> `PyFunc is stateful.`"""
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
  return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip()


def make_train_iterator(**kwargs) -> TrainInput:
  """`TrainInput(**kwargs)` (the name the benchmarks and older code use)."""
  return TrainInput(**kwargs)


# ------------------------------------------------------------------------------------------------
# The orbax item: every host writes and reads its own shards' files inside the step directory.
# ------------------------------------------------------------------------------------------------


class InputStateHandler(ocp.AsyncCheckpointHandler):
  """Writes {file name: bytes} into the item directory through `storage` (local or gs://).

  Every process writes its own files (not only the primary host), inside orbax's temporary
  step directory, so they are committed with the rest of the step.
  """

  async def _write(self, directory, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
      storage.write_bytes_atomic(storage.join(os.fspath(directory), name), data)

  async def async_save(self, directory, args: "InputStateSave"):
    # Awaits orbax's "item directory created" signals before writing, like its JSON handler.
    return [ocp.future.CommitFutureAwaitingContractedSignals(self._write(directory, dict(args.files)),
                                                             name="input_state_save")]

  def save(self, directory, args: "InputStateSave") -> None:
    for name, data in dict(args.files).items():
      storage.write_bytes_atomic(storage.join(os.fspath(directory), name), data)

  def restore(self, directory, args: "InputStateRestore") -> dict[str, bytes]:
    directory = os.fspath(directory)
    names = storage.listdir(directory)
    files = {}
    for prefix in args.prefixes:
      matching = [name for name in names if name.startswith(prefix + ".")]
      if f"{prefix}.index" not in matching:
        raise FileNotFoundError(f"{storage.join(directory, prefix + '.index')} does not exist: the checkpoint "
                                f"holds no input state for this shard (it has {names})")
      for name in matching:
        files[name] = storage.read_bytes(storage.join(directory, name))
    return files

  def metadata(self, directory) -> None:
    del directory
    return None


@ocp.args.register_with_handler(InputStateHandler, for_save=True)
@dataclasses.dataclass
class InputStateSave(ocp.args.CheckpointArgs):
  files: Mapping[str, bytes] = dataclasses.field(repr=False)


@ocp.args.register_with_handler(InputStateHandler, for_restore=True)
@dataclasses.dataclass
class InputStateRestore(ocp.args.CheckpointArgs):
  prefixes: Sequence[str] = ()


# ------------------------------------------------------------------------------------------------
# What the trainer calls.
# ------------------------------------------------------------------------------------------------


def checkpoint_items(train_input: TrainInput | None) -> tuple[dict[str, Any], dict | None]:
  """(extra orbax items, meta entry) for a save now: the input item, or nothing if unavailable."""
  files = train_input.state_files() if train_input is not None else None
  if files is None:
    return {}, None
  return {INPUT_ITEM: InputStateSave(files)}, {"kind": STATE_KIND, "data_shards": train_input.data_shards}


def open_train_input(*, checkpointer, step: int | None, meta: Mapping[str, Any], consumed_batches: int,
                     settings_changed: bool, announce: bool, **input_kwargs) -> TrainInput:
  """This host's TrainInput, positioned after `consumed_batches` batches.

  From the checkpoint's input item when it has one for these shards (O(1)); otherwise by
  skipping the consumed batches (O(steps)), with a line saying so.
  """
  saved = meta.get("input_state") if step is not None else None
  data_shards = input_kwargs["data_shards"]
  if consumed_batches and saved and not settings_changed and saved.get("data_shards") == data_shards:
    prefixes = [shard_prefix(index, data_shards) for index in range(*input_kwargs["shard_range"])]
    files = checkpointer.restore_item(step, INPUT_ITEM, InputStateRestore(prefixes=prefixes))
    if files is not None:
      train_input = TrainInput(**input_kwargs)
      train_input.restore_state(files)
      if announce:
        print(f"input position restored from the checkpoint ({consumed_batches} batches consumed)", flush=True)
      return train_input
  if consumed_batches and announce:
    reason = ("the data settings changed" if settings_changed else
              "the checkpoint holds no input state for these input shards")
    print(f"{reason}: skipping the {consumed_batches} consumed batches (re-reads them)", flush=True)
  return TrainInput(skip_batches=consumed_batches, **input_kwargs)
