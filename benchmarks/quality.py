"""Quality on real data (issue 4, item 6): the paper's comparisons at small scale, on CPU.

    .venv/bin/python benchmarks/quality.py --data_dir ../shared/data/raw \
        --work_dir /tmp/quality [--size mini --single_steps 750 --adapt_steps 1000 ...]

On the dev (validation) splits of --datasets (default Resume, CLUENER, Ecommerce, OntoNotes 4.0)
it compares
  (a) the joint model against one model per dataset (the paper's Table 1 at small scale),
  (b) joint fine-tuning with and without the language-model adaptation stage (the pilot study;
      --noadapt_singles adds the same comparison on single-dataset models, 4x cheaper),
  (c) unconstrained against constrained decoding of the joint model: predicted types that were
      never requested, predicted spans that are not in the input, and the F1 of each; both as
      the evaluator scores the raw generations and as the Extractor (the product API) returns
      entities with offsets.

Every training and evaluation is a public command in a subprocess, printed and stored with its
result, so each number can be reproduced by hand:
  vocab                     python -m punified_jax vocab (one char SentencePiece, shared by all)
  adapt                     python -m punified_jax.train --gin_file=gin/runs/adapt.gin
  joint_adapt, joint_noadapt python -m punified_jax.train --gin_file=gin/runs/finetune_joint.gin
                            (from the adapted parameters / from scratch)
  single_<ds>               python -m punified_jax.train --gin_file=gin/runs/finetune_single.gin
                            (from the adapted parameters, like the paper's baselines)
  eval_<run>_{unconstrained,constrained}
                            python -m punified_jax.eval --gin_file=gin/runs/eval.gin
  extract_joint_adapt_{unconstrained,constrained}
                            this script's --extract_worker mode: inference.Extractor over the
                            same dev sentences, its stats counters and offset-exact F1.

Budget policy ("equal exposure"): every fine-tuning run uses the same optimizer, batch, lengths
and learning-rate schedule; a single-dataset model trains --single_steps steps and the joint
models train --single_steps x (number of datasets) steps, so with the uniform mixture each
dataset contributes as many training batches to the joint model as to its own single model, and
the joint model costs as much compute as all single models together.

Machine sharing: before starting any subprocess the script waits while --lock_file exists
(polling every --lock_poll seconds; --no_wait_for_lock disables this). It never touches the lock.

Resumable: a finished stage leaves `<work_dir>/stages/<stage>.json` (command, seconds, exit
status) and is skipped next time; an interrupted training resumes from its latest checkpoint
(the trainer's own resume). Results: `<work_dir>/quality.json` and --results_json
(default benchmarks/results/quality.json); tables are printed at the end (--report_only prints
them from what is finished, without running anything).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as `python benchmarks/quality.py`
  sys.path.insert(0, REPO)

from punified_jax.tasks import names as task_names  # pylint: disable=wrong-import-position

DEFAULT_DATASETS = ("resume", "cluener", "ecommerce", "ontonotes4")
DEFAULT_LOCK = "/work/locks/bench.lock"
DEFAULT_RESULTS = os.path.join(REPO, "benchmarks", "results", "quality.json")
DECODING_MODES = ("unconstrained", "constrained")


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _positive(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def _non_negative(text: str) -> int:
  value = int(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
  return value


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="benchmarks/quality.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", help="root of the real downloads (release formats), e.g. "
                      "../shared/data/raw; read only, never copied")
  parser.add_argument("--data_format", help="read every dataset in this format (e.g. "
                      "punified_json with --data_dir ../shared/data/punifiedner_json)")
  parser.add_argument("--work_dir", required=True, help="runs, logs and stage markers go here")
  parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                      help="comma-separated datasets of the joint model (default: %(default)s)")
  parser.add_argument("--size", default="mini", help="gin/models/<size>.gin (default: mini)")
  parser.add_argument("--adapt_steps", type=_positive, default=1000)
  parser.add_argument("--single_steps", type=_positive, default=750,
                      help="training steps of each single-dataset model")
  parser.add_argument("--joint_steps", type=_positive,
                      help="training steps of each joint model (default: single_steps x datasets)")
  parser.add_argument("--batch_size", type=_positive, default=16)
  parser.add_argument("--adapt_length", type=_positive, default=128,
                      help="inputs/targets tokens of the prefix-LM stage")
  parser.add_argument("--finetune_length", type=_positive, default=256,
                      help="inputs/targets tokens of fine-tuning (packed)")
  parser.add_argument("--learning_rate", type=float, default=2e-3)
  parser.add_argument("--warmup_steps", type=_non_negative, default=100)
  parser.add_argument("--checkpoint_period", type=_positive, default=500,
                      help="how much an interrupted training can lose")
  parser.add_argument("--eval_max_examples", type=_positive, default=300,
                      help="the first N dev sentences of each dataset (deterministic)")
  parser.add_argument("--beam_size", type=_positive, default=4)
  parser.add_argument("--eval_batch_size", type=_positive, default=32)
  parser.add_argument("--noadapt_singles", default="",
                      help="comma-separated datasets whose single-dataset model is also trained "
                      "without adaptation: comparison (b) on single models, much cheaper than "
                      "the joint model without adaptation")
  parser.add_argument("--no_extract", action="store_true",
                      help="skip the Extractor stages of comparison (c)")
  parser.add_argument("--only", help="comma-separated stage names to run (default: all)")
  parser.add_argument("--lock_file", default=os.environ.get("QUALITY_LOCK_FILE", DEFAULT_LOCK),
                      help="wait while this file exists (default: %(default)s)")
  parser.add_argument("--wait_for_lock", dest="wait_for_lock", action="store_true", default=True,
                      help="wait for --lock_file before every stage (default)")
  parser.add_argument("--no_wait_for_lock", dest="wait_for_lock", action="store_false")
  parser.add_argument("--lock_poll", type=_positive, default=60, help="seconds between checks")
  parser.add_argument("--results_json", default=DEFAULT_RESULTS)
  parser.add_argument("--report_only", action="store_true",
                      help="print tables from finished stages; run nothing")
  parser.add_argument("--dry_run", action="store_true", help="print the stage commands only")
  # Internal: the Extractor stage runs in its own process (like every other stage).
  parser.add_argument("--extract_worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--model_dir", help=argparse.SUPPRESS)
  parser.add_argument("--constrained", choices=("true", "false"), help=argparse.SUPPRESS)
  parser.add_argument("--output", help=argparse.SUPPRESS)
  return parser


def parse_datasets(spec: str) -> tuple[str, ...]:
  """'resume, cluener' -> ('resume', 'cluener'); names checked against the registry."""
  from punified_jax import entity_types  # pylint: disable=g-import-not-at-top
  names = tuple(dict.fromkeys(d.strip() for d in spec.split(",") if d.strip()))
  if not names:
    raise ValueError("--datasets is empty")
  for name in names:
    if name not in entity_types.DATASETS:
      raise ValueError(f"--datasets: unknown dataset {name!r}; known: "
                       f"{', '.join(entity_types.DATASETS)}")
  return names


# ------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------


NOADAPT_SUFFIX = "_noadapt"


def single_run_dataset(run: str) -> Optional[str]:
  """'single_resume' and 'single_resume_noadapt' -> 'resume'; joint runs -> None."""
  if not run.startswith("single_"):
    return None
  return run[len("single_"):].removesuffix(NOADAPT_SUFFIX)


class Plan:
  """Every stage's command and where its outputs go, derived from the arguments only."""

  def __init__(self, args: argparse.Namespace):
    self.args = args
    self.work_dir = os.path.abspath(args.work_dir)
    self.datasets = parse_datasets(args.datasets)
    self.noadapt_singles = (parse_datasets(args.noadapt_singles)
                            if args.noadapt_singles.strip() else ())
    missing = sorted(set(self.noadapt_singles) - set(self.datasets))
    if missing:
      raise ValueError(f"--noadapt_singles: {', '.join(missing)} not in --datasets")
    self.joint_steps = args.joint_steps or args.single_steps * len(self.datasets)
    self.vocab_path = os.path.join(self.work_dir, "vocab.model")
    self.python = sys.executable
    self.env = dict(os.environ)
    self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    self.env["PUNIFIED_DATASETS"] = ",".join(self.datasets)
    self.env["PUNIFIED_VOCAB"] = self.vocab_path
    for key in ("PUNIFIED_RAW_DIR", "PUNIFIED_FORMAT", "PUNIFIED_TFDS_DIR"):
      self.env.pop(key, None)  # only what the arguments say
    if args.data_dir:
      self.env["PUNIFIED_RAW_DIR"] = os.path.abspath(args.data_dir)
    if args.data_format:
      self.env["PUNIFIED_FORMAT"] = args.data_format

  def run_dir(self, run: str) -> str:
    return os.path.join(self.work_dir, "runs", run)

  def eval_dir(self, run: str, mode: str) -> str:
    return os.path.join(self.work_dir, "eval", f"{run}_{mode}")

  def extract_json(self, run: str, mode: str) -> str:
    return os.path.join(self.work_dir, "extract", f"{run}_{mode}.json")

  def model_runs(self) -> list[str]:
    return (["joint_adapt", "joint_noadapt"] + [f"single_{ds}" for ds in self.datasets]
            + [f"single_{ds}{NOADAPT_SUFFIX}" for ds in self.noadapt_singles])

  def _train(self, run_file: str, run: str, steps: int, overrides: dict) -> list[str]:
    a = self.args
    command = [self.python, "-m", "punified_jax.train", f"--gin_file={run_file}",
               f"--gin_file=gin/models/{a.size}.gin", f"--gin.MODEL_DIR={self.run_dir(run)}",
               f"--gin.TRAIN_STEPS={steps}", f"--gin.BATCH_SIZE={a.batch_size}",
               f"--gin.LEARNING_RATE={a.learning_rate}", f"--gin.WARMUP_STEPS={a.warmup_steps}",
               f"--gin.CHECKPOINT_PERIOD={a.checkpoint_period}", "--gin.LOG_EVERY=50"]
    command += [f"--gin.{k}={v}" for k, v in overrides.items()]
    return command

  def _finetune(self, run_file: str, run: str, steps: int, initial: Optional[str],
                extra: Optional[dict] = None) -> list[str]:
    length = self.args.finetune_length
    overrides = dict(extra or {})
    overrides["TASK_FEATURE_LENGTHS"] = '{"inputs": %d, "targets": %d}' % (length, length)
    # Evaluation is a separate stage (the same command for every model and decoding mode).
    overrides["EVAL_PERIOD"] = "None"
    if initial:
      overrides["INITIAL_CHECKPOINT_PATH"] = initial
    return self._train(run_file, run, steps, overrides)

  def _eval(self, run: str, mode: str) -> dict:
    a = self.args
    dataset = single_run_dataset(run)
    mixture = task_names.task_name(dataset) if dataset else task_names.JOINT_MIXTURE
    return {
        "name": f"eval_{run}_{mode}", "kind": "eval", "run": run, "mode": mode,
        "command": [self.python, "-m", "punified_jax.eval", "--gin_file=gin/runs/eval.gin",
                    f"--gin_file=gin/models/{a.size}.gin",
                    f"--gin.CHECKPOINT_PATH={self.run_dir(run)}",
                    f"--gin.EVAL_OUTPUT_DIR={self.eval_dir(run, mode)}",
                    f"--gin.MIXTURE_OR_TASK_NAME={mixture}",
                    f"--gin.EVAL_MAX_EXAMPLES={a.eval_max_examples}",
                    f"--gin.EVAL_BEAM_SIZE={a.beam_size}",
                    f"--gin.EVAL_BATCH_SIZE={a.eval_batch_size}",
                    f"--gin.EVAL_CONSTRAINED={mode == 'constrained'}"]}

  def _extract(self, run: str, mode: str) -> dict:
    a = self.args
    return {
        "name": f"extract_{run}_{mode}", "kind": "extract", "run": run, "mode": mode,
        "command": [self.python, os.path.join("benchmarks", "quality.py"), "--extract_worker",
                    "--work_dir", self.work_dir, "--datasets", ",".join(self.datasets),
                    "--model_dir", self.run_dir(run),
                    "--constrained", "true" if mode == "constrained" else "false",
                    "--eval_max_examples", str(a.eval_max_examples),
                    "--beam_size", str(a.beam_size), "--eval_batch_size", str(a.eval_batch_size),
                    "--output", self.extract_json(run, mode)]}

  def stages(self) -> list[dict]:
    """[{"name", "kind", "command", ...}] in execution order.

    Ordered by priority, each training followed by its evaluation, so that an interrupted or
    budget-capped run has complete comparisons first: the joint model and all of (c) on it,
    then (a) (single-dataset models), then (b) (joint without adaptation), and last the
    constrained evaluations of the other models (extra rows of (c)).
    """
    a = self.args
    stages = [{
        "name": "vocab", "kind": "vocab",
        "command": [self.python, "-m", "punified_jax", "vocab", "--datasets",
                    ",".join(self.datasets), "--output", self.vocab_path, "--skip_missing"]
                   + (["--raw_dir", os.path.abspath(a.data_dir)] if a.data_dir else [])
                   + (["--format", a.data_format] if a.data_format else []),
    }]
    length = a.adapt_length
    stages.append({"name": "adapt", "kind": "train", "run": "adapt", "command": self._train(
        "gin/runs/adapt.gin", "adapt", a.adapt_steps,
        {"TASK_FEATURE_LENGTHS": '{"inputs": %d, "targets": %d}' % (length, length)})})
    adapted = self.run_dir("adapt")
    stages.append({"name": "joint_adapt", "kind": "train", "run": "joint_adapt",
                   "command": self._finetune("gin/runs/finetune_joint.gin", "joint_adapt",
                                             self.joint_steps, adapted)})
    stages += [self._eval("joint_adapt", mode) for mode in DECODING_MODES]
    if not a.no_extract:
      stages += [self._extract("joint_adapt", mode) for mode in DECODING_MODES]
    for ds in self.datasets:
      stages.append({"name": f"single_{ds}", "kind": "train", "run": f"single_{ds}",
                     "command": self._finetune(
                         "gin/runs/finetune_single.gin", f"single_{ds}", a.single_steps, adapted,
                         {"MIXTURE_OR_TASK_NAME": task_names.task_name(ds)})})
      stages.append(self._eval(f"single_{ds}", "unconstrained"))
    for ds in self.noadapt_singles:
      run = f"single_{ds}{NOADAPT_SUFFIX}"
      stages.append({"name": run, "kind": "train", "run": run, "command": self._finetune(
          "gin/runs/finetune_single.gin", run, a.single_steps, None,
          {"MIXTURE_OR_TASK_NAME": task_names.task_name(ds)})})
      stages.append(self._eval(run, "unconstrained"))
    stages.append({"name": "joint_noadapt", "kind": "train", "run": "joint_noadapt",
                   "command": self._finetune("gin/runs/finetune_joint.gin", "joint_noadapt",
                                             self.joint_steps, None)})
    stages.append(self._eval("joint_noadapt", "unconstrained"))
    stages.append(self._eval("joint_noadapt", "constrained"))
    stages += [self._eval(f"single_{ds}", "constrained") for ds in self.datasets]
    return stages

  def env_for_display(self) -> dict:
    keys = ("PUNIFIED_RAW_DIR", "PUNIFIED_FORMAT", "PUNIFIED_DATASETS", "PUNIFIED_VOCAB")
    return {k: self.env[k] for k in keys if k in self.env}


