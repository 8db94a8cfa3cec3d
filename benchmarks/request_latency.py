"""Latency of single-sentence requests as the service decodes them (1 example, its input
bucket, constrained "allowed" search, stopping "best"), through `generate.decode_batch` of the
`punified_jax` on PYTHONPATH: p50 / p99 / p99-over-p50, the requests that ran to the output
limit, wall and CPU per request (each request's minimum over --passes).

Two checkouts compare by running this script with PYTHONPATH set to each, alternately, e.g.
(`git worktree add --detach /tmp/base <commit>` first):

    for repo in /tmp/base . /tmp/base .; do PYTHONPATH=$repo .venv/bin/python \\
        benchmarks/request_latency.py --raw_dir ../shared/data/raw \\
        --model_dir /work/bench_model/joint3000 --dataset resume --label $repo; done
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import common


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--raw_dir", required=True, help="the real data directory (read only)")
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--dataset", default="resume")
  parser.add_argument("--sentences", type=int, default=200)
  parser.add_argument("--beam_size", type=int, default=4)
  parser.add_argument("--max_decode_length", type=int, default=256)
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--label", default="", help="a name for this checkout in the output")
  parser.add_argument("--name", default="request_latency")
  args = parser.parse_args(argv)
  from punified_jax import constraints, generate  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  from punified_jax.model import Transformer  # pylint: disable=g-import-not-at-top

  prompted = common.prompted_sentences(args.raw_dir, args.model_dir, args.dataset,
                                       args.sentences)
  info, vocabulary = prompted.info, prompted.vocabulary
  params = Extractor.load(args.model_dir, beam_size=1).params
  model = Transformer(info.t5_config)
  constraint = constraints.ner_copy_constraint(vocabulary)
  requests = []
  for sentence in prompted.ids:
    ids = sentence + [prompted.eos_id]
    bucket = next(b for b in generate.input_buckets(512) if b >= len(ids))
    row = np.zeros((1, bucket), np.int32)
    row[0, :len(ids)] = ids
    requests.append(row)
  options = dict(beam_size=args.beam_size, max_decode_length=args.max_decode_length,
                 stopping="best")
  if "log_prob_beams" in generate.decode_batch.__code__.co_varnames:
    options["log_prob_beams"] = 1  # what the Extractor asks for, where the code has it

  def decode(row):
    output = generate.decode_batch(model, params, row, constraint, **options)
    output.tokens.block_until_ready()
    return output

  for row in requests:  # compiles every bucket
    decode(row)
  wall = np.full(len(requests), np.inf)
  cpu = np.full(len(requests), np.inf)
  tokens = np.zeros(len(requests), int)
  for _ in range(args.passes):
    for i, row in enumerate(requests):
      started, started_cpu = time.perf_counter(), time.process_time()
      output = decode(row)
      wall[i] = min(wall[i], time.perf_counter() - started)
      cpu[i] = min(cpu[i], time.process_time() - started_cpu)
      tokens[i] = int((np.asarray(output.tokens)[0, 0] != 0).sum())
  at_limit = tokens >= args.max_decode_length
  row = {"label": args.label, "requests": len(requests), "mean_ms": 1e3 * wall.mean(),
         "p50_ms": 1e3 * np.median(wall), "p99_ms": 1e3 * np.percentile(wall, 99),
         "p99_over_p50": float(np.percentile(wall, 99) / np.median(wall)),
         "mean_cpu_ms": 1e3 * cpu.mean(), "at_limit": int(at_limit.sum()),
         "at_limit_mean_ms": 1e3 * float(wall[at_limit].mean()) if at_limit.any() else None,
         "median_output_tokens": float(np.median(tokens))}
  common.print_table([row], list(row), title=f"{len(requests)} single-sentence requests, "
                     f"beam {args.beam_size}, {args.dataset} dev")
  print("wrote", common.write_json(f"{args.name}", {
      "command": common.command_line(), "machine": common.machine_info(),
      "versions": common.jax_versions(), "settings": vars(args), "results": [row],
      "per_request": {"wall_s": wall.tolist(), "cpu_s": cpu.tolist(),
                      "output_tokens": tokens.tolist()}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
