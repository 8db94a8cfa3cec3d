"""Data is never implicit: no data source is an error naming the settings, the built-in corpus
only by name, TFDS-only mode without a raw directory, and every process of a run checking that it
sees the same data settings."""

import os
import subprocess
import sys

import gin
import pytest
import seqio

import tasks
from punified_jax import distributed
from punified_jax import eval as eval_cli
from punified_jax import infer as infer_cli
from punified_jax import train as train_cli
from punified_jax.data import manifest
from tasks import registry

import trainer_helpers as th

SETTINGS_NAMED = ("PUNIFIED_RAW_DIR=/path/to/downloads", "tasks.configure.raw_dir",
                  "PUNIFIED_TFDS_DIR=/path/to/tfds", "tasks.configure.tfds_dir",
                  "PUNIFIED_RAW_DIR=builtin")

# Resume in its release format: two train sentences, one dev sentence (BMES).
RESUME_TRAIN = "张 B-NAME\n三 E-NAME\n好 O\n\n王 B-NAME\n五 E-NAME\n"
RESUME_DEV = "李 B-NAME\n四 E-NAME\n"


@pytest.fixture()
def no_source(monkeypatch):
  monkeypatch.delenv("PUNIFIED_RAW_DIR", raising=False)
  monkeypatch.delenv("PUNIFIED_TFDS_DIR", raising=False)
  yield
  monkeypatch.undo()
  gin.clear_config()
  tasks.register_all()  # back to the suite's explicit built-in corpus


def _resume_raw(root):
  folder = root / "raw" / "resume"
  folder.mkdir(parents=True)
  (folder / "train.char.bmes").write_text(RESUME_TRAIN, encoding="utf-8")
  (folder / "dev.char.bmes").write_text(RESUME_DEV, encoding="utf-8")
  return str(root / "raw")


def test_no_data_source_registers_nothing_and_says_what_to_set(no_source, caplog):
  config = tasks.register_all()
  assert not config.has_source and config.describe_source() == "no data source"
  assert not [n for n in seqio.TaskRegistry.names() if n.startswith("punified_")]
  assert "punified_ner_joint" not in seqio.MixtureRegistry.names()
  assert "PUnifiedNER tasks not registered: no data source" in caplog.text
  with pytest.raises(tasks.NoDataSourceError) as info:
    tasks.require_data_source()
  for setting in SETTINGS_NAMED:
    assert setting in str(info.value)
  # The vocabulary cannot be trained on nothing either (t5x asks for it through vocabulary_for).
  with pytest.raises(tasks.NoDataSourceError):
    registry.default_vocabulary_path(config)


@pytest.mark.parametrize("main, run_file, extra", [
    (train_cli.main, "gin/runs/finetune_joint.gin", ["--gin.MODEL_DIR=/nonexistent/m"]),
    (eval_cli.main, "gin/runs/eval.gin", ["--gin.CHECKPOINT_PATH=/nonexistent/c",
                                           "--gin.EVAL_OUTPUT_DIR=/nonexistent/e"]),
    (infer_cli.main, "gin/runs/infer.gin", ["--gin.MODEL_DIR=/nonexistent/m",
                                             "--gin.INFER_OUTPUT_DIR=/nonexistent/p"]),
])
def test_train_eval_infer_without_data_exit_nonzero_naming_the_settings(no_source, capsys, main,
                                                                        run_file, extra):
  gin.clear_config()
  code = main([f"--gin_file={run_file}", "--gin_file=gin/models/tiny.gin", "--distributed=off",
               *extra])
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("error: no data source configured. Set one of: ")
  for setting in SETTINGS_NAMED:
    assert setting in err


def test_train_command_without_data_in_a_fresh_process(tmp_path):
  env = th.subprocess_env()
  env.pop("PUNIFIED_RAW_DIR")
  done = th.run_python(["-m", "punified_jax.train", "--gin_file=gin/runs/adapt.gin",
                        "--gin_file=gin/models/tiny.gin", f"--gin.MODEL_DIR={tmp_path / 'm'}"],
                       env=env, cwd=th.REPO_ROOT)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "error: no data source configured" in done.stderr and "PUNIFIED_RAW_DIR=builtin" in done.stderr
  assert not (tmp_path / "m").exists()  # nothing was started


def test_builtin_corpus_by_name_from_env_and_gin(no_source, monkeypatch):
  monkeypatch.setenv("PUNIFIED_RAW_DIR", "builtin")
  config = tasks.register_all()
  assert config.is_builtin and "built-in synthetic corpus" in config.describe_source()
  assert "punified_ner_resume" in seqio.TaskRegistry.names()
  monkeypatch.delenv("PUNIFIED_RAW_DIR")
  tasks.register_all()
  assert "punified_ner_resume" not in seqio.TaskRegistry.names()
  with gin.unlock_config():
    gin.parse_config(["tasks.configure.raw_dir = 'builtin'", "tasks.configure.datasets = ['msra']"])
  config = tasks.configure()
  assert config.is_builtin and config.datasets == ("msra",)
  assert [t.name for t in seqio.get_mixture_or_task("punified_ner_joint").tasks] == ["punified_ner_msra"]


