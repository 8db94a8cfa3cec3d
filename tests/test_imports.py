"""Import guard: every module of punified_jax/ and tasks/ imports, and none takes part in a cycle.

The module-level imports (function bodies excluded: a function-local import runs later, when the
function is called) form a graph over our modules; it must be acyclic. Then one fresh interpreter
imports every module in dependency order (each module after everything it imports), so an import
error anywhere, or a module that only works when something else happened to be imported first,
fails here rather than in a user's command.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("punified_jax", "tasks")


def module_files() -> dict[str, str]:
  """Dotted module name -> file, for every .py under PACKAGES (packages by their __init__)."""
  modules = {}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if not name.endswith(".py"):
          continue
        path = os.path.join(directory, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        modules[dotted.removesuffix(".__init__")] = path
  return modules


def _module_level_imports(tree: ast.AST):
  """Import nodes that run when the module is imported: not inside a function body."""
  stack = list(ast.iter_child_nodes(tree))
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      continue
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
  """Module -> the modules of ours it imports at module level (parent packages included, since
  importing a.b.c runs a/__init__ and a/b/__init__ first; a package's own submodules not)."""
  def ours(name: str) -> set[str]:
    found = set()
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
      if ".".join(parts[:end]) in modules:
        found.add(".".join(parts[:end]))
    return found

  graph = {}
  for name, path in modules.items():
    with open(path, encoding="utf-8") as handle:
      tree = ast.parse(handle.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    edges = set()
    for node in _module_level_imports(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          edges |= ours(alias.name)
        continue
      base = node.module or ""
      if node.level:  # relative: from . import x / from .y import z
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      edges |= ours(base)
      for alias in node.names:  # `from package import module`
        edges |= ours(f"{base}.{alias.name}")
    if "." in name:
      edges |= ours(name.rpartition(".")[0])
    # A package's __init__ may import its own submodules (data/__init__ re-exports Example):
    # the package object exists by then, so that is not a cycle.
    edges = {edge for edge in edges if edge != name and not edge.startswith(name + ".")}
    graph[name] = edges
  return graph


def dependency_order(graph: dict[str, set[str]]) -> list[str]:
  """Modules with every module before the ones that import it; raises naming a cycle."""
  order, state = [], {}

  def visit(name, path):
    if state.get(name) == "done":
      return
    if state.get(name) == "open":
      cycle = path[path.index(name):] + [name]
      raise AssertionError("import cycle: " + " -> ".join(cycle))
    state[name] = "open"
    for dependency in sorted(graph[name]):
      visit(dependency, path + [name])
    state[name] = "done"
    order.append(name)

  for name in sorted(graph):
    visit(name, [])
  return order


def test_the_graph_reader_sees_imports_and_cycles():
  """The checker itself: literal graphs from literal sources."""
  graph = {"a": {"b"}, "b": {"c"}, "c": set()}
  assert dependency_order(graph) == ["c", "b", "a"]
  with pytest.raises(AssertionError, match=r"import cycle: a -> b -> c -> a"):
    dependency_order({"a": {"b"}, "b": {"c"}, "c": {"a"}})
  tree = ast.parse("import os\nfrom x import y\ndef f():\n  import z\nclass C:\n  import w\n"
                   "try:\n  import v\nexcept ImportError:\n  pass\n")
  names = [alias.name for node in _module_level_imports(tree) for alias in node.names]
  assert sorted(names) == ["os", "v", "w", "y"]  # not z: it runs only when f() is called


def test_our_modules_form_no_import_cycle():
  graph = import_graph(module_files())
  assert "punified_jax.run_dir" in graph["punified_jax.metric_writers"]  # the reader reads
  assert "punified_jax.data" in graph["punified_jax.data.readers"]  # parents count
  dependency_order(graph)


def test_every_module_imports_in_a_fresh_interpreter_in_dependency_order():
  order = dependency_order(import_graph(module_files()))
  code = ("import importlib, sys\n"
          "for name in sys.argv[1:]:\n"
          "  try:\n"
          "    importlib.import_module(name)\n"
          "  except Exception as error:\n"
          "    raise SystemExit(f'{name}: {type(error).__name__}: {error}')\n"
          "print(len(sys.argv) - 1)\n")
  env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-1000:]
  assert result.stdout.split()[-1] == str(len(order))
