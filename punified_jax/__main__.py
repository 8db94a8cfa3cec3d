"""`python -m punified_jax <command> ...`: one entry point, one module per command.

Each command lives in `punified_jax/commands/<name>.py` and defines `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. Commands are imported only when chosen, so
`stats` does not pay for importing JAX.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import punified_jax.commands as _commands


def _command_names() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(_commands.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  names = _command_names()
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in names:
    print("usage: python -m punified_jax <command> [options]\n\ncommands:", file=sys.stderr)
    for name in names:
      help_line = getattr(importlib.import_module(f"punified_jax.commands.{name}"), "HELP", "")
      print(f"  {name:<10} {help_line}", file=sys.stderr)
    if argv and argv[0] not in ("-h", "--help"):
      print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
      return 2
    return 0 if argv else 2
  module = importlib.import_module(f"punified_jax.commands.{argv[0]}")
  parser = argparse.ArgumentParser(prog=f"python -m punified_jax {argv[0]}", description=module.HELP)
  module.add_arguments(parser)
  args = parser.parse_args(argv[1:])
  return int(module.run(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
