#!/usr/bin/env bash
# Runs the test suite (offline, CPU); arguments go to pytest. Creates .venv/ first when it is
# missing. `bash launch/test.sh` (the README's command) runs this.
#
# Without arguments the suite runs as PUNIFIED_TEST_GROUPS (default 4) pytest processes, each
# over a consecutive group of the test modules, every group run even when one fails; the exit
# status is that of the first failing group. Why: the whole suite in ONE process died late in
# the run three times (two segmentation faults inside jax's compilation_cache while loading a
# compiled program, at the same test; once silently, at another test), while every module
# passes in a process of its own or a shorter run. What state builds up in a process that
# compiles and frees ~1000 XLA programs was not established; a process per group keeps it
# smaller. With arguments: one pytest over what they select.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$ROOT/tools/env/venv.sh"
cd "$ROOT"
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
mapfile -t MODULES < <(ls tests/test_*.py | LC_ALL=C sort)
GROUPS_WANTED=${PUNIFIED_TEST_GROUPS:-4}
PER_GROUP=$(( (${#MODULES[@]} + GROUPS_WANTED - 1) / GROUPS_WANTED ))
STATUS=0
for ((start = 0; start < ${#MODULES[@]}; start += PER_GROUP)); do
  GROUP=("${MODULES[@]:start:PER_GROUP}")
  echo "== test group $((start / PER_GROUP + 1)): ${GROUP[0]} .. ${GROUP[-1]} (${#GROUP[@]} modules)"
  CODE=0
  .venv/bin/python -m pytest -q "${GROUP[@]}" || CODE=$?
  if [ "$CODE" -ne 0 ]; then
    echo "== test group $((start / PER_GROUP + 1)) failed (exit $CODE)"
    [ "$STATUS" -ne 0 ] || STATUS=$CODE
  fi
done
exit "$STATUS"
