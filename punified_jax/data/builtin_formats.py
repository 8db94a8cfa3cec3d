"""The built-in corpus's release formats: generated sentences as each dataset's files.

Part of the built-in corpus (`builtin.py`): every dataset is written in its own release format
(tag columns, MSRA and People's Daily word/tag lines, CLUENER and Boson JSON / markup), so the
real readers (`readers.py`) read it. The word-segmented formats need words: `segment` splits
template text by our own rule.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from typing import Iterable, Mapping, Optional, Sequence

from punified_jax import entity_types
from punified_jax.data import lexicon
from punified_jax.data.builtin_sentences import Piece, Sentence
from punified_jax.data.example import Example

# ----------------------------------------------------------------------------- segmentation

_FULLWIDTH_DIGITS = frozenset("０１２３４５６７８９")
_NUMBER_TAIL = frozenset(".．%％")


def _is_digit(ch: str) -> bool:
  return ch.isascii() and ch.isdigit() or ch in _FULLWIDTH_DIGITS


def _is_ascii_letter(ch: str) -> bool:
  return ch.isascii() and ch.isalpha()


def segment(text: str, *, strict: bool = False) -> list[lexicon.Word]:
  """Splits plain text into (word, part of speech) by our own simple rule.

  Punctuation is a word (`w`); a run of digits (with . or %) is a numeral (`m`); a run of
  ASCII letters, digits, `-` and `_` that starts with a letter is a foreign string (`nx`);
  Chinese text is cut by forward maximum matching on `lexicon.WORD_POS` (words up to 6
  characters). A character no listed word starts with becomes a 2-character word (`n`) with
  its neighbour (1 character at a boundary); with `strict` it raises a ValueError instead, so a
  test can prove that a template's text is fully covered by the table.
  """
  words: list[lexicon.Word] = []
  i = 0
  n = len(text)
  while i < n:
    ch = text[i]
    if _is_digit(ch):
      j = i + 1
      while j < n and (_is_digit(text[j]) or text[j] in _NUMBER_TAIL):
        j += 1
      words.append((text[i:j], "m"))
      i = j
      continue
    if _is_ascii_letter(ch):
      j = i + 1
      while j < n and (text[j].isascii() and (text[j].isalnum() or text[j] in "-_")):
        j += 1
      words.append((text[i:j], "nx"))
      i = j
      continue
    if ch in lexicon.PUNCTUATION:
      words.append((ch, "w"))
      i += 1
      continue
    for length in range(min(6, n - i), 0, -1):
      pos = lexicon.WORD_POS.get(text[i:i + length])
      if pos is not None:
        words.append((text[i:i + length], pos))
        i += length
        break
    else:
      if strict:
        raise ValueError(f"no word in lexicon.WORD_POS starts at {text[i:]!r} (in {text!r})")
      j = i + 1
      if (j < n and not _is_digit(text[j]) and not text[j].isascii()
          and text[j] not in lexicon.PUNCTUATION and text[j] not in lexicon.WORD_POS):
        j += 1
      words.append((text[i:j], "n"))
      i = j
  return words


def _plain_pos(word: str) -> str:
  """Part of speech for a word of a plain (non-entity) lexicon phrase that has none."""
  if all(_is_digit(c) or c in _NUMBER_TAIL for c in word):
    return "m"
  if word.isascii():
    return "nx"
  return lexicon.WORD_POS.get(word, "n")


# People's Daily tags that the reader turns into entities; plain words must never carry them.
_PD_ENTITY_POS = {"PER": "nr", "LOC": "ns", "ORG": "nt", "T": "t"}


def _plain_words(piece: Piece) -> list[lexicon.Word]:
  if piece.words is None:
    return segment(piece.text)
  words = [(w, pos or _plain_pos(w)) for w, pos in piece.words]
  # A plain phrase keeps its words but loses any entity tag (e.g. a time in MSRA text).
  return [(w, "n" if pos in ("nr", "ns", "nt", "t") else pos) for w, pos in words]


# ----------------------------------------------------------------------------- writers

def char_tags(example: Example, scheme: str) -> list[str]:
  """One tag per character of `example.text` in `scheme` (BIO, BIOES, BMES or BIES)."""
  if scheme not in ("BIO", "BIOES", "BMES", "BIES"):
    raise ValueError(f"unknown tagging scheme {scheme!r}")
  tags = ["O"] * len(example.text)
  inside = "M" if scheme == "BMES" else "I"
  for span in example.spans:
    if any(t != "O" for t in tags[span.start:span.end]):
      raise ValueError(f"overlapping spans in {example.text!r}")
    length = span.end - span.start
    if scheme == "BIO":
      tags[span.start:span.end] = [f"B-{span.type}"] + [f"I-{span.type}"] * (length - 1)
    elif length == 1:
      tags[span.start] = f"S-{span.type}"
    else:
      tags[span.start:span.end] = ([f"B-{span.type}"] + [f"{inside}-{span.type}"] * (length - 2)
                                   + [f"E-{span.type}"])
  return tags


def format_char_tag_lines(example: Example, scheme: str, sep: str) -> list[str]:
  """`char<sep>tag` lines of one sentence; a space character is an empty char field (`\\tO`)."""
  lines = []
  for ch, tag in zip(example.text, char_tags(example, scheme)):
    if ch.isspace() and ch != " ":
      raise ValueError(f"whitespace {ch!r} cannot be written as a character line")
    lines.append(f"{'' if ch == ' ' else ch}{sep}{tag}")
  return lines


def format_char_tag_file(examples: Iterable[Example], scheme: str, sep: str, *,
                         final_blank: bool = True) -> str:
  """A one-character-per-line file: sentences separated by a blank line.

  `final_blank`: also end the file with a blank line, as Resume/OntoNotes/Ecommerce/Weibo do
  (the CCKS2021 files end right after the last character line).
  """
  blocks = ["\n".join(format_char_tag_lines(ex, scheme, sep)) + "\n" for ex in examples]
  return "\n".join(blocks) + ("\n" if final_blank and blocks else "")


def _sentence_words(sentence: Sentence) -> list[tuple[lexicon.Phrase, Optional[str]]]:
  """The sentence as (words, entity type or None) groups: each entity is one group."""
  groups = []
  for piece in sentence.pieces:
    if piece.type is None:
      groups.extend(((w,), None) for w in _plain_words(piece))
    else:
      groups.append((piece.words or lexicon.one_word(piece.text), piece.type))
  return groups


def format_weibo_lines(sentence: Sentence) -> list[str]:
  """`char<digit>\\ttag` lines (BIO): the digit is the character's position in its word."""
  example = sentence.example()
  tags = char_tags(example, "BIO")
  digits = []
  for words, _ in _sentence_words(sentence):
    for word, _ in words:
      # One digit only: the reader strips exactly one trailing character.
      digits.extend(str(min(k, 9)) for k in range(len(word)))
  if len(digits) != len(example.text):
    raise AssertionError("segmentation does not cover the text")
  return [f"{ch}{d}\t{tag}" for ch, d, tag in zip(example.text, digits, tags)]


