#!/usr/bin/env bash
# Runs the test suite (offline, CPU); arguments go to pytest. Creates .venv/ first when it is
# missing. `bash launch/test.sh` (the README's command) runs this.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$ROOT/tools/env/venv.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q "$@"
