"""Mesh construction, rule presets, spec fitting and optimizer-state sharding (one device here;
the 8-device equivalence tests live in test_trainer.py (training) and test_sharded_inference.py
(decoding) and run in subprocesses)."""

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from punified_jax import partitioning

import trainer_helpers as th


@pytest.mark.parametrize("data, model, devices, expected", [
    (-1, 1, 8, (8, 1)),
    (2, -1, 8, (2, 4)),
    (-1, 4, 8, (2, 4)),
    (1, 1, 1, (1, 1)),
    (4, 2, 8, (4, 2)),
])
def test_resolve_mesh_shape(data, model, devices, expected):
  assert partitioning.resolve_mesh_shape(data, model, devices) == expected


@pytest.mark.parametrize("data, model, devices, message", [
    (-1, -1, 8, "at most one"),
    (3, -1, 8, "does not divide"),
    (-1, 3, 8, "does not divide"),
    (2, 2, 8, "but there are 8 devices"),
    (0, 1, 8, "positive size"),
    (-2, 1, 8, "positive size"),
])
def test_resolve_mesh_shape_errors(data, model, devices, message):
  with pytest.raises(ValueError, match=message):
    partitioning.resolve_mesh_shape(data, model, devices)


def test_fit_spec_drops_indivisible_and_relocates():
  sizes = {"data": 4, "model": 2}
  # 30 is not divisible by 4: replicated along it.
  assert partitioning.fit_spec_to_shape(P("data", None), (30, 64), sizes) == P()
  # ... or moved to the largest divisible dimension.
  assert partitioning.fit_spec_to_shape(P("data", None), (30, 64), sizes, relocate=True) == P(None, "data")
  # Divisible specs are untouched; trailing Nones are trimmed.
  assert partitioning.fit_spec_to_shape(P("data", "model", None), (8, 6, 3), sizes) == P("data", "model")
  # Several mesh axes on one dimension need the product to divide.
  assert partitioning.fit_spec_to_shape(P(("data", "model")), (12,), sizes) == P()
  assert partitioning.fit_spec_to_shape(P(("data", "model")), (16,), sizes) == P(("data", "model"))
  with pytest.raises(ValueError, match="more entries"):
    partitioning.fit_spec_to_shape(P("data", None, None), (8, 8), sizes)


def test_relocate_to_largest_axis_and_drop_dimension():
  sizes = {"data": 2, "model": 1}
  assert partitioning.relocate_to_largest_axis(P(), (6, 32), sizes, "data") == P(None, "data")
  assert partitioning.relocate_to_largest_axis(P("data"), (6, 32), sizes, "data") == P("data")
  assert partitioning.relocate_to_largest_axis(P(), (3, 5), sizes, "data") == P()
  assert partitioning.drop_dimension(P("data", "model"), 2, 0) == P("model")
  assert partitioning.drop_dimension(P("data", "model"), 2, 1) == P("data")
  assert partitioning.drop_dimension(P("data"), 3, 2) == P("data")


@pytest.mark.parametrize("shape, expected", [
    ((32, 384), (0, 1)),   # v_row drops 384 (dim 1), v_col drops 32 (dim 0)
    ((384, 32), (1, 0)),
    ((64, 64), (0, 1)),    # ties: stable order, the later dimension counts as the largest
    ((8, 2, 16), (0, 2)),
    ((32,), None),
])
def test_adafactor_factored_dims_matches_optax(shape, expected):
  assert partitioning.adafactor_factored_dims(shape) == expected
  if expected is not None:
    # The derived shapes are exactly optax's v_row / v_col shapes.
    state = optax.adafactor(1e-3, min_dim_size_to_factor=1).init({"w": np.zeros(shape, np.float32)})
    factored = [s for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: hasattr(x, "v_row"))
                if hasattr(s, "v_row")][0]
    second, largest = expected
    assert factored.v_row["w"].shape == tuple(np.delete(shape, largest))
    assert factored.v_col["w"].shape == tuple(np.delete(shape, second))


def test_presets_cover_every_logical_axis_and_validate():
  for name, preset in partitioning.RULE_PRESETS.items():
    rules = partitioning.validate_rules(preset())
    logical = [rule[0] for rule in rules]
    for axis in ("batch", "length", "embed", "mlp", "heads", "kv", "joined_kv", "vocab", "relpos_buckets"):
      assert axis in logical, (name, axis)
    assert rules[0] == ("batch", "data"), name  # batch first: activations stay batch-sharded


@pytest.mark.parametrize("rules, message", [
    ([("embed", "bogus")], "unknown mesh axis 'bogus'"),
    ([("embed",)], r"logical_axis_rules\[0\] must be a"),
    ([(3, "data")], "must be a"),
])
def test_validate_rules_errors(rules, message):
  with pytest.raises(ValueError, match=message):
    partitioning.validate_rules(rules)


def _tiny_layout(rules, optimizer):
  from punified_jax import trainer
  partitioner = partitioning.Partitioner(logical_axis_rules=rules, relocate_indivisible=True)
  return trainer.build_state_layout(th.tiny_model(), optimizer, partitioner)


