"""Shared helpers of the benchmark scripts: machine facts, real-data batches, FLOP counts, JSON.

Pure helpers (batching/padding accounting, the FLOP formula, the CPU peak) are unit-tested in
tests/test_benchmarks.py on literal inputs; the data loaders read the real corpora whose
directory the scripts take as an argument (never copied anywhere).

Batching schemes compared (issue 7):
* "paper": each example drawn from a uniformly chosen dataset, 32 per batch, inputs and
  targets each padded to the longest in the batch (dynamic padding, what the paper did).
* "grouped": the same draw, but a buffer of `megabatch` batches is sorted by length and cut
  into batches (the mega-batch grouping of HF's `group_by_length` sampler), batch order
  shuffled: the easy PyTorch win, because similar lengths waste less padding.
* ours: seqio's EncDecFeatureConverter(pack=True) inside our trainer (not built here).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from punified_jax.tasks import names as task_names

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")
TORCH_PYTHON_DEFAULT = os.path.join(REPO_ROOT, ".venv-torch", "bin", "python")


# ----------------------------------------------------------------------------------------------
# Machine and output.
# ----------------------------------------------------------------------------------------------


def machine_info() -> dict:
  """CPU model, cores, RAM, load, versions: what a result table must state."""
  info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "python": platform.python_version(), "platform": platform.platform()}
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["cpu_model"] = fields.get("Model name")
    info["cpu_family"] = fields.get("CPU family")
    info["cpus"] = int(fields.get("CPU(s)", "0") or 0)
    info["bogomips"] = float(fields.get("BogoMIPS", "0") or 0)
    info["cpu_flags_of_note"] = [f for f in fields.get("Flags", "").split()
                                 if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16",
                                          "avx512_vnni", "avx_vnni")]
  except (OSError, subprocess.CalledProcessError, ValueError):
    pass
  try:
    with open("/proc/meminfo") as handle:
      total_kb = int(re.search(r"MemTotal:\s+(\d+)", handle.read()).group(1))
    info["ram_gib"] = round(total_kb / 2**20, 1)
  except (OSError, AttributeError):
    pass
  info["load_average"] = list(os.getloadavg())
  return info


def jax_versions() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}


def constraint_step_loop(constraint, table, repeats: int):
  """A jitted fn(inputs [rows, len]) that runs constraint.step_candidates `repeats` times from
  constraint.init(inputs), each step consuming the first allowed candidate: the constraint's
  per-step cost alone (chunk_cost.py and step_cost.py time it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  @jax.jit
  def run(inputs):
    def body(i, carry):
      state, token, total = carry
      allowed, state = constraint.step_candidates(state, token, jnp.array(1, jnp.int32), table)
      token = jnp.take_along_axis(table.ids, jnp.argmax(allowed, 1)[:, None], 1)[:, 0]
      return state, token, total + jnp.sum(allowed, 1)
    return jax.lax.fori_loop(0, repeats, body, (constraint.init(inputs), inputs[:, 0],
                                                jnp.zeros((inputs.shape[0],), jnp.int32)))[2]

  return run


def endless_constraint(inner):
  """`inner` (a NerCopyConstraint) with candidate 0 always allowed as well: rows never run out
  of tokens, at the constraint's own cost; with an EOS id no row writes, a search then runs
  exactly its max_decode_length steps (step_cost.py and batch_cost.py time fixed steps)."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  @flax.struct.dataclass
  class Endless:
    inner: object

    def init(self, tokens):
      return self.inner.init(tokens)

    def candidate_table(self, tokens):
      return self.inner.candidate_table(tokens)

    def step_candidates(self, state, token_ids, step, table):
      allowed, state = self.inner.step_candidates(state, token_ids, step, table)
      return allowed | (jnp.arange(allowed.shape[1]) == 0)[None], state

  return Endless(inner)


def write_json(name: str, payload: Mapping, results_dir: Optional[str] = None) -> str:
  """Writes benchmarks/results/<name>.json (pretty, UTF-8) and returns the path."""
  directory = results_dir or RESULTS_DIR
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{name}.json")
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(payload, handle, ensure_ascii=False, indent=2, sort_keys=False, default=_jsonable)
    handle.write("\n")
  return path


def _jsonable(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(rows: Sequence[Mapping], columns: Sequence[str], title: str = "") -> None:
  """A plain fixed-width table on stdout (numbers to 4 significant digits)."""

  def cell(value) -> str:
    if isinstance(value, float):
      return f"{value:.4g}"
    return "" if value is None else str(value)

  table = [[cell(row.get(col)) for col in columns] for row in rows]
  widths = [max(len(col), *(len(r[i]) for r in table)) if table else len(col)
            for i, col in enumerate(columns)]
  if title:
    print(f"\n{title}")
  print("  ".join(col.ljust(w) for col, w in zip(columns, widths)))
  print("  ".join("-" * w for w in widths))
  for r in table:
    print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
  sys.stdout.flush()


def command_line() -> str:
  return " ".join([os.path.relpath(sys.executable, REPO_ROOT) if sys.executable.startswith(REPO_ROOT)
                   else sys.executable, *sys.argv])


# ----------------------------------------------------------------------------------------------
# Real data: tokenized (inputs, targets) per dataset through the project's own tasks.
# ----------------------------------------------------------------------------------------------


def stream_command(command: Sequence[str], env: Mapping[str, str], timeout: float,
                   on_line: Callable[[str, float], None]) -> tuple[int, list[str]]:
  """Runs `command` from the repository root, calling on_line(line, seconds since start) for each
  line of its merged stdout/stderr as it arrives; kills it after `timeout` seconds.
  Returns (exit code, all lines)."""
  start = time.perf_counter()
  lines = []
  process = subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT, bufsize=1)
  timer = threading.Timer(timeout, process.kill)
  timer.start()
  try:
    for line in process.stdout:
      lines.append(line.rstrip())
      on_line(line, time.perf_counter() - start)
    code = process.wait()
  finally:
    timer.cancel()
  return code, lines


def configure_tasks(raw_dir: str, datasets: Optional[Sequence[str]] = None,
                    data_format: Optional[str] = None):
  """Registers the seqio tasks on the real data (as PUNIFIED_RAW_DIR etc. would)."""
  os.environ["PUNIFIED_RAW_DIR"] = os.path.abspath(raw_dir)
  if datasets:
    os.environ["PUNIFIED_DATASETS"] = ",".join(datasets)
  if data_format:
    os.environ["PUNIFIED_FORMAT"] = data_format
  from punified_jax.tasks import registry  # pylint: disable=g-import-not-at-top
  config = registry.DataConfig.from_env()
  registry.register_all(config)
  return config


@dataclasses.dataclass
class PromptedSentences:
  """Real sentences of one split with a model's vocabulary: `ids` are each example's prompted
  input (the dataset's types, then the text), without EOS."""
  examples: list
  names: tuple
  info: object        # model_info.ModelInfo of model_dir
  vocabulary: object
  ids: list

  @property
  def eos_id(self) -> int:
    return int(self.vocabulary.eos_id)


def prompted_sentences(raw_dir: str, model_dir: str, dataset: str, count: int,
                       split: str = "validation") -> PromptedSentences:
  """The first `count` examples of `dataset`'s `split`, prompted with its types and encoded
  with `model_dir`'s vocabulary (what the decoding benchmarks feed the model)."""
  config = configure_tasks(raw_dir, [dataset])
  import tasks  # pylint: disable=g-import-not-at-top
  from punified_jax import entity_types, model_info, prompts  # pylint: disable=g-import-not-at-top
  examples = tasks.load_examples(config, dataset)[split][:count]
  names = entity_types.prompt_names(dataset)
  info = model_info.load_model_info(model_dir)
  vocabulary = info.vocabulary()
  ids = [list(vocabulary.encode(prompts.format_input(ex.text, names))) for ex in examples]
  return PromptedSentences(examples, names, info, vocabulary, ids)


def mixture_datasets(mixture: str = task_names.JOINT_MIXTURE) -> list[str]:
  """The datasets of a registered mixture (those that have a train split)."""
  import seqio  # pylint: disable=g-import-not-at-top
  return task_names.datasets_of(task.name for task in seqio.get_mixture_or_task(mixture).tasks)


def tokenized_examples(dataset: str, split: str, *, max_examples: Optional[int] = None,
                       max_lengths: Mapping[str, int] = None, seed: int = 0) -> list[dict]:
  """[{"inputs": ids, "targets": ids, ...}] of the dataset's NER task (dataset-dependent
  prompts, EOS appended, trimmed to `max_lengths` like the trainer's features)."""
  import seqio  # pylint: disable=g-import-not-at-top
  max_lengths = dict(max_lengths or {"inputs": 512, "targets": 512})
  task = seqio.get_mixture_or_task(task_names.task_name(dataset))
  ds = task.get_dataset(sequence_length=max_lengths, split=split, shuffle=split == "train",
                        seed=seed, num_epochs=1, use_cached=False)
  if max_examples:
    ds = ds.take(max_examples)
  out = []
  for record in ds.as_numpy_iterator():
    item = {"inputs": record["inputs"].astype(np.int32), "targets": record["targets"].astype(np.int32)}
    for key in ("text", "inputs_pretokenized", "targets_pretokenized"):
      if key in record:
        item[key] = record[key].decode("utf-8") if isinstance(record[key], bytes) else record[key]
    out.append(item)
  return out


# ----------------------------------------------------------------------------------------------
# Batching and padding accounting (pure).
# ----------------------------------------------------------------------------------------------


def uniform_mixture_draw(pools: Mapping[str, Sequence], count: int, rng: np.random.Generator) -> list:
  """`count` examples, each from a uniformly chosen dataset, sampled without replacement within
  a dataset until it is exhausted (then it restarts: an epoch per dataset)."""
  names = sorted(pools)
  if not names or any(len(pools[n]) == 0 for n in names):
    raise ValueError("every dataset pool must be non-empty")
  orders = {n: list(rng.permutation(len(pools[n]))) for n in names}
  out = []
  for choice in rng.integers(0, len(names), size=count):
    name = names[int(choice)]
    if not orders[name]:
      orders[name] = list(rng.permutation(len(pools[name])))
    out.append(pools[name][orders[name].pop()])
  return out


def paper_batches(examples: Sequence[Mapping], batch_size: int) -> list[list]:
  """Consecutive batches of the drawn order (the last partial batch is dropped)."""
  return [list(examples[i:i + batch_size]) for i in range(0, len(examples) - batch_size + 1, batch_size)]


def length_grouped_batches(examples: Sequence[Mapping], batch_size: int, megabatch: int,
                           rng: np.random.Generator) -> list[list]:
  """HF-style group_by_length: each run of `megabatch * batch_size` drawn examples is sorted by
  total length (inputs + targets), longest first, and cut into batches; batch order shuffled."""
  batches = []
  span = batch_size * megabatch
  for begin in range(0, len(examples) - batch_size + 1, span):
    chunk = sorted(examples[begin:begin + span], key=lambda e: -(len(e["inputs"]) + len(e["targets"])))
    batches.extend(paper_batches(chunk, batch_size))
  order = rng.permutation(len(batches))
  return [batches[i] for i in order]


@dataclasses.dataclass
class PaddedBatch:
  """A dynamically padded batch: id 0 is padding (seqio/T5 convention)."""
  input_ids: np.ndarray        # int32 [batch, longest input]
  decoder_input_ids: np.ndarray  # int32 [batch, longest target]: targets shifted right, 0 first
  labels: np.ndarray           # int32 [batch, longest target], 0 = padding

  @property
  def real_target_tokens(self) -> int:
    return int((self.labels > 0).sum())

  @property
  def real_input_tokens(self) -> int:
    return int((self.input_ids > 0).sum())

  @property
  def computed_tokens(self) -> int:
    return int(self.input_ids.size + self.labels.size)


def pad_batch(batch: Sequence[Mapping]) -> PaddedBatch:
  """Pads inputs and targets of a batch to their longest (separately)."""
  if not batch:
    raise ValueError("empty batch")
  in_len = max(len(e["inputs"]) for e in batch)
  out_len = max(len(e["targets"]) for e in batch)
  inputs = np.zeros((len(batch), in_len), np.int32)
  labels = np.zeros((len(batch), out_len), np.int32)
  for row, example in enumerate(batch):
    inputs[row, :len(example["inputs"])] = example["inputs"]
    labels[row, :len(example["targets"])] = example["targets"]
  decoder_inputs = np.zeros_like(labels)
  decoder_inputs[:, 1:] = labels[:, :-1]
  return PaddedBatch(inputs, decoder_inputs, labels)


def padding_stats(batches: Iterable[PaddedBatch]) -> dict:
  """Fraction of computed token positions (inputs + targets) that are real tokens."""
  real = computed = real_targets = target_slots = 0
  for b in batches:
    real += b.real_input_tokens + b.real_target_tokens
    computed += b.computed_tokens
    real_targets += b.real_target_tokens
    target_slots += b.labels.size
  return {"real_fraction": real / computed if computed else float("nan"),
          "target_real_fraction": real_targets / target_slots if target_slots else float("nan"),
          "real_tokens": real, "computed_tokens": computed}


def packed_stats(batch: Mapping[str, np.ndarray]) -> dict:
  """The same accounting for a packed seqio batch (features of EncDecFeatureConverter)."""
  real = int((batch["encoder_input_tokens"] > 0).sum() + (batch["decoder_target_tokens"] > 0).sum())
  computed = int(batch["encoder_input_tokens"].size + batch["decoder_target_tokens"].size)
  segments = batch.get("decoder_segment_ids")
  examples = int(sum(len(set(row[row > 0].tolist())) for row in segments)) if segments is not None else None
  return {"real_tokens": real, "computed_tokens": computed,
          "target_tokens": int((batch["decoder_target_tokens"] > 0).sum()), "examples": examples}


# ----------------------------------------------------------------------------------------------
# FLOPs (pure): matmul FLOPs of a T5 v1.1 train step on given token counts.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shape:
  """What the FLOP count needs of a T5 v1.1 config."""
  vocab: int
  d_model: int
  heads: int
  d_kv: int
  d_ff: int
  enc_layers: int
  dec_layers: int

  @classmethod
  def of(cls, config) -> "Shape":
    return cls(config.vocab_size, config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim,
               config.num_encoder_layers, config.num_decoder_layers)


def forward_flops(shape: Shape, batch: int, in_len: int, out_len: int) -> float:
  """Matmul FLOPs (2 per multiply-add) of one forward pass over [batch, in_len] inputs and
  [batch, out_len] targets, counting every computed position (padding included).

  Per encoder layer and token: q,k,v,o projections 4*d*hk, gated MLP 3*d*ff, attention scores
  and weighted sum 2*in_len*hk. Per decoder layer and token: self-attention (4*d*hk +
  2*out_len*hk), cross-attention (q,o: 2*d*hk on targets; k,v: 2*d*hk on the encoder tokens;
  2*in_len*hk), MLP 3*d*ff. Head: d*vocab per target token. Embedding lookups are gathers (0).
  """
  s = shape
  hk = s.heads * s.d_kv
  enc_tokens = batch * in_len
  dec_tokens = batch * out_len
  enc = s.enc_layers * enc_tokens * (4 * s.d_model * hk + 3 * s.d_model * s.d_ff + 2 * in_len * hk)
  dec = s.dec_layers * (dec_tokens * (4 * s.d_model * hk + 2 * out_len * hk + 2 * s.d_model * hk
                                      + 2 * in_len * hk + 3 * s.d_model * s.d_ff)
                        + enc_tokens * 2 * s.d_model * hk)
  head = dec_tokens * s.d_model * s.vocab
  return 2.0 * (enc + dec + head)


def train_step_flops(shape: Shape, batch: int, in_len: int, out_len: int) -> float:
  """Forward + backward = 3x the forward matmul FLOPs (the usual 6N-per-token rule)."""
  return 3.0 * forward_flops(shape, batch, in_len, out_len)


# A chain of dependent integer adds retires one add per cycle on any x86-64 core, so timing
# N of them gives the clock the core actually runs at (turbo included), which BogoMIPS (the
# base clock) does not.
_CLOCK_C = r"""
#include <stdio.h>
#include <stdint.h>
#include <time.h>
int main(void) {
  struct timespec a, b; uint64_t x = 1, n = 2000000000ULL;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (uint64_t i = 0; i < n; i++) { __asm__ volatile("add $1, %0" : "+r"(x)); }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  printf("%.4f %llu\n", n / s / 1e9, (unsigned long long)x);
  return 0;
}
"""


def measure_clock_ghz(cores: int) -> Optional[list[float]]:
  """The all-core clock in GHz, one figure per core: `cores` copies of a one-add-per-cycle
  loop run at once (so every core is busy, as in a training step). None without gcc or on a
  machine that is not x86-64."""
  if platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc"):
    return None
  with tempfile.TemporaryDirectory() as tmp:
    source, binary = os.path.join(tmp, "clock.c"), os.path.join(tmp, "clock")
    with open(source, "w") as handle:
      handle.write(_CLOCK_C)
    if subprocess.run(["gcc", "-O2", "-o", binary, source], capture_output=True).returncode:
      return None
    runs = [subprocess.Popen([binary], stdout=subprocess.PIPE, text=True) for _ in range(cores)]
    return [float(run.communicate()[0].split()[0]) for run in runs]


def cpu_peak_flops(cores: int, ghz: float, flags: Iterable[str], *, bf16: bool = False,
                   fma_units: int = 2) -> float:
  """Peak FLOP/s = cores x GHz x FLOPs/cycle/core.

  FLOPs/cycle/core = fma_units x (vector bits / 32 fp32 lanes) x 2 (a fused multiply-add is 2
  FLOPs); AVX-512 gives 16 lanes, AVX2 8. With avx512_bf16 (VDPBF16PS: pairs of bf16 products
  accumulated into each fp32 lane) the bf16 rate is twice that.
  """
  flags = set(flags)
  lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
  per_cycle = fma_units * lanes * 2
  if bf16 and "avx512_bf16" in flags:
    per_cycle *= 2
  return cores * ghz * 1e9 * per_cycle
