#!/usr/bin/env bash
# TPU-VM pod slice: run the same command on every worker (`--worker=all`); each TPU VM is one JAX
# process and `--distributed=auto` lets jax.distributed.initialize() find the others through the
# TPU metadata. Arguments go to punified_jax.train.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh \
#     --gin_file=gin/runs/finetune_joint.gin --gin_file=gin/models/base.gin \
#     --gin_file=gin/partitioning/2d.gin --gin.MODEL_DIR=gs://my-bucket/runs/joint
#
# SETUP=1 first copies this checkout to every worker (~/punified-jax) and installs it with
# jax[tpu] (PUNIFIED_JAX_TPU pins the extra). MODEL_DIR must be shared (a gs:// bucket).
# PUNIFIED_DRY_RUN=1 prints the gcloud commands instead of running them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU zone}"
REMOTE_DIR=${REMOTE_DIR:-punified-jax}
PROJECT_FLAG=()
[[ -n "${PROJECT:-}" ]] && PROJECT_FLAG=(--project="$PROJECT")

run() {
  if [[ -n "${PUNIFIED_DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [[ -n "${SETUP:-}" ]]; then
  run gcloud compute tpus tpu-vm scp --recurse "$ROOT" "$TPU_NAME:~/$REMOTE_DIR" --zone="$ZONE" \
    "${PROJECT_FLAG[@]}" --worker=all
  setup="cd ~/$REMOTE_DIR && bash launch/venv.sh && .venv/bin/pip install -q '${PUNIFIED_JAX_TPU:-jax[tpu]==0.12.0.1}'"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$setup"
fi

# Quote every argument for the remote shell.
arguments=$(printf '%q ' "$@")
remote="cd ~/$REMOTE_DIR && TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -m punified_jax.train --distributed=auto $arguments"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$remote"
