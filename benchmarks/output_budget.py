"""How long real targets are against their input: the data behind the constraint's output budget.

    .venv/bin/python benchmarks/output_budget.py --raw_dir ../shared/data/raw \
        --model_dir /work/bench_model/runs/joint_adapt

For every sentence of every split of each dataset (prompted with its dataset's types, as the
training tasks and the Extractor do), in the model's vocabulary's tokens:
    null  = the all-NULL target of the types + EOS (what the output costs with no entity),
    n     = the text's tokens,
    extra = the gold target + EOS - null (what the entities add).
The constraint's output budget (constraints.output_budget) allows null + ceil(factor * n) +
slack tokens; this prints, per dataset, the quantiles of extra / n, the largest extra - n, and
how many gold targets a budget of each candidate factor (with the given slack) would cut, and
writes the table as JSON (benchmarks/results/output_budget.json).  Whole sentences, not
windows: a window's gold target is the part of its sentence's target inside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # pylint: disable=g-import-not-at-top,wrong-import-position

DATASETS = "resume,ontonotes4,ecommerce,msra,cluener,ccks2021,weibo,peoples_daily_1998"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True, help="a run directory (for its vocabulary)")
  parser.add_argument("--datasets", default=DATASETS)
  parser.add_argument("--factors", default="1.0,1.25,1.5,2.0")
  parser.add_argument("--slack", type=int, default=None,
                      help="default: constraints.OUTPUT_BUDGET_SLACK")
  parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                       "output_budget.json"))
  args = parser.parse_args()
  from punified_jax import constraints, entity_types, model_info, prompts  # pylint: disable=g-import-not-at-top
  slack = constraints.OUTPUT_BUDGET_SLACK if args.slack is None else args.slack
  factors = [float(f) for f in args.factors.split(",")]
  vocabulary = model_info.load_model_info(args.model_dir).vocabulary()
  rows = []
  for dataset in args.datasets.split(","):
    config = common.configure_tasks(args.raw_dir, [dataset])
    import tasks  # pylint: disable=g-import-not-at-top
    names = entity_types.prompt_names(dataset)
    null = len(vocabulary.encode(prompts.format_target([], names))) + 1
    extras, lengths = [], []
    for split, examples in tasks.load_examples(config, dataset).items():
      for example in examples:
        target = prompts.format_target(prompts.gold_mentions(example, dataset), names)
        extras.append(len(vocabulary.encode(target)) + 1 - null)
        lengths.append(len(vocabulary.encode(example.text)))
    extra, n = np.array(extras), np.maximum(np.array(lengths), 1)
    ratio = extra / n
    row = {"dataset": dataset, "sentences": len(extras), "null": null,
           "text_tokens_p50": float(np.median(n)),
           "extra_over_n": {q: round(float(np.quantile(ratio, float(q))), 3)
                            for q in ("0.5", "0.99", "0.999", "1.0")},
           "max_extra_minus_n": int(np.max(extra - n)),
           "cut": {str(f): int(np.sum(extra > np.ceil(f * n) + slack)) for f in factors}}
    rows.append(row)
    print(json.dumps(row, ensure_ascii=False), flush=True)
  print(f"\nslack {slack} tokens; 'cut' = gold targets longer than null + ceil(factor * n) + "
        "slack\n")
  print("| dataset | sentences | all-NULL target | text tokens p50 | extra/n p50 | p99 | p99.9 "
        "| max | max extra - n | " + " | ".join(f"cut at {f}" for f in factors) + " |")
  print("|---" * (9 + len(factors)) + "|")
  for row in rows:
    q = row["extra_over_n"]
    print(f"| {row['dataset']} | {row['sentences']} | {row['null']} | {row['text_tokens_p50']:g} "
          f"| {q['0.5']} | {q['0.99']} | {q['0.999']} | {q['1.0']} | {row['max_extra_minus_n']} | "
          + " | ".join(str(row["cut"][str(f)]) for f in factors) + " |")
  with open(args.output, "w") as handle:
    json.dump({"command": " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
               "slack": slack, "factors": factors, "rows": rows}, handle, ensure_ascii=False,
              indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
