"""One storage layer: every file the project reads or writes goes through these functions.

A path is a local path or a URL such as `gs://bucket/dir/file`.  Both go through
`etils.epath` -- the path library orbax itself uses for checkpoints -- so a run directory's
checkpoints and everything beside them (punified_model.json, eval JSON, metrics, reports,
predictions, vocabularies) share one implementation and one set of credentials.  epath is told
to send `gs://` to fsspec/gcsfs rather than TensorFlow's gfile (`EPATH_USE_TF=false`, set below
before epath is imported) because gcsfs honours `STORAGE_EMULATOR_HOST` (the emulator the tests
use) while TensorFlow's gfile always goes to the public API.

Keep this module light: no jax, no tensorflow.
"""

from __future__ import annotations

import os

os.environ.setdefault("EPATH_USE_TF", "false")

import contextlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import json
import uuid
from typing import Any, Iterator, Union

from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position

PathLike = Union[str, os.PathLike, epath.Path]


def is_remote(path: PathLike) -> bool:
  """True for URLs (`gs://...`), False for local paths."""
  return "://" in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  return epath.Path(path)


def join(path: PathLike, *parts: str) -> str:
  """Joins with '/' for URLs and os.path.join locally; returns a string."""
  if is_remote(path):
    base = os.fspath(path).rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts]])
  return os.path.join(os.fspath(path), *parts)


def exists(path: PathLike) -> bool:
  return as_path(path).exists()


def isdir(path: PathLike) -> bool:
  return as_path(path).is_dir()


def isfile(path: PathLike) -> bool:
  return as_path(path).is_file()


def makedirs(path: PathLike) -> None:
  as_path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: PathLike) -> list[str]:
  """Names (not paths) of a directory's entries, sorted."""
  return sorted(child.name for child in as_path(path).iterdir())


@contextlib.contextmanager
def open_file(path: PathLike, mode: str = "r", encoding: str = "utf-8") -> Iterator[Any]:
  """Opens a local or remote file; text modes default to UTF-8."""
  kwargs = {} if "b" in mode else {"encoding": encoding}
  with as_path(path).open(mode, **kwargs) as handle:
    yield handle


def read_text(path: PathLike) -> str:
  return as_path(path).read_text(encoding="utf-8")


def read_bytes(path: PathLike) -> bytes:
  return as_path(path).read_bytes()


def remove(path: PathLike) -> None:
  as_path(path).unlink()


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
  """Writes a whole file so readers see the old content or the new, never a partial file.

  Locally: a temporary file in the same directory and an atomic rename.  On object stores an
  upload is already all-or-nothing, so the object is written directly.
  """
  target = as_path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(path):
    target.write_bytes(data)
    return
  temporary = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    temporary.write_bytes(data)
    os.replace(os.fspath(temporary), os.fspath(target))
  finally:
    if temporary.exists():
      temporary.unlink()


def write_text_atomic(path: PathLike, text: str) -> None:
  write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, value: Any, *, indent: int = 1) -> None:
  """JSON with non-ASCII kept readable, sorted keys and a final newline, written atomically."""
  text = json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=True) + "\n"
  write_text_atomic(path, text)


def read_json(path: PathLike) -> Any:
  return json.loads(read_text(path))
