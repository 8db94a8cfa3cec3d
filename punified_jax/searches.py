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
    model is compute-bound (a chunk of K tokens costs about K single steps), so in
    decode_batch it measured no faster than "allowed" at greedy and 1.3-2x slower at beam 4
    (BENCHMARKS.md 2c, 2o, 2s): "allowed" stays decode_batch's default; the Extractor's
    "auto" (below) takes it at greedy, where its length-sorted batches gain a little. Where a decoder call costs about the same for 1 and K positions (an
    accelerator reading the weights once per call, at small batches) the chunks are the point;
    that is not measured here.
"""

SEARCHES = ("allowed", "stepwise", "fast")
# generate.decode_batch's default (evaluation, infer): its 32-row batches of mixed outputs made
# "fast" 2.3x slower on Resume (BENCHMARKS.md 2r).
DEFAULT_SEARCH = "allowed"

# The Extractor's default (extract, extract_corpus, serve): "fast" at greedy, "allowed" at beam
# sizes > 1.  In the Extractor's length-sorted batches the chunked greedy search measured
# 6-9% faster than "allowed" on CLUENER and 1-17% on CCKS2021, 7-10% slower on Resume, with
# 0.14-0.20 decoder calls per token; at beam 4 it is 2.1-2.5x slower (BENCHMARKS.md 2r, 2s).
AUTO = "auto"


def resolve(search: str, beam_size: int) -> str:
  """The search that runs for `search` (AUTO: by beam size) at `beam_size`."""
  if search == AUTO:
    return "fast" if beam_size == 1 else "allowed"
  return search


def check_search(search: str, allow_auto: bool = False) -> None:
  """ValueError unless `search` is one of SEARCHES (or AUTO, with allow_auto)."""
  names = ((AUTO,) if allow_auto else ()) + SEARCHES
  if search not in names:
    raise ValueError(f"search must be one of {names}, got {search!r}")