_MSRA_TAGS = {"PER": "nr", "LOC": "ns", "ORG": "nt"}


def format_msra_line(sentence: Sentence) -> str:
  """`word/tag` tokens separated by one space (and a trailing space, as the release has);
  an entity is one whole word tagged nr/ns/nt, other words `o`."""
  tokens = []
  for words, entity in _sentence_words(sentence):
    text = lexicon.text_of(words)
    tokens.append(f"{text}/{_MSRA_TAGS[entity] if entity else 'o'}")
  return " ".join(tokens) + " "


def format_cluener_line(example: Example, *, labeled: bool = True, index: int = 0) -> str:
  """A CLUENER JSON line: {"text", "label": {type: {mention: [[start, end_inclusive], ...]}}};
  an unlabeled (test) line is {"id", "text"}."""
  if not labeled:
    return json.dumps({"id": index, "text": example.text}, ensure_ascii=False)
  label: dict[str, dict[str, list[list[int]]]] = {}
  for span in example.spans:
    mention = span.text_in(example.text)
    label.setdefault(span.type, {}).setdefault(mention, []).append([span.start, span.end - 1])
  return json.dumps({"text": example.text, "label": label}, ensure_ascii=False)


def format_boson_paragraph(examples: Sequence[Example]) -> str:
  """Several sentences joined into one paragraph line with inline `{{type:text}}` markup."""
  out = []
  for ex in examples:
    pos = 0
    for span in ex.spans:
      out.append(ex.text[pos:span.start])
      out.append("{{" + span.type + ":" + span.text_in(ex.text) + "}}")
      pos = span.end
    out.append(ex.text[pos:])
  return "".join(out)


def format_pd2014_lines(example: Example) -> tuple[str, str]:
  """(source line, target line): space-separated characters and `B_LOC`-style BIO tags."""
  tags = [t.replace("-", "_", 1) for t in char_tags(example, "BIO")]
  return " ".join(example.text), " ".join(tags)


