#!/usr/bin/env bash
# TPU-VM pod slice: the same training process on every worker (`--worker=all`); each TPU VM is one
# JAX process and `--distributed=auto` lets jax.distributed.initialize() find the others through
# the TPU metadata. Arguments go to punified_jax.train.
#
#   export PUNIFIED_RAW_DIR=gs://my-bucket/data/raw PUNIFIED_VOCAB=gs://my-bucket/data/char.model
#   SETUP=1 TPU_NAME=my-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh \
#     --gin_file=gin/runs/finetune_joint.gin --gin_file=gin/models/base.gin \
#     --gin_file=gin/partitioning/2d.gin --gin.MODEL_DIR=gs://my-bucket/runs/joint
#
# What reaches the workers:
# - the code (SETUP=1): `git archive` of this checkout's HEAD (committed files only: commit
#   first), copied to every worker and unpacked into ~/$REMOTE_DIR; or, with
#   PUNIFIED_REPO_URL=<git url> [PUNIFIED_REPO_REF=<commit/branch>, default this HEAD], a
#   `git clone` on each worker. No local .venv is copied.
# - the environment (SETUP=1): on each worker `tools/env/venv.sh` builds ~/$REMOTE_DIR/.venv from
#   requirements.txt with Python 3.12 (installed from the deadsnakes PPA with apt when the image
#   has no python3.12, e.g. Ubuntu 22.04 TPU images ship 3.10), then jax[tpu] at the jax pin of
#   requirements.txt (PUNIFIED_JAX_TPU overrides the requirement).
# - the settings: every PUNIFIED_* variable of this shell (data source, vocabulary, datasets,
#   mixture rates, ...), plus JAX_*, XLA_FLAGS, LIBTPU_INIT_ARGS and TF_CPP_MIN_LOG_LEVEL when set,
#   and all the arguments of this script. Use gs:// paths: workers share no disk.
# - the run: detached (setsid nohup), so closing this terminal does not stop it; each worker logs
#   to ~/$REMOTE_DIR/logs/<RUN_NAME>-<hostname>.log and writes its pid next to it.
#   `ACTION=stop` sends SIGTERM to those pids (the run saves at the same step on every host and
#   exits); `ACTION=logs` prints the last lines of every worker's log.
#
# Variables: TPU_NAME, ZONE (required), PROJECT, REMOTE_DIR (default punified-jax), RUN_NAME
# (default train), SETUP, ACTION (run|stop|logs), PUNIFIED_DRY_RUN=1 prints the gcloud commands.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU zone}"
REMOTE_DIR=${REMOTE_DIR:-punified-jax}
RUN_NAME=${RUN_NAME:-train}
ACTION=${ACTION:-run}
PROJECT_FLAG=()
[[ -n "${PROJECT:-}" ]] && PROJECT_FLAG=(--project="$PROJECT")

run() {
  if [[ -n "${PUNIFIED_DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
on_workers() {  # one shell command on every worker
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$1"
}
q() { printf '%q' "$1"; }
log_base="~/$REMOTE_DIR/logs/$RUN_NAME-\$(hostname)"

case "$ACTION" in
  run) ;;
  stop) on_workers "kill -TERM \$(cat $log_base.pid)"; exit 0 ;;
  logs) on_workers "tail -n 20 $log_base.log"; exit 0 ;;
  *) echo "error: ACTION=$ACTION: expected run, stop or logs" >&2; exit 2 ;;
esac

if [[ -n "${SETUP:-}" ]]; then
  jax_version=$(sed -n 's/^jax==\([^ ;#]*\).*/\1/p' "$ROOT/requirements.txt")
  jax_tpu=${PUNIFIED_JAX_TPU:-jax[tpu]==$jax_version}
  if [[ -n "${PUNIFIED_REPO_URL:-}" ]]; then
    ref=${PUNIFIED_REPO_REF:-$(git -C "$ROOT" rev-parse HEAD)}
    fetch="(test -d ~/$REMOTE_DIR/.git || git clone --quiet $(q "$PUNIFIED_REPO_URL") ~/$REMOTE_DIR)"
    fetch+=" && cd ~/$REMOTE_DIR && git fetch --quiet origin && git checkout --quiet $(q "$ref")"
  else
    if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
      echo "warning: uncommitted changes in $ROOT are not sent (git archive HEAD)" >&2
    fi
    archive=$(mktemp -d)/punified-jax.tar.gz
    run git -C "$ROOT" archive --format=tar.gz -o "$archive" HEAD
    run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:~/punified-jax.tar.gz" --zone="$ZONE" \
      "${PROJECT_FLAG[@]}" --worker=all
    fetch="mkdir -p ~/$REMOTE_DIR && tar -xzf ~/punified-jax.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR"
  fi
  python312="command -v python3.12 >/dev/null || (sudo apt-get update -qq && sudo apt-get install -y -qq"
  python312+=" software-properties-common && sudo add-apt-repository -y ppa:deadsnakes/ppa"
  python312+=" && sudo apt-get install -y -qq python3.12 python3.12-venv)"
  on_workers "set -e; $python312; $fetch && bash tools/env/venv.sh && .venv/bin/pip install --quiet $(q "$jax_tpu")"
fi

# The settings of this shell, as `export NAME=value;` for the remote shell (launcher-only ones dropped).
exports=""
while IFS= read -r name; do
  case "$name" in
    PUNIFIED_DRY_RUN|PUNIFIED_REPO_URL|PUNIFIED_REPO_REF|PUNIFIED_JAX_TPU|PUNIFIED_PYTHON|PUNIFIED_ROOT) continue ;;
  esac
  exports+="export $name=$(q "${!name}"); "
done < <(compgen -e | grep -E '^(PUNIFIED_|JAX_|XLA_FLAGS$|LIBTPU_INIT_ARGS$|TF_CPP_MIN_LOG_LEVEL$)' | sort)
[[ "$exports" == *"TF_CPP_MIN_LOG_LEVEL="* ]] || exports+="export TF_CPP_MIN_LOG_LEVEL=2; "

arguments=$(printf '%q ' "$@")
remote="cd ~/$REMOTE_DIR && mkdir -p logs && ${exports}setsid nohup .venv/bin/python -m punified_jax.train"
remote+=" --distributed=auto $arguments> $log_base.log 2>&1 < /dev/null & echo \$! > $log_base.pid"
remote+=" && echo \"\$(hostname): started pid \$(cat $log_base.pid), log $log_base.log\""
on_workers "$remote"
if [[ -z "${PUNIFIED_DRY_RUN:-}" ]]; then
  echo "running detached on every worker of $TPU_NAME; follow with: ACTION=logs TPU_NAME=$TPU_NAME ZONE=$ZONE bash $0"
fi
