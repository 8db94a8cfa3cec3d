"""Runaway outputs under constrained decoding, with and without the no-repeat and order rules.

    nice -n 10 .venv/bin/python benchmarks/runaway_outputs.py --raw_dir ../shared/data/raw \
        --model_dir RUN_DIR --datasets cluener,resume,ccks2021 --beams 1,4

A batch runs until its longest row ends, so one output that repeats an item up to the output
limit ("(景点:亚庇),(景点:亚庇),...") makes the whole batch pay for it.  For each dataset (the
first --max_sentences dev sentences, sorted by length into --batch_size-row batches padded to
the Extractor's input buckets, as extract_throughput does) and each beam size, decodes with
constraints.NerCopyConstraint under each of --rules (RULES below: the grammar alone, with
forbid_repeats, with forbid_repeats and follow_order) and reports:
  useful   share of the batches' row-steps a row really needed: sum of every example's decoder
           calls / (batch_size x the batch's longest), over all batches;
  at_limit outputs (best hypothesis) without EOS at --max_decode_length;
  at_budget outputs that end at their output budget (rule "budget": EOS forced there);
  repeats  outputs whose items include a repeated (type, span) pair;
  mean/p90/p99/max output tokens, and span macro F1 (metrics.span_macro_f1 on the parsed outputs,
  spans not in the sentence dropped, as extract_throughput does).
No timing: counts and F1 only (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.extract_throughput import batches_by_length  # pylint: disable=g-import-not-at-top,wrong-import-position
from punified_jax.output_limits import OUTPUT_BUDGET_FACTOR as _BUDGET  # pylint: disable=g-import-not-at-top,wrong-import-position


# The constraint's settings compared: the grammar alone, + no repeated item, + target order.
RULES = {
    "grammar": dict(forbid_repeats=False, follow_order=False),
    "no_repeat": dict(forbid_repeats=True, follow_order=False),
    "order": dict(forbid_repeats=False, follow_order=True),
    "no_repeat+order": dict(forbid_repeats=True, follow_order=True),
    # The output budget (constraints module docstring), the Extractor's default since 2n.
    "budget": dict(budget_factor=_BUDGET),
    # + the Nth closed repeat ends the target (constraints module docstring, "A repeat ends the
    # output"; the Extractor's default N since 2o: output_limits.END_AT_REPEAT).
    "budget+end_repeat1": dict(budget_factor=_BUDGET, end_at_repeat=1),
    "budget+end_repeat2": dict(budget_factor=_BUDGET, end_at_repeat=2),
    "budget+end_repeat3": dict(budget_factor=_BUDGET, end_at_repeat=3),
    "budget+end_repeat4": dict(budget_factor=_BUDGET, end_at_repeat=4),
    "budget+end_repeat6": dict(budget_factor=_BUDGET, end_at_repeat=6),
}


def repeated_items(vocabulary, output: list[int], names) -> bool:
  """Does the output name one (type, span) pair twice (NULL items included)?"""
  from punified_jax import parsing  # pylint: disable=g-import-not-at-top
  generation = vocabulary.decode(output)
  details = parsing.parse_generation_details(generation, names)
  null_items = {}
  for name in names:  # (TYPE:NULL) twice is a repeat too
    null_items[name] = generation.count(f"({name}:NULL)")
  return details.duplicates > 0 or max(null_items.values(), default=0) > 1


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--datasets", default="cluener,resume,ccks2021")
  parser.add_argument("--beams", default="1,4")
  parser.add_argument("--max_sentences", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_decode_length", type=int, default=256)
  parser.add_argument("--search", default="allowed", help="generate.decode_batch's search")
  parser.add_argument("--rules", default=",".join(RULES), help="a subset of " + ",".join(RULES))
  parser.add_argument("--name", default="runaway_outputs")
  args = parser.parse_args(argv)

  from punified_jax import constraints, entity_types, generate, metrics, model_info, parsing, prompts  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  from punified_jax.model import Transformer  # pylint: disable=g-import-not-at-top

  rules = [r for r in args.rules.split(",") if r]
  if not rules or set(rules) - set(RULES):
    parser.error(f"--rules: a comma-separated subset of {','.join(RULES)}, got {args.rules!r}")
  datasets = [d for d in args.datasets.split(",") if d]
  beams = [int(b) for b in args.beams.split(",") if b]
  config = common.configure_tasks(args.raw_dir, datasets)
  import tasks  # pylint: disable=g-import-not-at-top
  info = model_info.load_model_info(args.model_dir)
  vocabulary = info.vocabulary()
  params = Extractor.load(args.model_dir, beam_size=1).params
  model = Transformer(info.t5_config)
  buckets = generate.input_buckets(512)
  eos = int(vocabulary.eos_id)
  rows = []
  for dataset in datasets:
    examples = tasks.load_examples(config, dataset)["validation"][:args.max_sentences]
    names = entity_types.prompt_names(dataset)
    texts = [ex.text for ex in examples]
    gold = [prompts.gold_mentions(ex, dataset) for ex in examples]
    ids = [list(vocabulary.encode(prompts.format_input(t, names))) + [eos] for t in texts]
    batches, order = batches_by_length(ids, args.batch_size)
    for beam in beams:
      for rule in rules:
        constraint = constraints.NerCopyConstraint.from_vocabulary(vocabulary, **RULES[rule])
        outputs, calls, useful, paid = [None] * len(texts), [], 0, 0
        budgets = [None] * len(texts)
        k = 0
        for batch in batches:
          width = next(b for b in buckets if b >= batch.shape[1])
          padded = np.zeros((args.batch_size, width), np.int32)
          padded[:batch.shape[0], :batch.shape[1]] = batch
          out = generate.decode_batch(model, params, padded, constraint, beam_size=beam,
                                      max_decode_length=args.max_decode_length,
                                      search=args.search, stopping="best")
          used = np.asarray(out.decoder_calls).reshape(args.batch_size, -1)[:, 0]
          used = used[:batch.shape[0]]
          useful += int(used.sum())
          paid += args.batch_size * int(used.max())
          tokens = np.asarray(out.tokens)[:batch.shape[0], 0]
          budget = np.asarray(constraint.init(padded)["budget"])
          for index, row in enumerate(tokens.tolist()):
            outputs[order[k]] = row[:row.index(eos) + 1] if eos in row else row
            budgets[order[k]] = int(budget[index])
            k += 1
          calls += used.tolist()
          print(f"{dataset} beam {beam} rules={rule}: batch {k}/{len(texts)}",
                flush=True)
        lengths = np.asarray([len(o) for o in outputs])
        at_limit = int(sum(eos not in o for o in outputs))
        at_budget = int(sum(len(o) == b for o, b in zip(outputs, budgets)))
        repeats = int(sum(repeated_items(vocabulary, o, names) for o in outputs))
        pairs = [sorted({(t, s) for t, s in parsing.parse_generation(vocabulary.decode(o), names)
                         if s and s in text}) for o, text in zip(outputs, texts)]
        f1 = metrics.span_macro_f1(gold, pairs, type_names=names)
        rows.append({
            "dataset": dataset, "beam": beam, "rules": rule,
            "sentences": len(texts), "useful": useful / paid, "at_limit": at_limit,
            "at_budget": at_budget,
            "repeats": repeats, "mean_tokens": float(lengths.mean()),
            "p90_tokens": float(np.percentile(lengths, 90)),
            "p99_tokens": float(np.percentile(lengths, 99)), "max_tokens": int(lengths.max()),
            "macro_f1": f1["macro_f1"], "micro_f1": f1.get("micro_f1"),
            "decoder_calls": int(sum(calls))})
        common.print_table(rows[-1:], list(rows[-1].keys()))
  columns = ["dataset", "beam", "rules", "useful", "at_limit", "at_budget", "repeats",
             "mean_tokens", "p90_tokens", "max_tokens", "macro_f1", "decoder_calls"]
  common.print_table(rows, columns, title="runaway outputs, before / after the no-repeat rule")
  path = common.write_json(args.name, {"command": common.command_line(),
                                       "machine": common.machine_info(), "args": vars(args),
                                       "rows": rows})
  print("wrote", path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
