"""How the growing self-attention cache steps: half steps (64, 96, 128, 192, 256) against
doublings (64, 128, 256), on real dev sentences through generate.decode_batch; and greedy with
finished rows retired (`double+retire`: decoding.greedy_decode's retire_rows) against without.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/cache_steps.py \
        --raw_dir /work/shared/data/raw --model_dir /work/bench_model/ccks

Why: a 32-row decoder step is bound by reading its caches (BENCHMARKS.md 2h), and a batch runs
until its longest row ends, so a batch whose longest output ends at 150 tokens spent its last
steps on a 256-position cache with doublings and spends them on 192 with half steps
(generate.cache_lengths, generate.CACHE_STEPS).  The cost: one more compiled loop body per
doubling, paid at warm-up for every (input bucket, batch size, beam) program.  Result
(BENCHMARKS.md 2i): within the shared machine's noise, for 1.2-1.4x the compile time, so the
doublings stay the default (generate.DEFAULT_CACHE_STEPS).

A variant is a cache-steps name, optionally followed by `+retire` (retire_rows=True; greedy
only, beam search ignores it), e.g. `--steps double,double+retire --beams 1`.

For each dataset and beam, the first --max_sentences dev sentences are sorted by length and cut
into batches of --batch_size (each padded to its input bucket, as extract_throughput.py does),
then decoded with the constrained "allowed" search (the Extractor's default) once per
--steps variant: the variants interleaved within every pass, min and median of --passes passes,
wall and process CPU seconds (CPU time is disturbed far less on a shared machine).  "compile"
is the first call of every bucket's program (rows that end at once: compilation, plus a
negligible run).  Ids must be equal and scores within 1e-6 across variants (checked; a
mismatch fails the run).  --extractor also times the greedy Extractor (two passes, "Long
outputs" in inference.py) with each variant, and half steps with the first-pass limit still
taken from the doublings (Extractor._first_pass_limit reads generate.cache_lengths).

Prints a table, writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.extract_throughput import batches_by_length  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_variant(variant: str) -> tuple[str, bool]:
  """`double` -> ("double", False); `double+retire` -> ("double", True)."""
  steps, plus, flag = variant.partition("+")
  if plus and flag != "retire":
    raise ValueError(f"variant {variant!r}: only `+retire` may follow the cache steps")
  return steps, bool(plus)


@contextlib.contextmanager
def default_cache_steps(variant: str):
  """generate.DEFAULT_CACHE_STEPS and DEFAULT_RETIRE_ROWS set to `variant`'s inside (what the
  Extractor's decodes and its first-pass limit read)."""
  from punified_jax import generate  # pylint: disable=g-import-not-at-top
  previous = generate.DEFAULT_CACHE_STEPS, generate.DEFAULT_RETIRE_ROWS
  generate.DEFAULT_CACHE_STEPS, generate.DEFAULT_RETIRE_ROWS = parse_variant(variant)
  try:
    yield
  finally:
    generate.DEFAULT_CACHE_STEPS, generate.DEFAULT_RETIRE_ROWS = previous


def _timed(fn) -> tuple[float, float, object]:
  start, start_cpu = time.perf_counter(), time.process_time()
  result = fn()
  return time.perf_counter() - start, time.process_time() - start_cpu, result


