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
                                    completed type copy (-1 before the first)
    (and the fields of the two rules below)

Spans may contain "(" ")" "," ":" themselves, so after e.g. a ")" that both closes an item and
continues a span the automaton is in several phases at once; the allowed tokens are the union
over its phases and copy positions.  The parser (parsing.parse_generation) resolves the output
afterwards.  EOS is allowed only after the closing "))".  Everything is elementwise or a
scatter over [rows, input_len], so it runs inside the jitted beam search and its state is
reordered with the beams like the KV cache.

Three optional rules against runaway outputs (benchmarks/runaway_outputs.py and BENCHMARKS.md
2e and 2o measure them).  A batch runs until its longest row ends, and a model can loop on one
item up to the output limit ("(景点:亚庇),(景点:亚庇),..."): one such row makes its whole batch
pay.

No repeated items (`forbid_repeats`).  The training targets never hold the same
(type, span) pair twice (prompts.format_target writes each pair once, and the parser drops a
repeat).  So an item equal to one already written in this output may not
be closed: its ")" does not close it (the SPAN_CLOSABLE / AFTER_NULL bit is cleared, so the
mask and the transitions agree; a ")" that also continues the span stays allowed as a copy),
and NULL is not allowed as the span of a type that already had (TYPE:NULL).  The model then
has to write something else there (continue the span, another span).
  Identity of an item, exact (no hashing):
    type  = `last_type`, the input position of the type's last token: the prompt's type names
            are distinct (prompts.check_type_names), so one name always ends at one position;
    span  = (length in tokens, smallest input position where the copied tokens end): two
            token runs of equal length are equal iff their sets of occurrences are equal, and
            the automaton's text copy positions are exactly those occurrences;
    NULL  = the code -1.
  State: item_type / item_span int32 [rows] (the item being written), unsure bool [rows],
  repeat bool [rows] (the item being written is a sure repeat), and the written items
  written_types / written_spans int32 [rows, max_items] with written_count int32 [rows].
  An output of T tokens holds at most (T - 1) / 6 items (the target's two brackets, at least
  "(" TYPE ":" SPAN ")" per item and a "," between items), so the default max_items = 64
  covers outputs up to 385 tokens (42 items fit in 256); items past max_items are not
  recorded, so they are never forbidden (overflow only forbids less).  Identity is by tokens:
  a text that a SentencePiece vocabulary splits differently at two places of the input is two
  items to the rule (not forbidden, never wrong).
  Never forbidding wrongly:
    * an item is recorded only at a ")" that surely closes it: its reading was unique and the
      ")" does not also continue a span copy (e.g. the text "北京)上海": after "(地点:北京)" the
      span may still be "北京)上海", so (地点, 北京) is not recorded there);
    * a reading is not unique ("unsure") when a span starts or NULL is taken while an older
      span copy also goes on (spans containing "),(TYPE:"): such an item is neither forbidden
      nor recorded until the next span or NULL starts alone;
    * never a dead end: a repeat's close (or NULL) stays allowed when nothing else is (a span
      at the end of the text with no other way on; an empty text): otherwise the search would
      end the row with log-prob -inf and the Extractor would drop its whole output.  So a
      repeat can still be written where it is the only way on; everywhere else it cannot.
  Gold targets (prompts.format_target: no repeated pair, no span containing "),(TYPE:") are
  always accepted (property test in tests/test_no_repeat.py).
  Measured (the CCKS/CLUENER/Resume bench model): it removes the repeats but not the runaways
  (the model, kept from closing a repeat, writes ever longer spans of the same type instead),
  and costs 0-2 points of F1: off by default.

Target order (`follow_order`).  prompts.format_target writes the items in one order: types in
prompt order, each type's items together, (TYPE:NULL) as its type's only item, and a type's
spans in text order (the readers give mentions in text order).  With this rule the output must
keep that order:
  * an item's type is the last surely closed item's type or a later prompt type; after a
    NULL item, a later type;
  * a span of the same type as the last surely closed item (a span) must start at an input
    position after that span's first occurrence that the output could follow (`order_start`;
    its occurrences the rule let the output follow are `ordered`, a subset of `copy`, which
    keeps every occurrence for the span's identity); NULL may not follow it;
  * "," only while some type may still come (no dead end: a type is offered again only while
    a span can start after the bar).
