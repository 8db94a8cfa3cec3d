"""Readers: literal fixtures per release format, strict errors, lenient repair counts, round trips.

Every fixture here is written by these tests (none comes from a real corpus).
"""

import gzip
import json
import re

import hypothesis
from hypothesis import strategies as st
import pytest

from punified_jax.data import raw_files, readers, tagging
from punified_jax.data.example import DataFormatError, Example, RepairReport, Span


def _write(tmp_path, name, content):
  path = tmp_path / name
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_bytes(content.encode("utf-8"))
  return str(path)


def _lenient(read, *args, **kwargs):
  report = RepairReport()
  examples = list(read(*args, strict=False, report=report, **kwargs))
  return examples, report.as_dict()


def _strict_error(read, *args, **kwargs):
  with pytest.raises(DataFormatError) as info:
    list(read(*args, strict=True, **kwargs))
  return str(info.value)


# ---------------------------------------------------------------------------------------------
# char_tags


RESUME_LIKE = "张 B-NAME\n三 E-NAME\n， O\n汉 B-RACE\n族 E-RACE\n\n\n李 S-NAME\n。 O\n"


def test_char_tags_bmes(tmp_path):
  path = _write(tmp_path, "train.char.bmes", RESUME_LIKE)
  assert list(readers.read_char_tags(path)) == [
      Example("张三，汉族", [Span(0, 2, "NAME"), Span(3, 5, "RACE")]),
      Example("李。", [Span(0, 1, "NAME")]),
  ]


def test_char_tags_bioes_tab_with_space_characters(tmp_path):
  # Ecommerce: `char\ttag`; a space character is written as ` \tO` or as an empty field `\tO`.
  content = "苹\tB-HP\n果\tE-HP\n \tO\n\tO\n手\tB-HC\n机\tE-HC\n\n"
  path = _write(tmp_path, "train.txt.bieos", content)
  assert list(readers.read_char_tags(path)) == [
      Example("苹果  手机", [Span(0, 2, "HP"), Span(4, 6, "HC")])]


def test_char_tags_bies_space_separated_crlf_and_bom(tmp_path):
  content = "\ufeff浙 B-prov\r\n江 E-prov\r\n路 S-road\r\n号 O\r\n"  # no trailing blank line
  path = _write(tmp_path, "dev.conll", content)
  assert list(readers.read_char_tags(path, scheme="BIES")) == [
      Example("浙江路号", [Span(0, 2, "prov"), Span(2, 3, "road")])]


def test_char_tags_keeps_unusual_characters(tmp_path):
  # U+0085 and U+2028 are line breaks to str.splitlines but characters in these files.
  content = "a O\n\x85 O\n\u2028 B-X\nb E-X\n"
  path = _write(tmp_path, "x.bmes", content)
  assert list(readers.read_char_tags(path)) == [Example("a\x85\u2028b", [Span(2, 4, "X")])]


def test_char_tags_types_are_checked(tmp_path):
  path = _write(tmp_path, "t.bmes", "张 S-NAME\n三 S-NAMX\n")
  examples, repairs = _lenient(readers.read_char_tags, path, types={"NAME"})
  assert examples == [Example("张三", [Span(0, 1, "NAME")])]
  assert repairs == {"unknown_tag": 1}
  assert "t.bmes:2: unknown_tag" in _strict_error(readers.read_char_tags, path, types={"NAME"})


MALFORMED_BMES = (
    "甲 B-ORG\n"   # 1
    "乙 M-ORG\n"   # 2  sentence ends inside the ORG -> unclosed_span (reported at line 2)
    "\n"
    "丙 M-ORG\n"   # 4  orphan inside tag -> starts a new ORG
    "丁 E-ORG\n"   # 5
    "戊\n"         # 6  no tag -> O
    "己 Q-ORG\n"   # 7  unknown tag -> O
    "庚庚 O\n"     # 8  two characters in one field -> kept whole
)


