"""Tests for the built-in corpus: lexicons, templates, generator, release-format writers, cache."""

import collections
import gzip
import json
import os
import random
import tempfile

import hypothesis
from hypothesis import strategies as st
import pytest

from punified_jax import entity_types
from punified_jax.data import builtin, builtin_formats, builtin_sentences, lexicon, readers
from punified_jax.data.builtin_sentences import Piece, Sentence
from punified_jax.data.example import Example, Span, count_mentions

SMALL = {"train": 20, "validation": 6, "test": 6}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """The default-size corpus, written once for the module."""
  return builtin.write_corpus(tmp_path_factory.mktemp("builtin") / "raw", seed=0)


def _read_tree(root):
  files = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, root)] = f.read()
  return files


# ----------------------------------------------------------------------------- writers, literal

def test_bmes_lines_literal():
  examples = [Example("张三在北京。", [(0, 2, "NAME"), (3, 5, "LOC")]),
              Example("汉族，本科", [(0, 2, "RACE"), (3, 5, "EDU")]),
              Example("王某任局长", [(0, 1, "NAME"), (3, 5, "TITLE")])]
  assert builtin_formats.format_char_tag_file(examples[:2], "BMES", " ").split("\n") == [
      "张 B-NAME", "三 E-NAME", "在 O", "北 B-LOC", "京 E-LOC", "。 O", "",
      "汉 B-RACE", "族 E-RACE", "， O", "本 B-EDU", "科 E-EDU", "", ""]
  assert builtin_formats.format_char_tag_lines(Example("任技术总监", [(1, 5, "TITLE")]), "BMES", " ") == [
      "任 O", "技 B-TITLE", "术 M-TITLE", "总 M-TITLE", "监 E-TITLE"]
  assert builtin_formats.char_tags(examples[2], "BMES") == ["S-NAME", "O", "O", "B-TITLE", "E-TITLE"]


def test_ecommerce_space_is_an_empty_char_field():
  example = Example("云帆 T恤 包邮", [(0, 2, "HP"), (3, 5, "HC")])
  assert builtin_formats.format_char_tag_file([example, Example("XK-200 耳机", [(0, 6, "HP")])],
                                      "BIOES", "\t") == (
      "云\tB-HP\n帆\tE-HP\n\tO\nT\tB-HC\n恤\tE-HC\n\tO\n包\tO\n邮\tO\n\n"
      "X\tB-HP\nK\tI-HP\n-\tI-HP\n2\tI-HP\n0\tI-HP\n0\tE-HP\n\tO\n耳\tO\n机\tO\n\n")


def test_ccks_file_has_no_final_blank_line_and_uses_bies():
  examples = [Example("杭州市西湖区", [(0, 3, "city"), (3, 6, "district")]),
              Example("东门旁", [(0, 2, "subpoi"), (2, 3, "assist")])]
  assert builtin_formats.format_char_tag_file(examples, "BIES", " ", final_blank=False) == (
      "杭 B-city\n州 I-city\n市 E-city\n西 B-district\n湖 I-district\n区 E-district\n\n"
      "东 B-subpoi\n门 E-subpoi\n旁 S-assist\n")


def test_weibo_lines_carry_word_position_digits():
  sentence = Sentence((
      Piece("张晓明", "PER.NAM", (("张", "nr"), ("晓明", "nr"))),
      Piece("在"),
      Piece("北京", "GPE.NAM", (("北京", ""),)),
      Piece("看5场比赛"),
  ))
  assert builtin_formats.format_weibo_lines(sentence) == [
      "张0\tB-PER.NAM", "晓0\tI-PER.NAM", "明1\tI-PER.NAM", "在0\tO", "北0\tB-GPE.NAM",
      "京1\tI-GPE.NAM", "看0\tO", "50\tO", "场0\tO", "比0\tO", "赛1\tO"]


def test_msra_line_literal():
  sentence = Sentence((
      Piece("李华", "PER", (("李", "nr"), ("华", "nr"))),
      Piece("在"),
      Piece("长江流域", "LOC", (("长江", "ns"), ("流域", "f"))),
      Piece("考察，"),
      Piece("3月5日", None, (("3月", "t"), ("5日", "t"))),
      Piece("返回"),
      Piece("星海科技（杭州）有限公司", "ORG", (("星海科技（杭州）有限公司", ""),)),
      Piece("。"),
  ))
  assert builtin_formats.format_msra_line(sentence) == (
      "李华/nr 在/o 长江流域/ns 考察/o ，/o 3月/o 5日/o 返回/o 星海科技（杭州）有限公司/nt 。/o ")


