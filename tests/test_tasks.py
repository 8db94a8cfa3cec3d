"""SeqIO tasks and mixtures: registration, prompting per split, prefix-LM, rates, sources."""

import os

import numpy as np
import pytest
import seqio

import tasks
from punified_jax import metrics
from tasks import registry

LENGTHS = {"inputs": 128, "targets": 64}

# Resume in its release format (BMES, `char tag` lines): three train sentences, one dev.
RESUME_TRAIN = [
    [("张", "B-NAME"), ("三", "E-NAME"), ("，", "O"), ("汉", "B-RACE"), ("族", "E-RACE")],
    [("任", "O"), ("经", "B-TITLE"), ("理", "E-TITLE")],
    [("好", "O")],
]
RESUME_DEV = [[("李", "B-NAME"), ("四", "E-NAME"), ("，", "O"), ("博", "B-EDU"), ("士", "E-EDU")]]


def _write_bmes(path, sentences):
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n\n".join("\n".join(f"{c} {t}" for c, t in s) for s in sentences) + "\n")


@pytest.fixture()
def raw_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  resume = tmp_path / "raw" / "resume"
  resume.mkdir(parents=True)
  _write_bmes(resume / "train.char.bmes", RESUME_TRAIN)
  _write_bmes(resume / "dev.char.bmes", RESUME_DEV)
  yield str(tmp_path / "raw")
  tasks.register_all()  # back to the environment's config for the other tests


def _examples(task_name, split, **kwargs):
  ds = seqio.get_mixture_or_task(task_name).get_dataset(LENGTHS, split=split, shuffle=False,
                                                         **kwargs)
  return list(ds.as_numpy_iterator())


def test_default_registration_names():
  tasks.register_all(tasks.DataConfig(raw_dir="builtin"))
  names = set(seqio.TaskRegistry.names())
  for ds in ("ecommerce", "msra", "ontonotes4", "peoples_daily", "boson", "resume", "cluener",
             "ccks2021", "weibo", "peoples_daily_1998"):
    for prefix in ("punified_prefix_lm_", "punified_ner_"):
      assert f"{prefix}{ds}" in names
    assert f"punified_ner_{ds}_random" in names and f"punified_ner_{ds}_random_exact" in names
  joint = seqio.get_mixture_or_task("punified_ner_joint")
  assert sorted(t.name for t in joint.tasks) == [
      "punified_ner_boson", "punified_ner_ccks2021", "punified_ner_cluener",
      "punified_ner_ecommerce", "punified_ner_msra", "punified_ner_ontonotes4",
      "punified_ner_peoples_daily", "punified_ner_resume"]
  assert {t.name for t in seqio.get_mixture_or_task("punified_prefix_lm").tasks} == {
      f"punified_prefix_lm_{d}" for d in tasks.DataConfig(raw_dir="builtin").datasets}


def test_dataset_prompt_examples_are_literal(raw_dir):
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  # Only resume exists under raw_dir: the other datasets are not registered at all.
  assert "punified_ner_msra" not in seqio.TaskRegistry.names()
  train = _examples("punified_ner_resume", "train")
  types = "<entity>名称<entity>国籍<entity>民族<entity>职位<entity>学历<entity>公司<entity>专业<entity>籍贯"
  assert [ex["inputs_pretokenized"].decode() for ex in train] == [
      types + "<text>张三，汉族", types + "<text>任经理", types + "<text>好"]
  assert train[0]["targets_pretokenized"].decode() == (
      "((名称:张三),(国籍:NULL),(民族:汉族),(职位:NULL),(学历:NULL),(公司:NULL),(专业:NULL),"
      "(籍贯:NULL))")
  # Gold offsets for the offset-exact metric, with prompt names as types.
  assert train[0][metrics.GOLD_STARTS_FEATURE].tolist() == [0, 3]
  assert train[0][metrics.GOLD_ENDS_FEATURE].tolist() == [2, 5]
  assert [t.decode() for t in train[0][metrics.GOLD_TYPES_FEATURE]] == ["名称", "民族"]
  assert train[2][metrics.GOLD_TYPES_FEATURE].tolist() == []  # no entity: empty, not dropped
  # Tokens are the vocabulary's ids of the pretokenized text, ending with EOS.
  vocab = tasks.vocabulary_for()
  assert train[1]["inputs"].tolist() == vocab.encode(types + "<text>任经理") + [vocab.eos_id]
  assert vocab.decode(train[1]["targets"].tolist()).startswith("((名称:NULL),(国籍:NULL)")


def test_random_modes_train_vs_validation(raw_dir):
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  exact = _examples("punified_ner_resume_random_exact", "train", seed=5)
  assert len(exact) == 2 * len(RESUME_TRAIN)  # random + exact match per training sentence
  # The exact-match example prompts exactly the gold types, in registry order.
  assert exact[1]["inputs_pretokenized"].decode() == "<entity>名称<entity>民族<text>张三，汉族"
  assert exact[1]["targets_pretokenized"].decode() == "((名称:张三),(民族:汉族))"
  # No gold entity: the exact example falls back to the dataset's types (all NULL).
  assert exact[5]["inputs_pretokenized"].decode().endswith("<entity>籍贯<text>好")
  # Held-out splits always use the dataset prompt, one example a sentence.
  for task in ("punified_ner_resume_random", "punified_ner_resume_random_exact"):
    val = _examples(task, "validation", seed=5)
    assert [ex["targets_pretokenized"].decode() for ex in val] == [
        "((名称:李四),(国籍:NULL),(民族:NULL),(职位:NULL),(学历:博士),(公司:NULL),(专业:NULL),"
        "(籍贯:NULL))"]
  # Random prompts are seeded: same seed, same prompts.
  again = _examples("punified_ner_resume_random_exact", "train", seed=5)
  assert [e["inputs"].tolist() for e in again] == [e["inputs"].tolist() for e in exact]


