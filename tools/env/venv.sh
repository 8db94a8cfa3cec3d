#!/usr/bin/env bash
# Makes sure .venv/ (Python 3.12, pinned requirements, this repository on its path) exists and
# matches requirements.txt. Run by launch/main.sh, launch/test.sh and the cluster launchers (on
# each node); safe to run on its own. PYTHON=/path/to/python3.12 chooses the interpreter.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$ROOT/tools/env/common.sh"
VENV="$ROOT/.venv"

stamp=$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
make_venv "$VENV" 3.12 PYTHON
if ! is_current "$VENV" "$stamp"; then
  echo "[venv] installing requirements (about a minute on a fresh machine)" >&2
  pip_install "$VENV" -r "$ROOT/requirements.txt"
  # The repository root on the venv's path (a .pth file): `punified_jax` and `tasks` import from
  # anywhere, and new modules need no reinstall (an editable install maps packages once).
  "$VENV/bin/python" -c 'import site, sys; open(site.getsitepackages()[0] + "/punified_jax_repo.pth", "w").write(sys.argv[1] + "\n")' "$ROOT"
  mark_current "$VENV" "$stamp"
fi
