"""JAX's persistent compilation cache, on by default for the command-line entry points.

Every `python -m punified_jax.train / eval / infer` and `python -m punified_jax main / extract`
compiles the same few programs (train step, beam search per input bucket, scoring pass) that
the previous run of the same configuration compiled. With the cache on, a rerun reads them from
disk instead (BENCHMARKS.md, "Start-up": the train step of the small model compiles in ~50 s
and loads in ~2 s).

Where: $PUNIFIED_XLA_CACHE, else $PUNIFIED_CACHE/xla, else ~/.cache/punified_jax/xla.
`PUNIFIED_XLA_CACHE=off` switches it off; a JAX_COMPILATION_CACHE_DIR the user set wins.
Entries are keyed by the program, the jax/jaxlib version and the device, so a stale entry is
never used; the directory can be deleted at any time.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

OFF_VALUES = ("off", "0", "false", "no", "")


def cache_directory() -> Optional[str]:
  """The directory the cache would use, or None when switched off."""
  explicit = os.environ.get("PUNIFIED_XLA_CACHE")
  if explicit is not None:
    return None if explicit.strip().lower() in OFF_VALUES else explicit
  root = os.environ.get("PUNIFIED_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "punified_jax")
  return os.path.join(root, "xla")


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