def test_cluener_lines_literal():
  example = Example("《幻海迷踪：觉醒》和《幻海迷踪：觉醒》都由星海网络公司发行",
                    [(1, 8, "game"), (11, 18, "game"), (21, 27, "company")])
  assert builtin_formats.format_cluener_line(example) == (
      '{"text": "《幻海迷踪：觉醒》和《幻海迷踪：觉醒》都由星海网络公司发行", "label": '
      '{"game": {"幻海迷踪：觉醒": [[1, 7], [11, 17]]}, "company": {"星海网络公司": [[21, 26]]}}}')
  assert builtin_formats.format_cluener_line(Example("没有实体的句子"), labeled=True) == (
      '{"text": "没有实体的句子", "label": {}}')
  assert builtin_formats.format_cluener_line(example, labeled=False, index=7) == (
      '{"id": 7, "text": "《幻海迷踪：觉醒》和《幻海迷踪：觉醒》都由星海网络公司发行"}')


def test_boson_paragraph_literal():
  examples = [Example("张三昨天到了上海。", [(0, 2, "person_name"), (2, 4, "time"), (6, 8, "location")]),
              Example("云帆X3（青春版）好用吗？", [(0, 9, "product_name")])]
  assert builtin_formats.format_boson_paragraph(examples) == (
      "{{person_name:张三}}{{time:昨天}}到了{{location:上海}}。"
      "{{product_name:云帆X3（青春版）}}好用吗？")


def test_pd2014_lines_literal():
  example = Example("王五在2020年去了巴西", [(0, 2, "PER"), (3, 8, "T"), (10, 12, "LOC")])
  assert builtin_formats.format_pd2014_lines(example) == (
      "王 五 在 2 0 2 0 年 去 了 巴 西",
      "B_PER I_PER O B_T I_T I_T I_T I_T O O B_LOC I_LOC")


def test_pd1998_tokens_literal():
  sentence = Sentence((
      Piece("１月５日", "T", (("１月", "t"), ("５日", "t"))),
      Piece("，"),
      Piece("张晓明", "PER", (("张", "nr"), ("晓明", "nr"))),
      Piece("在"),
      Piece("杭州市", "LOC", (("杭州市", ""),)),
      Piece("会见了"),
      Piece("宁波日报", "ORG", (("宁波", "ns"), ("日报", "n"))),
      Piece("记者", None, (("记者", ""),)),
      Piece("。"),
  ))
  assert builtin_formats.format_pd1998_tokens(sentence) == [
      "１月/t", "５日/t", "，/w", "张/nr", "晓明/nr", "在/p", "杭州市/ns", "会见/v", "了/u",
      "[宁波/ns", "日报/n]nt", "记者/n", "。/w"]


def test_segment_literal():
  assert builtin_formats.segment("据报道，XK-200售价３０００元,增长12.5%。") == [
      ("据", "p"), ("报道", "v"), ("，", "w"), ("XK-200", "nx"), ("售价", "n"),
      ("３０００", "m"), ("元", "q"), (",", "w"), ("增长", "v"), ("12.5%", "m"), ("。", "w")]
  # Unknown Chinese characters fall back to 2-character words; strict mode refuses them.
  assert builtin_formats.segment("散步吧") == [("散步", "n"), ("吧", "n")]
  with pytest.raises(ValueError, match="散步吧"):
    builtin_formats.segment("散步吧", strict=True)


def test_gzip_is_reproducible():
  assert builtin_formats._gzip_bytes(b"abc") == builtin_formats._gzip_bytes(b"abc")
  assert gzip.decompress(builtin_formats._gzip_bytes("中文".encode())) == "中文".encode()


# ----------------------------------------------------------------------------- writers, property

_ALPHABET = st.sampled_from(list("张三北京中华人民共和国，。、：（）“”《》,:()AZaz09-·"))
_TYPES = st.sampled_from(["PER", "LOC", "ORG.NAM", "prov"])


