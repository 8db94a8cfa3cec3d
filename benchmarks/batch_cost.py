"""Cost of one whole decode call by rows, input bucket and steps: the constants of
punified_jax.batch_plan.CostModel, fitted on this machine.

    PYTHONPATH=. .venv/bin/python benchmarks/batch_cost.py --raw_dir ../shared/data/raw \
        --model_dir /work/bench_model/ccks --dataset resume

Each (rows, bucket, steps) runs the Extractor's own decode call (MeshDecoder.decode ->
generate.decode_batch, default "allowed" search, the real constraint) on real prompted dev
sentences repeated to fill the bucket, with the constraint wrapped so rows never end and an EOS
id no row writes: exactly `steps` steps, the cache growing as in a real search, the encoder,
the per-token log-probs after the loop and the copy back all included.  Min over --passes of
the CPU time (process_time: on a shared machine far less disturbed than wall time, which is
reported too).  Then a least-squares fit of

    ms = call + encoder * rows * bucket
         + steps * (step + rows * beam * (row_step + position * (bucket + mean cache)))

(batch_plan.CostModel.batch_cost), non-negative and weighted by 1/measured (relative error,
so that the small batches a plan chooses between count as much as the large ones), printed with
its residuals.  Writes JSON under
benchmarks/results/.
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--dataset", default="resume")
  parser.add_argument("--rows", default="1,4,16,32")
  parser.add_argument("--buckets", default="48,256")
  parser.add_argument("--steps", default="32,128")
  parser.add_argument("--beam", type=int, default=1)
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--name", default="batch_cost")
  args = parser.parse_args(argv)

  from punified_jax import batch_plan, constraints  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top

  prompted = common.prompted_sentences(args.raw_dir, args.model_dir, args.dataset, 64)
  info, vocabulary, sentences = prompted.info, prompted.vocabulary, prompted.ids
  extractor = Extractor.load(args.model_dir, beam_size=args.beam)
  constraint = common.endless_constraint(
      constraints.NerCopyConstraint.from_vocabulary(vocabulary))
  never_eos = info.t5_config.vocab_size - 1  # an id past the tokenizer's: never written
  eos = int(vocabulary.eos_id)

  def batch_of(rows: int, bucket: int) -> np.ndarray:
    batch = np.zeros((rows, bucket), np.int32)
    for r in range(rows):
      ids = (sentences[r % len(sentences)] * (bucket // 8 + 1))[:bucket - 1] + [eos]
      batch[r, :len(ids)] = ids
    return batch

  def decode(batch: np.ndarray, steps: int):
    return extractor.decoder.decode(extractor.model, extractor.params, batch, constraint,
                                    beam_size=args.beam, max_decode_length=steps,
                                    eos_id=never_eos, stopping="best")

  shapes = [(rows, bucket, steps) for rows in _ints(args.rows) for bucket in _ints(args.buckets)
            for steps in _ints(args.steps)]
  batches = {shape: batch_of(shape[0], shape[1]) for shape in shapes}
  for shape in shapes:
    decode(batches[shape], shape[2])  # compile
  best = {shape: (float("inf"), float("inf")) for shape in shapes}
  for _ in range(args.passes):  # interleaved: the shapes share the machine's state
    for shape in shapes:
      start, start_cpu = time.perf_counter(), time.process_time()
      decode(batches[shape], shape[2])
      wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
      best[shape] = (min(best[shape][0], 1e3 * wall), min(best[shape][1], 1e3 * cpu))

  # Non-negative least squares on relative CPU-ms error; columns in CostModel's field order.
  from scipy.optimize import nnls  # pylint: disable=g-import-not-at-top  (a jax dependency)
  design = np.array([[1.0, rows * bucket, steps, steps * rows * args.beam,
                      steps * rows * args.beam * (bucket + batch_plan.mean_cache_length(steps))]
                     for rows, bucket, steps in shapes])
  measured = np.array([best[shape][1] for shape in shapes])
  fit, _ = nnls(design / measured[:, None], np.ones_like(measured))
  model = batch_plan.CostModel(*(float(x) for x in fit))
  results = []
  for shape, predicted in zip(shapes, design @ fit):
    rows, bucket, steps = shape
    results.append({"rows": rows, "bucket": bucket, "steps": steps, "beam": args.beam,
                    "wall_ms": best[shape][0], "cpu_ms": best[shape][1],
                    "fitted_ms": float(predicted)})
  common.print_table(results, ["rows", "bucket", "steps", "wall_ms", "cpu_ms", "fitted_ms"],
                     title=f"one decode call, beam {args.beam}, min of {args.passes} (ms)")
  print("fitted", model)
  print("wrote", common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "results": results, "fit": model.__dict__,
      "default": batch_plan.default_cost(args.beam).__dict__}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
