"""Device mesh, logical-axis rule presets and the shardings of parameters, optimizer state and data.

The model names every parameter and key activation dimension with a *logical* axis (`batch`,
`length`, `embed`, `mlp`, `heads`, `kv`, `joined_kv`, `vocab`, `relpos_buckets`). A rule set maps
logical axes to the two *mesh* axes `data` and `model`; data-parallel, FSDP, 1-D tensor-parallel
and 2-D (data x model) training are four rule sets, not four code paths (t5x's idea; the rules
below are written for this project).

Rules are ordered `(logical, mesh)` pairs; for each array the first rule whose mesh axis is still
free in that array wins (flax's resolution), so `("batch", "data")` placed before
`("embed", "data")` keeps activations batch-sharded while FSDP shards parameters along `embed`.

Two things the rules alone cannot express are handled in `Partitioner`:
- a dimension whose size is not divisible by its mesh axes is replicated instead (jit would reject
  it); with `relocate_indivisible=True` (FSDP's preset) the freed mesh axis moves to the largest
  other dimension that divides, so odd-sized parameters are still sharded;
- optimizer state is sharded like the parameter it belongs to, including Adafactor's factored
  second-moment statistics, which drop one parameter dimension (see `optimizer_state_shardings`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)

LogicalRules = tuple[tuple[str, Any], ...]

# Logical axes every preset must mention, so a forgotten name fails loudly in a test instead of
# silently replicating a large tensor.
_PARAM_AXES = ("embed", "mlp", "heads", "kv", "joined_kv", "vocab", "relpos_buckets")
_ACTIVATION_AXES = ("batch", "length")


# --------------------------------------------------------------------------------------------
# Rule presets.
# --------------------------------------------------------------------------------------------


@gin.configurable
def data_parallel_rules() -> LogicalRules:
  """Parameters replicated on every device; the batch split over `data`."""
  return (("batch", DATA_AXIS),) + tuple((name, None) for name in _PARAM_AXES + ("length",))


@gin.configurable
def fsdp_rules() -> LogicalRules:
  """Fully sharded data parallel: parameters (and so optimizer state) sharded over `data`.

  `embed` is present in every weight matrix of a T5 (and in the norms' scales), so sharding it
  over `data` splits almost all parameter bytes; `batch` comes first so activations, which also
  carry `embed`, stay batch-sharded. Tensors without `embed` (relative-position biases) are
  small; `relocate_indivisible` in the FSDP gin preset also moves `data` to another divisible
  dimension when `embed` does not divide.
  """
  return (
      ("batch", DATA_AXIS),
      ("embed", DATA_AXIS),
      ("vocab", None),
      ("mlp", None),
      ("heads", None),
      ("kv", None),
      ("joined_kv", None),
      ("relpos_buckets", None),
      ("length", None),
  )


@gin.configurable
def tensor_parallel_rules() -> LogicalRules:
  """1-D tensor (model) parallelism in the Megatron style t5x uses by default.

  Attention heads, MLP hidden units and the vocabulary are split over `model`; `embed` stays
  whole so each layer needs one all-reduce after its row-parallel matmul. The batch still goes
  over `data` (size 1 in a pure tensor-parallel mesh).
  """
  return (
      ("batch", DATA_AXIS),
      ("vocab", MODEL_AXIS),
      ("mlp", MODEL_AXIS),
      ("heads", MODEL_AXIS),
      ("joined_kv", MODEL_AXIS),
      ("kv", None),
      ("embed", None),
      ("relpos_buckets", None),
      ("length", None),
  )


@gin.configurable
def two_d_rules() -> LogicalRules:
  """2-D: tensor parallel over `model` plus FSDP-style parameter sharding over `data`.

  A weight [embed, mlp] becomes [data, model]; activations are [batch over data, ..., heads or
  mlp over model]. `embed` maps to `data` only after `batch` claimed it in activations.
  """
  return (
      ("batch", DATA_AXIS),
      ("vocab", MODEL_AXIS),
      ("mlp", MODEL_AXIS),
      ("heads", MODEL_AXIS),
      ("joined_kv", MODEL_AXIS),
      ("embed", DATA_AXIS),
      ("kv", None),
      ("relpos_buckets", None),
      ("length", None),
  )


RULE_PRESETS = {
    "data_parallel": data_parallel_rules,
    "fsdp": fsdp_rules,
    "tensor_parallel": tensor_parallel_rules,
    "2d": two_d_rules,
}


def validate_rules(rules: Sequence[Sequence[Any]]) -> LogicalRules:
  """Checks a rule list (e.g. from gin) and returns it as a tuple of pairs."""
  checked = []
  for index, rule in enumerate(rules):
    if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"logical_axis_rules[{index}] must be a (logical_name, mesh_axis) pair, got {rule!r}")
    logical, mesh_axes = rule
    for axis in (mesh_axes if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"logical_axis_rules[{index}] ({logical!r}) maps to unknown mesh axis {axis!r}; "
                         f"mesh axes are {MESH_AXES}")
    checked.append((logical, tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes))
  return tuple(checked)


# --------------------------------------------------------------------------------------------
# Mesh.
# --------------------------------------------------------------------------------------------


def resolve_mesh_shape(data: int, model: int, num_devices: int) -> tuple[int, int]:
  """Resolves (data, model) sizes where one of them may be -1 ("all remaining devices")."""
  if data == -1 and model == -1:
    raise ValueError("mesh: at most one of data/model may be -1")
  for name, size in (("data", data), ("model", model)):
    if size == 0 or size < -1:
      raise ValueError(f"mesh: {name} must be a positive size or -1, got {size}")
  if data == -1:
    if num_devices % model:
      raise ValueError(f"mesh: model={model} does not divide the {num_devices} devices")
    data = num_devices // model
  elif model == -1:
    if num_devices % data:
      raise ValueError(f"mesh: data={data} does not divide the {num_devices} devices")
    model = num_devices // data
  if data * model != num_devices:
    raise ValueError(f"mesh: data={data} x model={model} = {data * model} but there are {num_devices} devices")
  return data, model


def create_mesh(data: int = -1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("data", "model") mesh over all devices (or `devices`).

  `mesh_utils.create_device_mesh` lays devices out so that `model` (the axis with the most
  communication) falls within a host/ICI ring; it has no layout rule for some shapes and
  platforms, in which case devices are taken in `jax.devices()` order (process-major, so `data`
  spans hosts). Either way `model` groups devices of one process when it divides the local count.
  """
  devices = list(jax.devices() if devices is None else devices)
  data, model = resolve_mesh_shape(data, model, len(devices))
  try:
    device_grid = mesh_utils.create_device_mesh((data, model), devices)
  except (ValueError, NotImplementedError, AssertionError) as error:
    logger.info("mesh_utils could not lay out (%d, %d) (%s); using device order", data, model, error)
    device_grid = np.asarray(devices, dtype=object).reshape(data, model)
  return Mesh(device_grid, MESH_AXES)


# --------------------------------------------------------------------------------------------
# Specs.
# --------------------------------------------------------------------------------------------


def _axes_of(entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  if isinstance(entry, str):
    return (entry,)
  return tuple(entry)


def fit_spec_to_shape(spec: PartitionSpec, shape: Sequence[int], mesh_sizes: dict[str, int], *,
                      relocate: bool = False) -> PartitionSpec:
  """Makes `spec` valid for an array of `shape`.

  A dimension whose size is not divisible by the product of its mesh axes loses those axes
  (replicated along them). With `relocate`, each freed mesh axis is then placed on the largest
  dimension that is still unsharded and divisible by it (FSDP's "largest divisible axis").
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  if len(entries) > len(shape):
    raise ValueError(f"partition spec {spec} has more entries than the array has dimensions {tuple(shape)}")
  freed: list[str] = []
  for dim, entry in enumerate(entries):
    axes = _axes_of(entry)
    if axes and shape[dim] % math.prod(mesh_sizes[a] for a in axes):
      freed.extend(axes)
      entries[dim] = None
  if relocate:
    for axis in freed:
      if mesh_sizes[axis] == 1:
        continue
      candidates = [d for d in range(len(shape)) if entries[d] is None and shape[d] % mesh_sizes[axis] == 0]
      if candidates:
        best = max(candidates, key=lambda d: (shape[d], -d))
        entries[best] = axis
  while entries and entries[-1] is None:
    entries.pop()
  return PartitionSpec(*entries)


def relocate_to_largest_axis(spec: PartitionSpec, shape: Sequence[int], mesh_sizes: dict[str, int],
                             axis: str) -> PartitionSpec:
  """If `axis` is unused in `spec`, shards the largest free divisible dimension over it.

  Used by FSDP for parameters that have no `embed` dimension at all.
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  used = {a for entry in entries for a in _axes_of(entry)}
  if axis in used:
    return spec
  candidates = [d for d in range(len(shape)) if entries[d] is None and shape[d] % mesh_sizes[axis] == 0]
  if not candidates:
    return spec
  best = max(candidates, key=lambda d: (shape[d], -d))
  entries[best] = axis
  while entries and entries[-1] is None:
    entries.pop()
  return PartitionSpec(*entries)


def drop_dimension(spec: PartitionSpec, rank: int, dim: int) -> PartitionSpec:
  """The spec of an array that is `spec`'s array with dimension `dim` reduced away."""
  entries = list(spec) + [None] * (rank - len(spec))
  del entries[dim]
  while entries and entries[-1] is None:
    entries.pop()
  return PartitionSpec(*entries)


def adafactor_factored_dims(shape: Sequence[int]) -> tuple[int, int] | None:
  """(second largest, largest) dimension indices Adafactor factors a >= 2-D parameter over.

  Mirrors optax's rule (stable argsort of the shape): `v_row` drops the largest dimension,
  `v_col` the second largest. Whether a parameter is factored at all (optax's
  `min_dim_size_to_factor`) does not matter here: unfactored parameters keep (1,)-shaped
  placeholders in `v_row`/`v_col`, which are replicated.
  """
  if len(shape) < 2:
    return None
  order = np.argsort(np.asarray(shape), kind="stable")
  return int(order[-2]), int(order[-1])


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _path_names(path) -> tuple[str, ...]:
  return tuple(_key_name(k) for k in path)


# --------------------------------------------------------------------------------------------
# Partitioner.
# --------------------------------------------------------------------------------------------


@gin.configurable
@dataclasses.dataclass
class Partitioner:
  """Mesh plus logical-axis rules: turns logical annotations into NamedShardings.

  Attributes:
    num_partitions: size of the `model` mesh axis (t5x's name); -1 = all devices.
    data_parallel_size: size of the `data` mesh axis; -1 = the devices `model` leaves.
    logical_axis_rules: ordered (logical axis, mesh axis or None) pairs; a preset from this module.
    relocate_indivisible: move a mesh axis from a dimension it does not divide to the largest one
      it does (and, for FSDP, shard parameters without an `embed` dimension along their largest).
    devices: the devices to use (default all, `jax.devices()`).
  """
  num_partitions: int = 1
  data_parallel_size: int = -1
  logical_axis_rules: Sequence[Sequence[Any]] = dataclasses.field(default_factory=data_parallel_rules)
  relocate_indivisible: bool = False
  devices: Sequence[Any] | None = None

  def __post_init__(self):
    self.logical_axis_rules = validate_rules(self.logical_axis_rules)
    self.mesh = create_mesh(self.data_parallel_size, self.num_partitions, self.devices)
    self.mesh_sizes = dict(self.mesh.shape)

  # Data ------------------------------------------------------------------------------------

  @property
  def data_sharding(self) -> NamedSharding:
    """Sharding of a [batch, length] input array: rows over `data`, copies over `model`."""
    return NamedSharding(self.mesh, self._mesh_spec(("batch", "length")))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def data_shard_info(self, global_batch_size: int) -> tuple[int, int]:
    """(index, count) of the distinct batch slices the processes must read.

    Processes whose devices hold the same rows of the batch (e.g. a mesh whose `data` axis lives
    within one host) read the same slice. Returned for `jax.process_index()`.
    """
    slices = self._process_batch_slices(global_batch_size)
    distinct = sorted(set(slices.values()))
    return distinct.index(slices[jax.process_index()]), len(distinct)

  def _process_batch_slices(self, global_batch_size: int) -> dict[int, tuple[int, int]]:
    index_map = self.data_sharding.devices_indices_map((global_batch_size, 1))
    per_process: dict[int, list[tuple[int, int]]] = {}
    for device, index in index_map.items():
      rows = index[0]
      start, stop, _ = rows.indices(global_batch_size)
      per_process.setdefault(device.process_index, []).append((start, stop))
    result = {}
    for process, ranges in per_process.items():
      start, stop = min(r[0] for r in ranges), max(r[1] for r in ranges)
      covered = sum(b - a for a, b in set(ranges))
      if covered != stop - start:
        raise ValueError(f"process {process} holds non-contiguous batch rows {sorted(set(ranges))}; "
                         "reorder the mesh so each host's devices hold one contiguous slice")
      result[process] = (start, stop)
    return result

  def shard_batch(self, local_batch: dict[str, np.ndarray], global_batch_size: int) -> dict[str, jax.Array]:
    """Host-local rows (this process's slice) -> global arrays sharded by `data_sharding`."""
    result = {}
    for name, value in local_batch.items():
      global_shape = (global_batch_size,) + tuple(value.shape[1:])
      result[name] = jax.make_array_from_process_local_data(self.data_sharding, value, global_shape)
    return result

  # Parameters and optimizer state ----------------------------------------------------------

  def _mesh_spec(self, logical_axes: Sequence[str | None]) -> PartitionSpec:
    return nn.logical_to_mesh_axes(tuple(logical_axes), self.logical_axis_rules)

  def mesh_spec_for(self, logical_spec: PartitionSpec | None, shape: Sequence[int]) -> PartitionSpec:
    """Mesh spec for one array from its logical spec (None = no annotation -> replicated)."""
    if logical_spec is None or len(logical_spec) == 0 or len(shape) == 0:
      spec = PartitionSpec()
    else:
      if len(logical_spec) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_spec)} do not match the array shape {tuple(shape)}")
      spec = self._mesh_spec(tuple(logical_spec))
    spec = fit_spec_to_shape(spec, shape, self.mesh_sizes, relocate=self.relocate_indivisible)
    if self.relocate_indivisible and self._shards_params_over_data() and len(shape) > 0:
      spec = relocate_to_largest_axis(spec, shape, self.mesh_sizes, DATA_AXIS)
    return spec

  def _shards_params_over_data(self) -> bool:
    return any(axis == "embed" and DATA_AXIS in _axes_of(mesh) for axis, mesh in self.logical_axis_rules)

  def param_specs(self, abstract_boxed_params) -> Any:
    """Mesh PartitionSpecs for a (possibly abstract) tree of logically boxed parameters."""
    logical = nn.get_partition_spec(abstract_boxed_params)
    unboxed = nn.meta.unbox(abstract_boxed_params)
    return jax.tree.map(lambda spec, leaf: self.mesh_spec_for(spec, leaf.shape), logical, unboxed,
                        is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)

  def shardings_from_specs(self, specs) -> Any:
    return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))

  def optimizer_state_specs(self, abstract_opt_state, abstract_params, param_specs) -> Any:
    """Specs for an optax state: each leaf is sharded like the parameter it belongs to.

    A state leaf belongs to a parameter when the tail of its tree path is that parameter's path
    (optax keeps per-parameter trees such as `mu`, `nu`, `v_row`, `v_col` inside its states).
    Leaves of the parameter's shape take its spec; Adafactor's `v_row` / `v_col` drop the
    largest / second-largest dimension, so their spec is the parameter's minus that entry;
    placeholders of shape (1,) and step counters are replicated.
    """
    param_leaves = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
      param_leaves[_path_names(path)] = leaf
    spec_leaves = {}
    for path, spec in jax.tree_util.tree_flatten_with_path(
        param_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]:
      spec_leaves[_path_names(path)] = spec

    def spec_for(path, leaf) -> PartitionSpec:
      names = _path_names(path)
      shape = tuple(getattr(leaf, "shape", ()))
      for start in range(len(names)):
        tail = names[start:]
        if tail in param_leaves:
          param_shape = tuple(param_leaves[tail].shape)
          param_spec = spec_leaves[tail]
          field = names[start - 1] if start > 0 else ""
          return self._derive_state_spec(field, shape, param_shape, param_spec, names)
      if shape and math.prod(shape) > 1:
        logger.warning("optimizer state %s %s matches no parameter; replicated", "/".join(names), shape)
      return PartitionSpec()

    return jax.tree_util.tree_map_with_path(spec_for, abstract_opt_state)

  def _derive_state_spec(self, field, shape, param_shape, param_spec, names) -> PartitionSpec:
    if shape == param_shape:
      return param_spec
    if len(shape) <= 1 and math.prod(shape) == 1:
      return PartitionSpec()
    if len(shape) == len(param_shape) - 1:
      factored = adafactor_factored_dims(param_shape)
      dropped = None
      if factored is not None and field in ("v_row", "v_col"):
        second_largest, largest = factored
        dropped = largest if field == "v_row" else second_largest
      else:  # an unknown reduction: accept it when exactly one dimension explains the shape
        candidates = [d for d in range(len(param_shape))
                      if param_shape[:d] + param_shape[d + 1:] == shape]
        if len(set(param_shape[:d] + param_shape[d + 1:] for d in candidates)) == 1 and len(candidates) == 1:
          dropped = candidates[0]
      if dropped is not None and param_shape[:dropped] + param_shape[dropped + 1:] == shape:
        spec = drop_dimension(param_spec, len(param_shape), dropped)
        return fit_spec_to_shape(spec, shape, self.mesh_sizes)
    logger.warning("optimizer state %s %s does not derive from its parameter %s; replicated",
                   "/".join(names), shape, param_shape)
    return PartitionSpec()

  # Activations -----------------------------------------------------------------------------

  def activation_context(self):
    """Context for tracing model code: the mesh plus the rules, so the model's
    `nn.with_logical_constraint` calls become sharding constraints."""
    return _ActivationContext(self.mesh, self.logical_axis_rules)


