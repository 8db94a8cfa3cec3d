"""Vocabularies: the char-level SentencePiece trainer, WordPiece as a seqio.Vocabulary, the factory
and the `vocab` command. Fixtures (a small corpus, a ~270-line vocab.txt) are written here."""

import pickle
import sys
import types
import unicodedata

import hypothesis
from hypothesis import strategies as st
import pytest
import seqio
import sentencepiece
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from punified_jax import prompts
from punified_jax import vocab as vocab_lib
from punified_jax import windows as windows_lib
from punified_jax.__main__ import main as cli_main
from punified_jax.data.example import DataFormatError, Example
from punified_jax.vocab import (MARKERS, WordPieceVocabulary, encode_with_offsets, get_vocabulary,
                                sentencepiece_offsets, train_sentencepiece, vocab_info)

# A small training corpus written for these tests: CJK, ASCII words and digits, full-width and
# ASCII punctuation, spaces and a tab.
CORPUS = [
    "张三昨天去了北京大学。",
    "李四在上海的公司工作，职位是工程师。",
    "Apple iPhone 12 手机壳（透明）",
    "地址：浙江省杭州市西湖区文三路 100 号",
    "他说：“明天见！”",
    "tab\tseparated text, with ASCII (brackets): yes",
] * 3


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory) -> seqio.SentencePieceVocabulary:
  path = str(tmp_path_factory.mktemp("sp") / "char.model")
  assert train_sentencepiece(CORPUS, path) == path
  return seqio.SentencePieceVocabulary(path)


def _pieces(vocab, ids):
  return [vocab.tokenizer.IdToPiece(i) for i in ids]


# ------------------------------------------------------------------------------- SentencePiece


def test_sentencepiece_ids_follow_t5_convention(sp_vocab):
  assert (sp_vocab.pad_id, sp_vocab.eos_id, sp_vocab.unk_id) == (0, 1, 2)
  assert sp_vocab.tokenizer.bos_id() == -1
  assert _pieces(sp_vocab, range(7)) == ["<pad>", "</s>", "<unk>", "<entity>", "<text>", "NULL",
                                         "<0x00>"]
  assert _pieces(sp_vocab, [261]) == ["<0xFF>"]
  assert MARKERS == ("<entity>", "<text>", "NULL")


def test_sentencepiece_vocab_size_is_every_character_plus_specials(sp_vocab):
  characters = set("".join(CORPUS)) | set(vocab_lib.DEFAULT_REQUIRED_CHARS)
  assert sp_vocab.vocab_size == 3 + 3 + 256 + len(characters)


def test_sentencepiece_tiny_corpus_literal(tmp_path):
  vocab = get_vocabulary(train_sentencepiece(["aaaa bbb  c"], str(tmp_path / "tiny.model"),
                                             required_chars=""))
  # 6 specials/markers, 256 bytes, then characters by descending frequency; " " is a piece.
  assert vocab.vocab_size == 266
  assert _pieces(vocab, range(262, 266)) == ["a", "b", " ", "c"]
  assert vocab.encode("ab c") == [262, 263, 264, 265]
  assert vocab.decode([262, 263, 264, 265, 1, 262]) == "ab c"  # stops at eos


def test_full_width_punctuation_survives(sp_vocab):
  ids = sp_vocab.encode("（，：）")
  assert _pieces(sp_vocab, ids) == ["（", "，", "：", "）"]
  assert sp_vocab.decode(ids) == "（，：）"
  assert sp_vocab.decode_tf(tf.constant(ids)).numpy().decode("utf-8") == "（，：）"


def test_one_token_per_character_and_markers(sp_vocab):
  text = "<entity>地点<entity>组织<text>张三去了北京 Apple"
  ids = sp_vocab.encode(text)
  assert _pieces(sp_vocab, ids) == ["<entity>", "地", "点", "<entity>", "组", "织", "<text>",
                                    "张", "三", "去", "了", "北", "京", " ", "A", "p", "p", "l",
                                    "e"]
  assert ids[:1] == [3] and ids[6] == 4
  assert sp_vocab.encode("(地点:NULL)")[-2:] == [5, sp_vocab.encode(")")[0]]