def test_fsdp_specs_for_tiny_t5_params_and_factored_adafactor_state():
  layout = _tiny_layout(partitioning.fsdp_rules(), optax.adafactor(1e-3, min_dim_size_to_factor=16))
  params = layout.specs.params
  assert params["token_embedder"]["embedding"] == P(None, "data")                    # [vocab, embed]
  assert params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"] == P("data")          # [embed, mlp]
  assert params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"] == P(None, "data")      # [mlp, embed]
  assert params["encoder"]["encoder_norm"]["scale"] == P("data")                      # [embed]
  # No `embed` axis: FSDP shards the largest dimension instead (relative-position buckets).
  assert params["encoder"]["relpos_bias"]["rel_embedding"] == P(None, "data")         # [heads, buckets]
  # Adafactor's factored statistics follow their parameter, minus the reduced dimension.
  factored = [s for s in jax.tree_util.tree_leaves(layout.specs.opt_state, is_leaf=lambda x: hasattr(x, "v_row"))
              if hasattr(s, "v_row")][0]
  # wi_0 [embed=32, mlp=64]: v_row drops mlp (largest) -> [embed] on data; v_col drops embed.
  assert factored.v_row["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"] == P("data")
  assert factored.v_col["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"] == P()
  # wo [mlp=64, embed=32]: v_row drops mlp (dim 0) -> [embed] on data.
  assert factored.v_row["encoder"]["layers_0"]["mlp"]["wo"]["kernel"] == P("data")
  # A 1-D parameter is not factored: its full second moment `v` is sharded like it.
  assert factored.v["encoder"]["encoder_norm"]["scale"] == P("data")
  assert factored.v_row["encoder"]["encoder_norm"]["scale"] == P()  # (1,) placeholder


def test_tensor_parallel_and_data_parallel_specs():
  layout = _tiny_layout(partitioning.tensor_parallel_rules(), optax.adamw(1e-3))
  params = layout.specs.params
  assert params["encoder"]["layers_0"]["attention"]["query"]["kernel"] == P(None, "model")
  assert params["encoder"]["layers_0"]["attention"]["out"]["kernel"] == P("model")
  assert params["decoder"]["logits_dense"]["kernel"] == P(None, "model")
  adam = layout.specs.opt_state[0]
  assert adam.mu["decoder"]["logits_dense"]["kernel"] == P(None, "model")
  assert adam.nu["encoder"]["layers_0"]["attention"]["out"]["kernel"] == P("model")
  assert adam.count == P()
  dp = _tiny_layout(partitioning.data_parallel_rules(), optax.adamw(1e-3))
  assert all(spec == P() for spec in jax.tree_util.tree_leaves(dp.specs, is_leaf=lambda x: isinstance(x, P)))


def test_mesh_spec_rejects_mismatched_logical_axes():
  partitioner = partitioning.Partitioner()
  with pytest.raises(ValueError, match="do not match the array shape"):
    partitioner.mesh_spec_for(P("embed", "mlp"), (4,))


def test_data_shard_info_single_process():
  partitioner = partitioning.Partitioner()
  assert partitioner.data_shard_info(8) == (0, 1)
  batch = partitioner.shard_batch({"x": np.arange(8, dtype=np.int32).reshape(4, 2)}, 4)
  np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(8).reshape(4, 2))


def test_gin_presets_build_their_meshes_on_8_devices(tmp_path):
  """Each gin/partitioning/*.gin preset, parsed after train_base.gin, gives the documented mesh,
  and partitioning.preset_partitioner(name) builds the same one."""
  script = """
import json, gin, sys
from punified_jax import gin_utils, partitioning
result = {}
for preset in ["data_parallel", "fsdp", "tensor_parallel", "2d"]:
  gin.clear_config()
  gin_utils.parse_gin(["gin/runs/train_base.gin", f"gin/partitioning/{preset}.gin"],
                      ["MODEL = None", "MODEL_DIR = '/tmp/x'", "MIXTURE_OR_TASK_NAME = 'x'",
                       "TASK_FEATURE_LENGTHS = {}", "TRAIN_STEPS = 1"], [])
  partitioner = gin.get_configurable("punified_jax.partitioning.Partitioner")()
  named = partitioning.preset_partitioner(preset)  # the Extractor's partitioning='<preset>'
  result[preset] = [dict(partitioner.mesh.shape), partitioner.relocate_indivisible,
                    partitioner.logical_axis_rules == partitioning.validate_rules(
                        partitioning.RULE_PRESETS[preset]()),
                    [dict(named.mesh.shape), named.relocate_indivisible,
                     named.logical_axis_rules] == [dict(partitioner.mesh.shape),
                                                   partitioner.relocate_indivisible,
                                                   partitioner.logical_axis_rules]]
print(json.dumps(result))
"""
  result = th.run_python(["-c", script], env=th.subprocess_env(devices=8), cwd=th.REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  import json
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {
      "data_parallel": [{"data": 8, "model": 1}, False, True, True],
      "fsdp": [{"data": 8, "model": 1}, True, True, True],
      "tensor_parallel": [{"data": 1, "model": 8}, False, True, True],
      "2d": [{"data": 2, "model": 4}, True, True, True],
  }
