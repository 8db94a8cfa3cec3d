"""Decoding over a device mesh: the batch split over `data`, parameters laid out by the rules.

`MeshDecoder` wraps the jitted search of `generate.decode_batch` (unchanged) in one `jax.jit`
with explicit in/out shardings over a `partitioning.Partitioner`'s mesh:

* inputs  [batch, input_len]: rows over the `data` axis, copies over `model`; a batch whose size
  is not a multiple of the `data` size is padded by repeating its last row (an all-padding row
  would be a meaningless input), and the padding rows are cut from the result;
* parameters: the sharding each array already has (the trainer's, or `place_params` /
  `abstract_params` from the same logical-axis rules as training, so data-parallel replicates
  them and FSDP / tensor-parallel / 2-D split them);
* the constraint (a pytree of small arrays): replicated;
* outputs (tokens, scores, log-probs; a few KB per row): replicated, i.e. gathered to every
  device by XLA, so `np.asarray` reads them on every process, multi-host included.

The model is traced inside the partitioner's activation context, so its
`nn.with_logical_constraint` annotations keep activations batch-sharded (and heads / MLP over
`model` for tensor-parallel rules), as in the training step.  Beam search expands each row to
`beam_size` rows inside the search; those rows stay on the row's device.

Multi-host: every process calls `decode` with the SAME host batch (all hosts iterate the same
data, as `evaluation.Evaluator` does); each device receives only its rows
(`jax.make_array_from_callback`), so the devices of each host decode their share of every batch,
and the replicated outputs come back to every host.  A mesh over `jax.local_devices()` (the
Extractor's default) is process-local and needs no coordination.

Concurrent decodes.  XLA:CPU runs one search (a while loop of small ops) on about one core, so
two batches decoded from two threads at once take about the time of one on a 2-core machine
(BENCHMARKS.md 2k).  `MeshDecoder.concurrent_decodes` says how many decodes may run at once:
the usable CPU cores (capped at MAX_CONCURRENT_DECODES) on a process-local CPU mesh, else 1
(an accelerator is busy with one program; on a mesh spanning processes every process must
launch the same programs in the same order, which concurrent threads would not keep), and
`map_in_order` runs a function over batches with that many threads, results in input order;
`map_as_completed` (the Extractor's) queues every batch at once and hands results over as they
finish, so a thread never waits for the consumer or for a slower batch ahead of it.

`Extractor` and `evaluation.Evaluator` decode through this module; `python -m punified_jax.infer`
goes through the Extractor with the gin partitioning preset (gin/partitioning/*.gin).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar, Union

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from punified_jax import decoding
from punified_jax import generate
from punified_jax import model as model_lib
from punified_jax import partitioning
from punified_jax.model import T5Config, Transformer


PartitioningArg = Union[None, str, partitioning.Partitioner, "MeshDecoder"]

# One jitted wrapper per (model, search settings, mesh, rules, parameter shardings), shared by
# every MeshDecoder on the same mesh (several Extractors reuse one compiled program).
_JITTED: dict[tuple, Any] = {}
_JITTED_LOCK = threading.Lock()
# The most decodes MeshDecoder.concurrent_decodes allows at once, whatever the core count (each
# holds its batch's caches in memory).
MAX_CONCURRENT_DECODES = 4

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def map_in_order(fn: Callable[[_Item], _Result], items: Iterable[_Item],
                 workers: int) -> Iterator[_Result]:
  """fn(item) for every item, in order, with up to `workers` calls running at once in threads;
  at most `workers` results are computed ahead of the consumer.  With workers <= 1 or a single
  item, fn runs in the caller's thread (thread-local state, such as the service's decode
  traces, then sees the call).  An exception in a call is raised when its result is reached."""
  items = list(items)
  if workers <= 1 or len(items) <= 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
    pending: collections.deque = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def map_as_completed(fn: Callable[[_Item], _Result], items: Iterable[_Item],
                     workers: int) -> Iterator[_Result]:
  """fn(item) for every item, with up to `workers` calls running at once in threads, results
  in the order the calls finish (every item is queued at once).  With workers <= 1 or a single
  item, fn runs in the caller's thread, in order.  An exception in a call is raised when its
  result is reached; calls not started by then are cancelled (also when the consumer stops
  early), and running ones are waited for."""
  items = list(items)
  if workers <= 1 or len(items) <= 1:
    yield from map(fn, items)
    return
  pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
  try:
    futures = [pool.submit(fn, item) for item in items]
    for future in concurrent.futures.as_completed(futures):
      yield future.result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


class MeshDecoder:
  """Data-parallel (and parameter-sharded) decoding on `partitioner`'s mesh (module docstring)."""

  def __init__(self, partitioner: partitioning.Partitioner):
    if not isinstance(partitioner, partitioning.Partitioner):
      raise TypeError(f"MeshDecoder needs a partitioning.Partitioner, got {type(partitioner).__name__}")
    self.partitioner = partitioner
    self.mesh = partitioner.mesh
    self.data_size = int(partitioner.mesh_sizes[partitioning.DATA_AXIS])
    self.input_sharding = NamedSharding(self.mesh, PartitionSpec(partitioning.DATA_AXIS))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())

  @classmethod
  def create(cls, spec: PartitioningArg = None, *,
             devices: Optional[list] = None) -> "MeshDecoder":
    """A decoder from a preset name ('data_parallel', 'fsdp', 'tensor_parallel', '2d'), a
    Partitioner, a MeshDecoder (returned as is) or None (= 'data_parallel').  Preset names build
    their mesh over `devices` (default: this process's devices, `jax.local_devices()`)."""
    if isinstance(spec, MeshDecoder):
      return spec
    if isinstance(spec, partitioning.Partitioner):
      return cls(spec)
    if spec is None:
      spec = "data_parallel"
    if not isinstance(spec, str):
      raise TypeError("partitioning must be a preset name "
                      f"({', '.join(partitioning.RULE_PRESETS)}), a partitioning.Partitioner or "
                      f"None, got {type(spec).__name__}")
    return cls(partitioning.preset_partitioner(
        spec, devices=jax.local_devices() if devices is None else devices))

  def __repr__(self) -> str:
    return (f"MeshDecoder(mesh={dict(self.mesh.shape)}, "
            f"rules={self.partitioner.logical_axis_rules!r})")

  # -- parameters ----------------------------------------------------------------------------

  def param_shardings(self, config: T5Config) -> Any:
    """NamedShardings of `config`'s parameter tree under the partitioner's rules."""
    logical = model_lib.param_logical_axes(config)
    shapes = model_lib.param_shapes(config)
    specs = jax.tree.map(lambda spec, leaf: self.partitioner.mesh_spec_for(spec, leaf.shape),
                         logical, shapes,
                         is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)
    return self.partitioner.shardings_from_specs(specs)

  def abstract_params(self, config: T5Config) -> Any:
    """ShapeDtypeStructs carrying `param_shardings`: what `checkpoints.restore_params` takes to
    read each device's slices straight into place (no device ever holds a sharded model whole)."""
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        model_lib.param_shapes(config), self.param_shardings(config))

  def place_params(self, params: Any, config: T5Config) -> Any:
    """`params` (numpy or jax arrays anywhere) moved to `param_shardings(config)`.

    Arrays already in place are kept.  Multi-host meshes are filled from each host's own copy
    (every process must pass the same values)."""
    shardings = self.param_shardings(config)
    # Compared by key paths, so any mapping type (dict, FrozenDict) with the right names works.
    given = jax.tree_util.tree_flatten_with_path(params)[0]
    expected = jax.tree_util.tree_flatten_with_path(model_lib.param_shapes(config))[0]
    given_names = [jax.tree_util.keystr(path) for path, _ in given]
    expected_names = [jax.tree_util.keystr(path) for path, _ in expected]
    if given_names != expected_names:
      missing = sorted(set(expected_names) - set(given_names))
      unknown = sorted(set(given_names) - set(expected_names))
      raise ValueError("the parameters do not have the parameter tree of the model config "
                       f"{config}: missing {missing[:3]}, unknown {unknown[:3]}")
    for (path, leaf), (_, shape) in zip(given, expected):
      if tuple(np.shape(leaf)) != tuple(shape.shape):
        raise ValueError(f"parameter {jax.tree_util.keystr(path)} has shape {np.shape(leaf)}, "
                         f"the model config needs {shape.shape}")
    params = jax.tree.unflatten(jax.tree.structure(shardings), [leaf for _, leaf in given])

    def place(leaf, sharding):
      if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        return leaf
      if sharding.is_fully_addressable:
        return jax.device_put(leaf, sharding)
      host = np.asarray(leaf)
      return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, params, shardings)

  # -- decoding ------------------------------------------------------------------------------

  def on_local_cpu(self) -> bool:
    """Whether every device of the mesh is a CPU device of this process."""
    return all(d.platform == "cpu" and d.process_index == jax.process_index()
               for d in self.mesh.devices.flat)

  def concurrent_decodes(self) -> int:
    """How many `decode` calls may run at once (module docstring, "Concurrent decodes"): the
    CPU cores this process may use, at most MAX_CONCURRENT_DECODES, when every device of the
    mesh is a CPU device of this process; else 1."""
    if not self.on_local_cpu():
      return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_CONCURRENT_DECODES, cores or 1))

  def padded_size(self, batch: int) -> int:
    """`batch` rounded up to a multiple of the `data` axis size."""
    return -(-batch // self.data_size) * self.data_size

  def decode(self, model: Transformer, params: Any, encoder_input_tokens: np.ndarray,
             constraint: Optional[decoding.LogitsConstraint] = None, *, beam_size: int,
             max_decode_length: int, alpha: float = 0.6, eos_id: int = 1,
             stopping: str = "all", **search_options: Any) -> decoding.DecodeOutput:
    """`generate.decode_batch` over the mesh; numpy DecodeOutput with one row per input row.

    encoder_input_tokens: int [batch, input_len] on the host (the same on every process).
    params: jax arrays on this decoder's mesh (`place_params` / `abstract_params`, or the
    trainer's state).  Shapes as generate.decode_batch: [batch, beam_size, max_decode_length].
    `search_options`: any further (hashable) keyword of generate.decode_batch, passed through.
    With more than one device on the data axis, greedy does not retire finished rows unless
    `retire_rows=True` is passed: the smaller batches would gather rows across devices.
    """
    if self.data_size > 1:
      search_options.setdefault("retire_rows", False)
    inputs = np.asarray(encoder_input_tokens)
    if inputs.ndim != 2 or inputs.shape[0] < 1:
      raise ValueError(f"encoder_input_tokens must be a non-empty [batch, input_len] array, got "
                       f"shape {inputs.shape}")
    if not np.issubdtype(inputs.dtype, np.integer):
      raise TypeError(f"encoder_input_tokens must be integer ids, got {inputs.dtype}")
    rows = inputs.shape[0]
    padded = self.padded_size(rows)
    if padded != rows:  # repeat the last row: a real input, decoded and dropped
      inputs = np.concatenate([inputs, np.repeat(inputs[-1:], padded - rows, axis=0)])
    inputs = inputs.astype(np.int32)
    global_inputs = jax.make_array_from_callback(inputs.shape, self.input_sharding,
                                                 lambda index: inputs[index])
    param_shardings = self._shardings_of(params)
    settings = dict(search_options, beam_size=int(beam_size),
                    max_decode_length=int(max_decode_length), alpha=float(alpha),
                    eos_id=int(eos_id), stopping=str(stopping))
    jitted = self._jitted(model, param_shardings, settings)
    with self.partitioner.activation_context():
      output = jitted(params, global_inputs, constraint)
    return decoding.DecodeOutput(*(None if field is None else np.asarray(field)[:rows]
                                   for field in output))

  def _shardings_of(self, params: Any) -> Any:
    def sharding_of(leaf):
      sharding = getattr(leaf, "sharding", None)
      if not isinstance(leaf, jax.Array) or not isinstance(sharding, NamedSharding) \
          or sharding.mesh != self.mesh:
        raise ValueError("the parameters are not on this decoder's mesh "
                         f"{dict(self.mesh.shape)}: place them with MeshDecoder.place_params (or "
                         "restore them with MeshDecoder.abstract_params) first")
      return sharding
    return jax.tree.map(sharding_of, params)

  def _jitted(self, model: Transformer, param_shardings: Any, settings: dict):
    treedef = jax.tree.structure(param_shardings)
    key = (model, self.mesh, self.partitioner.logical_axis_rules, treedef,
           tuple(jax.tree.leaves(param_shardings)), tuple(sorted(settings.items())))
    with _JITTED_LOCK:
      jitted = _JITTED.get(key)
      if jitted is None:

        def decode_on_mesh(params, encoder_input_tokens, constraint):
          return generate.decode_batch(model, params, encoder_input_tokens, constraint,
                                       **settings)

        # A single sharding is a pytree prefix: it covers every leaf of the constraint (or
        # None) and of the DecodeOutput.
        jitted = jax.jit(decode_on_mesh,
                         in_shardings=(param_shardings, self.input_sharding, self.replicated),
                         out_shardings=self.replicated)
        _JITTED[key] = jitted
    return jitted
