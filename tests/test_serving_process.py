"""`python -m punified_jax serve` as a real process on 127.0.0.1: ready after warm-up, answers,
and on SIGTERM stops accepting, answers every request in flight and exits 0."""

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import test_inference as shared
from conftest import FAST_COMPILE_FLAGS

pytestmark = pytest.mark.usefixtures("fast_compiles")

sp_vocab = shared.sp_vocab
vocab_path = shared.vocab_path
config = shared.config
trained_params = shared.trained_params
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vocab_path, config, trained_params):
  return shared.write_model_dir(tmp_path_factory.mktemp("run"), vocab_path, config,
                                trained_params, step=1)


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def http(method: str, url: str, body=None, timeout: float = 60.0):
  data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
  request = urllib.request.Request(url, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.loads(response.read() or b"null")
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read() or b"null")


def start_server(model_dir, port, tmp_path, *extra):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS=FAST_COMPILE_FLAGS, PUNIFIED_XLA_CACHE=str(tmp_path / "xla"))
  log = open(tmp_path / "server.log", "w")
  process = subprocess.Popen(
      [sys.executable, "-m", "punified_jax", "serve", "--model_dir", model_dir, "--port",
       str(port), "--batch_size", str(shared.BATCH_SIZE), "--log_level", "warning", *extra],
      env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
  base = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline:
    assert process.poll() is None, (tmp_path / "server.log").read_text()
    try:
      status, _ = http("GET", base + "/ready", timeout=5)
      if status == 200:
        return process, base
    except (urllib.error.URLError, ConnectionError, OSError):
      pass
    time.sleep(0.5)
  process.kill()
  raise AssertionError("server not ready: " + (tmp_path / "server.log").read_text())


def test_sigterm_drains_in_flight_requests_and_exits_zero(model_dir, tmp_path):
  port = free_port()
  # Requests wait up to 2 s in the queue for batch-mates: they are in flight when SIGTERM comes.
  process, base = start_server(model_dir, port, tmp_path, "--max_wait_ms", "2000",
                               "--max_batch", "4")
  try:
    text = shared.TRAIN_EXAMPLES[0][0]
    status, answer = http("POST", base + "/v1/extract", {"text": text, "types": ["地点", "组织"]})
    assert status == 200 and len(answer["results"][0]["entities"]) == 3
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      futures = [pool.submit(http, "POST", base + "/v1/extract",
                             {"text": text, "types": types})
                 for types in (["地点"], ["组织"], ["地点", "组织"])]
      time.sleep(0.5)  # the three are queued, waiting for a fourth window
      process.send_signal(signal.SIGTERM)
      results = [future.result(timeout=120) for future in futures]
    assert [status for status, _ in results] == [200, 200, 200], results
    for (_, body), types in zip(results, (["地点"], ["组织"], ["地点", "组织"])):
      entities = body["results"][0]["entities"]
      assert entities and {entity["type"] for entity in entities} <= set(types)
    assert process.wait(timeout=120) == 0, (tmp_path / "server.log").read_text()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
      http("GET", base + "/health", timeout=5)
  finally:
    if process.poll() is None:
      process.kill()
