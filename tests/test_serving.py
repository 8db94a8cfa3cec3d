"""Tests for the HTTP service (punified_jax/serving), in-process through Starlette's TestClient.

The model is test_inference's tiny T5 overfit on its TRAIN_EXAMPLES (literal answers); the
batch size and lengths match test_inference's extractors, so compiled programs are shared.
A gate on the engine's decode step makes queueing, overload, deadlines and readiness
deterministic (no timing assertions). The real-process SIGTERM test is test_serving_process.py.
"""

import argparse
import concurrent.futures
import json
import threading

import numpy as np
import pytest
from starlette.testclient import TestClient

from punified_jax import inference
from punified_jax import prompts
from punified_jax import request_validation as validation
from punified_jax.serving import app as app_lib
from punified_jax.serving import engine as engine_lib
from punified_jax.serving import options as options_lib
from punified_jax.serving import trace as trace_lib

import test_inference as shared

pytestmark = pytest.mark.usefixtures("fast_compiles")

sp_vocab = shared.sp_vocab
vocab_path = shared.vocab_path
config = shared.config
trained_params = shared.trained_params

TEXT0 = shared.TRAIN_EXAMPLES[0][0]
ANSWER0 = [{"type": t, "text": s, "start": a, "end": b}
           for t, s, a, b in [("地点", "北京", 0, 2), ("组织", "北京大学", 3, 7), ("地点", "北京", 9, 11)]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vocab_path, config, trained_params):
  return shared.write_model_dir(tmp_path_factory.mktemp("run"), vocab_path, config,
                                trained_params, step=1)


@pytest.fixture(scope="module")
def extractor(model_dir):
  return inference.Extractor.load(model_dir, batch_size=shared.BATCH_SIZE)


