"""Concurrent decoding batches (sharded_decoding.map_in_order, MeshDecoder.concurrent_decodes,
Extractor(decode_threads=...)): the same results in the same order, whatever the threads."""

import threading
import time

import jax
import pytest

from punified_jax import batch_plan
from punified_jax import inference
from punified_jax import model as model_lib
from punified_jax import sharded_decoding

import test_inference as shared

pytestmark = pytest.mark.usefixtures("fast_compiles")


def test_map_in_order_keeps_the_order_and_bounds_the_lookahead():
  running, started = [0], []
  lock = threading.Lock()
  peak = [0]

  def work(item):
    with lock:
      running[0] += 1
      peak[0] = max(peak[0], running[0])
      started.append(item)
    time.sleep(0.01 * (5 - item % 5))  # later items finish first
    with lock:
      running[0] -= 1
    return item * item

  results = []
  for result in sharded_decoding.map_in_order(work, range(10), workers=3):
    results.append(result)
    # Never more than `workers` calls submitted beyond what the consumer has taken.
    assert len(started) <= len(results) + 3
  assert results == [i * i for i in range(10)]
  assert 1 < peak[0] <= 3


@pytest.mark.parametrize("mapper", [sharded_decoding.map_in_order,
                                    sharded_decoding.map_as_completed])
@pytest.mark.parametrize("items, workers", [([1, 2, 3], 1), ([1], 4)])
def test_one_worker_or_item_runs_in_order_in_the_callers_thread(mapper, items, workers):
  threads = []
  results = list(mapper(
      lambda item: threads.append(threading.current_thread()) or item + 1, items, workers))
  assert results == [item + 1 for item in items]
  assert set(threads) == {threading.current_thread()}


def test_map_in_order_raises_a_calls_error_at_its_result():
  def work(item):
    if item == 2:
      raise ValueError("batch 2 failed")
    return item

  results = sharded_decoding.map_in_order(work, range(5), workers=2)
  assert [next(results), next(results)] == [0, 1]
  with pytest.raises(ValueError, match="batch 2 failed"):
    next(results)


def test_map_as_completed_hands_results_over_as_they_finish():
  release = threading.Event()
  threads = set()

  def work(item):
    threads.add(threading.current_thread())
    if item == 0:
      assert release.wait(10)  # the first item waits until a later one has been consumed
    return item * item

  results = []
  for result in sharded_decoding.map_as_completed(work, range(6), workers=2):
    results.append(result)
    if result == 25:
      release.set()
  assert sorted(results) == [i * i for i in range(6)]
  assert results[-1] == 0 and results[:-1] == [1, 4, 9, 16, 25]  # item 0 held one thread
  assert threading.current_thread() not in threads and len(threads) == 2


def test_map_as_completed_raises_a_calls_error_and_cancels_the_rest():
  started = []

  def work(item):
    started.append(item)
    if item == 0:
      raise ValueError("batch 0 failed")
    time.sleep(0.05)
    return item

  with pytest.raises(ValueError, match="batch 0 failed"):
    list(sharded_decoding.map_as_completed(work, range(20), workers=2))
  assert len(started) < 20  # queued calls were cancelled, not run