def shell_line(command: Sequence[str], env: dict) -> str:
  """The command as one copy-pasteable shell line run from the repository root (the
  repository's own interpreter is written `.venv/bin/python`)."""
  prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
  words = list(command)
  if words and os.path.abspath(words[0]).startswith(REPO + os.sep):
    words[0] = os.path.relpath(words[0], REPO)
  return (prefix + " " if prefix else "") + " ".join(shlex.quote(c) for c in words)


def wait_for_lock(path: str, poll_seconds: int, sleep=time.sleep) -> float:
  """Blocks while `path` exists (another job needs a quiet machine); returns seconds waited."""
  waited = 0.0
  announced = False
  while os.path.exists(path):
    if not announced:
      print(f"[{_now()}] {path} exists: waiting (checking every {poll_seconds}s)", flush=True)
      announced = True
    sleep(poll_seconds)
    waited += poll_seconds
  if announced:
    print(f"[{_now()}] {path} gone after ~{waited:.0f}s; continuing", flush=True)
  return waited


def _now() -> str:
  return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def marker_path(work_dir: str, stage: str) -> str:
  return os.path.join(work_dir, "stages", f"{stage}.json")


def read_marker(work_dir: str, stage: str) -> Optional[dict]:
  path = marker_path(work_dir, stage)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_json(path: str, value: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, ensure_ascii=False, indent=1, allow_nan=False)
    f.write("\n")
  os.replace(path + ".tmp", path)


