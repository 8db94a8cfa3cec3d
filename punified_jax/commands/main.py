"""`python -m punified_jax main`: the whole PUnifiedNER recipe, end to end.

  1. language-model adaptation (prefix-LM over every dataset's training text),
  2. multi-dataset joint fine-tuning from the adapted model (dataset-dependent prompts),
     evaluated per dataset on the validation splits, best checkpoint by mean macro F1,
  3. a report (report.json with per-dataset and per-type P/R/F1, report.png),
  4. sample on-demand extractions with the trained model, and the F1 table.

Each training stage is the same `python -m punified_jax.train` command a user would type (they
are printed before they run), in a subprocess, so the recipe is exactly reproducible by hand.

Presets:
  cpu   (default without --raw_dir) sized for a 2-core CPU: the `mini` model, a few hundred
        steps, short sequences. On the built-in corpus it finishes in minutes. It exercises the
        pipeline; its F1 says nothing about real-data quality.
  paper (default with --raw_dir) the paper's Table 7 recipe on the `base` model: adaptation 50K
        steps (batch 48, 256 tokens), joint fine-tuning 100K steps (batch 32, 512 tokens),
        AdamW 1e-4, read from gin/runs/adapt.gin and finetune_joint.gin (the numbers live
        there only; the stage commands still spell them out). Meant for accelerators (add --gin_file=gin/partitioning/fsdp.gin etc. via
        --extra_gin); start from a public checkpoint with --initial_checkpoint (an HF dir).
Every number can be overridden (--adapt_steps, --finetune_steps, --size, --gin KEY=VALUE ...).
Data comes from --raw_dir (release formats; see docs/data.md), else from an exported
PUNIFIED_RAW_DIR. Without either the main job asks for the built-in synthetic corpus by name
(PUNIFIED_RAW_DIR=builtin in the stage commands) and says so; `--raw_dir builtin` is the same
choice spelled out. The vocabulary comes from --vocab or a
character-level SentencePiece model trained on the train text.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time

from punified_jax import gin_utils
from punified_jax import reports
from punified_jax import run_dir
from punified_jax import storage
from punified_jax.data import sources

HELP = "run the whole recipe: adapt -> joint fine-tune -> evaluate -> report -> extract"

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Preset:
  size: str
  adapt_steps: int
  finetune_steps: int
  adapt_batch: int
  finetune_batch: int
  adapt_lengths: tuple[int, int]
  finetune_lengths: tuple[int, int]
  learning_rate: float
  adapt_warmup: int
  finetune_warmup: int
  eval_period: int
  beam_size: int
  constrained_eval: bool
  # Save every N steps (and at the end / on SIGTERM): a preempted or crashed stage resumes from
  # there, input position included.
  checkpoint_period: int


ADAPT_RUN_FILE = "gin/runs/adapt.gin"
JOINT_RUN_FILE = "gin/runs/finetune_joint.gin"

# Calibrated on this project's 2-core CI machine: see README "The main job". Its numbers live
# here only (no gin recipe is this small). Constrained evaluation: the copy constraint is our
# product's default decoding (the paper evaluates unconstrained; the eval command and
# EVAL_CONSTRAINED choose either).
CPU_PRESET = Preset(size="mini", adapt_steps=150, finetune_steps=600, adapt_batch=16,
                    finetune_batch=16, adapt_lengths=(128, 128), finetune_lengths=(256, 256),
                    learning_rate=2e-3, adapt_warmup=15, finetune_warmup=50, eval_period=300,
                    beam_size=4, constrained_eval=True, checkpoint_period=200)
PRESET_NAMES = ("cpu", "paper")


def _lengths(macros: dict) -> tuple[int, int]:
  lengths = macros["TASK_FEATURE_LENGTHS"]
  return int(lengths["inputs"]), int(lengths["targets"])


def _shared_value(name: str, adapt: dict, joint: dict):
  """A setting the preset gives both stages: the two run files must agree on it."""
  if adapt[name] != joint[name]:
    raise ValueError(f"{ADAPT_RUN_FILE} sets {name} = {adapt[name]!r} but {JOINT_RUN_FILE} sets "
                     f"{joint[name]!r}; the main job's paper preset uses one value for both stages")
  return adapt[name]


def paper_preset() -> Preset:
  """The paper's Table 7 recipe, read from the gin run files that hold it (adapt.gin and
  finetune_joint.gin, with train_base.gin's defaults), on the `base` model."""
  adapt = gin_utils.read_macros(os.path.join(REPO, ADAPT_RUN_FILE))
  joint = gin_utils.read_macros(os.path.join(REPO, JOINT_RUN_FILE))
  return Preset(size="base", adapt_steps=adapt["TRAIN_STEPS"], finetune_steps=joint["TRAIN_STEPS"],
                adapt_batch=adapt["BATCH_SIZE"], finetune_batch=joint["BATCH_SIZE"],
                adapt_lengths=_lengths(adapt), finetune_lengths=_lengths(joint),
                learning_rate=_shared_value("LEARNING_RATE", adapt, joint),
                adapt_warmup=adapt["WARMUP_STEPS"], finetune_warmup=joint["WARMUP_STEPS"],
                eval_period=joint["EVAL_PERIOD"], beam_size=joint["EVAL_BEAM_SIZE"],
                constrained_eval=joint["EVAL_CONSTRAINED"],
                checkpoint_period=_shared_value("CHECKPOINT_PERIOD", adapt, joint))


