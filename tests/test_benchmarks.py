"""Cheap checks of the benchmark scripts' pure helpers (no timing, no real data, no torch)."""

import os
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import common
from benchmarks import extract_throughput
from benchmarks import file_barrier
from benchmarks import report
from benchmarks import turns
from benchmarks import train_throughput


def _example(inputs, targets):
  return {"inputs": np.asarray(inputs, np.int32), "targets": np.asarray(targets, np.int32)}


def test_forward_flops_on_a_literal_shape():
  shape = common.Shape(vocab=10, d_model=4, heads=2, d_kv=2, d_ff=8, enc_layers=1, dec_layers=1)
  # encoder: 3 tokens * (qkvo 4*4*4 + mlp 3*4*8 + attention 2*3*4) = 552 multiply-adds
  # decoder: 2 tokens * (self 64 + 2*2*4, cross q/o 2*4*4 + 2*3*4, mlp 96) + k/v of 3 encoder
  #          tokens 3*2*4*4 = 560; head 2 * 4 * 10 = 80.  FLOPs = 2 * (552 + 560 + 80).
  assert common.forward_flops(shape, batch=1, in_len=3, out_len=2) == 2384.0
  assert common.train_step_flops(shape, batch=1, in_len=3, out_len=2) == 3 * 2384.0
  assert common.forward_flops(shape, batch=5, in_len=3, out_len=2) == 5 * 2384.0


def test_cpu_peak_from_flags():
  assert common.cpu_peak_flops(2, 2.6, ["avx512f", "avx512_bf16"]) == pytest.approx(332.8e9)
  assert common.cpu_peak_flops(2, 2.6, ["avx512f", "avx512_bf16"], bf16=True) == pytest.approx(665.6e9)
  assert common.cpu_peak_flops(2, 2.6, ["avx512f"], bf16=True) == pytest.approx(332.8e9)
  assert common.cpu_peak_flops(1, 1.0, ["avx2", "fma"]) == pytest.approx(32e9)


def test_pad_batch_and_padding_accounting():
  batch = common.pad_batch([_example([5, 6, 1], [8, 1]), _example([7, 1], [9, 9, 9, 1])])
  np.testing.assert_array_equal(batch.input_ids, [[5, 6, 1], [7, 1, 0]])
  np.testing.assert_array_equal(batch.labels, [[8, 1, 0, 0], [9, 9, 9, 1]])
  np.testing.assert_array_equal(batch.decoder_input_ids, [[0, 8, 1, 0], [0, 9, 9, 9]])
  assert batch.real_target_tokens == 6
  assert batch.real_input_tokens == 5
  assert batch.computed_tokens == 14
  stats = common.padding_stats([batch])
  assert stats["real_fraction"] == pytest.approx(11 / 14)
  assert stats["target_real_fraction"] == pytest.approx(6 / 8)


def test_pad_batch_rejects_an_empty_batch():
  with pytest.raises(ValueError, match="empty batch"):
    common.pad_batch([])


def test_packed_stats_counts_segments_and_real_tokens():
  batch = {"encoder_input_tokens": np.array([[4, 1, 5, 1, 0, 0]]),
           "decoder_target_tokens": np.array([[6, 1, 7, 7, 1, 0]]),
           "decoder_segment_ids": np.array([[1, 1, 2, 2, 2, 0]])}
  assert common.packed_stats(batch) == {"real_tokens": 9, "computed_tokens": 12, "target_tokens": 5,
                                        "examples": 2}


def test_paper_batches_drop_the_partial_batch():
  assert common.paper_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5]]


def test_uniform_mixture_draw_uses_every_pool_and_rejects_empty_ones():
  pools = {"a": ["a1", "a2"], "b": ["b1"]}
  drawn = common.uniform_mixture_draw(pools, 200, np.random.default_rng(0))
  assert len(drawn) == 200
  assert {x[0] for x in drawn} == {"a", "b"}
  assert 60 < sum(x[0] == "a" for x in drawn) < 140  # uniform over datasets, not over examples
  with pytest.raises(ValueError, match="non-empty"):
    common.uniform_mixture_draw({"a": [], "b": ["b1"]}, 3, np.random.default_rng(0))


def test_length_grouped_batches_sort_within_a_megabatch():
  examples = [_example([2] * n, [3]) for n in (1, 5, 2, 4, 3, 6)]
  batches = common.length_grouped_batches(examples, batch_size=2, megabatch=3, rng=np.random.default_rng(0))
  lengths = sorted(sorted(len(e["inputs"]) for e in b) for b in batches)
  assert lengths == [[1, 2], [3, 4], [5, 6]]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=4, max_size=60), st.integers(1, 4), st.integers(1, 5))
