"""The persistent compilation cache of the entry points (punified_jax/xla_cache.py)."""

import os
import subprocess
import sys

from punified_jax import xla_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cache_directory_from_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv("PUNIFIED_XLA_CACHE", raising=False)
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path))
  assert xla_cache.cache_directory() == str(tmp_path / "xla")
  monkeypatch.setenv("PUNIFIED_XLA_CACHE", str(tmp_path / "mine"))
  assert xla_cache.cache_directory() == str(tmp_path / "mine")
  for off in ("off", "OFF", "0", "false"):
    monkeypatch.setenv("PUNIFIED_XLA_CACHE", off)
    assert xla_cache.cache_directory() is None


_PROGRAM = """
import jax, jax.numpy as jnp
from punified_jax import xla_cache
print("dir", xla_cache.enable_persistent_compilation_cache())
# Long enough to compile (> the 1 s threshold) that the cache keeps it.
f = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: jnp.sin(y) @ y, x))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
print(float(f(jnp.eye(4)).sum()))
"""


def _run(env):
  return subprocess.run([sys.executable, "-c", _PROGRAM], cwd=REPO, env=env, capture_output=True,
                        text=True, check=True).stdout


def test_an_entry_point_process_writes_the_cache_and_off_writes_nothing(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(PUNIFIED_XLA_CACHE=str(tmp_path / "xla"), JAX_PLATFORMS="cpu")
  assert f"dir {tmp_path / 'xla'}" in _run(env)
  assert os.listdir(tmp_path / "xla")  # the compiled program was written
  env["PUNIFIED_XLA_CACHE"] = "off"
  assert "dir None" in _run(env)
  env.pop("PUNIFIED_XLA_CACHE")
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "users")
  assert f"dir {tmp_path / 'users'}" in _run(env)