Each surely closed span moves its type's bar forward, so a type gets at most one such item per
text position: no loop runs to the limit (unless its closes are never sure: spans that contain
")" followed by more of the text).
Gold targets are accepted when no two mentions of one type start at the same character (flat
NER: true of every tag-sequence dataset here; nested mentions of one type sharing a start
would be refused).  Items not surely closed (see above) do not move the bar (it only lags,
never forbids more).  Measured: no output reaches the limit any more, at a cost of F1 on
Resume where this undertrained model writes correct items out of order (BENCHMARKS.md 2e):
off by default.

A repeat ends the output (`end_at_repeat` = N > 0).  The gentler cousin of `forbid_repeats`:
a repeat may be written, but once the output has surely closed N items that repeat an item
written before (identity, "sure" and the written items as for the no-repeat rule; NULL items
too), "," may not open another item: the target must close ("))" then EOS).  A model that loops
("(景点:亚庇),(景点:亚庇),...") is stopped after N repeats instead of at the budget or the output
limit, while an output that repeats an item once or twice and then goes on to new ones keeps
them (N = 1 would drop them: the bench model does this often on Resume, BENCHMARKS.md 2o).
Gold targets hold no repeat, so they are always accepted (property test in
tests/test_no_repeat.py).  State: `repeats` int32 [rows], the sure repeats closed so far.

