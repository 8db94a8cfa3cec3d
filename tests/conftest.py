"""Shared pytest setup: quiet TensorFlow, CPU-only JAX, fast compiles, no network."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")

# The tests' models are tiny: XLA's expensive optimisation passes cost far more compile time than
# they save at run time (about 3x on the trainer tests). Numerics are unchanged at the tolerances
# the tests use. Subprocess tests pass the same flags on (trainer_helpers.FAST_COMPILE_FLAGS).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_FLAGS).strip()
