# Shared by the environment scripts of tools/env/ (sourced, not run): finding an interpreter of
# one Python version, a stamp of what a venv was built from, a quiet pip install.
# Needs ROOT (the repository root) set by the caller.

# find_python MAJOR.MINOR VARIABLE: the path of a Python MAJOR.MINOR interpreter. $VARIABLE (e.g.
# PYTHON) wins when set; then PATH, pyenv's versions, /usr/bin and /usr/local/bin.
find_python() {
  local version=$1 variable=$2 c
  if [[ -n "${!variable:-}" ]]; then echo "${!variable}"; return; fi
  for c in "python$version" "$HOME"/.pyenv/versions/"$version"*/bin/"python$version" \
      "/usr/bin/python$version" "/usr/local/bin/python$version"; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c \
        "import sys; assert sys.version_info[:2] == tuple(map(int, '$version'.split('.')))" 2>/dev/null; then
      command -v "$c"; return
    fi
  done
  echo "error: Python $version not found; set $variable=/path/to/python$version" >&2
  return 1
}

# make_venv VENV MAJOR.MINOR VARIABLE: creates VENV with that Python unless it exists.
make_venv() {
  local venv=$1 version=$2 variable=$3
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "[env] creating $venv" >&2
    "$(find_python "$version" "$variable")" -m venv "$venv"
  fi
}

# is_current VENV STAMP: true when VENV was last built from STAMP (a sha256 of its inputs).
is_current() { [[ -x "$1/bin/python" && "$(cat "$1/.punified_stamp" 2>/dev/null)" == "$2" ]]; }
mark_current() { echo "$2" > "$1/.punified_stamp"; }

# pip_install VENV ARGS...: a quiet pip install into VENV (the local wheel mirror's "is ignored"
# warnings dropped, every other message kept).
pip_install() {
  local venv=$1; shift
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
