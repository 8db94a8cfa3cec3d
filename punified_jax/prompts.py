"""Prompted NER examples (input/target strings) and prefix-LM examples for adaptation.

The format is fixed (GUIDE §1):

    input : <entity>地点<entity>组织<text>张三昨天去了北京大学。
    target: ((地点:北京),(组织:北京大学))

* The input names the wanted types, each after `ENTITY_MARKER`, then `TEXT_MARKER`, then the
  sentence exactly as given (no lowercasing, no stripping, spaces kept).
* The target is "(" + items joined by "," + ")"; one item "(" + TYPE + ":" + SPAN + ")" per
  mention. Items are grouped by type in the prompt's type order; inside a type, mentions keep
  the order in which they are given (text order when built from an `Example`). A requested
  type without a mention gets one "(" + TYPE + ":NULL)" item.
* Repeated mentions: a distinct (type, span text) pair appears ONCE in the target, however
  often the text repeats it. The target therefore says *what* is mentioned, not *where*;
  `parsing.locate_mentions` maps a pair back to every free occurrence in the text, and the
  span metric counts distinct pairs per sentence, so the three agree.
* Mentions whose type is not requested are left out of the target (on-demand recognition).

Everything here is plain Python on strings: SeqIO preprocessors call these functions (through
numpy/tf.py_function or a precomputed table), so they are pure and cheap, and every random
choice comes from the `rng` argument (deterministic given a seed).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import numpy as np

from punified_jax import entity_types
from punified_jax.data.example import Example

ENTITY_MARKER = "<entity>"
TEXT_MARKER = "<text>"
NULL = "NULL"

# Separators of the target grammar. A type name must not contain them, or the target could
# not be parsed back (parsing.parse_generation relies on "(" TYPE ":" starting an item).
_TYPE_FORBIDDEN = ("(", ")", ":", ",", ENTITY_MARKER, TEXT_MARKER)

# Prompt modes of the paper's ablation (its Table 3); "dataset" is the paper's default.
MODES: tuple[str, ...] = ("dataset", "random", "random_exact")

RngLike = Union[np.random.Generator, int]


def _as_rng(rng: Optional[RngLike]) -> np.random.Generator:
  """An int is a seed (same seed -> same draws); a Generator is used as is (and advanced)."""
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
    return np.random.default_rng(int(rng))
  raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def check_type_names(type_names: Sequence[str]) -> tuple[str, ...]:
  """Returns `type_names` as a tuple after checking they can be written and parsed back.

  Raises ValueError for an empty list, a duplicate, an empty name or a name containing one of
  ( ) : , <entity> <text> (those are the grammar's separators).
  """
  if isinstance(type_names, str):
    raise TypeError(f"type_names must be a sequence of names, not the string {type_names!r}")
  names = tuple(type_names)
  if not names:
    raise ValueError("type_names is empty: a prompt must request at least one entity type")
  for name in names:
    if not isinstance(name, str) or not name:
      raise ValueError(f"entity type name {name!r} must be a non-empty string")
    bad = [s for s in _TYPE_FORBIDDEN if s in name]
    if bad:
      raise ValueError(f"entity type name {name!r} contains {bad[0]!r}, which the target "
                       "format uses as a separator")
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"entity type names are repeated in the prompt: {', '.join(duplicates)}")
  return names


def format_input(text: str, type_names: Sequence[str]) -> str:
  """`<entity>t1<entity>t2...<text>` + text, with `text` unchanged."""
  if not isinstance(text, str):
    raise TypeError(f"text must be a str, got {type(text).__name__}")
  names = check_type_names(type_names)
  return "".join(ENTITY_MARKER + name for name in names) + TEXT_MARKER + text


def parse_input(inputs: str) -> tuple[tuple[str, ...], str]:
  """Inverse of `format_input`: (requested type names, original text).

  The text is everything after the FIRST `<text>` marker (type names cannot contain it), so a
  sentence that itself contains "<text>" still comes back whole. Raises ValueError when
  `inputs` is not a prompt (no `<text>` marker, or no `<entity>` before it).
  """
  head, marker, text = inputs.partition(TEXT_MARKER)
  if not marker:
    raise ValueError(f"not an NER prompt (no {TEXT_MARKER} marker): {inputs[:60]!r}")
  if not head.startswith(ENTITY_MARKER):
    raise ValueError(f"not an NER prompt (expected {ENTITY_MARKER} first): {inputs[:60]!r}")
  names = tuple(head[len(ENTITY_MARKER):].split(ENTITY_MARKER))
  return names, text


def format_target(mentions: Iterable[tuple[str, str]], type_names: Sequence[str]) -> str:
  """The target string for `mentions` ((prompt name, span text) pairs) under a prompt.

  Items are grouped by `type_names` order; inside a type they keep the order of `mentions`
  (callers pass text order); a repeated (type, span) pair is written once; mentions whose type
  is not in `type_names` are left out; a requested type without mention is (TYPE:NULL).

  Raises ValueError for a span that could not be read back unambiguously: an empty span, the
  span "NULL" (it would read as "no mention"), or a span containing "),(" + a requested type
  + ":" (the parser would start a new item there; see parsing.parse_generation).
  """
  names = check_type_names(type_names)
  by_type: dict[str, list[str]] = {name: [] for name in names}
  for mention in mentions:
    if not (isinstance(mention, (tuple, list)) and len(mention) == 2):
      raise ValueError(f"a mention must be a (type, span) pair, got {mention!r}")
    type_name, span = mention
    if not isinstance(span, str) or not isinstance(type_name, str):
      raise ValueError(f"a mention must be a pair of strings, got {mention!r}")
    if type_name not in by_type:
      continue  # not requested: on-demand recognition leaves it out
    if not span:
      raise ValueError(f"empty span for type {type_name!r}")
    if span == NULL:
      raise ValueError(f"the span {NULL!r} (type {type_name!r}) is reserved for 'no mention'")
    for name in names:
      if f"),({name}:" in span:
        raise ValueError(f"span {span!r} contains '),({name}:', which would be read as the "
                         "start of a new item")
    if span not in by_type[type_name]:
      by_type[type_name].append(span)
  items = []
  for name in names:
    spans = by_type[name] or [NULL]
    items.extend(f"({name}:{span})" for span in spans)
  return "(" + ",".join(items) + ")"


def gold_mentions(example: Example, dataset: str) -> list[tuple[str, str]]:
  """(prompt name, span text) for every span of `example`, in text order.

  Raw labels are mapped through `entity_types.prompt_name` (an unknown label raises a
  ValueError naming the dataset and its types).
  """
  example.validate()
  return [(entity_types.prompt_name(dataset, s.type), s.text_in(example.text))
          for s in example.spans]


def sample_random_types(rng: RngLike,
                        pool: Sequence[str] = entity_types.PAPER_PROMPT_NAMES) -> tuple[str, ...]:
  """The paper's "random prompt": k ~ Uniform{1..len(pool)}, then k distinct names of `pool`
  drawn uniformly without replacement, in a uniformly random order.

  With the default pool (the 37 names) this is "randomly sample up to all 37 entities".
  """
  rng = _as_rng(rng)
  pool = tuple(pool)
  if not pool:
    raise ValueError("the random prompt pool is empty")
  k = int(rng.integers(1, len(pool) + 1))  # integers(low, high) excludes high: k in 1..len
  order = rng.permutation(len(pool))[:k]  # first k of a random permutation: random subset+order
  return tuple(pool[i] for i in order)


def _ner_dict(text: str, mentions: list[tuple[str, str]], types: Sequence[str]) -> dict:
  types = tuple(types)
  return {"inputs": format_input(text, types), "targets": format_target(mentions, types),
          "types": types}


def make_ner_example(example: Example, dataset: str, mode: str = "dataset",
                     rng: Optional[RngLike] = None, *,
                     random_pool: Sequence[str] = entity_types.PAPER_PROMPT_NAMES) -> list[dict]:
  """Prompted training/eval examples for one sentence: a list of
  {"inputs": str, "targets": str, "types": tuple[str, ...]}.

  Modes (the paper's three prompt setups):
  * "dataset": one example prompting ALL of `dataset`'s prompt names in registry order (the
    paper's best setup, and the one used for every evaluation). `rng` is not used.
  * "random": one example whose types are `sample_random_types(rng, random_pool)`: k uniform in
    1..37, then a uniform sample of k of the 37 paper names in random order. Gold mentions of
    types that were not sampled are not in the target.
  * "random_exact": two examples, first the "random" one, then the "exact match" one whose
    types are exactly the gold types present in the sentence, in registry order. A sentence
    without any gold entity has no exact type set; its second example falls back to the
    dataset prompt (all types, every item NULL), so the mode always yields two examples.

  `rng` is a numpy Generator (advanced in place) or an int seed (same seed -> same example);
  the random modes require it.
  """
  if mode not in MODES:
    raise ValueError(f"unknown prompt mode {mode!r}; modes: {', '.join(MODES)}")
  mentions = gold_mentions(example, dataset)
  dataset_types = entity_types.prompt_names(dataset)
  if mode == "dataset":
    return [_ner_dict(example.text, mentions, dataset_types)]
  if rng is None:
    raise ValueError(f"prompt mode {mode!r} needs rng (a numpy Generator or an int seed)")
  rng = _as_rng(rng)
  out = [_ner_dict(example.text, mentions, sample_random_types(rng, random_pool))]
  if mode == "random_exact":
    present = {type_name for type_name, _ in mentions}
    exact = tuple(t for t in dataset_types if t in present) or dataset_types
    out.append(_ner_dict(example.text, mentions, exact))
  return out


def make_prefix_lm_example(text: str, rng: RngLike) -> Optional[dict]:
  """Prefix-LM example for language-model adaptation: {"inputs": text[:k], "targets": text[k:]}.

  k is uniform in 1..len(text)-1 (character positions, so both parts are non-empty and
  inputs + targets == text). No prompt markers. A text shorter than 2 characters cannot be
  split that way: the function returns None and the caller counts and skips it.
  """
  if not isinstance(text, str):
    raise TypeError(f"text must be a str, got {type(text).__name__}")
  if len(text) < 2:
    return None
  k = int(_as_rng(rng).integers(1, len(text)))  # high is exclusive: k in 1..len-1
  return {"inputs": text[:k], "targets": text[k:]}