class GatedEngine(engine_lib.Engine):
  """An Engine whose decode waits for `gate` and records every batch it decodes."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.gate = threading.Event()
    self.gate.set()
    self.entered = threading.Semaphore(0)
    self.batches: list[list[tuple[str, tuple[str, ...]]]] = []
    self.rows: list[int] = []  # the batch size each batch ran in

  def decode(self, key, windows, record=True):
    self.entered.release()
    self.gate.wait()
    self.batches.append([(w.text, w.types) for w in windows])
    self.rows.append(self.rows_for(len(windows)))
    return super().decode(key, windows, record)


def make_client(extractor, *, limits=validation.Limits(), beam_sizes=(1, 4), batch_sizes=None,
                **settings):
  engine = GatedEngine(extractor, beam_sizes=beam_sizes, allow_unconstrained=False,
                       limits=limits, batch_sizes=batch_sizes)
  options = dict(max_wait=0.01, max_queue_windows=64, request_timeout=60.0)
  options.update(settings)
  app = app_lib.create_app(engine, app_lib.Settings(**options))
  return TestClient(app), engine


def wait_ready(client):
  service = client.app.state.service
  assert service.ready.wait(300), service.warm_up_error


def without_scores(entities):
  for entity in entities:
    assert 0.9 < entity.pop("score") <= 1.0
  return entities


@pytest.fixture(scope="module")
def client(extractor):
  test_client, engine = make_client(extractor)
  with test_client:
    wait_ready(test_client)
    yield test_client


def test_extract_literal_answer_and_windows(client):
  response = client.post("/v1/extract", json={"texts": [TEXT0, ""], "types": ["地点", "组织"]})
  assert response.status_code == 200
  answer = response.json()
  assert answer["types"] == ["地点", "组织"] and answer["beam_size"] == 4
  assert answer["constrained"] is True
  first, empty = answer["results"]
  assert first["windows"] == [[0, len(TEXT0)]]
  assert without_scores(first["entities"]) == ANSWER0
  assert empty == {"entities": [], "windows": []}
  single = client.post("/v1/extract", json={"text": TEXT0, "types": ["地点", "组织"],
                                            "beam_size": 1}).json()
  assert single["beam_size"] == 1
  assert without_scores(single["results"][0]["entities"]) == ANSWER0


def test_same_answer_as_the_python_api(client, extractor):
  texts = [text for text, _ in shared.TRAIN_EXAMPLES] + ["北京和上海。" * 12]  # a long one
  expected = extractor.extract(texts, types=list(shared.TYPES))
  answer = client.post("/v1/extract", json={"texts": texts, "types": list(shared.TYPES)}).json()
  got = [r["entities"] for r in answer["results"]]
  # The API batches by cost (batch_plan) and the service in its warmed row counts: other
  # batch shapes, so the scores may differ in float rounding (seen: 1e-7).
  np.testing.assert_allclose([x["score"] for e in got for x in e],
                             [x["score"] for e in expected for x in e], rtol=1e-5)
  assert sum(map(len, expected)) > 0
  unscored = lambda results: [[{k: v for k, v in x.items() if k != "score"} for x in e]
                               for e in results]
  assert unscored(got) == unscored(expected)
  assert len(answer["results"][-1]["windows"]) > 1  # windowed, not cut


def test_answer_never_depends_on_batch_mates(extractor):
  """The same request alone and batched with requests of other type lists and lengths gives
  identical entities AND scores (each window is decoded in its own bucket's shape)."""
  alone_client, engine = make_client(extractor, max_wait=1.0)
  request = {"texts": [TEXT0, shared.TRAIN_EXAMPLES[1][0]], "types": ["地点", "组织"]}
  others = [{"text": shared.TRAIN_EXAMPLES[2][0], "types": ["地点"]},
            {"text": "李四在深圳。", "types": ["组织", "名称", "地点"]},
            {"texts": ["北京和上海。" * 6], "types": ["组织"]}]
  with alone_client:
    wait_ready(alone_client)
    engine.batches.clear()
    alone = alone_client.post("/v1/extract", json=request).json()
    engine.gate.clear()  # hold the worker so that everything below queues together
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      futures = [pool.submit(alone_client.post, "/v1/extract", json=body)
                 for body in [request] + others]
      batcher = alone_client.app.state.service.batcher
      while batcher.submitted_jobs < 5:
        threading.Event().wait(0.01)
      engine.gate.set()
      mixed = [future.result() for future in futures]
  assert [response.status_code for response in mixed] == [200] * 4
  assert mixed[0].json() == alone
  assert without_scores(alone["results"][0]["entities"]) == ANSWER0
  # The mixed run really shared batches between different type lists.
  shared_batches = [batch for batch in engine.batches[1:] if len({t for _, t in batch}) > 1]
  assert shared_batches, engine.batches


WORKER_REQUESTS = [{"texts": [TEXT0, shared.TRAIN_EXAMPLES[1][0]], "types": ["地点", "组织"]},
                   {"text": shared.TRAIN_EXAMPLES[2][0], "types": ["地点"]},
                   {"text": "李四在深圳。", "types": ["组织", "名称", "地点"]},
                   {"texts": ["北京和上海。" * 12], "types": ["地点", "组织"]},  # windowed
                   {"text": TEXT0, "types": ["地点", "组织"], "beam_size": 1}]


def answers_with_workers(extractor, workers, batch_sizes):
  """WORKER_REQUESTS sent together to a server with `workers` decoding threads, all queued
  while the workers are held at the gate; with 2 workers, asserts that two batches were being
  decoded at once (both threads inside decode)."""
  test_client, engine = make_client(extractor, batch_sizes=batch_sizes, decode_workers=workers)
  with test_client:
    wait_ready(test_client)
    service = test_client.app.state.service
    assert service.info()["decoding"]["decode_workers"] == workers
    while engine.entered.acquire(blocking=False):
      pass
    engine.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(len(WORKER_REQUESTS)) as pool:
      futures = [pool.submit(test_client.post, "/v1/extract", json=body)
                 for body in WORKER_REQUESTS]
      for _ in range(workers):  # every worker is inside decode (held at the gate) at once
        assert engine.entered.acquire(timeout=60)
      assert service.batcher.busy_workers == workers
      while service.batcher.submitted_jobs < len(WORKER_REQUESTS):
        threading.Event().wait(0.01)
      engine.gate.set()
      responses = [future.result() for future in futures]
    metrics = test_client.get("/metrics").text
    assert f"punified_decode_workers {float(workers)}" in metrics
  assert [response.status_code for response in responses] == [200] * len(WORKER_REQUESTS)
  return [response.json() for response in responses]


@pytest.mark.parametrize("batch_sizes", [None, (1, 4)])
def test_answers_do_not_depend_on_the_number_of_decode_workers(extractor, batch_sizes):
  """The same requests, queued together, answered by 1 and by 2 decoding threads: the same
  entities; with one compiled batch size (None: the extractor's) bit-identical scores, with
  several the batch sizes chosen may differ (scores within float rounding)."""
  one = answers_with_workers(extractor, 1, batch_sizes)
  two = answers_with_workers(extractor, 2, batch_sizes)
  assert without_scores([dict(e) for e in one[0]["results"][0]["entities"]]) == ANSWER0
  assert len(one[3]["results"][0]["windows"]) > 1  # the long text's windows: several batches
  if batch_sizes is None:
    assert one == two
    return
  for answer_one, answer_two in zip(one, two):
    for result_one, result_two in zip(answer_one["results"], answer_two["results"]):
      assert result_one["windows"] == result_two["windows"]
      entities_one, entities_two = result_one["entities"], result_two["entities"]
      assert [{k: v for k, v in e.items() if k != "score"} for e in entities_one] == \
          [{k: v for k, v in e.items() if k != "score"} for e in entities_two]
      assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(entities_one, entities_two))


