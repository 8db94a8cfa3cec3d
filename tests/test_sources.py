"""Per-dataset layouts, held-out splits, formats and the built-in corpus hook (tiny fixtures)."""

import json

import pytest

from punified_jax import entity_types
from punified_jax.data import sources
from punified_jax.data.example import DataFormatError, Example, RepairReport, Span


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


@pytest.fixture()
def root(tmp_path):
  """A tiny download tree laid out like the real one."""
  _write(tmp_path / "resume/train.char.bmes", "张 B-NAME\n三 E-NAME\n\n汉 B-RACE\n族 E-RACE\n")
  _write(tmp_path / "resume/dev.char.bmes", "李 S-NAME\n")
  _write(tmp_path / "weibo/weiboNER_2nd_conll.train", "科0\tB-PER.NAM\n技1\tI-PER.NAM\n")
  _write(tmp_path / "weibo/weiboNER.conll.train", "好0\tB-LOC.NAM\n")
  _write(tmp_path / "msra/train.txt",
         "".join(f"第{i}/o 北京/ns\n" for i in range(12)))
  _write(tmp_path / "cluener2020/train.json",
         json.dumps({"text": "王五好", "label": {"name": {"王五": [[0, 1]]}}},
                    ensure_ascii=False) + "\n")
  _write(tmp_path / "cluener2020/test.json", '{"id": 0, "text": "无标"}\n')
  _write(tmp_path / "boson/BosonNLP_NER_6C.txt",
         "".join(f"第{i}句{{{{location:北京}}}}。第{i}段{{{{time:今天}}}}！\n" for i in range(10)))
  _write(tmp_path / "peoples_daily_2014/source_BIO_2014_cropus.txt", "张 三\n在 家\n" * 2)
  _write(tmp_path / "peoples_daily_2014/target_BIO_2014_cropus.txt", "B_PER I_PER\nO O\n" * 2)
  _write(tmp_path / "punifiedner_json/resume_train.json", '["张三", [0, 1, "张三", "NAME"]]\n')
  _write(tmp_path / "punifiedner_json/people_daily_dev.json", '["北京", [0, 1, "北京", "LOC"]]\n')
  _write(tmp_path / "punifiedner_json/ml_train.json", '["王五", [0, 1, "王五", "name"]]\n')
  _write(tmp_path / "punifiedner_json/cluener_test.json", '{"id": 0, "text": "测试"}\n')
  return tmp_path


def test_registry_covers_every_dataset():
  assert set(sources.DATASET_FORMATS) == set(entity_types.DATASETS)
  assert set(sources.FOLDERS) == set(entity_types.DATASETS)
  for dataset, formats in sources.DATASET_FORMATS.items():
    assert sources.default_format(dataset) == formats[0]
    assert set(formats) <= set(sources.FORMATS)
  assert sources.default_format("resume") == "char_tags"
  assert sources.default_format("peoples_daily_1998") == "pd1998"


def test_root_or_dataset_folder(root):
  expected = {"train": [Example("张三", [Span(0, 2, "NAME")]), Example("汉族", [Span(0, 2, "RACE")])],
              "validation": [Example("李", [Span(0, 1, "NAME")])]}
  assert sources.load_splits("resume", str(root)) == expected
  assert sources.load_splits("resume", str(root / "resume")) == expected
  assert sources.dataset_dir("resume", str(root)) == str(root / "resume")


def test_weibo_versions(root):
  assert sources.load_splits("weibo", str(root)) == {
      "train": [Example("科技", [Span(0, 2, "PER.NAM")])]}
  assert sources.load_splits("weibo", str(root), format="weibo1") == {
      "train": [Example("好", [Span(0, 1, "LOC.NAM")])]}


def test_missing_files_name_the_expected_paths(tmp_path):
  with pytest.raises(sources.MissingDataError) as info:
    sources.load_splits("resume", str(tmp_path))
  message = str(info.value)
  assert f"{tmp_path}/resume/train.char.bmes" in message
  assert f"{tmp_path}/train.char.bmes" in message
  assert "punified_json" in message  # the hint lists the other formats
  with pytest.raises(sources.MissingDataError, match="source_BIO_2014_cropus.txt \\+ "
                     "target_BIO_2014_cropus.txt"):
    sources.load_splits("peoples_daily", str(tmp_path))
  with pytest.raises(sources.MissingDataError, match="pd1998.txt.gz or pd1998.txt"):
    sources.load_splits("peoples_daily_1998", str(tmp_path))


def test_bad_dataset_or_format(root):
  with pytest.raises(ValueError, match="unknown dataset"):
    sources.load_splits("nope", str(root))
  with pytest.raises(ValueError, match="unknown format"):
    sources.load_splits("resume", str(root), format="xml")
  with pytest.raises(ValueError, match="cannot be read from format 'msra'"):
    sources.load_splits("resume", str(root), format="msra")


def test_heldout_split_is_a_fixed_function_of_the_seed():
  # Literal: the same on every machine (blake2b order, not a library RNG).
  assert sources.heldout_split(20, ("validation", "test"), 0) == {
      "train": [0, 1, 2, 4, 6, 10, 13, 15, 17, 19], "validation": [3, 7, 9, 11, 18],
      "test": [5, 8, 12, 14, 16]}
  assert sources.heldout_split(12, ("validation",), 0) == {
      "train": [0, 1, 2, 4, 5, 6, 8, 10, 11], "validation": [3, 7, 9]}
  assert sources.heldout_split(20, ("validation", "test"), 1) != sources.heldout_split(
      20, ("validation", "test"), 0)
  split = sources.heldout_split(50000, ("validation", "test"), 3)
  assert [len(split[k]) for k in ("train", "validation", "test")] == [46000, 2000, 2000]
  assert sorted(split["train"] + split["validation"] + split["test"]) == list(range(50000))


