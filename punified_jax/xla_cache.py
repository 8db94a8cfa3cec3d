"""JAX's persistent compilation cache, on by default for the command-line entry points.

Every `python -m punified_jax.train / eval / infer` and `python -m punified_jax main / extract`
compiles the same few programs (train step, beam search per input bucket, scoring pass) that
the previous run of the same configuration compiled. With the cache on, a rerun reads them from
disk instead (BENCHMARKS.md, "Start-up": the train step of the small model compiles in ~50 s
and loads in ~2 s).

Where: a per-host subdirectory (`host_key()`) of $PUNIFIED_XLA_CACHE, else of
$PUNIFIED_CACHE/xla, else of ~/.cache/punified_jax/xla. `PUNIFIED_XLA_CACHE=off` switches it
off; a JAX_COMPILATION_CACHE_DIR the user set wins (and is used as it is).

Why per host: JAX keys an entry by the program, the XLA flags, the jax/jaxlib version and the
device kind, and on CPU the device kind is just "cpu". XLA compiles CPU code for the host's own
instruction set (AVX-512, AMX, ...), so an entry written on one CPU model and read on another
through a shared home directory (a cluster's NFS home; here, a home that our sessions and
local CI runs share, on machines of either of two CPU models) is code for the wrong processor. A process here died
with a segmentation fault inside jax's compilation_cache.get_executable_and_time, loading an
entry from such a shared directory (which entry, and whether it came from the other CPU, was
not established). The subdirectory names the jaxlib version, the CPU model and a hash of the
model and its feature flags, so an entry of another CPU is never read. The directory can be
deleted at any time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import re
from typing import Optional

OFF_VALUES = ("off", "0", "false", "no", "")


def _cpu_description(cpuinfo_path: str = "/proc/cpuinfo") -> tuple[str, str]:
  """(CPU model name, its feature flags) of this host; from /proc/cpuinfo on Linux, else the
  platform module's processor / machine strings."""
  model, flags = "", ""
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
          model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM
          flags = " ".join(sorted(value.split()))
        if model and flags:
          break
  except OSError:
    pass
  return model or platform.processor() or platform.machine(), flags


def host_key(cpuinfo_path: str = "/proc/cpuinfo") -> str:
  """A directory name for this host's entries: jaxlib version, CPU model, a hash of the model
  and its feature flags, e.g. `jaxlib-0.12.0.1_Intel-R-Xeon-R-Processor_9b9f349f0b0a`."""
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    version = "unknown"
  model, flags = _cpu_description(cpuinfo_path)
  slug = re.sub(r"[^A-Za-z0-9.]+", "-", model).strip("-")[:48] or "cpu"
  digest = hashlib.sha256(f"{model}\n{flags}".encode()).hexdigest()[:12]
  return f"jaxlib-{version}_{slug}_{digest}"


def cache_directory() -> Optional[str]:
  """The directory the cache would use (a `host_key()` subdirectory of the root), or None
  when switched off."""
  explicit = os.environ.get("PUNIFIED_XLA_CACHE")
  if explicit is not None:
    if explicit.strip().lower() in OFF_VALUES:
      return None
    root = explicit
  else:
    root = os.path.join(os.environ.get("PUNIFIED_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "punified_jax"), "xla")
  return os.path.join(root, host_key())


def enable_persistent_compilation_cache() -> Optional[str]:
  """Points JAX's persistent compilation cache at `cache_directory()`; returns the directory
  in use (the user's JAX_COMPILATION_CACHE_DIR if set), or None when off."""
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  directory = cache_directory()
  if directory is None:
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:  # read-only home, ...: run without the cache rather than fail
    logging.getLogger(__name__).warning("compilation cache %s unusable (%s); compiling afresh",
                                        directory, error)
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  # Our programs that take under a second to compile are cheap to redo; keep the cache small.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return directory
