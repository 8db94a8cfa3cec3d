"""The shape of the tree stays what the README says: module sizes, the code layout, the scripts.

- No module of punified_jax/ or tasks/ is over MAX_LINES lines (split along a seam instead).
- README's "Code layout" block lists exactly the modules of punified_jax/ and tasks/, and every
  file it names exists.
- The environment scripts (tools/env/) build, stamp and reuse a venv, driven here with a stub
  interpreter that records what it is asked to do (no network, no real venv).
"""

import os
import re
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("punified_jax", "tasks")
MAX_LINES = 800


def python_modules() -> set[str]:
  """Repository-relative paths of every module under PACKAGES (package __init__ files aside)."""
  found = set()
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
      found.update(os.path.relpath(os.path.join(directory, name), ROOT) for name in files
                   if name.endswith(".py") and name != "__init__.py")
  return found


def test_no_module_is_over_the_line_limit():
  sizes = {}
  for path in python_modules():
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
      sizes[path] = sum(1 for _ in handle)
  assert len(sizes) > 50
  assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def layout_block(readme: str) -> list[str]:
  """The indented lines of the first code block under "## Code layout"."""
  section = readme.split("\n## Code layout\n", 1)[1].split("\n## ", 1)[0]
  lines, started = [], False
  for line in section.split("\n"):
    if line.startswith("    "):
      started = True
      lines.append(line[4:])
    elif started and line.strip():
      break
  return lines


_FILE = r"[\w.]+\.(?:py|sh|sbatch)"


def named_files(lines: list[str]) -> set[str]:
  """Repository-relative paths the layout names.

  A line whose first word is `dir/` opens that directory (below the innermost open one with a
  smaller indent) for itself and the lines indented below it; a line whose first word is a file
  name sits in the innermost open directory; any other line continues the description above.
  Every `name.py` / `name.sh` / `name.sbatch` word belongs to the innermost open directory, and
  a word with a slash (`tools/env/test.sh`) is a path from the repository root.
  """
  stack: list[tuple[int, str]] = []  # (indent, directory path)
  named = set()
  for line in lines:
    if not line.strip():
      continue
    indent = len(line) - len(line.lstrip(" "))
    first = line.split()[0]
    if first.endswith("/") or re.fullmatch(_FILE, first):
      while stack and stack[-1][0] >= indent:
        stack.pop()
      if first.endswith("/"):
        stack.append((indent, (stack[-1][1] if stack else "") + first))
    base = stack[-1][1] if stack else ""
    for token in re.findall(r"(?<![\w/.])([\w./]+\.(?:py|sh|sbatch))\b", line):
      named.add(token if "/" in token else base + token)
  return named


def test_the_layout_reader_reads_nested_directories():
  lines = ["a/", "  x.py      one", "  b/        two; y.py", "    z.py    three", "            more",
           "  w.py", "c/          run.sh and d.sh"]
  assert named_files(lines) == {"a/x.py", "a/b/y.py", "a/b/z.py", "a/w.py", "c/run.sh", "c/d.sh"}


def test_readme_layout_lists_exactly_the_modules_in_the_tree():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
    named = named_files(layout_block(handle.read()))
  modules = python_modules()
  listed = {path for path in named if path.split("/")[0] in PACKAGES}
  assert sorted(modules - listed) == [], "modules missing from README's Code layout"
  assert sorted(path for path in named if not os.path.isfile(os.path.join(ROOT, path))) == [], \
      "README's Code layout names files that do not exist"


# ------------------------------------------------------------------------------------------
# Environment scripts, with a stub interpreter.
# ------------------------------------------------------------------------------------------

# Logs every call; `-m venv DIR` makes DIR/bin/python a copy of itself; `-c CODE` (the stamp,
# the .pth file and the version probes) and `-m pip` / `-m pytest` only log.
STUB = """#!/usr/bin/env bash
echo "$0 $*" >> "$STUB_LOG"
if [[ "$1 $2" == "-m venv" ]]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi
exit 0
"""


@pytest.fixture()
def checkout(tmp_path):
  """A copy of the scripts and the files they read, plus the stub interpreter."""
  repo = tmp_path / "repo"
  for path in ("tools/env/common.sh", "tools/env/venv.sh", "tools/env/torch_env.sh",
               "tools/env/test.sh", "launch/test.sh", "requirements.txt", "pyproject.toml"):
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(os.path.join(ROOT, path), "rb") as handle:
      target.write_bytes(handle.read())
  stub = tmp_path / "python-stub"
  stub.write_text(STUB)
  stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
  log = tmp_path / "log"
  env = {**os.environ, "PYTHON": str(stub), "PYTHON311": str(stub), "STUB_LOG": str(log)}
  return repo, env, log


def _run(repo, env, log, script, *args):
  if log.exists():
    log.unlink()
  result = subprocess.run(["bash", str(repo / script), *args], env=env, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return log.read_text().splitlines() if log.exists() else []


def test_venv_is_built_once_and_rebuilt_when_the_requirements_change(checkout):
  repo, env, log = checkout
  calls = _run(repo, env, log, "tools/env/venv.sh")
  venv_python = str(repo / ".venv" / "bin" / "python")
  assert calls[0].endswith(f"-m venv {repo}/.venv")
  assert calls[1] == (f"{venv_python} -m pip install -q --disable-pip-version-check -r "
                      f"{repo}/requirements.txt")
  assert calls[2].startswith(f"{venv_python} -c import site")  # the repository on the path
  assert len(calls) == 3
  assert _run(repo, env, log, "tools/env/venv.sh") == []  # stamped: nothing to do
  with open(repo / "requirements.txt", "a", encoding="utf-8") as handle:
    handle.write("extra==1.0\n")
  calls = _run(repo, env, log, "tools/env/venv.sh")
  assert [call.split()[2] for call in calls] == ["pip", "import"]  # reinstalled, not recreated


def test_the_readme_test_command_runs_pytest_in_the_venv(checkout):
  repo, env, log = checkout
  calls = _run(repo, env, log, "launch/test.sh", "-k", "vocab")
  assert calls[-1] == f"{repo}/.venv/bin/python -m pytest -q -k vocab"


def test_torch_env_installs_its_pins_once(checkout):
  repo, env, log = checkout
  calls = _run(repo, env, log, "tools/env/torch_env.sh")
  venv_python = str(repo / ".venv-torch" / "bin" / "python")
  assert calls[0].endswith(f"-m venv {repo}/.venv-torch")
  assert calls[1].startswith(f"{venv_python} -m pip install -q --disable-pip-version-check "
                             "--only-binary=:all: torch==2.13.0 transformers==")
  assert _run(repo, env, log, "tools/env/torch_env.sh") == []


def test_a_missing_interpreter_is_named(checkout):
  repo, env, _ = checkout
  script = f"source {repo}/tools/env/common.sh; find_python 3.99 NO_SUCH_PYTHON"
  result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode != 0
  assert result.stderr == "error: Python 3.99 not found; set NO_SUCH_PYTHON=/path/to/python3.99\n"
  found = subprocess.run(["bash", "-c", f"source {repo}/tools/env/common.sh; find_python 3.12 PYTHON"],
                         env=env, capture_output=True, text=True, timeout=60)
  assert found.stdout == env["PYTHON"] + "\n"  # the variable wins