def _summary(walls: list[float], cpus: list[float]) -> dict:
  return {"wall_s": [round(x, 4) for x in walls], "cpu_s": [round(x, 4) for x in cpus],
          "wall_min": min(walls), "wall_median": float(np.median(walls)),
          "cpu_min": min(cpus), "cpu_median": float(np.median(cpus))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True, help="a trained run directory of ours")
  parser.add_argument("--datasets", default="cluener,ccks2021,resume")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--max_sentences", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--beams", default="1,4")
  parser.add_argument("--steps", default="double,half", help="generate.CACHE_STEPS to compare, "
                      "each optionally with +retire; the first is the baseline of the ratios")
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--extractor", action="store_true",
                      help="also time the greedy Extractor with each variant")
  parser.add_argument("--compile_widths", default="",
                      help="instead of decoding: compile decode_batch's program for these input "
                           "buckets (x --beams x --steps, --batch_size rows), interleaved, and "
                           "report the min of --passes compilations of each")
  parser.add_argument("--name", default="cache_steps")
  args = parser.parse_args(argv)
  steps = [s for s in args.steps.split(",") if s]
  beams = [int(b) for b in args.beams.split(",") if b]

  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import constraints, entity_types, generate, model_info, prompts  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  from punified_jax.model import Transformer  # pylint: disable=g-import-not-at-top
  try:
    parsed = [parse_variant(s) for s in steps]
  except ValueError as error:
    parser.error(f"--steps: {error}")
  if {p for p, _ in parsed} - set(generate.CACHE_STEPS) or len(set(steps)) < 2:
    parser.error(f"--steps: two or more of {generate.CACHE_STEPS} (each optionally +retire), "
                 f"got {args.steps!r}")
  info = model_info.load_model_info(args.model_dir)
  vocabulary = info.vocabulary()
  lengths = info.task_feature_lengths or {}
  max_decode, max_input = lengths.get("targets", 256), lengths.get("inputs", 512)
  eos = int(vocabulary.eos_id)
  params = Extractor.load(args.model_dir, beam_size=1).params
  model = Transformer(info.t5_config)
  constraint = constraints.NerCopyConstraint.from_vocabulary(vocabulary)
  buckets = generate.input_buckets(max_input)
  datasets = [d for d in args.datasets.split(",") if d]
  config = common.configure_tasks(args.raw_dir, datasets)
  import tasks  # pylint: disable=g-import-not-at-top
  print({"steps": {s: generate.cache_lengths(max_decode, parse_variant(s)[0]) for s in steps},
         "load_average": os.getloadavg()}, flush=True)
  if args.compile_widths:
    return _compile_times(args, steps, beams, model, params, constraint, max_decode, eos)

  def decode(rows, beam, variant):
    cache_steps, retire = parse_variant(variant)
    return generate.decode_batch(model, params, jax.numpy.asarray(rows), constraint,
                                 beam_size=beam, max_decode_length=max_decode, eos_id=eos,
                                 stopping="best", search="allowed", cache_steps=cache_steps,
                                 retire_rows=retire,
                                 # as the Extractor: only the best beam's per-token log-probs
                                 log_prob_beams=1 if beam > 1 else None)

  def padded(batch):
    width = next(b for b in buckets if b >= batch.shape[1])
    rows = np.zeros((args.batch_size, width), np.int32)  # the last batch is padded with rows
    rows[:batch.shape[0], :batch.shape[1]] = batch
    return rows

  results = []
  load_averages = [os.getloadavg()]
  for dataset in datasets:
    examples = tasks.load_examples(config, dataset)[args.split][:args.max_sentences]
    names = entity_types.prompt_names(dataset)
    texts = [ex.text for ex in examples]
    ids = [list(vocabulary.encode(prompts.format_input(t, names)))[:max_input - 1] + [eos]
           for t in texts]
    batches = [padded(b) for b in batches_by_length(ids, args.batch_size)[0]]
    for beam in beams:
      compile_s = {}
      for variant in steps:
        walls, cpus = [], []
        for width in sorted({b.shape[1] for b in batches}):
          rows = np.zeros((args.batch_size, width), np.int32)
          rows[:, 0] = eos
          wall, cpu, _ = _timed(lambda: jax.block_until_ready(decode(rows, beam, variant).tokens))
          walls.append(wall)
          cpus.append(cpu)
        compile_s[variant] = (sum(walls), sum(cpus))
      passes = {variant: ([], []) for variant in steps}
      outputs = {}
      for _ in range(args.passes):
        for variant in steps:  # interleaved: every pass runs every variant once
          def run_all(variant=variant):
            decoded = [decode(rows, beam, variant) for rows in batches]
            return jax.block_until_ready(decoded)
          wall, cpu, decoded = _timed(run_all)
          passes[variant][0].append(wall)
          passes[variant][1].append(cpu)
          outputs[variant] = decoded
      base = outputs[steps[0]]
      for variant in steps[1:]:
        for old, new in zip(base, outputs[variant]):
          np.testing.assert_array_equal(np.asarray(new.tokens), np.asarray(old.tokens))
          np.testing.assert_allclose(np.asarray(new.scores), np.asarray(old.scores), atol=1e-6)
      # The longest best output of each batch: where its search ended.
      longest = [int((np.asarray(o.tokens)[:, 0] > 0).sum(-1).max()) for o in base]
      base_cpu = float(np.median(passes[steps[0]][1]))
      base_wall = float(np.median(passes[steps[0]][0]))
      for variant in steps:
        figures = _summary(*passes[variant])
        results.append({
            "dataset": dataset, "beam": beam, "steps": variant, "sentences": len(texts),
            "batches": len(batches), "longest_output_per_batch": longest,
            "cache_lengths": generate.cache_lengths(max_decode, parse_variant(variant)[0]),
            **figures, "compile_wall_s": compile_s[variant][0],
            "compile_cpu_s": compile_s[variant][1],
            "cpu_ratio": base_cpu / figures["cpu_median"],
            "wall_ratio": base_wall / figures["wall_median"], "same_ids": True})
        print(results[-1], flush=True)
      load_averages.append(os.getloadavg())

  extractor_rows = []
  if args.extractor:
    extractor_rows = _extractor_ab(args, steps, datasets, config, max_decode)
    load_averages.append(os.getloadavg())

  columns = ["dataset", "beam", "steps", "longest_output_per_batch", "cpu_median", "cpu_min",
             "wall_median", "wall_min", "cpu_ratio", "wall_ratio", "compile_cpu_s",
             "compile_wall_s"]
  common.print_table(results, columns, title="constrained decode_batch, seconds per pass")
  if extractor_rows:
    common.print_table(extractor_rows, ["dataset", "variant", "cpu_median", "cpu_min",
                                        "wall_median", "wall_min", "cpu_ratio", "wall_ratio",
                                        "redecoded", "same_entities", "max_score_diff"],
                       title="greedy Extractor (two passes), seconds per pass")
  path = common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "jax": common.jax_versions(), "load_averages": load_averages,
      "max_decode_length": max_decode, "batch_size": args.batch_size,
      "rows": results, "extractor_rows": extractor_rows})
  print(f"wrote {path}")
  return 0