@st.composite
def _examples(draw, *, spaces: bool = False):
  chars = draw(st.lists(_ALPHABET, min_size=1, max_size=30))
  if spaces:
    for i in draw(st.lists(st.integers(1, max(1, len(chars) - 1)), max_size=3)):
      if 0 < i < len(chars):
        chars[i] = " "
  text = "".join(chars)
  cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=8))))
  spans = []
  for start, end in zip(cuts[::2], cuts[1::2]):
    if start < end and not text[start:end].strip(" ") == "" and draw(st.booleans()):
      spans.append(Span(start, end, draw(_TYPES)))
  return Example(text, spans)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(examples=st.lists(_examples(spaces=True), min_size=1, max_size=4),
                  scheme=st.sampled_from(["BIO", "BIOES", "BMES", "BIES"]),
                  sep=st.sampled_from([" ", "\t"]))
def test_char_tag_files_read_back_equal(examples, scheme, sep):
  if sep == " ":  # the space-separated formats cannot carry a space character
    examples = [e for e in examples if " " not in e.text]
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "f.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write(builtin_formats.format_char_tag_file(examples, scheme, sep))
    assert list(readers.read_char_tags(path, scheme=scheme)) == examples


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(example=_examples())
def test_cluener_and_pd2014_lines_read_back_equal(example):
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "train.json")
    with open(path, "w", encoding="utf-8") as f:
      f.write(builtin_formats.format_cluener_line(example) + "\n")
    assert list(readers.read_cluener_json(path)) == [example]
    source, target = builtin_formats.format_pd2014_lines(example)
    src, tgt = os.path.join(tmp, "s.txt"), os.path.join(tmp, "t.txt")
    for p, line in ((src, source), (tgt, target)):
      with open(p, "w", encoding="utf-8") as f:
        f.write(line + "\n")
    assert list(readers.read_pd2014(src, tgt)) == [example]


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1))
def test_any_seed_writes_a_corpus_the_readers_read_back(seed):
  with tempfile.TemporaryDirectory() as tmp:
    builtin.write_corpus(tmp, seed=seed, sizes=SMALL)
    for dataset in entity_types.DATASETS:
      want = {split: builtin_sentences.generate_dataset(dataset, split, SMALL[split], seed)
              for split in builtin.DATASET_SPLITS[dataset]}
      got = _read_release(tmp, dataset)
      _assert_same(dataset, got, want)


# ----------------------------------------------------------------------------- generator

@pytest.mark.parametrize("dataset", entity_types.DATASETS)
def test_generated_examples_follow_the_rules(dataset):
  examples = builtin_sentences.generate_dataset(dataset, "train", 240, seed=0)
  assert len(examples) == 240
  for ex in examples:
    ex.validate()
    assert builtin_sentences.MIN_CHARS <= len(ex.text) <= builtin_sentences.MAX_CHARS, ex.text
    assert {s.type for s in ex.spans} <= set(entity_types.raw_types(dataset))
    assert all(ex.text[s.start:s.end].strip() == ex.text[s.start:s.end] for s in ex.spans)
  # Every raw type appears in train; some sentences have no entity; some repeat a mention.
  assert set(count_mentions(examples)[2]) == set(entity_types.raw_types(dataset))
  assert any(not ex.spans for ex in examples)
  assert any(len(set(ex.mentions())) < len(ex.mentions()) for ex in examples)
  assert any(any(ch.isascii() and ch.isalnum() for ch in ex.text) for ex in examples)


def test_corpus_has_punctuation_ascii_and_spaces_where_the_brief_wants_them():
  every = [ex for ds in entity_types.DATASETS
           for ex in builtin_sentences.generate_dataset(ds, "train", 240, seed=0)]
  mentions = [m for ex in every for _, m in ex.mentions()]
  for mark in "，。、：（）“”《》,:()":
    assert any(mark in ex.text for ex in every), mark
  for mark in "：（·-":  # inside a span: book subtitles, companies, foreign names, models
    assert any(mark in m for m in mentions), mark
  assert any(m.isascii() and any(c.isdigit() for c in m) for m in mentions)  # e.g. XK-200
  ecommerce = builtin_sentences.generate_dataset("ecommerce", "train", 240, seed=0)
  assert sum(" " in ex.text for ex in ecommerce) > 20
  others = [ex for ds in entity_types.DATASETS if ds != "ecommerce"
            for ex in builtin_sentences.generate_dataset(ds, "validation", 60, seed=0)]
  assert not any(" " in ex.text for ex in others)


