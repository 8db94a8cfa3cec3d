"""Run in a subprocess with 8 fake CPU devices (see test_trainer.py): trains the tiny T5 for 10
steps on one device, data-parallel, FSDP, 1-D tensor-parallel (1 x 8) and a 2 x 4 (data x model)
mesh, with each gin/partitioning preset's own rules, and writes the losses and the shard shapes of chosen parameters / optimizer statistics as JSON."""

import json
import os
import sys

import jax

from punified_jax import optimizers, partitioning, trainer

import trainer_helpers as th

LAYOUTS = {
    "single": dict(devices=jax.devices()[:1]),
    "data_parallel": dict(logical_axis_rules=partitioning.data_parallel_rules()),
    "fsdp": dict(logical_axis_rules=partitioning.fsdp_rules(), relocate_indivisible=True),
    "tensor_parallel": dict(logical_axis_rules=partitioning.tensor_parallel_rules(), data_parallel_size=1,
                            num_partitions=-1),
    "2x4": dict(logical_axis_rules=partitioning.two_d_rules(), data_parallel_size=2, num_partitions=-1,
                relocate_indivisible=True),
}


def factored_state(opt_state):
  return [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: hasattr(x, "v_row"))
          if hasattr(s, "v_row")][0]


def shard_shape(array):
  return list(array.addressable_shards[0].data.shape)


def main(out_path: str, model_root: str, only: str = "") -> None:
  assert len(jax.devices()) == 8, jax.devices()
  th.register_task("shard_mem", th.memorise_examples(16))
  report = {}
  import time
  for name, kwargs in LAYOUTS.items():
    if only and name not in only.split(","):
      continue
    started = time.time()
    partitioner = partitioning.Partitioner(**kwargs)
    schedule = optimizers.make_schedule(base_learning_rate=1e-2)
    # min_dim_size_to_factor=16 so the tiny model's matrices get factored statistics.
    optimizer = optimizers.make_optimizer(name="adafactor", learning_rate=schedule, min_dim_size_to_factor=16,
                                          clip_grad_norm=1.0)
    summary = trainer.train(
        model=th.tiny_model(dropout_rate=0.1, layers=1, num_heads=4), model_dir=os.path.join(model_root, name),
        mixture_or_task_name="shard_mem", task_feature_lengths={"inputs": 8, "targets": 8}, train_steps=10,
        batch_size=16, partitioner_override=partitioner, optimizer=optimizer, learning_rate_schedule=schedule,
        seed=3, log_every=1, checkpoint_period=1000, tensorboard=False, async_checkpointing=False)
    params = summary.state.params
    factored = factored_state(summary.state.opt_state)
    wi = ("encoder", "layers_0", "mlp", "wi_0", "kernel")

    def get(tree, path):
      for key in path:
        tree = tree[key]
      return tree

    report[name] = {
        "seconds": time.time() - started,
        "mesh": dict(partitioner.mesh.shape),
        "losses": [h["loss"] for h in summary.history],
        "grad_norms": [h["grad_norm"] for h in summary.history],
        "shards": {
            "embedding": shard_shape(params["token_embedder"]["embedding"]),
            "wi_0": shard_shape(get(params, wi)),
            "logits_dense": shard_shape(params["decoder"]["logits_dense"]["kernel"]),
            "relpos": shard_shape(params["encoder"]["relpos_bias"]["rel_embedding"]),
            "wi_0.v_row": shard_shape(get(factored.v_row, wi)),
            "wi_0.v_col": shard_shape(get(factored.v_col, wi)),
            "embedding.v_row": shard_shape(factored.v_row["token_embedder"]["embedding"]),
            "embedding.v_col": shard_shape(factored.v_col["token_embedder"]["embedding"]),
        },
    }
  with open(out_path, "w") as handle:
    json.dump(report, handle, indent=1)


if __name__ == "__main__":
  main(*sys.argv[1:4])
