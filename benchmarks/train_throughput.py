"""Training throughput: our trainer (packing) vs HF T5ForConditionalGeneration on PyTorch.

    .venv/bin/python benchmarks/train_throughput.py --raw_dir ../shared/data/raw \
        --sizes tiny,small --dtypes fp32,bf16

One invocation runs, per model size and precision, alternating: PyTorch with the paper's
batching (uniform dataset mixture, 32 examples padded to the longest), PyTorch with
length-grouped batches, and our `trainer.train` on the same mixture with seqio packing. All
three start from the SAME initial weights (our seed-0 init, exported with hf_interop.export_hf)
and use the same optimizer (AdamW, same learning rate, weight decay, global-norm clipping) and
objective (mean cross entropy per non-padding target token; our z-loss is set to 0 to match).

Measured per run: steady-state non-padding target tokens/s (steps after `--warmup`, so the
compile / first steps are excluded and reported separately), computed model FLOPs per second
(padding and packing positions included: what the hardware did) against this CPU's peak, and the
wall time (excluding the first step) until the running mean of the last 10 losses first drops
to `--target_loss` (default "auto": per size, the lowest loss that every run reached). The PyTorch side runs in .venv-torch through benchmarks/torch_worker.py.
Results: a table on stdout and benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from punified_jax.tasks import names as task_names  # pylint: disable=g-import-not-at-top,wrong-import-position

LOSS_WINDOW = 10  # losses averaged for the time-to-loss criterion (single batches are noisy)


def read_model_gin(size: str) -> dict:
  """The T5Config fields and DROPOUT_RATE of gin/models/<size>.gin (plain `key = value` lines)."""
  path = os.path.join(common.REPO_ROOT, "gin", "models", f"{size}.gin")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--sizes: {path} does not exist")
  fields, in_config = {}, False
  with open(path, encoding="utf-8") as handle:
    for line in handle:
      text = line.split("#", 1)[0].rstrip()
      if text.startswith("model.T5Config:"):
        in_config = True
        continue
      match = re.match(r"^(\s*)(\w+)\s*=\s*(.+)$", text)
      if not match:
        if text and not text.startswith(" "):
          in_config = False
        continue
      indent, key, value = match.groups()
      if not indent and key == "DROPOUT_RATE":
        fields["dropout_rate"] = float(value)
      elif in_config and indent and not value.startswith("%"):
        fields[key] = value if not re.match(r"^-?[\d.e]+$", value) else (
            float(value) if "." in value or "e" in value else int(value))
        if value in ("True", "False"):
          fields[key] = value == "True"
  return fields


def percentile_summary(values) -> dict:
  values = np.asarray(values, float)
  return {"mean": float(values.mean()), "median": float(np.median(values)), "min": float(values.min()),
          "max": float(values.max())}


def time_to_loss(step_seconds, losses, target: float, skip_first: int = 1):
  """Seconds (sum of step times after the first `skip_first` steps) until the running mean of
  the last LOSS_WINDOW losses is <= target; None if never."""
  elapsed = 0.0
  for index, (seconds, _) in enumerate(zip(step_seconds, losses)):
    if index >= skip_first:
      elapsed += seconds
    window = losses[max(0, index + 1 - LOSS_WINDOW):index + 1]
    if index + 1 >= LOSS_WINDOW and float(np.mean(window)) <= target:
      return elapsed, index + 1
  return None, None


def running_mean_min(losses) -> float:
  """The lowest running mean (over LOSS_WINDOW steps) a run reached."""
  losses = np.asarray(losses, float)
  if len(losses) < LOSS_WINDOW:
    return float("inf")
  means = np.convolve(losses, np.ones(LOSS_WINDOW) / LOSS_WINDOW, mode="valid")
  return float(means.min())


def summarize(kind: str, step_seconds, losses, tokens, flops, warmup: int, peak: float) -> dict:
  steady = slice(warmup, None)
  seconds = float(np.sum(step_seconds[steady]))
  steady_tokens = float(np.sum(tokens[steady]))
  steady_flops = float(np.sum(flops[steady]))
  return {
      "run": kind,
      "steps": len(step_seconds),
      "first_step_s": float(step_seconds[0]),
      "warmup_s": float(np.sum(step_seconds[:warmup])),
      "step_s": seconds / max(1, len(step_seconds) - warmup),
      "tokens_per_s": steady_tokens / seconds if seconds else float("nan"),
      "target_tokens_per_step": steady_tokens / max(1, len(step_seconds) - warmup),
      "gflops_per_s": steady_flops / seconds / 1e9 if seconds else float("nan"),
      "peak_fraction": steady_flops / seconds / peak if seconds else float("nan"),
      "final_loss_mean10": float(np.mean(losses[-LOSS_WINDOW:])),
      "step_seconds": [float(s) for s in step_seconds],
      "loss": [float(x) for x in losses],
      "target_tokens": [int(t) for t in tokens],
  }


# ----------------------------------------------------------------------------------------------
# The two sides.
# ----------------------------------------------------------------------------------------------


def run_torch(torch_python: str, hf_dir: str, batches, steps: int, dtype: str, args, workdir: str,
              tag: str) -> dict:
  npz = os.path.join(workdir, f"{tag}.npz")
  arrays = {}
  for index, batch in enumerate(batches[:steps]):
    arrays[f"input_ids_{index}"] = batch.input_ids
    arrays[f"labels_{index}"] = batch.labels
  np.savez(npz, **arrays)
  request = {"model_dir": hf_dir, "batches": npz, "steps": steps, "dtype": dtype, "lr": args.lr,
             "weight_decay": args.weight_decay, "clip_grad_norm": args.clip_grad_norm,
             "threads": args.threads, "output": os.path.join(workdir, f"{tag}.result.json")}
  request_path = os.path.join(workdir, f"{tag}.request.json")
  with open(request_path, "w") as handle:
    json.dump(request, handle)
  worker = os.path.join(common.REPO_ROOT, "benchmarks", "torch_worker.py")
  subprocess.run([torch_python, worker, "train", request_path], check=True)
  with open(request["output"]) as handle:
    return json.load(handle)


def run_ours(config, optimizer, args, steps: int, workdir: str, tag: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import trainer  # pylint: disable=g-import-not-at-top
  from punified_jax.model import Transformer  # pylint: disable=g-import-not-at-top
  times, losses, tokens = [], [], []

  def on_step(step, metrics):
    del step
    jax.block_until_ready(metrics["loss"])  # synchronous timing: one step = one measured unit
    times.append(time.perf_counter())
    losses.append(float(metrics["loss"]))
    tokens.append(float(metrics["target_tokens"]))

  start = time.perf_counter()
  trainer.train(
      model=Transformer(config), model_dir=os.path.join(workdir, tag),
      mixture_or_task_name=task_names.JOINT_MIXTURE,
      task_feature_lengths={"inputs": args.pack_inputs, "targets": args.pack_targets},
      train_steps=steps, batch_size=args.pack_rows, optimizer=optimizer,
      learning_rate_schedule=lambda step: args.lr, seed=0, z_loss=0.0, pack=True,
      checkpoint_period=10**9, keep_checkpoints=1, async_checkpointing=False, eval_period=None,
      log_every=10**9, tensorboard=False, step_callback=on_step)
  step_seconds = np.diff([start] + times)
  return {"step_seconds": step_seconds.tolist(), "loss": losses, "target_tokens": tokens}


def packing_report(args, batches: int = 20) -> dict:
  """Real-token fraction and examples per step of our packed batches (same pipeline as train)."""
  from punified_jax import trainer  # pylint: disable=g-import-not-at-top
  iterator = trainer.make_train_iterator(
      mixture_or_task_name=task_names.JOINT_MIXTURE,
      task_feature_lengths={"inputs": args.pack_inputs, "targets": args.pack_targets},
      global_batch_size=args.pack_rows, seed=0, data_shards=1, shard_range=(0, 1), pack=True)
  stats = [common.packed_stats(next(iterator)) for _ in range(batches)]
  real = sum(s["real_tokens"] for s in stats)
  computed = sum(s["computed_tokens"] for s in stats)
  return {"real_fraction": real / computed, "examples_per_step": float(np.mean([s["examples"] for s in stats])),
          "target_tokens_per_step": float(np.mean([s["target_tokens"] for s in stats]))}


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True, help="real data root (release formats), e.g. ../shared/data/raw")
  parser.add_argument("--datasets", default=None, help="comma-separated datasets (default: the paper's eight "
                      "that exist under --raw_dir)")
  parser.add_argument("--sizes", default="tiny,small", help="gin/models/<size>.gin names")
  parser.add_argument("--dtypes", default="fp32,bf16")
  parser.add_argument("--steps", default="tiny=300,small=14", help="steps per size (size=N,...)")
  parser.add_argument("--warmup", default="tiny=20,small=2", help="excluded first steps per size")
  parser.add_argument("--batch_size", type=int, default=32, help="examples per PyTorch batch (the paper's 32)")
  parser.add_argument("--megabatch", type=int, default=50, help="batches sorted together by the grouped sampler")
  parser.add_argument("--pack_inputs", type=int, default=512)
  parser.add_argument("--pack_targets", type=int, default=512)
  parser.add_argument("--pack_rows", type=int, default=4, help="packed rows per step (4 x 512 holds ~32-40 examples)")
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--weight_decay", type=float, default=0.01)
  parser.add_argument("--clip_grad_norm", type=float, default=1.0)
  parser.add_argument("--target_loss", default="auto",
                      help="time-to-loss threshold per size (size=L,...), or 'auto': per size, the highest of the "
                           "runs' best 10-step mean losses, i.e. the lowest loss that EVERY run reached")
  parser.add_argument("--pool", type=int, default=2000, help="train examples read per dataset for PyTorch")
  parser.add_argument("--runs", default="torch_paper,torch_grouped,ours_packed")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--ghz", type=float, default=None,
                      help="clock for the peak (default: measured, common.measure_clock_ghz)")
  parser.add_argument("--torch_python", default=os.environ.get("PUNIFIED_TORCH_PYTHON", common.TORCH_PYTHON_DEFAULT))
  parser.add_argument("--name", default="train_throughput", help="results file name")
  args = parser.parse_args(argv)

  def per_size(text, cast):
    out = {}
    for item in text.split(","):
      key, value = item.split("=")
      out[key.strip()] = cast(value)
    return out

  steps_of, warmup_of = per_size(args.steps, int), per_size(args.warmup, int)
  target_of = {} if args.target_loss == "auto" else per_size(args.target_loss, float)
  sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
  dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
  runs = [r.strip() for r in args.runs.split(",") if r.strip()]
  for size in sizes:
    for table, name in ((steps_of, "--steps"), (warmup_of, "--warmup"), (target_of, "--target_loss")):
      if size not in table and not (name == "--target_loss" and args.target_loss == "auto"):
        parser.error(f"{name} has no value for size {size!r}")
  if any(r.startswith("torch") for r in runs) and not os.path.exists(args.torch_python):
    parser.error(f"--torch_python {args.torch_python} not found (create it: bash tools/env/torch_env.sh)")

  machine = common.machine_info()
  clocks = None if args.ghz else common.measure_clock_ghz(machine.get("cpus", os.cpu_count()))
  ghz = args.ghz or (sum(clocks) / len(clocks) if clocks else machine.get("bogomips", 0) / 2000.0)
  flags = machine.get("cpu_flags_of_note", [])
  peaks = {dtype: common.cpu_peak_flops(machine.get("cpus", os.cpu_count()), ghz, flags, bf16=dtype == "bf16")
           for dtype in dtypes}

  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import hf_interop, optimizers, partitioning, trainer  # pylint: disable=g-import-not-at-top
  from punified_jax.model import T5Config, Transformer, round_up_vocab_size  # pylint: disable=g-import-not-at-top

  common.configure_tasks(args.raw_dir, args.datasets.split(",") if args.datasets else None)
  names = common.mixture_datasets()
  import seqio  # pylint: disable=g-import-not-at-top
  vocabulary = seqio.get_mixture_or_task(task_names.JOINT_MIXTURE).output_features["targets"].vocabulary
  vocab_size = round_up_vocab_size(vocabulary.vocab_size)
  print(f"datasets {names}; vocabulary {vocabulary.vocab_size} ids (model rows {vocab_size})", flush=True)

  lengths = {"inputs": max(args.pack_inputs, 512), "targets": max(args.pack_targets, 512)}
  pools = {n: common.tokenized_examples(n, "train", max_examples=args.pool, max_lengths=lengths) for n in names}
  rng = np.random.default_rng(0)
  longest_run = max(steps_of[s] for s in sizes)
  drawn = common.uniform_mixture_draw(pools, args.batch_size * max(longest_run, args.megabatch), rng)
  batch_sets = {
      "torch_paper": [common.pad_batch(b) for b in common.paper_batches(drawn, args.batch_size)],
      "torch_grouped": [common.pad_batch(b) for b in common.length_grouped_batches(
          drawn, args.batch_size, args.megabatch, rng)],
  }
  padding = {kind: common.padding_stats(batches) for kind, batches in batch_sets.items()}
  padding["ours_packed"] = packing_report(args)
  for kind, stats in padding.items():
    print(f"{kind}: real-token fraction {stats['real_fraction']:.3f}", flush=True)

  workdir = tempfile.mkdtemp(prefix="train_throughput_", dir=os.environ.get("BENCH_WORKDIR"))
  results = []
  for size in sizes:
    fields = read_model_gin(size)
    fields.update(vocab_size=vocab_size)
    steps, warmup = steps_of[size], warmup_of[size]
    base_config = T5Config(**{**fields, "dtype": "float32"})
    shape = common.Shape.of(base_config)
    optimizer = optimizers.make_optimizer(name="adamw", learning_rate=args.lr, clip_grad_norm=args.clip_grad_norm,
                                          weight_decay=args.weight_decay)
    # Our seed-0 initial parameters (exactly what trainer.train(seed=0) starts from), exported so
    # that PyTorch starts from the same weights.
    layout = trainer.build_state_layout(Transformer(base_config), optimizer, partitioning.Partitioner())
    state = trainer.initialize_state(layout, partitioning.Partitioner(), 0)
    hf_dir = os.path.join(workdir, f"hf_{size}")
    hf_interop.export_hf(jax.device_get(state.params), base_config, hf_dir, overwrite=True)
    del state
    for dtype in dtypes:
      config = T5Config(**{**fields, "dtype": "bfloat16" if dtype == "bf16" else "float32"})
      for kind in runs:
        tag = f"{size}_{dtype}_{kind}"
        print(f"== {tag}: {steps} steps", flush=True)
        if kind.startswith("torch"):
          batches = batch_sets[kind]
          # A grouped run takes `steps` batches of the shuffled mega-batches.
          raw = run_torch(args.torch_python, hf_dir, batches, steps, dtype, args, workdir, tag)
          flops = [common.train_step_flops(shape, *b.input_ids.shape, b.labels.shape[1])
                   for b in batches[:steps]]
          flops = [flops[i % len(flops)] for i in range(steps)]
        else:
          raw = run_ours(config, optimizer, args, steps, workdir, tag)
          flops = [common.train_step_flops(shape, args.pack_rows, args.pack_inputs, args.pack_targets)] * steps
        row = summarize(kind, raw["step_seconds"], raw["loss"], raw["target_tokens"], np.asarray(flops), warmup,
                        peaks[dtype])
        row.update(size=size, dtype=dtype, params=int(sum(np.prod(l.shape) for l in
                                                           jax.tree.leaves(layout.abstract_state.params))))
        results.append(row)
        print(f"   {row['tokens_per_s']:.0f} target tok/s, step {row['step_s']:.3f}s, "
              f"{row['gflops_per_s']:.1f} GFLOP/s, loss {row['final_loss_mean10']:.3f}", flush=True)

  # Time to a fixed training loss (excluding the first step), one threshold per size.
  for size in sizes:
    same = [r for r in results if r["size"] == size]
    target = target_of.get(size, max(running_mean_min(r["loss"]) for r in same) + 1e-6)
    for row in same:
      row["target_loss"] = target
      row["time_to_loss_s"], row["time_to_loss_step"] = time_to_loss(row["step_seconds"], row["loss"], target)

  # Ratios against the PyTorch runs of the same size (ours at each precision vs theirs).
  for row in results:
    same = [r for r in results if r["size"] == row["size"]]
    best_paper = max((r["tokens_per_s"] for r in same if r["run"] == "torch_paper"), default=None)
    best_grouped = max((r["tokens_per_s"] for r in same if r["run"] == "torch_grouped"), default=None)
    fp32_flops = [r["gflops_per_s"] for r in same if r["run"].startswith("torch") and r["dtype"] == "fp32"]
    row["vs_best_torch_paper"] = row["tokens_per_s"] / best_paper if best_paper else None
    row["vs_best_torch_grouped"] = row["tokens_per_s"] / best_grouped if best_grouped else None
    row["flops_vs_torch_fp32"] = row["gflops_per_s"] / max(fp32_flops) if fp32_flops else None

  columns = ["size", "dtype", "run", "tokens_per_s", "step_s", "first_step_s", "gflops_per_s", "peak_fraction",
             "vs_best_torch_paper", "vs_best_torch_grouped", "flops_vs_torch_fp32", "target_loss",
             "time_to_loss_s", "final_loss_mean10"]
  common.print_table(results, columns, title="training throughput (non-padding target tokens/s, steady state)")
  payload = {"command": common.command_line(), "machine": machine, "versions": common.jax_versions(),
             "datasets": names, "vocab_size": vocab_size, "peak_flops": peaks, "ghz_assumed": ghz, "clock_ghz_per_core": clocks,
             "padding": padding, "settings": {k: v for k, v in vars(args).items()}, "results": results}
  print("wrote", common.write_json(args.name, payload))
  return 0


if __name__ == "__main__":
  sys.exit(main())
