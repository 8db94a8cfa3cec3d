"""The gin toolkit of the command-line entry points (`python -m punified_jax.train / .eval /
.infer`), t5x's conventions:

  --gin_file=PATH          several allowed, parsed in order (later files override earlier ones);
                           relative paths are looked up in the current directory, the
                           --gin_search_paths and the repository root (so `gin/runs/x.gin` and
                           gin `include` lines work from anywhere).
  --gin.KEY=VALUE          a binding, applied after all files: `--gin.TRAIN_STEPS=20`,
                           `--gin.train.seed=3`. A VALUE that is not a Python literal or a gin
                           reference (@name, %MACRO) is taken as a string, so
                           `--gin.MODEL_DIR=/tmp/m` and `--gin.MODEL_DIR="'/tmp/m'"` both work.
  --gin_bindings=BINDING   a raw gin binding (`--gin_bindings="MODEL_DIR='/tmp/m'"`), repeatable.
  --gin_search_paths=P,Q   extra directories for gin files and includes.
plus the multi-host flags of distributed.py (--coordinator_address, --num_processes,
--process_id, --local_device_ids, --distributed=auto|off).

`run_gin_command(argv, prog, description, action)` is the whole start-up: flags, logging,
distributed init, gin parsing (with our tasks configured and VOCAB_SIZE filled in), then
`action()`. Each command module (train.py, eval.py, infer.py) is that call plus its action.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
from typing import Callable, Sequence

import gin
from gin import config_parser

from punified_jax import distributed
from punified_jax import tasks as tasks_lib
from punified_jax import xla_cache
from punified_jax.data import manifest

# jax, seqio, tensorflow and the model are imported inside the functions that need them,
# deliberately: a bad flag or gin file is reported before any of them loads (seconds of start-up).

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gin_value(text: str) -> str:
  """The gin source for a `--gin.KEY=VALUE` value (bare words become quoted strings)."""
  stripped = text.strip()
  if stripped.startswith(("@", "%")):
    return stripped
  try:
    ast.literal_eval(stripped)
    return stripped
  except (ValueError, SyntaxError):
    return repr(text)


def split_gin_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--gin.KEY=VALUE` / `--gin.KEY VALUE` flags (-> bindings) from the rest."""
  bindings, rest = [], []
  index = 0
  argv = list(argv)
  while index < len(argv):
    arg = argv[index]
    if arg.startswith("--gin.") and len(arg) > len("--gin."):
      body = arg[len("--gin."):]
      if "=" in body:
        key, value = body.split("=", 1)
      else:
        if index + 1 >= len(argv):
          raise ValueError(f"{arg}: missing value (use --gin.KEY=VALUE)")
        key, value = body, argv[index + 1]
        index += 1
      if not key or any(c.isspace() for c in key):
        raise ValueError(f"{arg}: bad gin key {key!r}")
      bindings.append(f"{key} = {gin_value(value)}")
    else:
      rest.append(arg)
    index += 1
  return bindings, rest


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[], help="gin config file (repeatable)")
  parser.add_argument("--gin_bindings", action="append", default=[], help="raw gin binding (repeatable)")
  parser.add_argument("--gin_search_paths", action="append", default=[],
                      help="comma-separated directories searched for gin files (repeatable)")
  parser.add_argument("--log_level", default="WARNING",
                      help="Python/absl logging level (DEBUG, INFO, WARNING); orbax and seqio are chatty at INFO")


def resolve_gin_file(path: str, search_paths: Sequence[str]) -> str:
  if os.path.isabs(path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"--gin_file {path}: no such file")
    return path
  for directory in [os.getcwd(), *search_paths]:
    candidate = os.path.join(directory, path)
    if os.path.exists(candidate):
      return candidate
  raise FileNotFoundError(f"--gin_file {path}: not found in the current directory or the search paths "
                          f"{list(search_paths)}")


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str]) -> None:
  """Parses files then bindings into gin's global config (search paths first)."""
  paths = []
  for entry in search_paths:
    paths.extend(p for p in entry.split(",") if p)
  paths.append(REPO_ROOT)
  for path in paths:
    gin.add_config_file_search_path(path)
  files = [resolve_gin_file(path, paths) for path in gin_files]
  if not files:
    raise ValueError("at least one --gin_file is required (e.g. --gin_file=gin/runs/finetune_joint.gin)")
  quiet = _DropGinSearchMisses()
  logging.getLogger().addFilter(quiet)  # gin logs an error for every search path it misses
  try:
    gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
  finally:
    logging.getLogger().removeFilter(quiet)
  registry = tasks_lib.loaded_registry()  # loaded when a gin file did `import tasks`
  if registry is not None:
    registry.configure()  # gin-bound data settings (tasks.configure.*) re-register the tasks
    # A run whose gin imports our tasks needs data: no source is an error naming the settings,
    # never the synthetic corpus by default. Checked (and compared across processes) before
    # anything reads data, e.g. to train the default vocabulary for VOCAB_SIZE.
    announce_data_source(registry.require_data_source())
  fill_vocab_size()
  gin.finalize()


