"""Entity scores from the model's per-token log-probs of an output, and which tokens they read.

An entity's score is exp(mean log-prob) of its item's tokens `TYPE:SPAN)` under the model
(inference.Extractor).  Only those tokens are read, so a greedy search need not compute the
model's log-softmax over the vocabulary for the others (NULL items, separators): the Extractor
asks the search for its final hidden states instead (generate.decode_batch,
token_log_probs=False), parses the output, and computes the log-probs of the scored tokens
only (`log_probs_at`).  The same scores: the same product and normaliser per token.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import jax
import numpy as np

from punified_jax import output_log_probs
from punified_jax import vocab as vocab_lib


def item_tokens(vocabulary: Any, syntax_ids: tuple[int, int, int], output: list[int],
                generation: str, mentions: Sequence[tuple[str, str]]
                ) -> list[Optional[tuple[int, int, int]]]:
  """For each parsed mention, the output indices of its item's "(", ":" and ")" tokens.

  syntax_ids: the ids of "(", ":" and ")".  Mentions come in output order, so each item
  "(" TYPE ":" SPAN ")" is searched in `generation` (the decoded output) after the previous
  one; its characters are mapped to tokens through the decoded length of the output before
  each "(" ":" ")" token.  None when not found.
  """
  open_id, colon_id, close_id = syntax_ids
  token_at: dict[tuple[int, int], int] = {}  # (token id, character position) -> index
  at_syntax = [index for index, token in enumerate(output) if token in syntax_ids]
  for index, position in zip(at_syntax, vocab_lib.decoded_prefix_lengths(
      vocabulary, output, at_syntax)):
    token_at[(output[index], position)] = index
  items: list[Optional[tuple[int, int, int]]] = []
  cursor = 0
  for type_name, span in mentions:
    item = f"({type_name}:{span})"
    found = generation.find(item, cursor)
    indices = None
    if found >= 0:
      indices = (token_at.get((open_id, found)),
                 token_at.get((colon_id, found + 1 + len(type_name))),
                 token_at.get((close_id, found + len(item) - 1)))
      cursor = found + len(item) - 1  # the ")" may be followed by the next item's "("
      if None in indices or not indices[0] < indices[1] < indices[2]:
        indices = None
    items.append(indices)
  return items


def scored_positions(items: Sequence[Optional[tuple[int, int, int]]], length: int) -> np.ndarray:
  """bool [length]: the output positions the entity scores read, the tokens after each item's
  "(" up to its ")"; every position when an item was not found (its score is then the whole
  output's, `geometric_mean` of all)."""
  scored = np.zeros((length,), bool)
  for item in items:
    if item is None:
      return np.ones((length,), bool)
    scored[item[0] + 1:item[2] + 1] = True
  return scored


def geometric_mean(log_probs: np.ndarray) -> float:
  """exp(mean log-prob): a per-token probability in [0, 1] (0 for no tokens)."""
  if not len(log_probs):
    return 0.0
  value = float(np.exp(np.mean(log_probs)))
  return min(1.0, value) if math.isfinite(value) else 0.0


# float32 [rows, len]: the model's log-prob of tokens[r, t] where scored[r, t], 0 elsewhere;
# from the final hidden states [rows, >= len, d] and the output layer's kernel [d, vocab].
_log_probs_at = jax.jit(output_log_probs.model_token_log_probs)


def log_probs_at(hidden: np.ndarray, tokens: np.ndarray, kernel: Any,
                 scored: np.ndarray) -> np.ndarray:
  """The model's log-probs of `tokens` [rows, len] at the `scored` positions (0 elsewhere).
  Called even when nothing is scored (its loop then runs no block): a server's warm-up
  compiles the program whatever its synthetic outputs hold."""
  return np.asarray(_log_probs_at(hidden, np.asarray(tokens, np.int32), kernel,
                                  np.asarray(scored, bool)))
