"""Vocabularies: a character-level SentencePiece model we train, and BERT's WordPiece vocab.txt.

Why character level. The model COPIES entity types from the prompt and spans from the text, and
constrained decoding requires "a generated span is a contiguous run of input token ids". That
holds only when a span tokenizes to the same ids alone as inside its sentence, which a
character-level segmentation gives for free (one CJK character, one ASCII letter, one
punctuation mark = one token).

SentencePiece (`train_sentencepiece`, used through `seqio.SentencePieceVocabulary`):
* `model_type="char"`; `normalization_rule_name="identity"` (the default NFKC would rewrite
  full-width punctuation such as "（，：）"), no dummy prefix, extra whitespace kept.
* `byte_fallback=True`: a character outside the vocabulary (emoji, rare CJK) becomes its UTF-8
  bytes, one token per byte, so `decode(encode(s)) == s` for every string.
* SentencePiece's trainer insists on escaping " " as "▁" (U+2581) for char/unigram models; a
  literal "▁" in the text would then decode as a space. After training we therefore switch
  escaping off in the saved model and rename the "▁" piece to " ": a space is still one token,
  and a literal "▁" goes through byte fallback and comes back unchanged.
* T5/seqio ids: pad=0, eos=1, unk=2, no bos; then the prompt markers "<entity>", "<text>" and
  "NULL" as user-defined symbols (ids 3, 4, 5), then the 256 byte pieces, then characters by
  descending frequency. User-defined symbols are matched anywhere in the text, so the letters
  "NULL" inside a sentence also become that one token (consistently in prompt, text and target).

WordPiece (`WordPieceVocabulary`): the public Chinese T5 checkpoints (e.g.
uer/t5-base-chinese-cluecorpussmall) use BERT's Chinese vocab.txt ([PAD]=0, [unused1..99]=1..99,
[UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103). Encoding is BERT's basic tokenization followed by
greedy longest-match-first WordPiece; the Python path is ours, the TF path runs tensorflow_text's
BertTokenizer, and both give the same ids. The markers map to reserved tokens (see
`WORDPIECE_MARKER_TOKENS`). Decoding is lossy (lower-casing, accents, whitespace), which is why
extraction maps spans back to the input by token alignment (`encode_with_offsets`) and not by
matching decoded strings.
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from typing import Iterable, Mapping, Optional, Sequence

import seqio
import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2

from punified_jax import entity_types
from punified_jax import storage
from punified_jax.data.example import DataFormatError
from punified_jax.prompts import ENTITY_MARKER, NULL, TEXT_MARKER

# The prompt markers, in the order they get their reserved ids.
MARKERS: tuple[str, ...] = (ENTITY_MARKER, TEXT_MARKER, NULL)

# Characters the model must be able to write as single tokens whatever the training text holds:
# the target grammar "((地点:北京),(组织:NULL))" and every character of every prompt name.
TARGET_SYNTAX_CHARS = "(),:"
DEFAULT_REQUIRED_CHARS: str = "".join(sorted(
    set(TARGET_SYNTAX_CHARS) | {c for name in entity_types.ALL_PROMPT_NAMES for c in name}))

# SentencePiece ids in the T5/seqio convention.
SP_PAD_ID, SP_EOS_ID, SP_UNK_ID = 0, 1, 2
_NUM_BYTE_PIECES = 256  # byte_fallback adds <0x00> .. <0xFF>

# ---------------------------------------------------------------------------------------------
# SentencePiece
# ---------------------------------------------------------------------------------------------


def train_sentencepiece(texts: Iterable[str],
                        model_path: str,
                        *,
                        vocab_size: Optional[int] = None,
                        character_coverage: float = 1.0,
                        seed: int = 0,
                        required_chars: str = DEFAULT_REQUIRED_CHARS,
                        markers: Sequence[str] = MARKERS) -> str:
  """Trains a character-level SentencePiece model on `texts` and writes it to `model_path`.

  Args:
    texts: training sentences (each one sentence; empty strings are allowed and contribute
      nothing).
    model_path: where the `.model` file goes (parent directories are created; the file is
      written atomically, so a reader never sees half a model).
    vocab_size: an UPPER bound on the number of pieces, specials, markers and the 256 byte
      pieces included. None means "every character that `character_coverage` keeps". The char
      trainer never invents pieces, so the result can be smaller; read the size off the model.
    character_coverage: fraction of character occurrences the kept characters must cover. 1.0
      (default) keeps every character seen in training; the rest of the world goes through
      byte fallback.
    seed: seeds SentencePiece's (process-global) random generator before training; with one
      trainer thread, the same texts and seed give byte-identical models.
    required_chars: characters that must get a piece (default: the target syntax and every
      prompt-name character); a ValueError says so when `vocab_size` leaves no room for them.
    markers: user-defined symbols, ids 3.. in this order.

  Returns:
    `model_path`.
  """
  sentences = []
  longest_bytes = 0
  chars: set[str] = set()
  for index, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"training text #{index} is a {type(text).__name__}, not a str")
    sentences.append(text)
    chars.update(text)
    longest_bytes = max(longest_bytes, len(text.encode("utf-8")))
  if not chars:
    raise ValueError("no training text: every sentence is empty (or none was given)")
  if not 0.0 < character_coverage <= 1.0:
    raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage}")
  markers = tuple(markers)
  if len(set(markers)) != len(markers) or not all(markers):
    raise ValueError(f"markers must be distinct non-empty strings, got {markers!r}")
  required = "".join(sorted(set(required_chars) - {" "}))
  num_meta = 3 + len(markers) + _NUM_BYTE_PIECES
  if vocab_size is None:
    # Upper bound: one piece per distinct character; coverage decides how many are kept.
    vocab_size = num_meta + len(chars | set(required))
  elif vocab_size <= num_meta:
    raise ValueError(f"vocab_size={vocab_size} leaves no room for characters: pad/eos/unk, "
                     f"{len(markers)} markers and {_NUM_BYTE_PIECES} byte pieces already take "
                     f"{num_meta} ids")

  spm.set_random_generator_seed(seed)
  model_bytes = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model_bytes,
      model_type="char",
      vocab_size=vocab_size,
      character_coverage=character_coverage,
      required_chars=required,
      normalization_rule_name="identity",
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      byte_fallback=True,
      pad_id=SP_PAD_ID, eos_id=SP_EOS_ID, unk_id=SP_UNK_ID, bos_id=-1,
      pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
      user_defined_symbols=list(markers),
      # The trainer silently skips sentences longer than this (default 4192 bytes).
      max_sentence_length=max(4192, longest_bytes + 1),
      num_threads=1,  # one thread: identical bytes run to run
      minloglevel=2,
  )
  model = sentencepiece_model_pb2.ModelProto.FromString(model_bytes.getvalue())
  left_out = sorted(set(required) - {p.piece for p in model.pieces})
  if left_out:
    # Under a tight vocab_size cap the char trainer ranks required characters by frequency too.
    raise ValueError(f"vocab_size={vocab_size} has no room for {len(left_out)} required "
                     f"characters (e.g. {''.join(left_out[:10])!r}); raise vocab_size or pass "
                     "required_chars=''")
  _unescape_whitespace(model)

  storage.write_bytes_atomic(model_path, model.SerializeToString(deterministic=True))
  return model_path


def _unescape_whitespace(model: sentencepiece_model_pb2.ModelProto) -> None:
  """Turns whitespace escaping off and renames the "▁" piece to " " (see the module docstring).

  The trainer requires escaping while it trains; at encoding time escaping only changes which
  string stands for a space, so the renamed piece keeps its id and a space is still one token.
  """
  model.normalizer_spec.escape_whitespaces = False
  for piece in model.pieces:
    if piece.piece == "\u2581":
      piece.piece = " "


def sentencepiece_offsets(vocab: seqio.SentencePieceVocabulary,
                          text: str) -> tuple[list[int], list[tuple[int, int]]]:
  """(ids, character spans in `text`), one span per id; ids == vocab.encode(text).

  With the char model a span is one character, except byte-fallback tokens: the 2-4 byte
  tokens of one character all get that character's span. A token with no surface of its own
  that is not a byte (e.g. the dummy-prefix "▁" of other SentencePiece models) gets an empty
  span at its position.
  """
  tokenizer = vocab.tokenizer
  encoded = tokenizer.EncodeAsProto(text)
  # char_at[b] = index of the character that byte b belongs to (b = len(bytes) -> len(text)).
  char_at = []
  for index, char in enumerate(text):
    char_at.extend([index] * len(char.encode("utf-8")))
  char_at.append(len(text))
  ids, spans = [], []
  for piece in encoded.pieces:
    start = char_at[piece.begin]
    if piece.end > piece.begin:
      # `end` is a byte boundary of the original text: the character starting there.
      end = char_at[piece.end - 1] + 1
    elif tokenizer.IsByte(piece.id) and piece.begin < len(char_at) - 1:
      end = start + 1
    else:
      end = start
    ids.append(piece.id)
    spans.append((start, end))
  return ids, spans


# ---------------------------------------------------------------------------------------------
# WordPiece
# ---------------------------------------------------------------------------------------------

# Marker -> reserved BERT token. "NULL" gets its own token too: lower-cased, it would become the
# pieces of "null" and could not be told apart from that English word.
WORDPIECE_MARKER_TOKENS: Mapping[str, str] = {
    ENTITY_MARKER: "[unused1]",
    TEXT_MARKER: "[unused2]",
    NULL: "[unused3]",
}

# The CJK blocks BERT splits character by character (same ranges as tensorflow_text).
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_cjk(char: str) -> bool:
  code = ord(char)
  return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_ascii_punctuation(char: str) -> bool:
  # BERT counts every non-alphanumeric printable ASCII character ($, +, ^, ...) as punctuation.
  return char in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def _splits_alone(char: str) -> bool:
  """Characters that form a word on their own: punctuation and CJK ideographs."""
  return (_is_ascii_punctuation(char) or unicodedata.category(char).startswith("P")
          or _is_cjk(char))


def _is_word_char(char: str) -> bool:
  """Characters that need a space between two words when decoding ("new york", not "newyork")."""
  return char.isalnum() and not _is_cjk(char)


def _re2_escape(literal: str) -> str:
  return "".join("\\" + c if (c.isascii() and not c.isalnum() and c != "_") else c
                 for c in literal)


class WordPieceVocabulary(seqio.Vocabulary):
  """BERT vocab.txt as a seqio.Vocabulary (ids are line numbers, 0-based).

  Encoding (Python `encode` and TF `encode_tf` give the same ids):
  1. The markers (`markers`, e.g. "<entity>") are split out of the raw text first and map to
     their reserved tokens; everything below runs on the text between them.
  2. With `lower_case`: lower-case (Python's `str.lower`, the same full Unicode mapping as
     `tf.strings.lower(encoding="utf-8")`), NFD, remove combining marks (category Mn); this is
     BERT's uncased recipe. We do NOT use tensorflow_text's own `lower_case=True`, because its
     case folding is NFKC_Casefold, which would turn full-width "，（：）" into ASCII.
  3. Space separators (category Zs, e.g. U+3000) and control/format characters (Cc, Cf)
     become spaces. (Original BERT deletes some control characters instead; tensorflow_text
     turns them into spaces, and we follow the TF path so both agree.)
  4. Split on spaces; every punctuation character (ASCII symbols and Unicode P*) and every CJK
     ideograph is a word of its own.
  5. Greedy longest-match-first WordPiece with "##" continuations; a word with no piecing, or
     whose normalized form is longer than `max_bytes_per_word` UTF-8 bytes (tensorflow_text
     counts bytes; for ASCII this is BERT's 100-character limit), becomes one [UNK].
  `markers` maps marker strings to vocabulary tokens (default `WORDPIECE_MARKER_TOKENS`:
  <entity> -> [unused1], <text> -> [unused2], NULL -> [unused3]); markers are matched
  case-sensitively anywhere in the raw text, so a sentence's own "NULL" is that token too.

  Decoding: pieces joined, "##" pieces glued to the previous one, a space only between two
  tokens whose touching characters are both non-CJK letters/digits, markers back to their
  strings, [UNK] written as "[UNK]" (spaced like a word), [PAD]/[SEP]/`control_tokens`
  dropped, and output stops at [SEP] (the eos). Lossy by design:
  case, accents and the original whitespace are gone. Use `encode_with_offsets` to map tokens
  back to the original text.
  """

  def __init__(self,
               vocab_file: str,
               *,
               lower_case: bool = True,
               markers: Optional[Mapping[str, str]] = None,
               max_bytes_per_word: int = 100,
               unk_token: str = "[UNK]",
               pad_token: str = "[PAD]",
               eos_token: str = "[SEP]",
               control_tokens: Sequence[str] = ("[CLS]",)):
    self._vocab_file = os.fspath(vocab_file)
    self._lower_case = bool(lower_case)
    self._max_bytes_per_word = int(max_bytes_per_word)
    self._tokens = _read_vocab_file(self._vocab_file)
    self._ids = {token: i for i, token in enumerate(self._tokens)}

    def require(token: str, what: str) -> int:
      if token not in self._ids:
        raise ValueError(f"{self._vocab_file}: the {what} token {token!r} is not in the vocabulary")
      return self._ids[token]

    if self._tokens[0] != pad_token:
      raise DataFormatError(self._vocab_file, 1, f"seqio pads with id 0, so line 1 must be "
                            f"{pad_token!r}, found {self._tokens[0]!r}")
    self._unk_id = require(unk_token, "unknown")
    self._eos_id = require(eos_token, "end-of-sequence")
    self._unk_token = unk_token
    marker_tokens = dict(WORDPIECE_MARKER_TOKENS if markers is None else markers)
    self._marker_ids: dict[str, int] = {}
    for marker, token in marker_tokens.items():
      if not marker or "\x00" in marker:
        raise ValueError(f"a marker must be a non-empty string without NUL, got {marker!r}")
      self._marker_ids[marker] = require(token, f"marker {marker!r}")
    if len(set(self._marker_ids.values())) != len(self._marker_ids):
      raise ValueError(f"two markers share a token: {marker_tokens}")
    self._marker_by_id = {i: m for m, i in self._marker_ids.items()}
    # Longest first: leftmost-first alternation then prefers the longer of two markers that
    # start at the same place (Python re and RE2 agree on this).
    ordered = sorted(self._marker_ids, key=len, reverse=True)
    self._marker_re = re.compile("|".join(re.escape(m) for m in ordered)) if ordered else None
    self._marker_re2 = "|".join(_re2_escape(m) for m in ordered)
    self._silent_ids = {0, self._eos_id} | {self._ids[t] for t in control_tokens if t in self._ids}
    self._control_tokens = tuple(control_tokens)
    self._longest_token = max(len(t) for t in self._tokens)
    self._tf_state = None
    super().__init__(extra_ids=0)

  # -- seqio.Vocabulary interface -------------------------------------------------------------

  @property
  def bos_id(self) -> Optional[int]:
    return None

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def unk_id(self) -> int:
    return self._unk_id

  @property
  def _base_vocab_size(self) -> int:
    return len(self._tokens)

  @property
  def vocab_file(self) -> str:
    return self._vocab_file

  @property
  def lower_case(self) -> bool:
    return self._lower_case

  @property
  def marker_ids(self) -> dict[str, int]:
    return dict(self._marker_ids)

  def id_to_token(self, token_id: int) -> str:
    return self._tokens[token_id]

  def token_to_id(self, token: str) -> Optional[int]:
    return self._ids.get(token)

  def _encode(self, s: str) -> list[int]:
    return self.encode_with_offsets(s)[0]

  def _decode(self, ids: Iterable[int]) -> str:
    out: list[str] = []
    previous_ends_word = False
    for token_id in ids:
      token_id = int(token_id)
      if not 0 <= token_id < len(self._tokens):
        token_id = self._unk_id
      if token_id in self._silent_ids:
        continue
      text, continuation = self._display(token_id)
      starts_word, ends_word = self._word_edges(token_id)
      if not continuation and starts_word and previous_ends_word:
        out.append(" ")
      out.append(text)
      previous_ends_word = ends_word
    return "".join(out)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """Scalar string -> int32 [tokens]; rank-1 strings -> int32 RaggedTensor [batch, tokens]."""
    state = self._tf()
    s = tf.convert_to_tensor(s, dtype=tf.string)
    if s.shape.rank not in (0, 1):
      raise ValueError(f"encode_tf takes a scalar or a vector of strings, got shape {s.shape}")
    # tensorflow_text's regex_split stops reading a string at a NUL byte; NUL is a control
    # character, which step 3 turns into a space anyway, so do that first.
    batch = tf.strings.regex_replace(tf.reshape(s, [-1]), r"\x00", " ")
    if self._marker_re2:
      segments = tf_text.regex_split(batch, self._marker_re2, self._marker_re2)  # [B, S]
    else:
      segments = tf.RaggedTensor.from_tensor(tf.expand_dims(batch, 1))
    flat = segments.flat_values  # [P] all segments of all strings
    marker_ids = state["marker_table"].lookup(flat)  # -1 where the segment is ordinary text
    is_marker = marker_ids >= 0
    text = tf.where(is_marker, tf.constant("", tf.string), flat)
    if self._lower_case:
      text = tf.strings.lower(text, encoding="utf-8")
      text = tf_text.normalize_utf8(text, "NFD")
      text = tf.strings.regex_replace(text, r"\p{Mn}", "")
    text = tf.strings.regex_replace(text, r"\p{Zs}", " ")
    pieces = state["bert"].tokenize(text).merge_dims(1, 2)  # [P, tokens], int64
    marker_piece = tf.RaggedTensor.from_row_lengths(
        tf.boolean_mask(marker_ids, is_marker), tf.cast(is_marker, tf.int64))  # [P, 0 or 1]
    per_segment = tf.concat([marker_piece, pieces], axis=1)  # a marker segment has no pieces
    ids = segments.with_flat_values(per_segment).merge_dims(1, 2)  # [B, tokens]
    ids = tf.cast(ids, tf.int32)
    return ids[0] if s.shape.rank == 0 else ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int [tokens] -> scalar string; int [batch, tokens] -> string [batch]."""
    state = self._tf()
    ids = tf.convert_to_tensor(ids)
    rank = ids.shape.rank
    if rank not in (1, 2):
      raise ValueError(f"decode_tf takes ids of rank 1 or 2, got shape {ids.shape}")
    ids = tf.cast(ids[tf.newaxis] if rank == 1 else ids, tf.int32)  # [batch, tokens]
    ids = tf.where((ids < 0) | (ids >= len(self._tokens)), self._unk_id, ids)
    ragged = tf.RaggedTensor.from_tensor(ids)
    ragged = tf.ragged.boolean_mask(ragged, tf.gather(state["shown"], ragged))
    flat = ragged.flat_values
    continuation = tf.gather(state["continuation"], flat)
    starts_word = tf.gather(state["starts_word"], flat)
    ends_word = tf.gather(state["ends_word"], flat)
    previous_ends_word = tf.concat([[False], ends_word], axis=0)[:-1]
    position = tf.range(tf.size(flat, out_type=tf.int64))
    first_in_row = tf.equal(position, tf.gather(ragged.row_starts(), ragged.value_rowids()))
    space = (~continuation) & starts_word & previous_ends_word & (~first_in_row)
    strings = tf.where(space, " ", "") + tf.gather(state["display"], flat)
    out = tf.strings.reduce_join(ragged.with_flat_values(strings), axis=-1)
    return out[0] if rank == 1 else out

  # -- offsets --------------------------------------------------------------------------------

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, [(start, end)]) with each token's character span in the ORIGINAL `text`.

    A marker's span is the marker; a word piece's span runs from the first to the last
    original character that produced its (normalized) characters. A combining mark removed by
    accent stripping belongs to the character before it. When one original character
    normalizes to several (e.g. "ŉ" -> "ʼn") and WordPiece cuts between them, both tokens get
    that character's span. ids == `encode(text)`.
    """
    if not isinstance(text, str):
      raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    position = 0
    matches = self._marker_re.finditer(text) if self._marker_re else ()
    for match in matches:
      self._encode_segment(text, position, match.start(), ids, spans)
      ids.append(self._marker_ids[match.group()])
      spans.append((match.start(), match.end()))
      position = match.end()
    self._encode_segment(text, position, len(text), ids, spans)
    return ids, spans

  def _encode_segment(self, text: str, start: int, end: int, ids: list[int],
                      spans: list[tuple[int, int]]) -> None:
    """Basic tokenization + WordPiece of text[start:end] (no markers inside)."""
    word: list[list] = []  # [normalized char, original start, original end]

    def flush():
      if word:
        for token_id, i, j in self._wordpiece("".join(c for c, _, _ in word)):
          ids.append(token_id)
          spans.append((word[i][1], word[j - 1][2]))
        word.clear()

    for char, orig_start, orig_end in self._normalize(text, start, end):
      if char == " ":
        flush()
      elif _splits_alone(char):
        flush()
        word.append([char, orig_start, orig_end])
        flush()
      else:
        word.append([char, orig_start, orig_end])
    flush()

  def _normalize(self, text: str, start: int, end: int) -> list[list]:
    """[normalized char, original start, original end] for text[start:end] (steps 2-3)."""
    segment = text[start:end]
    out: list[list] = []
    if self._lower_case:
      # Lower-case the whole segment (Greek final sigma depends on context), then cut it back
      # into per-character pieces: only final sigma is contextual, and it keeps the length.
      lowered = segment.lower()
      cursor = 0
      for index, char in enumerate(segment):
        width = len(char.lower())
        piece = unicodedata.normalize("NFD", lowered[cursor:cursor + width])
        cursor += width
        piece = "".join(c for c in piece if unicodedata.category(c) != "Mn")
        if not piece and out and out[-1][0] != " ":
          out[-1][2] = start + index + 1  # a stripped accent joins the character before it
        for c in piece:
          out.append([c, start + index, start + index + 1])
    else:
      out = [[c, start + i, start + i + 1] for i, c in enumerate(segment)]
    for entry in out:
      if unicodedata.category(entry[0]) in ("Zs", "Cc", "Cf"):
        entry[0] = " "
    return out

  def _wordpiece(self, word: str) -> list[tuple[int, int, int]]:
    """Greedy longest-match-first pieces of `word`: (id, start, end) in `word`'s characters."""
    if len(word.encode("utf-8")) > self._max_bytes_per_word:
      return [(self._unk_id, 0, len(word))]
    pieces = []
    begin = 0
    while begin < len(word):
      # A piece is at most as long as the longest vocabulary entry; "##" adds 2 characters.
      end = min(len(word), begin + self._longest_token)
      while end > begin:
        candidate = word[begin:end] if begin == 0 else "##" + word[begin:end]
        token_id = self._ids.get(candidate)
        if token_id is not None:
          break
        end -= 1
      else:
        return [(self._unk_id, 0, len(word))]
      pieces.append((token_id, begin, end))
      begin = end
    return pieces

  # -- helpers --------------------------------------------------------------------------------

  def _display(self, token_id: int) -> tuple[str, bool]:
    """(text shown for a token when decoding, whether it glues to the previous token)."""
    if token_id in self._marker_by_id:
      return self._marker_by_id[token_id], False
    if token_id in self._silent_ids:
      return "", False
    token = self._tokens[token_id]
    if token.startswith("##") and len(token) > 2:
      return token[2:], True
    return token, False

  def _word_edges(self, token_id: int) -> tuple[bool, bool]:
    """Whether a token starts / ends with a word character (decoding puts a space between an
    end and a start). Markers never take spaces; [UNK] counts as a word ("iphone [UNK] 12")."""
    if token_id == self._unk_id:
      return True, True
    text, _ = self._display(token_id)
    if not text or token_id in self._marker_by_id:
      return False, False
    return _is_word_char(text[0]), _is_word_char(text[-1])

  def _tf(self) -> dict:
    """TF lookup tables and the BertTokenizer, built once, eagerly (so a tf.data or tf.function
    graph that calls encode_tf/decode_tf captures them instead of rebuilding them)."""
    if self._tf_state is None:
      with tf.init_scope():
        size = len(self._tokens)
        vocab_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self._tokens), tf.range(size, dtype=tf.int64)),
            default_value=-1)
        markers = list(self._marker_ids) or [""]
        marker_values = list(self._marker_ids.values()) or [-1]
        marker_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(markers), tf.constant(marker_values, tf.int64)),
            default_value=-1)
        bert = tf_text.BertTokenizer(
            vocab_table, suffix_indicator="##", max_bytes_per_word=self._max_bytes_per_word,
            token_out_type=tf.int64, unknown_token=self._unk_token, lower_case=False)
        display, continuation, starts_word, ends_word, shown = [], [], [], [], []
        for token_id in range(size):
          text, glued = self._display(token_id)
          starts, ends = self._word_edges(token_id)
          display.append(text)
          continuation.append(glued)
          starts_word.append(starts)
          ends_word.append(ends)
          shown.append(token_id not in self._silent_ids)
        self._tf_state = {
            "marker_table": marker_table,
            "bert": bert,
            "display": tf.constant(display, tf.string),
            "continuation": tf.constant(continuation),
            "starts_word": tf.constant(starts_word),
            "ends_word": tf.constant(ends_word),
            "shown": tf.constant(shown),
        }
    return self._tf_state

  def _config(self) -> tuple:
    return (tuple(self._tokens), self._lower_case, tuple(sorted(self._marker_ids.items())),
            self._max_bytes_per_word, self._unk_id, self._eos_id, tuple(sorted(self._silent_ids)))

  def __eq__(self, other) -> bool:
    return isinstance(other, WordPieceVocabulary) and self._config() == other._config()

  def __hash__(self) -> int:
    return hash(self._config())

  def __getstate__(self):
    # Gin deep-copies configurables' arguments: keep pickling free of TF resources.
    state = self.__dict__.copy()
    state["_tf_state"] = None
    state.pop("_marker_re", None)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    ordered = sorted(self._marker_ids, key=len, reverse=True)
    self._marker_re = re.compile("|".join(re.escape(m) for m in ordered)) if ordered else None

  def __str__(self) -> str:
    return (f"WordPieceVocabulary(file={self._vocab_file}, size={len(self._tokens)}, "
            f"lower_case={self._lower_case})")

  __repr__ = __str__


