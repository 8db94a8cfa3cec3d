"""Which windows share a decoding batch: a partition of the length-sorted windows chosen by cost.

Why: a decoding batch is padded to the input bucket of its longest window, and a step's cost
grows with rows x padded positions (BENCHMARKS.md 2h: a 32-row greedy step is bound by reading
the cross- and self-attention caches).  Cutting the sorted windows into consecutive chunks of
`batch_size` rows lets one long window pad a whole chunk: on Resume's first 64 dev sentences,
one sentence over 192 tokens padded 31 short ones to 256 and that batch cost ~0.5 s of the
Extractor's ~0.9 s greedy time.  `plan_batches` instead splits the sorted order where it pays,
e.g. 31 short windows + 1 long one -> the short ones in a batch of 32 at their bucket and the
long one alone in a batch of 1.

The plan is a dynamic programme over the sorted order (a batch is a contiguous run of it: with
a cost that grows with the batch's longest window and its row count, an optimal partition
never interleaves lengths), minimising `CostModel.batch_cost` summed over batches.  Row counts
come from `row_options` (powers of two up to batch_size, rounded to the mesh's data axis), so
the compiled batch shapes stay a small bounded set: rows x input buckets x output limits.

Cost model (`CostModel`; constants measured by benchmarks/batch_cost.py, BENCHMARKS.md 2j), in
CPU milliseconds, for a batch of R rows, beam B, input bucket P, S steps:

    call + encoder * R * P + S * (step + R * B * (row_step + position * (P + mean cache length)))

`call`: the fixed cost of one decode call (dispatch, set-up, copying results back);
`encoder`: encoding one padded input position (the encoder and the cross-attention keys and
values: padding costs here as much as real tokens); `step`: a step's cost that does not grow
with rows (the decoder's weights, the loop);
`row_step`: a row's per-step cost besides attention (its share of the matmuls and the output
layer's per-token log-prob after the loop); `position`: reading one position of the cross-
and self-attention caches.  S is estimated per window (`estimated_steps`: the all-NULL target
of its types plus a share of its text tokens) and a batch takes its longest window's.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Callable, Optional, Sequence

from punified_jax import generate


@dataclasses.dataclass(frozen=True)
class Batch:
  """windows[begin:end] of the sorted order, decoded as one batch of `rows` rows."""
  begin: int
  end: int
  rows: int


@dataclasses.dataclass(frozen=True)
class CostModel:
  """CPU milliseconds of one decode call (module docstring)."""
  call: float
  encoder: float
  step: float
  row_step: float
  position: float

  def batch_cost(self, rows: int, bucket: int, steps: int, beam_size: int = 1) -> float:
    return self.call + self.encoder * rows * bucket + steps * (self.step + rows * beam_size * (
        self.row_step + self.position * (bucket + mean_cache_length(steps))))


# Fitted by benchmarks/batch_cost.py on the `mini` bench model on this project's shared 2-core
# CPU VM (BENCHMARKS.md 2j; rounded).  A beam hypothesis' step costs ~2.7x a greedy row's (the
# beam bookkeeping, top-k over beams x candidates).  Other models and machines differ in the
# constants, but the plan only depends on their ratios.
GREEDY_COST = CostModel(call=2.0, encoder=0.023, step=0.05, row_step=0.011, position=1.3e-4)
BEAM_COST = CostModel(call=4.6, encoder=0.024, step=0.0, row_step=0.029, position=1.7e-4)


def default_cost(beam_size: int) -> CostModel:
  return GREEDY_COST if beam_size == 1 else BEAM_COST

# A window's output is estimated as its types' all-NULL target plus this share of its text
# tokens (the entities' characters and their items' syntax); only the relative cost of
# batches matters, so a rough share is enough.
TEXT_SHARE_OF_OUTPUT = 0.5


def estimated_steps(null_target_length: int, text_tokens: int, limit: int) -> int:
  """Steps a window's output is guessed to take, at most `limit` (module docstring)."""
  return max(1, min(limit, null_target_length + round(TEXT_SHARE_OF_OUTPUT * text_tokens) + 1))


def mean_cache_length(steps: int) -> float:
  """Mean self-attention cache length over a search of `steps` steps: the cache starts at
  generate.FIRST_CACHE_LENGTH and doubles when full (generate.cache_lengths)."""
  total, done, length = 0, 0, generate.FIRST_CACHE_LENGTH
  while done < steps:
    now = min(steps, length) - done
    total += now * length
    done += now
    length *= 2
  return total / max(steps, 1)


