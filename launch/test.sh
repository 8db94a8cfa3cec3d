#!/usr/bin/env bash
# The README's test command: runs tools/env/test.sh (the suite, offline, CPU; creates .venv/ first
# when it is missing). Arguments go to pytest.
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tools/env/test.sh" "$@"