def test_char_tags_malformed_strict_names_file_and_line(tmp_path):
  path = _write(tmp_path, "bad.char.bmes", MALFORMED_BMES)
  message = _strict_error(readers.read_char_tags, path)
  # Line problems are found while the file is read, before any tag is decoded.
  assert re.search(r"bad\.char\.bmes:6: missing_tag", message), message
  path = _write(tmp_path, "bad2.char.bmes", "甲 B-ORG\n乙 M-ORG\n\n丙 M-ORG\n丁 E-ORG\n")
  assert "bad2.char.bmes:2: unclosed_span" in _strict_error(readers.read_char_tags, path)
  path = _write(tmp_path, "bad3.char.bmes", "甲 O\n\n丙 M-ORG\n丁 E-ORG\n")
  assert "bad3.char.bmes:3: orphan_inside_tag" in _strict_error(readers.read_char_tags, path)
  path = _write(tmp_path, "bad4.char.bmes", "甲 O\n己 Q-ORG\n")
  assert "bad4.char.bmes:2: unknown_tag" in _strict_error(readers.read_char_tags, path,
                                                           scheme="BMES")
  path = _write(tmp_path, "bad5.char.bmes", "甲 O\n庚庚 O\n")
  assert "bad5.char.bmes:2: multi_char_token" in _strict_error(readers.read_char_tags, path)


def test_char_tags_malformed_lenient_counts_every_repair(tmp_path):
  path = _write(tmp_path, "bad.char.bmes", MALFORMED_BMES)
  examples, repairs = _lenient(readers.read_char_tags, path)
  assert examples == [
      Example("甲乙", [Span(0, 2, "ORG")]),
      Example("丙丁戊己庚庚", [Span(0, 2, "ORG")]),
  ]
  assert repairs == {"missing_tag": 1, "multi_char_token": 1, "orphan_inside_tag": 1,
                     "unclosed_span": 1, "unknown_tag": 1}


def test_invalid_utf8(tmp_path):
  path = _write(tmp_path, "u.bmes", "甲 O\n".encode() + b"\xff O\n")
  assert "u.bmes:2: invalid_utf8" in _strict_error(readers.read_char_tags, path)
  examples, repairs = _lenient(readers.read_char_tags, path)
  assert examples == [Example("甲\ufffd")]
  assert repairs == {"invalid_utf8": 1}


def test_lenient_without_report_logs_the_counts(tmp_path, caplog):
  path = _write(tmp_path, "bad.char.bmes", "乙 O\n甲\n")
  assert list(readers.read_char_tags(path, strict=False)) == [Example("乙甲")]
  assert "{'missing_tag': 1}" in caplog.text


# ---------------------------------------------------------------------------------------------
# Weibo


def test_weibo2(tmp_path):
  content = ("科0\tB-PER.NAM\n技1\tI-PER.NAM\n在0\tO\nx12\tB-GPE.NOM\n\n"
             "\ufffd\ufffd0\tO\n好0\tO\n\n")
  path = _write(tmp_path, "weiboNER_2nd_conll.train", content)
  assert list(readers.read_weibo(path)) == [
      Example("科技在x", [Span(0, 2, "PER.NAM"), Span(3, 4, "GPE.NOM")]),
      # An unreadable character (two U+FFFD on one line) is one character.
      Example("\ufffd好"),
  ]


def test_weibo2_digit_characters_and_missing_digits(tmp_path):
  path = _write(tmp_path, "w.dev", "310\tO\n55\tO\n好\tO\n")
  examples, repairs = _lenient(readers.read_weibo, path)
  assert examples == [Example("35好")]
  assert repairs == {"missing_position_digit": 1}
  assert "w.dev:3: missing_position_digit" in _strict_error(readers.read_weibo, path)


def _cesu8(text):
  """CESU-8: UTF-8 of the UTF-16 code units (each surrogate is its own 3-byte sequence)."""
  units = text.encode("utf-16-le")
  code_units = [chr(int.from_bytes(units[i:i + 2], "little")) for i in range(0, len(units), 2)]
  return "".join(code_units).encode("utf-8", "surrogatepass")