def _run_forwarding_signals(command: Sequence[str], env: dict, log) -> int:
  """Runs `command` from the repository root, output to `log`; returns its exit status.

  SIGTERM/SIGINT sent to this script are passed on to the stage (the trainer then saves a
  checkpoint and exits, so the next run resumes it) before this script stops.
  """
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  received: list[int] = []

  def forward(signum, frame):
    del frame
    received.append(signum)
    if process.poll() is None:
      process.send_signal(signum)

  previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    returncode = process.wait()
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  if received:
    raise SystemExit(f"stopped by signal {received[0]} (the stage exited with {returncode}); "
                     "run again to resume")
  return returncode


def run_stage(plan: Plan, stage: dict) -> dict:
  """Runs one stage unless its marker exists; returns the marker."""
  args = plan.args
  done = read_marker(plan.work_dir, stage["name"])
  if done is not None:
    print(f"[{_now()}] {stage['name']}: done earlier ({done['seconds']:.0f}s), skipped",
          flush=True)
    return done
  line = shell_line(stage["command"], plan.env_for_display())
  print(f"\n[{_now()}] === {stage['name']}\n$ {line}", flush=True)
  if args.dry_run:
    return {}
  waited = wait_for_lock(args.lock_file, args.lock_poll) if args.wait_for_lock else 0.0
  log_path = os.path.join(plan.work_dir, "logs", f"{stage['name']}.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  start = time.time()
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"\n# {_now()}\n# {line}\n")
    log.flush()
    returncode = _run_forwarding_signals(stage["command"], plan.env, log)
  seconds = time.time() - start
  if returncode != 0:
    raise RuntimeError(f"stage {stage['name']} failed (exit {returncode}) after "
                       f"{seconds:.0f}s; see {log_path}")
  marker = {"stage": stage["name"], "command": line, "seconds": seconds,
            "lock_wait_seconds": waited, "finished": _now(), "log": log_path}
  _write_json(marker_path(plan.work_dir, stage["name"]), marker)
  print(f"[{_now()}] {stage['name']} done in {seconds:.0f}s", flush=True)
  return marker