def preset_named(name: str) -> Preset:
  """`cpu` or `paper` (read from the gin files when asked for, so `--help` reads no file)."""
  if name == "cpu":
    return CPU_PRESET
  if name == "paper":
    return paper_preset()
  raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESET_NAMES)}")


# On-demand extraction samples: one sentence asked for different type sets (the paper's Figure 1
# idea). Written here; the built-in corpus's lexicons make them plausible for a model trained on it.
SAMPLES = [
    ("张伟昨天去了北京大学，和李娜讨论星海科技公司的新产品。", ["名称"]),
    ("张伟昨天去了北京大学，和李娜讨论星海科技公司的新产品。", ["地点", "组织", "公司"]),
    ("浙江省杭州市西湖区文三路100号华星大厦5楼", ["省份", "城市", "区", "路", "路号"]),
    ("王芳，女，汉族，本科学历，现任财务总监。", ["名称", "民族", "学历", "职位"]),
]


def add_arguments(parser):
  parser.add_argument("--raw_dir", help="root of your downloads (release formats), or 'builtin'; "
                      "default: builtin (the built-in synthetic corpus, a pipeline check)")
  parser.add_argument("--format", dest="data_format",
                      help="read every dataset in this format, e.g. punified_json")
  parser.add_argument("--datasets", help="comma-separated datasets (default: the paper's eight, "
                      "those present)")
  parser.add_argument("--vocab", help="a SentencePiece .model or BERT vocab.txt (default: trained)")
  parser.add_argument("--work_dir", default=os.path.join(REPO, "runs", "main"),
                      help="where the runs go (default: runs/main); an existing run resumes")
  parser.add_argument("--preset", choices=PRESET_NAMES,
                      help="cpu (default without --raw_dir) or paper (default with it)")
  parser.add_argument("--size", help="model size: gin/models/<size>.gin (tiny, mini, small, base, large)")
  parser.add_argument("--adapt_steps", type=int)
  parser.add_argument("--finetune_steps", type=int)
  parser.add_argument("--eval_period", type=int)
  parser.add_argument("--beam_size", type=int)
  parser.add_argument("--skip_adapt", action="store_true",
                      help="fine-tune from --initial_checkpoint (or from scratch) without adaptation")
  parser.add_argument("--initial_checkpoint", help="start adaptation from these parameters (one of "
                      "our runs, or a Hugging Face T5 v1.1 directory)")
  parser.add_argument("--extra_gin", action="append", default=[],
                      help="another gin file for both stages, e.g. gin/partitioning/fsdp.gin")
  parser.add_argument("--gin", action="append", default=[], metavar="KEY=VALUE",
                      help="a gin override for both stages (repeatable)")
  parser.add_argument("--split", default="validation", choices=("validation", "test"),
                      help="the split of the final F1 table: validation (the checkpoint selection "
                      "split), or test (the best checkpoint is then evaluated on each dataset's "
                      "test split by `python -m punified_jax.eval --split test`; datasets without "
                      "a labeled test split are named and left out)")
  parser.add_argument("--eval_max_examples", type=int,
                      help="evaluate on the first N validation sentences of each dataset")
  parser.add_argument("--no_extract", action="store_true", help="skip the sample extractions")
  parser.add_argument("--dry_run", action="store_true", help="print the stage commands only")


