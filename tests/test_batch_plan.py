"""Tests for punified_jax.batch_plan and the Extractor's cost-planned batches."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from punified_jax import batch_plan
from punified_jax import generate
from punified_jax import inference
from punified_jax import model as model_lib
from punified_jax import vocab as vocab_lib

import test_inference as shared

pytestmark = pytest.mark.usefixtures("fast_compiles")

BUCKETS = generate.input_buckets(256)  # (32, 48, 64, 96, 128, 192, 256)
Batch = batch_plan.Batch


def _plan(lengths, steps=60, batch_size=32):
  return batch_plan.plan_batches(lengths, [steps] * len(lengths), BUCKETS,
                                 batch_plan.row_options(batch_size))


def test_one_long_window_is_decoded_alone_not_padding_the_short_ones():
  assert _plan([40] * 31 + [200]) == [Batch(0, 31, 32), Batch(31, 32, 1)]
  # The old plan pads all 32 to 256; the estimate says so too.
  steps = [60] * 32
  old = batch_plan.consecutive_plan(32, 32)
  assert old == [Batch(0, 32, 32)]
  new_cost = batch_plan.plan_cost(_plan([40] * 31 + [200]), [40] * 31 + [200], steps, BUCKETS)
  old_cost = batch_plan.plan_cost(old, [40] * 31 + [200], steps, BUCKETS)
  assert new_cost < old_cost / 2


def test_literal_plans():
  assert _plan([40] * 64) == [Batch(0, 32, 32), Batch(32, 64, 32)]  # full batches stay
  # 5 windows: 3 padded rows cost more than a second call.
  assert _plan([40] * 5) == [Batch(0, 4, 4), Batch(4, 5, 1)]
  # 20 short + 12 of bucket 128: two batches of 16, four short ones padded to 128.
  assert _plan([40] * 20 + [100] * 12) == [Batch(0, 16, 16), Batch(16, 32, 16)]
  assert _plan([]) == []
  assert _plan([40] * 3, batch_size=1) == [Batch(0, 1, 1), Batch(1, 2, 1), Batch(2, 3, 1)]


def test_row_options_and_mean_cache_length_literal():
  assert batch_plan.row_options(32) == (1, 2, 4, 8, 16, 32)
  assert batch_plan.row_options(12) == (1, 2, 4, 8, 12)
  assert batch_plan.row_options(1) == (1,)
  assert batch_plan.row_options(32, lambda n: -(-n // 8) * 8) == (8, 16, 32)  # 8-way data axis
  assert batch_plan.mean_cache_length(10) == 64.0
  assert batch_plan.mean_cache_length(100) == (64 * 64 + 36 * 128) / 100
  assert batch_plan.estimated_steps(null_target_length=20, text_tokens=30, limit=256) == 36
  assert batch_plan.estimated_steps(null_target_length=20, text_tokens=300, limit=64) == 64


def test_spread_rows_leaves_batches_for_every_thread_literal():
  options = batch_plan.row_options(32)
  # 64 windows: 4 batches of 16 for one thread, 8 batches of 8 for two.
  assert batch_plan.spread_rows(options, 64, threads=1) == (1, 2, 4, 8, 16)
  assert batch_plan.spread_rows(options, 64, threads=2) == (1, 2, 4, 8)
  assert batch_plan.spread_rows(options, 256, threads=2) == options  # long inputs keep all
  assert batch_plan.spread_rows(options, 3, threads=2) == (1,)  # at least the smallest
  assert batch_plan.spread_rows((8, 16, 32), 40, threads=2) == (8,)  # 8-way data axis
  with pytest.raises(ValueError, match="threads"):
    batch_plan.spread_rows(options, 64, threads=0)


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="sorted"):
    _plan([50, 40])
  with pytest.raises(ValueError, match="step estimates"):
    batch_plan.plan_batches([40, 50], [1], BUCKETS, (1, 2))
  with pytest.raises(ValueError, match="largest bucket"):
    _plan([300])
  with pytest.raises(ValueError, match="batch_size"):
    batch_plan.row_options(0)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    windows=st.lists(st.tuples(st.integers(1, 256), st.integers(1, 256)), max_size=80),
    batch_size=st.integers(1, 40), beam_size=st.sampled_from([1, 4]))
def test_plan_covers_every_window_once_with_allowed_rows_and_never_costs_more(
    windows, batch_size, beam_size):
  windows.sort()
  lengths = [length for length, _ in windows]
  steps = [step for _, step in windows]
  rows = batch_plan.row_options(batch_size)
  plan = batch_plan.plan_batches(lengths, steps, BUCKETS, rows, beam_size=beam_size)
  # Contiguous runs of the sorted order, in order, covering it exactly once.
  ends = [batch.end for batch in plan]
  assert [batch.begin for batch in plan] == ([0] + ends)[:len(plan)]
  assert ends[-1:] == ([len(lengths)] if lengths else [])
  for batch in plan:
    assert batch.rows in rows and batch.end - batch.begin <= batch.rows <= batch_size
    # The fewest allowed rows that hold the batch.
    assert batch.rows == min(r for r in rows if r >= batch.end - batch.begin)
  cost = batch_plan.plan_cost(plan, lengths, steps, BUCKETS, beam_size=beam_size)
  old = batch_plan.consecutive_plan(len(lengths), batch_size)
  assert cost <= batch_plan.plan_cost(old, lengths, steps, BUCKETS, beam_size=beam_size)
  assert plan == batch_plan.plan_batches(lengths, steps, BUCKETS, rows, beam_size=beam_size)


# ------------------------------------------------------------------------------------------
# The Extractor: cost-planned batches give the entities of consecutive chunks.
# ------------------------------------------------------------------------------------------

# Four short windows and a long one: consecutive chunks pad the long one to a batch of 4.
TEXTS = ["北京大学在北京。", "上海", "", "张三去了北京大学", "组织",
         "李四在深圳的公司工作：经理；一二三四五六七八九十。张三去了(上海),没有去北京。"]


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory):
  return vocab_lib.get_vocabulary(shared.train_vocab(tmp_path_factory.mktemp("sp")))


@pytest.fixture(scope="module")
def config(sp_vocab):
  return shared.tiny_config(sp_vocab.vocab_size)


@pytest.fixture(scope="module")
def planned_pairs(config, sp_vocab):
  """(cost-planned, consecutive) Extractors of one random model, greedy and beam 4, inputs up
  to 64 tokens (buckets 32, 48, 64) so that lengths differ between batches."""
  params = shared.random_params(config, seed=1)
  def make(beam_size, batching):
    return inference.Extractor(model_lib.Transformer(config), params, sp_vocab,
                               beam_size=beam_size, batch_size=shared.BATCH_SIZE,
                               max_input_length=64, max_decode_length=128, batching=batching)
  return {beam: (make(beam, "cost"), make(beam, "consecutive")) for beam in (1, 4)}


def _record_batches(monkeypatch, extractor) -> list:
  shapes = []
  decode = extractor.decoder.decode
  def recording(model, params, rows, *args, **kwargs):
    shapes.append(rows.shape)
    return decode(model, params, rows, *args, **kwargs)
  monkeypatch.setattr(extractor.decoder, "decode", recording)
  return shapes


@pytest.mark.parametrize("beam_size", [1, 4])
def test_extractor_plans_by_cost_with_the_same_entities(planned_pairs, monkeypatch, beam_size):
  planned, consecutive = planned_pairs[beam_size]
  assert planned.batching == "cost" and consecutive.batching == "consecutive"
  planned_shapes = _record_batches(monkeypatch, planned)
  consecutive_shapes = _record_batches(monkeypatch, consecutive)
  got = planned.extract(TEXTS, types=list(shared.TYPES))
  want = consecutive.extract(TEXTS, types=list(shared.TYPES))
  # The case under test happened: the plans decoded different batches.
  assert sorted(planned_shapes) != sorted(consecutive_shapes)
  assert [shared._plain(e) for e in got] == [shared._plain(e) for e in want]
  for a, b in zip(got, want):
    np.testing.assert_allclose([e["score"] for e in a], [e["score"] for e in b], rtol=1e-5)


def test_batching_is_checked(config, sp_vocab, planned_pairs):
  with pytest.raises(ValueError, match="batching must be one of"):
    inference.Extractor(model_lib.Transformer(config), None, sp_vocab, batching="sorted")
  planned, _ = planned_pairs[1]
  windows = planned.plan_windows("北京", shared.TYPES)
  with pytest.raises(ValueError, match="batching must be one of"):
    planned.decode_windows(windows, batching="by_bucket")