def test_weibo1_cesu8_surrogates(tmp_path):
  grin = "\U0001F600"
  high, low = _cesu8(grin)[:3], _cesu8(grin)[3:]
  assert high == b"\xed\xa0\xbd" and low == b"\xed\xb8\x80"
  content = (
      "我0\tO\n".encode() + _cesu8(grin) + "0\tO\n".encode()         # pair on one line
      + "\n".encode()
      + "张0\tB-PER.NAM\n".encode()
      + high + b"1\tI-PER.NAM\n" + low + b"1\tI-PER.NAM\n"          # pair split over two lines
      + "好0\tO\n".encode())
  path = _write(tmp_path, "weiboNER.conll.train", content)
  examples = list(readers.read_weibo(path, version=1))
  assert examples == [Example("我" + grin), Example("张" + grin + "好", [Span(0, 2, "PER.NAM")])]
  # Read as the 2nd release, the same bytes are not UTF-8.
  assert "invalid_utf8" in _strict_error(readers.read_weibo, path, version=2)


def test_weibo1_unpaired_surrogate_and_split_tag(tmp_path):
  high, low = _cesu8("\U0001F600")[:3], _cesu8("\U0001F600")[3:]
  content = (high + b"0\tO\n" + "好0\tO\n".encode() + b"\n"
             + high + b"0\tO\n" + low + b"0\tB-LOC.NAM\n")
  path = _write(tmp_path, "weiboNER.conll.dev", content)
  examples, repairs = _lenient(readers.read_weibo, path, version=1)
  assert examples == [Example("\ufffd好"), Example("\U0001F600")]
  assert repairs == {"split_surrogate_tag": 1, "unpaired_surrogate": 1}
  assert "weiboNER.conll.dev:1: unpaired_surrogate" in _strict_error(
      readers.read_weibo, path, version=1)


# ---------------------------------------------------------------------------------------------
# MSRA


def test_msra(tmp_path):
  content = "张/nr 三/nr 去/o 北京/ns 大学/o 。/o  \n新华社/nt 报道/o\n\n1/2/o\n"
  path = _write(tmp_path, "train.txt", content)
  assert list(readers.read_msra(path)) == [
      # Adjacent entity words stay separate mentions.
      Example("张三去北京大学。", [Span(0, 1, "PER"), Span(1, 2, "PER"), Span(3, 5, "LOC")]),
      Example("新华社报道", [Span(0, 3, "ORG")]),
      Example("1/2"),
  ]


def test_msra_malformed(tmp_path):
  path = _write(tmp_path, "train.txt", "好/o\n甲/o 乙 丙/nx /o\n/o\n")
  examples, repairs = _lenient(readers.read_msra, path)
  assert examples == [Example("好"), Example("甲乙丙")]
  assert repairs == {"dropped_empty_sentence": 1, "empty_word": 2, "missing_tag": 1,
                     "unknown_tag": 1}
  assert "train.txt:2: missing_tag" in _strict_error(readers.read_msra, path)


# ---------------------------------------------------------------------------------------------
# CLUENER JSON