def test_seqio_keeps_our_normalizer(sp_vocab):
  model = sentencepiece_model_pb2.ModelProto.FromString(sp_vocab.sp_model)
  spec = model.normalizer_spec
  assert spec.name == "identity"
  assert spec.precompiled_charsmap == b""
  assert (spec.add_dummy_prefix, spec.remove_extra_whitespaces, spec.escape_whitespaces) == (
      False, False, False)
  assert model.trainer_spec.byte_fallback
  text = "  ＡＢＣ１２３（，：）\u3000x  "  # NFKC would rewrite every one of these
  assert sp_vocab.decode(sp_vocab.encode(text)) == text
  assert sp_vocab.encode_tf(text).numpy().tolist() == sp_vocab.encode(text)


def test_unseen_characters_use_byte_fallback(sp_vocab):
  text = "a😀\u2581b"  # emoji and the "▁" character are not in the vocabulary
  ids = sp_vocab.encode(text)
  assert _pieces(sp_vocab, ids) == ["a", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "<0xE2>",
                                    "<0x96>", "<0x81>", "b"]
  assert sp_vocab.decode(ids) == text


def test_sentencepiece_offsets_literal(sp_vocab):
  text = "a😀 北"
  ids, spans = sentencepiece_offsets(sp_vocab, text)
  assert ids == sp_vocab.encode(text)
  assert spans == [(0, 1), (1, 2), (1, 2), (1, 2), (1, 2), (2, 3), (3, 4)]
  assert encode_with_offsets(sp_vocab, "") == ([], [])


def test_training_is_deterministic(tmp_path):
  a, b, c = (str(tmp_path / f"{name}.model") for name in "abc")
  train_sentencepiece(CORPUS, a, seed=3)
  train_sentencepiece(CORPUS, b, seed=3)
  train_sentencepiece(CORPUS + ["新字"], c, seed=3)
  with open(a, "rb") as fa, open(b, "rb") as fb, open(c, "rb") as fc:
    bytes_a, bytes_b, bytes_c = fa.read(), fb.read(), fc.read()
  assert bytes_a == bytes_b
  assert bytes_a != bytes_c


def test_vocab_size_caps_by_frequency(tmp_path):
  path = train_sentencepiece(["aaaaa b c d e"], str(tmp_path / "cap.model"), vocab_size=264,
                             required_chars="")
  vocab = get_vocabulary(path)
  assert vocab.vocab_size == 264
  assert _pieces(vocab, [262, 263]) == ["a", " "]
  assert vocab.encode("ab") == [262, 6 + ord("b")]  # the rest via bytes
  assert vocab.decode(vocab.encode("abcd")) == "abcd"
  with pytest.raises(ValueError, match="vocab_size=262 leaves no room"):
    train_sentencepiece(["abc"], str(tmp_path / "x.model"), vocab_size=262)
  message = r"vocab_size=263 has no room for 5 required characters \(e.g. '\(\):bc'"
  with pytest.raises(ValueError, match=message):
    train_sentencepiece(["abc"], str(tmp_path / "x.model"), vocab_size=263,
                        required_chars="abc:)(")
  assert not (tmp_path / "x.model").exists()


def test_required_chars_get_pieces(tmp_path):
  vocab = get_vocabulary(train_sentencepiece(["abc"], str(tmp_path / "req.model")))
  for char in "():,地缘政治实体兴趣点":
    assert len(vocab.encode(char)) == 1, char


def test_long_sentence_is_not_dropped(tmp_path):
  text = "长" * 3000 + "尾"  # 9003 bytes, over SentencePiece's default 4192-byte limit
  vocab = get_vocabulary(train_sentencepiece([text], str(tmp_path / "long.model"),
                                             required_chars=""))
  assert vocab.encode("尾长") == [263, 262]