def test_batcher_drains_every_worker_and_answers_a_job_split_across_them(extractor):
  """A job whose windows are decoded by two workers at once is answered once, with every
  window's entities merged; close() returns after both workers have exited."""
  test_client, engine = make_client(extractor, batch_sizes=(1,), decode_workers=2,
                                    max_wait=0.0)
  body = {"texts": ["北京和上海。" * 12], "types": ["地点", "组织"]}
  with test_client:
    wait_ready(test_client)
    expected = test_client.post("/v1/extract", json=body).json()
    while engine.entered.acquire(blocking=False):
      pass
    engine.batches.clear()
    engine.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      future = pool.submit(test_client.post, "/v1/extract", json=body)
      for _ in range(2):  # two 1-row batches of the same job, one per worker
        assert engine.entered.acquire(timeout=60)
      engine.gate.set()
      split = future.result()
    batcher = test_client.app.state.service.batcher
  # Leaving the client ran the lifespan's drain: every worker thread has exited.
  assert not any(thread.is_alive() for thread in batcher._threads)  # pylint: disable=protected-access
  assert split.status_code == 200 and split.json() == expected
  windows = len(expected["results"][0]["windows"])
  assert windows >= 2 and len(engine.batches) == windows
  assert len(json.loads(split.headers["x-punified-windows"])) == windows


def test_light_load_runs_the_small_program_and_answers_match(extractor):
  """With batch sizes 1 and 4, a lone request runs in the 1-row program and four queued ones
  share one 4-row batch; the entities are the same either way, the scores equal to float
  rounding (two different compiled programs)."""
  test_client, engine = make_client(extractor, batch_sizes=(1, 4), max_wait=1.0)
  body = {"text": TEXT0, "types": ["地点", "组织"]}
  with test_client:
    wait_ready(test_client)
    # Measured times steer the choice; pretend 4 rows cost what one row costs (real decodes
    # below move the 1-row figure by a weight of 0.3 only).
    def pretend():
      engine.batch_seconds.update({((4, True, 32), 1): 1.0, ((4, True, 32), 4): 1.0})
    pretend()
    engine.rows.clear()
    alone = test_client.post("/v1/extract", json=body).json()
    assert engine.rows == [1]  # a lone window runs at once, in the 1-row program
    while engine.entered.acquire(blocking=False):
      pass
    pretend()
    engine.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
      first = pool.submit(test_client.post, "/v1/extract", json=body)
      assert engine.entered.acquire(timeout=60)  # the worker holds it at the gate
      futures = [pool.submit(test_client.post, "/v1/extract", json=body) for _ in range(4)]
      while test_client.app.state.service.batcher.queued_windows < 4:
        threading.Event().wait(0.01)
      engine.gate.set()
      together = [future.result().json() for future in [first] + futures]
  assert engine.rows[1:] == [1, 4]  # the four queued meanwhile share one 4-row batch
  expected = alone["results"][0]["entities"]
  for answer in together:
    entities = answer["results"][0]["entities"]
    assert [{k: v for k, v in e.items() if k != "score"} for e in entities] == \
        [{k: v for k, v in e.items() if k != "score"} for e in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(entities, expected))
  assert without_scores(expected) == ANSWER0


