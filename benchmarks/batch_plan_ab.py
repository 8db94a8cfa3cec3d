"""The Extractor's batch plans against each other: batching="cost" (batch_plan) vs
"consecutive" (the old consecutive chunks of batch_size), interleaved in one process.

    PYTHONPATH=. .venv/bin/python benchmarks/batch_plan_ab.py --raw_dir ../shared/data/raw \
        --model_dir /work/bench_model/ccks --datasets resume,cluener,ccks2021 --beams 1,4

Per dataset and beam: one Extractor (the defaults of extract_throughput.py's Extractor row:
batch 32, stopping "best", the run's target length, two-pass greedy), one untimed extraction
per plan (compiles every shape it uses; its time is reported as warmup_s), then `--passes`
rounds, each timing one extraction of the first `--max_sentences` dev sentences with each plan
in turn.  Reports the median wall and CPU (process_time) seconds per plan, their ratio, the
decode calls and distinct (rows, bucket) shapes per pass, and whether the entities are the same
(type, text, start, end) with the largest score difference.  Writes JSON under
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

PLANS = ("consecutive", "cost")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--datasets", default="resume,cluener,ccks2021")
  parser.add_argument("--beams", default="1,4")
  parser.add_argument("--max_sentences", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--passes", type=int, default=5)
  parser.add_argument("--name", default="batch_plan_ab")
  args = parser.parse_args(argv)

  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  datasets = [d for d in args.datasets.split(",") if d]
  config = common.configure_tasks(args.raw_dir, datasets)
  import tasks  # pylint: disable=g-import-not-at-top

  results = []
  for dataset in datasets:
    texts = [ex.text for ex in tasks.load_examples(config, dataset)["validation"]
             [:args.max_sentences]]
    for beam in (int(b) for b in args.beams.split(",")):
      extractor = Extractor.load(args.model_dir, beam_size=beam, batch_size=args.batch_size,
                                 stopping="best")
      shapes: list = []
      decode = extractor.decoder.decode

      def recording(model, params, rows, *rest, **kwargs):
        shapes.append(rows.shape)
        return decode(model, params, rows, *rest, **kwargs)

      extractor.decoder.decode = recording
      found, warmup, seconds, calls = {}, {}, {p: [] for p in PLANS}, {}
      for plan in PLANS:
        extractor.batching = plan
        start = time.perf_counter()
        found[plan] = extractor.extract(texts, dataset=dataset)
        warmup[plan] = time.perf_counter() - start
      for _ in range(args.passes):
        for plan in PLANS:
          extractor.batching = plan
          shapes.clear()
          start, start_cpu = time.perf_counter(), time.process_time()
          extractor.extract(texts, dataset=dataset)
          seconds[plan].append((time.perf_counter() - start, time.process_time() - start_cpu))
          calls[plan] = list(shapes)
      plain = lambda result: [[(e["type"], e["text"], e["start"], e["end"]) for e in entities]
                              for entities in result]
      same = plain(found["cost"]) == plain(found["consecutive"])
      score_diff = max((abs(a["score"] - b["score"])
                        for x, y in zip(found["cost"], found["consecutive"]) for a, b in zip(x, y)),
                       default=0.0) if same else None
      row = {"dataset": dataset, "beam": beam, "sentences": len(texts),
             "same_entities": same, "max_score_diff": score_diff}
      for plan in PLANS:
        wall = [w for w, _ in seconds[plan]]
        cpu = [c for _, c in seconds[plan]]
        row.update({f"{plan}_wall_s": float(np.median(wall)), f"{plan}_cpu_s": float(np.median(cpu)),
                    f"{plan}_passes": [[round(w, 4), round(c, 4)] for w, c in seconds[plan]],
                    f"{plan}_warmup_s": warmup[plan], f"{plan}_calls": len(calls[plan]),
                    f"{plan}_shapes": sorted({tuple(s) for s in calls[plan]})})
      row["wall_ratio"] = row["consecutive_wall_s"] / row["cost_wall_s"]
      row["cpu_ratio"] = row["consecutive_cpu_s"] / row["cost_cpu_s"]
      results.append(row)
      print(row, flush=True)
  common.print_table(results, ["dataset", "beam", "consecutive_wall_s", "cost_wall_s", "wall_ratio",
                               "consecutive_cpu_s", "cost_cpu_s", "cpu_ratio", "consecutive_calls",
                               "cost_calls", "same_entities", "max_score_diff"],
                     title=f"Extractor batch plans, median of {args.passes} interleaved passes")
  print("wrote", common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "load_average": os.getloadavg(), "results": results}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
