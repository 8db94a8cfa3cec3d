#!/usr/bin/env bash
# Runs the test suite (offline, CPU); arguments go to pytest. Creates .venv/ first when it is
# missing. `bash launch/test.sh` (the README's command) runs this.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$ROOT/tools/env/venv.sh"
cd "$ROOT"
if [ $# -eq 0 ]; then
  # tests/test_ray.py runs Ray inside the test process; a Ray object freed by the garbage
  # collector after ray.shutdown() can crash that process later (ray-project/ray#31145; the
  # whole suite died with a segmentation fault a few modules after it, twice at the same test).
  # So it runs in a process of its own, after the rest.
  .venv/bin/python -m pytest -q --ignore=tests/test_ray.py
  exec .venv/bin/python -m pytest -q tests/test_ray.py
fi
exec .venv/bin/python -m pytest -q "$@"