def test_engine_chooses_batch_sizes_and_output_limits(extractor):
  engine = engine_lib.Engine(extractor, beam_sizes=(4,), allow_unconstrained=False,
                             limits=validation.Limits(), batch_sizes=(4, 1, 4))
  assert engine.batch_sizes == (1, 4) and engine.batch_size == 4
  assert [engine.rows_for(n) for n in (1, 2, 3, 4)] == [1, 4, 4, 4]
  key = (4, True, 32)
  # Before measurements: a batch of n rows is guessed to cost sqrt(n) single rows.
  assert [engine.take(key, n) for n in (1, 2, 3, 4)] == [1, 1, 3, 4]
  engine.batch_seconds.update({(key, 1): 1.0, (key, 4): 3.6})  # measured: 0.9 s a window
  assert [engine.take(key, n) for n in (1, 2, 3, 4)] == [1, 1, 1, 4]
  # Idle workers share the queued windows out first: two idle workers and two windows run two
  # 1-row batches side by side; eight windows, two 4-row batches; four windows, a share of two
  # each, run 1 row at a time (a half-padded 4-row batch costs more per window).
  assert [engine.take(key, n, workers=2) for n in (1, 2, 4, 8)] == [1, 1, 1, 4]
  assert engine.full(key, 2, workers=2)
  engine.batch_seconds[(key, 4)] = 1.2  # a 4-row batch now costs 0.3 s a window
  assert [engine.take(key, n) for n in (2, 3, 4)] == [2, 3, 4]
  assert [engine.take(key, n, workers=2) for n in (2, 3, 4, 8)] == [1, 2, 2, 4]
  assert not engine.full(key, 4, workers=2)  # two windows would be padded to four rows
  engine.batch_seconds.update({(key, 1): 1.0, (key, 4): 3.6})
  # A warm-up figure is provisional: the first real batch replaces it, later ones average.
  window = engine.warm_up_windows(32, 1)
  engine.batch_seconds[(key, 1)] = 1000.0
  engine._from_warm_up.add((key, 1))  # pylint: disable=protected-access
  engine.decode(key, window)
  replaced = engine.batch_seconds[(key, 1)]
  assert replaced < 1000.0
  engine.batch_seconds[(key, 1)] = 1000.0
  engine.decode(key, window)
  assert engine.batch_seconds[(key, 1)] > 600.0  # 1000 + 0.3 x (a fraction of a second - 1000)
  assert extractor.max_decode_length == 40
  assert engine.output_limit(32) == 40  # 2.25 x 32 = 72, capped at max_decode_length
  tight = engine_lib.Engine(extractor, beam_sizes=(4,), allow_unconstrained=False,
                            limits=validation.Limits(), output_limit_factor=0.9)
  assert tight.batch_sizes == (shared.BATCH_SIZE,) and tight.output_limit(32) == 29
  off = engine_lib.Engine(extractor, beam_sizes=(4,), allow_unconstrained=False,
                          limits=validation.Limits(), output_limit_factor=0)
  assert off.output_limit(32) == 40
  with pytest.raises(ValueError, match="output_limit_factor"):
    engine_lib.Engine(extractor, beam_sizes=(4,), allow_unconstrained=False,
                      limits=validation.Limits(), output_limit_factor=-1)


def test_extractor_window_api_is_what_extract_does(extractor):
  texts = [TEXT0, "北京和上海。" * 12]
  types = ("地点", "组织")
  windows = [window for index, text in enumerate(texts)
             for window in extractor.plan_windows(text, types, index)]
  assert [w.request for w in windows][0] == 0 and len(windows) > 2  # the long text is split
  per_window = extractor.decode_windows(windows, rows=1)
  merged = [{} for _ in texts]
  for window, entities in zip(windows, per_window):
    for entity in entities:
      key = (entity["type"], entity["start"], entity["end"])
      if key not in merged[window.request] or merged[window.request][key]["score"] < entity["score"]:
        merged[window.request][key] = entity
  expected = extractor.extract(texts, types=list(types))
  got = [sorted(found.values(), key=lambda e: (e["start"], e["end"], e["type"]))
         for found in merged]
  assert [[{k: v for k, v in e.items() if k != "score"} for e in r] for r in got] == \
      [[{k: v for k, v in e.items() if k != "score"} for e in r] for r in expected]
  assert without_scores(got[0]) == ANSWER0
  # A short output limit cuts the output: the items after the cut are lost.
  (cut,) = extractor.decode_windows(windows[:1], max_decode_length=8)
  assert len(cut) < len(ANSWER0)
  with pytest.raises(ValueError, match="rows must be an int >= 1"):
    extractor.decode_windows(windows, rows=0)


