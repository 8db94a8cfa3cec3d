#!/usr/bin/env bash
# The main job: adaptation -> joint fine-tuning -> per-dataset evaluation -> report -> sample
# on-demand extractions. Without --raw_dir DIR it asks for the built-in synthetic corpus by name
# (PUNIFIED_RAW_DIR=builtin, printed as "data: ..."); with it, the paper's recipe (see README).
# `--split test` reports the best checkpoint's test-split F1. Creates .venv/ first when it is missing. Any option of
# `python -m punified_jax main --help` can be appended.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/env/venv.sh"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
exec .venv/bin/python -m punified_jax main "$@"