@pytest.mark.parametrize("dataset", entity_types.DATASETS)
def test_train_covers_every_type_with_as_many_sentences_as_types(dataset):
  n = len(entity_types.raw_types(dataset))
  examples = builtin_sentences.generate_dataset(dataset, "train", n, seed=3)
  assert set(count_mentions(examples)[2]) == set(entity_types.raw_types(dataset))


def test_generation_is_deterministic_and_seed_and_split_dependent():
  a = builtin_sentences.generate_dataset("cluener", "train", 30, seed=5)
  assert a == builtin_sentences.generate_dataset("cluener", "train", 30, seed=5)
  assert a != builtin_sentences.generate_dataset("cluener", "train", 30, seed=6)
  assert a != builtin_sentences.generate_dataset("cluener", "test", 30, seed=5)
  assert (builtin_sentences.generate_dataset("resume", "dev", 10, seed=1)
          == builtin_sentences.generate_dataset("resume", "validation", 10, seed=1))
  assert builtin_sentences.generate_dataset("resume", "test", 0, seed=1) == []


def test_first_generated_sentences_are_pinned():
  """The same seed gives the same corpus on every machine (string seeds hash with SHA-512).

  Editing templates or lexicons changes these on purpose: update them, and the cache directory
  name changes by itself (it carries a digest of the generator's source).
  """
  assert builtin_sentences.generate_dataset("resume", "train", 3, seed=0) == [
      Example("汤艳国，男，澳大利亚国籍，无境外永久居留权。", [(0, 3, "NAME"), (6, 12, "CONT")]),
      Example("欧阳泽兰，山东人，大学本科，毕业于西安医科大学机械工程专业。",
              [(0, 4, "NAME"), (5, 7, "LOC"), (9, 13, "EDU"), (17, 23, "ORG"), (23, 27, "PRO")]),
      Example("现兼任绵阳交响乐团理事、汇通汽车（福州）有限公司项目经理。",
              [(3, 9, "ORG"), (12, 24, "ORG"), (24, 28, "TITLE")]),
  ]


def test_generator_rejects_bad_arguments():
  with pytest.raises(ValueError, match="unknown dataset 'nope'"):
    builtin_sentences.generate_dataset("nope", "train", 3, seed=0)
  with pytest.raises(ValueError, match="unknown split 'training'"):
    builtin_sentences.generate_dataset("msra", "training", 3, seed=0)
  with pytest.raises(ValueError, match="n must be >= 0"):
    builtin_sentences.generate_dataset("msra", "train", -1, seed=0)
  with pytest.raises(ValueError, match="unknown lexicon 'cty'"):
    builtin_sentences.parse_template("{cty}很大。")
  with pytest.raises(ValueError, match="unbalanced braces"):
    builtin_sentences.parse_template("{city很大。")
  with pytest.raises(ValueError, match="size of split 'train'"):
    builtin.corpus_sizes({"train": -2})
  with pytest.raises(ValueError, match="unknown split 'eval'"):
    builtin.corpus_sizes({"eval": 2})
  with pytest.raises(KeyError, match="unknown lexicon 'nope'"):
    lexicon.draw("nope", random.Random(0), {})


def test_writers_reject_what_a_format_cannot_carry():
  with pytest.raises(ValueError, match="overlapping spans"):
    builtin_formats.char_tags(Example("北京大学", [(0, 2, "LOC"), (0, 4, "ORG")]), "BIO")
  with pytest.raises(ValueError, match="unknown tagging scheme 'IOB2'"):
    builtin_formats.char_tags(Example("北京"), "IOB2")
  with pytest.raises(ValueError, match="whitespace"):
    builtin_formats.format_char_tag_lines(Example("北\t京"), "BIO", " ")


def test_sentence_problem_explains_rejections():
  def sentence(text, dataset_type=None):
    return Sentence((Piece(text, dataset_type, None),))
  assert "length 3" in builtin_sentences.sentence_problem(sentence("太短了"), "msra")
  assert "space" in builtin_sentences.sentence_problem(sentence("这里有 一个空格的句子。"), "msra")
  assert builtin_sentences.sentence_problem(sentence("这里有 一个空格的句子"), "ecommerce") is None
  assert "edge" in builtin_sentences.sentence_problem(sentence(" 这里有一个空格的句子"), "ecommerce")
  assert "reserves" in builtin_sentences.sentence_problem(sentence("这里有一个{括号}的句子。"), "boson")
  assert "sentence ender" in builtin_sentences.sentence_problem(sentence("第一句话。第二句话来了。"), "boson")
  two_people = Sentence((Piece("张三", "PER", (("张", "nr"), ("三", "nr"))),
                         Piece("李四", "PER", (("李", "nr"), ("四", "nr"))), Piece("都来了这里。")))
  assert "neighbouring PER" in builtin_sentences.sentence_problem(two_people, "peoples_daily_1998")
  assert builtin_sentences.sentence_problem(two_people, "msra") is None


