"""`python -m punified_jax stats` on fixture directories: literal JSON, table, errors."""

import json
import os
import subprocess
import sys

from punified_jax.__main__ import main


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


def _fixture(root):
  _write(root / "resume/train.char.bmes",
         "张 B-NAME\n三 E-NAME\n是 O\n汉 B-RACE\n族 E-RACE\n\n"
         "李 B-ORG\n四 M-ORG\n\n"             # sentence ends inside an ORG
         "公 M-ORG\n司 E-ORG\n")              # ... which goes on as an orphan
  _write(root / "resume/dev.char.bmes", "王 S-NAME\n五 O\n")
  _write(root / "msra/train.txt", "".join(f"第{i}/o 张三/nr 北京/ns\n" for i in range(8)))


def test_stats_json(tmp_path, capsys):
  _fixture(tmp_path)
  assert main(["stats", "--dataset", "resume", "--raw_dir", str(tmp_path), "--json"]) == 0
  assert json.loads(capsys.readouterr().out) == {
      "train": {"sentences": 3, "mentions": 4, "types": {"NAME": 1, "RACE": 1, "ORG": 2},
                "repairs": {"orphan_inside_tag": 1, "unclosed_span": 1}},
      "validation": {"sentences": 1, "mentions": 1, "types": {"NAME": 1}, "repairs": {}},
  }


def test_stats_json_heldout_sums_to_the_file(tmp_path, capsys):
  _fixture(tmp_path)
  assert main(["stats", "--dataset", "msra", "--raw_dir", str(tmp_path / "msra"), "--json",
               "--seed", "0"]) == 0
  assert json.loads(capsys.readouterr().out) == {
      "train": {"sentences": 6, "mentions": 12, "types": {"LOC": 6, "PER": 6}, "repairs": {}},
      "validation": {"sentences": 2, "mentions": 4, "types": {"LOC": 2, "PER": 2},
                     "repairs": {}},
  }


def test_stats_table(tmp_path, capsys):
  _fixture(tmp_path)
  assert main(["stats", "--dataset", "resume", "--raw_dir", str(tmp_path)]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f"resume (char_tags) from {tmp_path}/resume"
  assert out[1].split() == ["train", "validation"]
  assert out[2].split() == ["sentences", "3", "1"]
  assert out[3].split() == ["mentions", "4", "1"]
  assert ["unclosed_span", "1", "0"] in [line.split() for line in out]


def test_stats_strict_error_exit_code(tmp_path, capsys):
  _fixture(tmp_path)
  assert main(["stats", "--dataset", "resume", "--raw_dir", str(tmp_path), "--strict"]) == 2
  err = capsys.readouterr().err
  assert "train.char.bmes:8: unclosed_span" in err


def test_stats_missing_and_unknown(tmp_path, capsys):
  assert main(["stats", "--dataset", "resume", "--raw_dir", str(tmp_path), "--json"]) == 2
  assert "train.char.bmes" in capsys.readouterr().err
  assert main(["stats", "--dataset", "nope", "--raw_dir", str(tmp_path)]) == 2
  assert "unknown dataset 'nope'" in capsys.readouterr().err
  assert main(["stats", "--dataset", "resume", "--raw_dir", str(tmp_path),
               "--format", "boson"]) == 2
  assert "cannot be read from format 'boson'" in capsys.readouterr().err


def test_python_dash_m(tmp_path):
  _fixture(tmp_path)
  result = subprocess.run(
      [sys.executable, "-m", "punified_jax", "stats", "--dataset", "resume", "--raw_dir",
       str(tmp_path), "--json"], capture_output=True, text=True, check=False,
      env={**os.environ, "PYTHONIOENCODING": "utf-8"})
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["validation"]["types"] == {"NAME": 1}