def _compile_times(args, steps, beams, model, params, constraint, max_decode: int,
                   eos: int) -> int:
  """Seconds to trace, lower and compile decode_batch's program (what serving's warm-up pays
  per (input bucket, batch size)), per variant; min over --passes, interleaved."""
  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import generate  # pylint: disable=g-import-not-at-top
  rows = []
  load_averages = [os.getloadavg()]
  for width in [int(w) for w in args.compile_widths.split(",") if w]:
    inputs = jax.numpy.zeros((args.batch_size, width), jax.numpy.int32)
    for beam in beams:
      times = {variant: ([], []) for variant in steps}
      for _ in range(args.passes):
        for variant in steps:
          lower = lambda variant=variant: generate._decode_batch_jit.lower(  # pylint: disable=protected-access
              generate._shared_transformer(model.config), params, inputs, constraint,  # pylint: disable=protected-access
              beam_size=beam, max_decode_length=max_decode, alpha=0.6, eos_id=eos,
              stopping="best", search="allowed", chunk_length=8, beam_grouped_cache=True,
              beam_output_layer_in_loop=False, log_prob_beams=1 if beam > 1 else None,
              cache_steps=parse_variant(variant)[0],
              retire_rows=parse_variant(variant)[1]).compile()
          jax.clear_caches()  # no in-memory trace or executable reused between passes
          wall, cpu, _ = _timed(lower)
          times[variant][0].append(wall)
          times[variant][1].append(cpu)
      base = min(times[steps[0]][1])
      for variant in steps:
        rows.append({"width": width, "beam": beam, "steps": variant,
                     "segments": len(generate.cache_lengths(max_decode,
                                                            parse_variant(variant)[0])),
                     "compile_wall_min": min(times[variant][0]),
                     "compile_cpu_min": min(times[variant][1]),
                     "cpu_over_baseline": min(times[variant][1]) / base,
                     "wall_s": times[variant][0], "cpu_s": times[variant][1]})
        print(rows[-1], flush=True)
    load_averages.append(os.getloadavg())
  common.print_table(rows, ["width", "beam", "steps", "segments", "compile_cpu_min",
                            "compile_wall_min", "cpu_over_baseline"],
                     title="decode_batch program: trace + lower + compile, seconds")
  path = common.write_json(args.name, {
      "command": common.command_line(), "machine": common.machine_info(),
      "jax": common.jax_versions(), "load_averages": load_averages,
      "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
      "max_decode_length": max_decode, "batch_size": args.batch_size, "rows": rows})
  print(f"wrote {path}")
  return 0


