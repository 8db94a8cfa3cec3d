"""Extraction throughput: our Extractor vs HF `generate` on the same weights, with both F1s.

    .venv/bin/python benchmarks/extract_throughput.py --raw_dir ../shared/data/raw \
        --model_dir RUN_DIR --dataset resume --beams 1,4,10

--dataset: any dataset of the task registry the run's model was trained on (resume, cluener,
ccks2021, ...; the Extractor refuses types its model never saw).

RUN_DIR is a trained run of ours (punified_model.json + a checkpoint); its parameters are
exported with run_dir.export_checkpoint, so HF decodes with exactly our weights. Both sides
read the SAME encoder ids (our prompt `<entity>T1...<text>sentence` + EOS, tokenized with the
run's vocabulary; HF gets the ids, not text) for the first `--max_sentences` sentences of the
dataset's dev split, both sort them by length and decode in batches of `--batch_size` up to the
run's target length. Beam 1 is greedy on both sides. Per beam size each side first warms up
(ours: compiles the program of every input bucket the pass will use, the Extractor by one
untimed extraction of all sentences, so the shapes its batch plan and its re-decoded windows
use are compiled too; HF: decodes the shortest and the longest batch), reported as warmup_s, then makes `--passes` timed passes over all
sentences; the speed is the median pass (all passes are in the JSON). The two sides take turns
(turns.py: the waiting side blocks on a pipe): HF's 1-process worker runs its warm-up after ours and its pass n right after
our pass n, so that `paired_speedup`, the median over n of HF's pass n / ours, compares passes
timed next to each other (a side's pass moved by up to 60% between processes minutes apart,
both sides' alike); `--unpaired` times all of HF after all of ours instead. Outputs of both are parsed into (type, span) pairs and scored with
punified_jax.metrics.span_macro_f1 against the gold mentions (spans that do not occur in the
sentence dropped on every side, as the Extractor does). Agreement: "same_text_as_decode_batch"
is the share of sentences whose HF output decodes to the same text as our decoding engine's
(generate.decode_batch on the same batches), "same_pairs_as_extractor" the share whose
(type, span) sets equal the Extractor's.

Stopping rules (--stopping, beams > 1), each against HF's counterpart: "exact" runs ours with
stopping="best" (the Extractor's default: the exact search's best hypothesis, without waiting
for the other beams) against HF's canonical search (early_stopping="never"); "early" runs ours
with stopping="early" against HF's early_stopping=True (stop once num_beams hypotheses have
finished). Each row's speed-up is against the HF run of the same beam and rule.

Scoring differences that remain by design: our beam search ranks finished hypotheses with T5's
length penalty ((5 + len) / 6) ** alpha (alpha 0.6), HF with len ** length_penalty (1.0, its
default). Ours computes each entity's score inside the timed region, as `Extractor.extract`
always does (from the per-token log-probabilities the search records; no extra forward pass).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import turns as turns_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from punified_jax import output_limits  # pylint: disable=g-import-not-at-top,wrong-import-position
from punified_jax import searches as generate_searches  # pylint: disable=g-import-not-at-top,wrong-import-position


# Our beam-search stopping rule (decoding.beam_search) for each compared rule.
_OURS = {"greedy": "best", "exact": "best", "early": "early"}


def pass_figures(pass_seconds: list[float], sentences: int) -> dict:
  """A side's timed passes: all of them, and the MEDIAN as pass_s / sentences_per_s (one pass
  on a shared 2-core machine moved by up to 40% between runs; every side, HF's included, is
  summarised the same way)."""
  median = float(np.median(pass_seconds))
  return {"pass_seconds": [round(s, 4) for s in pass_seconds], "pass_s": median,
          "sentences_per_s": sentences / median}


def batches_by_length(rows: list[list[int]], batch_size: int) -> tuple[list[np.ndarray], list[int]]:
  """Sorts id lists by length, cuts batches, pads each to its longest with 0.

  Returns (batches, order) where order[k] is the original index of the k-th sorted row.
  """
  order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
  batches = []
  for begin in range(0, len(order), batch_size):
    chunk = order[begin:begin + batch_size]
    width = max(len(rows[i]) for i in chunk)
    array = np.zeros((len(chunk), width), np.int32)
    for r, i in enumerate(chunk):
      array[r, :len(rows[i])] = rows[i]
    batches.append(array)
  return batches, order


def launch_hf(torch_python: str, request: dict, processes: int, workdir: str,
              turns: Optional[turns_lib.DriverTurns] = None) -> list:
  """Starts `processes` torch_worker `generate` processes over `request` (batches dealt
  round-robin, each timed section started together); with `turns` (one process) the worker
  takes turns with the driver over those pipes instead (turns.py)."""
  worker = os.path.join(common.REPO_ROOT, "benchmarks", "torch_worker.py")
  tag = "paired" if turns else str(processes)
  barrier = os.path.join(workdir, f"barrier_{tag}")
  os.makedirs(barrier, exist_ok=True)
  launched = []
  for k in range(processes):
    part = dict(request, output=os.path.join(workdir, f"hf_{tag}_{k}.json"))
    if turns:
      part.update(turns=turns.child_fds)
    elif processes > 1:
      part.update(shard=[k, processes], barrier={"dir": barrier, "parties": processes, "id": k})
    path = os.path.join(workdir, f"hf_request_{tag}_{k}.json")
    with open(path, "w") as handle:
      json.dump(part, handle)
    launched.append((subprocess.Popen([torch_python, worker, "generate", path],
                                      pass_fds=tuple(turns.child_fds.values()) if turns else ()),
                     part["output"]))
  if turns:
    turns.close_child_fds()  # the worker holds them now: its exit ends our reads (PartyGone)
  return launched


def collect_hf(launched: list, batch_rows: list[int]) -> dict:
  """The launched workers' results merged: per pass the slowest worker's seconds, outputs back
  in batch order."""
  processes = len(launched)
  results = []
  for process, output in launched:
    if process.wait() != 0:
      raise RuntimeError(f"torch_worker generate failed (exit {process.returncode}); see its output above")
    with open(output) as handle:
      results.append(json.load(handle))
  merged = dict(results[0], processes=processes, beams={})
  for key in results[0]["beams"]:
    parts = [r["beams"][key] for r in results]
    rows_of = [[batch_rows[j] for j in range(k, len(batch_rows), processes)] for k in range(processes)]
    per_batch = [[] for _ in batch_rows]  # each worker's flat outputs cut back into its batches
    for k, part in enumerate(parts):
      flat = iter(part["outputs"])
      for j, rows in zip(range(k, len(batch_rows), processes), rows_of[k]):
        per_batch[j] = [next(flat) for _ in range(rows)]
    merged["beams"][key] = {"pass_seconds": [max(s) for s in zip(*(p["pass_seconds"] for p in parts))],
                            "outputs": [o for batch in per_batch for o in batch]}
  return merged


def run_hf_split(torch_python: str, request: dict, processes: int, workdir: str,
                 batch_rows: list[int]) -> dict:
  """torch_worker's `generate` result for `request`, run by `processes` workers at once."""
  return collect_hf(launch_hf(torch_python, request, processes, workdir), batch_rows)