def _read_vocab_file(path: str) -> list[str]:
  """One token per line; line n (1-based) is id n-1. Empty or repeated tokens are errors."""
  if not storage.exists(path):
    raise FileNotFoundError(f"vocabulary file not found: {path}")
  data = storage.read_bytes(path)
  try:
    content = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise DataFormatError(path, line, f"not UTF-8 ({e.reason})") from None
  lines = content.split("\n")
  if lines and lines[-1] == "":
    lines.pop()  # the newline that ends the last line
  tokens: list[str] = []
  first_line: dict[str, int] = {}
  for number, line in enumerate(lines, start=1):
    token = line[:-1] if line.endswith("\r") else line
    if not token:
      raise DataFormatError(path, number, "empty token (every line must hold one token)")
    if token in first_line:
      raise DataFormatError(path, number,
                            f"token {token!r} repeats line {first_line[token]}")
    first_line[token] = number
    tokens.append(token)
  if not tokens:
    raise DataFormatError(path, None, "the vocabulary is empty")
  return tokens


# ---------------------------------------------------------------------------------------------
# Factory and helpers shared by both kinds
# ---------------------------------------------------------------------------------------------


def get_vocabulary(path: str, *, extra_ids: int = 0, lower_case: bool = True) -> seqio.Vocabulary:
  """`*.model` -> seqio.SentencePieceVocabulary; `*.txt` -> WordPieceVocabulary.

  `extra_ids` (T5 sentinels) applies to SentencePiece only; `lower_case` to WordPiece only.
  Note that seqio caches a SentencePiece model by path for the life of the process.

  Local or gs:// paths.  seqio's SentencePieceVocabulary reads its file through TensorFlow's
  gfile, which cannot reach a storage emulator (and would need TensorFlow's own GCS
  credentials), so a remote `.model` is handed to seqio as a local copy cached under
  `$PUNIFIED_CACHE/remote/<sha256 of the content>/` (storage.local_copy): the copy's name
  changes whenever the content does, so seqio's per-path cache can never serve a stale model.
  `vocab_info(...)["path"]` is then that local copy.
  """
  path = os.fspath(path)
  if not storage.exists(path):
    raise FileNotFoundError(f"vocabulary file not found: {path}")
  if path.endswith(".model"):
    return seqio.SentencePieceVocabulary(storage.local_copy(path), extra_ids=extra_ids)
  if path.endswith(".txt"):
    if extra_ids:
      raise ValueError(f"{path}: extra_ids are not supported for a WordPiece vocabulary")
    return WordPieceVocabulary(path, lower_case=lower_case)
  raise ValueError(f"{path}: unknown vocabulary kind (expected a SentencePiece '.model' or a "
                   "WordPiece 'vocab.txt')")


