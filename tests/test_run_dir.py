"""run_dir: the run-directory layout and the one rule that chooses a checkpoint (literal cases)."""

import json
import os
import subprocess
import sys

import pytest

from punified_jax import run_dir


def _step(directory, step: int, *, finished: bool = True):
  """A step directory as orbax leaves it: `<step>/state/` when finished, a temporary name when not."""
  name = str(step) if finished else f"{step}.orbax-checkpoint-tmp-1234"
  (directory / name / "state").mkdir(parents=True)
  (directory / name / "meta").mkdir()


def _eval(run, step: int, mean: float):
  (run / "eval").mkdir(parents=True, exist_ok=True)
  (run / "eval" / f"step_{step}.json").write_text(json.dumps({"step": step, "mean": mean}))


def test_layout_names_every_file_of_a_run(tmp_path):
  layout = run_dir.Layout(tmp_path / "run")
  root = str(tmp_path / "run")
  assert layout.model_dir == root
  assert {name: getattr(layout, name) for name in (
      "checkpoints", "best", "eval_dir", "best_summary", "model_info_file", "vocab_dir", "metrics",
      "tensorboard", "config_gin", "data_manifest", "predictions", "report", "model_gin",
      "converted_model_json")} == {
          "checkpoints": f"{root}/checkpoints", "best": f"{root}/best", "eval_dir": f"{root}/eval",
          "best_summary": f"{root}/eval/best.json", "model_info_file": f"{root}/punified_model.json",
          "vocab_dir": f"{root}/vocab", "metrics": f"{root}/metrics.jsonl",
          "tensorboard": f"{root}/tensorboard", "config_gin": f"{root}/config.gin",
          "data_manifest": f"{root}/data_manifest.json", "predictions": f"{root}/predictions",
          "report": f"{root}/report", "model_gin": f"{root}/model.gin",
          "converted_model_json": f"{root}/model.json"}
  assert layout.eval_json(300) == f"{root}/eval/step_300.json"


def test_layout_of_a_bucket_keeps_the_url():
  layout = run_dir.Layout("gs://bucket/runs/joint/")
  assert (layout.model_dir, layout.best, layout.eval_json(5)) == (
      "gs://bucket/runs/joint", "gs://bucket/runs/joint/best", "gs://bucket/runs/joint/eval/step_5.json")


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert run_dir.Layout("runs/x").checkpoints == str(tmp_path / "runs" / "x" / "checkpoints")


@pytest.fixture
def run(tmp_path):
  """checkpoints/ at 100, 200, 300 (and an unfinished 400); best/ at 200."""
  root = tmp_path / "run"
  for step in (100, 200, 300):
    _step(root / "checkpoints", step)
  _step(root / "checkpoints", 400, finished=False)
  _step(root / "best", 200)
  return root


@pytest.mark.parametrize("choice, subdir, step", [
    ("auto", "best", 200), ("best", "best", 200), ("latest", "checkpoints", 300),
    ("100", "checkpoints", 100), (300, "checkpoints", 300), ("200", "checkpoints", 200)])
def test_choose_checkpoint(run, choice, subdir, step):
  chosen = run_dir.choose_checkpoint(run, choice)
  assert chosen == run_dir.Checkpoint(str(run / subdir / str(step) / "state"), step,
                                      str(run / subdir / str(step)))


def test_auto_without_best_is_the_latest_and_best_insists(tmp_path):
  root = tmp_path / "run"
  _step(root / "checkpoints", 7)
  assert run_dir.choose_checkpoint(root, "auto").step == 7
  with pytest.raises(run_dir.CheckpointNotFoundError,
                     match=f"{root} kept no best checkpoint \\({root}/best has no finished step"):
    run_dir.choose_checkpoint(root, "best")


def test_errors_name_the_directory_and_its_steps(run, tmp_path):
  with pytest.raises(run_dir.CheckpointNotFoundError,
                     match=rf"{run} has no finished checkpoint of step 400 \(steps in "
                     rf"{run}/checkpoints: \[100, 200, 300\], in {run}/best: \[200\]\)"):
    run_dir.choose_checkpoint(run, "400")  # unfinished: not a checkpoint
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(run_dir.CheckpointNotFoundError, match=f"{empty} holds no finished checkpoint"):
    run_dir.choose_checkpoint(empty)
  with pytest.raises(run_dir.CheckpointNotFoundError,
                     match=f"{empty} has no finished checkpoint in {empty}/checkpoints"):
    run_dir.choose_checkpoint(empty, "latest")
  with pytest.raises(ValueError, match="checkpoint choice 'newest': expected one of auto, best, latest"):
    run_dir.choose_checkpoint(run, "newest")


def test_resolve_checkpoint_path_accepts_every_kind_of_path(run, tmp_path):
  cases = {run: 200, run / "checkpoints": 300, run / "best": 200, run / "checkpoints" / "100": 100,
           run / "checkpoints" / "100" / "state": 100}
  for path, step in cases.items():
    assert run_dir.resolve_checkpoint_path(path).step == step, path
  assert run_dir.resolve_checkpoint_path(run, "latest").step == 300
  with pytest.raises(run_dir.CheckpointNotFoundError, match=f"checkpoint path {tmp_path}/nope does not exist"):
    run_dir.resolve_checkpoint_path(tmp_path / "nope")
  (tmp_path / "other").mkdir()
  with pytest.raises(run_dir.CheckpointNotFoundError, match=f"{tmp_path}/other holds no checkpoint"):
    run_dir.resolve_checkpoint_path(tmp_path / "other")