def test_training_input_errors(tmp_path):
  with pytest.raises(TypeError, match="training text #1 is a int"):
    train_sentencepiece(["ok", 3], str(tmp_path / "e.model"))
  with pytest.raises(ValueError, match="no training text"):
    train_sentencepiece(["", ""], str(tmp_path / "e.model"))
  with pytest.raises(ValueError, match="character_coverage"):
    train_sentencepiece(["a"], str(tmp_path / "e.model"), character_coverage=0)
  assert not (tmp_path / "e.model").exists()


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(st.one_of(st.text(max_size=6), st.sampled_from(MARKERS)), max_size=6))
def test_sentencepiece_round_trip_python_and_tf(sp_vocab, parts):
  text = "".join(parts)
  ids = sp_vocab.encode(text)
  assert sp_vocab.decode(ids) == text
  assert sp_vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids
  assert sp_vocab.decode_tf(tf.constant(ids, tf.int32)).numpy().decode("utf-8") == text


@pytest.mark.parametrize("kind", ["sp_vocab", "sp_unigram"])
@hypothesis.settings(max_examples=100, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.data())
def test_decoded_prefix_lengths_match_seqio_decode(kind, request, data):
  """The prefix lengths equal seqio's decode of each prefix: byte-fallback pieces cut
  mid-character, EOS inside (a prefix stops after it), ids past the vocabulary (UNK), and for
  the T5-style model "▁" pieces and the dummy prefix."""
  sp_vocab = request.getfixturevalue(kind)
  ids = data.draw(st.lists(st.one_of(
      st.integers(0, sp_vocab.vocab_size + 5),
      st.sampled_from(sp_vocab.encode("张三（北京）😀 ab,: é"))), max_size=24))
  ends = data.draw(st.lists(st.integers(0, len(ids)), max_size=8))
  expected = [len(sp_vocab.decode(ids[:end])) for end in ends]
  assert vocab_lib.decoded_prefix_lengths(sp_vocab, ids, ends) == expected


def test_decoded_prefix_lengths_literal(sp_vocab):
  ids = sp_vocab.encode("北京(上海)")
  assert vocab_lib.decoded_prefix_lengths(sp_vocab, ids, [0, 1, len(ids)]) == [0, 1, 6]
  eos = sp_vocab.eos_id
  assert vocab_lib.decoded_prefix_lengths(sp_vocab, ids + [eos] + ids, [len(ids) * 2 + 1]) == [6]
  assert vocab_lib.decoded_prefix_lengths(sp_vocab, ids, []) == []
  # A prefix cut inside a character's bytes decodes each byte it holds as U+FFFD.
  ids = sp_vocab.encode("😀a")
  assert len(ids) == 5
  assert vocab_lib.decoded_prefix_lengths(sp_vocab, ids, range(6)) == [0, 1, 2, 3, 1, 2]


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.text(alphabet=st.sampled_from("张三北京大学上海（，：）() ,:ab12😀\t"), max_size=20),
                  st.data())
def test_a_span_tokenizes_alone_as_in_its_sentence(sp_vocab, text, data):
  start = data.draw(st.integers(0, len(text)))
  end = data.draw(st.integers(start, len(text)))
  ids, spans = sentencepiece_offsets(sp_vocab, text)
  inside = [i for i, (a, b) in zip(ids, spans) if start <= a and b <= end]
  assert sp_vocab.encode(text[start:end]) == inside
  assert all(text[a:b] for a, b in spans)


