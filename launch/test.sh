#!/usr/bin/env bash
# Runs the test suite (offline, CPU). Creates .venv/ first when it is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/launch/venv.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q "$@"