# ------------------------------------------------------------------------------------------
# The Extractor stage (runs in its own process)
# ------------------------------------------------------------------------------------------


def score_offsets(gold: Sequence[Sequence[tuple]], predicted: Sequence[Sequence[tuple]],
                  type_names: Sequence[str], merge: Optional[dict] = None) -> dict:
  """Offset-exact scores: a prediction (type, start, end) must equal a gold one of its sentence.

  `gold`, `predicted`: per sentence, iterables of (type, start, end). `merge` renames types on
  both sides before matching (the paper's OntoNotes protocol). Macro F1 is the mean over
  `type_names` (merged) of per-type F1, leaving out types with neither gold nor predictions
  (the evaluator's convention); micro scores count everything. Percentages.
  """
  if len(gold) != len(predicted):
    raise ValueError(f"gold has {len(gold)} sentences, predicted {len(predicted)}")
  merge = merge or {}
  names = tuple(dict.fromkeys(merge.get(t, t) for t in type_names))
  tp, n_gold, n_pred = collections.Counter(), collections.Counter(), collections.Counter()
  for gold_items, pred_items in zip(gold, predicted):
    gold_set = {(merge.get(t, t), s, e) for t, s, e in gold_items}
    pred_set = {(merge.get(t, t), s, e) for t, s, e in pred_items}
    n_gold.update(k[0] for k in gold_set)
    n_pred.update(k[0] for k in pred_set)
    tp.update(k[0] for k in gold_set & pred_set)

  def f1(t_p: int, pred: int, gold_count: int) -> float:
    precision = t_p / pred if pred else 0.0
    recall = t_p / gold_count if gold_count else 0.0
    return 200 * precision * recall / (precision + recall) if precision + recall else 0.0

  per_type = {t: f1(tp[t], n_pred[t], n_gold[t]) for t in names if n_gold[t] or n_pred[t]}
  total_tp, total_pred, total_gold = sum(tp.values()), sum(n_pred.values()), sum(n_gold.values())
  return {
      "macro_f1": sum(per_type.values()) / len(per_type) if per_type else None,
      "micro_f1": f1(total_tp, total_pred, total_gold),
      "per_type_f1": per_type,
      "num_gold": total_gold, "num_predicted": total_pred, "true_positives": total_tp,
  }


