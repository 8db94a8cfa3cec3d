"""The persistent compilation cache of the entry points (punified_jax/xla_cache.py)."""

import os
import subprocess
import sys

from punified_jax import xla_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cache_directory_from_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv("PUNIFIED_XLA_CACHE", raising=False)
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path))
  host = xla_cache.host_key()
  assert xla_cache.cache_directory() == str(tmp_path / "xla" / host)
  monkeypatch.setenv("PUNIFIED_XLA_CACHE", str(tmp_path / "mine"))
  assert xla_cache.cache_directory() == str(tmp_path / "mine" / host)
  for off in ("off", "OFF", "0", "false"):
    monkeypatch.setenv("PUNIFIED_XLA_CACHE", off)
    assert xla_cache.cache_directory() is None


_CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: {model}
flags\t\t: {flags}

processor\t: 1
model name\t: {model}
flags\t\t: {flags}
"""


def _host_key(tmp_path, name, **cpu):
  path = tmp_path / name
  path.write_text(_CPUINFO.format(**cpu))
  return xla_cache.host_key(str(path))


def test_each_cpu_model_and_feature_set_gets_its_own_directory(tmp_path):
  intel = dict(vendor="GenuineIntel", model="Intel(R) Xeon(R) Processor",
               flags="fpu sse2 avx2 avx512f amx_tile")
  key = _host_key(tmp_path, "a", **intel)
  assert key.startswith("jaxlib-") and "_Intel-R-Xeon-R-Processor_" in key
  assert os.sep not in key and " " not in key
  # The same CPU, flags listed in another order: the same directory.
  assert _host_key(tmp_path, "b", **dict(intel, flags="amx_tile avx512f avx2 sse2 fpu")) == key
  # Same model name, one feature fewer (a VM that hides AMX): another directory.
  assert _host_key(tmp_path, "c", **dict(intel, flags="fpu sse2 avx2 avx512f")) != key
  amd = _host_key(tmp_path, "d", vendor="AuthenticAMD", model="AMD EPYC 9R45 96-Core Processor",
                  flags="fpu sse2 avx2 avx512f")
  assert "_AMD-EPYC-9R45-96-Core-Processor_" in amd and amd != key
  # No /proc/cpuinfo (macOS, ...): still a usable name.
  assert xla_cache.host_key(str(tmp_path / "missing")).startswith("jaxlib-")


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
  host_dir = tmp_path / "xla" / xla_cache.host_key()
  assert f"dir {host_dir}" in _run(env)
  assert os.listdir(host_dir)  # the compiled program was written, under this host's key
  env["PUNIFIED_XLA_CACHE"] = "off"
  assert "dir None" in _run(env)
  env.pop("PUNIFIED_XLA_CACHE")
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "users")
  assert f"dir {tmp_path / 'users'}" in _run(env)
