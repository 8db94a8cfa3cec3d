"""Where a fast_decoding iteration's time goes: jitted micro-benchmarks of its pieces.

    PYTHONPATH=. .venv/bin/python benchmarks/chunk_cost.py --raw_dir ../shared/data/raw \
        --model_dir RUN_DIR --dataset cluener

On one real batch (the first `--batch_size` dev sentences, prompted with the dataset's types,
padded to the Extractor's input bucket), each piece runs `--repeats` times inside one jitted
fori_loop (no dispatch cost per call), min over `--passes`, reported per call in ms:
  step      the decoder on 1 token per row (what "allowed" calls per step), logits out
  hidden    the same without the output layer (greedy "allowed"'s hidden_step_fn)
  chunk_K   the decoder on K tokens per row at per-row positions (fast_decoding's ChunkFn),
            with logits and without the output layer (hidden_chunk_fn)
  draft_K   fast_decoding._draft (up to K sequential constraint steps)
  step_cand one constraint.step_candidates call
  lse_K     the vocabulary-wide logsumexp + candidate gather at K positions
  search    whole searches through generate.decode_batch, per search (A/B in one process,
            interleaved; wall and process CPU time, min over passes: on a shared machine only
            the CPU time means much)
Prints a table and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def _timed(fn, *args, passes: int) -> float:
  """min seconds over `passes` of fn(*args) (compiled and run once first)."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(passes):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--dataset", default="cluener")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--chunks", default="1,4,8,16")
  parser.add_argument("--repeats", type=int, default=32)
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--cache_length", type=int, default=64)
  parser.add_argument("--searches", default="allowed,fast")
  parser.add_argument("--name", default="chunk_cost")
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from punified_jax import constraints, fast_decoding, generate  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  from punified_jax.model import Transformer  # pylint: disable=g-import-not-at-top
  prompted = common.prompted_sentences(args.raw_dir, args.model_dir, args.dataset,
                                       args.batch_size)
  info, vocabulary = prompted.info, prompted.vocabulary
  ids = [row + [prompted.eos_id] for row in prompted.ids]
  width = next(b for b in generate.input_buckets(512) if b >= max(map(len, ids)))
  batch = np.zeros((args.batch_size, width), np.int32)
  for r, row in enumerate(ids):
    batch[r, :len(row)] = row
  batch = jnp.asarray(batch)
  params = Extractor.load(args.model_dir, beam_size=1).params
  model = Transformer(info.t5_config)
  constraint = constraints.NerCopyConstraint.from_vocabulary(vocabulary)
  chunks = [int(k) for k in args.chunks.split(",")]
  max_k = max(chunks)
  rows = args.batch_size
  repeats = args.repeats
  results = []

  def record(piece, seconds, **extra):
    row = {"piece": piece, "ms_per_call": 1e3 * seconds / repeats, **extra}
    results.append(row)
    print(row, flush=True)

  def setup(params, batch):
    step_fn, cache, row_inputs = generate.init_decoding(
        model, params, batch, beam_size=1, max_decode_length=args.cache_length + max_k)
    return step_fn, cache, row_inputs

  @jax.jit
  def steps(params, batch):
    step_fn, cache, _ = setup(params, batch)
    def body(i, carry):
      token, cache, total = carry
      logits, cache = step_fn(token, cache, i)
      # The next token must not cost anything: an arg-max over the vocabulary is a slow
      # variadic reduce on XLA:CPU (~6 ms at [32, 8, 4864]) and would be timed too.
      return (token + 1) % 4000 + 5, cache, total + logits[:, 0]
    return jax.lax.fori_loop(0, repeats, body, (batch[:, 0], cache, jnp.zeros((rows,))))[2]

  @jax.jit
  def hidden_steps(params, batch):
    step_fn, cache, _ = setup(params, batch)
    def body(i, carry):
      token, cache, total = carry
      hidden, cache = step_fn.hidden_step_fn(token, cache, i)
      return (token + 1) % 4000 + 5, cache, total + hidden[:, 0]
    return jax.lax.fori_loop(0, repeats, body, (batch[:, 0], cache, jnp.zeros((rows,))))[2]

  base = _timed(lambda p, b: jax.jit(lambda p, b: setup(p, b)[1])(p, b), params, batch,
                passes=args.passes)
  record("setup (encoder + cache init), once", base * repeats)
  record("step (1 token, logits)", _timed(steps, params, batch, passes=args.passes) - base)
  record("hidden step (1 token, no output layer)",
         _timed(hidden_steps, params, batch, passes=args.passes) - base)

  def chunk_bench(k, same_start, hidden=False):
    @jax.jit
    def run(params, batch):
      step_fn, cache, _ = setup(params, batch)
      def body(i, carry):
        tokens, cache, total = carry
        # Per-row starts that differ (what greedy rows do), or one shared start.
        start = (i * 2 + (0 if same_start else jnp.arange(rows) % 7)) % args.cache_length
        start = jnp.broadcast_to(start, (rows,)).astype(jnp.int32)
        fn = step_fn.hidden_chunk_fn if hidden else step_fn.chunk_fn
        logits, cache = fn(tokens, start, cache)
        return (tokens + 1) % 4000 + 5, cache, total + logits[:, 0, 0]
      return jax.lax.fori_loop(0, repeats, body, (batch[:, :k], cache, jnp.zeros((rows,))))[2]
    return _timed(run, params, batch, passes=args.passes) - base

  for k in chunks:
    record(f"chunk K={k} (per-row starts)", chunk_bench(k, False), k=k)
    record(f"hidden chunk K={k} (no output layer)", chunk_bench(k, False, True), k=k)
  record(f"chunk K={max_k} (shared start)", chunk_bench(max_k, True), k=max_k)

  table = constraint.candidate_table(batch)
  step_cands = common.constraint_step_loop(constraint, table, repeats)
  record("constraint.step_candidates", _timed(step_cands, batch, passes=args.passes))

  for k in chunks:
    if k < 2:
      continue
    @jax.jit
    def drafts(batch, k=k):
      state = constraint.init(batch)
      def body(i, carry):
        state, token, total = carry
        draft = fast_decoding._draft(constraint, state, token, jnp.array(0, jnp.int32),  # pylint: disable=protected-access
                                     chunk_length=k, table=table, eos_id=int(vocabulary.eos_id))
        return state, draft.tokens[:, -1], total + draft.count
      return jax.lax.fori_loop(0, repeats, body, (state, batch[:, 0], jnp.zeros((rows,), jnp.int32)))[2]
    record(f"draft K={k} (from the start: ~K constraint steps)", _timed(drafts, batch, passes=args.passes), k=k)

    @jax.jit
    def lse(logits, allowed, k=k):
      def body(i, total):
        a, b = fast_decoding._search_log_probs(logits + i, allowed, table)  # pylint: disable=protected-access
        return total + a[:, 0, 0] + b[:, -1, -1]
      return jax.lax.fori_loop(0, repeats, body, jnp.zeros((rows,)))
    logits = jax.random.normal(jax.random.PRNGKey(0), (rows, k, info.t5_config.vocab_size))
    allowed = jnp.ones((rows, k, table.ids.shape[1]), bool)
    record(f"search log-probs K={k} (logsumexp over vocab + candidates)",
           _timed(lse, logits, allowed, passes=args.passes), k=k)

  # Whole searches, interleaved, on the batch: seconds per search and decoder calls.
  max_decode = (info.task_feature_lengths or {}).get("targets", 256)
  searches = [s for s in args.searches.split(",") if s]
  times = {s: float("inf") for s in searches}
  cpu = {s: float("inf") for s in searches}
  outputs = {}
  for s in searches:
    outputs[s] = generate.decode_batch(model, params, batch, constraint, max_decode_length=max_decode,
                                       eos_id=int(vocabulary.eos_id), search=s)
    jax.block_until_ready(outputs[s].tokens)
  for _ in range(args.passes):
    for s in searches:
      start, start_cpu = time.perf_counter(), time.process_time()
      out = generate.decode_batch(model, params, batch, constraint, max_decode_length=max_decode,
                                  eos_id=int(vocabulary.eos_id), search=s)
      jax.block_until_ready(out.tokens)
      times[s] = min(times[s], time.perf_counter() - start)
      cpu[s] = min(cpu[s], time.process_time() - start_cpu)
  for s in searches:
    out = outputs[s]
    tokens = int((np.asarray(out.tokens) > 0).sum())
    calls = int(np.asarray(out.decoder_calls).sum())
    row = {"piece": f"search {s!r} (one batch, greedy)", "ms_per_call": 1e3 * times[s],
           "cpu_ms": 1e3 * cpu[s],
           "calls_per_token": calls / tokens, "max_calls": int(np.asarray(out.decoder_calls).max()),
           "tokens": tokens,
           "same_ids_as_first": bool(np.array_equal(np.asarray(out.tokens),
                                                    np.asarray(outputs[searches[0]].tokens)))}
    results.append(row)
    print(row, flush=True)
  common.print_table(results, ["piece", "ms_per_call", "cpu_ms", "calls_per_token", "max_calls"],
                     title=f"cost of the pieces, {rows} rows of {args.dataset}, input width {width}")
  print("wrote", common.write_json(args.name, {"command": common.command_line(),
                                                "machine": common.machine_info(), "results": results}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
