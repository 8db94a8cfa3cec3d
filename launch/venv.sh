#!/usr/bin/env bash
# Makes sure .venv/ (Python 3.12, pinned requirements, this package in editable mode) exists and
# matches requirements.txt. Sourced by the other scripts; safe to run on its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

find_python312() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  local c
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$c"; return
    fi
  done
  echo "error: Python 3.12 not found; set PYTHON=/path/to/python3.12" >&2
  return 1
}

stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1; }

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[venv] creating $VENV" >&2
  "$(find_python312)" -m venv "$VENV"
fi
if [[ "$(cat "$VENV/.punified_stamp" 2>/dev/null)" != "$(stamp_of)" ]]; then
  echo "[venv] installing requirements (about a minute on a fresh machine)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  # The repository root on the venv's path (a .pth file): `punified_jax` and `tasks` import from
  # anywhere, and new modules need no reinstall (an editable install maps packages once).
  "$VENV/bin/python" -c 'import site, sys; open(site.getsitepackages()[0] + "/punified_jax_repo.pth", "w").write(sys.argv[1] + "\n")' "$ROOT"
  stamp_of > "$VENV/.punified_stamp"
fi
