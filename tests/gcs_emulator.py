"""A Google Cloud Storage emulator for the tests: `gcp-storage-emulator` (PyPI) on 127.0.0.1.

`gcs_emulator` (a session fixture, registered in conftest.py) starts it in a thread of the
test process on a free port (bound as port 0, so there is no race for the number), in memory,
and points every client at it through the environment, which subprocesses inherit:

    STORAGE_EMULATOR_HOST          gcsfs (and so etils.epath / our storage layer)
    TENSORSTORE_GCS_HTTP_URL       TensorStore, which writes orbax's arrays
    GOOGLE_AUTH_TOKEN_FOR_TESTING  TensorStore's credentials (the emulator checks none)

It yields an `Emulator` whose `bucket()` creates a fresh bucket, so tests never see each
other's objects.  Start-up takes a fraction of a second; the server is shut down (and the
environment restored) at the end of the session.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import threading
from http import server as http_server
from functools import partial

import pytest

_ENV = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING")


class _QuietHTTPServer(http_server.HTTPServer):
  """One request at a time (the emulator's storage is not thread-safe); a client that closes a
  connection early (TensorStore after a HEAD-like probe) is not a test failure worth a traceback."""

  def handle_error(self, request, client_address):
    logging.getLogger(__name__).debug("emulator: client %s closed early", client_address)


@dataclasses.dataclass
class Emulator:
  url: str
  storage: object
  _counter: itertools.count = dataclasses.field(default_factory=itertools.count)

  def bucket(self, prefix: str = "test") -> str:
    """Creates a new empty bucket and returns its name."""
    from gcp_storage_emulator.handlers import buckets  # pylint: disable=g-import-not-at-top
    name = f"{prefix}-{os.getpid()}-{next(self._counter)}"
    buckets.create_bucket(name, self.storage)
    return name


def _clear_gcsfs_instances() -> None:
  # gcsfs caches file-system objects, which remember the endpoint they were made with.
  import gcsfs  # pylint: disable=g-import-not-at-top
  gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def gcs_emulator():
  from gcp_storage_emulator.server import RequestHandler  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.storage import Storage  # pylint: disable=g-import-not-at-top
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s are normal traffic
  storage = Storage(use_memory_fs=True)
  httpd = _QuietHTTPServer(("127.0.0.1", 0), partial(RequestHandler, storage))
  url = f"http://127.0.0.1:{httpd.server_address[1]}"
  thread = threading.Thread(target=httpd.serve_forever, name="gcs-emulator", daemon=True)
  thread.start()
  previous = {name: os.environ.get(name) for name in _ENV}
  os.environ.update({"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
                     "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"})
  _clear_gcsfs_instances()
  try:
    yield Emulator(url, storage)
  finally:
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
    for name, value in previous.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value
    _clear_gcsfs_instances()
