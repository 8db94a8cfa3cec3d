"""Ray tests on a small local Ray instance (2 CPUs): corpus extraction on Ray Data (one model per
actor) gives the local run's shards; Ray Serve puts 2 replicas behind one endpoint, both answer,
and with one replica killed every request is still answered (200, or 503 while Ray replaces
it), none hangs. Skips outside CI when Ray (the `ray` extra) is not installed; fails under CI."""

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from punified_jax.__main__ import main

import test_extract_corpus as corpus_tests
import test_inference as shared
from conftest import FAST_COMPILE_FLAGS

try:
  import ray
  from ray import serve
except ImportError:  # pragma: no cover - depends on the environment
  if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    raise
  pytest.skip("the `ray` extra is not installed (pip install '.[ray]'); runs in CI",
              allow_module_level=True)

pytestmark = pytest.mark.usefixtures("fast_compiles")

sp_vocab = shared.sp_vocab
vocab_path = shared.vocab_path
config = shared.config
trained_params = shared.trained_params
model_dir = corpus_tests.model_dir
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
  env = {"PYTHONPATH": REPO_ROOT, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE_FLAGS,
         "TF_CPP_MIN_LOG_LEVEL": "3",
         "PUNIFIED_XLA_CACHE": str(tmp_path_factory.mktemp("xla"))}
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
           runtime_env={"env_vars": env})
  yield
  ray.shutdown()


def test_extract_corpus_on_ray_data_matches_local(model_dir, local_ray, tmp_path, capsys):
  corpus = tmp_path / "docs.jsonl"
  corpus_tests.write_corpus(corpus)
  output = tmp_path / "ray_out"
  status = main(corpus_tests.corpus_args(model_dir, corpus, output, "--ray", "--ray_actors", "1"))
  assert status == 3
  err = capsys.readouterr().err
  assert "3 to do on Ray Data" in err and "7/7 docs" in err
  corpus_tests.check_outputs(corpus_tests.read_outputs(output))


def http(method, url, body=None, timeout=60.0):
  data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
  request = urllib.request.Request(url, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as error:
    return error.code, None


def test_ray_serve_replicas_behind_one_endpoint(model_dir, local_ray):
  from punified_jax.serving import ray_serve  # pylint: disable=g-import-not-at-top
  port = corpus_tests_free_port()
  ray_serve.run(model_dir=model_dir, num_replicas=2, port=port, num_cpus_per_replica=0.5,
                batch_size=shared.BATCH_SIZE, max_wait_ms=5.0)
  base = f"http://127.0.0.1:{port}"
  try:
    text = shared.TRAIN_EXAMPLES[0][0]
    status, answer = http("POST", base + "/v1/extract", {"text": text, "types": ["地点", "组织"]})
    assert status == 200
    assert [(e["type"], e["text"], e["start"]) for e in answer["results"][0]["entities"]] == [
        ("地点", "北京", 0), ("组织", "北京大学", 3), ("地点", "北京", 9)]
    processes = set()
    for _ in range(40):
      status, info = http("GET", base + "/info")
      assert status == 200 and info["ready"] is True
      processes.add(info["process"])
      if len(processes) == 2:
        break
    assert len(processes) == 2  # two replicas, one endpoint
    # Kill one replica under requests: each is answered (failed over or 503), none hangs.
    replica = next(actor for actor in ray.util.list_named_actors(all_namespaces=True)
                   if "punified_ner" in actor["name"])
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    statuses = [http("POST", base + "/v1/extract", {"text": text, "types": ["地点"]},
                     timeout=120)[0] for _ in range(8)]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1
  finally:
    serve.shutdown()


def corpus_tests_free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]