def test_checkpoint_for_takes_choices_and_paths(run):
  assert run_dir.checkpoint_for(run, "latest").step == 300
  assert run_dir.checkpoint_for(run, str(run / "checkpoints" / "100")).step == 100


def test_eval_json_follows_the_same_rule(tmp_path):
  root = tmp_path / "run"
  for step, mean in ((100, 40.0), (200, 60.0), (300, 50.0)):
    _eval(root, step, mean)
  eval_dir = root / "eval"
  # Without best.json (no best kept): auto is the latest report, best insists.
  assert run_dir.eval_json_for(root) == str(eval_dir / "step_300.json")
  with pytest.raises(FileNotFoundError, match=f"{root} kept no best checkpoint with an evaluation report "
                     rf"\({eval_dir}/best.json is missing; reports in {eval_dir}: steps \[100, 200, 300\]\)"):
    run_dir.eval_json_for(root, "best")
  (eval_dir / "best.json").write_text(json.dumps({"metric": "mean_f1", "value": 60.0, "step": 200}))
  assert run_dir.best_step(root) == 200
  assert run_dir.eval_json_for(root) == run_dir.eval_json_for(root, "best") == str(eval_dir / "step_200.json")
  assert run_dir.eval_json_for(root, "latest") == str(eval_dir / "step_300.json")
  assert run_dir.eval_json_for(root, "100") == str(eval_dir / "step_100.json")
  with pytest.raises(FileNotFoundError, match=rf"{eval_dir} has no report of step 7 \(steps: \[100, 200, 300\]\)"):
    run_dir.eval_json_for(root, "7")
  assert run_dir.eval_steps(str(eval_dir)) == [100, 200, 300]
  with pytest.raises(FileNotFoundError, match=f"no step_<N>.json evaluation report in {tmp_path}/none"):
    run_dir.latest_eval_json(str(tmp_path / "none"))


def test_report_command_uses_the_best_checkpoint_by_default(tmp_path, capsys):
  from punified_jax.__main__ import main  # pylint: disable=g-import-not-at-top
  root = tmp_path / "run"
  for step, f1 in ((100, 40.0), (200, 60.0), (300, 50.0)):
    (root / "eval").mkdir(parents=True, exist_ok=True)
    (root / "eval" / f"step_{step}.json").write_text(json.dumps(
        {"step": step, "mean": f1, "tasks": {"punified_ner_resume": {"macro_f1": f1}}}))
  (root / "eval" / "best.json").write_text(json.dumps({"metric": "mean_f1", "value": 60.0, "step": 200}))
  assert main(["report", "--model_dir", str(root), "--output", str(tmp_path / "r"), "--no_paper"]) == 0
  assert json.loads((tmp_path / "r" / "report.json").read_text())["step"] == 200
  assert main(["report", "--model_dir", str(root), "--output", str(tmp_path / "r"), "--no_paper",
               "--checkpoint", "latest"]) == 0
  assert json.loads((tmp_path / "r" / "report.json").read_text())["step"] == 300
  assert main(["report", "--model_dir", str(root), "--output", str(tmp_path / "r"),
               "--checkpoint", "9"]) == 2
  assert "has no report of step 9" in capsys.readouterr().err


def _imported_modules(module_file: str) -> set[str]:
  """Every punified_jax module a source file imports, at top level or inside functions."""
  import ast  # pylint: disable=g-import-not-at-top
  found = set()
  for node in ast.walk(ast.parse(open(module_file, encoding="utf-8").read())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("punified_jax"):
      found.update(f"{node.module}.{alias.name}" if node.module == "punified_jax" else node.module
                   for alias in node.names)
    elif isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith("punified_jax"))
  return found


@pytest.mark.parametrize("module, forbidden", [
    ("hf_interop", {"run_dir", "checkpoints", "model_info", "t5x_interop"}),
    ("t5x_interop", {"run_dir", "checkpoints", "model_info", "hf_interop"}),
    ("hf_files", {"run_dir", "checkpoints", "model_info", "hf_interop", "t5x_interop"}),
    ("checkpoints", {"run_dir", "model_info", "hf_interop", "hf_files", "t5x_interop",
                     "metric_writers"}),
    ("model_info", {"run_dir", "checkpoints", "hf_interop", "t5x_interop"}),
])
def test_the_converters_and_checkpoints_do_not_know_the_run_directory(module, forbidden):
  """hf_interop and t5x_interop translate parameter trees, checkpoints.py is orbax only: none of
  them imports the run-directory module or each other (the old import circle)."""
  path = os.path.join(os.path.dirname(run_dir.__file__), f"{module}.py")
  imported = {name.rsplit(".", 1)[-1] for name in _imported_modules(path)}
  assert not imported & forbidden


def test_run_dir_is_light_to_import():
  """Light commands (report) read run directories without starting jax (fresh interpreter)."""
  code = "import sys, punified_jax.run_dir; print('jax' in sys.modules)"
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
  assert result.stdout.strip() == "False", result.stderr[-2000:]