def test_concurrent_decodes_on_this_cpu_mesh(monkeypatch):
  decoder = sharded_decoding.MeshDecoder.create(None)
  assert all(d.platform == "cpu" for d in jax.local_devices())
  monkeypatch.setattr(sharded_decoding.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
  assert decoder.concurrent_decodes() == 2
  monkeypatch.setattr(sharded_decoding.os, "sched_getaffinity", lambda pid: set(range(64)),
                      raising=False)
  assert decoder.concurrent_decodes() == sharded_decoding.MAX_CONCURRENT_DECODES


@pytest.mark.parametrize("beam_size", [1, 3])
def test_extractor_results_do_not_depend_on_decode_threads(shared_model, beam_size,
                                                           monkeypatch):
  # Spreading (batch_plan.spread_rows) plans by the thread count: off here, so that both
  # run the same batches (test_extractor_spreads_a_short_input_over_the_threads covers it).
  monkeypatch.setattr(batch_plan, "BATCHES_PER_THREAD", 0)
  config, params, vocab = shared_model
  make = lambda threads: inference.Extractor(
      model_lib.Transformer(config), params, vocab, beam_size=beam_size, batch_size=2,
      max_input_length=64, max_decode_length=64, decode_threads=threads)
  texts = ["北京大学在北京。", "上海", "Apple（苹果）在上海：北京", "", "张三去了北京大学", "组织",
           "北京" * 9, "上海大学"]
  one, three = make(1), make(3)
  assert (one.decode_threads, three.decode_threads) == (1, 3)
  expected = one.extract(texts, types=list(shared.TYPES))
  got = three.extract(texts, types=list(shared.TYPES))
  assert sum(map(len, expected)) > 0  # entities to compare (the random model finds some)
  assert one.stats["windows"] >= 7 and three.stats["windows"] >= 7
  assert got == expected  # entities, offsets and scores, bit for bit: the same programs


def test_extractor_rejects_bad_decode_threads(shared_model):
  config, params, vocab = shared_model
  for bad in (0, -1, True, 1.5):
    with pytest.raises(ValueError, match="decode_threads"):
      inference.Extractor(model_lib.Transformer(config), params, vocab, decode_threads=bad)


@pytest.fixture(scope="module")
def shared_model(tmp_path_factory):
  vocab = shared.vocab_lib.get_vocabulary(shared.train_vocab(tmp_path_factory.mktemp("vocab")))
  config = shared.tiny_config(vocab.vocab_size)
  return config, shared.random_params(config, seed=1), vocab


def test_extractor_stats_count_every_threads_work(shared_model):
  """The statistics are bumped from several threads at once (the service's decode workers):
  none is lost, and reset_stats clears every thread's."""
  config, params, vocab = shared_model
  extractor = inference.Extractor(model_lib.Transformer(config), params, vocab, beam_size=1,
                                  batch_size=2, max_input_length=64, max_decode_length=64,
                                  decode_threads=1)
  windows = [extractor.plan_windows(text, shared.TYPES, request=i)[0]
             for i, text in enumerate(["北京", "上海大学", "张三"])]
  extractor.decode_windows(windows)  # compiles
  extractor.reset_stats()
  threads = [threading.Thread(target=lambda: [extractor.decode_windows(windows)
                                              for _ in range(5)]) for _ in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert extractor.stats["windows"] == 4 * 5 * 3
  assert extractor.stats["outputs"] == 4 * 5 * 3
  extractor.reset_stats()
  assert extractor.stats.get("windows", 0) == 0


def test_extractor_spreads_a_short_input_over_the_threads(shared_model, monkeypatch):
  """16 windows, batch_size 8, 2 threads: batches of at most 2 rows (4 per thread); the same
  entities as the unspread plan (8-row batches), scores within float rounding; no spreading
  off a local CPU mesh."""
  config, params, vocab = shared_model
  extractor = inference.Extractor(model_lib.Transformer(config), params, vocab, beam_size=1,
                                  batch_size=8, max_input_length=64, max_decode_length=64,
                                  decode_threads=2)
  texts = ["北京", "上海大学", "张三去了北京大学", "组织", "北京大学在北京。", "上海", "李四",
           "南京", "北京" * 3, "苹果公司", "王五在上海", "天津", "大学", "张三", "深圳", "广州"]
  rows_seen = []
  decode = extractor.decoder.decode
  monkeypatch.setattr(extractor.decoder, "decode",
                      lambda model, params, rows, *a, **k: rows_seen.append(len(rows)) or
                      decode(model, params, rows, *a, **k))

  def run(batches_per_thread, local_cpu=True):
    monkeypatch.setattr(batch_plan, "BATCHES_PER_THREAD", batches_per_thread)
    monkeypatch.setattr(extractor.decoder, "on_local_cpu", lambda: local_cpu)
    rows_seen.clear()
    found = extractor.extract(texts, types=list(shared.TYPES))
    return found, list(rows_seen)

  spread, spread_rows = run(4)
  one_plan, one_plan_rows = run(0)
  _, accelerator_rows = run(4, local_cpu=False)
  assert max(spread_rows) == 2 and sum(spread_rows) >= 16
  assert max(one_plan_rows) == 8
  assert accelerator_rows == one_plan_rows
  strip = lambda found: [[{k: v for k, v in e.items() if k != "score"} for e in text]
                         for text in found]
  assert sum(map(len, spread)) > 0
  assert strip(spread) == strip(one_plan)
  for a, b in zip(spread, one_plan):
    for x, y in zip(a, b):
      assert x["score"] == pytest.approx(y["score"], abs=1e-5)
