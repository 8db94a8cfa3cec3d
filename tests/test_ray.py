"""Ray tests on a small local Ray instance (2 CPUs): corpus extraction on Ray Data (one model per
actor) gives the local run's shards; Ray Serve puts 2 replicas behind one endpoint, both answer,
and with one replica killed under requests every request is still answered (200, failed over
to the other replica by the router, or 503), never 500, none hangs. Skips outside CI when Ray (the `ray` extra) is not installed; fails under CI."""

import asyncio
import json
import os
import threading
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


class FakeReplicas:
  """Stands in for the router's deployment handle: each `forward.remote` call takes the next
  outcome (an exception to raise, seconds to sleep, or an answer)."""

  def __init__(self, *outcomes):
    self.outcomes = list(outcomes)
    self.calls = 0
    self.forward = self

  def remote(self, *args):
    self.calls += 1
    outcome = self.outcomes.pop(0)

    async def answer():
      if isinstance(outcome, BaseException):
        raise outcome
      if isinstance(outcome, float):
        await asyncio.sleep(outcome)
      return outcome
    return answer()


def forward(router):
  return asyncio.run(router.forward("POST", "/v1/extract", b"", [], b"{}"))


def test_router_fails_over_once_then_answers_503():
  from ray import exceptions  # pylint: disable=g-import-not-at-top
  from punified_jax.serving import ray_serve  # pylint: disable=g-import-not-at-top
  answer = (200, [(b"content-type", b"application/json"), (b"x-test", b"1")], b'{"ok": 1}')
  # The replica died under the request: retried once on another, the caller never sees it.
  replicas = FakeReplicas(exceptions.ActorDiedError(), answer)
  router = ray_serve.FailoverRouter(replicas)
  response = forward(router)
  assert (response.status_code, response.body, response.headers["x-test"]) == (
      200, b'{"ok": 1}', "1")
  assert response.headers["x-punified-failover"] == "1"
  assert replicas.calls == 2 and router.failovers == 1
  # Both attempts fail (dead, then unreachable): 503 with Retry-After, not 500.
  unavailable = exceptions.ActorUnavailableError("connection lost", None)
  router = ray_serve.FailoverRouter(FakeReplicas(exceptions.ActorDiedError(), unavailable))
  response = forward(router)
  assert response.status_code == 503 and response.headers["retry-after"] == "1"
  assert json.loads(response.body)["error"]["status"] == 503
  # No answer within the deadline: 503, not a hang.
  router = ray_serve.FailoverRouter(FakeReplicas(5.0), deadline=0.05)
  assert forward(router).status_code == 503
  # Any other error is a bug, not a dead replica: it propagates (Serve logs it, 500).
  with pytest.raises(ValueError):
    forward(ray_serve.FailoverRouter(FakeReplicas(ValueError("bug"))))


def test_call_asgi_runs_the_service_app_in_process():
  from starlette.applications import Starlette  # pylint: disable=g-import-not-at-top
  from starlette.requests import Request  # pylint: disable=g-import-not-at-top
  from starlette.responses import JSONResponse  # pylint: disable=g-import-not-at-top
  from starlette.routing import Route  # pylint: disable=g-import-not-at-top
  from punified_jax.serving import ray_serve  # pylint: disable=g-import-not-at-top

  async def echo(request: Request):
    return JSONResponse({"body": (await request.body()).decode(), "q": request.url.query,
                         "h": request.headers.get("x-in")}, status_code=201,
                        headers={"Retry-After": "3"})

  app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
  status, headers, body = asyncio.run(ray_serve.call_asgi(
      app, "POST", "/echo", b"a=1", [(b"x-in", b"v")], b"hello"))
  assert status == 201 and (b"retry-after", b"3") in headers
  assert json.loads(body) == {"body": "hello", "q": "a=1", "h": "v"}
  status, _, _ = asyncio.run(ray_serve.call_asgi(app, "GET", "/nowhere", b"", [], b""))
  assert status == 404


def test_ray_serve_replicas_behind_one_endpoint(model_dir, local_ray):
  from punified_jax.serving import ray_serve  # pylint: disable=g-import-not-at-top
  port = corpus_tests_free_port()
  ray_serve.run(model_dir=model_dir, num_replicas=2, router_replicas=2, port=port,
                num_cpus_per_replica=0.5, batch_size=shared.BATCH_SIZE, max_wait_ms=5.0)
  base = f"http://127.0.0.1:{port}"
  try:
    deployments = serve.status().applications["punified"].deployments
    running = {name: {str(getattr(state, "value", state)): count
                      for state, count in deployments[name].replica_states.items()}
               for name in (ray_serve.ROUTER_NAME, ray_serve.REPLICA_NAME)}
    assert running == {ray_serve.ROUTER_NAME: {"RUNNING": 2},
                       ray_serve.REPLICA_NAME: {"RUNNING": 2}}, running
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
    # Kill one replica while 4 clients keep requests in flight: every request is answered,
    # 200 (served, or retried on the other replica by the router) or 503, never 500; none
    # hangs (the client timeout would show as a transport error).
    body = {"texts": [text] * 8, "types": ["地点", "组织"]}
    statuses, errors, lock = [], [], threading.Lock()
    stop = threading.Event()

    def client():
      for _ in range(30):  # bounded
        if stop.is_set():
          return
        try:
          status = http("POST", base + "/v1/extract", body, timeout=120)[0]
        except OSError as error:
          with lock:
            errors.append(repr(error))
          continue
        with lock:
          statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
      thread.start()
    while len(statuses) < 4 and any(t.is_alive() for t in threads):
      time.sleep(0.05)
    name, namespace = ray_serve.replica_actor_names()[0]
    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    killed_at = len(statuses)
    time.sleep(3)
    stop.set()
    for thread in threads:
      thread.join(300)
    assert not errors, errors
    assert statuses and set(statuses) <= {200, 503}, statuses
    assert statuses[killed_at:].count(200) >= 1  # the surviving replica goes on serving
  finally:
    serve.shutdown()


def corpus_tests_free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]