def _train_command(run_file: str, size: str, model_dir: str, overrides: dict,
                   extra_gin: list[str], extra_bindings: list[str]) -> list[str]:
  command = [sys.executable, "-m", "punified_jax.train", f"--gin_file={run_file}",
             f"--gin_file=gin/models/{size}.gin"]
  command += [f"--gin_file={g}" for g in extra_gin]
  command.append(f"--gin.MODEL_DIR={model_dir}")
  command += [f"--gin.{k}={v}" for k, v in overrides.items()]
  command += [f"--gin.{b}" for b in extra_bindings]
  return command


# Start-up chatter of TensorFlow/XLA/SentencePiece's C++ logging that says nothing about the run
# (no GPU on a CPU machine, CPU features, the identity normalizer being used as intended).
_NOISE = re.compile(r"cuda_platform\.cc|cudart_stub\.cc|port\.cc:\d+\] oneDNN|cpu_feature_guard|"
                    r"All log messages before absl::InitializeLog|normalizer\.cc\(\d+\) LOG\(INFO\)|"
                    r"To enable the following instructions|rebuild TensorFlow with the appropriate|"
                    r"'logger_cls' is empty so seqio.Evaluator will not log")


def _forward_stderr(stream) -> None:
  for line in stream:
    if not _NOISE.search(line):
      sys.stderr.write(line)
      sys.stderr.flush()


# The settings a stage's data depends on: printed in front of its command so it reruns by hand.
_DATA_VARIABLES = ("PUNIFIED_RAW_DIR", "PUNIFIED_FORMAT", "PUNIFIED_DATASETS", "PUNIFIED_VOCAB")


def _run_stage(name: str, command: list[str], env: dict, dry_run: bool = False) -> float:
  settings = "".join(f"{key}={shlex.quote(env[key])} " for key in _DATA_VARIABLES if env.get(key))
  print(f"\n=== {name}\n$ {settings}{' '.join(shlex.quote(c) for c in command)}", flush=True)
  if dry_run:
    return 0.0
  start = time.time()
  process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
                             errors="replace")
  forwarder = threading.Thread(target=_forward_stderr, args=(process.stderr,), daemon=True)
  forwarder.start()
  returncode = process.wait()
  forwarder.join()
  if returncode != 0:
    raise RuntimeError(f"stage {name!r} failed with exit code {returncode}")
  elapsed = time.time() - start
  print(f"=== {name} done in {elapsed:.0f}s", flush=True)
  return elapsed


def _best_eval_json(model_dir: str) -> str:
  """The evaluation report of the checkpoint the run kept as best (else the latest report)."""
  return run_dir.eval_json_for(model_dir, "auto")