def _extractor_ab(args, steps: list[str], datasets: list[str], config, max_decode: int) -> list:
  """The greedy constrained Extractor (its default search, two passes) with each variant's
  cache steps, plus half steps with the first-pass limit from the doublings; interleaved."""
  import tasks  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  variants = [(s, s, None) for s in steps]
  if "half" in steps and "double" in steps:
    variants.append(("half, first limit from doublings", "half", "double"))
  rows = []
  for dataset in datasets:
    texts = [ex.text for ex in tasks.load_examples(config, dataset)[args.split][:args.max_sentences]]
    extractors = {}
    for label, decode_steps, limit_steps in variants:
      # A new Extractor (and Transformer) per variant: its compiled programs are its own.
      extractor = Extractor.load(args.model_dir, beam_size=1, constrained=True,
                                 batch_size=args.batch_size, max_decode_length=max_decode)
      if limit_steps is not None:
        def first_pass_limit(batch, limit, extractor=extractor, limit_steps=limit_steps):
          with default_cache_steps(limit_steps):
            return Extractor._first_pass_limit(extractor, batch, limit)  # pylint: disable=protected-access
        extractor._first_pass_limit = first_pass_limit  # pylint: disable=protected-access
      extractors[label] = (extractor, decode_steps)
      with default_cache_steps(decode_steps):
        extractor.extract(texts, dataset=dataset)  # warm-up: every program the passes use
    times = {label: ([], []) for label, _, _ in variants}
    found = {}
    for _ in range(args.passes):
      for label, (extractor, decode_steps) in extractors.items():
        with default_cache_steps(decode_steps):
          before = extractor.stats.get("redecoded", 0)
          wall, cpu, entities = _timed(lambda: extractor.extract(texts, dataset=dataset))
          after = extractor.stats.get("redecoded", 0)
        times[label][0].append(wall)
        times[label][1].append(cpu)
        found[label] = (entities, after - before)
    base_label = variants[0][0]
    base_cpu = float(np.median(times[base_label][1]))
    base_wall = float(np.median(times[base_label][0]))
    for label, _, _ in variants:
      figures = _summary(*times[label])
      rows.append({"dataset": dataset, "variant": label, **figures,
                   "cpu_ratio": base_cpu / figures["cpu_median"],
                   "wall_ratio": base_wall / figures["wall_median"],
                   "redecoded": found[label][1],
                   **_entity_agreement(found[base_label][0], found[label][0])})
      print(rows[-1], flush=True)
  return rows


def _entity_agreement(base: list, other: list) -> dict:
  """Whether two extractions found the same entities (every field but the score), and the
  largest score difference (re-decoded windows run in smaller batches: float rounding)."""
  strip = lambda entities: [sorted(tuple(sorted((k, v) for k, v in e.items() if k != "score"))
                                   for e in text) for text in entities]
  same = strip(base) == strip(other)
  scores = [abs(a["score"] - b["score"]) for x, y in zip(base, other) for a, b in zip(x, y)
            if "score" in a and "score" in b]
  return {"same_entities": same, "max_score_diff": max(scores, default=0.0) if same else None}


if __name__ == "__main__":
  sys.exit(main())