def extract_worker(args: argparse.Namespace) -> int:
  """Extractor over the first N dev sentences of each dataset; writes stats and scores."""
  import tasks  # pylint: disable=g-import-not-at-top
  from punified_jax import entity_types  # pylint: disable=g-import-not-at-top
  from punified_jax import inference  # pylint: disable=g-import-not-at-top

  datasets = parse_datasets(args.datasets)
  config = tasks.DataConfig.from_env()
  constrained = args.constrained == "true"
  extractor = inference.Extractor.load(args.model_dir, beam_size=args.beam_size,
                                       constrained=constrained, batch_size=args.eval_batch_size)
  result = {"model_dir": args.model_dir, "checkpoint": extractor.checkpoint_path,
            "constrained": constrained, "beam_size": args.beam_size,
            "max_examples": args.eval_max_examples, "datasets": {}}
  for ds in datasets:
    examples = tasks.load_examples(config, ds)["validation"][:args.eval_max_examples]
    types = entity_types.prompt_names(ds)
    extractor.reset_stats()
    start = time.time()
    entities = extractor.extract([ex.text for ex in examples], types)
    seconds = time.time() - start
    mismatched = sum(e["text"] != ex.text[e["start"]:e["end"]]
                     for ex, found in zip(examples, entities) for e in found)
    unrequested = sum(e["type"] not in types for found in entities for e in found)
    gold = [[(entity_types.prompt_name(ds, s.type), s.start, s.end) for s in ex.spans]
            for ex in examples]
    predicted = [[(e["type"], e["start"], e["end"]) for e in found] for found in entities]
    merge = dict(entity_types.ONTONOTES_EVAL_MERGE) if ds == "ontonotes4" else None
    result["datasets"][ds] = {
        "sentences": len(examples), "seconds": seconds, "stats": extractor.stats,
        "returned_entities": sum(len(found) for found in entities),
        "returned_offset_mismatches": mismatched, "returned_unrequested_types": unrequested,
        "scores": score_offsets(gold, predicted, types, merge)}
    print(f"{ds}: {len(examples)} sentences in {seconds:.0f}s, stats {extractor.stats}",
          flush=True)
  _write_json(args.output, result)
  return 0


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------


