#!/usr/bin/env bash
# Single host, all local GPUs: ONE process drives every GPU of the machine (JAX's
# single-controller model), so no coordinator is needed. Arguments go to punified_jax.train.
#
#   bash launch/gpu_single_host.sh --gin_file=gin/runs/finetune_joint.gin \
#     --gin_file=gin/models/base.gin --gin_file=gin/partitioning/fsdp.gin --gin.MODEL_DIR=/runs/joint
#
# Environment: CUDA_VISIBLE_DEVICES picks the GPUs; XLA_FLAGS replaces the defaults below;
# PUNIFIED_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PUNIFIED_PYTHON:-$ROOT/.venv/bin/python}

# Overlap collectives with compute (XLA's latency-hiding scheduler; the usual first GPU flag).
export XLA_FLAGS=${XLA_FLAGS:---xla_gpu_enable_latency_hiding_scheduler=true}
# Let JAX take 90% of each GPU up front (default 75%); the input pipeline runs on the CPU.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

command=("$PYTHON" -m punified_jax.train --distributed=off "$@")
if [[ -n "${PUNIFIED_DRY_RUN:-}" ]]; then
  echo "XLA_FLAGS=$XLA_FLAGS ${command[*]}"
  exit 0
fi
[[ -x "$PYTHON" ]] || bash "$ROOT/launch/venv.sh"
cd "$ROOT"
exec "${command[@]}"
