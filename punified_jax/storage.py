"""One storage layer: every file the project reads or writes goes through these functions.

A path is a local path or a URL such as `gs://bucket/dir/file`.  Both go through
`etils.epath` -- the path library orbax itself uses for checkpoints -- so a run directory's
checkpoints and everything beside them (punified_model.json, eval JSON, metrics, reports,
predictions, vocabularies) share one implementation and one set of credentials.

Why these libraries (and not TensorFlow's gfile):
* epath is told to send `gs://` to fsspec/gcsfs (`EPATH_USE_TF=false`, set below before epath
  is imported) because gcsfs honours `STORAGE_EMULATOR_HOST` -- the emulator the tests use --
  while TensorFlow's gfile ignores every emulator setting and always goes to the public API.
* gcsfs >= 2025 by default swaps in an "extended" file system that first asks the bucket's
  storage layout over gRPC (zonal / hierarchical-namespace buckets); against an emulator that
  call waits about 60 s before falling back.  We set `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`
  (unless you set it yourself): plain and hierarchical buckets work through the JSON API.
* gcsfs caches directory listings per process; with several hosts writing one run directory a
  cached listing goes stale, so the cache is switched off (`use_listings_cache=False`).
* Array data of checkpoints is written by orbax through TensorStore, which has its own GCS
  client: when `STORAGE_EMULATOR_HOST` is set we point it at the same emulator
  (`TENSORSTORE_GCS_HTTP_URL`) with a dummy token (`GOOGLE_AUTH_TOKEN_FOR_TESTING`).  Without
  an emulator nothing is changed and both libraries use Application Default Credentials.

Libraries that insist on a local file name (SentencePiece through seqio, safetensors) get one
from `local_copy`: a cached copy keyed by the content's sha256.

Keep this module light: no jax, no tensorflow.
"""

from __future__ import annotations

import os

os.environ.setdefault("EPATH_USE_TF", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _configure_emulator() -> None:
  """Points TensorStore (orbax's array writer) at the emulator gcsfs already honours."""
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if not emulator:
    return
  if "://" not in emulator:
    emulator = "http://" + emulator
  os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator)
  os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")


_configure_emulator()

import contextlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import hashlib
import json
import shutil
import uuid
from typing import Any, Iterator, Union

import fsspec  # pylint: disable=g-import-not-at-top,wrong-import-position
from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position

fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)

PathLike = Union[str, os.PathLike, epath.Path]


def is_remote(path: PathLike) -> bool:
  """True for URLs (`gs://...`), False for local paths."""
  return "://" in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  return epath.Path(path)


def absolute(path: PathLike) -> str:
  """A local path made absolute (orbax and the descriptions record absolute paths); URLs as is."""
  path = os.fspath(path)
  return path.rstrip("/") if is_remote(path) else os.path.abspath(path)


def join(path: PathLike, *parts: str) -> str:
  """Joins with '/' for URLs and os.path.join locally; returns a string."""
  if is_remote(path):
    base = os.fspath(path).rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts if p]])
  return os.path.join(os.fspath(path), *parts)


def basename(path: PathLike) -> str:
  return os.fspath(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(
      os.path.normpath(os.fspath(path)))


def dirname(path: PathLike) -> str:
  if is_remote(path):
    return os.fspath(path).rstrip("/").rsplit("/", 1)[0]
  return os.path.dirname(os.fspath(path))


def exists(path: PathLike) -> bool:
  return as_path(path).exists()


def isdir(path: PathLike) -> bool:
  return as_path(path).is_dir()


def isfile(path: PathLike) -> bool:
  return as_path(path).is_file()


def makedirs(path: PathLike) -> None:
  """Creates a directory and its parents (on object stores directories are implicit)."""
  as_path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: PathLike) -> list[str]:
  """Names (not paths) of a directory's entries, sorted."""
  return sorted(child.name for child in as_path(path).iterdir())


def size(path: PathLike) -> int:
  return as_path(path).stat().length


@contextlib.contextmanager
def open_file(path: PathLike, mode: str = "r", encoding: str = "utf-8") -> Iterator[Any]:
  """Opens a local or remote file; text modes default to UTF-8."""
  kwargs = {} if "b" in mode else {"encoding": encoding}
  with as_path(path).open(mode, **kwargs) as handle:
    yield handle


def read_text(path: PathLike) -> str:
  """The file's UTF-8 text exactly as written (no newline translation: "\r" stays "\r")."""
  return read_bytes(path).decode("utf-8")


def read_bytes(path: PathLike) -> bytes:
  return as_path(path).read_bytes()


def read_json(path: PathLike) -> Any:
  return json.loads(read_text(path))


def read_jsonl(path: PathLike) -> list:
  """Records of a JSON-lines file (blank lines skipped); a malformed line raises a ValueError
  naming the file and the line number."""
  records = []
  for number, line in enumerate(read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as error:
      raise ValueError(f"{os.fspath(path)}:{number}: not JSON ({error.msg})") from None
  return records


def remove(path: PathLike) -> None:
  as_path(path).unlink()


def rmtree(path: PathLike) -> None:
  """Deletes a directory tree (nothing happens if it does not exist)."""
  target = as_path(path)
  if target.exists():
    target.rmtree()


def copy(source: PathLike, destination: PathLike) -> None:
  """Copies one file between any two locations (local or remote), atomically at the target."""
  write_bytes_atomic(destination, read_bytes(source))


def sha256(path: PathLike) -> str:
  digest = hashlib.sha256()
  with open_file(path, "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


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


def write_json_atomic(path: PathLike, value: Any, *, indent: int | None = 1,
                      sort_keys: bool = True, allow_nan: bool = True) -> None:
  """JSON with non-ASCII kept readable (sorted keys, a final newline), written atomically."""
  text = json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys,
                    allow_nan=allow_nan) + "\n"
  write_text_atomic(path, text)


def cache_dir() -> str:
  """`$PUNIFIED_CACHE`, default `~/.cache/punified_jax` (always local)."""
  return os.environ.get("PUNIFIED_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "punified_jax")


def local_copy(path: PathLike) -> str:
  """A local file name with `path`'s content: `path` itself when local, else a cached copy.

  For libraries that only open local files (seqio's SentencePieceVocabulary reads through
  TensorFlow's gfile, which cannot reach an emulator; safetensors maps the file).  The copy is
  `<cache_dir>/remote/<sha256 of the content>/<basename>`, so two remote files of the same
  name never collide, an edited remote file gets a new copy, and a re-read costs one download
  (to hash it) but no rewrite.
  """
  if not is_remote(path):
    return os.fspath(path)
  data = read_bytes(path)
  digest = hashlib.sha256(data).hexdigest()
  target = os.path.join(cache_dir(), "remote", digest, basename(path))
  if not os.path.exists(target):
    write_bytes_atomic(target, data)
  return target


def copy_tree_from_local(source: str, destination: PathLike) -> None:
  """Uploads a local directory tree (e.g. a staged export) to `destination`, file by file."""
  if not is_remote(destination):
    shutil.copytree(source, os.fspath(destination), dirs_exist_ok=True)
    return
  for root, _, files in os.walk(source):
    relative = os.path.relpath(root, source)
    for name in files:
      parts = [] if relative == "." else relative.split(os.sep)
      with open(os.path.join(root, name), "rb") as handle:
        write_bytes_atomic(join(destination, *parts, name), handle.read())