def _eval_json(plan: Plan, run: str, mode: str) -> Optional[dict]:
  directory = plan.eval_dir(run, mode)
  if not os.path.isdir(directory):
    return None
  reports = sorted((f for f in os.listdir(directory) if f.startswith("step_")
                    and f.endswith(".json")), key=lambda f: int(f[5:-5]))
  if not reports:
    return None
  with open(os.path.join(directory, reports[-1]), encoding="utf-8") as f:
    return json.load(f)


_KEPT_METRICS = ("macro_f1", "micro_f1", "precision", "recall", "offset_macro_f1",
                 "num_sentences", "num_gold", "num_predicted", "true_positives",
                 "unrequested_type_predictions", "span_not_in_input", "truncated_generations",
                 "unparsed_generations")


def _steps_per_second(plan: Plan, run: str) -> Optional[float]:
  path = os.path.join(plan.run_dir(run), "metrics.jsonl")
  if not os.path.exists(path):
    return None
  rates = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      if record.get("train/steps_per_second"):
        rates.append(record["train/steps_per_second"])
  return sum(rates) / len(rates) if rates else None


def collect(plan: Plan) -> dict:
  """Everything measured so far, as one JSON-ready dict."""
  a = plan.args
  evals: dict[str, dict] = {}
  for run in plan.model_runs():
    for mode in DECODING_MODES:
      report = _eval_json(plan, run, mode)
      if report is None:
        continue
      evals.setdefault(run, {})[mode] = {
          "step": report.get("step"), "beam_size": report.get("beam_size"),
          "datasets": {task_names.dataset_of_task(task): {k: values.get(k) for k in _KEPT_METRICS}
                       for task, values in report["tasks"].items()}}
  extracts = {}
  for mode in DECODING_MODES:
    path = plan.extract_json("joint_adapt", mode)
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        extracts[mode] = json.load(f)
  stages = {}
  for stage in plan.stages():
    marker = read_marker(plan.work_dir, stage["name"])
    stages[stage["name"]] = {
        "command": shell_line(stage["command"], plan.env_for_display()),
        "seconds": marker["seconds"] if marker else None,
        "finished": marker["finished"] if marker else None}
    if stage["kind"] == "train":
      stages[stage["name"]]["steps_per_second"] = _steps_per_second(plan, stage["run"])
  params = None
  info_path = os.path.join(plan.run_dir("joint_adapt"), "punified_model.json")
  if os.path.exists(info_path):
    params = _parameter_count(info_path)
  return {
      "date": datetime.date.today().isoformat(),
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "processor": platform.processor() or platform.machine()},
      "config": {"datasets": list(plan.datasets), "size": a.size, "parameters": params,
                 "adapt_steps": a.adapt_steps, "single_steps": a.single_steps,
                 "joint_steps": plan.joint_steps, "batch_size": a.batch_size,
                 "noadapt_singles": list(plan.noadapt_singles),
                 "adapt_length": a.adapt_length, "finetune_length": a.finetune_length,
                 "learning_rate": a.learning_rate, "warmup_steps": a.warmup_steps,
                 "eval_max_examples": a.eval_max_examples, "beam_size": a.beam_size,
                 "data_dir": a.data_dir, "data_format": a.data_format},
      "environment": plan.env_for_display(),
      "stages": stages,
      "total_stage_seconds": sum(s["seconds"] or 0 for s in stages.values()),
      "evaluations": evals,
      "extractor": extracts,
  }