@pytest.mark.parametrize("requests, field, message", [
    ([(TEXT0, ["地点"]), ("a\ud800b", ["地点"])], "requests[1].text",
     "requests[1].text contains a lone surrogate"),
    ([(TEXT0, ["地点", "城堡"])], "requests[0].types[1]", "unknown entity type(s) 城堡"),
    ([(TEXT0, "地点")], "requests[0].types", "requests[0].types must be a list of type names"),
    ([TEXT0], "requests[0]", "requests[0] must be a (text, types) pair"),
])
def test_extract_requests_uses_the_request_validator(extractor, requests, field, message):
  with pytest.raises(validation.InvalidRequest) as caught:
    extractor.extract_requests(requests)
  assert caught.value.field == field
  assert caught.value.message.startswith(message), caught.value.message


@pytest.mark.parametrize("body, status, field, message_start", [
    (b'{"text": "\xff"}', 422, "body", "not valid UTF-8: byte 10"),
    (b"[" * 100_000 + b"]" * 100_000, 422, "body", "JSON nested 100000 levels deep"),
    ('{"texts": ["a", "b", "c", "a\\ud800b"], "types": ["地点"]}'.encode(), 422, "texts[3]",
     "texts[3] contains a lone surrogate \\ud800"),
    ('{"text": "x", "types": ["城堡"]}'.encode(), 422, "types[0]",
     "unknown entity type(s) 城堡; known types: 品牌, 商品"),
    (b'{"text": "x", "types": ["' + b"a" * 200 + b'"]}', 422, "types[0]",
     "types[0] is a type name of 200 characters"),
    (json.dumps({"texts": ["x" * 20_001], "types": ["地点"]}).encode(), 413, "texts[0]",
     "texts[0] has 20001 characters"),
    (json.dumps({"text": "😀" * 2001, "types": ["地点"]}).encode(), 413, "text",
     "text: 2001 characters outside the model's vocabulary"),
    (json.dumps({"texts": ["x", "北京。" * 900], "types": ["地点"]}).encode(), 413, "texts[1]",
     "the request needs "),
    (b"x" * (2 << 20), 413, "body", "2097152 bytes, more than the limit 1048576"),
    (b'{"text": "x", "types": ["\xe5\x9c\xb0\xe7\x82\xb9"], "beam_size": 3}', 422, "beam_size",
     "beam_size 3 is not served; choose one of 1, 4"),
])
def test_bad_requests(client, body, status, field, message_start):
  response = client.post("/v1/extract", content=body,
                         headers={"content-type": "application/json"})
  assert response.status_code == status, response.text
  error = response.json()["error"]
  assert error["status"] == status and error["field"] == field
  assert error["message"].startswith(message_start), error["message"]
  assert len(response.content) < 2000  # nothing big is echoed back


def test_health_ready_info_metrics_docs_and_demo(client):
  assert client.get("/health").json() == {"status": "ok"}
  ready = client.get("/ready")
  assert ready.status_code == 200 and ready.json()["ready"] is True
  info = client.get("/info").json()
  assert info["decoding"]["buckets"] == [32] and info["decoding"]["beam_sizes"] == [1, 4]
  assert info["decoding"]["batch_size"] == shared.BATCH_SIZE
  assert info["datasets"]["msra"] == ["地点", "名称", "组织"]
  assert info["limits"]["max_texts"] == 64 and info["model"]["config"]["emb_dim"] == 64
  client.post("/v1/extract", json={"text": TEXT0, "types": ["地点"]})
  client.post("/v1/extract", json={"text": 5, "types": ["地点"]})
  metrics = client.get("/metrics")
  assert metrics.headers["content-type"].startswith("text/plain")
  text = metrics.text
  assert 'punified_requests_total{status="200"}' in text
  assert 'punified_requests_total{status="422"}' in text
  assert 'punified_batches_total{rows="4"}' in text
  for name in ("punified_request_latency_seconds_bucket", "punified_batch_windows_bucket",
               "punified_queue_windows", "punified_texts_total", "punified_characters_total",
               "punified_ready 1.0"):
    assert name in text, name
  schema = client.get("/openapi.json").json()
  assert schema["openapi"].startswith("3.")
  assert "/v1/extract" in schema["paths"]
  assert "openapi.json" in client.get("/docs").text
  page = client.get("/")
  assert page.status_code == 200 and 'id="extract"' in page.text
  assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no CDN
  assert "fetch(\"/v1/extract\"" in client.get("/static/demo.js").text


