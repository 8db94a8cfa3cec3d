"""The Extractor's pass time in one checkout of this repository, for A/B runs between commits.

    git worktree add /tmp/old <commit>
    for round in 1 2 3 4; do     # alternate the sides: the machine drifts between processes
      .venv/bin/python benchmarks/extractor_ab.py --repo /tmp/old --model_dir M --beam 1 \
          --raw_dir ../shared/data/raw --output /tmp/ab_old_$round.json
      .venv/bin/python benchmarks/extractor_ab.py --repo $PWD --model_dir M --beam 1 \
          --raw_dir ../shared/data/raw --output /tmp/ab_new_$round.json
    done

Imports `punified_jax` from --repo (checked), loads the Extractor (batch 32, output limit
256, stopping "best", the rest its defaults), extracts the first --sentences dev sentences of
each dataset once to compile, then --passes more times; writes per dataset the median and
fastest pass and the entities found (type, start, end per sentence) so that two sides can be
checked for the same output.  Runs in the main venv; needs nothing but the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repo", required=True, help="the checkout whose punified_jax is timed")
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--datasets", default="cluener,ccks2021,resume")
  parser.add_argument("--beam", type=int, default=1)
  parser.add_argument("--sentences", type=int, default=64)
  parser.add_argument("--passes", type=int, default=7)
  parser.add_argument("--output", required=True)
  parser.add_argument("--output_budget", type=float, default=None,
                      help="the Extractor's output_budget (default: its own default; a side "
                           "from before the budget has no such option)")
  args = parser.parse_args()
  repo = os.path.abspath(args.repo)
  sys.path[:0] = [os.path.join(repo, "benchmarks"), repo]
  import common  # pylint: disable=g-import-not-at-top
  import punified_jax  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  if not os.path.abspath(punified_jax.__file__).startswith(repo + os.sep):
    raise SystemExit(f"punified_jax came from {punified_jax.__file__}, not from {repo}")
  results = {}
  for dataset in args.datasets.split(","):
    config = common.configure_tasks(args.raw_dir, [dataset])
    import tasks  # pylint: disable=g-import-not-at-top
    texts = [ex.text for ex in tasks.load_examples(config, dataset)["validation"]]
    texts = texts[:args.sentences]
    budget = {} if args.output_budget is None else {"output_budget": args.output_budget}
    extractor = Extractor.load(args.model_dir, beam_size=args.beam, batch_size=32,
                               max_decode_length=256, stopping="best", **budget)
    found = extractor.extract(texts, dataset=dataset)
    seconds = []
    for _ in range(args.passes):
      start = time.perf_counter()
      extractor.extract(texts, dataset=dataset)
      seconds.append(time.perf_counter() - start)
    seconds.sort()
    results[dataset] = {
        "median_s": seconds[len(seconds) // 2], "min_s": seconds[0], "passes": seconds,
        "entities": [sorted((e["type"], e["start"], e["end"]) for e in f) for f in found]}
    print(f"{dataset}: median {results[dataset]['median_s']:.3f} s, fastest {seconds[0]:.3f} s",
          flush=True)
  with open(args.output, "w") as handle:
    json.dump({"repo": repo, "command": " ".join(sys.argv), **results}, handle)
  return 0


if __name__ == "__main__":
  sys.exit(main())