# ------------------------------------------------------------------------------------ WordPiece

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDPIECE_TOKENS = (
    ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # 104..135
    + list("0123456789")  # 136..145
    + list(_LETTERS)  # 146..171
    + ["##" + c for c in _LETTERS + "0123456789"]  # 172..207
    + list("（）：，。、《》【】“”！")  # 208..220
    + list("张三李四昨天去了北京大学上海的公司工作地点组织名称品牌商场手机壳透明")  # 221..254
    + ["new", "york", "play", "##ing", "un", "##aff", "##able", "iphone", "12", "σας", "οδος",
       "null"])  # 255..266


@pytest.fixture(scope="module")
def vocab_txt(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("wp") / "vocab.txt"
  path.write_text("\n".join(WORDPIECE_TOKENS) + "\n", encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def wp(vocab_txt) -> WordPieceVocabulary:
  return WordPieceVocabulary(vocab_txt)


def _tokens(vocab, ids):
  return [vocab.id_to_token(i) for i in ids]


def test_wordpiece_special_ids(wp, vocab_txt):
  assert (wp.pad_id, wp.eos_id, wp.unk_id, wp.bos_id) == (0, 102, 100, None)
  assert wp.vocab_size == 267
  assert wp.marker_ids == {"<entity>": 1, "<text>": 2, "NULL": 3}
  assert vocab_info(wp) == {"type": "wordpiece", "path": vocab_txt, "vocab_size": 267,
                            "pad_id": 0, "eos_id": 102, "unk_id": 100, "extra_ids": 0}


def test_wordpiece_encode_literal(wp):
  text = "<entity>地点<text>张三去了New York，playing!"
  ids, spans = wp.encode_with_offsets(text)
  assert _tokens(wp, ids) == ["[unused1]", "地", "点", "[unused2]", "张", "三", "去", "了", "new",
                              "york", "，", "play", "##ing", "!"]
  assert ids[:4] == [1, 240, 241, 2]
  assert [text[a:b] for a, b in spans] == ["<entity>", "地", "点", "<text>", "张", "三", "去", "了",
                                           "New", "York", "，", "play", "ing", "!"]
  assert wp.encode(text) == ids
  assert wp.encode_tf(tf.constant(text)).numpy().tolist() == ids


def test_wordpiece_greedy_longest_match_and_unknowns(wp):
  assert _tokens(wp, wp.encode("unaffable iPhone 123")) == [
      "un", "##aff", "##able", "iphone", "12", "##3"]
  assert _tokens(wp, wp.encode("x😀y 😀")) == ["[UNK]", "[UNK]"]
  assert _tokens(wp, wp.encode("a" * 100)) == ["a"] + ["##a"] * 99
  assert _tokens(wp, wp.encode("a" * 101 + " b")) == ["[UNK]", "b"]  # over 100 bytes
  # The limit applies to the normalized word: "é" * 51 is "e" * 51, 51 bytes.
  assert _tokens(wp, wp.encode("é" * 51)) == ["e"] + ["##e"] * 50


def test_wordpiece_null_marker_is_not_the_word_null(wp):
  assert _tokens(wp, wp.encode("NULL null Null")) == ["[unused3]", "null", "null"]


def test_wordpiece_lower_case_accents_and_full_width(wp, vocab_txt):
  assert _tokens(wp, wp.encode("Éé ΣΑΣ")) == ["e", "##e", "σας"]  # final sigma in context
  # Full-width punctuation keeps its own tokens (no NFKC): "（" is not "(".
  assert _tokens(wp, wp.encode("（，）(,)")) == ["（", "，", "）", "(", ",", ")"]
  cased = WordPieceVocabulary(vocab_txt, lower_case=False)
  assert _tokens(cased, cased.encode("New é new")) == ["[UNK]", "[UNK]", "new"]
  assert cased.encode_tf("New é new").numpy().tolist() == cased.encode("New é new")


def test_wordpiece_whitespace_and_control_characters(wp):
  text = "a\u3000b\x00c\td\u200be\xa0f"
  ids, spans = wp.encode_with_offsets(text)
  assert _tokens(wp, ids) == list("abcdef")
  assert spans == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)]
  assert wp.encode_tf(text).numpy().tolist() == ids