def encode_with_offsets(vocab: seqio.Vocabulary,
                        text: str) -> tuple[list[int], list[tuple[int, int]]]:
  """(ids, per-token character spans in `text`) for either vocabulary kind."""
  if isinstance(vocab, WordPieceVocabulary):
    return vocab.encode_with_offsets(text)
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    return sentencepiece_offsets(vocab, text)
  raise TypeError(f"no offsets for a {type(vocab).__name__}")


def decoded_prefix_lengths(vocab: seqio.Vocabulary, ids: Sequence[int],
                           ends: Sequence[int]) -> list[int]:
  """len(vocab.decode(ids[:end])) for each end, exactly.

  A SentencePiece vocabulary decodes the output once, with each piece's place in the decoded
  text (the tokenizer's DecodeIdsAsProto), after seqio's own clean-up (ids past the base
  vocabulary and past the tokenizer's pieces become UNK, and the output stops after its first
  EOS).  A prefix that ends before a piece that is not a byte ends exactly where that piece
  begins in the whole decode: a run of byte-fallback pieces cut by a prefix decodes as it does
  when the next piece (not a byte) cuts it.  A prefix that ends inside a run of bytes (the rest
  of the character is cut off) is decoded on its own, all such prefixes in one batched call.
  (seqio's decode, one prefix at a time, spends most of its time in per-call Python: the
  Extractor asks for ~50 prefixes per CCKS2021 output.)  Other vocabularies decode each prefix.
  """
  if not isinstance(vocab, seqio.SentencePieceVocabulary):
    return [len(vocab.decode(ids[:end])) for end in ends]
  if not len(ends):
    return []
  tokenizer = vocab.tokenizer
  unk, pieces, base = vocab.unk_id, tokenizer.GetPieceSize(), vocab._base_vocab_size  # pylint: disable=protected-access
  clean = [int(i) for i in ids]
  if clean and max(clean) >= min(base, pieces):
    if unk is not None:
      clean = [unk if i >= base else i for i in clean]
    clean = [tokenizer.unk_id() if i >= pieces else i for i in clean]
  eos = vocab.eos_id
  if eos is not None and eos in clean:
    clean = clean[:clean.index(eos) + 1]
  decoded = tokenizer.DecodeIdsAsProto(clean)
  begins = [piece.begin for piece in decoded.pieces]
  if len(begins) != len(clean):  # not one piece per id: decode every prefix
    return [len(text) for text in tokenizer.Decode([clean[:end] for end in ends])]
  text = decoded.text
  raw = text.encode("utf-8")
  lengths: list[Optional[int]] = []
  inside_bytes: list[int] = []
  for end in ends:
    end = min(end, len(clean))
    if end == len(clean):
      lengths.append(len(text))
    elif end == 0:
      lengths.append(0)
    elif not tokenizer.IsByte(clean[end]):
      # A piece begins on a character boundary of the decoded text.
      lengths.append(len(raw[:begins[end]].decode("utf-8")))
    else:
      lengths.append(None)
      inside_bytes.append(end)
  if inside_bytes:
    own = iter(len(text) for text in tokenizer.Decode([clean[:end] for end in inside_bytes]))
    lengths = [next(own) if length is None else length for length in lengths]
  return lengths


def vocab_info(vocab: seqio.Vocabulary) -> dict:
  """Size, special ids, kind and source file, for logs."""
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    kind, path = "sentencepiece", vocab.sentencepiece_model_file
  elif isinstance(vocab, WordPieceVocabulary):
    kind, path = "wordpiece", vocab.vocab_file
  else:
    kind, path = type(vocab).__name__, None
  return {
      "type": kind,
      "path": path,
      "vocab_size": int(vocab.vocab_size),
      "pad_id": vocab.pad_id,
      "eos_id": vocab.eos_id,
      "unk_id": vocab.unk_id,
      "extra_ids": vocab.extra_ids,
  }
