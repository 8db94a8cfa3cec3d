"""What one greedy decoder step's attention costs at 32 rows, and why it grows with the caches.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/attention_cost.py --name attention_cost

Why: at 32 rows the `mini` model's decoder step costs 0.64 ms CPU at (cache 64, input bucket
48) and 2.46 ms at (256, 192) (BENCHMARKS 2f) although attention's arithmetic at these sizes
is tiny.  Suspect 1: XLA:CPU lowers the single-query attention dots (batch x heads = 128
products of [1 x 32] x [32 x len]) badly.  Suspect 2: the step is bound by memory traffic:
it reads every cache once (self-attention keys and values of 2 layers, [32, 4, cache, 32]
float32 each, and the cross-attention ones, [32, 4, bucket, 32]): 28 MB at (256, 192), about
the size of this CPU's L3 cache.

Part "forms": one layer's single-query attention (scores, bias, softmax, values) on one
key/value pair of length L, `repeats` times in a jitted fori_loop, as three programs:
  einsum      the model's form (attention.py, heads-first caches, jnp.einsum)
  mul_reduce  q * k summed over kv, weights * v summed over len (one fused loop each)
  dot_merged  jax.lax.dot_general with batch and heads merged into one batch dimension
Part "working_set": the einsum form over 1, 2 or 4 distinct key/value pairs per loop
iteration, the 4 being what a step reads (self-attention at `cache` and cross-attention at
`bucket`, for 2 layers), per iteration.  If the step were compute-bound, 4 pairs would cost
about 2x 2 pairs.
All variants run interleaved in one process; min of --passes; wall and CPU (process_time)
ms per iteration.  Prints tables, writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position

ROWS, HEADS, HEAD_DIM = 32, 4, 32  # the `mini` model's decoder at 32 greedy rows


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def _forms(jnp, jax):
  """The three programs of one single-query attention, q [b, h, 1, d], k / v [b, h, len, d]."""

  def softmax_with(scores, bias):
    return jax.nn.softmax(scores + bias, axis=-1)

  def einsum(q, k, v, bias):
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    return jnp.einsum("bhqk,bhkd->bhqd", softmax_with(scores, bias), v)

  def mul_reduce(q, k, v, bias):
    scores = jnp.sum(q * k, axis=-1)[:, :, None, :]
    weights = softmax_with(scores, bias)
    return jnp.sum(weights[:, :, 0, :, None] * v, axis=2)[:, :, None, :]

  def dot_merged(q, k, v, bias):
    b, h, length, d = k.shape
    scores = jax.lax.dot_general(q.reshape(b * h, 1, d), k.reshape(b * h, length, d),
                                 (((2,), (2,)), ((0,), (0,)))).reshape(b, h, 1, length)
    weights = softmax_with(scores, bias).reshape(b * h, 1, length)
    return jax.lax.dot_general(weights, v.reshape(b * h, length, d),
                               (((2,), (1,)), ((0,), (0,)))).reshape(b, h, 1, d)

  return {"einsum": einsum, "mul_reduce": mul_reduce, "dot_merged": dot_merged}


def _looped(jax, jnp, attention, repeats):
  """fori_loop of `repeats` iterations; each runs `attention` on every (k, v, bias) given,
  the query depending on the last result so that nothing is hoisted out of the loop."""

  @jax.jit
  def run(query, pairs):
    def body(_, total):
      for key, value, bias in pairs:
        total = total + attention(query + 1e-9 * total, key, value, bias)
      return total
    return jax.lax.fori_loop(0, repeats, body, jnp.zeros_like(query))
  return run


def _best(jax, fns: dict, args_of: dict, passes: int, repeats: int) -> dict:
  """{name: (wall ms, cpu ms) per iteration}, min over interleaved passes."""
  for name, fn in fns.items():
    jax.block_until_ready(fn(*args_of[name]))  # compile
  best = {name: (np.inf, np.inf) for name in fns}
  for _ in range(passes):
    for name, fn in fns.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args_of[name]))
      wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
      best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
  return {name: (1e3 * w / repeats, 1e3 * c / repeats) for name, (w, c) in best.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", default="48,64,192,256",
                      help="key lengths of the forms part")
  parser.add_argument("--steps", default="64:48,64:192,256:48,256:192",
                      help="cache:bucket pairs of the working-set part")
  parser.add_argument("--repeats", type=int, default=100)
  parser.add_argument("--passes", type=int, default=5)
  parser.add_argument("--name", default="attention_cost")
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  forms = _forms(jnp, jax)
  query = jnp.asarray(rng.normal(size=(ROWS, HEADS, 1, HEAD_DIM)), jnp.float32)

  def pair(length):
    k, v = (jnp.asarray(rng.normal(size=(ROWS, HEADS, length, HEAD_DIM)), jnp.float32)
            for _ in range(2))
    return k, v, jnp.asarray(rng.normal(size=(ROWS, HEADS, 1, length)), jnp.float32)

  form_rows = []
  for length in _ints(args.lengths):
    pairs = (pair(length),)
    fns = {name: _looped(jax, jnp, f, args.repeats) for name, f in forms.items()}
    reference = np.asarray(fns["einsum"](query, pairs))
    row = {"len": length}
    for name, fn in fns.items():
      row[f"{name}_max_diff"] = float(np.max(np.abs(np.asarray(fn(query, pairs)) - reference)))
    for name, (wall, cpu) in _best(jax, fns, {n: (query, pairs) for n in fns}, args.passes,
                                   args.repeats).items():
      row[f"{name}_ms"], row[f"{name}_cpu_ms"] = wall, cpu
    for name in ("mul_reduce", "dot_merged"):
      row[f"einsum_over_{name}_cpu"] = row["einsum_cpu_ms"] / row[f"{name}_cpu_ms"]
    form_rows.append(row)
    print(row, flush=True)
  common.print_table(form_rows, ["len", "einsum_cpu_ms", "mul_reduce_cpu_ms", "dot_merged_cpu_ms",
                                 "einsum_over_mul_reduce_cpu", "einsum_over_dot_merged_cpu",
                                 "einsum_ms", "mul_reduce_ms", "dot_merged_ms"],
                     title=f"one layer's single-query attention, {ROWS} rows: ms per call")

  set_rows = []
  for text in args.steps.split(","):
    cache, bucket = (int(x) for x in text.split(":"))
    pairs = [pair(length) for length in (cache, bucket, cache, bucket)]
    fns = {n: _looped(jax, jnp, forms["einsum"], args.repeats) for n in (1, 2, 4)}
    timed = _best(jax, fns, {n: (query, tuple(pairs[:n])) for n in fns}, args.passes,
                  args.repeats)
    megabytes = sum(k.nbytes + v.nbytes for k, v, _ in pairs) / 2**20
    row = {"cache": cache, "bucket": bucket, "step_cache_mb": megabytes}
    for n, (wall, cpu) in timed.items():
      row[f"pairs_{n}_ms"], row[f"pairs_{n}_cpu_ms"] = wall, cpu
    row["cpu_4_over_2"] = row["pairs_4_cpu_ms"] / row["pairs_2_cpu_ms"]
    set_rows.append(row)
    print(row, flush=True)
  common.print_table(set_rows, ["cache", "bucket", "step_cache_mb", "pairs_1_cpu_ms",
                                "pairs_2_cpu_ms", "pairs_4_cpu_ms", "cpu_4_over_2",
                                "pairs_4_ms"],
                     title="einsum attention over 1 / 2 / 4 distinct key-value pairs: ms per "
                           "iteration (4 pairs = one step's caches)")
  print("wrote", common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "repeats": args.repeats, "passes": args.passes, "forms": form_rows,
      "working_set": set_rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