def paired_speedups(ours_seconds: list[float], hf_seconds: list[float]) -> dict:
  """HF's pass n over ours (pass n of each, timed one after the other) and their median."""
  ratios = [h / o for o, h in zip(ours_seconds, hf_seconds)]
  return {"paired_speedups": [round(r, 3) for r in ratios], "paired_speedup": float(np.median(ratios))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--raw_dir", required=True)
  parser.add_argument("--model_dir", required=True, help="a trained run directory of ours")
  parser.add_argument("--dataset", default="resume")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--max_sentences", type=int, default=500)
  parser.add_argument("--beams", default="1,4,10")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_decode_length", type=int, default=None, help="default: the run's target length")
  parser.add_argument("--alpha", type=float, default=0.6)
  parser.add_argument("--passes", type=int, default=1,
                      help="timed passes per side and beam (after a warm-up); the median is reported")
  parser.add_argument("--stopping", default="exact,early", help="beam-search stopping rules to compare (beams > 1)")
  parser.add_argument("--constrained", action="store_true",
                      help="also time our constrained decoding: the Extractor (each of --extractor_searches) "
                           "and decode_batch with the constrained searches 'stepwise', 'allowed' and 'fast'")
  parser.add_argument("--extractor_searches", default=generate_searches.AUTO,
                      help="comma-separated: the constrained Extractor is timed with each of these "
                           "searches (punified_jax/searches.py), e.g. auto,allowed; the row of "
                           "its default, 'auto', is `ours_constrained`, the others "
                           "`ours_constrained_<search>`")
  parser.add_argument("--chunk_length", type=int, default=8, help="the fast search's tokens per decoder call")
  parser.add_argument("--output_budget", type=float, default=output_limits.OUTPUT_BUDGET_FACTOR,
                      help="the constraint's output budget factor for the Extractor and the constrained "
                           "decode_batch searches (default: the Extractor's; 0 = none, as "
                           "before BENCHMARKS 2n)")
  parser.add_argument("--end_at_repeat", type=int, default=output_limits.END_AT_REPEAT,
                      help="closed repeats that end an output, for the Extractor and the constrained "
                           "decode_batch searches (default: the Extractor's; 0 = never, as "
                           "before BENCHMARKS 2o)")
  parser.add_argument("--constrained_only", action="store_true",
                      help="of ours, time only the constrained decode_batch rows (the three searches) and "
                           "the constrained Extractor: saves time on a shared machine")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--hf_processes", default="1",
                      help="comma-separated: HF generate also in N worker processes at once (each "
                           "with --threads threads, batches dealt round-robin, passes started "
                           "together; a pass lasts until its slowest worker ends), e.g. 1,2: on "
                           "a 2-core machine our Extractor decodes two batches at once, so HF gets "
                           "both cores too; speed-ups stay against the 1-process row, and "
                           "speedup_vs_best_hf is against the fastest HF row")
  parser.add_argument("--unpaired", action="store_true",
                      help="time HF's 1-process run after all of ours, as before paired timing (by "
                           "default its passes alternate with the Extractor's: paired_speedup)")
  parser.add_argument("--torch_python", default=os.environ.get("PUNIFIED_TORCH_PYTHON", common.TORCH_PYTHON_DEFAULT))
  parser.add_argument("--name", default="extract_throughput")
  args = parser.parse_args(argv)
  beams = [int(b) for b in args.beams.split(",")]
  rules = [r for r in args.stopping.split(",") if r]
  if not rules or set(rules) - {"exact", "early"}:
    parser.error(f"--stopping: a comma-separated subset of exact,early, got {args.stopping!r}")
  runs = [(beam, rule) for beam in beams for rule in (["greedy"] if beam == 1 else rules)]
  extractor_searches = [name for name in args.extractor_searches.split(",") if name]
  known_searches = (generate_searches.AUTO,) + generate_searches.SEARCHES
  if not extractor_searches or set(extractor_searches) - set(known_searches):
    parser.error(f"--extractor_searches: a comma-separated subset of {','.join(known_searches)}, "
                 f"got {args.extractor_searches!r}")
  if not os.path.exists(args.torch_python):
    parser.error(f"--torch_python {args.torch_python} not found (bash tools/env/torch_env.sh)")
  if not os.path.exists(os.path.join(args.model_dir, "punified_model.json")):
    parser.error(f"--model_dir {args.model_dir}: no punified_model.json (not a trained run of ours)")

  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import entity_types, metrics, model_info, parsing, prompts, run_dir  # pylint: disable=g-import-not-at-top
  from punified_jax.inference import Extractor  # pylint: disable=g-import-not-at-top
  config = common.configure_tasks(args.raw_dir, [args.dataset])
  import tasks  # pylint: disable=g-import-not-at-top
  examples = tasks.load_examples(config, args.dataset)[args.split][:args.max_sentences]
  names = entity_types.prompt_names(args.dataset)
  texts = [ex.text for ex in examples]
  gold = [prompts.gold_mentions(ex, args.dataset) for ex in examples]
  machine = common.machine_info()

  info = model_info.load_model_info(args.model_dir)
  vocabulary = info.vocabulary()
  max_decode = args.max_decode_length or (info.task_feature_lengths or {}).get("targets", 256)
  max_input = (info.task_feature_lengths or {}).get("inputs", 512)
  ids = [list(vocabulary.encode(prompts.format_input(t, names))) + [int(vocabulary.eos_id)] for t in texts]
  too_long = sum(len(row) > max_input for row in ids)
  if too_long:
    print(f"note: {too_long} sentences exceed the {max_input}-token input; the Extractor splits them into "
          "windows, HF gets them whole", flush=True)

  workdir = tempfile.mkdtemp(prefix="extract_throughput_", dir=os.environ.get("BENCH_WORKDIR"))
  hf_dir = os.path.join(workdir, "hf")
  checkpoint = run_dir.export_checkpoint(info.model_dir, hf_dir, checkpoint="auto").checkpoint

  def score(predictions) -> dict:
    result = metrics.span_macro_f1(gold, predictions, type_names=names)
    return {"macro_f1": result["macro_f1"], "micro_f1": result.get("micro_f1")}

  located = lambda pairs, text: sorted({(t, span) for t, span in pairs if span and span in text})

  # Our decoding engine alone (generate.decode_batch, what the Extractor calls), on the same
  # length-sorted batches HF gets, each padded to the Extractor's next bucket length so only a
  # few shapes compile: a token-level comparison with HF and a speed figure without the
  # Extractor's windowing, parsing and scoring.
  from punified_jax import generate  # pylint: disable=g-import-not-at-top
  from punified_jax.model import Transformer  # pylint: disable=g-import-not-at-top
  batches, order = batches_by_length(ids, args.batch_size)
  buckets = generate.input_buckets(max(max_input, max(b.shape[1] for b in batches)))
  engine_params = Extractor.load(args.model_dir, beam_size=1).params
  engine_model = Transformer(info.t5_config)
  engine_tokens = {}
  from punified_jax import constraints  # pylint: disable=g-import-not-at-top
  # The Extractor's constraint: the same output limits as the Extractor timed below.
  ner_constraint = constraints.NerCopyConstraint.from_vocabulary(
      vocabulary, budget_factor=args.output_budget, end_at_repeat=args.end_at_repeat)
  # (label, constraint, search) of the decode_batch variants timed.
  engine_variants = [] if args.constrained_only else [("ours_decode_batch", None, "stepwise")]
  if args.constrained:
    # "allowed" is decode_batch's (and the Extractor's) default; "stepwise" the search over the
    # whole vocabulary it is checked against; "fast" the chunked search (fast_decoding).
    engine_variants += [("decode_batch_constrained_stepwise", ner_constraint, "stepwise"),
                        ("decode_batch_constrained_allowed", ner_constraint, "allowed"),
                        ("decode_batch_constrained_fast", ner_constraint, "fast")]

  def engine_decode(rows_, beam, rule, constraint, search):
    return generate.decode_batch(engine_model, engine_params, jax.numpy.asarray(rows_), constraint,
                                 beam_size=beam, max_decode_length=max_decode, alpha=args.alpha,
                                 eos_id=int(vocabulary.eos_id), stopping=_OURS[rule], search=search,
                                 chunk_length=args.chunk_length)

  def engine_pass(beam: int, rule: str, constraint, search) -> tuple[list, int, int]:
    """(outputs, decoder calls, output tokens): calls made while each sentence was undecided,
    and tokens of its best output (EOS included), summed over the sentences."""
    outputs, calls, tokens_out = [], 0, 0
    for batch in batches:
      width = next(b for b in buckets if b >= batch.shape[1])
      rows_ = np.zeros((args.batch_size, width), np.int32)  # fixed batch: the last batch is padded
      rows_[:batch.shape[0], :batch.shape[1]] = batch
      decoded = engine_decode(rows_, beam, rule, constraint, search)
      tokens = np.asarray(decoded.tokens[:batch.shape[0], 0, :])
      outputs.extend(row[row > 0].tolist() for row in tokens)
      calls += int(np.asarray(decoded.decoder_calls)[:batch.shape[0]].sum())
      tokens_out += int((tokens > 0).sum())
    return outputs, calls, tokens_out

  rows = []
  ours_pairs = {}
  def engine_warmup(beam: int, rule: str, constraint, search) -> float:
    """Compiles the program of every bucket width the timed pass will use (one batch each)."""
    start = time.perf_counter()
    for width in sorted({next(b for b in buckets if b >= batch.shape[1]) for batch in batches}):
      rows_ = np.zeros((args.batch_size, width), np.int32)
      rows_[:, 0] = int(vocabulary.eos_id)
      jax.block_until_ready(engine_decode(rows_, beam, rule, constraint, search).tokens)
    return time.perf_counter() - start


  constrained_outputs = {}
  for beam, rule in runs:
    for label, constraint, search in engine_variants:
      seconds = [engine_warmup(beam, rule, constraint, search)]
      for _ in range(args.passes):
        start = time.perf_counter()
        sorted_outputs, calls, tokens_out = engine_pass(beam, rule, constraint, search)
        seconds.append(time.perf_counter() - start)
      outputs = [None] * len(texts)
      for k, output in enumerate(sorted_outputs):
        outputs[order[k]] = output
      if constraint is None:
        engine_tokens[beam, rule] = outputs
      else:
        constrained_outputs[beam, rule, search] = outputs
      pairs = [located(parsing.parse_generation(vocabulary.decode(o), names), t) for o, t in zip(outputs, texts)]
      row = {"side": label, "beam": beam, "stopping": rule, "sentences": len(texts), "warmup_s": seconds[0],
             **pass_figures(seconds[1:], len(texts)), **score(pairs),
             "decoder_calls": calls, "output_tokens": tokens_out, "calls_per_token": calls / max(tokens_out, 1)}
      if constraint is not None and search != "stepwise":
        stepwise = constrained_outputs[beam, rule, "stepwise"]
        row["same_ids_as_stepwise"] = float(np.mean([a == b for a, b in zip(outputs, stepwise)]))
      rows.append(row)
      print(rows[-1], flush=True)

  def extractor_calls_per_token(beam: int, rule: str, constrained: bool, search: str) -> float:
    """Decoder calls per output token of the search the Extractor runs (`search` when
    constrained, the plain step-by-step search otherwise), counted by decode_batch on the same
    sentences: from the timed row of that search, or from one untimed pass."""
    search = generate_searches.resolve(search, beam) if constrained else "stepwise"
    label = f"decode_batch_constrained_{search}" if constrained else "ours_decode_batch"
    row = next((r for r in rows if (r["side"], r["beam"], r["stopping"]) == (label, beam, rule)), None)
    if row is not None:
      return row["calls_per_token"]
    _, calls, tokens_out = engine_pass(beam, rule, ner_constraint if constrained else None, search)
    return calls / max(tokens_out, 1)

  npz = os.path.join(workdir, "inputs.npz")
  np.savez(npz, **{f"input_ids_{i}": b for i, b in enumerate(batches)})
  request = {"model_dir": hf_dir, "inputs": npz, "beams": beams, "stopping": rules, "max_new_tokens": max_decode,
             "passes": args.passes, "warmup_batches": [0, -1], "threads": args.threads,
             "output": os.path.join(workdir, "hf.json")}
  with open(os.path.join(workdir, "hf_request.json"), "w") as handle:
    json.dump(request, handle)
  batch_rows = [len(b) for b in batches]

  # Paired timing (the default): the 1-process HF worker starts now and takes turns with the
  # Extractor: its warm-up after ours, its pass n right after our pass n (every variant's), so
  # each speed-up has a pair of passes timed next to each other (paired_speedup).
  turns = None if args.unpaired else turns_lib.DriverTurns()
  paired = launch_hf(args.torch_python, request, 1, workdir, turns) if turns else None
  take_turn = turns.turn if turns else lambda name: None
  try:
    if turns:
      turns.expect("loaded")
    # (label, constrained, search): the constrained Extractor once per --extractor_searches.
    variants = ([] if args.constrained_only else [("ours", False, generate.DEFAULT_SEARCH)]) + (
        [("ours_constrained" if search == generate_searches.AUTO else f"ours_constrained_{search}",
          True, search) for search in extractor_searches] if args.constrained else [])
    for beam, rule in runs:
      extractors, seconds = {}, {}
      for label, constrained, search in variants:
        extractors[label] = Extractor.load(args.model_dir, beam_size=beam, constrained=constrained,
                                           batch_size=args.batch_size, max_decode_length=max_decode,
                                           alpha=args.alpha, stopping=_OURS[rule],
                                           output_budget=args.output_budget, end_at_repeat=args.end_at_repeat,
                                           search=search)
        start = time.perf_counter()
        extractors[label].extract(texts, dataset=args.dataset)  # compiles every shape the passes use
        seconds[label] = [time.perf_counter() - start]
      take_turn(f"{beam}_{rule}_warmup")
      found = {}
      for number in range(args.passes):
        for label, _, _ in variants:
          start = time.perf_counter()
          found[label] = extractors[label].extract(texts, dataset=args.dataset)
          seconds[label].append(time.perf_counter() - start)
        take_turn(f"{beam}_{rule}_{number}")
      default_pairs = None
      for label, constrained, search in variants:
        pairs = [sorted({(e["type"], e["text"]) for e in entities}) for entities in found[label]]
        if not constrained:
          ours_pairs[beam, rule] = pairs
        row = {"side": label, "beam": beam, "stopping": rule, "sentences": len(texts),
               "warmup_s": seconds[label][0], **pass_figures(seconds[label][1:], len(texts)), **score(pairs),
               "calls_per_token": extractor_calls_per_token(beam, rule, constrained, search)}
        if constrained and search == extractor_searches[0]:
          default_pairs = pairs
        elif constrained:  # the share of sentences with the first search's entities
          row["same_pairs_as_first_search"] = float(np.mean([p == q for p, q in zip(pairs, default_pairs)]))
        rows.append(row)
        print(rows[-1], flush=True)

    hf_runs = {1: collect_hf(paired, batch_rows)} if paired else {}
  except BaseException:  # the paired worker would wait for its next turn forever
    for process, _ in paired or []:
      process.kill()
    raise
  for processes in sorted({int(p) for p in args.hf_processes.split(",")} | {1}):
    if processes not in hf_runs:
      hf_runs[processes] = run_hf_split(args.torch_python, request, processes, workdir, batch_rows)
  hf = hf_runs[1]
  for (beam, rule), processes in [(run, p) for p in sorted(hf_runs) if p > 1 for run in runs]:
    seconds = hf_runs[processes]["beams"][f"{beam}_{rule}"]["pass_seconds"]
    rows.append({"side": f"hf_generate_{processes}proc", "beam": beam, "stopping": rule,
                 "sentences": len(texts), "warmup_s": seconds[0],
                 **pass_figures(seconds[1:], len(texts))})
  for beam, rule in runs:
    result = hf["beams"][f"{beam}_{rule}"]
    outputs = [None] * len(texts)
    for k, output in enumerate(result["outputs"]):
      outputs[order[k]] = output
    # Spans that do not occur in the sentence are dropped, as the Extractor drops them.
    pairs = [located(parsing.parse_generation(vocabulary.decode(o), names), t) for o, t in zip(outputs, texts)]
    same = (float(np.mean([p == q for p, q in zip(pairs, ours_pairs[beam, rule])]))
            if (beam, rule) in ours_pairs else None)
    # Compared as decoded text: HF's beam search may end a finished hypothesis without the EOS id
    # that ours keeps (greedy outputs match id for id).
    same_text = (float(np.mean([vocabulary.decode(o) == vocabulary.decode(e)
                                for o, e in zip(outputs, engine_tokens[beam, rule])]))
                 if (beam, rule) in engine_tokens else None)
    seconds = result["pass_seconds"]
    rows.append({"side": "hf_generate", "beam": beam, "stopping": rule, "sentences": len(texts),
                 "warmup_s": seconds[0], **pass_figures(seconds[1:], len(texts)),
                 **score(pairs), "same_pairs_as_extractor": same, "same_text_as_decode_batch": same_text})
    print(rows[-1], flush=True)

  for row in rows:
    hf_row = next(r for r in rows if r["side"] == "hf_generate" and (r["beam"], r["stopping"]) == (
        row["beam"], row["stopping"]))
    row["speedup_vs_hf"] = row["sentences_per_s"] / hf_row["sentences_per_s"]
    best_hf = max(r["sentences_per_s"] for r in rows if r["side"].startswith("hf_generate")
                  and (r["beam"], r["stopping"]) == (row["beam"], row["stopping"]))
    row["speedup_vs_best_hf"] = row["sentences_per_s"] / best_hf
    if paired and row["side"] in {label for label, _, _ in variants}:  # the Extractor's rows took turns with HF's
      row.update(paired_speedups(row["pass_seconds"], hf_row["pass_seconds"]))
  rows.sort(key=lambda r: (r["beam"], r["stopping"], r["side"]))
  common.print_table(rows, ["beam", "stopping", "side", "sentences_per_s", "speedup_vs_hf", "paired_speedup",
                            "speedup_vs_best_hf", "warmup_s", "pass_s",
                            "macro_f1", "micro_f1", "calls_per_token", "same_ids_as_stepwise",
                            "same_pairs_as_extractor", "same_text_as_decode_batch", "same_pairs_as_first_search"],
                     title=f"extraction over {len(texts)} {args.dataset} {args.split} sentences")
  payload = {"command": common.command_line(), "machine": machine, "versions": common.jax_versions(),
             "torch": hf.get("torch"), "model": {"dir": os.path.abspath(args.model_dir), "checkpoint": checkpoint,
                                                 "t5_config": info.t5_config.__dict__ if info.t5_config else None},
             "dataset": args.dataset, "split": args.split, "max_decode_length": max_decode,
             # No sentence or output text: the datasets' sentences stay out of the repository.
             "settings": vars(args), "results": rows}
  print("wrote", common.write_json(args.name, payload))
  return 0


if __name__ == "__main__":
  sys.exit(main())
