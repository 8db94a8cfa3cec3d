"""The names of the constrained searches and the default one.

Jax-free, so that the command-line parsers (extract, extract_corpus, serve) can offer and check
`--search` without importing JAX; generate.decode_batch runs them (`search=`).

Without a constraint all three are the plain step-by-step search.
  "allowed" (the default): step by step over the tokens the constraint can allow
    (decoding.CandidateTable: the input's ids and the grammar's 6 tokens) instead of the
    vocabulary: the same outputs and scores as "stepwise" (to float rounding), a cheaper step
    (BENCHMARKS.md 2b).
  "stepwise": step by step over the whole vocabulary (the reference the others are tested
    against).
  "fast": fast_decoding (forced tokens and drafted guesses fed as chunks: the same results in
    0.14-0.36x the decoder calls on CLUENER and CCKS2021). On a CPU the decoder of the bench
    model is compute-bound (a chunk of K tokens costs about K single steps), so it measured no
    faster than "allowed" at greedy and 2x slower at beam 4 (BENCHMARKS.md 2c, 2o): "allowed"
    stays the default. Where a decoder call costs about the same for 1 and K positions (an
    accelerator reading the weights once per call, at small batches) the chunks are the point;
    that is not measured here.
"""

SEARCHES = ("allowed", "stepwise", "fast")
DEFAULT_SEARCH = "allowed"


def check_search(search: str) -> None:
  """ValueError unless `search` is one of SEARCHES."""
  if search not in SEARCHES:
    raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
