#!/usr/bin/env bash
# Single host, all local GPUs: ONE process drives every GPU of the machine (JAX's
# single-controller model), so no coordinator is needed. Arguments go to punified_jax.train.
#
#   bash launch/gpu_single_host.sh --install-cuda --gin_file=gin/runs/finetune_joint.gin \
#     --gin_file=gin/models/base.gin --gin_file=gin/partitioning/fsdp.gin --gin.MODEL_DIR=/runs/joint
#
# --install-cuda   (first argument) installs the CUDA build of the pinned jax into .venv:
#                  jax[cuda13]==<the jax pin of requirements.txt> (PUNIFIED_JAX_CUDA=cuda12 for
#                  older drivers). `tools/env/venv.sh` alone installs the CPU build.
# Before training, the script checks that jax sees a GPU and stops with an error otherwise (so a
# missing CUDA build or driver never trains silently on the CPU).
#
# Environment: CUDA_VISIBLE_DEVICES picks the GPUs; XLA_FLAGS replaces the defaults below;
# PUNIFIED_PYTHON another interpreter; PUNIFIED_DRY_RUN=1 prints the commands instead.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PUNIFIED_PYTHON:-$ROOT/.venv/bin/python}

install_cuda=""
if [[ "${1:-}" == "--install-cuda" ]]; then
  install_cuda=1
  shift
fi
jax_version=$(sed -n 's/^jax==\([^ ;#]*\).*/\1/p' "$ROOT/requirements.txt")
[[ -n "$jax_version" ]] || { echo "error: no 'jax==' pin in $ROOT/requirements.txt" >&2; exit 2; }
cuda_requirement="jax[${PUNIFIED_JAX_CUDA:-cuda13}]==$jax_version"

# Overlap collectives with compute (XLA's latency-hiding scheduler; the usual first GPU flag).
export XLA_FLAGS=${XLA_FLAGS:---xla_gpu_enable_latency_hiding_scheduler=true}
# Let JAX take 90% of each GPU up front (default 75%); the input pipeline runs on the CPU.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

install=("$PYTHON" -m pip install --quiet --disable-pip-version-check "$cuda_requirement")
command=("$PYTHON" -m punified_jax.train --distributed=off "$@")
if [[ -n "${PUNIFIED_DRY_RUN:-}" ]]; then
  [[ -n "$install_cuda" ]] && echo "${install[*]}"
  echo "XLA_FLAGS=$XLA_FLAGS ${command[*]}"
  exit 0
fi
[[ -x "$PYTHON" ]] || bash "$ROOT/tools/env/venv.sh"
if [[ -n "$install_cuda" ]]; then
  echo "[gpu_single_host] installing $cuda_requirement" >&2
  "${install[@]}"
fi

# jax.devices() falls back to the CPU when the CUDA plugin or the driver is missing: refuse that.
if ! "$PYTHON" -c '
import sys
import jax
try:
  gpus = jax.devices("gpu")
except RuntimeError as error:
  sys.exit(f"error: jax {jax.__version__} sees no GPU ({str(error).splitlines()[0]}); default backend: "
           f"{jax.default_backend()}, devices: {jax.devices()}")
print(f"[gpu_single_host] jax {jax.__version__}: {len(gpus)} GPU(s): {gpus}", file=sys.stderr)
'; then
  echo "error: not training on the CPU by accident. Install the CUDA build of jax with" \
       "'bash launch/gpu_single_host.sh --install-cuda ...' ($cuda_requirement), check the NVIDIA" \
       "driver (nvidia-smi) and CUDA_VISIBLE_DEVICES (now '${CUDA_VISIBLE_DEVICES-unset}')." >&2
  exit 2
fi
cd "$ROOT"
exec "${command[@]}"