# ----------------------------------------------------------------------------- templates, lexicons

@pytest.mark.parametrize("dataset", entity_types.DATASETS)
def test_template_pools_cover_every_type(dataset):
  pool = builtin_sentences.templates_for(dataset)
  assert len(pool) >= 10
  covered = set().union(*(t.types(dataset) for t in pool))
  assert covered == set(entity_types.raw_types(dataset))
  assert set(builtin_sentences.LEXICON_TYPES[dataset].values()) <= set(entity_types.raw_types(dataset))


def test_boson_templates_end_in_their_only_sentence_ender():
  pool = builtin_sentences.templates_for("boson")
  assert all(t.source[-1] in builtin_sentences.BOSON_ENDERS for t in pool)
  # The filter drops the two news templates with an ender inside quotes.
  assert len(pool) == len(builtin_sentences.NEWS_TEMPLATES) + len(builtin_sentences.BOSON_TEMPLATES) - 2


def test_peoples_daily_1998_template_text_is_fully_segmented_by_the_word_table():
  for template in builtin_sentences.templates_for("peoples_daily_1998"):
    for part in template.parts:
      for text in ([part] if isinstance(part, str) else part.choices):
        builtin_formats.segment(text, strict=True)


def test_word_table_has_no_entity_tags():
  # A filler word tagged nr/ns/nt/t would read back as an entity nobody generated.
  assert not {pos for pos in lexicon.WORD_POS.values()} & {"nr", "ns", "nt", "t"}


def test_parse_template_literal():
  template = builtin_sentences.parse_template("{person#a}说，{|今天|明天}去{city}，{person#a}很高兴。")
  assert [p if isinstance(p, str) else (p.lexicon, p.binding, p.choices)
          for p in template.parts] == [
              ("person", "a", ()), "说，", (None, None, ("今天", "明天")), "去",
              ("city", None, ()), "，", ("person", "a", ()), "很高兴。"]
  assert template.types("msra") == {"PER", "LOC"}
  assert template.types("resume") == {"NAME"}


def test_bound_slots_repeat_and_unbound_slots_differ():
  template = builtin_sentences.parse_template("{country}和{country}的{person#a}见到了{person#a}本人。")
  rng = random.Random(0)
  for _ in range(50):
    example = builtin_sentences._realise(template, "msra", rng).example()
    (loc1, loc2), (per1, per2) = ([m for t, m in example.mentions() if t == kind]
                                  for kind in ("LOC", "PER"))
    assert loc1 != loc2 and per1 == per2


def test_geography_stays_consistent_inside_an_address():
  template = builtin_sentences.parse_template("{prov}{addr_city}{addr_district}{road}")
  rng = random.Random(1)
  for _ in range(30):
    mentions = dict(builtin_sentences._realise(template, "ccks2021", rng).example().mentions())
    assert mentions["district"] in lexicon.GEOGRAPHY[mentions["prov"]][mentions["city"]]


# ----------------------------------------------------------------------------- corpus on disk

_RELEASE_FILES = {
    "resume": ["dev.char.bmes", "test.char.bmes", "train.char.bmes"],
    "ontonotes4": ["dev.char.bmes", "test.char.bmes", "train.char.bmes"],
    "ecommerce": ["dev.txt.bieos", "test.txt.bieos", "train.txt.bieos"],
    "ccks2021_address": ["dev.conll", "tags.json", "train.conll"],
    "msra": ["test.txt", "train.txt"],
    "cluener2020": ["dev.json", "test.json", "train.json"],
    "boson": ["BosonNLP_NER_6C.txt"],
    "peoples_daily_2014": ["source_BIO_2014_cropus.txt", "target_BIO_2014_cropus.txt"],
    "weibo": ["weiboNER_2nd_conll.dev", "weiboNER_2nd_conll.test", "weiboNER_2nd_conll.train"],
    "peoples_daily_1998": ["pd1998.txt.gz"],
}