def test_tfds_only_mode_needs_no_raw_dir(tmp_path, monkeypatch):
  """PUNIFIED_TFDS_DIR alone: the datasets, their splits and the default vocabulary all come
  from the prepared TFDS data; nothing from the built-in corpus."""
  from punified_jax.__main__ import main as cli_main
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  raw = _resume_raw(tmp_path)
  assert cli_main(["prepare", "--datasets", "resume", "--raw_dir", raw,
                   "--data_dir", str(tmp_path / "tfds")]) == 0
  try:
    config = tasks.register_all(tasks.DataConfig.from_env(
        {"PUNIFIED_TFDS_DIR": str(tmp_path / "tfds"), "PUNIFIED_DATASETS": "resume"}))
    assert config.raw_dir is None and config.describe_source() == f"TFDS datasets in {tmp_path / 'tfds'}"
    # Only the prepared dataset is registered, with the splits TFDS holds.
    assert sorted(n for n in seqio.TaskRegistry.names() if n.startswith("punified_ner_")) == [
        "punified_ner_resume", "punified_ner_resume_random", "punified_ner_resume_random_exact"]
    assert registry.available_splits(config, "resume") == ("train", "validation")
    examples = registry.load_examples(config, "resume")
    assert [e.text for e in examples["train"]] == ["张三好", "王五"]
    # The default vocabulary was trained on those 5 characters (plus specials and bytes), not on
    # the built-in corpus's thousands.
    vocabulary = registry.vocabulary_for(config)
    assert vocabulary.vocabulary.sentencepiece_model_file.startswith(str(tmp_path / "cache"))
    pieces = {vocabulary.vocabulary.tokenizer.id_to_piece(i) for i in range(vocabulary.vocab_size)}
    assert {"张", "三", "好", "王", "五"} <= pieces and "李" not in pieces
  finally:
    tasks.register_all()


# -----------------------------------------------------------------------------------------------
# The same data settings on every process.


def test_describe_mismatch_names_the_differing_settings():
  same = {"config": {"raw_dir": "/d", "split_seed": 0}}
  assert distributed.describe_mismatch("data settings", [same, dict(same)]) is None
  other = {"config": {"raw_dir": "/e", "split_seed": 0}}
  message = distributed.describe_mismatch("data settings", [same, other])
  assert message.startswith("the 2 processes of this run see different data settings (fingerprints ")
  assert ("config: process 0: {'raw_dir': '/d', 'split_seed': 0}; "
          "process 1: {'raw_dir': '/e', 'split_seed': 0}") in message
  assert distributed.settings_fingerprint({"a": 1, "b": 2}) == distributed.settings_fingerprint({"b": 2, "a": 1})


def test_data_settings_see_file_sizes(tmp_path):
  raw = _resume_raw(tmp_path)
  config = tasks.DataConfig(raw_dir=raw, datasets=("resume",))
  before = manifest.data_settings(config)
  assert before["raw_file_sizes"] == {"resume/dev.char.bmes": len(RESUME_DEV.encode()),
                                      "resume/train.char.bmes": len(RESUME_TRAIN.encode())}
  with open(os.path.join(raw, "resume", "dev.char.bmes"), "a", encoding="utf-8") as f:
    f.write("\n赵 S-NAME\n")
  assert manifest.data_settings(config) != before  # another copy of the data: another fingerprint


def _two_processes(tmp_path, envs, extra):
  port = th.free_port()
  workers = [subprocess.Popen(
      [sys.executable, "-m", "punified_jax.eval", "--gin_file=gin/runs/eval.gin",
       "--gin_file=gin/models/tiny.gin", f"--gin.CHECKPOINT_PATH={tmp_path / 'none'}",
       f"--gin.EVAL_OUTPUT_DIR={tmp_path / 'eval'}", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={rank}", *extra],
      env=envs[rank], cwd=th.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for rank in range(2)]
  try:
    return [(w.wait(timeout=240), w.stdout.read(), w.stderr.read()) for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()


def test_two_processes_with_different_data_settings_both_stop(tmp_path):
  env = th.subprocess_env(devices=1)
  env["PUNIFIED_DATASETS"] = "resume"
  envs = [dict(env, PUNIFIED_SPLIT_SEED="0"), dict(env, PUNIFIED_SPLIT_SEED="7")]
  results = _two_processes(tmp_path, envs, [])
  for code, _, err in results:
    assert code == 2, err[-3000:]
    assert "error: the 2 processes of this run see different data settings" in err
    assert "process 0: " in err and "'split_seed': 0" in err and "'split_seed': 7" in err
  # The same settings pass the check; both then stop at the missing checkpoint instead.
  same = _two_processes(tmp_path, [env, env], [])
  for code, out, err in same:
    assert "see different data settings" not in err
    assert code != 0 and str(tmp_path / "none") in err, err[-3000:]
  assert "data: the built-in synthetic corpus (PUNIFIED_RAW_DIR=builtin)" in same[0][1]
