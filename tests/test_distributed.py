"""Multi-host plumbing: flag/environment resolution (pure), SLURM host lists, and two real
processes joined by jax.distributed on 127.0.0.1 training like one."""

import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from punified_jax import distributed

import trainer_helpers as th


def resolve(env=None, **kwargs):
  return distributed.resolve_distributed_config(env=env or {}, **kwargs)


def test_nothing_set_means_one_process():
  config = resolve()
  assert config.mode == "single" and config.initialize_kwargs() == {}


def test_flags_win_over_everything():
  env = {"PUNIFIED_COORDINATOR": "envhost:1", "PUNIFIED_NUM_PROCESSES": "8", "PUNIFIED_PROCESS_ID": "5",
         "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_STEP_NODELIST": "n[1-4]"}
  config = resolve(env, coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)
  assert config.initialize_kwargs() == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
  assert config.source == "--coordinator_address"


def test_punified_environment_then_jax_environment():
  punified = {"PUNIFIED_COORDINATOR": "head", "PUNIFIED_NUM_PROCESSES": "4", "PUNIFIED_PROCESS_ID": "2",
              "PUNIFIED_LOCAL_DEVICE_IDS": "0,1", "JAX_COORDINATOR_ADDRESS": "other:9", "JAX_NUM_PROCESSES": "9"}
  config = resolve(punified)
  assert config.initialize_kwargs() == {"coordinator_address": f"head:{distributed.DEFAULT_PORT}",
                                        "num_processes": 4, "process_id": 2, "local_device_ids": [0, 1]}
  jax_env = {"JAX_COORDINATOR_ADDRESS": "10.1.2.3:777", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
  assert resolve(jax_env).initialize_kwargs() == {"coordinator_address": "10.1.2.3:777", "num_processes": 2,
                                                  "process_id": 0}
  # A flag fills in what the environment lacks.
  assert resolve({"PUNIFIED_COORDINATOR": "h:5", "PUNIFIED_NUM_PROCESSES": "2"}, process_id=1).process_id == 1


def test_slurm_environment():
  env = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_JOB_ID": "123456", "SLURM_NNODES": "2",
         "SLURM_STEP_NODELIST": "gpu[007-008]", "SLURM_JOB_NODELIST": "ignored[1-9]", "SLURM_LOCALID": "1"}
  config = resolve(env)
  # 20000 + 123456 % 10000; 8 tasks on 2 nodes with all GPUs visible: one GPU per process.
  assert config.initialize_kwargs() == {"coordinator_address": "gpu007:23456", "num_processes": 8, "process_id": 5,
                                        "local_device_ids": [1]}
  assert config.source == "SLURM nodelist"
  # One task per node, or GPUs already bound per task by SLURM: no local_device_ids.
  per_node = {**env, "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}
  assert "local_device_ids" not in resolve(per_node).initialize_kwargs()
  bound = {**env, "CUDA_VISIBLE_DEVICES": "3"}
  assert "local_device_ids" not in resolve(bound).initialize_kwargs()
  # Explicit port; the job nodelist when there is no step nodelist.
  job = {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "a1,b2", "PUNIFIED_COORDINATOR_PORT": "4000"}
  assert resolve(job).coordinator_address == "a1:4000"
  # A single SLURM task is a single process.
  assert resolve({"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "a1"}).mode == "single"


def test_modes_auto_and_off():
  assert resolve(mode="auto").mode == "auto"
  assert resolve({"PUNIFIED_DISTRIBUTED": "auto"}).mode == "auto"
  # An explicit coordinator beats auto detection.
  explicit = resolve({"PUNIFIED_COORDINATOR": "h:1", "PUNIFIED_NUM_PROCESSES": "2", "PUNIFIED_PROCESS_ID": "0"},
                     mode="auto")
  assert explicit.mode == "explicit"
  assert resolve({"PUNIFIED_COORDINATOR": "h:1"}, mode="off").mode == "single"


@pytest.mark.parametrize("env, kwargs, message", [
    ({"PUNIFIED_COORDINATOR": "h:1", "PUNIFIED_PROCESS_ID": "0"}, {}, "no number of processes"),
    ({"PUNIFIED_COORDINATOR": "h:1", "PUNIFIED_NUM_PROCESSES": "2"}, {}, "no process id"),
    ({}, {"num_processes": 2, "process_id": 0}, "--num_processes is set but no coordinator"),
    ({"PUNIFIED_COORDINATOR": "h:1", "PUNIFIED_NUM_PROCESSES": "2", "PUNIFIED_PROCESS_ID": "2"}, {},
     r"process id 2 \(PUNIFIED_PROCESS_ID\) is outside \[0, 2\)"),
    ({"PUNIFIED_NUM_PROCESSES": "two", "PUNIFIED_COORDINATOR": "h"}, {},
     "PUNIFIED_NUM_PROCESSES='two' is not an integer"),
    ({"PUNIFIED_LOCAL_DEVICE_IDS": "0,x"}, {}, "must be comma-separated integers"),
    ({}, {"mode": "sometimes"}, "must be 'auto', 'off' or unset"),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "n[1-"}, {}, "unclosed"),
])
def test_resolution_errors_name_the_setting(env, kwargs, message):
  with pytest.raises(ValueError, match=message):
    resolve(env, **kwargs)


@pytest.mark.parametrize("nodelist, expected", [
    ("node001", ["node001"]),
    ("node[001-004,007]", ["node001", "node002", "node003", "node004", "node007"]),
    ("a1,b[2-3]", ["a1", "b2", "b3"]),
    ("gpu-[9-11]-ib", ["gpu-9-ib", "gpu-10-ib", "gpu-11-ib"]),
    ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
    ("x[08,010]", ["x08", "x010"]),
])
def test_expand_slurm_nodelist(nodelist, expected):
  assert distributed.expand_slurm_nodelist(nodelist) == expected


@pytest.mark.parametrize("nodelist, message", [
    ("", "empty"), ("n[1-2", "unclosed"), ("n]1", "without"), ("n[[1]]", "nested"), ("n[3-1]", "backwards"),
    ("n[a-b]", "cannot read"), ("a,,b", "empty host name"),
])
def test_expand_slurm_nodelist_errors(nodelist, message):
  with pytest.raises(ValueError, match=message):
    distributed.expand_slurm_nodelist(nodelist)


@given(prefix=st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True).filter(lambda p: not p[-1].isdigit()),
       ranges=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), min_size=1, max_size=4),
       width=st.integers(1, 4))
