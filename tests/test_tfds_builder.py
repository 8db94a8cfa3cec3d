"""The `punified_ner` TFDS builder and the `prepare` command on tiny fixture downloads."""

import pytest
import tensorflow_datasets as tfds

from punified_jax import entity_types
from punified_jax.__main__ import main
from punified_jax.data import sources, tfds_builder
from punified_jax.data.example import Example, Span


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


@pytest.fixture()
def raw(tmp_path):
  root = tmp_path / "raw"
  _write(root / "resume/train.char.bmes",
         "张 B-NAME\n三 E-NAME\n是 O\n汉 B-RACE\n族 E-RACE\n\n好 O\n\n大 B-EDU\n学 E-EDU\n")
  _write(root / "resume/dev.char.bmes", "王 S-NAME\n")
  _write(root / "msra/train.txt", "".join(f"第{i}/o 北京/ns\n" for i in range(8)))
  _write(root / "punifiedner_json/resume_train.json", '["李四", [0, 1, "李四", "NAME"]]\n')
  return root


def _read_back(dataset, data_dir, config=None):
  builder = tfds.builder(f"punified_ner/{config or dataset}", data_dir=str(data_dir))
  out = {}
  for split in builder.info.splits:
    records = list(tfds.as_numpy(builder.as_dataset(split=split)))
    out[split] = records
  return out


def test_configs_come_from_the_registry():
  names = [c.name for c in tfds_builder.BUILDER_CONFIGS]
  assert len(names) == len(set(names))
  for dataset in entity_types.DATASETS:
    assert dataset in names
  assert "resume_punified_json" in names and "weibo_weibo1" in names
  assert "msra_punified_json" not in names  # the paper has no MSRA JSON
  assert tfds_builder.config_name("boson", seed=3) == "boson_seed3"
  assert tfds_builder.builder_config("msra", seed=2).seed == 2


def test_build_and_load_back_equals_load_splits(raw, tmp_path):
  data_dir = tmp_path / "tfds"
  builder = tfds_builder.make_builder("resume", data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
  records = _read_back("resume", data_dir)
  expected = sources.load_splits("resume", str(raw))
  assert set(records) == set(expected) == {"train", "validation"}
  for split, examples in expected.items():
    assert [tfds_builder.examples_from_tfds(r) for r in records[split]] == examples
    assert [r["id"].decode() for r in records[split]] == [
        f"resume-{split}-{i}" for i in range(len(examples))]
  assert tfds_builder.examples_from_tfds(records["train"][0]) == Example(
      "张三是汉族", [Span(0, 2, "NAME"), Span(3, 5, "RACE")])
  # Tensors (not numpy) convert too.
  first = next(iter(builder.as_dataset(split="validation")))
  assert tfds_builder.examples_from_tfds(first) == Example("王", [Span(0, 1, "NAME")])


def test_prepare_command(raw, tmp_path, capsys):
  data_dir = tmp_path / "tfds"
  assert main(["prepare", "--datasets", "msra", "--raw_dir", str(raw), "--data_dir",
               str(data_dir), "--seed", "1"]) == 0
  assert "punified_ner/msra_seed1/1.0.0" in capsys.readouterr().out
  builder = tfds_builder.make_builder("msra", seed=1, data_dir=str(data_dir))
  got = {split: [tfds_builder.examples_from_tfds(r)
                 for r in tfds.as_numpy(builder.as_dataset(split=split))]
         for split in builder.info.splits}
  assert got == sources.load_splits("msra", str(raw), seed=1)

  assert main(["prepare", "--datasets", "resume", "--format", "punified_json", "--raw_dir",
               str(raw), "--data_dir", str(data_dir)]) == 0
  records = _read_back("resume", data_dir, config="resume_punified_json")
  assert [tfds_builder.examples_from_tfds(r) for r in records["train"]] == [
      Example("李四", [Span(0, 2, "NAME")])]


def test_prepare_errors(raw, tmp_path, capsys):
  data_dir = str(tmp_path / "tfds")
  assert main(["prepare", "--datasets", "ecommerce", "--raw_dir", str(raw),
               "--data_dir", data_dir]) == 2
  assert "train.txt.bieos" in capsys.readouterr().err
  assert main(["prepare", "--datasets", "resume,nope", "--raw_dir", str(raw),
               "--data_dir", data_dir]) == 2
  assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_empty_heldout_split_is_not_written(tmp_path):
  raw = tmp_path / "raw"
  _write(raw / "msra/train.txt", "北京/ns\n")  # too small to hold anything out
  data_dir = tmp_path / "tfds"
  builder = tfds_builder.make_builder("msra", data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
  assert list(builder.info.splits) == ["train"]
  assert [tfds_builder.examples_from_tfds(r)
          for r in tfds.as_numpy(builder.as_dataset(split="train"))] == [
              Example("北京", [Span(0, 2, "LOC")])]
