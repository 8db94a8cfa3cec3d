"""Scaling: 1/2/4/8 (fake) devices with data-parallel, FSDP and 2-D meshes; the largest size.

    .venv/bin/python benchmarks/scaling.py            # sets XLA_FLAGS for 8 fake CPU devices

Part 1, per layout and device count: per-device parameter and optimizer-state bytes (from each
array's shard shape under the trainer's own shardings: build_state_layout + the partitioning
presets of gin/partitioning/*.gin) and the step time of the trainer's jitted step
(trainer.make_train_step with in/out shardings and donation, as trainer.train builds it) on a
synthetic [batch, length] token batch, compile time reported separately.

Part 2, the largest T5 v1.1 size that trains in this machine's RAM: the compiled train step of
each size (AdamW, fp32 parameters, the paper's batch of 32 x 512/512) is lowered and compiled
from abstract arrays (nothing is allocated) and XLA's memory analysis gives its per-device
footprint (arguments + outputs - aliased (donated) + temporaries), on 1 device and with FSDP
over 8 fake devices.

What fake devices mean: --xla_force_host_platform_device_count splits ONE CPU into N XLA
devices that share its 2 cores and its 24 GiB. The per-device bytes are what each accelerator
would hold on real hardware; here the devices' memory adds up in the same RAM (FSDP divides each
device's share, not the machine's total), and step times measure the partitioned program's
overhead on 2 shared cores, not a speed-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.train_throughput import read_model_gin  # pylint: disable=g-import-not-at-top,wrong-import-position

GIB = 2**30


def make_partitioner(layout: str, devices):
  from punified_jax import partitioning  # pylint: disable=g-import-not-at-top
  n = len(devices)
  if layout == "data_parallel":
    return partitioning.Partitioner(num_partitions=1, data_parallel_size=-1,
                                    logical_axis_rules=partitioning.data_parallel_rules(), devices=devices)
  if layout == "fsdp":
    return partitioning.Partitioner(num_partitions=1, data_parallel_size=-1, logical_axis_rules=partitioning.fsdp_rules(),
                                    relocate_indivisible=True, devices=devices)
  if layout == "2d":
    return partitioning.Partitioner(num_partitions=n // 2, data_parallel_size=2,
                                    logical_axis_rules=partitioning.two_d_rules(), relocate_indivisible=True,
                                    devices=devices)
  raise ValueError(f"unknown layout {layout!r}")


def per_device_bytes(abstract_tree, shardings) -> int:
  """Bytes one device holds of a tree: sum over leaves of prod(shard shape) * itemsize."""
  import jax  # pylint: disable=g-import-not-at-top
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    shard = sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard)) * np.dtype(leaf.dtype).itemsize
  return total


def build_step(model, optimizer, layout, partitioner, microbatches: int = 1):
  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import trainer  # pylint: disable=g-import-not-at-top
  step_fn = trainer.make_train_step(model, optimizer, lambda step: 1e-3, seed=0, z_loss=1e-4,
                                    microbatches=microbatches)
  return jax.jit(step_fn, in_shardings=(layout.shardings, partitioner.data_sharding),
                 out_shardings=(layout.shardings, partitioner.replicated), donate_argnums=(0,))


def synthetic_batch(rows: int, in_len: int, out_len: int, vocab: int, seed: int = 0) -> dict:
  """Unpacked [rows, len] token batch with no padding (every position a real token)."""
  rng = np.random.default_rng(seed)
  targets = rng.integers(2, vocab, (rows, out_len), dtype=np.int32)
  decoder_inputs = np.zeros_like(targets)
  decoder_inputs[:, 1:] = targets[:, :-1]
  return {"encoder_input_tokens": rng.integers(2, vocab, (rows, in_len), dtype=np.int32),
          "decoder_input_tokens": decoder_inputs, "decoder_target_tokens": targets}


def abstract_batch(rows: int, in_len: int, out_len: int, sharding) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  spec = lambda length: jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=sharding)
  return {"encoder_input_tokens": spec(in_len), "decoder_input_tokens": spec(out_len),
          "decoder_target_tokens": spec(out_len)}


def memory_of(compiled) -> dict:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return {}
  args_b = int(analysis.argument_size_in_bytes)
  out_b = int(analysis.output_size_in_bytes)
  alias_b = int(analysis.alias_size_in_bytes)
  temp_b = int(analysis.temp_size_in_bytes)
  return {"argument_gib": args_b / GIB, "output_gib": out_b / GIB, "alias_gib": alias_b / GIB,
          "temp_gib": temp_b / GIB, "peak_gib_per_device": (args_b + out_b - alias_b + temp_b) / GIB}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="small", help="gin/models/<model>.gin for part 1")
  parser.add_argument("--vocab_size", type=int, default=5632, help="our char vocabulary on the real data, rounded up")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--layouts", default="data_parallel,fsdp,2d")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--lengths", default="128,128", help="inputs,targets of the part-1 batch")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--memory_sizes", default="small,base,large", help="part 2 sizes ('' to skip)")
  parser.add_argument("--memory_batch", type=int, default=32)
  parser.add_argument("--memory_lengths", default="512,512")
  parser.add_argument("--memory_remat", default="none,full", help="T5Config.remat_policy values to compare")
  parser.add_argument("--memory_layouts", default="single,fsdp")
  parser.add_argument("--memory_microbatches", type=int, default=1,
                      help="gradient-accumulation micro-batches of the part-2 step (trainer's MICROBATCHES)")
  parser.add_argument("--name", default="scaling")
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import optimizers, trainer  # pylint: disable=g-import-not-at-top
  from punified_jax.model import T5Config, Transformer  # pylint: disable=g-import-not-at-top
  machine = common.machine_info()
  all_devices = jax.devices()
  in_len, out_len = (int(x) for x in args.lengths.split(","))
  optimizer = optimizers.make_optimizer(name="adamw", learning_rate=1e-3, clip_grad_norm=1.0, weight_decay=0.01)

  def config_of(size: str, remat: str = "none") -> T5Config:
    fields = read_model_gin(size)
    fields.update(vocab_size=args.vocab_size, dtype="float32", remat_policy=remat)
    return T5Config(**fields)

  rows = []
  config = config_of(args.model)
  model = Transformer(config)
  for count in [int(c) for c in args.devices.split(",") if c]:
    if count > len(all_devices):
      print(f"skipping {count} devices: only {len(all_devices)}", flush=True)
      continue
    devices = all_devices[:count]
    for layout_name in args.layouts.split(","):
      if layout_name == "2d" and count < 4:
        continue  # a 2 x 1 "2-D" mesh is data parallel
      partitioner = make_partitioner(layout_name, devices)
      layout = trainer.build_state_layout(model, optimizer, partitioner)
      param_b = per_device_bytes(layout.abstract_state.params, layout.shardings.params)
      opt_b = per_device_bytes(layout.abstract_state.opt_state, layout.shardings.opt_state)
      jitted = build_step(model, optimizer, layout, partitioner)
      with partitioner.activation_context():
        state = trainer.initialize_state(layout, partitioner, 0)
        batch = partitioner.shard_batch(synthetic_batch(args.batch, in_len, out_len, config.vocab_size), args.batch)
        start = time.perf_counter()
        compiled = jitted.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        state, metrics = compiled(state, batch)  # first run (allocation) excluded
        jax.block_until_ready(metrics["loss"])
        start = time.perf_counter()
        for _ in range(args.steps):
          state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])
        step_s = (time.perf_counter() - start) / args.steps
      flops = common.train_step_flops(common.Shape.of(config), args.batch, in_len, out_len)
      row = {"layout": layout_name, "devices": count, "mesh": "x".join(str(v) for v in partitioner.mesh.shape.values()),
             "param_mib_per_device": param_b / 2**20, "opt_mib_per_device": opt_b / 2**20,
             "compile_s": compile_s, "step_s": step_s, "gflops_per_s": flops / step_s / 1e9,
             "loss": float(metrics["loss"]), **memory_of(compiled)}
      rows.append(row)
      print(row, flush=True)
      del state, compiled
  if rows:
    common.print_table(rows, ["layout", "devices", "mesh", "param_mib_per_device", "opt_mib_per_device", "compile_s",
                              "step_s", "gflops_per_s", "peak_gib_per_device"],
                       title=f"part 1: {args.model} (vocab {args.vocab_size}), batch {args.batch} x {args.lengths}, AdamW")

  memory_rows = []
  m_in, m_out = (int(x) for x in args.memory_lengths.split(","))
  variants = [(size, remat, layout_name) for size in args.memory_sizes.split(",") if size
              for remat in args.memory_remat.split(",") for layout_name in args.memory_layouts.split(",")]
  for size, remat, layout_name in variants:
    model = Transformer(config_of(size, remat))
    count = 1 if layout_name == "single" else len(all_devices)
    partitioner = make_partitioner("fsdp" if layout_name == "fsdp" else "data_parallel", all_devices[:count])
    layout = trainer.build_state_layout(model, optimizer, partitioner)
    jitted = build_step(model, optimizer, layout, partitioner, args.memory_microbatches)
    start = time.perf_counter()
    with partitioner.activation_context():
      compiled = jitted.lower(layout.abstract_with_shardings(),
                              abstract_batch(args.memory_batch, m_in, m_out, partitioner.data_sharding)).compile()
    memory = memory_of(compiled)
    params = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(layout.abstract_state.params))
    row = {"size": size, "remat": remat, "microbatches": args.memory_microbatches, "layout": layout_name,
           "devices": count, "params_m": params / 1e6,
           "compile_s": time.perf_counter() - start, **memory,
           "total_gib_all_devices": memory.get("peak_gib_per_device", float("nan")) * count}
    row["fits_24gib"] = row["total_gib_all_devices"] < machine.get("ram_gib", 24) * 0.9
    memory_rows.append(row)
    print(row, flush=True)
    del compiled
  if memory_rows:
    common.print_table(memory_rows, ["size", "remat", "microbatches", "layout", "devices", "params_m", "argument_gib", "temp_gib",
                                     "peak_gib_per_device", "total_gib_all_devices", "fits_24gib", "compile_s"],
                       title=f"part 2: compiled train-step memory, batch {args.memory_batch} x {args.memory_lengths}")
  payload = {"command": common.command_line(), "machine": machine, "versions": common.jax_versions(),
             "xla_flags": os.environ.get("XLA_FLAGS"), "settings": vars(args), "layouts": rows, "memory": memory_rows}
  print("wrote", common.write_json(args.name, payload))
  return 0


if __name__ == "__main__":
  sys.exit(main())
