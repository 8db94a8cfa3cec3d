"""Metric writers: JSONL records per step, resume truncation, console progress lines."""

import io
import json

import numpy as np
import pytest

from punified_jax import metric_writers


def _records(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_merges_writes_of_one_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  writer = metric_writers.JsonlWriter(str(path))
  writer.write_scalars(1, {"train/loss": np.float32(2.5), "train/learning_rate": 1e-3})
  writer.write_scalars(1, {"eval/mean_macro_f1": 50.0})
  writer.write_scalars(2, {"train/loss": np.array(2.0), "train/grad_norm": float("nan")})
  writer.write_texts(2, {"note": "地点"})
  writer.close()
  assert _records(path) == [
      {"step": 1, "train/loss": 2.5, "train/learning_rate": 1e-3, "eval/mean_macro_f1": 50.0},
      {"step": 2, "train/loss": 2.0, "train/grad_norm": "nan", "note": "地点"},
  ]


def test_jsonl_resume_drops_steps_after_the_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 3}\n{"step": 2, "loss": 2}\n{"hparams": {"a": 1}}\n'
                  '{"step": 3, "loss": 1}\n{"step": 4, "lo')  # the last line was cut by a kill
  writer = metric_writers.JsonlWriter(str(path), resume_step=2)
  writer.write_scalars(3, {"loss": 1.5})
  writer.close()
  assert _records(path) == [{"step": 1, "loss": 3}, {"step": 2, "loss": 2}, {"hparams": {"a": 1}},
                            {"step": 3, "loss": 1.5}]


def test_jsonl_on_an_object_store_rewrites_the_whole_file(gcs_emulator):
  from punified_jax import storage  # pylint: disable=g-import-not-at-top
  path = f"gs://{gcs_emulator.bucket()}/run/metrics.jsonl"  # the GCS emulator (tests/gcs_emulator.py)
  writer = metric_writers.JsonlWriter(path, remote_flush_seconds=3600)
  writer.write_scalars(1, {"loss": 2.0})
  writer.flush(force=True)
  writer.write_scalars(2, {"loss": 1.0})
  writer.flush()  # within the minimum interval: not rewritten yet
  assert [json.loads(line)["step"] for line in storage.read_text(path).splitlines()] == [1]
  writer.close()
  resumed = metric_writers.JsonlWriter(path, resume_step=1)
  resumed.write_scalars(2, {"loss": 0.5})
  resumed.close()
  assert [json.loads(line) for line in storage.read_text(path).splitlines()] == [
      {"step": 1, "loss": 2.0}, {"step": 2, "loss": 0.5}]


def test_metric_writer_on_an_emulated_bucket_skips_tensorboard(gcs_emulator, caplog):
  from punified_jax import storage  # pylint: disable=g-import-not-at-top
  run = f"gs://{gcs_emulator.bucket()}/run"
  writer = metric_writers.create_metric_writer(run, process_index=0)
  writer.write_scalars(5, {"train/loss": 1.0})
  writer.close()
  assert storage.listdir(run) == ["metrics.jsonl"]  # no tensorboard/: gfile cannot reach emulators
  assert "not writing TensorBoard events" in caplog.text


def test_metric_writer_on_process_0_only(tmp_path):
  writer = metric_writers.create_metric_writer(str(tmp_path / "run"), process_index=0)
  writer.write_scalars(5, {"train/loss": 1.0})
  writer.close()
  assert _records(tmp_path / "run" / "metrics.jsonl") == [{"step": 5, "train/loss": 1.0}]
  assert list((tmp_path / "run" / "tensorboard").iterdir())  # an events file
  other = metric_writers.create_metric_writer(str(tmp_path / "other"), process_index=1)
  other.write_scalars(5, {"train/loss": 1.0})
  other.close()
  assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (12.4, "12s"), (274, "4m34s"), (3720, "1h02m"),
                                           (float("nan"), "?"), (-1, "?")])
def test_format_duration(seconds, text):
  assert metric_writers.format_duration(seconds) == text


def test_progress_lines_with_rate_and_eta():
  now = [100.0]
  stream = io.StringIO()
  progress = metric_writers.ProgressLogger(1000, start_step=100, every=10, stream=stream, clock=lambda: now[0])
  assert not progress.should_log(105) and progress.should_log(110) and progress.should_log(1000)
  now[0] += 4.0  # 20 steps in 4 s
  rates = progress.log(120, {"loss": 1.23456, "lr": 1e-3})
  assert rates == {"steps_per_second": 5.0, "seconds": 4.0}
  assert stream.getvalue() == "step 120/1000 (12.0%) | loss 1.2346 | lr 1.000e-03 | 5.00 steps/s | ETA 2m56s\n"
  now[0] += 1.0
  progress.log(1000, {"loss": 0.5})
  assert stream.getvalue().splitlines()[-1] == "step 1000/1000 (100.0%) | loss 0.5000 | 880.00 steps/s | ETA 0s"
