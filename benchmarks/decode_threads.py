"""The Extractor with 1 decoding thread against N (its concurrent batches, the default on CPU):
sentences/s, wall and CPU seconds, on real dev sentences; the entities must be identical.

XLA:CPU runs one batch's search (a jitted while loop of small ops) on about one core, so the
Extractor decodes `decode_threads` batches at once (sharded_decoding.map_in_order).  This script
times `Extractor.extract` on the same texts with decode_threads=1 and =N, interleaved in one
process, each after an untimed warm-up pass (which compiles every shape), and reports the
median of --passes.  Example:

    PYTHONPATH=. .venv/bin/python benchmarks/decode_threads.py --raw_dir ../shared/data/raw \\
        --model_dir /work/bench_model/ccks --datasets cluener,ccks2021,resume --beams 1,4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common


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

  rows = []
  for beam in (int(b) for b in args.beams.split(",")):
    one = Extractor.load(args.model_dir, beam_size=beam, batch_size=args.batch_size,
                         decode_threads=1)
    many = Extractor.load(args.model_dir, beam_size=beam, batch_size=args.batch_size,
                          decode_threads=args.threads)
    for dataset in datasets:
      texts = [e.text for e in tasks.load_examples(config, dataset)["validation"]
               [:args.max_sentences]]
      names = list(entity_types.prompt_names(dataset))
      found = {side: extractor.extract(texts, types=names)  # warm-up: compiles every shape
               for side, extractor in (("1 thread", one), ("concurrent", many))}
      if found["1 thread"] != found["concurrent"]:
        raise AssertionError(f"{dataset} beam {beam}: entities differ with decode_threads")
      times = {side: {"wall": [], "cpu": []} for side in found}
      for _ in range(args.passes):
        for side, extractor in (("1 thread", one), ("concurrent", many)):
          wall, cpu = time.perf_counter(), time.process_time()
          extractor.extract(texts, types=names)
          times[side]["wall"].append(time.perf_counter() - wall)
          times[side]["cpu"].append(time.process_time() - cpu)
      base = statistics.median(times["1 thread"]["wall"])
      for side, extractor in (("1 thread", one), ("concurrent", many)):
        wall = statistics.median(times[side]["wall"])
        rows.append({"dataset": dataset, "beam": beam, "side": side,
                     "decode_threads": extractor.decode_threads, "sentences": len(texts),
                     "wall_s": wall, "cpu_s": statistics.median(times[side]["cpu"]),
                     "sentences_per_s": len(texts) / wall, "speedup": base / wall,
                     "pass_wall_s": times[side]["wall"], "same_entities": True})
        print(rows[-1], flush=True)
  common.print_table(rows, ["dataset", "beam", "side", "decode_threads", "sentences_per_s",
                            "wall_s", "cpu_s", "speedup", "same_entities"],
                     title="Extractor: one decoding thread against concurrent batches")
  print("wrote", common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "versions": common.jax_versions(), "settings": vars(args), "results": rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