def test_msra_holds_out_validation(root):
  splits = sources.load_splits("msra", str(root), seed=0)
  assert list(splits) == ["train", "validation"]
  assert [e.text for e in splits["validation"]] == ["第3北京", "第7北京", "第9北京"]
  assert len(splits["train"]) == 9
  assert splits["validation"][0].spans == (Span(2, 4, "LOC"),)
  again = sources.load_splits("msra", str(root), seed=0)
  assert again == splits
  other = sources.load_splits("msra", str(root), seed=5)
  assert sorted(e.text for e in other["train"] + other["validation"]) == sorted(
      e.text for e in splits["train"] + splits["validation"])


def test_boson_sentences_then_heldout(root):
  splits = sources.load_splits("boson", str(root), seed=0)
  assert {k: len(v) for k, v in splits.items()} == {"train": 10, "validation": 5, "test": 5}
  assert splits["validation"][0] == Example("第1段今天！", [Span(3, 5, "time")])
  assert splits["train"][0] == Example("第0句北京。", [Span(3, 5, "location")])


def test_pd2014_heldout(root):
  splits = sources.load_splits("peoples_daily", str(root))
  assert {k: len(v) for k, v in splits.items()} == {"train": 2, "validation": 1, "test": 1}


def test_available_splits_match_load_splits(root):
  for dataset, format in [("resume", None), ("msra", None), ("boson", None),
                          ("peoples_daily", None), ("cluener", None), ("weibo", "weibo1"),
                          ("peoples_daily", "punified_json"), ("cluener", "punified_json")]:
    names = sources.available_splits(dataset, str(root), format=format)
    assert names == tuple(sources.load_splits(dataset, str(root), format=format)), dataset
  assert sources.available_splits("msra", str(root)) == ("train", "validation")
  with pytest.raises(sources.MissingDataError):
    sources.available_splits("ecommerce", str(root))


def test_tiny_file_keeps_empty_heldout_splits(root):
  _write(root / "msra/train.txt", "北京/ns\n")
  assert sources.load_splits("msra", str(root)) == {
      "train": [Example("北京", [Span(0, 2, "LOC")])], "validation": []}


def test_cluener_test_is_unlabeled(root):
  splits = sources.load_splits("cluener", str(root))
  assert splits["test"] == [Example("无标")]
  assert sources.unlabeled_splits("cluener") == frozenset({"test"})
  assert sources.unlabeled_splits("cluener", "punified_json") == frozenset({"test"})
  assert sources.unlabeled_splits("resume") == frozenset()


def test_punified_json_layout(root):
  assert sources.load_splits("resume", str(root), format="punified_json") == {
      "train": [Example("张三", [Span(0, 2, "NAME")])]}
  # The JSON folder itself works as raw_dir; People Daily has only a validation file.
  assert sources.load_splits("peoples_daily", str(root / "punifiedner_json"),
                             format="punified_json") == {
      "validation": [Example("北京", [Span(0, 2, "LOC")])]}
  assert sources.load_splits("cluener", str(root), format="punified_json") == {
      "train": [Example("王五", [Span(0, 2, "name")])], "test": [Example("测试")]}


def test_strict_and_repair_report(root):
  _write(root / "resume/dev.char.bmes", "李 M-NAME\n")
  report = RepairReport()
  splits = sources.load_splits("resume", str(root), report=report)
  assert splits["validation"] == [Example("李", [Span(0, 1, "NAME")])]
  assert report.as_dict() == {"orphan_inside_tag": 1, "unclosed_span": 1}
  with pytest.raises(DataFormatError, match="dev.char.bmes:1: orphan_inside_tag"):
    sources.load_splits("resume", str(root), strict=True)


def test_heldout_repairs_follow_their_sentence(root):
  # Line 4 (index 3, a validation sentence with seed 0) has an unknown tag.
  lines = [f"第{i}/o 北京/ns" for i in range(12)]
  lines[3] = "第3/o 北京/xx"
  _write(root / "msra/train.txt", "\n".join(lines) + "\n")
  loaded = sources.load_dataset("msra", str(root))
  assert {k: r.as_dict() for k, r in loaded.repairs.items()} == {
      "train": {}, "validation": {"unknown_tag": 1}}


def test_builtin_corpus_only_by_name(root, monkeypatch):
  monkeypatch.setattr(sources.builtin, "builtin_corpus_dir", lambda: str(root))
  monkeypatch.setattr(sources.builtin, "held_out_sizes", lambda raw_dir, dataset: None)
  assert sources.load_splits("resume", "builtin") == sources.load_splits("resume", str(root))
  assert sources.available_splits("resume", "builtin") == ("train", "validation")
  # No directory is not the built-in corpus: the error says what to pass.
  for call in (lambda: sources.load_splits("resume", None), lambda: sources.load_splits("resume"),
               lambda: sources.available_splits("resume", None)):
    with pytest.raises(sources.MissingDataError, match="no raw data directory given: pass the "
                       "root of your downloads, or 'builtin' for the built-in synthetic corpus"):
      call()


def test_release_test_file_without_tags_is_an_unlabeled_split(root):
  # A Resume test file with no tag column (as an unlabeled release would be).
  _write(root / "resume/test.char.bmes", "王\n五\n\n赵\n")
  loaded = sources.load_dataset("resume", str(root))
  assert loaded.unlabeled == frozenset({"test"})
  assert loaded.repairs["test"].as_dict() == {}
  assert loaded.splits["test"] == [Example("王五"), Example("赵")]
