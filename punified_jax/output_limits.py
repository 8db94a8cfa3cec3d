"""The limits constrained decoding puts on runaway outputs by default: the output budget (its
defaults, formula and check) and the repeat count that ends an output (its default and check).

Jax-free, so that the command-line parsers (extract, extract_corpus, serve) can show and check
`--output_budget` and `--end_at_repeat` without importing JAX; constraints.NerCopyConstraint
applies both inside the search (its module docstring, "Output budget" and "A repeat ends the
output"), the Extractor and the service compute a window's budget with the same `budget`
function.
"""

from __future__ import annotations

import numbers

# Factor per text token and slack: the Extractor's default (BENCHMARKS.md 2n: 14 of the
# 120,548 gold targets of the real datasets are longer).
OUTPUT_BUDGET_FACTOR = 2.0
OUTPUT_BUDGET_SLACK = 8


# Closed repeats of an already written item that end an output: the Extractor's default
# (BENCHMARKS.md 2o: no output of the bench model at the limit any more, F1 within +-0.4).
END_AT_REPEAT = 3


def check_end_at_repeat(count: int) -> None:
  """ValueError unless `count` is an int >= 0 (0 = a repeat never ends the output)."""
  if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
    raise ValueError(f"end_at_repeat must be an int >= 0 (0 = off), got {count!r}")


def check(factor: float, slack: int) -> None:
  """ValueError unless (factor, slack) is an output budget: factor 0 (off) or in (0, 1000],
  slack >= 1."""
  if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (
      factor == 0 or 0 < factor <= 1000):
    raise ValueError(f"budget_factor must be 0 (no budget) or a number in (0, 1000], got "
                     f"{factor!r}")
  if isinstance(slack, bool) or not isinstance(slack, int) or slack < 1:
    raise ValueError(f"budget_slack must be an int >= 1, got {slack!r}")


def budget(type_tokens, types, text_tokens, factor: float, slack: int):
  """The output budget in tokens, EOS included: the all-NULL target of `types` requested types
  of `type_tokens` tokens in all, plus ceil(factor * text_tokens), plus slack.  Integer
  arithmetic (the factor in thousandths), so that plain ints and int arrays (numpy or jax)
  give the same numbers."""
  thousandths = int(round(factor * 1000))
  return (type_tokens + 5 * types + 2 + (thousandths * text_tokens + 999) // 1000 + slack)