def _print_extractions(model_dir: str, beam_size: int, env: dict) -> None:
  """Sample on-demand extractions through the `extract` command (JSON lines in and out)."""
  command = [sys.executable, "-m", "punified_jax", "extract", "--model_dir", model_dir,
             "--beam_size", str(beam_size)]
  print(f"\n=== on-demand extraction (constrained decoding, best checkpoint)\n"
        f"$ {' '.join(shlex.quote(c) for c in command)} < requests.jsonl", flush=True)
  # Ask only for types the model was trained on (a run over a few datasets knows fewer).
  known = set(storage.read_json(run_dir.Layout(model_dir).model_info_file).get(
      "extra", {}).get("prompt_names") or ())
  samples = [(t, [n for n in types if n in known]) for t, types in SAMPLES]
  samples = [(t, types) for t, types in samples if types]
  requests = "".join(json.dumps({"text": t, "types": types}, ensure_ascii=False) + "\n"
                     for t, types in samples)
  result = subprocess.run(command, cwd=REPO, env=env, input=requests, capture_output=True,
                          text=True)
  _forward_stderr(result.stderr.splitlines(keepends=True))
  if result.returncode != 0:
    raise RuntimeError(f"extraction failed with exit code {result.returncode}")
  for (text, types), line in zip(samples, result.stdout.splitlines()):
    entities = json.loads(line)["entities"]
    found = ", ".join(f"{e['type']}:{e['text']}@{e['start']}-{e['end']}({e['score']:.2f})"
                      for e in entities) or "(none)"
    print(f"{text}\n  asked {','.join(types)} -> {found}")


def _stage_environment(args, raw_dir: str) -> dict:
  """The environment of every stage: the data source is always named (never left to a default)."""
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  env["PUNIFIED_RAW_DIR"] = raw_dir if raw_dir == sources.BUILTIN else os.path.abspath(raw_dir)
  if env.pop("PUNIFIED_TFDS_DIR", None):
    print("note: PUNIFIED_TFDS_DIR is ignored by the main job (it reads --raw_dir)", flush=True)
  for key, value in (("PUNIFIED_FORMAT", args.data_format), ("PUNIFIED_DATASETS", args.datasets),
                     ("PUNIFIED_VOCAB", args.vocab)):
    if value:
      env[key] = os.path.abspath(value) if key == "PUNIFIED_VOCAB" else value
  return env