Output budget (`budget_factor` > 0; the Extractor's default, constraints.OUTPUT_BUDGET_FACTOR).
A grammar-abiding output can still be as long as the search lets it (a loop of new spans).  The
budget bounds each row by its own input: with k requested types of T type tokens in all and n
text tokens, the all-NULL target is NULL_LENGTH = T + 5k + 2 tokens with EOS ("(" and ")"
around, per type "(" TYPE ":" NULL ")", k - 1 commas, EOS; under the constraint a type is
always its prompt tokens), and a row may write at most

    budget = NULL_LENGTH + ceil(budget_factor * n) + budget_slack      (`output_budget`)

tokens, EOS included: once only one token is left, EOS is the only token allowed (the output
is cut there and loses its unfinished last item, as at the output limit).  So a short sentence
that loops stops after about its own length instead of running to max_decode_length and
holding its batch.  The factor and slack come from the data: benchmarks/output_budget.py
measures, on every split of the real datasets, how many gold targets a budget would cut
(BENCHMARKS.md 2n).  The state counts the output tokens (`length`) and holds each row's
`budget`; `length` is counted whether or not the budget is on.

The syntax token ids come from the vocabulary (`NerCopyConstraint.from_vocabulary`): "(" ")"
"," ":" "NULL" "<entity>" "<text>" must each encode as one token, else a ValueError.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from punified_jax import decoding
from punified_jax import output_limits
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

# The output budget and the repeat rule (module docstring; their defaults, the budget's formula
# and the checks live in output_limits.py).
OUTPUT_BUDGET_FACTOR = output_limits.OUTPUT_BUDGET_FACTOR
OUTPUT_BUDGET_SLACK = output_limits.OUTPUT_BUDGET_SLACK
END_AT_REPEAT = output_limits.END_AT_REPEAT
check_budget = output_limits.check
output_budget = output_limits.budget
_NO_BUDGET = np.iinfo(np.int32).max

# Items each row remembers for the no-repeat rule (module docstring).
DEFAULT_MAX_ITEMS = 64
NULL_SPAN = -1  # the span code of NULL


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
  # Static: a different value compiles a different search.
  forbid_repeats: bool = flax.struct.field(pytree_node=False, default=False)
  max_items: int = flax.struct.field(pytree_node=False, default=DEFAULT_MAX_ITEMS)
  follow_order: bool = flax.struct.field(pytree_node=False, default=False)
  budget_factor: float = flax.struct.field(pytree_node=False, default=0.0)
  budget_slack: int = flax.struct.field(pytree_node=False, default=OUTPUT_BUDGET_SLACK)
  end_at_repeat: int = flax.struct.field(pytree_node=False, default=0)

  @classmethod
  def from_vocabulary(cls, vocabulary: Any, *, forbid_repeats: bool = False,
                      max_items: int = DEFAULT_MAX_ITEMS, follow_order: bool = False,
                      budget_factor: float = 0.0,
                      budget_slack: int = OUTPUT_BUDGET_SLACK,
                      end_at_repeat: int = 0) -> "NerCopyConstraint":
    """Reads the syntax token ids off a seqio vocabulary (SentencePiece or WordPiece).

    forbid_repeats: an item already written may not be written again (module docstring);
    False reproduces the grammar without that rule.  max_items: how many written items each
    row remembers (int >= 1).  follow_order: items in format_target's order (module
    docstring, "Target order").  budget_factor, budget_slack: the output budget (module
    docstring, "Output budget"; factor 0 = no budget).  end_at_repeat: a surely closed repeat
    of an item already written ends the target (module docstring, "A repeat ends the
    output")."""
    if not isinstance(max_items, int) or max_items < 1:
      raise ValueError(f"max_items must be an int >= 1, got {max_items!r}")
    output_limits.check_end_at_repeat(end_at_repeat)
    check_budget(budget_factor, budget_slack)
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
               forbid_repeats=bool(forbid_repeats), max_items=max_items,
               follow_order=bool(follow_order), budget_factor=float(budget_factor),
               budget_slack=int(budget_slack), end_at_repeat=int(end_at_repeat),
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
        # The no-repeat rule (module docstring).
        "item_type": jnp.full((rows,), -1, jnp.int32),
        "item_span": jnp.full((rows,), NULL_SPAN, jnp.int32),
        "unsure": jnp.zeros((rows,), bool),
        "repeat": jnp.zeros((rows,), bool),
        "repeats": jnp.zeros((rows,), jnp.int32),  # sure repeats closed (end_at_repeat)
        "written_types": jnp.full((rows, self.max_items), -1, jnp.int32),
        "written_spans": jnp.full((rows, self.max_items), NULL_SPAN, jnp.int32),
        "written_count": jnp.zeros((rows,), jnp.int32),
        # Target order (module docstring): the text copies of occurrences that may be written
        # (`copy` keeps every occurrence: the span's identity needs them all), the current
        # span's first closable such occurrence (its last position), the type segment of
        # each prompt position (its last position), and the last surely closed item.
        "ordered": jnp.zeros((rows, length), bool),
        "item_first": jnp.full((rows,), -1, jnp.int32),
        "segment_last": jax.lax.cummin(
            jnp.where((roles & _TYPE_LAST) != 0, position, length).astype(jnp.int32),
            axis=1, reverse=True),
        "order_type": jnp.full((rows,), -1, jnp.int32),
        "order_null": jnp.zeros((rows,), bool),
        "order_start": jnp.full((rows,), -1, jnp.int32),
        # The output budget (module docstring).
        "length": jnp.zeros((rows,), jnp.int32),
        "budget": (output_budget(jnp.sum(is_type, axis=1), jnp.sum(is_type & ~before, axis=1),
                                 jnp.sum(is_text, axis=1), self.budget_factor,
                                 self.budget_slack)
                   if self.budget_factor else jnp.full((rows,), _NO_BUDGET)).astype(jnp.int32),
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
    start_type = (_has(phases, AFTER_ITEM_OPEN)[:, None] & _role(roles, _TYPE_FIRST)
                  & self._type_may_start(state))
    start_span = (_has(phases, AFTER_COLON)[:, None] & _role(roles, _SPAN_FIRST)
                  & self._span_may_start(state))
    if not self.follow_order:
      sources = state["copy"] | start_type | start_span
    else:
      sources = ((state["copy"] & ~_role(roles, _TEXT)) | state["ordered"] | start_type
                 | start_span)
    return sources & ~self._spent(state)[:, None] if self.budget_factor else sources

  def _spent(self, state: dict[str, Array]) -> Array:
    """bool [rows]: is only EOS left of the row's output budget?"""
    return state["length"] >= state["budget"] - 1

  # -- target order (module docstring) -------------------------------------------------------

  def _same_type_again(self, state: dict[str, Array]) -> Array:
    """bool [rows]: is the type just written (`last_type`) the last surely closed item's, and
    was that item a span?  Then the new span must start after that one."""
    return (state["last_type"] == state["order_type"]) & ~state["order_null"]

  def _span_may_start(self, state: dict[str, Array]) -> Array:
    """bool [rows, input_len]: may a span start here (target order)?"""
    if not self.follow_order:
      return jnp.ones_like(state["copy"])
    position = jnp.arange(state["copy"].shape[1])[None, :]
    return ~self._same_type_again(state)[:, None] | (position > state["order_start"][:, None])

  def _type_may_start(self, state: dict[str, Array]) -> Array:
    """bool [rows, input_len]: may a type segment starting here come next (target order)?
    A later segment than the last surely closed item's; the same one again only after a span
    and while a span can start after that span."""
    if not self.follow_order:
      return jnp.ones_like(state["copy"])
    segment, last = state["segment_last"], state["order_type"][:, None]
    position = jnp.arange(segment.shape[1])[None, :]
    span_later = jnp.any(_role(state["roles"], _SPAN_FIRST)
                         & (position > state["order_start"][:, None]), axis=1)
    again = ~state["order_null"] & span_later
    return (segment > last) | ((segment == last) & again[:, None])

  def advance(self, state: dict[str, Array], token_ids: Array) -> dict[str, Array]:
    """The state after generating `token_ids` [rows] (no step-0 special case)."""
    roles, phases = state["roles"], state["phases"]
    token = token_ids.astype(jnp.int32)
    same = state["ids"] == token[:, None]
    matched = self._copy_sources(state) & same
    # A copy continues at the next position of the same region; markers separate the type
    # segments, so "next position is a type token" means "same segment".
    in_region = _role(roles, _TYPE) | _role(roles, _TEXT)
    ordered = state["ordered"]
    if self.follow_order:
      # `copy` follows every occurrence of the span (also those the target order does not
      # let the output follow: the span's identity needs them all), `ordered` those it may.
      every_text = ((state["copy"] | (_has(phases, AFTER_COLON)[:, None]
                                      & _role(roles, _SPAN_FIRST))) & _role(roles, _TEXT) & same)
      copy = _shift_right((matched & ~_role(roles, _TEXT)) | every_text, False) & in_region
      ordered = _shift_right(matched & _role(roles, _TEXT), False) & _role(roles, _TEXT)
    else:
      copy = _shift_right(matched, False) & in_region
    is_ = lambda token_id: token == token_id
    has = lambda bit: _has(phases, bit)
    null_taken = self._null_allowed(state) & is_(self.null_id)
    new_phases = (
        _bit(has(EXPECT_TARGET_OPEN) & is_(self.open_id), EXPECT_ITEM_OPEN)
        | _bit(has(AFTER_ITEM_CLOSE) & self._item_may_follow(state) & is_(self.comma_id),
               EXPECT_ITEM_OPEN)
        | _bit(has(EXPECT_ITEM_OPEN) & is_(self.open_id), AFTER_ITEM_OPEN)
        | _bit(jnp.any(matched & _role(roles, _TYPE_LAST), axis=1), TYPE_COMPLETE)
        | _bit(has(TYPE_COMPLETE) & is_(self.colon_id), AFTER_COLON)
        | _bit(jnp.any(matched & _role(roles, _SPAN_LAST), axis=1), SPAN_CLOSABLE)
        | _bit(null_taken, AFTER_NULL)
        | _bit((has(SPAN_CLOSABLE) | has(AFTER_NULL)) & is_(self.close_id), AFTER_ITEM_CLOSE)
        | _bit(has(AFTER_ITEM_CLOSE) & is_(self.close_id), AFTER_TARGET_CLOSE))
    type_ends = matched & _role(roles, _TYPE_LAST)
    last_type = jnp.where(jnp.any(type_ends, axis=1), jnp.argmax(type_ends, axis=1),
                          state["last_type"]).astype(jnp.int32)
    new = {**state, "copy": copy, "phases": new_phases, "last_type": last_type,
           "ordered": ordered, "length": state["length"] + 1}
    if not (self.forbid_repeats or self.follow_order or self.end_at_repeat):
      return new  # the grammar alone: the rules' fields stay as init made them
    new.update(self._track_items(state, token, same, null_taken, matched))
    return self._forbid_repeat_close(new)

  # -- no repeated items (module docstring) --------------------------------------------------

  def _track_items(self, state: dict[str, Array], token: Array, same: Array,
                   null_taken: Array, matched: Array) -> dict[str, Array]:
    """The rules' fields after `token`: the item being written, the written items and the
    last surely closed item (target order)."""
    roles, phases = state["roles"], state["phases"]
    length = roles.shape[1]
    # Text copies that go on (an older span) and spans that start here.
    going_on = state["copy"] & _role(roles, _TEXT) & same
    starting = _has(phases, AFTER_COLON)[:, None] & _role(roles, _SPAN_FIRST) & same
    goes_on, starts = jnp.any(going_on, axis=1), jnp.any(starting, axis=1)
    fresh = (starts | null_taken) & ~goes_on  # a new item's span (or NULL), alone
    unsure = jnp.where(fresh, False, state["unsure"] | ((starts | null_taken) & goes_on))
    # Span code: smallest input position where the copied run ends, and its length (the old
    # length + 1 when it goes on, 1 when it starts; meaningless when unsure).
    old_length = state["item_span"] % (length + 1)
    run_length = jnp.where(goes_on, jnp.where(state["item_span"] >= 0, old_length, 0) + 1, 1)
    end = jnp.argmax(going_on | starting, axis=1)
    span_code = jnp.where(goes_on | starts, end * (length + 1) + run_length,
                          state["item_span"])
    item_span = jnp.where(null_taken & ~goes_on, NULL_SPAN, span_code).astype(jnp.int32)
    item_type = jnp.where(fresh, state["last_type"], state["item_type"]).astype(jnp.int32)
    # Record the item a ")" surely closes: a unique reading, not a repeat, and the ")" is not
    # also a span copy going on (then the span may not have ended).
    sure_close = ((_has(phases, SPAN_CLOSABLE) | _has(phases, AFTER_NULL))
                  & (token == self.close_id) & ~state["unsure"] & ~goes_on)
    count = state["written_count"]
    record = sure_close & ~state["repeat"] & (count < self.max_items)
    # The first occurrence the output may follow that can end the span here.
    closable_ends = matched & _role(roles, _SPAN_LAST)
    item_first = jnp.where(jnp.any(closable_ends, axis=1), jnp.argmax(closable_ends, axis=1),
                           jnp.where(goes_on | starts | null_taken, -1, state["item_first"]))
    closed_null = state["item_span"] == NULL_SPAN
    closed_start = state["item_first"] - state["item_span"] % (length + 1) + 1
    slot = jax.nn.one_hot(count, self.max_items, dtype=bool) & record[:, None]
    return {
        "item_type": item_type,
        "item_span": item_span,
        "unsure": unsure,
        "written_types": jnp.where(slot, state["item_type"][:, None], state["written_types"]),
        "written_spans": jnp.where(slot, state["item_span"][:, None], state["written_spans"]),
        "written_count": count + record.astype(jnp.int32),
        "repeats": state["repeats"] + (sure_close & state["repeat"]).astype(jnp.int32),
        "item_first": item_first.astype(jnp.int32),
        "order_type": jnp.where(sure_close, state["item_type"], state["order_type"]),
        "order_null": jnp.where(sure_close, closed_null, state["order_null"]),
        "order_start": jnp.where(sure_close & ~closed_null, closed_start,
                                 state["order_start"]).astype(jnp.int32),
    }

  def _is_written(self, state: dict[str, Array], item_type: Array, item_span: Array) -> Array:
    """bool [rows]: is (item_type, item_span) among the row's written items?"""
    valid = jnp.arange(self.max_items)[None, :] < state["written_count"][:, None]
    return jnp.any(valid & (state["written_types"] == item_type[:, None])
                   & (state["written_spans"] == item_span[:, None]), axis=1)

  def _null_allowed(self, state: dict[str, Array]) -> Array:
    """bool [rows]: may NULL come next as the span of the item (not as a text copy)?  Not
    when (TYPE:NULL) was written already and a span may start instead."""
    after_colon = _has(state["phases"], AFTER_COLON)
    if self.follow_order:  # NULL is a type's only item
      after_colon = after_colon & ~self._same_type_again(state)
    if not self.forbid_repeats:
      return after_colon
    written = self._is_written(state, state["last_type"], jnp.full_like(state["last_type"],
                                                                         NULL_SPAN))
    span_may_start = jnp.any(_role(state["roles"], _SPAN_FIRST), axis=1)
    return after_colon & ~(written & span_may_start)

  def _forbid_repeat_close(self, state: dict[str, Array]) -> dict[str, Array]:
    """Sets `repeat` and clears the bits that let ")" close a sure repeat, unless that would
    leave no token allowed."""
    phases = state["phases"]
    closable = _has(phases, SPAN_CLOSABLE) | _has(phases, AFTER_NULL)
    repeat = closable & ~state["unsure"] & self._is_written(state, state["item_type"],
                                                              state["item_span"])
    if not self.forbid_repeats:
      return {**state, "repeat": repeat}
    without = phases & ~(SPAN_CLOSABLE | AFTER_NULL)
    others = {**state, "phases": without}
    way_on = (jnp.any(self._copy_sources(others), axis=1)
              | functools.reduce(jnp.logical_or, self._syntax_flags(others)))
    forbid = repeat & way_on
    return {**state, "phases": jnp.where(forbid, without, phases), "repeat": repeat}

  def copy_continuation(self, state: dict[str, Array]) -> tuple[Array, Array]:
    """(token int32 [rows], exists bool [rows]): the input token that would continue the copy
    in progress (type or span) at its first possible position: fast_decoding's draft of the
    next token inside a span.  A guess, verified by the model before it is kept."""
    copy = state["copy"]
    if self.follow_order:  # only the occurrences the output may follow
      copy = (copy & ~_role(state["roles"], _TEXT)) | state["ordered"]
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
    for token_id, allow in zip(self._syntax_ids(), self._syntax_flags(state)):
      allowed = allowed.at[:, token_id].set(allowed[:, token_id] | allow)
    return allowed

  # -- scoring only the allowed tokens (decoding's candidate search) -------------------------

  def _syntax_ids(self) -> tuple[Array, ...]:
    """The grammar's own tokens, in the order of `_syntax_flags`."""
    return (self.open_id, self.colon_id, self.null_id, self.close_id, self.comma_id,
            self.eos_id)

  def _syntax_flags(self, state: dict[str, Array]) -> tuple[Array, ...]:
    """bool [rows] per syntax token (order of `_syntax_ids`): may it come next?"""
    has = lambda bit: _has(state["phases"], bit)
    flags = (has(EXPECT_TARGET_OPEN) | has(EXPECT_ITEM_OPEN), has(TYPE_COMPLETE),
             self._null_allowed(state),
             has(SPAN_CLOSABLE) | has(AFTER_NULL) | has(AFTER_ITEM_CLOSE),
             has(AFTER_ITEM_CLOSE) & self._item_may_follow(state), has(AFTER_TARGET_CLOSE))
    if not self.budget_factor:
      return flags
    spent = self._spent(state)  # only EOS (the last of _syntax_ids)
    return tuple(flag & ~spent for flag in flags[:-1]) + (flags[-1] | spent,)

  def _item_may_follow(self, state: dict[str, Array]) -> Array:
    """bool [rows]: may "," open another item (target order: some type may still come; not
    after a closed repeat with end_at_repeat)?"""
    may = jnp.ones_like(state["phases"], bool)
    if self.follow_order:
      may = jnp.any(_role(state["roles"], _TYPE_FIRST) & self._type_may_start(state), axis=1)
    return may & (state["repeats"] < self.end_at_repeat) if self.end_at_repeat else may

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
                             jnp.stack(self._syntax_flags(state), axis=1)], axis=1)
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



def ner_copy_constraint(vocabulary: Any, forbid_repeats: bool = False,
                        follow_order: bool = False, budget_factor: float = 0.0,
                        budget_slack: int = OUTPUT_BUDGET_SLACK,
                        end_at_repeat: int = 0) -> NerCopyConstraint:
  """`NerCopyConstraint.from_vocabulary` as a plain function, for gin, e.g.
  `evaluation.Evaluator.constraint_factory = @constraints.ner_copy_constraint` (and its
  `forbid_repeats` / `follow_order` / `budget_factor` / `end_at_repeat` for the rules of the
  module docstring; like from_vocabulary, all off by default)."""
  return NerCopyConstraint.from_vocabulary(vocabulary, forbid_repeats=forbid_repeats,
                                           follow_order=follow_order,
                                           budget_factor=budget_factor,
                                           budget_slack=budget_slack,
                                           end_at_repeat=end_at_repeat)