def _parameter_count(info_path: str) -> Optional[int]:
  """Parameters of the model a run describes (from its recorded T5 config)."""
  try:
    from punified_jax import model as model_lib  # pylint: disable=g-import-not-at-top
    from punified_jax import model_info  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    info = model_info.load_model_info(os.path.dirname(info_path))
    shapes = model_lib.param_shapes(info.t5_config)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(shapes)))
  except Exception as error:  # pylint: disable=broad-except
    print(f"warning: could not count parameters from {info_path}: {error}", file=sys.stderr)
    return None


def _fmt(value: Any, digits: int = 1) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "—"
  if isinstance(value, float) and value.is_integer() and digits == 0:
    return str(int(value))
  return f"{value:.{digits}f}"


def _f1(results: dict, run: str, mode: str, ds: str, key: str = "macro_f1") -> Optional[float]:
  return results["evaluations"].get(run, {}).get(mode, {}).get("datasets", {}).get(ds, {}).get(key)


def _paired_mean_row(label: str, left: list, right: list) -> str:
  """Means over the datasets where both sides were measured (a partial run stays comparable)."""
  pairs = [(a, b) for a, b in zip(left, right) if a is not None and b is not None]
  if not pairs:
    return f"| {label} | — | — | — |"
  m0 = sum(a for a, _ in pairs) / len(pairs)
  m1 = sum(b for _, b in pairs) / len(pairs)
  suffix = "" if len(pairs) == len(left) else f" ({len(pairs)} of {len(left)} datasets)"
  return f"| {label}{suffix} | {_fmt(m0)} | {_fmt(m1)} | {_fmt(m1 - m0)} |"


