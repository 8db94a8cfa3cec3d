"""Constrained decoding for prompted NER: the output may only copy requested types and input text.

The target grammar (prompts.format_target), in tokens:

    target := "(" item ("," item)* ")" EOS
    item   := "(" TYPE ":" (SPAN | NULL) ")"

* TYPE is a copy of one complete prompt segment of the encoder input: the tokens between an
  `<entity>` marker and the next marker, before the first `<text>` marker. So a generated type
  is always one of the REQUESTED types, whatever they are (unseen types included).
* SPAN is a copy of a contiguous run (at least one token) of the encoder input's TEXT region
  (the tokens after the first `<text>` marker, up to EOS / padding). With a SentencePiece
  vocabulary a span may not start or end inside a character (a UTF-8 continuation byte of
  byte fallback), so its decoded text is always a substring of the input text.
* NULL is the single NULL token ("no mention of this type").

Vectorised automaton.  `NerCopyConstraint` implements decoding.LogitsConstraint with a state of

    roles  uint8 [rows, input_len]  what each input position is (prompt type token, first/last
                                    token of a type segment, text token, may a span start
                                    here / end after here); fixed for the whole search
    ids    int32 [rows, input_len]  the encoder input ids
    copy   bool  [rows, input_len]  positions the NEXT token may copy to continue a copy in
                                    progress (type copies live in the prompt region, span
                                    copies in the text region, so one array holds both)
    phases int32 [rows]             a bit set of grammar phases (below)
    last_type int32 [rows]          input position of the last token of the most recently
                                    completed type copy (-1 before the first): only for
                                    `draft_guess`, never for what is allowed

Spans may contain "(" ")" "," ":" themselves, so after e.g. a ")" that both closes an item and
continues a span the automaton is in several phases at once; the allowed tokens are the union
over its phases and copy positions.  The parser (parsing.parse_generation) resolves the output
afterwards.  EOS is allowed only after the closing "))".  Everything is elementwise or a
scatter over [rows, input_len], so it runs inside the jitted beam search and its state is
reordered with the beams like the KV cache.

The syntax token ids come from the vocabulary (`NerCopyConstraint.from_vocabulary`): "(" ")"
"," ":" "NULL" "<entity>" "<text>" must each encode as one token, else a ValueError.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from punified_jax import decoding
from punified_jax.prompts import ENTITY_MARKER, NULL, TEXT_MARKER

Array = jax.Array

# Grammar phases (bits of `phases`).  Copy phases (inside a type or a span) are not bits: they
# are the `copy` positions.
EXPECT_TARGET_OPEN = 1    # start: the target's "("
EXPECT_ITEM_OPEN = 2      # after the target's "(" or after ",": an item's "("
AFTER_ITEM_OPEN = 4       # after an item's "(": the first token of a requested type
TYPE_COMPLETE = 8         # the last copied token ended a type segment: ":" may follow
AFTER_COLON = 16          # the first token of a span, or NULL
SPAN_CLOSABLE = 32        # the last copied token may end a span: ")" may follow
AFTER_NULL = 64           # ")" closes the item
AFTER_ITEM_CLOSE = 128    # "," (next item) or ")" (end of the target)
AFTER_TARGET_CLOSE = 256  # EOS

# Roles of input positions (bits of `roles`).
_TYPE = 1        # a token of a prompt type segment
_TYPE_FIRST = 2  # the first token of a type segment
_TYPE_LAST = 4   # the last token of a type segment
_TEXT = 8        # a token of the text region
_SPAN_FIRST = 16  # a span may start at this token
_SPAN_LAST = 32   # a span may end with this token


def _single_token(vocabulary: Any, text: str) -> int:
  ids = list(vocabulary.encode(text))
  if len(ids) != 1 or ids[0] == vocabulary.unk_id:
    raise ValueError(f"constrained decoding needs {text!r} to be one known token of the "
                     f"vocabulary ({vocabulary}), but it encodes as {ids}")
  return int(ids[0])


def continuation_byte_mask(vocabulary: Any) -> np.ndarray:
  """bool [vocab_size]: tokens a span may neither start with nor end just before.

  For a SentencePiece vocabulary with byte fallback these are the UTF-8 continuation bytes
  <0x80>..<0xBF> (the 2nd-4th bytes of a character that has no piece of its own); cutting there
  would decode to broken characters.  Other vocabularies: none.
  """
  size = int(vocabulary.vocab_size)
  mask = np.zeros((size,), bool)
  tokenizer = getattr(vocabulary, "tokenizer", None)
  if tokenizer is not None and hasattr(tokenizer, "IsByte"):
    for token_id in range(min(size, tokenizer.GetPieceSize())):
      if tokenizer.IsByte(token_id):
        value = int(tokenizer.IdToPiece(token_id)[3:5], 16)  # "<0xAB>"
        mask[token_id] = 0x80 <= value <= 0xBF
  return mask


@flax.struct.dataclass
class NerCopyConstraint:
  """decoding.LogitsConstraint for the NER target grammar (see the module docstring).

  continuation: bool [vocab] from `continuation_byte_mask`; ids beyond its end (a model
  vocabulary padded past the tokenizer's) count as ordinary tokens.
  Build it with `NerCopyConstraint.from_vocabulary(vocabulary)`.
  """
  continuation: Array
  # Token ids (int32 scalars).  Arrays rather than static fields so that one compiled search
  # serves every vocabulary of the same size.
  open_id: Array
  close_id: Array
  comma_id: Array
  colon_id: Array
  null_id: Array
  entity_id: Array
  text_id: Array
  eos_id: Array
  pad_id: Array

  @classmethod
  def from_vocabulary(cls, vocabulary: Any) -> "NerCopyConstraint":
    """Reads the syntax token ids off a seqio vocabulary (SentencePiece or WordPiece)."""
    ids = {name: _single_token(vocabulary, text) for name, text in (
        ("open_id", "("), ("close_id", ")"), ("comma_id", ","), ("colon_id", ":"),
        ("null_id", NULL), ("entity_id", ENTITY_MARKER), ("text_id", TEXT_MARKER))}
    if len(set(ids.values())) != len(ids):
      raise ValueError(f"the grammar's tokens are not distinct in {vocabulary}: {ids}")
    eos_id = vocabulary.eos_id
    if eos_id is None or eos_id in ids.values():
      raise ValueError(f"{vocabulary}: EOS id {eos_id} is missing or is a grammar token")
    ids.update(eos_id=int(eos_id), pad_id=int(vocabulary.pad_id))
    return cls(continuation=jnp.asarray(continuation_byte_mask(vocabulary)),
               **{name: jnp.asarray(value, jnp.int32) for name, value in ids.items()})

  # -- decoding.LogitsConstraint -------------------------------------------------------------

  def init(self, encoder_input_tokens: Array) -> dict[str, Array]:
    ids = encoder_input_tokens.astype(jnp.int32)
    rows, length = ids.shape
    position = jnp.arange(length)[None, :]
    real = (ids != self.pad_id) & (ids != self.eos_id)
    is_text_marker = ids == self.text_id
    is_entity_marker = ids == self.entity_id
    first_text = jnp.where(jnp.any(is_text_marker, axis=1),
                           jnp.argmax(is_text_marker, axis=1), length)[:, None]
    first_entity = jnp.where(jnp.any(is_entity_marker, axis=1),
                             jnp.argmax(is_entity_marker, axis=1), length)[:, None]
    # Prompt type tokens: after the first <entity>, before the first <text>, not markers.
    is_type = ((position > first_entity) & (position < first_text) & real & ~is_entity_marker)
    is_text = (position > first_text) & real
    before = _shift_right(is_type, False)
    after = _shift_left(is_type, False)
    # Ids beyond the mask (a model vocabulary padded past the tokenizer's) are no bytes.
    is_continuation = jnp.take(self.continuation, ids, mode="fill", fill_value=False)
    next_is_continuation = _shift_left(is_text & is_continuation, False)
    roles = (is_type * _TYPE + (is_type & ~before) * _TYPE_FIRST + (is_type & ~after) * _TYPE_LAST
             + is_text * _TEXT + (is_text & ~is_continuation) * _SPAN_FIRST
             + (is_text & ~next_is_continuation) * _SPAN_LAST).astype(jnp.uint8)
    return {
        "roles": roles,
        "ids": ids,
        "copy": jnp.zeros((rows, length), bool),
        "phases": jnp.full((rows,), EXPECT_TARGET_OPEN, jnp.int32),
        "last_type": jnp.full((rows,), -1, jnp.int32),
    }

  def step(self, state: dict[str, Array], token_ids: Array, logits: Array,
           step: Array) -> tuple[Array, dict[str, Array]]:
    advanced = self.advance(state, token_ids)
    # At step 0 the consumed token is the decoder start token, not part of the output.
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(step > 0, new, old), advanced,
                                   state)
    allowed = self.allowed_tokens(state, logits.shape[-1])
    return jnp.where(allowed, logits, decoding.FORBIDDEN_LOGIT), state

  # -- the automaton -------------------------------------------------------------------------

  def _copy_sources(self, state: dict[str, Array]) -> Array:
    """bool [rows, input_len]: input positions the next token may copy."""
    roles, phases = state["roles"], state["phases"]
    start_type = _has(phases, AFTER_ITEM_OPEN)[:, None] & _role(roles, _TYPE_FIRST)
    start_span = _has(phases, AFTER_COLON)[:, None] & _role(roles, _SPAN_FIRST)
    return state["copy"] | start_type | start_span

  def advance(self, state: dict[str, Array], token_ids: Array) -> dict[str, Array]:
    """The state after generating `token_ids` [rows] (no step-0 special case)."""
    roles, phases = state["roles"], state["phases"]
    token = token_ids.astype(jnp.int32)
    matched = self._copy_sources(state) & (state["ids"] == token[:, None])
    # A copy continues at the next position of the same region; markers separate the type
    # segments, so "next position is a type token" means "same segment".
    copy = _shift_right(matched, False) & (_role(roles, _TYPE) | _role(roles, _TEXT))
    is_ = lambda token_id: token == token_id
    has = lambda bit: _has(phases, bit)
    new_phases = (
        _bit(has(EXPECT_TARGET_OPEN) & is_(self.open_id), EXPECT_ITEM_OPEN)
        | _bit(has(AFTER_ITEM_CLOSE) & is_(self.comma_id), EXPECT_ITEM_OPEN)
        | _bit(has(EXPECT_ITEM_OPEN) & is_(self.open_id), AFTER_ITEM_OPEN)
        | _bit(jnp.any(matched & _role(roles, _TYPE_LAST), axis=1), TYPE_COMPLETE)
        | _bit(has(TYPE_COMPLETE) & is_(self.colon_id), AFTER_COLON)
        | _bit(jnp.any(matched & _role(roles, _SPAN_LAST), axis=1), SPAN_CLOSABLE)
        | _bit(has(AFTER_COLON) & is_(self.null_id), AFTER_NULL)
        | _bit((has(SPAN_CLOSABLE) | has(AFTER_NULL)) & is_(self.close_id), AFTER_ITEM_CLOSE)
        | _bit(has(AFTER_ITEM_CLOSE) & is_(self.close_id), AFTER_TARGET_CLOSE))
    type_ends = matched & _role(roles, _TYPE_LAST)
    last_type = jnp.where(jnp.any(type_ends, axis=1), jnp.argmax(type_ends, axis=1),
                          state["last_type"]).astype(jnp.int32)
    return {"roles": roles, "ids": state["ids"], "copy": copy, "phases": new_phases,
            "last_type": last_type}

  def copy_continuation(self, state: dict[str, Array]) -> tuple[Array, Array]:
    """(token int32 [rows], exists bool [rows]): the input token that would continue the copy
    in progress (type or span) at its first possible position: fast_decoding's draft of the
    next token inside a span.  A guess, verified by the model before it is kept."""
    copy = state["copy"]
    first = jnp.argmax(copy, axis=1)
    token = jnp.take_along_axis(state["ids"], first[:, None], axis=1)[:, 0]
    return token, jnp.any(copy, axis=1)

  def draft_guess(self, state: dict[str, Array]) -> tuple[Array, Array]:
    """(token int32 [rows], exists bool [rows]): fast_decoding's guess of the next token where
    the grammar leaves a choice, from what the model was trained to write (the dataset's types
    in prompt order, every type once, most of them NULL):
      * inside a copy (type or span): the next input token (`copy_continuation`);
      * after an item's "(": the first token of the prompt type after the last one written;
      * after ":": NULL;
      * after an item's ")": "," while a prompt type after the last one written remains,
        else ")".
    Only a guess: the model's logits decide (a wrong guess costs the rest of the chunk, never
    the result), so it may be anything the grammar allows."""
    phases, roles = state["phases"], state["roles"]
    token, in_copy = self.copy_continuation(state)
    position = jnp.arange(roles.shape[1])[None, :]
    later_types = _role(roles, _TYPE_FIRST) & (position > state["last_type"][:, None])
    has_next = jnp.any(later_types, axis=1)
    next_type = jnp.take_along_axis(state["ids"], jnp.argmax(later_types, axis=1)[:, None],
                                    axis=1)[:, 0]
    item_open = _has(phases, AFTER_ITEM_OPEN) & has_next
    colon = _has(phases, AFTER_COLON)
    item_close = _has(phases, AFTER_ITEM_CLOSE)
    guess = jnp.where(item_close, jnp.where(has_next, self.comma_id, self.close_id), 0)
    guess = jnp.where(colon, self.null_id, guess)
    guess = jnp.where(item_open, next_type, guess)
    guess = jnp.where(in_copy, token, guess).astype(jnp.int32)
    return guess, in_copy | item_open | colon | item_close

  def allowed_tokens(self, state: dict[str, Array], vocab_size: int) -> Array:
    """bool [rows, vocab_size]: the tokens that may come next."""
    phases = state["phases"]
    rows = phases.shape[0]
    sources = self._copy_sources(state)
    # Scatter the copyable positions' ids into a vocabulary mask (a [rows, len, vocab] one-hot
    # would not fit in memory for BERT's 21128 tokens and 512 positions).
    row_index = jnp.broadcast_to(jnp.arange(rows)[:, None], sources.shape)
    allowed = jnp.zeros((rows, vocab_size), jnp.int32).at[row_index, state["ids"]].max(
        sources.astype(jnp.int32), mode="drop") > 0
    for token_id, allow in zip(self._syntax_ids(), self._syntax_flags(phases)):
      allowed = allowed.at[:, token_id].set(allowed[:, token_id] | allow)
    return allowed

  # -- scoring only the allowed tokens (decoding's candidate search) -------------------------

  def _syntax_ids(self) -> tuple[Array, ...]:
    """The grammar's own tokens, in the order of `_syntax_flags`."""
    return (self.open_id, self.colon_id, self.null_id, self.close_id, self.comma_id,
            self.eos_id)

  def _syntax_flags(self, phases: Array) -> tuple[Array, ...]:
    """bool [rows] per syntax token (order of `_syntax_ids`): may it come next?"""
    has = lambda bit: _has(phases, bit)
    return (has(EXPECT_TARGET_OPEN) | has(EXPECT_ITEM_OPEN), has(TYPE_COMPLETE),
            has(AFTER_COLON), has(SPAN_CLOSABLE) | has(AFTER_NULL) | has(AFTER_ITEM_CLOSE),
            has(AFTER_ITEM_CLOSE), has(AFTER_TARGET_CLOSE))

  def candidate_table(self, encoder_input_tokens: Array) -> decoding.CandidateTable:
    """Every token this grammar can ever allow for a row: its input ids, then the syntax ids
    (C = input_len + 6 candidates).  `slot` maps a candidate to the first candidate with the
    same id, so that an id allowed twice (a repeated character, a "(" in the text) is scored
    once, as in the vocabulary-wide softmax."""
    ids = encoder_input_tokens.astype(jnp.int32)
    syntax = jnp.broadcast_to(jnp.stack(self._syntax_ids()).astype(jnp.int32)[None],
                              (ids.shape[0], len(self._syntax_ids())))
    candidates = jnp.concatenate([ids, syntax], axis=1)
    same = candidates[:, :, None] == candidates[:, None, :]
    return decoding.CandidateTable(candidates, jnp.argmax(same, axis=2).astype(jnp.int32))

  def step_candidates(self, state: dict[str, Array], token_ids: Array, step: Array,
                      table: decoding.CandidateTable) -> tuple[Array, dict[str, Array]]:
    """`step` over the candidates of `candidate_table` instead of the vocabulary: returns
    (allowed bool [rows, C], state); an allowed id is True at its first candidate only."""
    advanced = self.advance(state, token_ids)
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(step > 0, new, old), advanced,
                                   state)
    flags = jnp.concatenate([self._copy_sources(state),
                             jnp.stack(self._syntax_flags(state["phases"]), axis=1)], axis=1)
    rows = flags.shape[0]
    row_index = jnp.broadcast_to(jnp.arange(rows)[:, None], flags.shape)
    allowed = jnp.zeros(flags.shape, jnp.int32).at[row_index, table.slot].max(
        flags.astype(jnp.int32)) > 0
    return allowed, state


def _has(phases: Array, bit: int) -> Array:
  return (phases & bit) != 0


def _bit(flag: Array, bit: int) -> Array:
  return jnp.where(flag, bit, 0).astype(jnp.int32)


def _role(roles: Array, bit: int) -> Array:
  return (roles & bit) != 0


def _shift_right(x: Array, fill) -> Array:
  """out[:, p] = x[:, p - 1]; out[:, 0] = fill."""
  return jnp.concatenate([jnp.full_like(x[:, :1], fill), x[:, :-1]], axis=1)


def _shift_left(x: Array, fill) -> Array:
  """out[:, p] = x[:, p + 1]; out[:, -1] = fill."""
  return jnp.concatenate([x[:, 1:], jnp.full_like(x[:, :1], fill)], axis=1)



def ner_copy_constraint(vocabulary: Any) -> NerCopyConstraint:
  """`NerCopyConstraint.from_vocabulary` as a plain function, for gin, e.g.
  `evaluation.Evaluator.constraint_factory = @constraints.ner_copy_constraint`."""
  return NerCopyConstraint.from_vocabulary(vocabulary)
