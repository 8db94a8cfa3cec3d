"""A simulated TPU pod in CI: cloud storage, two hosts, FSDP, preemption, resume, evaluation,
report and serving, end to end.

    GCS emulator (tests/gcs_emulator.py, 127.0.0.1)  holds the raw data, the vocabulary and every
                                                     run directory, as gs:// paths
    2 processes x 4 fake CPU devices, joined by jax.distributed on 127.0.0.1, FSDP preset
    (gin/partitioning/fsdp.gin), tiny model, on two datasets of the built-in corpus written in
    their release formats (punified_jax/data/builtin.py)

    1. adaptation (prefix LM)                       -> gs://.../adapt
    2. joint fine-tuning from it; SIGTERM to ONE process mid-run: both stop at the same step and
       save it; the same command again resumes and finishes; its losses equal those of an
       uninterrupted run of the same command in another run directory (rtol 1e-5)
    3. evaluation of the test split of each dataset  -> gs://.../joint/eval_test
    4. report (best checkpoint's evaluation by default) written to gs://
    5. Extractor.load from gs://, extraction: every entity's offsets index the caller's text.

Kept to a few minutes of CPU: tiny shapes, short sequences, a handful of steps.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import trainer_helpers as th

DATASETS = ("msra", "resume")
JOINT_STEPS = 24
LENGTHS = "{'inputs': 64, 'targets': 64}"
POD = ["--gin_file=gin/models/tiny.gin", "--gin_file=gin/partitioning/fsdp.gin", "--gin.BATCH_SIZE=8",
       f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", "--gin.LOG_EVERY=1"]


def _write_data_to_bucket(tmp_path, bucket: str) -> tuple[str, str]:
  """The built-in generator's release files of DATASETS, and a char vocabulary, uploaded to gs://."""
  from punified_jax import storage, vocab  # pylint: disable=g-import-not-at-top
  from punified_jax.data import builtin, sources  # pylint: disable=g-import-not-at-top
  local = builtin.write_corpus(tmp_path / "corpus", seed=0,
                               sizes={"train": 48, "validation": 8, "test": 8})
  raw_dir = f"gs://{bucket}/raw"
  storage.copy(os.path.join(local, builtin.MARKER_FILE), storage.join(raw_dir, builtin.MARKER_FILE))
  for dataset in DATASETS:
    folder = builtin.DATASET_DIRS[dataset]
    storage.copy_tree_from_local(os.path.join(local, folder), storage.join(raw_dir, folder))
  # The readers see the bucket as they see a local download.
  splits = sources.load_splits(DATASETS[1], raw_dir)
  assert {name: len(examples) for name, examples in splits.items()} == {
      name: len(examples) for name, examples in sources.load_splits(DATASETS[1], local).items()}
  texts = [ex.text for dataset in DATASETS for ex in sources.load_splits(dataset, local)["train"]]
  vocabulary = vocab.train_sentencepiece(texts, f"gs://{bucket}/vocab/char.model")
  return raw_dir, vocabulary


