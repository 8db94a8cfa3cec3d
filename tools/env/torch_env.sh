#!/usr/bin/env bash
# Creates .venv-torch/: the comparison stack (PyTorch + Hugging Face transformers) that the
# checkpoint-interop tests drive through a subprocess (tools/hf_check.py), and that
# tools/make_hf_fixtures.py needs to regenerate tests/fixtures/hf/.
#
# Why a second venv: the project runs on Python 3.12, but the CPU build of torch 2.13.0 we
# compare against is a cp311 wheel (PyPI's cp312 torch is the multi-GB CUDA build). So this env
# is Python 3.11 and holds only what the comparison needs.
#
#   bash tools/env/torch_env.sh            # idempotent: reinstalls only when the pins change
#   PYTHON311=/path/to/python3.11 bash tools/env/torch_env.sh
#
# Tests find the interpreter at .venv-torch/bin/python, or at $PUNIFIED_TORCH_PYTHON.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$ROOT/tools/env/common.sh"
VENV="$ROOT/.venv-torch"

# The pins, verified together (torch CPU wheel, transformers 5.x with its T5/MT5 and
# BertTokenizer). sentencepiece + protobuf let transformers read an spiece.model.
PINS=(
  "torch==2.13.0"
  "transformers==5.17.0"
  "safetensors==0.8.0"
  "sentencepiece==0.2.3"
  "protobuf==7.36.2"
  "numpy==2.4.6"  # numpy 2.5 dropped Python 3.11
)

stamp="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)"
if is_current "$VENV" "$stamp"; then
  exit 0
fi
make_venv "$VENV" 3.11 PYTHON311
echo "[torch-env] installing ${PINS[*]}" >&2
# --only-binary: never build torch or tokenizers from source on a machine without the wheels.
pip_install "$VENV" --only-binary=:all: "${PINS[@]}"
"$VENV/bin/python" -c 'import torch, transformers, safetensors; print("[torch-env] torch", torch.__version__, "transformers", transformers.__version__)' >&2
mark_current "$VENV" "$stamp"
