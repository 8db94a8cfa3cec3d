"""gin_utils: the flag parsing every gin command (train, eval, infer) shares, and the one
vocabulary-size rounding rule it applies to VOCAB_SIZE (pure, no subprocess)."""

import pytest

from punified_jax import gin_utils
from punified_jax import model as model_lib


@pytest.mark.parametrize("text, expected", [
    ("/tmp/m", "'/tmp/m'"),
    ("'/tmp/m'", "'/tmp/m'"),
    ('"/tmp/m"', '"/tmp/m"'),
    ("20", "20"),
    ("1e-4", "1e-4"),
    ("None", "None"),
    ("True", "True"),
    ("{'inputs': 64, 'targets': 32}", "{'inputs': 64, 'targets': 32}"),
    ("@partitioning.fsdp_rules()", "@partitioning.fsdp_rules()"),
    ("%TRAIN_STEPS", "%TRAIN_STEPS"),
    ("punified_ner_joint", "'punified_ner_joint'"),
    ("地点", "'地点'"),
])
def test_gin_value_quotes_bare_words_only(text, expected):
  assert gin_utils.gin_value(text) == expected


def test_split_gin_flags():
  bindings, rest = gin_utils.split_gin_flags(
      ["--gin_file=a.gin", "--gin.MODEL_DIR=/tmp/m", "--gin.TRAIN_STEPS", "30", "--gin.train.seed=3",
       "--num_processes=2", "--gin.X='a=b'"])
  assert bindings == ["MODEL_DIR = '/tmp/m'", "TRAIN_STEPS = 30", "train.seed = 3", "X = 'a=b'"]
  assert rest == ["--gin_file=a.gin", "--num_processes=2"]
  with pytest.raises(ValueError, match="missing value"):
    gin_utils.split_gin_flags(["--gin.TRAIN_STEPS"])


def test_round_up_vocab_size():
  assert [model_lib.round_up_vocab_size(n) for n in (1, 128, 129, 21228)] == [128, 128, 256, 21248]


def test_read_macros_follows_includes_in_order_and_evaluates_nothing(tmp_path):
  (tmp_path / "base.gin").write_text(
      "from __gin__ import dynamic_registration\nimport not_a_module_anywhere\n"
      "STEPS = 10\nRATE = 1e-3\nSCHEDULE = @optimizers.make_schedule()\n"
      "optimizers.make_schedule:\n  total_steps = %STEPS\n", encoding="utf-8")
  (tmp_path / "run.gin").write_text(
      "STEPS = 5\ninclude 'base.gin'\nLENGTHS = {'inputs': 8, 'targets': 4}  # a comment\n"
      "RATE = 2e-3\nNAME = %gin.REQUIRED\n", encoding="utf-8")
  assert gin_utils.read_macros("run.gin", [str(tmp_path)]) == {
      "STEPS": 10, "RATE": 2e-3, "SCHEDULE": "@optimizers.make_schedule()",
      "LENGTHS": {"inputs": 8, "targets": 4}, "NAME": "%gin.REQUIRED"}
  with pytest.raises(FileNotFoundError, match="nope.gin"):
    gin_utils.read_macros("nope.gin", [str(tmp_path)])