def test_expanding_a_written_hostlist_gives_its_hosts(prefix, ranges, width):
  """Round trip: hosts -> SLURM's compressed form -> expand_slurm_nodelist -> the same hosts."""
  entries, hosts = [], []
  for start, length in ranges:
    stop = start + length
    entries.append(f"{start:0{width}d}-{stop:0{width}d}" if length else f"{start:0{width}d}")
    hosts.extend(f"{prefix}{n:0{width}d}" for n in range(start, stop + 1))
  assert distributed.expand_slurm_nodelist(f"{prefix}[{','.join(entries)}]") == hosts


def _launch(script, *args, **env):
  import subprocess
  full_env = {**os.environ, "PUNIFIED_DRY_RUN": "1", **env}
  full_env.pop("XLA_FLAGS", None)
  result = subprocess.run(["bash", os.path.join(th.REPO_ROOT, "launch", script), *args], env=full_env,
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 0, result.stderr
  return result.stdout


def test_launch_scripts_build_their_commands():
  python = os.path.join(th.REPO_ROOT, ".venv", "bin", "python")
  assert _launch("gpu_single_host.sh", "--gin_file=a.gin", "--gin.MODEL_DIR=/r") == (
      f"XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true {python} -m punified_jax.train "
      "--distributed=off --gin_file=a.gin --gin.MODEL_DIR=/r\n")
  assert _launch("slurm.sbatch", "--gin_file=a.gin", PUNIFIED_ROOT=th.REPO_ROOT) == (
      f"srun --kill-on-bad-exit=1 --chdir={th.REPO_ROOT} {python} -m punified_jax.train --gin_file=a.gin\n")
  tpu = _launch("tpu_pod.sh", "--gin_file=a.gin", "--gin.MODEL_DIR='gs://b/run 1'", TPU_NAME="pod", ZONE="z")
  assert tpu.startswith("gcloud compute tpus tpu-vm ssh pod --zone=z --worker=all --command=")
  assert "--distributed=auto" in tpu and "gs://b/run\\\\\\ 1" in tpu  # quoted twice: local + remote shell
  import subprocess
  missing = subprocess.run(["bash", os.path.join(th.REPO_ROOT, "launch", "tpu_pod.sh")], capture_output=True,
                           text=True, env={k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE")})
  assert missing.returncode != 0 and "set TPU_NAME" in missing.stderr


def test_two_processes_train_like_one_and_stop_together_on_sigterm(tmp_path):
  """Two processes (one CPU device each) joined on 127.0.0.1 by jax.distributed.

  1. They train with one process's losses. The reference is one process reading the same two
     input shards (data_shards=2): identical global batches by construction, so only float
     round-off of the cross-process gradient all-reduce may differ.
  2. SIGTERM to both, as a scheduler preempting the job: JAX's preemption service makes them
     agree on one step; both save that step together and exit 0.
  """
  import signal
  import subprocess
  import sys
  import time
  run_gin = th.write_run_gin(str(tmp_path / "run.gin"))
  env = th.subprocess_env(devices=1)
  port = th.free_port()
  logs = [open(tmp_path / f"worker{rank}.log", "w+") for rank in range(2)]
  workers = [subprocess.Popen(
      [sys.executable, "-m", "punified_jax.train", f"--gin_file={run_gin}", "--gin_file=gin/models/tiny.gin",
       "--gin.TRAIN_STEPS=1000000", f"--gin.MODEL_DIR={tmp_path / 'two'}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={rank}"],
      env=env, cwd=th.REPO_ROOT, stdout=logs[rank], stderr=subprocess.STDOUT, text=True)
      for rank in range(2)]
  try:
    deadline = time.time() + 240
    while "step 5/" not in (tmp_path / "worker0.log").read_text():
      assert time.time() < deadline and workers[0].poll() is None, (tmp_path / "worker0.log").read_text()[-3000:]
      time.sleep(0.5)
    for worker in workers:
      worker.send_signal(signal.SIGTERM)
    codes = [worker.wait(timeout=120) for worker in workers]
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
  outputs = [(tmp_path / f"worker{rank}.log").read_text() for rank in range(2)]
  assert codes == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
  assert "mesh {'data': 2, 'model': 1}, 2 process(es), 2 input shard(s)" in outputs[0]
  stops = [[line for line in out.splitlines() if line.startswith("stopped by preemption at step ")] for out in outputs]
  assert len(stops[0]) == len(stops[1]) == 1 and stops[0] == stops[1]
  stop_step = int(stops[0][0].split("step ")[1].split(";")[0])
  assert stop_step >= 5
  assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == [str(stop_step)]

  single = th.run_python(["-m", "punified_jax.train", f"--gin_file={run_gin}", "--gin_file=gin/models/tiny.gin",
                          f"--gin.TRAIN_STEPS={stop_step}", f"--gin.MODEL_DIR={tmp_path / 'one'}",
                          "--gin.trainer.train.data_shards=2"], env=env, cwd=th.REPO_ROOT)
  assert single.returncode == 0, single.stderr[-3000:]
  assert "1 process(es), 2 input shard(s)" in single.stdout
  two = th.read_jsonl(str(tmp_path / "two" / "metrics.jsonl"))
  one = th.read_jsonl(str(tmp_path / "one" / "metrics.jsonl"))
  assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, stop_step + 1))
  np.testing.assert_allclose([r["train/loss"] for r in two], [r["train/loss"] for r in one], rtol=1e-5)
