"""Milliseconds per decoder step of the default ("allowed") search, and where a step goes.

    PYTHONPATH=. .venv/bin/python benchmarks/step_cost.py --raw_dir ../shared/data/raw \
        --model_dir /work/bench_model/ccks --dataset resume

Why: a long request's step cost more than a short one's (0.77 against 0.32 ms at 1 row, beam
4: issue 12's 1-client p99/p50), and issue 13 wants cheaper steps at 32 rows.  For each
(rows, beam, input bucket, cache length) this runs the real search (decoding.greedy_decode /
beam_search over the constraint's candidates, as generate.decode_batch's "allowed" does) on
a cache of that fixed length for N1 and N2 steps and reports (T(N2) - T(N1)) / (N2 - N1):
the cost of one step, setup excluded.  Rows never end (the constraint is wrapped so that one
candidate is always allowed and the search's EOS id is one no row writes), so every row steps
N times.  Beam search runs three variants, interleaved in one process:
  "gather"  the old step: decoding.gather_beams copies every row's cache each step, and the
            output layer runs in the loop (all logits, for the model's per-token log-probs);
  "grouped" generate.reorder_beam_cache: the cache is never copied (the default now, from the
            first cache length for batches of several examples, from
            generate.GROUP_SINGLE_EXAMPLE_BEAMS_FROM for a single one);
  "grouped_hidden"  and the output layer out of the loop (decoding.beam_search's
            output_layer; the default now).  Inputs are real
prompted sentences of --dataset repeated to fill the bucket.

--pieces adds a breakdown at the largest bucket and cache length: each piece alone, `repeats`
times in one jitted fori_loop, per call:
  decoder step         the model on 1 token per row (logits), cache re-ordered by gather
  decoder step grouped the same on a beam-grouped cache (beam > 1)
  gather cache         decoding.gather_beams of the whole self-attention cache
  step_candidates      one constraint.step_candidates call
  candidate log-probs  the vocabulary-wide logsumexp + the candidates' log-softmax
--requests N: N dev sentences decoded one at a time as the server does (beam 4, stopping
"best"), old beam step against the new default, per-request mean / p50 / p99 (what a step
table leaves out: costs paid once per request).  --log_prob_blocks: the model's per-token
log-probs after a loop (output_log_probs.model_token_log_probs) with the old fixed block of
512 tokens against the current one.
Wall times are min over --passes; CPU time (process_time) is given too: on a shared machine
the CPU time is disturbed far less.  Prints a table, writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def _timed(fn, *args) -> tuple[float, float]:
  """(wall, cpu) seconds of one call of fn(*args), result ready."""
  import jax  # pylint: disable=g-import-not-at-top
  start, start_cpu = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start, time.process_time() - start_cpu


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--dataset", default="resume")
  parser.add_argument("--rows", default="1,32", help="examples per batch")
  parser.add_argument("--beams", default="1,4")
  parser.add_argument("--buckets", default="48,128,192")
  parser.add_argument("--cache_lengths", default="64,128,256")
  parser.add_argument("--steps", default="8,40", help="N1,N2")
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--pieces", action="store_true")
  parser.add_argument("--repeats", type=int, default=32)
  parser.add_argument("--requests", type=int, default=0,
                      help="also decode this many dev sentences one at a time (beam --beams' "
                           "largest, real constraint, generate.decode_batch), old vs new")
  parser.add_argument("--log_prob_blocks", action="store_true",
                      help="time output_log_probs.model_token_log_probs (after a loop) with the "
                           "old fixed block of 512 tokens against the block that shrinks with "
                           "rows")
  parser.add_argument("--name", default="step_cost")
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from punified_jax import constraints, decoding, generate, output_log_probs  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  from punified_jax.model import Transformer  # pylint: disable=g-import-not-at-top

  prompted = common.prompted_sentences(args.raw_dir, args.model_dir, args.dataset, 64)
  info, vocabulary, sentences = prompted.info, prompted.vocabulary, prompted.ids
  params = Extractor.load(args.model_dir, beam_size=1).params
  model = Transformer(info.t5_config)
  inner = constraints.NerCopyConstraint.from_vocabulary(vocabulary)
  constraint = common.endless_constraint(inner)
  never_eos = info.t5_config.vocab_size - 1  # an id past the tokenizer's: never written
  eos = int(vocabulary.eos_id)

  def batch_of(rows: int, bucket: int):
    batch = np.zeros((rows, bucket), np.int32)
    for r in range(rows):
      ids = (sentences[r % len(sentences)] * (bucket // 8 + 1))[:bucket - 1] + [eos]
      batch[r, :len(ids)] = ids
    return jnp.asarray(batch)

  def search(beam: int, cache_length: int, steps: int, variant: str):
    grouped = variant.startswith("grouped")
    @jax.jit
    def run(params, batch):
      step_fn, cache, row_inputs = generate.init_decoding(
          model, params, batch, beam_size=beam, max_decode_length=cache_length,
          beam_grouped_cache=grouped)
      options = dict(max_decode_length=steps, eos_id=never_eos, constraint=constraint,
                     score_candidates=True)
      layer = decoding.OutputLayer(step_fn.hidden_step_fn,
                                   generate.output_kernel(model.config, params))
      if beam == 1:
        return decoding.greedy_decode(step_fn, cache, row_inputs, output_layer=layer,
                                      **options).tokens
      return decoding.beam_search(
          step_fn, cache, row_inputs, beam_size=beam,
          reorder_cache=generate.reorder_beam_cache if grouped else None,
          output_layer=layer if variant == "grouped_hidden" else None, **options).tokens
    return run

  n1, n2 = _ints(args.steps)
  results = []
  for rows in _ints(args.rows):
    for beam in _ints(args.beams):
      variants = ["grouped_hidden", "grouped", "gather"] if beam > 1 else ["greedy"]
      for bucket in _ints(args.buckets):
        batch = batch_of(rows, bucket)
        for length in _ints(args.cache_lengths):
          fns = {(v, n): search(beam, length, n, v) for v in variants
                 for n in (n1, n2)}
          for fn in fns.values():
            jax.block_until_ready(fn(params, batch))  # compile
          best = {key: (float("inf"), float("inf")) for key in fns}
          for _ in range(args.passes):  # interleaved: the variants share the machine's state
            for key, fn in fns.items():
              wall, cpu = _timed(fn, params, batch)
              best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
          for v in variants:
            row = {"rows": rows, "beam": beam, "decoder_rows": rows * beam, "bucket": bucket,
                   "cache": length, "variant": v,
                   "ms_per_step": 1e3 * (best[(v, n2)][0] - best[(v, n1)][0]) / (n2 - n1),
                   "cpu_ms_per_step": 1e3 * (best[(v, n2)][1] - best[(v, n1)][1]) / (n2 - n1)}
            results.append(row)
            print(row, flush=True)
  for row in results:
    if row["variant"].startswith("grouped"):
      old = next(r for r in results if r["variant"] == "gather" and all(
          r[k] == row[k] for k in ("rows", "beam", "bucket", "cache")))
      row["old_over_this"] = old["ms_per_step"] / row["ms_per_step"]
      row["old_over_this_cpu"] = old["cpu_ms_per_step"] / row["cpu_ms_per_step"]
  common.print_table(results, ["rows", "beam", "bucket", "cache", "variant", "ms_per_step",
                               "cpu_ms_per_step", "old_over_this", "old_over_this_cpu"],
                     title=f"ms per decoder step (steps {n1}->{n2}, min of {args.passes})")

  requests = []
  if args.requests:
    requests = _requests(args, model, params, inner, sentences, eos, jax, np, generate)
  if args.log_prob_blocks:
    requests = requests + _log_prob_blocks(args, model, output_log_probs, jax, jnp, np)
  pieces = []
  if args.pieces:
    pieces = _pieces(args, model, params, inner, batch_of, jax, jnp, decoding, generate)
  print("wrote", common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "steps": [n1, n2], "results": results, "pieces": pieces, "requests": requests}))
  return 0


def _requests(args, model, params, constraint, sentences, eos, jax, np, generate) -> list:
  """Single-example requests as the server decodes them (1 example, its input bucket, max 256
  output tokens, stopping "best"), old beam step (eager copy, output layer in the loop) against
  the new default, interleaved per request, min of --passes; per-request wall and CPU ms."""
  beam = max(_ints(args.beams))
  buckets = generate.input_buckets(512)
  batches = []
  for ids in sentences[:args.requests]:
    ids = ids + [eos]
    batch = np.zeros((1, next(b for b in buckets if b >= len(ids))), np.int32)
    batch[0, :len(ids)] = ids
    batches.append(batch)
  variants = {"old": dict(beam_grouped_cache=False, beam_output_layer_in_loop=True), "new": {}}
  if max(_ints(args.beams)) == 1:  # greedy: no beam options; the A/B is across code versions
    variants = {"old": {}, "new": {}}

  def run(batch, options):
    return generate.decode_batch(model, params, batch, constraint, beam_size=beam,
                                 max_decode_length=256, eos_id=eos, stopping="best", **options)

  times = {v: np.full((len(batches), 2), np.inf) for v in variants}
  lengths = []
  for i, batch in enumerate(batches):
    outs = {v: run(batch, o) for v, o in variants.items()}  # compile / warm
    if not np.array_equal(np.asarray(outs["old"].tokens), np.asarray(outs["new"].tokens)):
      raise AssertionError(f"request {i}: old and new searches disagree")
    lengths.append(int((np.asarray(outs["new"].tokens)[0, 0] != 0).sum()))
    for _ in range(args.passes):
      for v, o in variants.items():
        wall, cpu = _timed(lambda b, o=o: run(b, o).tokens, batch)
        times[v][i] = np.minimum(times[v][i], (wall, cpu))
  out = []
  for v in variants:
    for column, what in ((0, "wall"), (1, "cpu")):
      ms = 1e3 * times[v][:, column]
      out.append({"variant": v, "time": what, "requests": len(batches), "beam": beam,
                  "mean_ms": float(ms.mean()), "p50_ms": float(np.median(ms)),
                  "p99_ms": float(np.percentile(ms, 99)),
                  "p99_over_p50": float(np.percentile(ms, 99) / np.median(ms)),
                  "ms_per_token_longest": float(ms[int(np.argmax(lengths))] / max(lengths)),
                  "ms_per_token_median": float(np.median(ms / np.maximum(lengths, 1)))})
  for row in out:
    old = next(r for r in out if r["variant"] == "old" and r["time"] == row["time"])
    row["old_over_this_mean"] = old["mean_ms"] / row["mean_ms"]
  common.print_table(out, ["variant", "time", "mean_ms", "p50_ms", "p99_ms", "p99_over_p50",
                           "ms_per_token_median", "ms_per_token_longest", "old_over_this_mean"],
                     title=f"{len(batches)} single-example requests, beam {beam}, same ids")
  return out


def _log_prob_blocks(args, model, output_log_probs, jax, jnp, np) -> list:
  """output_log_probs.model_token_log_probs on [rows, 256] outputs with `real` tokens per row,
  block 512 (the old constant) against the current rule, same process, min CPU ms of
  --passes + 2."""
  rng = np.random.default_rng(0)
  kernel = jnp.asarray(rng.normal(size=(model.config.emb_dim, model.config.vocab_size)) / 11,
                       jnp.float32)
  out = []
  saved = output_log_probs._MIN_PACKED_BLOCK, output_log_probs._PACKED_BLOCK  # pylint: disable=protected-access
  for rows, real in ((1, 64), (4, 64), (4, 140), (32, 76), (128, 70)):
    hidden = jnp.asarray(rng.normal(size=(rows, 256, model.config.emb_dim)), jnp.float32)
    tokens = np.zeros((rows, 256), np.int32)
    tokens[:, :real] = rng.integers(2, 4000, size=(rows, real))
    row = {"piece": "model_token_log_probs", "rows": rows, "real_tokens_per_row": real}
    values = {}
    for name, blocks in (("block_512_ms", (512, 512)), ("block_now_ms", saved)):
      output_log_probs._MIN_PACKED_BLOCK, output_log_probs._PACKED_BLOCK = blocks  # pylint: disable=protected-access
      fn = jax.jit(lambda h, t: output_log_probs.model_token_log_probs(h, t, kernel))
      values[name] = np.asarray(fn(hidden, jnp.asarray(tokens)))
      row[name] = 1e3 * min(_timed(fn, hidden, jnp.asarray(tokens))[1]
                            for _ in range(args.passes + 2))
    output_log_probs._MIN_PACKED_BLOCK, output_log_probs._PACKED_BLOCK = saved  # pylint: disable=protected-access
    row["ratio"] = row["block_512_ms"] / row["block_now_ms"]
    row["max_abs_diff"] = float(np.max(np.abs(values["block_512_ms"] - values["block_now_ms"])))
    out.append(row)
  common.print_table(out, ["rows", "real_tokens_per_row", "block_512_ms", "block_now_ms",
                           "ratio", "max_abs_diff"],
                     title="model log-probs after the loop: CPU ms, old block vs now")
  return out


def _pieces(args, model, params, constraint, batch_of, jax, jnp, decoding, generate) -> list:
  """Each piece of a step alone, `repeats` times in one jitted fori_loop, ms per call."""
  repeats = args.repeats
  bucket, length = max(_ints(args.buckets)), max(_ints(args.cache_lengths))
  out = []
  for rows in _ints(args.rows):
    for beam in _ints(args.beams):
      batch = batch_of(rows, bucket)
      decoder_rows = rows * beam

      def timed(fn, *fn_args):
        jax.block_until_ready(fn(*fn_args))
        return min(_timed(fn, *fn_args)[0] for _ in range(args.passes))

      def setup(params, batch, grouped=False):
        return generate.init_decoding(model, params, batch, beam_size=beam,
                                      max_decode_length=length, beam_grouped_cache=grouped)

      base = timed(jax.jit(lambda p, b: setup(p, b)[1]), params, batch)

      def decoder_loop(grouped, reorder, hidden=False):
        @jax.jit
        def run(params, batch):
          step_fn, cache, _ = setup(params, batch, grouped)
          parent = jnp.tile(jnp.arange(beam)[::-1][None], (rows, 1))
          def body(i, carry):
            token, cache, total = carry
            logits, cache = (step_fn.hidden_step_fn if hidden else step_fn)(token, cache, i)
            if reorder:
              cache = (generate.reorder_beam_cache if grouped else decoding.gather_beams)(
                  cache, parent, rows, beam)
            return (token + 1) % 4000 + 5, cache, total + logits[:, 0]
          return jax.lax.fori_loop(0, repeats, body, (jnp.full((decoder_rows,), 5, jnp.int32),
                                                      cache, jnp.zeros((decoder_rows,))))[2]
        return (timed(run, params, batch) - base) / repeats

      def record(piece, seconds):
        row = {"rows": rows, "beam": beam, "bucket": bucket, "cache": length, "piece": piece,
               "ms_per_call": 1e3 * seconds}
        out.append(row)
        print(row, flush=True)

      record("decoder step (logits)", decoder_loop(False, False))
      record("decoder step, no output layer (hidden state)", decoder_loop(False, False, True))
      if beam > 1:
        record("decoder step + gather cache (old)", decoder_loop(False, True))
        record("decoder step, grouped cache + reorder table (new)", decoder_loop(True, True))
      row_inputs = decoding.expand_to_beams(batch, beam)
      table = constraint.candidate_table(row_inputs)
      step_cands = common.constraint_step_loop(constraint, table, repeats)
      record("constraint.step_candidates", timed(step_cands, row_inputs) / repeats)

      @jax.jit
      def log_probs(logits, allowed):
        def body(i, total):
          shifted = logits + i.astype(jnp.float32)
          normaliser = jax.nn.logsumexp(shifted, axis=-1, keepdims=True)
          candidates = jnp.take_along_axis(shifted, table.ids, axis=1)
          search = decoding.masked_candidate_log_probs(candidates, allowed)
          return total + search[:, 0] + (candidates - normaliser)[:, -1]
        return jax.lax.fori_loop(0, repeats, body, jnp.zeros((decoder_rows,)))
      logits = jax.random.normal(jax.random.PRNGKey(0),
                                 (decoder_rows, model.config.vocab_size))
      allowed = jnp.ones(table.ids.shape, bool)
      record("candidate log-probs", timed(log_probs, logits, allowed) / repeats)
  common.print_table(out, ["rows", "beam", "bucket", "cache", "piece", "ms_per_call"],
                     title=f"pieces of a step, bucket {bucket}, cache {length}")
  return out


if __name__ == "__main__":
  sys.exit(main())