def test_cluener_json(tmp_path):
  lines = [
      {"text": "王五在天堂公司上班", "label": {"name": {"王五": [[0, 1]]},
                                         "company": {"天堂公司": [[3, 6]]}}},
      {"text": "《甲公司传》", "label": {"book": {"《甲公司传》": [[0, 5]]},
                                    "company": {"甲公司": [[1, 3]]}}},
      {"id": 7, "text": "没有标注"},
  ]
  path = _write(tmp_path, "train.json",
                "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
  assert list(readers.read_cluener_json(path)) == [
      Example("王五在天堂公司上班", [Span(0, 2, "name"), Span(3, 7, "company")]),
      Example("《甲公司传》", [Span(0, 6, "book"), Span(1, 4, "company")]),  # nested: kept
      Example("没有标注"),
  ]
  examples, repairs = _lenient(readers.read_cluener_json, path, require_labels=True)
  assert repairs == {"missing_label": 1}


def test_cluener_json_malformed(tmp_path):
  content = "\n".join([
      '{"text": "甲乙丙", "label": {"name": {"乙丙": [[0, 1]]}}}',   # offsets off: repaired
      '{"text": "甲乙丙", "label": {"name": {"丁": [[0, 0]]}}}',     # not in text: dropped
      '{"text": "甲乙丙", "label"',                                  # bad JSON
      '{"text": "甲乙丙", "label": {"name": {"甲": [[0, 0]]}, "xx": {"乙": [[1, 1]]}}}',
  ]) + "\n"
  path = _write(tmp_path, "dev.json", content)
  examples, repairs = _lenient(readers.read_cluener_json, path, types={"name"})
  assert examples == [Example("甲乙丙", [Span(1, 3, "name")]), Example("甲乙丙"),
                      Example("甲乙丙", [Span(0, 1, "name")])]
  assert repairs == {"dropped_bad_json": 1, "dropped_span_not_found": 1, "offset_repaired": 1,
                     "unknown_type": 1}
  assert "dev.json:1: offset_repaired" in _strict_error(readers.read_cluener_json, path)


# ---------------------------------------------------------------------------------------------
# PUnifiedNER JSON


def test_punified_json(tmp_path):
  content = "\n".join([
      '["张三去北京", [0, 1, "张三", "PER"], [3, 4, "北京", "LOC"]]',
      '["没有实体"]',
      '["浙江省_1号", [0, 2, "浙江省", "prov"], [3, 3, "_", "o"], [4, 5, "1号", "roadno"]]',
      '{"id": 0, "text": "测试集"}',
  ]) + "\n"
  path = _write(tmp_path, "x.json", content)
  examples, repairs = _lenient(readers.read_punified_json, path)
  assert examples == [
      Example("张三去北京", [Span(0, 2, "PER"), Span(3, 5, "LOC")]),
      Example("没有实体"),
      Example("浙江省_1号", [Span(0, 3, "prov"), Span(4, 6, "roadno")]),
      Example("测试集"),
  ]
  assert repairs == {"skipped_o_label": 1}
  # `o` spans are a documented skip, not an error: strict mode reads the file too.
  assert list(readers.read_punified_json(path, strict=True)) == examples


def test_punified_json_offset_repair_nearest_occurrence(tmp_path):
  content = "\n".join([
      '["甲乙甲乙甲乙", [3, 4, "甲乙", "location"]]',  # 3 is off by one: nearest is 2, not 4
      '["和ABC", [1, 4, "ABC", "company_name"]]',      # end beyond the text
      '["甲乙", [0, 1, "丙", "location"]]',
      '["甲乙", [0, 1, "甲乙"], [0, 1, "甲乙", ["LOC"]]]',
      '[]',
      '["", [0, 0, "x", "T"]]',
      'not json',
  ]) + "\n"
  path = _write(tmp_path, "boson_dev.json", content)
  examples, repairs = _lenient(readers.read_punified_json, path)
  assert examples == [
      Example("甲乙甲乙甲乙", [Span(2, 4, "location")]),
      Example("和ABC", [Span(1, 4, "company_name")]),
      Example("甲乙"),
      Example("甲乙"),
  ]
  assert repairs == {"dropped_bad_json": 1, "dropped_bad_record": 1, "dropped_bad_span": 2,
                     "dropped_empty_text": 1, "dropped_span_not_found": 1,
                     "offset_repaired": 2}
  assert "boson_dev.json:1: offset_repaired" in _strict_error(readers.read_punified_json, path)


# ---------------------------------------------------------------------------------------------
# Boson


def test_boson_markup_and_sentences(tmp_path):
  content = ("{{person_name:张三}}说：“今天去{{location:北京}}。”{{time:明天}}呢？\\n"
             "新一段 {{company_name:甲公司}}发布了{{product_name:乙手机}}\n"
             "\n"
             "{{org_name:丙。委员会}}开会。\n")
  path = _write(tmp_path, "BosonNLP_NER_6C.txt", content)
  assert list(readers.read_boson(path)) == [
      Example("张三说：“今天去北京。”", [Span(0, 2, "person_name"), Span(8, 10, "location")]),
      Example("明天呢？", [Span(0, 2, "time")]),
      # The escaped line break `\n` ends a sentence and is not text.
      Example("新一段 甲公司发布了乙手机", [Span(4, 7, "company_name"),
                                     Span(10, 13, "product_name")]),
      # Never split inside an entity.
      Example("丙。委员会开会。", [Span(0, 5, "org_name")]),
  ]


def test_boson_malformed(tmp_path):
  content = ("{{person_name}}说{{time:}}和{{foo:甲}}以及{{location:乙\n"
             "{{location:丙}}好\n")
  path = _write(tmp_path, "BosonNLP_NER_6C.txt", content)
  examples, repairs = _lenient(readers.read_boson, path)
  assert examples == [Example("{{person_name}}说和甲以及{{location:乙"),
                      Example("丙好", [Span(0, 1, "location")])]
  assert repairs == {"bad_markup": 1, "empty_entity": 1, "unclosed_markup": 1,
                     "unknown_type": 1}
  assert "BosonNLP_NER_6C.txt:1: bad_markup" in _strict_error(readers.read_boson, path)


def test_split_sentences_rules():
  text = "甲；乙；丙。丁！？”戊"
  example = Example(text, [Span(10, 11, "x")])
  assert readers.split_sentences(example) == [
      Example("甲；乙；丙。"), Example("丁！？”"), Example("戊", [Span(0, 1, "x")])]
  # Soft enders split only once the sentence is long enough.
  assert readers.split_sentences(Example(text), soft_min_chars=2) == [
      Example("甲；"), Example("乙；"), Example("丙。"), Example("丁！？”"), Example("戊")]
  # Spaces at the edges go, unless an entity covers them; space-only pieces are not sentences.
  assert readers.split_sentences(Example("  甲。  。 乙 ", [Span(8, 10, "x")])) == [
      Example("甲。"), Example("。"), Example("乙 ", [Span(0, 2, "x")])]
  assert readers.split_sentences(Example("甲乙"), breaks=[1]) == [Example("甲"), Example("乙")]


# ---------------------------------------------------------------------------------------------
# People Daily 2014


def test_pd2014(tmp_path):
  source = _write(tmp_path, "source_BIO_2014_cropus.txt", "张 三 在 北 京\n\n今 天 好 \n")
  target = _write(tmp_path, "target_BIO_2014_cropus.txt",
                  "B_PER I_PER O B_LOC I_LOC\n\nB_T I_T O\n")
  assert list(readers.read_pd2014(source, target)) == [
      Example("张三在北京", [Span(0, 2, "PER"), Span(3, 5, "LOC")]),
      Example("今天好", [Span(0, 2, "T")]),
  ]


def test_pd2014_malformed(tmp_path):
  source = _write(tmp_path, "source_BIO_2014_cropus.txt", "甲 乙\n丙 丁\n戊\n")
  target = _write(tmp_path, "target_BIO_2014_cropus.txt", "O\nI_LOC O\n")
  examples, repairs = _lenient(readers.read_pd2014, source, target)
  assert examples == [Example("丙丁", [Span(0, 1, "LOC")])]
  assert repairs == {"dropped_length_mismatch": 1, "dropped_unpaired_line": 1,
                     "orphan_inside_tag": 1}
  message = _strict_error(readers.read_pd2014, source, target)
  assert "target_BIO_2014_cropus.txt:1: dropped_length_mismatch" in message
  assert "source_BIO_2014_cropus.txt" in message


# ---------------------------------------------------------------------------------------------
# People's Daily 1998

PD1998 = (
    "19980101-01-001-001/m  江/nr  泽民/nr  在/p  [第四/m  军医/n  大学/n]nt  讲话/v  \n"
    "\n"
    "19980101-01-001-002/m  一九九七年/t  十二月/t  三十一日/t  ，/w  [北京/ns  大学/n]nt  "
    "[中国/ns  日报/n]nz  新华社/nt  北京/ns  上海/ns  [/w\n"
)
PD1998_EXPECTED = [
    Example("江泽民在第四军医大学讲话", [Span(0, 3, "PER"), Span(4, 10, "ORG")]),
    Example("一九九七年十二月三十一日，北京大学中国日报新华社北京上海[", [
        Span(0, 12, "T"), Span(13, 17, "ORG"), Span(17, 19, "LOC"), Span(21, 24, "ORG"),
        Span(24, 26, "LOC"), Span(26, 28, "LOC")]),
]


def test_pd1998_plain_and_gzip(tmp_path):
  plain = _write(tmp_path, "pd1998.txt", PD1998)
  assert list(readers.read_pd1998(plain)) == PD1998_EXPECTED
  packed = _write(tmp_path, "pd1998.txt.gz", gzip.compress(PD1998.encode("utf-8")))
  assert list(readers.read_pd1998(packed)) == PD1998_EXPECTED


def test_pd1998_malformed(tmp_path):
  content = ("张/nr  三/nr\n"                                   # no document id
             "19980101-01-001-003/m\n"                          # id only
             "19980101-01-001-004/m  [甲/n  乙/n  丙]ns  丁]nt  戊  [己/n\n")
  path = _write(tmp_path, "pd1998.txt", content)
  examples, repairs = _lenient(readers.read_pd1998, path)
  assert examples == [Example("张三", [Span(0, 2, "PER")]), Example("甲乙丙]ns丁]nt戊己")]
  assert repairs == {"bad_token": 3, "dropped_empty_paragraph": 1, "missing_doc_id": 1,
                     "unbalanced_bracket": 2}
  assert "pd1998.txt:1: missing_doc_id" in _strict_error(readers.read_pd1998, path)


# ---------------------------------------------------------------------------------------------
# Round trips: random texts and spans, written in each scheme, read back equal.

# Any character but line breaks (the files are line based), surrogates (not text) and the BOM
# (stripped at the start of a file, by design).
_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\ufeff")


@st.composite
def _examples(draw, alphabet=_CHARS):
  sentences = []
  for _ in range(draw(st.integers(1, 3))):
    text = draw(st.text(alphabet, min_size=1, max_size=25))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=8)))
    spans = [Span(start, end, draw(st.sampled_from(["NAME", "HC", "PER.NOM", "village_group"])))
             for start, end in zip(cuts, cuts[1:]) if draw(st.booleans())]
    sentences.append(Example(text, spans))
  return sentences