class _ActivationContext:

  def __init__(self, mesh: Mesh, rules: LogicalRules):
    self._mesh = mesh
    self._rules = rules
    self._stack = []

  def __enter__(self):
    mesh_context = jax.set_mesh(self._mesh)
    rules_context = nn.logical_axis_rules(self._rules)
    mesh_context.__enter__()
    rules_context.__enter__()
    self._stack.append((mesh_context, rules_context))
    return self

  def __exit__(self, *exc):
    mesh_context, rules_context = self._stack.pop()
    rules_context.__exit__(*exc)
    mesh_context.__exit__(*exc)
    return False


# The mesh shape and relocation of each gin/partitioning/<name>.gin preset (kept equal to those
# files by test_partitioning), for code that picks a layout by name (the Extractor).
PRESET_LAYOUTS = {
    "data_parallel": dict(data_parallel_size=-1, num_partitions=1, relocate_indivisible=False),
    "fsdp": dict(data_parallel_size=-1, num_partitions=1, relocate_indivisible=True),
    "tensor_parallel": dict(data_parallel_size=1, num_partitions=-1, relocate_indivisible=False),
    "2d": dict(data_parallel_size=2, num_partitions=-1, relocate_indivisible=True),
}


def preset_partitioner(name: str, *, devices: Sequence[Any] | None = None) -> Partitioner:
  """The Partitioner of preset `name` (as its gin file builds it) over `devices` (default all)."""
  if name not in PRESET_LAYOUTS:
    raise ValueError(f"unknown partitioning preset {name!r}; presets: {', '.join(PRESET_LAYOUTS)}")
  return Partitioner(logical_axis_rules=RULE_PRESETS[name](), devices=devices, **PRESET_LAYOUTS[name])


def describe_shardings(params, specs) -> list[str]:
  """Human-readable lines 'path shape -> spec' for logging a run's layout."""
  lines = []
  flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  for (path, leaf), spec in zip(flat_params, flat_specs):
    lines.append(f"{'/'.join(_path_names(path))} {tuple(leaf.shape)} -> {spec}")
  return lines
