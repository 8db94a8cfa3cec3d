"""The Extractor with 1 decoding thread against N (its concurrent batches, the default on CPU),
each with and without spreading a short input over more batches (batch_plan.spread_rows):
sentences/s, wall and CPU seconds, on real dev sentences; the entities must be the same (scores
within 1e-5: other batch shapes sum floats in another order).

XLA:CPU runs one batch's search (a jitted while loop of small ops) on about one core, so the
Extractor decodes `decode_threads` batches at once (sharded_decoding.map_in_order), and splits
a short input into at least batch_plan.BATCHES_PER_THREAD batches per thread.  This script
times `Extractor.extract` on the same texts in four settings (1 or N threads x spread or not:
BATCHES_PER_THREAD 0 turns spreading off), interleaved in one process, each after an untimed
warm-up pass (which compiles every shape), and reports the median of --passes.  Example:

    PYTHONPATH=. .venv/bin/python benchmarks/decode_threads.py --raw_dir ../shared/data/raw \\
        --model_dir /work/bench_model/ccks --datasets cluener,ccks2021,resume --beams 1,4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common


def _check_same(expected: list, found: list, where: str) -> None:
  """The same entities; their scores equal within 1e-5 (other batch shapes, other float sums)."""
  spans = lambda texts: [[{k: v for k, v in e.items() if k != "score"} for e in entities]
                         for entities in texts]
  if spans(expected) != spans(found):
    raise AssertionError(f"{where}: other entities than the baseline's")
  for a, b in zip(expected, found):
    for x, y in zip(a, b):
      if abs(x["score"] - y["score"]) > 1e-5:
        raise AssertionError(f"{where}: score {y['score']} against {x['score']} for {y}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--raw_dir", required=True, help="the real data directory (read only)")
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--datasets", default="cluener,ccks2021,resume")
  parser.add_argument("--beams", default="1,4")
  parser.add_argument("--max_sentences", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--threads", type=int, default=None,
                      help="the concurrent side's decode_threads (default: the Extractor's own)")
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--name", default="decode_threads")
  args = parser.parse_args(argv)
  datasets = [d for d in args.datasets.split(",") if d]
  config = common.configure_tasks(args.raw_dir, datasets)
  import tasks  # pylint: disable=g-import-not-at-top
  from punified_jax import entity_types  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top

  from punified_jax import batch_plan  # pylint: disable=g-import-not-at-top

  spread = batch_plan.BATCHES_PER_THREAD
  rows = []
  for beam in (int(b) for b in args.beams.split(",")):
    one = Extractor.load(args.model_dir, beam_size=beam, batch_size=args.batch_size,
                         decode_threads=1)
    many = Extractor.load(args.model_dir, beam_size=beam, batch_size=args.batch_size,
                          decode_threads=args.threads)
    # (label, extractor, batch_plan.BATCHES_PER_THREAD); the first is the baseline.
    sides = [("1 thread, one plan", one, 0), ("1 thread, spread", one, spread),
             ("concurrent, one plan", many, 0), ("concurrent, spread", many, spread)]
    for dataset in datasets:
      texts = [e.text for e in tasks.load_examples(config, dataset)["validation"]
               [:args.max_sentences]]
      names = list(entity_types.prompt_names(dataset))
      found = {}
      times = {label: {"wall": [], "cpu": []} for label, _, _ in sides}
      for repeat in range(args.passes + 1):  # pass 0: the warm-up, which compiles every shape
        for label, extractor, batches_per_thread in sides:
          batch_plan.BATCHES_PER_THREAD = batches_per_thread
          wall, cpu = time.perf_counter(), time.process_time()
          entities = extractor.extract(texts, types=names)
          if repeat == 0:
            found[label] = entities
            continue
          times[label]["wall"].append(time.perf_counter() - wall)
          times[label]["cpu"].append(time.process_time() - cpu)
      batch_plan.BATCHES_PER_THREAD = spread
      for label, entities in found.items():
        _check_same(found[sides[0][0]], entities, f"{dataset} beam {beam} {label}")
      base = statistics.median(times[sides[0][0]]["wall"])
      for label, extractor, batches_per_thread in sides:
        wall = statistics.median(times[label]["wall"])
        rows.append({"dataset": dataset, "beam": beam, "side": label,
                     "decode_threads": extractor.decode_threads,
                     "batches_per_thread": batches_per_thread, "sentences": len(texts),
                     "wall_s": wall, "cpu_s": statistics.median(times[label]["cpu"]),
                     "sentences_per_s": len(texts) / wall, "speedup": base / wall,
                     "pass_wall_s": times[label]["wall"], "same_entities": True})
        print(rows[-1], flush=True)
  common.print_table(rows, ["dataset", "beam", "side", "decode_threads", "batches_per_thread",
                            "sentences_per_s",
                            "wall_s", "cpu_s", "speedup", "same_entities"],
                     title=("Extractor: one decoding thread against concurrent batches, "
                            "with and without spreading a short input (spread_rows)"))
  print("wrote", common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "versions": common.jax_versions(), "settings": vars(args), "results": rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
