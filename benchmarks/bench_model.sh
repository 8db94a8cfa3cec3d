#!/usr/bin/env bash
# The weights of the decoding and serving benchmarks (BENCHMARKS.md sections 2 and Serving), made
# by one command on a machine that has none: a `mini` model that knows the types of the three
# datasets those benchmarks decode (CLUENER, CCKS2021, Resume).  It runs benchmarks/quality.py's
# vocab, adapt and joint_adapt stages with those datasets, so it resumes where it stopped (rerun
# the same command), then exports the HF copy that serve_load.py's HF server loads.
#
#   bash benchmarks/bench_model.sh RAW_DIR OUT_DIR [ADAPT_STEPS [JOINT_STEPS]]
#
# RAW_DIR: the real downloads (../shared/data/raw), read only.  Results: OUT_DIR/runs/joint_adapt
# (the model directory the benchmarks take as --model_dir) and OUT_DIR/hf (--hf_dir).  Defaults
# 500 adaptation and 1500 joint steps: about 45 min on 2 cores.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -lt 2 ]]; then
  sed -n 2,12p "${BASH_SOURCE[0]}" >&2
  exit 2
fi
RAW_DIR=$(cd "$1" && pwd)
OUT_DIR=$(mkdir -p "$2" && cd "$2" && pwd)
ADAPT_STEPS=${3:-500}
JOINT_STEPS=${4:-1500}
cd "$ROOT"
bash tools/env/venv.sh
.venv/bin/python benchmarks/quality.py --data_dir "$RAW_DIR" --work_dir "$OUT_DIR" \
  --datasets cluener,ccks2021,resume --adapt_steps "$ADAPT_STEPS" --joint_steps "$JOINT_STEPS" \
  --only vocab,adapt,joint_adapt --no_wait_for_lock \
  --results_json "$OUT_DIR/quality.json"
if [[ ! -f "$OUT_DIR/hf/config.json" ]]; then
  .venv/bin/python -m punified_jax export --model_dir "$OUT_DIR/runs/joint_adapt" \
    --output "$OUT_DIR/hf"
fi
echo "[bench_model] model: $OUT_DIR/runs/joint_adapt  HF copy: $OUT_DIR/hf" >&2