def format_pd1998_tokens(sentence: Sentence) -> list[str]:
  """`word/pos` tokens of one paragraph (without the document id).

  A person is surname/nr + given-name/nr, a time is its t words; a one-word place or
  organisation is ns/nt, a multi-word one is a bracketed compound `[w/pos  w/pos]ns`.
  """
  tokens = []
  for words, entity in _sentence_words(sentence):
    if entity is None:
      (word, pos), = words
      tokens.append(f"{word}/{pos}")
    elif entity in ("PER", "T") or len(words) == 1:
      tag = _PD_ENTITY_POS[entity]
      tokens.extend(f"{word}/{tag}" for word, _ in words)
    else:
      inner = [f"{word}/{pos or _plain_pos(word)}" for word, pos in words]
      inner[0] = "[" + inner[0]
      inner[-1] += "]" + _PD_ENTITY_POS[entity]
      tokens.extend(inner)
  return tokens


def _gzip_bytes(data: bytes) -> bytes:
  """gzip with no file name and mtime 0, so the same corpus gives byte-identical files."""
  buffer = io.BytesIO()
  with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
    gz.write(data)
  return buffer.getvalue()


def release_files(dataset: str, splits: Mapping[str, list[Sentence]],
                  rng: random.Random) -> dict[str, bytes]:
  """File name (inside the dataset folder) -> contents, in the dataset's release format."""
  ex = {split: [s.example() for s in sents] for split, sents in splits.items()}
  release = {"train": "train", "validation": "dev", "test": "test"}
  files: dict[str, str] = {}
  if dataset in ("resume", "ontonotes4"):
    for split, examples in ex.items():
      files[f"{release[split]}.char.bmes"] = format_char_tag_file(examples, "BMES", " ")
  elif dataset == "ecommerce":
    for split, examples in ex.items():
      files[f"{release[split]}.txt.bieos"] = format_char_tag_file(examples, "BIOES", "\t")
  elif dataset == "ccks2021":
    for split, examples in ex.items():
      files[f"{release[split]}.conll"] = format_char_tag_file(examples, "BIES", " ",
                                                              final_blank=False)
    tags = [f"{p}-{t}" for t in entity_types.raw_types(dataset) for p in "BIES"] + ["O"]
    files["tags.json"] = json.dumps(
        {"tag": {t: i for i, t in enumerate(tags)},
         "revers_tag": {str(i): t for i, t in enumerate(tags)}},
        ensure_ascii=False, indent=2) + "\n"
  elif dataset == "weibo":
    for split, sents in splits.items():
      blocks = ["\n".join(format_weibo_lines(s)) + "\n" for s in sents]
      files[f"weiboNER_2nd_conll.{release[split]}"] = "\n".join(blocks) + "\n"
  elif dataset == "cluener":
    for split, examples in ex.items():
      lines = [format_cluener_line(e, labeled=split != "test", index=i)
               for i, e in enumerate(examples)]
      files[f"{release[split]}.json"] = "".join(line + "\n" for line in lines)
  elif dataset == "msra":
    train = splits["train"] + splits["validation"]
    files["train.txt"] = "".join(format_msra_line(s) + "\n" for s in train)
    files["test.txt"] = "".join(format_msra_line(s) + "\n" for s in splits["test"])
  elif dataset == "boson":
    examples = ex["train"] + ex["validation"] + ex["test"]
    paragraphs = []
    i = 0
    while i < len(examples):
      size = rng.randrange(2, 6)  # sentences per paragraph
      paragraphs.append(format_boson_paragraph(examples[i:i + size]))
      i += size
    files["BosonNLP_NER_6C.txt"] = "".join(p + "\n" for p in paragraphs)
  elif dataset == "peoples_daily":
    pairs = [format_pd2014_lines(e) for e in ex["train"] + ex["validation"] + ex["test"]]
    files["source_BIO_2014_cropus.txt"] = "".join(src + "\n" for src, _ in pairs)
    files["target_BIO_2014_cropus.txt"] = "".join(tgt + "\n" for _, tgt in pairs)
  elif dataset == "peoples_daily_1998":
    sentences = splits["train"] + splits["validation"] + splits["test"]
    lines = []
    article, paragraph, day = 1, 0, 1
    for s in sentences:
      paragraph += 1
      doc_id = f"199801{day:02d}-01-{article:03d}-{paragraph:03d}/m"
      lines.append("  ".join([doc_id] + format_pd1998_tokens(s)) + "  ")
      if rng.random() < 0.25:  # end the article; the release puts a blank line between them
        lines.append("")
        article, paragraph = article + 1, 0
        if article % 10 == 0:
          day = day % 28 + 1
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    return {"pd1998.txt.gz": _gzip_bytes(data)}
  else:  # pragma: no cover - every registered dataset is handled above
    raise ValueError(f"no writer for dataset {dataset!r}")
  return {name: text.encode("utf-8") for name, text in files.items()}