def test_length_grouped_batches_keep_every_full_batch_example(lengths, batch_size, megabatch):
  examples = [_example([2] * n, [3] * (i % 3 + 1)) for i, n in enumerate(lengths)]
  batches = common.length_grouped_batches(examples, batch_size, megabatch, np.random.default_rng(1))
  assert all(len(b) == batch_size for b in batches)
  kept = sorted(id(e) for b in batches for e in b)
  assert len(set(kept)) == len(kept)
  # Only the tail of each mega-batch that does not fill a batch can be dropped.
  span = batch_size * megabatch
  expected = sum((min(span, len(examples) - s) // batch_size) * batch_size for s in range(0, len(examples), span))
  assert len(kept) == expected


def test_time_to_loss_skips_the_first_step_and_uses_a_running_mean():
  seconds = [10.0] + [1.0] * 14
  losses = [5.0] * 5 + [1.0] * 10
  # The mean of the last 10 losses first reaches <= 3.0 at step 10 (5 fives, 5 ones -> 3.0).
  assert train_throughput.time_to_loss(seconds, losses, 3.0) == (9.0, 10)
  assert train_throughput.time_to_loss(seconds, losses, 0.5) == (None, None)


def test_running_mean_min_is_the_best_ten_step_mean():
  assert train_throughput.running_mean_min([4.0] * 10 + [2.0] * 10) == pytest.approx(2.0)
  assert train_throughput.running_mean_min([4.0] * 10 + [2.0] * 5) == pytest.approx(3.0)
  assert train_throughput.running_mean_min([1.0] * 9) == float("inf")  # too short to judge


def test_read_model_gin_reads_the_tiny_shape():
  fields = train_throughput.read_model_gin("tiny")
  assert fields == {"dropout_rate": 0.0, "emb_dim": 32, "num_heads": 2, "head_dim": 8, "mlp_dim": 64,
                    "num_encoder_layers": 2, "num_decoder_layers": 2, "relative_attention_num_buckets": 32,
                    "relative_attention_max_distance": 128, "logits_via_embedding": False,
                    "decoder_start_token_id": 0}
  with pytest.raises(FileNotFoundError, match="no_such_size.gin"):
    train_throughput.read_model_gin("no_such_size")


def test_extract_batches_by_length_sorts_pads_and_keeps_the_order():
  batches, order = extract_throughput.batches_by_length([[5, 5, 1], [6, 1], [7, 7, 7, 1], [8, 1]], 2)
  assert order == [1, 3, 0, 2]
  np.testing.assert_array_equal(batches[0], [[6, 1], [8, 1]])
  np.testing.assert_array_equal(batches[1], [[5, 5, 1, 0], [7, 7, 7, 1]])


def test_extract_pass_figures_report_the_median_pass():
  figures = extract_throughput.pass_figures([1.0, 4.0, 2.0], 10)
  assert figures == {"pass_seconds": [1.0, 4.0, 2.0], "pass_s": 2.0, "sentences_per_s": 5.0}


def test_paired_speedups_pair_pass_n_with_pass_n():
  figures = extract_throughput.paired_speedups([0.5, 1.0, 0.25], [2.0, 3.0, 2.0])
  assert figures == {"paired_speedups": [4.0, 3.0, 8.0], "paired_speedup": 4.0}


def test_file_barrier_releases_every_party_once_all_arrived(tmp_path):
  released = []
  def party(name):
    file_barrier.arrive(str(tmp_path), "pass_0", name, 2, timeout_s=30)
    released.append(name)
  other = threading.Thread(target=party, args=("hf",))
  other.start()
  party("driver")
  other.join(timeout=30)
  assert sorted(released) == ["driver", "hf"]
  assert sorted(os.listdir(tmp_path)) == ["pass_0.driver", "pass_0.hf"]


def test_file_barrier_times_out_and_does_not_count_a_longer_name(tmp_path):
  with pytest.raises(TimeoutError, match="pass_2"):
    file_barrier.arrive(str(tmp_path), "pass_2", "driver", 2, timeout_s=0.05)
  # An arrival at pass_10 is not one at pass_1.
  open(tmp_path / "pass_10.hf", "w").close()
  with pytest.raises(TimeoutError, match="pass_1'"):
    file_barrier.arrive(str(tmp_path), "pass_1", "driver", 2, timeout_s=0.05)


def test_turns_alternate_and_report_a_gone_or_out_of_step_worker():
  driver = turns.DriverTurns()
  worker = turns.Turns(driver.child_fds["read_fd"], driver.child_fds["write_fd"])
  log = []
  def work():
    worker.send("loaded")
    for name in ("1_greedy_warmup", "1_greedy_0"):
      worker.expect(name)
      log.append(f"hf {name}")
      worker.send(name)
  thread = threading.Thread(target=work)
  thread.start()
  driver.expect("loaded")
  for name in ("1_greedy_warmup", "1_greedy_0"):
    log.append(f"ours {name}")
    driver.turn(name)  # returns only after the worker's section
  thread.join(timeout=30)
  assert log == ["ours 1_greedy_warmup", "hf 1_greedy_warmup", "ours 1_greedy_0", "hf 1_greedy_0"]
  worker.send("4_exact_0")
  with pytest.raises(RuntimeError, match="expected '1_greedy_1', got '4_exact_0'"):
    driver.expect("1_greedy_1")
  with pytest.raises(ValueError, match="one line"):
    driver.send("a\nb")
  driver.close_child_fds()  # the worker's ends closed: as when its process ends
  with pytest.raises(turns.PartyGone):
    driver.expect("1_greedy_1")


def test_decoding_report_puts_each_extractor_search_against_hf():
  payload = {"command": "c", "machine": {}, "dataset": "cluener", "results": [
      {"side": "hf_generate", "beam": 1, "pass_s": 2.0, "macro_f1": 13.0},
      {"side": "decode_batch_constrained_stepwise", "beam": 1, "pass_s": 1.0, "macro_f1": 18.3},
      {"side": "ours_constrained", "beam": 1, "pass_s": 0.4, "macro_f1": 18.3, "speedup_vs_hf": 5.0,
       "paired_speedup": 5.5, "paired_speedups": [5.5, 4.0, 6.0], "calls_per_token": 1.0},
      {"side": "ours_constrained_fast", "beam": 1, "pass_s": 0.5, "macro_f1": 18.3,
       "speedup_vs_hf": 4.0, "calls_per_token": 0.14}]}
  lines = report.decoding_report(payload).splitlines()
  assert lines[-2:] == [
      "| cluener | 1 | allowed | 0.4 | 2 | 5 | 5.5 | 5.50, 4.00, 6.00 | 18.30 / 18.30 / 13.00 | 1 |",
      "| cluener | 1 | fast | 0.5 | 2 | 4 | — |  | 18.30 / 18.30 / 13.00 | 0.14 |"]
  payload["settings"] = {"extractor_searches": "auto,fast"}  # the row of the default: "auto"
  assert "| cluener | 1 | auto: fast | 0.4 |" in report.decoding_report(payload)


def test_measured_clock_is_plausible_or_absent():
  clocks = common.measure_clock_ghz(1)
  if clocks is None:
    pytest.skip("no gcc or not x86-64: the benchmarks fall back to BogoMIPS / 2")
  assert len(clocks) == 1 and 0.3 < clocks[0] < 7.0


def test_stream_command_reports_each_line_with_its_time_and_the_exit_code():
  seen = []
  code, lines = common.stream_command(
      [sys.executable, "-c", "print('one'); print('two'); raise SystemExit(3)"],
      dict(os.environ), 60, lambda line, now: seen.append((line.rstrip(), now >= 0)))
  assert code == 3
  assert lines == ["one", "two"]
  assert seen == [("one", True), ("two", True)]


def test_stream_command_kills_a_command_past_its_timeout():
  code, lines = common.stream_command(
      [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
      dict(os.environ), 1, lambda line, now: None)
  assert code != 0
  assert lines == ["started"]


def test_committed_results_hold_no_sentence_text():
  """Benchmark results name datasets and directories, never their sentences: no result file
  has a "text" string or the decoded-output samples extract_throughput once wrote (a
  bootstrap's "samples" count is a number)."""
  import json  # pylint: disable=g-import-not-at-top

  def texts(value):
    if isinstance(value, dict):
      return [key for key, item in value.items()
              if (key == "text" and isinstance(item, str))
              or (key == "samples" and not isinstance(item, (int, float)))] + [
          found for item in value.values() for found in texts(item)]
    if isinstance(value, list):
      return [found for item in value for found in texts(item)]
    return []

  names = sorted(name for name in os.listdir(common.RESULTS_DIR) if name.endswith(".json"))
  assert names
  for name in names:
    with open(os.path.join(common.RESULTS_DIR, name), encoding="utf-8") as handle:
      assert not texts(json.load(handle)), name
