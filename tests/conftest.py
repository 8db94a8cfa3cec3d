"""Shared pytest setup: quiet TensorFlow, CPU-only JAX, fast compiles, no network."""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
# The tests read the built-in synthetic corpus, and say so: an unset PUNIFIED_RAW_DIR is no data
# source at all (tasks.require_data_source). Set unconditionally so a developer's own
# PUNIFIED_RAW_DIR/PUNIFIED_TFDS_DIR never leaks into the suite; subprocess tests inherit it.
os.environ["PUNIFIED_RAW_DIR"] = "builtin"
os.environ.pop("PUNIFIED_TFDS_DIR", None)
# The entry points the tests call in this process switch JAX's persistent compilation cache on
# for the rest of the process (punified_jax/xla_cache.py). Point it at a directory of this run,
# never at the user's ~/.cache (the suite died with a segmentation fault inside jax while
# loading an entry from the shared home cache: punified_jax/xla_cache.py's docstring).
# Subprocess tests inherit it; those that test the cache set their own.
os.environ["PUNIFIED_XLA_CACHE"] = tempfile.mkdtemp(prefix="punified-test-xla-")
atexit.register(shutil.rmtree, os.environ["PUNIFIED_XLA_CACHE"], ignore_errors=True)
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

# The tests' models are tiny: XLA's expensive optimisation passes cost far more compile time than
# they save at run time (about 3x on the trainer tests). Numerics are unchanged at the tolerances
# the tests use. Subprocess tests pass the same flags on (trainer_helpers.FAST_COMPILE_FLAGS).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_FLAGS).strip()


@pytest.fixture(scope="module")
def fast_compiles():
  """Skip most XLA optimisation passes while a module of tiny-model tests runs (they cost far
  more compile time than they save at run time); the setting is restored afterwards. Modules opt
  in with `pytestmark = pytest.mark.usefixtures("fast_compiles")`."""
  import jax  # pylint: disable=g-import-not-at-top
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


# The Google Cloud Storage emulator (tests/gcs_emulator.py): `def test_x(gcs_emulator): ...`.
from gcs_emulator import gcs_emulator  # pylint: disable=wrong-import-position,unused-import  # noqa: E402,F401