def test_prefix_lm_examples_split_each_sentence(raw_dir):
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  examples = _examples("punified_prefix_lm_resume", "train", seed=1)
  vocab = tasks.vocabulary_for()
  # The one-character sentence "好" has no split point and yields nothing.
  assert len(examples) == 2
  pieces = [(vocab.decode(e["inputs"].tolist()), vocab.decode(e["targets"].tolist()))
            for e in examples]
  assert sorted(a + b for a, b in pieces) == sorted(["张三，汉族", "任经理"])
  assert all(a and b for a, b in pieces)


def test_mixture_rates(raw_dir):
  # Two datasets of different sizes: write a second one (msra, one sentence per line).
  msra = os.path.join(raw_dir, "msra")
  os.makedirs(msra)
  with open(os.path.join(msra, "train.txt"), "w", encoding="utf-8") as f:
    f.write("".join(f"北京/ns 第{i}/o 句/o\n" for i in range(20)))
  uniform = tasks.DataConfig(raw_dir=raw_dir, datasets=("resume", "msra"))
  tasks.register_all(uniform)
  mixture = seqio.get_mixture_or_task("punified_ner_joint")
  assert [mixture.get_rate(t) for t in mixture.tasks] == [1.0, 1.0]
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume", "msra"),
                                      mixture_rate="proportional", temperature=2.0, cap=9))
  mixture = seqio.get_mixture_or_task("punified_ner_joint")
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  # resume: 3 train sentences -> 3 ** 0.5; msra: 20 - 5 held out (a quarter) = 15, capped at 9.
  assert rates == pytest.approx({"punified_ner_resume": 3 ** 0.5, "punified_ner_msra": 3.0})


def test_config_from_env_and_errors():
  cfg = tasks.DataConfig.from_env({"PUNIFIED_RAW_DIR": "/d", "PUNIFIED_DATASETS": "resume, msra",
                                   "PUNIFIED_MIXTURE_RATE": "proportional",
                                   "PUNIFIED_MIXTURE_TEMPERATURE": "3", "PUNIFIED_VOCAB": ""})
  assert (cfg.raw_dir, cfg.datasets, cfg.mixture_rate, cfg.temperature, cfg.vocabulary) == (
      "/d", ("resume", "msra"), "proportional", 3.0, None)
  with pytest.raises(ValueError, match="unknown dataset 'nope'"):
    tasks.DataConfig(datasets=("nope",))
  with pytest.raises(ValueError, match="mixture_rate 'zipf'"):
    tasks.DataConfig(mixture_rate="zipf")


def test_configure_reads_gin_bindings(raw_dir):
  import gin
  with gin.unlock_config():
    gin.parse_config([f"tasks.configure.raw_dir = '{raw_dir}'",
                      "tasks.configure.datasets = ['resume']"])
  try:
    config = tasks.configure()
  finally:
    gin.clear_config()
  assert config.raw_dir == raw_dir and tasks.current_config() == config
  assert [t.name for t in seqio.get_mixture_or_task("punified_ner_joint").tasks] == [
      "punified_ner_resume"]


def test_tfds_source_matches_raw_source(raw_dir, tmp_path):
  from punified_jax.data import tfds_builder
  builder = tfds_builder.make_builder("resume", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds_builder.tfds.download.DownloadConfig(
      manual_dir=raw_dir))
  raw = _examples_with(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  via_tfds = _examples_with(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",),
                                             tfds_dir=str(tmp_path / "tfds")))
  assert via_tfds == raw


def _examples_with(config):
  tasks.register_all(config)
  return [(e["inputs_pretokenized"], e["targets_pretokenized"], e["gold_starts"].tolist())
          for e in _examples("punified_ner_resume", "validation")]


def test_metric_runs_through_seqio_evaluator_api(raw_dir):
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  task = seqio.get_mixture_or_task("punified_ner_resume")
  val = _examples("punified_ner_resume", "validation")
  targets = [task.postprocess_fn(e["targets_pretokenized"].decode(), example=e, is_target=True)
             for e in val]
  # A prediction that finds the name but misses the degree.
  predictions = [task.postprocess_fn("((名称:李四),(学历:NULL))", example=val[0], is_target=False)]
  scores = {}
  for fn in task.metric_fns:
    scores.update(fn(targets, predictions))
  assert scores["f1/名称"] == 100.0 and scores["f1/学历"] == 0.0
  assert scores["macro_f1"] == 50.0  # the 6 types without gold or prediction are excluded
  assert scores["offset_macro_f1"] == 50.0