def test_wordpiece_offsets_cover_stripped_accents(wp):
  text = "Cafe\u0301 x"  # "é" written as e + combining acute
  ids, spans = wp.encode_with_offsets(text)
  assert _tokens(wp, ids) == ["c", "##a", "##f", "##e", "x"]
  assert spans == [(0, 1), (1, 2), (2, 3), (3, 5), (6, 7)]


def test_wordpiece_decode_literal(wp):
  ids = wp.encode("<entity>品牌<text>New York iPhone 12手机壳 x😀y（透明）NULL")
  expected = "<entity>品牌<text>new york iphone 12手机壳[UNK]（透明）NULL"
  assert wp.decode(ids) == expected
  assert wp.decode_tf(tf.constant(ids)).numpy().decode("utf-8") == expected
  # Stops at [SEP]; [PAD] and [CLS] vanish; ids beyond the vocabulary read as [UNK].
  assert wp.decode([101, 255, 0, 256, 102, 257]) == "new york"
  assert wp.decode([255, 5000]) == "new [UNK]"
  batch = tf.constant([[101, 255, 0, 256, 102, 257], [259, 258, 1, 0, 0, 0]])
  assert wp.decode_tf(batch).numpy().tolist() == [b"new york", b"uning<entity>"]
  assert wp.decode_tf(tf.zeros([2, 0], tf.int32)).numpy().tolist() == [b"", b""]
  assert wp.decode([]) == ""


def test_wordpiece_encode_tf_batch_and_graphs(wp):
  texts = ["张三", "", "<text>new york"]
  expected = [wp.encode(t) for t in texts]
  assert wp.encode_tf(tf.constant(texts)).to_list() == expected
  dataset = tf.data.Dataset.from_tensor_slices(texts).map(wp.encode_tf)
  assert [x.tolist() for x in dataset.as_numpy_iterator()] == expected
  decode = tf.function(wp.decode_tf)
  assert decode(tf.constant(expected[2])).numpy() == b"<text>new york"


def test_wordpiece_custom_markers(vocab_txt):
  vocab = WordPieceVocabulary(vocab_txt, markers={"<e>": "[unused7]", "<ent>": "[unused8]"})
  assert vocab.encode("<ent>北<e>") == [8, 229, 7]
  assert vocab.encode_tf("<ent>北<e>").numpy().tolist() == [8, 229, 7]
  assert vocab.decode([8, 229, 7]) == "<ent>北<e>"
  plain = WordPieceVocabulary(vocab_txt, markers={})
  assert _tokens(plain, plain.encode("<text>")) == ["<", "t", "##e", "##x", "##t", ">"]
  assert plain.encode_tf("<text>").numpy().tolist() == plain.encode("<text>")


def test_wordpiece_pickles_and_compares(wp, vocab_txt):
  wp.encode_tf("张三")  # builds the TF state, which must not travel
  clone = pickle.loads(pickle.dumps(wp))
  assert clone == wp and hash(clone) == hash(wp)
  assert clone.encode("北京 new") == wp.encode("北京 new")
  assert clone.encode_tf("北京 new").numpy().tolist() == wp.encode("北京 new")
  assert WordPieceVocabulary(vocab_txt, lower_case=False) != wp


@pytest.mark.parametrize("lines, message", [
    (["[PAD]", "a", "a"], r"vocab\.txt:3: token 'a' repeats line 2"),
    (["[PAD]", "", "a"], r"vocab\.txt:2: empty token"),
    (["a", "[PAD]"], r"vocab\.txt:1: seqio pads with id 0, so line 1 must be '\[PAD\]'"),
])
def test_bad_vocab_files(tmp_path, lines, message):
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(DataFormatError, match=message):
    WordPieceVocabulary(str(path))