def test_corpus_layout_and_marker(corpus):
  assert sorted(os.listdir(corpus)) == sorted(list(_RELEASE_FILES) + [builtin.MARKER_FILE])
  for folder, names in _RELEASE_FILES.items():
    assert sorted(os.listdir(os.path.join(corpus, folder))) == names
  marker = builtin.read_marker(corpus)
  assert marker["note"] == "synthetic corpus for exercising the pipeline, not a benchmark"
  assert marker["seed"] == 0 and marker["version"] == builtin.BUILTIN_VERSION
  assert marker["sizes"] == {"train": 240, "validation": 60, "test": 60}
  assert marker["held_out"] == {
      "msra": {"validation": 60}, "boson": {"validation": 60, "test": 60},
      "peoples_daily": {"validation": 60, "test": 60},
      "peoples_daily_1998": {"validation": 60, "test": 60}}
  # Found from a dataset folder too; a directory without the marker is not the corpus.
  assert builtin.held_out_sizes(os.path.join(corpus, "msra"), "msra") == {"validation": 60}
  assert builtin.held_out_sizes(corpus, "resume") == {}
  assert builtin.read_marker(os.path.join(corpus, "..")) is None
  with open(os.path.join(corpus, "ccks2021_address", "tags.json"), encoding="utf-8") as f:
    tags = json.load(f)
  assert len(tags["tag"]) == 17 * 4 + 1
  assert tags["revers_tag"]["0"] == "B-prov" and tags["tag"]["O"] == 68


def test_release_file_details(corpus):
  with open(os.path.join(corpus, "msra", "train.txt"), encoding="utf-8") as f:
    lines = f.read().split("\n")
  assert len(lines) == 240 + 60 + 1 and lines[-1] == ""
  assert all(line.endswith(" ") and "/" in line for line in lines[:-1])
  with gzip.open(os.path.join(corpus, "peoples_daily_1998", "pd1998.txt.gz"), "rt",
                 encoding="utf-8") as f:
    paragraphs = [line for line in f.read().split("\n") if line]
  assert len(paragraphs) == 360
  assert paragraphs[0].startswith("19980101-01-001-001/m  ") and paragraphs[0].endswith("  ")
  assert any("]nt  " in p for p in paragraphs) and any("/nr  " in p for p in paragraphs)
  with open(os.path.join(corpus, "boson", "BosonNLP_NER_6C.txt"), encoding="utf-8") as f:
    boson = f.read().split("\n")[:-1]
  assert 360 / 5 < len(boson) < 360 / 2  # 2-5 sentences per paragraph
  with open(os.path.join(corpus, "ecommerce", "train.txt.bieos"), encoding="utf-8") as f:
    assert "\n\tO\n" in f.read()


def test_same_seed_gives_byte_identical_files(tmp_path, corpus):
  again = _read_tree(builtin.write_corpus(tmp_path / "again", seed=0))
  assert again == _read_tree(corpus)
  other = _read_tree(builtin.write_corpus(tmp_path / "other", seed=1, sizes=SMALL))
  assert other.keys() == again.keys()
  assert other["resume/train.char.bmes"] != again["resume/train.char.bmes"]


def _read_release(root, dataset):
  """Reads one dataset of a corpus with the real readers (no held-out split)."""
  folder = os.path.join(root, builtin.DATASET_DIRS[dataset])
  path = lambda name: os.path.join(folder, name)  # noqa: E731
  names = {"train": "train", "validation": "dev", "test": "test"}
  if dataset in ("resume", "ontonotes4", "ecommerce", "ccks2021"):
    ext = {"ccks2021": "conll", "ecommerce": "txt.bieos"}.get(dataset, "char.bmes")
    return {s: list(readers.read_char_tags(path(f"{names[s]}.{ext}")))
            for s in builtin.DATASET_SPLITS[dataset]}
  if dataset == "weibo":
    return {s: list(readers.read_weibo(path(f"weiboNER_2nd_conll.{names[s]}")))
            for s in names}
  if dataset == "cluener":
    return {s: list(readers.read_cluener_json(path(f"{names[s]}.json"))) for s in names}
  if dataset == "msra":
    return {"train": list(readers.read_msra(path("train.txt"))),
            "test": list(readers.read_msra(path("test.txt")))}
  if dataset == "boson":
    return {"train": list(readers.read_boson(path("BosonNLP_NER_6C.txt")))}
  if dataset == "peoples_daily":
    return {"train": list(readers.read_pd2014(path("source_BIO_2014_cropus.txt"),
                                               path("target_BIO_2014_cropus.txt")))}
  return {"train": list(readers.read_pd1998(path("pd1998.txt.gz")))}


