"""This CPU's peak FLOP/s: how it is derived, and how close dense matrix products come to it.

    .venv/bin/python benchmarks/cpu_peak.py [--torch_python .venv-torch/bin/python]

1. Clock: `cores` copies of a loop of dependent integer adds (one per cycle) run at once and
   are timed (common.measure_clock_ghz): the sustained all-core clock, turbo included. The
   base clock that BogoMIPS reports is printed beside it.
2. Theoretical peak = cores x clock x FLOPs per cycle per core (common.cpu_peak_flops: two FMA
   units x vector lanes x 2; bf16 dot-products double it where avx512_bf16 exists).
3. Attained ceiling: the best of three timed [M, K] x [K, N] products under XLA (jax.jit of
   jnp.dot, float32 and bfloat16 inputs with a float32 result) and, with --torch_python, under
   PyTorch (torch.mm, MKL/oneDNN), on the shapes of a T5-small training step.
Results: a table and benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# (M, K, N): a T5-small step's activations [2048 tokens, 512] against its MLP, attention and
# vocabulary kernels, and a large square product.
SHAPES = ((2048, 512, 1024), (2048, 1024, 512), (2048, 512, 384), (2048, 512, 5632),
          (4096, 4096, 4096))

_TORCH_SNIPPET = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
out = {}
for m, k, n in json.loads(sys.argv[2]):
  for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)
    best = 1e9
    for _ in range(3):
      start = time.perf_counter()
      for _ in range(5):
        torch.mm(a, b)
      best = min(best, (time.perf_counter() - start) / 5)
    out[f"{m}x{k}x{n}_{name}"] = 2 * m * k * n / best
print(json.dumps(out))
"""


def xla_gemm_flops(shape: tuple[int, int, int], dtype: str) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  m, k, n = shape
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(m, k)), dtype)
  b = jnp.asarray(rng.normal(size=(k, n)), dtype)
  product = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  jax.block_until_ready(product(a, b))
  repeats = 2 if m * k * n > 10**10 else 10
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(repeats):
      result = product(a, b)
    jax.block_until_ready(result)
    best = min(best, (time.perf_counter() - start) / repeats)
  return 2.0 * m * k * n / best


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch_python", default=os.environ.get("PUNIFIED_TORCH_PYTHON", common.TORCH_PYTHON_DEFAULT),
                      help="also time torch.mm in this interpreter ('' to skip)")
  parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
  parser.add_argument("--name", default="cpu_peak")
  args = parser.parse_args(argv)

  machine = common.machine_info()
  cores = machine.get("cpus") or os.cpu_count()
  clocks = common.measure_clock_ghz(cores)
  base_ghz = machine.get("bogomips", 0) / 2000.0
  ghz = sum(clocks) / len(clocks) if clocks else base_ghz
  flags = machine.get("cpu_flags_of_note", [])
  peaks = {"fp32": common.cpu_peak_flops(cores, ghz, flags), "bf16": common.cpu_peak_flops(cores, ghz, flags, bf16=True)}
  print(f"clock: measured {clocks} GHz (all {cores} cores busy); BogoMIPS/2 = {base_ghz:.3f} GHz (base)")
  print(f"theoretical peak at {ghz:.3f} GHz: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s "
        f"(flags {' '.join(flags)})", flush=True)

  torch_rates = {}
  if args.torch_python and os.path.exists(args.torch_python):
    done = subprocess.run([args.torch_python, "-c", _TORCH_SNIPPET, str(args.threads or cores), json.dumps(SHAPES)],
                          capture_output=True, text=True, check=True)
    torch_rates = json.loads(done.stdout.strip().splitlines()[-1])
  rows = []
  for shape in SHAPES:
    for dtype in ("fp32", "bf16"):
      rate = xla_gemm_flops(shape, "float32" if dtype == "fp32" else "bfloat16")
      key = f"{shape[0]}x{shape[1]}x{shape[2]}_{dtype}"
      row = {"shape": "x".join(map(str, shape)), "dtype": dtype, "xla_gflops": rate / 1e9,
             "xla_of_peak": rate / peaks[dtype], "torch_gflops": None, "torch_of_peak": None}
      if key in torch_rates:
        row.update(torch_gflops=torch_rates[key] / 1e9, torch_of_peak=torch_rates[key] / peaks[dtype])
      rows.append(row)
      print(rows[-1], flush=True)
  common.print_table(rows, ["shape", "dtype", "xla_gflops", "xla_of_peak", "torch_gflops", "torch_of_peak"],
                     title="dense products against the theoretical peak")
  payload = {"command": common.command_line(), "machine": machine, "versions": common.jax_versions(),
             "clock_ghz_per_core": clocks, "base_ghz": base_ghz, "ghz_used": ghz, "peak_flops": peaks, "results": rows}
  print("wrote", common.write_json(args.name, payload))
  return 0


if __name__ == "__main__":
  sys.exit(main())