def test_vocab_missing_tokens_and_encoding(tmp_path, vocab_txt):
  path = tmp_path / "vocab.txt"
  path.write_text("[PAD]\n[UNK]\n[SEP]\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"vocab\.txt: the marker '<entity>' token '\[unused1\]'"):
    WordPieceVocabulary(str(path))
  path.write_bytes(b"[PAD]\n[UNK]\n\xff\n")
  with pytest.raises(DataFormatError, match=r"vocab\.txt:3: not UTF-8"):
    WordPieceVocabulary(str(path))
  with pytest.raises(ValueError, match="without NUL"):
    WordPieceVocabulary(vocab_txt, markers={"": "[unused1]"})


# Mixed text: CJK, both cases, digits, ASCII and full-width punctuation, several kinds of space,
# accents (precomposed and combining), Greek sigma, emoji, control/format characters, markers.
_MIXED = st.lists(
    st.one_of(st.sampled_from(list("张三北京大学上海品牌商品手机壳地点") + list(_LETTERS)
                              + list("ABCXYZ0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
                              + list("（）：，。、《》【】“”！") + list(" \t\n\r\u3000\xa0\u2028")
                              + list("ÉéÀüñ\u0301\u0323ΣσςΑŉİß😀\x00\x1f\u200b\ufeff")),
              st.sampled_from(MARKERS + ("null", "NULLx", "<entity"))),
    max_size=40).map("".join)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(_MIXED)
def test_wordpiece_python_and_tf_agree_on_mixed_text(wp, text):
  ids, spans = wp.encode_with_offsets(text)
  assert wp.encode_tf(tf.constant(text)).numpy().tolist() == ids
  assert wp.decode_tf(tf.constant(ids, tf.int32)).numpy().decode("utf-8") == wp.decode(ids)
  # Spans: inside the text, in order, non-empty; a marker's span is the marker itself.
  assert all(0 <= a < b <= len(text) for a, b in spans)
  assert [a for a, _ in spans] == sorted(a for a, _ in spans)
  for token_id, (a, b) in zip(ids, spans):
    if 1 <= token_id <= 3:
      assert text[a:b] == MARKERS[token_id - 1]


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(st.text(max_size=30))
def test_wordpiece_python_and_tf_agree_on_any_text(wp, text):
  assert wp.encode_tf(tf.constant(text)).numpy().tolist() == wp.encode(text)


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.lists(st.integers(-3, 300), max_size=20))
def test_wordpiece_decode_python_and_tf_agree(wp, ids):
  expected = wp.decode(ids)
  if ids:
    assert wp.decode_tf(tf.constant(ids, tf.int32)).numpy().decode("utf-8") == expected


def _accent_free(text: str) -> str:
  return "".join(c for c in unicodedata.normalize("NFD", text.lower())
                 if unicodedata.category(c) != "Mn")


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.text(alphabet=st.sampled_from(list("张三北京abcXYZ12 ，(ÉéÀ")), max_size=30))
def test_wordpiece_offsets_point_at_the_piece(wp, text):
  ids, spans = wp.encode_with_offsets(text)
  for token_id, (a, b) in zip(ids, spans):
    token = wp.id_to_token(token_id)
    assert _accent_free(text[a:b]) == token.removeprefix("##")


# -------------------------------------------------------------------------------------- factory


def test_get_vocabulary_dispatch(sp_vocab, vocab_txt, tmp_path):
  sp = get_vocabulary(sp_vocab.sentencepiece_model_file)
  assert isinstance(sp, seqio.SentencePieceVocabulary) and sp.vocab_size == sp_vocab.vocab_size
  assert vocab_info(sp)["type"] == "sentencepiece"
  assert (vocab_info(sp)["pad_id"], vocab_info(sp)["eos_id"], vocab_info(sp)["unk_id"]) == (0, 1, 2)
  assert isinstance(get_vocabulary(vocab_txt), WordPieceVocabulary)
  missing = str(tmp_path / "nope.model")
  with pytest.raises(FileNotFoundError, match="nope.model"):
    get_vocabulary(missing)
  other = tmp_path / "vocab.json"
  other.write_text("{}")
  with pytest.raises(ValueError, match="unknown vocabulary kind"):
    get_vocabulary(str(other))
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    WordPieceVocabulary(str(tmp_path / "missing.txt"))