def test_not_ready_until_warm_up_has_compiled(extractor):
  test_client, engine = make_client(extractor)
  engine.gate.clear()  # warm-up blocks in its first decode
  with test_client:
    assert engine.entered.acquire(timeout=60)
    assert test_client.get("/ready").status_code == 503
    response = test_client.post("/v1/extract", json={"text": "x", "types": ["地点"]})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert test_client.get("/health").status_code == 200
    engine.gate.set()
    wait_ready(test_client)
    assert test_client.get("/ready").status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_overload_gets_429_with_retry_after_and_everything_is_answered(extractor, workers):
  test_client, engine = make_client(extractor, max_queue_windows=3, decode_workers=workers)
  with test_client:
    wait_ready(test_client)
    while engine.entered.acquire(blocking=False):
      pass
    engine.gate.clear()
    body = {"text": TEXT0, "types": ["地点", "组织"]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      # Every worker holds one batch at the gate.
      held = []
      for _ in range(workers):
        held.append(pool.submit(test_client.post, "/v1/extract", json=body))
        assert engine.entered.acquire(timeout=60)
      queued = [pool.submit(test_client.post, "/v1/extract", json=body) for _ in range(3)]
      while test_client.app.state.service.batcher.queued_windows < 3:
        threading.Event().wait(0.01)
      refused = test_client.post("/v1/extract", json=body)
      engine.gate.set()
      answered = [future.result() for future in held + queued]
  assert refused.status_code == 429
  assert int(refused.headers["retry-after"]) >= 1
  assert refused.json()["error"]["message"].startswith("the queue holds 3 of 3 windows")
  assert [r.status_code for r in answered] == [200] * (workers + 3)
  assert all(without_scores(r.json()["results"][0]["entities"]) == ANSWER0 for r in answered)


@pytest.mark.parametrize("workers", [1, 2])
def test_deadline_gives_504_and_drops_the_queued_work(extractor, workers):
  test_client, engine = make_client(extractor, request_timeout=0.5, decode_workers=workers)
  with test_client:
    wait_ready(test_client)
    engine.gate.clear()
    late = test_client.post("/v1/extract", json={"text": TEXT0, "types": ["地点"]})
    decoded_before = len(engine.batches)
    engine.gate.set()
    assert late.status_code == 504
    assert "deadline" in late.json()["error"]["message"]
    again = test_client.post("/v1/extract", json={"text": TEXT0, "types": ["地点", "组织"]})
    assert again.status_code == 200
  # The timed-out request's window had been taken by a worker (it was at the gate) or was
  # dropped; nothing else was decoded for it afterwards.
  assert len(engine.batches) <= decoded_before + 2


def test_answers_carry_their_server_side_breakdown(client, extractor):
  """Server-Timing names every phase; X-Punified-Windows gives each window's output length:
  the tokens of the target the model wrote (the found entities) plus EOS."""
  response = client.post("/v1/extract", json={"text": TEXT0, "types": ["地点", "组织"]})
  assert response.status_code == 200
  phases = trace_lib.parse_server_timing(response.headers["server-timing"])
  assert list(phases) == ["read", "encode", "queue", "decode", "parse", "total"]
  assert phases["decode"] > 0  # total includes decode and queue (each rounded to 0.01 ms)
  assert phases["total"] >= phases["decode"] + phases["queue"] - 0.02
  windows = json.loads(response.headers["x-punified-windows"])
  target = prompts.format_target([(e["type"], e["text"]) for e in ANSWER0], ["地点", "组织"])
  input_tokens = len(extractor.plan_windows(TEXT0, ("地点", "组织"))[0].input_ids)
  assert windows == [{"in": input_tokens, "bucket": 32,
                      "out": len(extractor.vocabulary.encode(target)) + 1,
                      "limit": False, "budget": False,
                      "rows": client.app.state.service.engine.batch_sizes[0],
                      "batch": 1}]
  assert 'punified_gc_pause_seconds_count{generation="0"}' in client.get("/metrics").text


def test_trace_output_lengths_and_rows():
  call = trace_lib.DecoderCall(inputs=np.array([[5, 6, 1, 0], [7, 1, 0, 0], [7, 1, 0, 0]]),
                               tokens=np.array([[3, 4, 1, 0], [3, 3, 3, 3], [1, 0, 0, 0]]),
                               max_decode_length=4, seconds=0.5)
  assert trace_lib.output_lengths(call, eos_id=1) == ([3, 4, 1], [False, True, False])
  assert trace_lib.row_of(call, [7, 1]) == 1  # the first of two identical rows
  assert trace_lib.row_of(call, [5, 6, 1]) == 0
  assert trace_lib.row_of(call, [5, 6]) is None  # a prefix of a longer row is not that row
  trace = trace_lib.RequestTrace(read=0.001, encode=0.002, windows=[
      trace_lib.WindowTrace(10, 32, 3, False, 1, 1, queue_seconds=0.004, decode_seconds=0.01,
                            parse_seconds=0.001)])
  headers = trace.headers(total=0.02)
  assert headers["Server-Timing"] == ("read;dur=1.00, encode;dur=2.00, queue;dur=4.00, "
                                      "decode;dur=10.00, parse;dur=1.00, total;dur=20.00")
  assert json.loads(headers["X-Punified-Windows"]) == [
      {"in": 10, "bucket": 32, "out": 3, "limit": False, "budget": False, "rows": 1,
       "batch": 1}]
  # Two windows decoded in the same batch share its times: counted once, not per window;
  # a window of another batch adds its own.
  shared = dict(queue_seconds=0.004, decode_seconds=0.01, parse_seconds=0.001)
  trace.windows = [trace_lib.WindowTrace(10, 32, 3, False, 4, 2, batch_id=7, **shared),
                   trace_lib.WindowTrace(12, 32, 5, False, 4, 2, batch_id=7, **shared),
                   trace_lib.WindowTrace(9, 32, 2, False, 1, 1, batch_id=8, queue_seconds=0.02,
                                         decode_seconds=0.005, parse_seconds=0.002)]
  assert trace.headers(total=0.05)["Server-Timing"] == (
      "read;dur=1.00, encode;dur=2.00, queue;dur=20.00, decode;dur=15.00, parse;dur=3.00, "
      "total;dur=50.00")


def test_tracing_decoder_records_only_inside_recording(extractor):
  tracer = trace_lib.install(extractor)
  assert trace_lib.install(extractor) is tracer  # wrapped once, whatever the engines
  extractor.extract([TEXT0], types=["地点"])  # outside a block: timed, not kept
  with tracer.recording() as calls:
    extractor.extract([TEXT0], types=["地点"])
  # One window: the Extractor's cost plan decodes it in a 1-row batch (batch_plan).
  assert len(calls) == 1 and calls[0].inputs.shape[0] == 1
  assert calls[0].max_decode_length == extractor.max_decode_length and calls[0].seconds > 0


def test_serve_grammar_rule_flags_reach_the_extractor_and_info(model_dir, client):
  assert client.get("/info").json()["decoding"]["follow_order"] is False  # the default
  assert client.get("/info").json()["decoding"]["output_budget"] == 2.0  # the default
  assert client.get("/info").json()["decoding"]["end_at_repeat"] == 3  # the default
  assert client.get("/info").json()["decoding"]["search"] == "auto"  # the default
  parser = argparse.ArgumentParser()
  options_lib.add_arguments(parser)
  args = parser.parse_args(["--model_dir", model_dir, "--batch_size", str(shared.BATCH_SIZE),
                            "--no_warm_up", "--no_gc_freeze", "--forbid_repeats",
                            "--follow_order", "--output_budget", "0",
                            "--end_at_repeat", "3", "--search", "fast"])
  with TestClient(options_lib.build_app(args)) as ruled:
    decoding = ruled.get("/info").json()["decoding"]
    extractor = ruled.app.state.service.engine.extractor
  assert (decoding["forbid_repeats"], decoding["follow_order"]) == (True, True)
  assert decoding["output_budget"] == 0 and extractor._constraint.budget_factor == 0
  assert decoding["end_at_repeat"] == 3 == extractor._constraint.end_at_repeat
  assert decoding["search"] == "fast" == extractor.search
  # Decode workers default to the decoder's concurrent decodes (the usable cores on CPU).
  assert decoding["decode_workers"] == extractor.decoder.concurrent_decodes() >= 1
  assert parser.parse_args(["--model_dir", model_dir, "--decode_workers", "3"]).decode_workers == 3
  with pytest.raises(SystemExit):
    parser.parse_args(["--model_dir", model_dir, "--decode_workers", "0"])
  assert extractor._constraint.forbid_repeats is True and extractor._constraint.follow_order