def run(args) -> int:
  start = time.time()
  # --raw_dir, else an exported PUNIFIED_RAW_DIR, else the built-in corpus by name; said below.
  raw_dir = args.raw_dir or os.environ.get("PUNIFIED_RAW_DIR") or sources.BUILTIN
  given_by = ("--raw_dir" if args.raw_dir else
              "PUNIFIED_RAW_DIR" if os.environ.get("PUNIFIED_RAW_DIR") else "no --raw_dir given")
  builtin = raw_dir == sources.BUILTIN
  preset_name = args.preset or ("cpu" if builtin else "paper")
  preset = preset_named(preset_name)
  size = args.size or preset.size
  adapt_steps = preset.adapt_steps if args.adapt_steps is None else args.adapt_steps
  finetune_steps = preset.finetune_steps if args.finetune_steps is None else args.finetune_steps
  eval_period = args.eval_period or min(preset.eval_period, finetune_steps)
  beam_size = args.beam_size or preset.beam_size
  work_dir = os.path.abspath(args.work_dir)
  adapt_dir, joint_dir = os.path.join(work_dir, "adapt"), os.path.join(work_dir, "joint")

  env = _stage_environment(args, raw_dir)
  if builtin:
    data = (f"the built-in synthetic corpus (PUNIFIED_RAW_DIR=builtin: {given_by}; a "
            "pipeline check, not a benchmark)")
  else:
    data = f"{env['PUNIFIED_RAW_DIR']} (PUNIFIED_RAW_DIR, from {given_by})"
  print(f"PUnifiedNER main job: preset {preset_name}, model {size}, runs in {work_dir}\n"
        f"data: {data}", flush=True)

  common = {"LEARNING_RATE": preset.learning_rate, "CHECKPOINT_PERIOD": preset.checkpoint_period,
            "LOG_EVERY": 25 if finetune_steps < 5000 else 100}
  timings = {}
  initial = args.initial_checkpoint and os.path.abspath(args.initial_checkpoint)
  if not args.skip_adapt and adapt_steps > 0:
    overrides = dict(common, TRAIN_STEPS=adapt_steps, BATCH_SIZE=preset.adapt_batch,
                     WARMUP_STEPS=preset.adapt_warmup,
                     TASK_FEATURE_LENGTHS='{"inputs": %d, "targets": %d}' % preset.adapt_lengths)
    if initial:
      overrides["INITIAL_CHECKPOINT_PATH"] = initial
    timings["adapt"] = _run_stage("1/3 language-model adaptation (prefix LM)", _train_command(
        ADAPT_RUN_FILE, size, adapt_dir, overrides, args.extra_gin, args.gin), env,
        args.dry_run)
    initial = adapt_dir
  overrides = dict(common, TRAIN_STEPS=finetune_steps, BATCH_SIZE=preset.finetune_batch,
                   WARMUP_STEPS=preset.finetune_warmup, EVAL_PERIOD=eval_period,
                   EVAL_BEAM_SIZE=beam_size, EVAL_CONSTRAINED=preset.constrained_eval,
                   TASK_FEATURE_LENGTHS='{"inputs": %d, "targets": %d}' % preset.finetune_lengths)
  if initial:
    overrides["INITIAL_CHECKPOINT_PATH"] = initial
  if args.eval_max_examples:
    overrides["EVAL_MAX_EXAMPLES"] = args.eval_max_examples
  timings["finetune"] = _run_stage("2/3 joint fine-tuning + evaluation", _train_command(
      JOINT_RUN_FILE, size, joint_dir, overrides, args.extra_gin, args.gin), env,
      args.dry_run)
  eval_json = None
  if args.split != "validation":
    test_dir = os.path.join(joint_dir, f"eval_{args.split}")
    checkpoint = os.path.join(joint_dir, "best")
    if not args.dry_run and not os.path.isdir(checkpoint):
      checkpoint = joint_dir  # no evaluation kept a best checkpoint: the latest
    command = [sys.executable, "-m", "punified_jax.eval", "--gin_file=gin/runs/eval.gin",
               f"--gin_file=gin/models/{size}.gin", *[f"--gin_file={g}" for g in args.extra_gin],
               f"--gin.CHECKPOINT_PATH={checkpoint}", f"--gin.EVAL_OUTPUT_DIR={test_dir}",
               "--split", args.split, f"--gin.EVAL_BEAM_SIZE={beam_size}",
               f"--gin.EVAL_CONSTRAINED={preset.constrained_eval}"]
    if args.eval_max_examples:
      command.append(f"--gin.EVAL_MAX_EXAMPLES={args.eval_max_examples}")
    timings[f"eval_{args.split}"] = _run_stage(
        f"2b/3 evaluation of the best checkpoint on the {args.split} split", command, env,
        args.dry_run)
    if not args.dry_run:
      eval_json = reports.latest_eval_json(test_dir)
  if args.dry_run:
    return 0

  print("\n=== 3/3 report", flush=True)
  summary = reports.write_report(eval_json or _best_eval_json(joint_dir),
                                 os.path.join(work_dir, "report"),
                                 runs={"adapt": adapt_dir, "joint": joint_dir})
  if not args.no_extract:
    _print_extractions(joint_dir, beam_size, env)
  print(f"\n=== {args.split} F1 per dataset (best checkpoint, step {summary['step']}, "
        f"beam {summary['beam_size']}, "
        f"{'constrained' if summary.get('constrained') else 'unconstrained'} decoding)")
  print(reports.format_f1_table(summary, paper=not builtin))
  if builtin:
    print("(built-in synthetic corpus: these numbers check the pipeline, they are not a benchmark)")
  print(f"report: {summary['json']}, {summary['png']}")
  print(f"total {time.time() - start:.0f}s (" + ", ".join(f"{k} {v:.0f}s" for k, v in
                                                      timings.items()) + ")")
  return 0
