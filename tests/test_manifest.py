"""Run records: data_manifest.json (datasets, formats, files, per-split counts, vocabulary hash,
mixture rates) and config.gin (the operative gin config), and how `report` shows them."""

import hashlib
import json

import gin
import pytest

import tasks
from punified_jax import storage
from punified_jax.data import manifest
from punified_jax.data import sources

# Resume (BMES): two train sentences (3 mentions, one line with an unknown tag: 1 repair), one
# dev sentence; MSRA (word/tag lines, 2000-sentence held-out validation capped to a quarter).
RESUME_TRAIN = "张 B-NAME\n三 E-NAME\n好 Q-XX\n\n王 B-NAME\n五 E-NAME\n是 O\n经 B-TITLE\n理 E-TITLE\n"
RESUME_DEV = "李 S-NAME\n"
MSRA_TRAIN = "".join(f"北京/ns 第{i}/o\n" for i in range(8))


@pytest.fixture()
def raw_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  (tmp_path / "raw" / "resume").mkdir(parents=True)
  (tmp_path / "raw" / "msra").mkdir()
  (tmp_path / "raw" / "resume" / "train.char.bmes").write_text(RESUME_TRAIN, encoding="utf-8")
  (tmp_path / "raw" / "resume" / "dev.char.bmes").write_text(RESUME_DEV, encoding="utf-8")
  (tmp_path / "raw" / "msra" / "train.txt").write_text(MSRA_TRAIN, encoding="utf-8")
  yield str(tmp_path / "raw")
  tasks.register_all()


def test_manifest_of_a_mixture_is_literal(raw_dir):
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume", "msra")))
  record = manifest.build_manifest("punified_ner_joint")
  assert record["version"] == 1 and record["builtin"] is False
  assert record["source"] == f"raw files under {raw_dir}"
  assert record["config"]["raw_dir"] == raw_dir and record["config"]["datasets"] == ["resume", "msra"]
  assert record["mixture"] == {
      "name": "punified_ner_joint", "kind": "mixture",
      "rates": {"punified_ner_resume": 1.0, "punified_ner_msra": 1.0},
      "probabilities": {"punified_ner_resume": 0.5, "punified_ner_msra": 0.5},
      "scheme": {"name": "uniform", "temperature": 1.0, "cap": None, "source": "default",
                 "label": "uniform"}}
  resume = record["datasets"]["resume"]
  assert resume["format"] == "char_tags" and resume["directory"] == f"{raw_dir}/resume"
  assert resume["files"] == {"train": [f"{raw_dir}/resume/train.char.bmes"],
                             "validation": [f"{raw_dir}/resume/dev.char.bmes"]}
  assert resume["splits"] == {
      "train": {"sentences": 2, "mentions": 3, "repairs": {"unknown_tag": 1}, "labeled": True},
      "validation": {"sentences": 1, "mentions": 1, "repairs": {}, "labeled": True}}
  msra = record["datasets"]["msra"]
  assert msra["files"] == {"train": [f"{raw_dir}/msra/train.txt"],
                           "validation": [f"{raw_dir}/msra/train.txt"]}  # held out of train
  assert {k: (v["sentences"], v["mentions"]) for k, v in msra["splits"].items()} == {
      "train": (6, 6), "validation": (2, 2)}
  vocabulary = record["vocabulary"]
  assert vocabulary["kind"] == "sentencepiece" and vocabulary["path"].startswith(raw_dir.replace("raw", "cache"))
  with open(vocabulary["path"], "rb") as f:
    assert vocabulary["sha256"] == hashlib.sha256(f.read()).hexdigest()
  json.dumps(record)  # plain JSON


def test_proportional_rates_come_from_the_registered_mixture(raw_dir):
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume", "msra"),
                                      mixture_rate="proportional"))
  rates = manifest.build_manifest("punified_prefix_lm")["mixture"]["rates"]
  assert rates == {"punified_prefix_lm_resume": 2.0, "punified_prefix_lm_msra": 6.0}


def test_single_task_and_unlabeled_split(raw_dir):
  with open(f"{raw_dir}/resume/test.char.bmes", "w", encoding="utf-8") as f:
    f.write("赵\n钱\n")  # no tag column: an unlabeled test split
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  record = manifest.build_manifest("punified_ner_resume")
  assert record["mixture"]["kind"] == "task" and record["mixture"]["rates"] == {"punified_ner_resume": 1.0}
  assert record["datasets"]["resume"]["splits"]["test"] == {
      "sentences": 1, "mentions": 0, "repairs": {}, "labeled": False}
  text = manifest.format_manifest(record)
  assert text.splitlines()[0] == f"data: raw files under {raw_dir}"
  assert "resume              char_tags     test                 1         0        0  NO" in text


def test_write_run_records(raw_dir, tmp_path):
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))

  @gin.configurable
  def recorded_function(value=0):
    return value

  with gin.unlock_config():
    gin.parse_config(["recorded_function.value = 3"])
  try:
    recorded_function()  # operative config: only what was used
    run = tmp_path / "run"
    manifest.write_run_records(str(run), "punified_ner_resume")
    assert "recorded_function.value = 3" in (run / manifest.CONFIG_GIN_FILE).read_text()
    written = manifest.read_manifest(str(run))
    assert written == json.loads(json.dumps(manifest.build_manifest("punified_ner_resume")))
    assert storage.exists(str(run / manifest.DATA_MANIFEST_FILE))
  finally:
    gin.clear_config()


def test_builtin_manifest_says_so(tmp_path):
  tasks.register_all(tasks.DataConfig(raw_dir=sources.BUILTIN, datasets=("resume",)))
  record = manifest.build_manifest("punified_ner_resume")
  assert record["builtin"] is True and record["config"]["raw_dir"] == "builtin"
  assert record["raw_dir_resolved"] == sources.resolve_raw_dir("builtin")
  assert record["source"] == "the built-in synthetic corpus (PUNIFIED_RAW_DIR=builtin)"
  tasks.register_all()


def test_report_command_shows_the_manifest(raw_dir, tmp_path, capsys):
  from punified_jax.__main__ import main as cli_main
  tasks.register_all(tasks.DataConfig(raw_dir=raw_dir, datasets=("resume",)))
  run = tmp_path / "run"
  storage.write_json_atomic(str(run / manifest.DATA_MANIFEST_FILE),
                            manifest.build_manifest("punified_ner_resume"))
  storage.write_json_atomic(str(run / "eval" / "step_4.json"), {
      "step": 4, "selection_metric": "macro_f1", "mean": 50.0, "beam_size": 2,
      "tasks": {"punified_ner_resume": {"macro_f1": 50.0, "micro_f1": 50.0, "precision": 50.0,
                                        "recall": 50.0}}})
  assert cli_main(["report", "--model_dir", str(run), "--output", str(tmp_path / "report")]) == 0
  out = capsys.readouterr().out
  assert f"=== data (data_manifest.json)\ndata: raw files under {raw_dir}\n" in out
  assert "mixture: punified_ner_resume (task)" in out
  assert "resume              char_tags     train                2         3        1  yes" in out
  (run / manifest.DATA_MANIFEST_FILE).unlink()
  assert cli_main(["report", "--model_dir", str(run), "--output", str(tmp_path / "report")]) == 0
  assert "(no data_manifest.json in " in capsys.readouterr().out