def _start(args, env, logs, tag, port):
  """Two processes of one pod job; their output goes to `<logs>/<tag><rank>.log`."""
  workers = []
  for rank in range(2):
    handle = open(logs / f"{tag}{rank}.log", "w")
    workers.append(subprocess.Popen(
        [sys.executable, "-m", "punified_jax.train", *POD, *args,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={rank}"],
        env=env, cwd=th.REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT, text=True))
    handle.close()
  return workers


def _log(logs, tag, rank) -> str:
  return (logs / f"{tag}{rank}.log").read_text()


def _finish(workers, logs, tag, timeout=600):
  """Waits for both processes; when one fails the other is killed at once (it would wait for its
  peer in a collective until a timeout) and the test fails with both logs."""
  deadline = time.time() + timeout
  try:
    while any(w.poll() is None for w in workers) and time.time() < deadline:
      if any(w.poll() not in (None, 0) for w in workers):
        break
      time.sleep(0.5)
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()  # SIGKILL: SIGTERM would be taken as a preemption notice
        worker.wait()
  codes = [w.returncode for w in workers]
  assert codes == [0, 0], (f"{tag}: exit codes {codes}\n" + _log(logs, tag, 0)[-3000:] + "\n-----\n"
                           + _log(logs, tag, 1)[-3000:])
  return [_log(logs, tag, rank) for rank in range(2)]


def _losses(storage, model_dir):
  records = [json.loads(line) for line in storage.read_text(f"{model_dir}/metrics.jsonl").splitlines()
             if line.strip()]
  return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def test_simulated_pod_on_cloud_storage(gcs_emulator, tmp_path, monkeypatch):
  from punified_jax import run_dir, storage  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  bucket = gcs_emulator.bucket("pod")
  raw_dir, vocabulary = _write_data_to_bucket(tmp_path, bucket)
  runs = f"gs://{bucket}/runs"
  logs = tmp_path / "logs"
  logs.mkdir()
  env = th.subprocess_env(devices=4)
  env.update(PUNIFIED_RAW_DIR=raw_dir, PUNIFIED_VOCAB=vocabulary, PUNIFIED_DATASETS=",".join(DATASETS),
             PUNIFIED_CACHE=str(tmp_path / "cache"))

  # 1. Adaptation.
  adapt = f"{runs}/adapt"
  outputs = _finish(_start(["--gin_file=gin/runs/adapt.gin", "--gin.TRAIN_STEPS=3", "--gin.WARMUP_STEPS=1",
                            f"--gin.MODEL_DIR={adapt}"], env, logs, "adapt", th.free_port()), logs, "adapt")
  assert "mesh {'data': 8, 'model': 1}, 2 process(es), 2 input shard(s)" in outputs[0]
  assert run_dir.choose_checkpoint(adapt, "latest").step == 3

  # 2. Joint fine-tuning, preempted on one host, resumed; and the same run uninterrupted.
  def joint(model_dir, *extra):
    return ["--gin_file=gin/runs/finetune_joint.gin", f"--gin.TRAIN_STEPS={JOINT_STEPS}", "--gin.WARMUP_STEPS=2",
            f"--gin.INITIAL_CHECKPOINT_PATH={adapt}", f"--gin.CHECKPOINT_PERIOD={JOINT_STEPS}",
            "--gin.EVAL_MAX_EXAMPLES=4", "--gin.EVAL_BEAM_SIZE=1", f"--gin.MODEL_DIR={model_dir}", *extra]

  preempted = f"{runs}/joint"
  workers = _start(joint(preempted, f"--gin.EVAL_PERIOD={JOINT_STEPS}"), env, logs, "joint", th.free_port())
  try:
    deadline = time.time() + 420
    while "step 3/" not in _log(logs, "joint", 0):
      assert time.time() < deadline and all(w.poll() is None for w in workers), _log(logs, "joint", 0)[-3000:]
      time.sleep(0.5)
    workers[1].send_signal(signal.SIGTERM)  # a preemption notice reaches one host only
  finally:
    outputs = _finish(workers, logs, "joint")
  stops = [[line for line in out.splitlines() if line.startswith("stopped by preemption at step ")]
           for out in outputs]
  assert len(stops[0]) == len(stops[1]) == 1 and stops[0] == stops[1], stops
  stop_step = int(stops[0][0].split("step ")[1].split(";")[0])
  assert 3 <= stop_step < JOINT_STEPS
  assert run_dir.finished_steps(run_dir.Layout(preempted).checkpoints) == [stop_step]

  resumed = _finish(_start(joint(preempted, f"--gin.EVAL_PERIOD={JOINT_STEPS}"), env, logs, "resume",
                           th.free_port()), logs, "resume")
  assert f"resuming from checkpoint step {stop_step}" in resumed[0]
  reference = f"{runs}/joint_uninterrupted"
  _finish(_start(joint(reference, "--gin.EVAL_PERIOD=None"), env, logs, "reference", th.free_port()),
          logs, "reference")
  got, want = _losses(storage, preempted), _losses(storage, reference)
  assert sorted(got) == sorted(want) == list(range(1, JOINT_STEPS + 1))
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)
  # The run directory on gs:// describes itself and kept its best checkpoint.
  layout = run_dir.Layout(preempted)
  assert storage.read_json(layout.model_info_file)["extra"]["datasets"] == sorted(DATASETS)
  assert storage.isfile(layout.config_gin) and storage.isfile(layout.data_manifest)
  assert raw_dir in storage.read_text(layout.data_manifest)  # where the data came from
  assert run_dir.choose_checkpoint(preempted).item_dir == f"{preempted}/best/{JOINT_STEPS}/state"
  assert storage.read_json(layout.best_summary)["step"] == JOINT_STEPS

  # 3. Evaluation of the test split (one process, the FSDP checkpoint resharded onto it).
  eval_dir = f"{preempted}/eval_test"
  evaluation = th.run_python(
      ["-m", "punified_jax.eval", "--gin_file=gin/runs/eval.gin", "--gin_file=gin/models/tiny.gin",
       f"--gin.CHECKPOINT_PATH={preempted}", f"--gin.EVAL_OUTPUT_DIR={eval_dir}", "--split", "test",
       "--gin.EVAL_MAX_EXAMPLES=4", "--gin.EVAL_BEAM_SIZE=1"],
      env={**env, "XLA_FLAGS": env["XLA_FLAGS"].replace("count=4", "count=1")}, cwd=th.REPO_ROOT, timeout=420)
  assert evaluation.returncode == 0, evaluation.stdout[-3000:] + evaluation.stderr[-3000:]
  result = storage.read_json(f"{eval_dir}/step_{JOINT_STEPS}.json")
  assert sorted(result["tasks"]) == [f"punified_ner_{d}" for d in DATASETS]
  assert result["num_examples"] == {f"punified_ner_{d}": 4 for d in DATASETS}
  assert result["split"] == "test"
  # Per-example predictions beside the report, on the bucket too.
  assert storage.listdir(f"{eval_dir}/predictions") == [
      f"punified_ner_{d}_step_{JOINT_STEPS}.jsonl" for d in DATASETS]

  # 4. Reports, written to the bucket: the test evaluation, and the run's best checkpoint.
  from punified_jax.__main__ import main  # pylint: disable=g-import-not-at-top
  assert main(["report", "--eval_json", eval_dir, "--run", f"joint={preempted}",
               "--output", f"{preempted}/report_test", "--no_paper"]) == 0
  assert storage.read_json(f"{preempted}/report_test/report.json")["step"] == JOINT_STEPS
  assert storage.read_bytes(f"{preempted}/report_test/report.png")[:4] == b"\x89PNG"
  assert main(["report", "--model_dir", preempted, "--output", f"{preempted}/report", "--no_paper"]) == 0
  report = storage.read_json(f"{preempted}/report/report.json")
  assert report["source"] == f"{preempted}/eval/step_{JOINT_STEPS}.json"
  assert sorted(report["datasets"]) == sorted(DATASETS)

  # 5. Serving straight from the bucket.
  from punified_jax import entity_types, inference  # pylint: disable=g-import-not-at-top
  from punified_jax.data import sources  # pylint: disable=g-import-not-at-top
  extractor = inference.Extractor.load(preempted, beam_size=2, max_decode_length=32)
  assert extractor.checkpoint_path == f"{preempted}/best/{JOINT_STEPS}/state"
  texts = [ex.text for ex in sources.load_splits("resume", raw_dir)["test"][:4]]
  texts.append(texts[0] + "。" + texts[1])  # offsets past the first sentence
  results = extractor.extract(texts, dataset="resume")
  assert len(results) == len(texts) and extractor.stats["outputs"] >= len(texts)
  types = set(entity_types.prompt_names("resume"))
  for text, entities in zip(texts, results):
    for entity in entities:
      assert text[entity["start"]:entity["end"]] == entity["text"]
      assert entity["type"] in types