# -------------------------------------------------------------------------------------- command


@pytest.fixture
def fake_sources(monkeypatch):
  """A stand-in for data.sources.load_splits: two datasets with text, one missing."""
  calls = []

  def load_splits(dataset, raw_dir, *, format=None, **kwargs):
    calls.append((dataset, raw_dir, format))
    if dataset == "boson":
      raise FileNotFoundError(f"{raw_dir}/boson/BosonNLP_NER_6C.txt not found")
    if dataset == "weibo":
      return {"validation": [Example("没有训练集")]}
    return {"train": [Example(f"{dataset}训练句子 abc"), Example("（，：）")],
            "validation": [Example("验证集不用")]}

  module = types.ModuleType("punified_jax.data.sources")
  module.load_splits = load_splits
  monkeypatch.setitem(sys.modules, "punified_jax.data.sources", module)
  return calls


def test_vocab_command_trains_on_train_splits(fake_sources, tmp_path, capsys):
  output = tmp_path / "out" / "v.model"
  assert cli_main(["vocab", "--datasets", "resume,msra", "--raw_dir", "RAW", "--format", "F",
                   "--output", str(output)]) == 0
  assert fake_sources == [("resume", "RAW", "F"), ("msra", "RAW", "F")]
  out = capsys.readouterr().out
  vocab = get_vocabulary(str(output))
  assert "trained on resume (2 sentences), msra (2 sentences)" in out
  assert f"vocab_size={vocab.vocab_size} pad_id=0 eos_id=1 unk_id=2" in out
  assert "tokens per character on the training text: 1.0000 (34 tokens, 34 characters)" in out
  assert f"wrote {output}" in out
  assert len(vocab.encode("训")) == 1
  assert len(vocab.encode("验")) == 3  # validation text is not trained on: byte fallback


def test_vocab_command_errors(fake_sources, tmp_path, capsys):
  output = str(tmp_path / "v.model")
  assert cli_main(["vocab", "--datasets", "resume,boson", "--raw_dir", "RAW", "--output", output]) == 2
  assert "BosonNLP_NER_6C.txt not found" in capsys.readouterr().err
  assert cli_main(["vocab", "--datasets", "resume,boson", "--raw_dir", "RAW", "--output", output,
                   "--skip_missing"]) == 0
  captured = capsys.readouterr()
  assert "skipped boson:" in captured.err and "skipped (files missing): boson" in captured.out
  assert cli_main(["vocab", "--datasets", "weibo", "--raw_dir", "RAW", "--output", output]) == 2
  assert "dataset 'weibo' has no train split" in capsys.readouterr().err
  assert cli_main(["vocab", "--datasets", "nosuch", "--raw_dir", "RAW", "--output", output]) == 2
  assert "unknown dataset 'nosuch'" in capsys.readouterr().err
  assert cli_main(["vocab", "--datasets", "resume", "--raw_dir", "RAW", "--output", str(tmp_path / "v.txt")]) == 2
  assert "--output must end in .model" in capsys.readouterr().err


def test_vocab_command_reads_release_files(tmp_path, capsys):
  """End to end through data.sources: a two-sentence Resume train file in BMES."""
  folder = tmp_path / "raw" / "resume"
  folder.mkdir(parents=True)
  lines = ["张 B-NAME", "三 E-NAME", "是 O", "工 B-TITLE", "程 M-TITLE", "师 E-TITLE", "",
           "李 S-NAME", "（ O", "A O", "） O", ""]
  (folder / "train.char.bmes").write_text("\n".join(lines) + "\n", encoding="utf-8")
  output = tmp_path / "resume.model"
  assert cli_main(["vocab", "--datasets", "resume", "--raw_dir", str(tmp_path / "raw"),
                   "--output", str(output)]) == 0
  assert "trained on resume (2 sentences)" in capsys.readouterr().out
  vocab = get_vocabulary(str(output))
  assert [len(vocab.encode(c)) for c in "张三是工程师李（A）"] == [1] * 10