def row_options(batch_size: int, padded_size: Callable[[int], int] = lambda n: n) -> tuple[int, ...]:
  """Row counts a batch may have: powers of two below batch_size and batch_size itself, each
  rounded up by `padded_size` (the mesh's data axis), increasing, without repeats."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  options = {padded_size(1 << k) for k in range(batch_size.bit_length()) if 1 << k < batch_size}
  options.add(batch_size)
  return tuple(sorted(option for option in options if option <= batch_size))


# A plan of fewer batches than this per decoding thread is split into smaller ones
# (`spread_rows`; read at call time, 0 turns spreading off: benchmarks/decode_threads.py).
BATCHES_PER_THREAD = 4


def spread_rows(rows: Sequence[int], count: int, threads: int = 1) -> tuple[int, ...]:
  """The row options (row_options) a plan of `count` windows decoded `threads` batches at a
  time may use: those that still leave BATCHES_PER_THREAD batches per thread, at least the
  smallest option.

  Why: plan_batches minimises the summed cost of the batches, which is the wall time of one
  thread decoding a long stream of them.  A short input (64 sentences: two batches of 32) is
  different: its wall time is the slower of the threads' shares, and a batch runs until its
  longest output is done, which the per-window step estimates under-guess more the more rows
  a batch has.  More, smaller batches even out the threads' shares and cut those tails.
  Measured on 64 dev sentences with two threads (BENCHMARKS.md 2l, decode_threads.py):
  1.19x / 1.30x / 1.06x faster greedy and 1.31x / 1.12x / 1.23x at beam 4 (CLUENER /
  CCKS2021 / Resume) than the unspread plan, with less CPU time; with one thread 1.08-1.15x
  greedy, about even at beam 4.  Long inputs (count >= BATCHES_PER_THREAD x threads
  x the largest option) keep every option.  The Extractor spreads on a process-local CPU mesh
  only: on an accelerator one wide batch costs about what a narrow one does.
  """
  if threads < 1:
    raise ValueError(f"threads must be >= 1, got {threads}")
  rows = sorted(set(rows))
  if not rows:
    raise ValueError("no row options")
  kept = tuple(option for option in rows if option * BATCHES_PER_THREAD * threads <= count)
  return kept or (rows[0],)


def consecutive_plan(count: int, batch_size: int,
                     padded_size: Optional[Callable[[int], int]] = None) -> list[Batch]:
  """The old plan: consecutive chunks of batch_size windows, each of batch_size rows; with
  `padded_size`, each in the next power of two rows (so rounded, at most batch_size) instead:
  the old plan's batches of re-decoded windows."""
  plan = []
  for begin in range(0, count, batch_size):
    size = min(batch_size, count - begin)
    rows = batch_size if padded_size is None else min(
        batch_size, padded_size(1 << (size - 1).bit_length()))
    plan.append(Batch(begin, begin + size, rows))
  return plan


def _check(lengths: Sequence[int], steps: Sequence[int], buckets: Sequence[int]) -> None:
  if len(lengths) != len(steps):
    raise ValueError(f"{len(lengths)} lengths but {len(steps)} step estimates")
  if any(a > b for a, b in zip(lengths, lengths[1:])):
    raise ValueError("lengths must be sorted (non-decreasing)")
  if lengths and lengths[-1] > buckets[-1]:
    raise ValueError(f"a window of {lengths[-1]} tokens exceeds the largest bucket {buckets[-1]}")


def bucket_of(length: int, buckets: Sequence[int]) -> int:
  return buckets[bisect.bisect_left(buckets, length)]


def plan_cost(plan: Sequence[Batch], lengths: Sequence[int], steps: Sequence[int],
              buckets: Sequence[int], cost: Optional[CostModel] = None,
              beam_size: int = 1) -> float:
  """The cost model's estimate of decoding `plan` (lengths sorted, as for plan_batches)."""
  _check(lengths, steps, buckets)
  cost = cost or default_cost(beam_size)
  return sum(cost.batch_cost(batch.rows, bucket_of(lengths[batch.end - 1], buckets),
                             max(steps[batch.begin:batch.end]), beam_size) for batch in plan)


def plan_batches(lengths: Sequence[int], steps: Sequence[int], buckets: Sequence[int],
                 rows: Sequence[int], cost: Optional[CostModel] = None,
                 beam_size: int = 1) -> list[Batch]:
  """The partition of sorted windows into batches of least estimated cost.

  lengths: the windows' input lengths, sorted (non-decreasing); steps: each window's
  estimated output steps (estimated_steps); buckets: the input buckets (increasing, the last
  one holds every window); rows: the allowed row counts (row_options); cost: default_cost of
  the beam size.  A batch of n windows
  gets the fewest allowed rows >= n.  Ties go to fewer batches, then to the later cut, so
  the plan is deterministic.  O(len(lengths) x max(rows)).
  """
  _check(lengths, steps, buckets)
  cost = cost or default_cost(beam_size)
  rows = sorted(set(rows))
  if not rows or rows[0] < 1:
    raise ValueError(f"rows must be positive row counts, got {rows}")
  largest = rows[-1]
  count = len(lengths)
  # best[i]: (cost, batches) of the cheapest plan of windows[:i]; cut[i]: where its last
  # batch begins.
  best: list[tuple[float, int]] = [(0.0, 0)] + [(float("inf"), 0)] * count
  cut = [0] * (count + 1)
  for end in range(1, count + 1):
    bucket = bucket_of(lengths[end - 1], buckets)
    longest_output = 0
    for begin in range(end - 1, max(0, end - largest) - 1, -1):
      longest_output = max(longest_output, steps[begin])
      size = end - begin
      batch_rows = rows[bisect.bisect_left(rows, size)]
      total = best[begin][0] + cost.batch_cost(batch_rows, bucket, longest_output, beam_size)
      candidate = (total, best[begin][1] + 1)
      if candidate < best[end]:
        best[end] = candidate
        cut[end] = begin
  plan = []
  end = count
  while end > 0:
    begin = cut[end]
    plan.append(Batch(begin, end, rows[bisect.bisect_left(rows, end - begin)]))
    end = begin
  return plan[::-1]
