"""Shared fixtures for the trainer tests: tiny in-memory seqio tasks and a tiny T5.

The tasks use seqio.ByteVocabulary (UTF-8 bytes + 3 specials: 259 ids), so no vocabulary has to
be trained, and a metric that reports `macro_f1` (100 x exact match) like the real NER tasks.
"""

from __future__ import annotations

import functools
import os

from conftest import FAST_COMPILE_FLAGS  # noqa: F401  (subprocess tests pass it on)

import seqio
import tensorflow as tf

class FastByteVocabulary(seqio.ByteVocabulary):
  """seqio's ByteVocabulary with a one-op `encode_tf` (the original is autograph-converted on every
  pipeline build, ~5 s on this machine)."""

  def _encode_tf(self, s):
    return tf.cast(tf.io.decode_raw(s, tf.uint8), tf.int32) + 3  # 3 special ids: pad, eos, unk


VOCAB = FastByteVocabulary()
VOCAB_SIZE = 384  # >= 259 byte ids, rounded up to a multiple of 128 like a real run would

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen"]


def memorise_examples(count: int = 16) -> list[dict[str, str]]:
  """`count` (input, target) pairs a model can only learn by heart: "n07" -> "seven"."""
  return [{"inputs": f"n{index:02d}", "targets": WORDS[index % len(WORDS)]} for index in range(count)]


def exact_match_f1(targets, predictions):
  """Stand-in for the NER metric: `macro_f1` = 100 x exact-match rate."""
  correct = sum(int(t == p) for t, p in zip(targets, predictions))
  return {"macro_f1": 100.0 * correct / max(len(targets), 1), "exact_match": correct}


def _dataset_fn(split, shuffle_files, seed=None, *, examples):
  del split, shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices({
      "inputs": [e["inputs"] for e in examples],
      "targets": [e["targets"] for e in examples],
  })


def register_task(name: str, examples: list[dict[str, str]], *, with_metric: bool = True) -> str:
  """(Re-)registers a seqio Task over `examples` for both train and validation splits."""
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  features = {"inputs": seqio.Feature(VOCAB, add_eos=True), "targets": seqio.Feature(VOCAB, add_eos=True)}
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(functools.partial(_dataset_fn, examples=examples),
                                      splits=("train", "validation")),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=features,
      metric_fns=[exact_match_f1] if with_metric else [],
  )
  return name


def register_mixture(name: str, task_names: list[str]) -> str:
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, [(task, 1.0) for task in task_names])
  return name


def tiny_model(*, dropout_rate: float = 0.0, emb_dim: int = 32, vocab_size: int = VOCAB_SIZE, layers: int = 2,
               num_heads: int = 2):
  from punified_jax import model as model_lib
  config = model_lib.T5Config(vocab_size=vocab_size, emb_dim=emb_dim, num_heads=num_heads, head_dim=8, mlp_dim=64,
                              num_encoder_layers=layers, num_decoder_layers=layers, dropout_rate=dropout_rate,
                              dtype="float32")
  return model_lib.Transformer(config)


# Subprocess tests ----------------------------------------------------------------------------

import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")


def subprocess_env(*, devices: int = 1, compilation_cache: str | None = None) -> dict:
  """Environment for a child Python: CPU only, `devices` fake devices, tests/ importable."""
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([TESTS_DIR, REPO_ROOT, env.get("PYTHONPATH", "")]),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE_FLAGS}")
  for name in ("PUNIFIED_COORDINATOR", "PUNIFIED_NUM_PROCESSES", "PUNIFIED_PROCESS_ID", "PUNIFIED_DISTRIBUTED",
               "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS", "SLURM_PROCID"):
    env.pop(name, None)
  if compilation_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=compilation_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  return env


def run_python(args: list[str], *, env: dict, cwd: str, timeout: float = 240) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
  import socket
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def read_jsonl(path: str) -> list[dict]:
  import json
  with open(path, encoding="utf-8") as handle:
    return [json.loads(line) for line in handle if line.strip()]


def write_run_gin(path: str, *, mixture: str = "cli_joint", extra: str = "") -> str:
  """A run file for the subprocess tests: the in-memory tasks of cli_tasks.py + train_base.gin."""
  with open(path, "w", encoding="utf-8") as handle:
    handle.write(
        "from __gin__ import dynamic_registration\n"
        "import cli_tasks\n"
        "include 'gin/runs/train_base.gin'\n"
        f"MIXTURE_OR_TASK_NAME = '{mixture}'\n"
        "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 12}\n"
        "BATCH_SIZE = 8\n"
        "LOG_EVERY = 1\n"
        "DROPOUT_RATE = 0.1\n" + extra)
  return path