class _DropGinSearchMisses(logging.Filter):
  """Hides gin's "Path not found" log lines; a file found nowhere still raises an IOError."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Path not found")


def _macro(name: str):
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:
    return None


def fill_vocab_size() -> int | None:
  """Sets VOCAB_SIZE from the mixture's vocabulary when the config leaves it %gin.REQUIRED.

  Model files declare `VOCAB_SIZE = %gin.REQUIRED` and come after the run file on the command
  line, so a run file cannot set it; the vocabulary is known only once the tasks exist. An
  explicit value (--gin.VOCAB_SIZE=21228 for UER's vocabulary) is left alone.
  """
  value = _macro("VOCAB_SIZE")
  if value is None or repr(value) != "%gin.REQUIRED":
    return None
  name = _macro("MIXTURE_OR_TASK_NAME")
  if not isinstance(name, str):
    return None  # gin will report the missing MIXTURE_OR_TASK_NAME / VOCAB_SIZE itself
  import seqio  # pylint: disable=g-import-not-at-top
  try:
    provider = seqio.get_mixture_or_task(name)
  except ValueError as error:
    raise ValueError(f"MIXTURE_OR_TASK_NAME={name!r} is not registered (does the run file `import tasks`?): "
                     f"{error}") from None
  size = max(feature.vocabulary.vocab_size for feature in provider.output_features.values())
  from punified_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  padded = model_lib.round_up_vocab_size(size)
  gin.bind_parameter("VOCAB_SIZE/macro.value", padded)
  logging.getLogger(__name__).info("VOCAB_SIZE = %d (vocabulary of %s: %d ids)", padded, name, size)
  return padded


def parse_flags(argv: Sequence[str], prog: str, description: str):
  gin_bindings, rest = split_gin_flags(argv)
  parser = argparse.ArgumentParser(prog=prog, description=description)
  add_gin_flags(parser)
  distributed.add_flags(parser)
  args = parser.parse_args(rest)
  args.gin_bindings = list(args.gin_bindings) + gin_bindings
  return args


def setup_logging(level: str) -> None:
  logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  try:  # absl (used by seqio/orbax/clu) logs through its own handler; keep its level in step.
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(level.lower() if level.lower() in ("debug", "info", "warning", "error") else "info")
  except ImportError:
    pass


def keep_tensorflow_off_accelerators() -> None:
  """The input pipeline (seqio/tf.data) runs on the CPU; stop TensorFlow from grabbing GPU memory
  JAX needs (TF would otherwise allocate on every visible GPU at its first op)."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
  except (ImportError, RuntimeError):  # RuntimeError: TF already initialised its devices
    pass


def run_gin_command(argv: Sequence[str], prog: str, description: str,
                    action: Callable[[], int | None]) -> int:
  """Flags -> logging -> distributed init -> gin, then `action()`; bad flags, gin files or
  missing inputs print `error: ...` and give exit status 2. Shared by train, eval and infer."""
  try:
    args = parse_flags(list(argv), prog, description)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  setup_logging(args.log_level)
  keep_tensorflow_off_accelerators()
  xla_cache.enable_persistent_compilation_cache()
  # Before anything touches devices (gin parsing may import task modules).
  distributed.initialize_from_args(args)
  try:
    parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
    return int(action() or 0)
  except (ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2


def announce_data_source(config) -> None:
  """For runs on our tasks (`config`: their tasks.DataConfig): says where the data comes from
  (process 0) and checks that every process of a multi-process run sees the same data settings
  (a mismatch is an error on all of them, before the first step)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(f"data: {config.describe_source()}", flush=True)
  distributed.check_same_settings("data settings", manifest.data_settings(config), key="data")


class _TextReferences(config_parser.ParserDelegate):
  """Keeps `@configurable()` references and `%MACRO`s as their gin text: `read_macros` evaluates
  nothing."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return f"@{scoped_configurable_name}{'()' if evaluate else ''}"

  def macro(self, macro_name):
    return f"%{macro_name}"


def read_macros(gin_file: str, search_paths: Sequence[str] = ()) -> dict:
  """The macros (`NAME = value`) a gin file sets, its `include`s followed in place (a later
  binding wins, as in gin), without importing or configuring anything.

  For light commands that need a recipe's numbers (the main job's presets read them from
  gin/runs/*.gin rather than repeating them). Values are Python literals; references stay text.
  """
  path = resolve_gin_file(gin_file, [*search_paths, REPO_ROOT])
  macros: dict = {}
  with open(path, encoding="utf-8") as handle:
    for statement in config_parser.ConfigParser(handle, _TextReferences()):
      if isinstance(statement, config_parser.IncludeStatement):
        macros.update(read_macros(statement.filename, search_paths))
      elif (isinstance(statement, config_parser.BindingStatement) and not statement.scope
            and not statement.arg_name):
        macros[statement.selector] = statement.value
  return macros
