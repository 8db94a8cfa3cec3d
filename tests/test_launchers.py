"""The cluster launchers, run for real with fake cluster tools on PATH.

- slurm.sbatch under bash with SLURM_* variables, a fake `srun` (runs its command locally) and a
  fake `scontrol` that records its arguments: SIGTERM -> the training saves -> requeue -> exit 0.
- tpu_pod.sh with a fake `gcloud` that records every command; the recorded worker command is then
  run locally (HOME = a temporary directory, a fake .venv python) to check what a worker gets.
- gpu_single_host.sh: the CUDA install step (a recording fake python) and the "no GPU" failure
  with the real jax of this machine, which has no GPU.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")

# A stand-in for `python -m punified_jax.train`: records its arguments and environment, then
# either exits at once (FAKE_TRAIN_EXIT) or waits for SIGTERM, "saves" and exits 0 like the trainer.
FAKE_TRAIN = r'''
import json, os, signal, sys, time
out = os.environ["FAKE_TRAIN_DIR"]
with open(os.path.join(out, "argv.json"), "w") as f:
  json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
                                            if k.startswith(("PUNIFIED_", "XLA_", "SLURM_", "TF_"))}}, f)
if "FAKE_TRAIN_EXIT" in os.environ:
  sys.exit(int(os.environ["FAKE_TRAIN_EXIT"]))
signals = []
signal.signal(signal.SIGTERM, lambda signum, frame: signals.append(signum))
open(os.path.join(out, "ready"), "w").close()
deadline = time.time() + 60
while not signals and time.time() < deadline:
  time.sleep(0.05)
time.sleep(0.3)  # "finishing the step and saving"
with open(os.path.join(out, "saved"), "w") as f:
  f.write(f"saved after {len(signals)} SIGTERM(s)")
sys.exit(0 if signals else 9)
'''


def _executable(path, text):
  with open(path, "w", encoding="utf-8") as handle:
    handle.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
  return str(path)


@pytest.fixture()
def fake_cluster(tmp_path):
  """bin/ with fake srun, scontrol and gcloud; a fake python; their records under tmp_path."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  records = tmp_path / "records"
  records.mkdir()
  # srun: drop its options, run the command here (as one task), like `srun --chdir=D cmd ...`.
  _executable(bin_dir / "srun", "#!/usr/bin/env bash\n"
              f"echo \"$*\" >> {records}/srun.log\n"
              "while [[ $# -gt 0 && $1 == --* ]]; do [[ $1 == --chdir=* ]] && cd \"${1#--chdir=}\"; shift; done\n"
              "exec \"$@\"\n")
  _executable(bin_dir / "scontrol", "#!/usr/bin/env bash\n"
              f"echo \"$*\" >> {records}/scontrol.log\n"
              "exit ${FAKE_SCONTROL_EXIT:-0}\n")
  _executable(bin_dir / "gcloud", f"#!{sys.executable}\n"
              "import json, sys\n"
              f"open({str(records / 'gcloud.jsonl')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
  fake_train = tmp_path / "fake_train.py"
  fake_train.write_text(FAKE_TRAIN, encoding="utf-8")
  python = _executable(tmp_path / "fake_python", f"#!/bin/sh\nexec {sys.executable} {fake_train} \"$@\"\n")
  env = {key: value for key, value in os.environ.items()
         if not key.startswith(("PUNIFIED_", "SLURM_", "XLA_", "TPU_"))}
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_TRAIN_DIR=str(records), PUNIFIED_PYTHON=python,
             PUNIFIED_ROOT=REPO)
  return {"env": env, "records": records, "tmp": tmp_path}


def _read(path):
  return path.read_text(encoding="utf-8") if path.exists() else ""


# ------------------------------------------------------------------------------------------------
# SLURM
# ------------------------------------------------------------------------------------------------