def _assert_same(dataset, got, want):
  """`got` (read back) equals `want` (generated); held-out datasets compare the union of the
  splits that share a file, as a multiset; CLUENER test compares texts (it is unlabeled)."""
  if "test" in want and dataset == "cluener":
    want = dict(want, test=[Example(e.text) for e in want["test"]])
  if dataset in builtin.HELD_OUT_SPLITS:
    shared = ("train",) + builtin.HELD_OUT_SPLITS[dataset]
    got_shared = collections.Counter(e for s in shared for e in got.get(s, []))
    want_shared = collections.Counter(e for s in shared for e in want[s])
    assert got_shared == want_shared, dataset
    got = {s: v for s, v in got.items() if s not in shared}
    want = {s: v for s, v in want.items() if s not in shared}
  assert got == want, dataset


@pytest.mark.parametrize("dataset", entity_types.DATASETS)
def test_readers_read_back_what_was_generated(corpus, dataset):
  want = {split: builtin_sentences.generate_dataset(dataset, split, builtin.DEFAULT_SIZES[split], 0)
          for split in builtin.DATASET_SPLITS[dataset]}
  _assert_same(dataset, _read_release(corpus, dataset), want)


@pytest.mark.parametrize("dataset", entity_types.DATASETS)
def test_load_splits_reads_back_what_was_generated(corpus, dataset):
  from punified_jax.data import sources  # pylint: disable=g-import-not-at-top
  from punified_jax.data.example import RepairReport  # pylint: disable=g-import-not-at-top
  report = RepairReport()
  got = sources.load_splits(dataset, corpus, strict=True, report=report)
  want = {split: builtin_sentences.generate_dataset(dataset, split, builtin.DEFAULT_SIZES[split], 0)
          for split in builtin.DATASET_SPLITS[dataset]}
  _assert_same(dataset, got, want)
  assert not report
  assert set(got) == set(builtin.DATASET_SPLITS[dataset])
  assert all(got[split] for split in got)  # the held-out rule still leaves training data


# ----------------------------------------------------------------------------- cache

def test_builtin_corpus_dir_writes_once_and_reuses(tmp_path, monkeypatch):
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  first = builtin.builtin_corpus_dir(seed=2)
  assert os.path.dirname(first) == str(tmp_path / "cache")
  assert os.path.basename(first) == (
      f"builtin-v{builtin.BUILTIN_VERSION}-{builtin.generator_digest()}-seed2")
  assert builtin.read_marker(first)["seed"] == 2
  assert os.listdir(tmp_path / "cache") == [os.path.basename(first)]  # no temp dir left over
  assert os.stat(first).st_mode & 0o777 == 0o755

  def fail(*args, **kwargs):
    raise AssertionError("the cached corpus should be reused")
  monkeypatch.setattr(builtin, "write_corpus", fail)
  assert builtin.builtin_corpus_dir(seed=2) == first


def test_builtin_corpus_dir_loses_a_race_gracefully(tmp_path, monkeypatch):
  """When another process renames its copy into place first, ours is discarded."""
  cache = tmp_path / "cache"
  real_write = builtin.write_corpus

  def write_then_race(out_dir, *, seed=0, sizes=None):
    real_write(out_dir, seed=seed, sizes=SMALL)
    winner = cache / f"builtin-v{builtin.BUILTIN_VERSION}-{builtin.generator_digest()}-seed0"
    real_write(winner, seed=seed, sizes=SMALL)
    return out_dir
  monkeypatch.setattr(builtin, "write_corpus", write_then_race)
  path = builtin.builtin_corpus_dir(seed=0, cache_root=str(cache))
  assert builtin.read_marker(path)["seed"] == 0
  assert sorted(os.listdir(cache)) == [os.path.basename(path)]


def test_chinese_numbers_for_village_groups():
  assert [lexicon._chinese_number(n) for n in (1, 9, 10, 12, 20, 35)] == [
      "一", "九", "十", "十二", "二十", "三十五"]