def format_tables(results: dict) -> str:
  """Markdown tables of comparisons (a), (b) and (c)."""
  datasets = results["config"]["datasets"]
  lines = []
  mode = "unconstrained"
  lines.append(f"(a) joint vs single-dataset models: dev macro F1, {mode} decoding "
               "(the paper's protocol)\n")
  lines.append("| dataset | single | joint (adapted) | joint − single |")
  lines.append("|---|---|---|---|")
  singles, joints = [], []
  for ds in datasets:
    single, joint = _f1(results, f"single_{ds}", mode, ds), _f1(results, "joint_adapt", mode, ds)
    singles.append(single)
    joints.append(joint)
    delta = joint - single if single is not None and joint is not None else None
    lines.append(f"| {ds} | {_fmt(single)} | {_fmt(joint)} | {_fmt(delta)} |")
  lines.append(_paired_mean_row("mean", singles, joints))

  lines.append(f"\n(b) joint fine-tuning with and without adaptation: dev macro F1, {mode}\n")
  lines.append("| dataset | without adaptation | with adaptation | difference |")
  lines.append("|---|---|---|---|")
  without, with_ = [], []
  for ds in datasets:
    w0, w1 = _f1(results, "joint_noadapt", mode, ds), _f1(results, "joint_adapt", mode, ds)
    without.append(w0)
    with_.append(w1)
    lines.append(f"| {ds} | {_fmt(w0)} | {_fmt(w1)} | "
                 f"{_fmt(w1 - w0 if w0 is not None and w1 is not None else None)} |")
  lines.append(_paired_mean_row("mean", without, with_))
  for ds in results["config"].get("noadapt_singles", []):
    w0 = _f1(results, f"single_{ds}{NOADAPT_SUFFIX}", mode, ds)
    w1 = _f1(results, f"single_{ds}", mode, ds)
    lines.append(f"| {ds} (single-dataset model) | {_fmt(w0)} | {_fmt(w1)} | "
                 f"{_fmt(w1 - w0 if w0 is not None and w1 is not None else None)} |")

  lines.append("\n(c) unconstrained vs constrained decoding, evaluator on the raw generations: "
               "macro F1, predicted (type, span) pairs of a type the prompt did not request, "
               "predicted spans not in the input sentence\n")
  lines.append("| model | dataset | F1 unc. | F1 con. | unrequested unc. | unrequested con. | "
               "not in input unc. | not in input con. | predicted unc. | predicted con. |")
  lines.append("|---|---|---|---|---|---|---|---|---|---|")
  for run in results["evaluations"]:
    single = single_run_dataset(run)
    for ds in ([single] if single else datasets):
      cells = []
      for key, digits in (("macro_f1", 1), ("unrequested_type_predictions", 0),
                          ("span_not_in_input", 0), ("num_predicted", 0)):
        for m in DECODING_MODES:
          cells.append(_fmt(_f1(results, run, m, ds, key), digits))
      lines.append(f"| {run} | {ds} | " + " | ".join(cells) + " |")

  extracts = results.get("extractor") or {}
  if extracts:
    lines.append("\n(c) the Extractor (joint adapted model, product API): entities returned "
                 "with offsets; counters of what was dropped; offset-exact macro F1\n")
    lines.append("| dataset | decoding | offset F1 | returned | unrequested-type items "
                 "(dropped) | spans not in input (dropped) | returned text ≠ input slice |")
    lines.append("|---|---|---|---|---|---|---|")
    for ds in datasets:
      for m in DECODING_MODES:
        entry = extracts.get(m, {}).get("datasets", {}).get(ds)
        if entry is None:
          continue
        stats = entry["stats"]
        lines.append(f"| {ds} | {m} | {_fmt(entry['scores']['macro_f1'])} | "
                     f"{entry['returned_entities']} | {stats.get('unrequested_type_items', 0)} | "
                     f"{stats.get('not_located', 0)} | {entry['returned_offset_mismatches']} |")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.extract_worker:
    for name in ("model_dir", "constrained", "output"):
      if getattr(args, name) is None:
        parser.error(f"--extract_worker needs --{name}")
    return extract_worker(args)
  if not args.data_dir and not args.report_only:
    parser.error("--data_dir is required (the root of the real downloads, e.g. "
                 "../shared/data/raw): this script measures real-data quality")
  if args.data_dir and not os.path.isdir(args.data_dir):
    parser.error(f"--data_dir {args.data_dir!r} is not a directory")
  try:
    plan = Plan(args)
  except ValueError as error:
    parser.error(str(error))
  stages = plan.stages()
  if args.only:
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - {s["name"] for s in stages})
    if unknown:
      parser.error(f"--only: unknown stage(s) {', '.join(unknown)}; stages: "
                   f"{', '.join(s['name'] for s in stages)}")
    stages = [s for s in stages if s["name"] in wanted]
  if not args.report_only:
    print(f"quality: {len(plan.datasets)} datasets ({', '.join(plan.datasets)}), model "
          f"{args.size}, adapt {args.adapt_steps} steps, single {args.single_steps} steps, "
          f"joint {plan.joint_steps} steps, batch {args.batch_size}; runs in {plan.work_dir}",
          flush=True)
    for stage in stages:
      run_stage(plan, stage)
    if args.dry_run:
      return 0
  results = collect(plan)
  _write_json(os.path.join(plan.work_dir, "quality.json"), results)
  if args.results_json:
    _write_json(os.path.abspath(args.results_json), results)
  print("\n" + format_tables(results))
  print(f"\nstage time so far: {results['total_stage_seconds'] / 3600:.2f} h; results: "
        f"{args.results_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