# ------------------------------------------------------------ text after the prompt's marker


@pytest.fixture(scope="module")
def sp_unigram(tmp_path_factory) -> seqio.SentencePieceVocabulary:
  """A T5-style SentencePiece model (unigram pieces of several characters, NFKC, a dummy
  prefix, extra whitespace removed) with the markers as user-defined pieces: what an imported
  checkpoint's vocabulary looks like, unlike our own character model."""
  prefix = str(tmp_path_factory.mktemp("spu") / "unigram")
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS * 4), model_prefix=prefix, model_type="unigram",
      vocab_size=420, hard_vocab_limit=False, user_defined_symbols=list(MARKERS), byte_fallback=True,
      normalization_rule_name="nmt_nfkc", add_dummy_prefix=True, remove_extra_whitespaces=True,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  return seqio.SentencePieceVocabulary(prefix + ".model")


_PROMPT_TEXT = st.lists(st.sampled_from(
    list("张三北京大学上海（），：。 \t\u3000ＡＢ１ab12😀é\u0301\u0338>") + ["<text>", "NULL"]),
    max_size=24).map("".join)


@pytest.mark.parametrize("kind", ["sp_vocab", "sp_unigram", "wp"])
@hypothesis.settings(max_examples=60, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(text=_PROMPT_TEXT, names=st.lists(st.sampled_from(["地点", "人名", "品牌"]),
                                                    min_size=1, max_size=3, unique=True))
def test_window_encoding_equals_the_whole_prompts(kind, request, text, names):
  """windows.plan_windows encodes `<text>` + text and reuses the prompt's ids: the window must
  be exactly what encoding the whole prompt gives (ids, and the text tokens' spans)."""
  vocab = request.getfixturevalue(kind)
  text_id = encode_with_offsets(vocab, prompts.TEXT_MARKER)[0][-1]
  full_ids, full_spans = encode_with_offsets(vocab, prompts.format_input(text, names))
  marker = full_ids.index(text_id)
  shift = len(prompts.format_input("", names))
  prompt_ids = list(vocab.encode(prompts.format_input("", names)))
  assert prompt_ids == full_ids[:marker + 1]
  ids, spans = windows_lib.encode_text(vocab, text_id, text)
  assert ids == full_ids[marker + 1:]
  assert spans == [(a - shift, b - shift) for a, b in full_spans[marker + 1:]]
  if text.strip():
    (window,) = windows_lib.plan_windows(vocab, text_id, 1, prompt_ids, 7, text, tuple(names),
                                         budget=len(ids))
    assert window.input_ids == full_ids + [1] and window.text_ids == ids
    assert (window.request, window.offset, window.text) == (7, 0, text)
    # Split into small windows: each is split_text's piece, encoded as its whole prompt.
    windows = windows_lib.plan_windows(vocab, text_id, 1, prompt_ids, 7, text, tuple(names),
                                       budget=4)
    pieces = [(a, b) for a, b in windows_lib.split_text(vocab, text_id, text, 4)
              if text[a:b].strip()]
    assert [(w.offset, w.offset + len(w.text)) for w in windows] == pieces
    for window in windows:
      assert window.text == text[window.offset:window.offset + len(window.text)]
      piece_ids, piece_spans = encode_with_offsets(vocab, prompts.format_input(window.text, names))
      assert window.input_ids == piece_ids + [1]
      assert window.text_spans == [(a - shift, b - shift) for a, b in piece_spans[marker + 1:]]