def _char_tag_file(examples, scheme, separator):
  lines = []
  for example in examples:
    tags = tagging.encode_spans(len(example.text), [(s.start, s.end, s.type)
                                                    for s in example.spans], scheme)
    lines += [f"{char}{separator}{tag}" for char, tag in zip(example.text, tags)]
    lines.append("")
  return "\n".join(lines) + "\n"


@hypothesis.settings(max_examples=60, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(_examples(), st.sampled_from(tagging.SCHEMES), st.booleans())
def test_char_tags_round_trip(tmp_path, examples, scheme, given_scheme):
  path = _write(tmp_path, "round.txt", _char_tag_file(examples, scheme, "\t"))
  assert list(readers.read_char_tags(path, scheme=scheme if given_scheme else None)) == examples


@hypothesis.settings(max_examples=30, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(_examples(st.characters(blacklist_categories=("Cs", "Zs", "Cc"),
                                          blacklist_characters="\ufeff\u2028\u2029\x85")),
                  st.sampled_from(tagging.SCHEMES))
def test_char_tags_round_trip_space_separated(tmp_path, examples, scheme):
  path = _write(tmp_path, "round.bmes", _char_tag_file(examples, scheme, " "))
  assert list(readers.read_char_tags(path)) == examples


@hypothesis.settings(max_examples=30, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(_examples(st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters="\n\r\ufeff\ufffd")),
                  st.integers(0, 20))
def test_weibo_round_trip(tmp_path, examples, position):
  lines = []
  for example in examples:
    tags = tagging.encode_spans(len(example.text), [(s.start, s.end, s.type)
                                                    for s in example.spans], "BIO")
    lines += [f"{char}{position}\t{tag}" for char, tag in zip(example.text, tags)] + [""]
  path = _write(tmp_path, "weiboNER_2nd_conll.dev", "\n".join(lines))
  assert list(readers.read_weibo(path)) == examples
  # The 1st release's reader reads the same text from CESU-8 bytes.
  path1 = _write(tmp_path, "weiboNER.conll.dev", _cesu8("\n".join(lines)))
  assert list(readers.read_weibo(path1, version=1)) == examples


# ---------------------------------------------------------------------------------------------
# Readers never swallow a file: the repair-share limit and unlabeled files.


def _bmes_lines(n_good, n_bad):
  """n_good tagged lines, then n_bad lines whose tag is unknown (each a repair), one sentence."""
  return "".join("甲 O\n" for _ in range(n_good)) + "".join("乙 Q-XX\n" for _ in range(n_bad))


def test_lenient_gives_up_when_most_lines_need_repair(tmp_path):
  path = _write(tmp_path, "train.char.bmes", _bmes_lines(9, 10))
  with pytest.raises(DataFormatError) as info:
    _lenient(readers.read_char_tags, path, scheme="BMES")
  message = str(info.value)
  # Names the file and its first bad line (line 10: nine good lines come first).
  assert message.startswith(f"{path}:10: 10 of 19 non-blank lines need repair (more than 50%)")
  assert "First problem, at this line: unknown_tag" in message
  assert info.value.path == path and info.value.line == 10


def test_lenient_keeps_files_below_the_limits(tmp_path):
  # Exactly half repaired: read, every repair counted.
  half = _write(tmp_path, "half.char.bmes", _bmes_lines(10, 10))
  examples, repairs = _lenient(readers.read_char_tags, half, scheme="BMES")
  assert examples == [Example("甲" * 10 + "乙" * 10)] and repairs == {"unknown_tag": 10}
  # Mostly broken but fewer than REPAIR_SHARE_MIN_LINES bad lines (a small hand-made file).
  small = _write(tmp_path, "small.char.bmes", _bmes_lines(1, 9))
  assert _lenient(readers.read_char_tags, small, scheme="BMES")[1] == {"unknown_tag": 9}
  assert raw_files.REPAIR_SHARE_LIMIT == 0.5 and raw_files.REPAIR_SHARE_MIN_LINES == 10


def test_json_file_of_mostly_bad_records_is_an_error(tmp_path):
  lines = ['{"text": "甲乙", "label": {"name": {"甲": [[0, 0]]}}}'] * 3 + ["not json"] * 12
  path = _write(tmp_path, "dev.json", "\n".join(lines) + "\n")
  with pytest.raises(DataFormatError, match=r"dev\.json:4: 12 of 15 non-blank lines need repair"):
    _lenient(readers.read_cluener_json, path)


def test_release_file_without_tags_is_unlabeled(tmp_path):
  path = _write(tmp_path, "test.char.bmes", "张\n三\n\n李\n")
  for strict in (True, False):
    report = RepairReport()
    examples = list(readers.read_char_tags(path, strict=strict, report=report))
    assert examples == [Example("张三"), Example("李")]
    assert report.as_dict() == {} and report.unlabeled_files == [path]
  # Weibo (characters with their position digits, no tag column) and MSRA (no /tag anywhere).
  weibo = _write(tmp_path, "weiboNER_2nd_conll.test", "张0\n三1\n")
  report = RepairReport()
  assert list(readers.read_weibo(weibo, strict=False, report=report)) == [Example("张三")]
  assert report.as_dict() == {} and report.unlabeled_files == [weibo]
  msra = _write(tmp_path, "test.txt", "张三 去 北京\n")
  report = RepairReport()
  assert list(readers.read_msra(msra, strict=False, report=report)) == [Example("张三去北京")]
  assert report.as_dict() == {} and report.unlabeled_files == [msra]
  # A labeled file is not: one tagged line is enough, and the untagged ones are repairs.
  mixed = _write(tmp_path, "dev.char.bmes", "张 O\n三\n")
  report = RepairReport()
  list(readers.read_char_tags(mixed, strict=False, report=report))
  assert report.as_dict() == {"missing_tag": 1} and report.unlabeled_files == []


def test_cluener_file_without_labels_is_unlabeled_even_when_labels_are_required(tmp_path):
  path = _write(tmp_path, "dev.json", '{"id": 0, "text": "甲乙"}\n{"id": 1, "text": "丙"}\n')
  report = RepairReport()
  examples = list(readers.read_cluener_json(path, strict=False, report=report, require_labels=True))
  assert examples == [Example("甲乙"), Example("丙")]
  assert report.as_dict() == {} and report.unlabeled_files == [path]
  ours = _write(tmp_path, "cluener_test.json", '{"id": 0, "text": "甲乙"}\n')
  report = RepairReport()
  assert list(readers.read_punified_json(ours, report=report)) == [Example("甲乙")]
  assert report.unlabeled_files == [ours]