def _start_sbatch(fake_cluster, *args, **env):
  full_env = {**fake_cluster["env"], "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
              "SLURM_SUBMIT_DIR": REPO, **env}
  return subprocess.Popen(["bash", os.path.join(LAUNCH, "slurm.sbatch"), *args], env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(path, process, timeout=60):
  deadline = time.time() + timeout
  while not path.exists():
    assert process.poll() is None, process.communicate()[0]
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def test_sbatch_asks_for_the_signal_early_and_to_be_requeueable():
  with open(os.path.join(LAUNCH, "slurm.sbatch"), encoding="utf-8") as handle:
    directives = [line.strip() for line in handle if line.startswith("#SBATCH")]
  assert "#SBATCH --signal=B:TERM@300" in directives  # to the batch shell, 5 minutes before the limit
  assert "#SBATCH --requeue" in directives and "#SBATCH --open-mode=append" in directives


@pytest.mark.parametrize("delivery", ["batch_shell", "whole_job"])
def test_sigterm_makes_the_job_save_then_requeue_itself(fake_cluster, delivery):
  """batch_shell: the time-limit warning (--signal=B:TERM) reaches only the batch shell, which
  forwards it. whole_job: preemption signals every process of the job at once."""
  process = _start_sbatch(fake_cluster, "--gin_file=gin/runs/finetune_joint.gin", "--gin.MODEL_DIR=/shared/r 1")
  records = fake_cluster["records"]
  _wait_for(records / "ready", process)
  if delivery == "batch_shell":
    process.send_signal(signal.SIGTERM)
  else:
    os.killpg(process.pid, signal.SIGTERM)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == 0, output
  assert _read(records / "saved").startswith("saved after ")  # the training got SIGTERM and saved first
  assert _read(records / "scontrol.log") == "requeue 4242\n"
  assert "SIGTERM received: asking the training to save and stop" in output
  assert "requeued job 4242: it resumes from its checkpoint when it starts again" in output
  ran = json.loads(_read(records / "argv.json"))
  assert ran["argv"] == ["-m", "punified_jax.train", "--gin_file=gin/runs/finetune_joint.gin",
                         "--gin.MODEL_DIR=/shared/r 1"]
  assert ran["env"]["SLURM_JOB_ID"] == "4242"  # the trainer finds the cluster from SLURM's variables
  assert _read(records / "srun.log").startswith(f"--kill-on-bad-exit=1 --chdir={REPO} ")


@pytest.mark.parametrize("exit_code", [0, 3])
def test_a_job_that_ends_by_itself_is_not_requeued(fake_cluster, exit_code):
  process = _start_sbatch(fake_cluster, "--gin_file=a.gin", FAKE_TRAIN_EXIT=str(exit_code))
  output, _ = process.communicate(timeout=60)
  assert process.returncode == exit_code, output
  assert f"training exited with status {exit_code}" in output
  assert not (fake_cluster["records"] / "scontrol.log").exists()


def test_a_failed_requeue_or_too_many_requeues_fail_the_job(fake_cluster):
  process = _start_sbatch(fake_cluster, "--gin_file=a.gin", FAKE_SCONTROL_EXIT="1")
  _wait_for(fake_cluster["records"] / "ready", process)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == 1 and "'scontrol requeue 4242' failed; resubmit this script to resume" in output
  (fake_cluster["records"] / "ready").unlink()
  process = _start_sbatch(fake_cluster, "--gin_file=a.gin", SLURM_RESTART_COUNT="3", PUNIFIED_MAX_REQUEUES="3")
  _wait_for(fake_cluster["records"] / "ready", process)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == 1 and "requeued 3 times already (PUNIFIED_MAX_REQUEUES); not requeueing" in output
  assert _read(fake_cluster["records"] / "scontrol.log") == "requeue 4242\n"  # only the first job asked


# ------------------------------------------------------------------------------------------------
# TPU pod
# ------------------------------------------------------------------------------------------------


def _tpu(fake_cluster, *args, **env):
  full_env = {**{key: value for key, value in fake_cluster["env"].items() if key != "TF_CPP_MIN_LOG_LEVEL"},
              "TPU_NAME": "pod", "ZONE": "us-central2-b", "PROJECT": "proj", **env}
  full_env.pop("PUNIFIED_PYTHON")
  full_env.pop("PUNIFIED_ROOT")
  result = subprocess.run(["bash", os.path.join(LAUNCH, "tpu_pod.sh"), *args], env=full_env, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  calls = [json.loads(line) for line in _read(fake_cluster["records"] / "gcloud.jsonl").splitlines()]
  (fake_cluster["records"] / "gcloud.jsonl").unlink(missing_ok=True)
  return result, calls


def _ssh_command(call):
  assert call[:6] == ["compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=us-central2-b"]
  assert call[6:8] == ["--project=proj", "--worker=all"] and call[8].startswith("--command=")
  return call[8][len("--command="):]


def test_tpu_setup_installs_on_the_workers_and_the_run_gets_every_setting(fake_cluster):
  tmp = fake_cluster["tmp"]
  settings = {"PUNIFIED_RAW_DIR": "gs://bucket/data/raw", "PUNIFIED_VOCAB": "gs://bucket/char.model",
              "PUNIFIED_DATASETS": "resume,msra", "PUNIFIED_MIXTURE_RATE": "proportional",
              "XLA_FLAGS": "--xla_dump_to=/tmp/x y"}
  args = ["--gin_file=gin/runs/finetune_joint.gin", "--gin.MODEL_DIR=gs://bucket/runs/joint 1",
          "--gin.EVAL_PERIOD=2000"]
  result, calls = _tpu(fake_cluster, *args, SETUP="1", **settings)
  scp, setup, run = calls
  # 1) The code: this checkout's HEAD as an archive (no .venv), copied to every worker.
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp[5:] == [
      "pod:~/punified-jax.tar.gz", "--zone=us-central2-b", "--project=proj", "--worker=all"]
  listing = subprocess.run(["tar", "-tzf", scp[4]], capture_output=True, text=True, check=True).stdout.split()
  assert "tools/env/venv.sh" in listing and "requirements.txt" in listing and not any(".venv" in n for n in listing)
  # 2) The environment, built on each worker: Python 3.12 if missing, venv.sh, jax[tpu] at our pin.
  setup = _ssh_command(setup)
  assert "command -v python3.12 >/dev/null || (sudo apt-get update" in setup
  assert setup.endswith("tar -xzf ~/punified-jax.tar.gz -C ~/punified-jax && cd ~/punified-jax && bash "
                        "tools/env/venv.sh && .venv/bin/pip install --quiet jax\\[tpu\\]==0.12.0.1")
  # 3) The run command, executed here as a worker would (HOME = a fresh directory).
  remote = _ssh_command(run)
  home = tmp / "worker_home"
  venv_bin = home / "punified-jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  worker_records = tmp / "worker_records"
  worker_records.mkdir()
  _executable(venv_bin / "python", f"#!/bin/sh\nFAKE_TRAIN_DIR={worker_records} exec {sys.executable} "
              f"{tmp / 'fake_train.py'} \"$@\"\n")
  worker_env = {"PATH": os.environ["PATH"], "HOME": str(home)}  # nothing of this shell's settings
  started = subprocess.run(["bash", "-c", remote], env=worker_env, capture_output=True, text=True, timeout=30)
  assert started.returncode == 0, started.stderr
  assert "started pid" in started.stdout  # returned while the training still runs: detached
  _wait_for_file(worker_records / "ready")
  ran = json.loads(_read(worker_records / "argv.json"))
  assert ran["argv"] == ["-m", "punified_jax.train", "--distributed=auto", *args]
  assert {key: ran["env"].get(key) for key in settings} == settings
  assert ran["env"]["TF_CPP_MIN_LOG_LEVEL"] == "2"
  logs = home / "punified-jax" / "logs"
  (pid_file,) = logs.glob("train-*.pid")
  assert (logs / pid_file.name.replace(".pid", ".log")).exists()
  pid = int(pid_file.read_text())
  assert os.getsid(pid) == pid  # its own session (setsid): a closed ssh session does not stop it
  # 4) ACTION=stop sends SIGTERM to every worker's run; the trainer then saves and exits.
  _, (stop,) = _tpu(fake_cluster, ACTION="stop")
  stopped = subprocess.run(["bash", "-c", _ssh_command(stop)], env=worker_env, capture_output=True, text=True,
                           timeout=30)
  assert stopped.returncode == 0, stopped.stderr
  _wait_for_file(worker_records / "saved")


def _wait_for_file(path, timeout=30):
  deadline = time.time() + timeout
  while not path.exists():
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def test_tpu_setup_from_a_git_url_clones_on_the_workers(fake_cluster):
  _, calls = _tpu(fake_cluster, "--gin_file=a.gin", SETUP="1", PUNIFIED_REPO_URL="https://example.org/p.git",
                  PUNIFIED_REPO_REF="v1.2")
  setup, run = (_ssh_command(call) for call in calls)  # no scp
  assert ("(test -d ~/punified-jax/.git || git clone --quiet https://example.org/p.git ~/punified-jax) && cd "
          "~/punified-jax && git fetch --quiet origin && git checkout --quiet v1.2 && bash tools/env/venv.sh") in setup
  assert "PUNIFIED_REPO_URL" not in run and "setsid nohup .venv/bin/python -m punified_jax.train" in run


# ------------------------------------------------------------------------------------------------
# One GPU host
# ------------------------------------------------------------------------------------------------


def test_gpu_launcher_installs_the_cuda_jax_then_refuses_to_train_without_a_gpu(fake_cluster, tmp_path):
  """The install step goes through a recording python; the GPU check runs the real jax of this
  machine (no GPU): the launcher must stop before training."""
  calls = tmp_path / "python_calls.txt"
  python = _executable(tmp_path / "recording_python", "#!/bin/sh\n"
                       f"echo \"$*\" >> {calls}\n"
                       "if [ \"$1\" = -m ] && [ \"$2\" = pip ]; then exit 0; fi\n"
                       f"exec {sys.executable} \"$@\"\n")
  env = {**fake_cluster["env"], "PUNIFIED_PYTHON": python, "JAX_PLATFORMS": ""}
  result = subprocess.run(["bash", os.path.join(LAUNCH, "gpu_single_host.sh"), "--install-cuda", "--gin_file=a.gin"],
                          env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stdout + result.stderr
  recorded = _read(calls)
  assert recorded.splitlines()[:2] == ["-m pip install --quiet --disable-pip-version-check jax[cuda13]==0.12.0.1",
                                       "-c "]  # then the check's source (a multi-line -c argument)
  assert 'jax.devices("gpu")' in recorded and "punified_jax.train" not in recorded  # training never started
  assert "error: jax 0.12.0.1 sees no GPU (" in result.stderr and "default backend: cpu" in result.stderr
  assert "error: not training on the CPU by accident." in result.stderr


def test_gpu_launcher_dry_run_shows_the_install_and_the_command(fake_cluster):
  env = {**fake_cluster["env"], "PUNIFIED_DRY_RUN": "1", "PUNIFIED_JAX_CUDA": "cuda12"}
  result = subprocess.run(["bash", os.path.join(LAUNCH, "gpu_single_host.sh"), "--install-cuda", "--gin_file=a.gin"],
                          env=env, capture_output=True, text=True, timeout=30)
  python = env["PUNIFIED_PYTHON"]
  assert result.returncode == 0 and result.stdout.splitlines() == [
      f"{python} -m pip install --quiet --disable-pip-version-check jax[cuda12]==0.12.0.1",
      f"XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true {python} -m punified_jax.train --distributed=off "
      "--gin_file=a.gin"]
