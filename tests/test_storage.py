"""The storage layer on local paths and on gs:// (the GCS emulator of tests/gcs_emulator.py).

Round trips are property tests run on both kinds of location; the gs:// cases then check the
pieces that sit on top of storage: orbax checkpoints chosen by run_dir, a vocabulary, a raw
data file read by the readers.
"""

import gzip
import json

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from punified_jax import run_dir
from punified_jax import storage

# Text that UTF-8 can hold (no lone surrogates), including full-width punctuation and newlines.
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12)
_NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  """A fresh directory: a local temporary one, or a prefix in a new emulator bucket."""
  if request.param == "local":
    return str(tmp_path)
  emulator = request.getfixturevalue("gcs_emulator")
  return f"gs://{emulator.bucket()}/root"


_counter = iter(range(10**9))


def _fresh(root: str) -> str:
  return storage.join(root, f"case{next(_counter)}")


@hypothesis.settings(max_examples=15, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.binary(max_size=4096), text=_TEXT, value=_JSON, name=_NAME)
@hypothesis.example(data=b"\x00\xff", text="a\r\nb\rc（，：）", value={"k": [1, None]}, name="x")
def test_round_trips(root, data, text, value, name):
  directory = _fresh(root)
  storage.write_bytes_atomic(storage.join(directory, "sub", name + ".bin"), data)
  storage.write_text_atomic(storage.join(directory, name + ".txt"), text)
  storage.write_json_atomic(storage.join(directory, name + ".json"), value)
  assert storage.read_bytes(storage.join(directory, "sub", name + ".bin")) == data
  assert storage.read_text(storage.join(directory, name + ".txt")) == text
  assert storage.read_json(storage.join(directory, name + ".json")) == value
  assert storage.listdir(directory) == sorted([name + ".json", name + ".txt", "sub"])
  assert storage.isdir(storage.join(directory, "sub"))
  assert storage.isfile(storage.join(directory, name + ".txt"))
  assert storage.size(storage.join(directory, "sub", name + ".bin")) == len(data)
  with storage.open_file(storage.join(directory, "sub", name + ".bin"), "rb") as handle:
    assert handle.read() == data
  # An atomic write replaces the whole file; no temporary file is left behind.
  storage.write_bytes_atomic(storage.join(directory, "sub", name + ".bin"), b"x")
  assert storage.read_bytes(storage.join(directory, "sub", name + ".bin")) == b"x"
  assert storage.listdir(storage.join(directory, "sub")) == [name + ".bin"]
  storage.rmtree(directory)
  assert not storage.exists(directory)


@hypothesis.settings(max_examples=8, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.binary(max_size=2048))
def test_copy_and_local_copy(root, data, tmp_path_factory, monkeypatch):
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path_factory.mktemp("cache")))
  directory = _fresh(root)
  source = storage.join(directory, "a.model")
  storage.write_bytes_atomic(source, data)
  storage.copy(source, storage.join(directory, "copy", "b.model"))
  assert storage.read_bytes(storage.join(directory, "copy", "b.model")) == data
  local = storage.local_copy(source)
  with open(local, "rb") as handle:
    assert handle.read() == data
  assert (local == source) == (not storage.is_remote(root))
  assert storage.sha256(source) == __import__("hashlib").sha256(data).hexdigest()


def test_join_dirname_basename_literal():
  assert storage.join("gs://b/run/", "eval", "step_1.json") == "gs://b/run/eval/step_1.json"
  assert storage.dirname("gs://b/run/eval/step_1.json") == "gs://b/run/eval"
  assert storage.basename("gs://b/run/") == "run"
  assert storage.join("/tmp/run", "eval") == "/tmp/run/eval"
  assert storage.basename("/tmp/run/") == "run"
  assert storage.absolute("gs://b/run/") == "gs://b/run"
  assert storage.is_remote("gs://b") and not storage.is_remote("/tmp/gs:")


def test_missing_files_raise(root):
  with pytest.raises(FileNotFoundError):
    storage.read_bytes(storage.join(root, "nothing-here"))
  assert not storage.exists(storage.join(root, "nothing-here"))
  assert storage.listdir(root) == [] if storage.exists(root) else True


def test_copy_tree_from_local(root, tmp_path):
  staged = tmp_path / "staged"
  (staged / "inner").mkdir(parents=True)
  (staged / "config.json").write_text("{}")
  (staged / "inner" / "w.bin").write_bytes(b"\x00\x01")
  target = _fresh(root)
  storage.copy_tree_from_local(str(staged), target)
  assert storage.listdir(target) == ["config.json", "inner"]
  assert storage.read_bytes(storage.join(target, "inner", "w.bin")) == b"\x00\x01"


# ---------------------------------------------------------------------------------------------
# What sits on storage, on gs://.
# ---------------------------------------------------------------------------------------------


def test_orbax_checkpoints_on_a_bucket_are_chosen_and_loaded(gcs_emulator):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from punified_jax import checkpoints  # pylint: disable=g-import-not-at-top
  model_dir = f"gs://{gcs_emulator.bucket()}/run"
  layout = run_dir.Layout(model_dir)

  def state(step):
    return {"step": jnp.asarray(step), "params": {"w": jnp.full((2, 3), float(step))}}

  manager = checkpoints.Checkpointer(layout.checkpoints, async_save=False, max_to_keep=2)
  for step in (1, 2, 3):
    manager.save(step, state(step), {"step": step, "consumed": step * 4}, force=True)
  manager.close()
  tracker = checkpoints.BestCheckpointTracker(layout.best, layout.best_summary)
  tracker.update(2, 70.0, state(2), {"step": 2})
  tracker.close()
  assert run_dir.finished_steps(layout.checkpoints) == [2, 3]  # keep-2
  assert storage.read_json(layout.best_summary) == {"metric": "mean_f1", "step": 2, "value": 70.0}
  assert run_dir.choose_checkpoint(model_dir).item_dir == f"{model_dir}/best/2/state"
  assert run_dir.choose_checkpoint(model_dir, "latest").step == 3
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32, sharding=device)}
  np.testing.assert_array_equal(run_dir.load_params(model_dir, abstract)["w"], np.full((2, 3), 2.0))
  np.testing.assert_array_equal(run_dir.load_params(model_dir, abstract, choice="latest")["w"],
                                np.full((2, 3), 3.0))
  # A resumed manager sees the same steps and restores the full state.
  reopened = checkpoints.Checkpointer(layout.checkpoints, async_save=False)
  restored, meta = reopened.restore(jax.eval_shape(lambda: state(0)))
  reopened.close()
  assert (int(restored["step"]), meta) == (3, {"step": 3, "consumed": 12})


def test_vocabulary_and_raw_data_read_from_a_bucket(gcs_emulator, tmp_path, monkeypatch):
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from punified_jax.data import raw_files  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  bucket = f"gs://{gcs_emulator.bucket()}"
  local_model = vocab_lib.train_sentencepiece(["张三去了北京大学。", "李四在上海。"],
                                              str(tmp_path / "v.model"), required_chars="")
  remote_model = vocab_lib.train_sentencepiece(["张三去了北京大学。", "李四在上海。"],
                                               f"{bucket}/vocab/v.model", required_chars="")
  assert storage.read_bytes(remote_model) == open(local_model, "rb").read()
  local, remote = vocab_lib.get_vocabulary(local_model), vocab_lib.get_vocabulary(remote_model)
  assert list(remote.encode("张三去了上海。")) == list(local.encode("张三去了上海。"))
  # A vocab.txt is read through storage directly.
  storage.write_text_atomic(f"{bucket}/vocab/vocab.txt", "".join(
      f"{t}\n" for t in ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)]
      + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "张", "三"]))
  wordpiece = vocab_lib.get_vocabulary(f"{bucket}/vocab/vocab.txt")
  assert list(wordpiece.encode("张三")) == [104, 105]
  # A gzip release file (the readers recognise gzip by its magic bytes).
  lines = "张 B-PER\n三 I-PER\n去 O\n\n".encode("utf-8")
  storage.write_bytes_atomic(f"{bucket}/raw/train.char.bmes.gz", gzip.compress(lines))
  storage.write_bytes_atomic(f"{bucket}/raw/train.char.bmes", lines)
  for name in ("train.char.bmes.gz", "train.char.bmes"):
    with raw_files.open_bytes(f"{bucket}/raw/{name}") as handle:
      assert handle.read() == lines
  assert json.loads(json.dumps(storage.listdir(f"{bucket}/raw"))) == ["train.char.bmes", "train.char.bmes.gz"]


def test_default_vocabulary_from_raw_data_in_a_bucket(gcs_emulator, tmp_path, monkeypatch):
  """A gs:// raw directory without PUNIFIED_VOCAB: the default vocabulary's fingerprint lists
  the bucket's files (not the local file system) and the vocabulary is trained on their text."""
  from tasks import registry  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  raw = f"gs://{gcs_emulator.bucket()}/raw"
  storage.write_text_atomic(f"{raw}/resume/train.char.bmes",
                            "张 B-NAME\n三 E-NAME\n去 O\n上 B-LOC\n海 E-LOC\n\n")
  storage.write_text_atomic(f"{raw}/resume/dev.char.bmes", "李 S-NAME\n来 O\n\n")
  config = registry.DataConfig(raw_dir=raw, datasets=("resume",))
  first = registry._data_fingerprint(config)  # pylint: disable=protected-access
  assert first == registry._data_fingerprint(config)  # pylint: disable=protected-access
  path = registry.default_vocabulary_path(config)
  pieces = [p for p in vocab_lib_pieces(path)]
  for char in "张三去上海":
    assert char in pieces
  # A train file of another size gives another fingerprint (a new vocabulary); the fingerprint
  # is (name, size, mtime), so a same-size rewrite within the same second would not show.
  storage.write_text_atomic(f"{raw}/resume/train.char.bmes",
                            "王 B-NAME\n五 E-NAME\n去 O\n北 B-LOC\n京 E-LOC\n。 O\n\n")
  assert registry._data_fingerprint(config) != first  # pylint: disable=protected-access


def vocab_lib_pieces(path: str) -> list[str]:
  import sentencepiece  # pylint: disable=g-import-not-at-top
  processor = sentencepiece.SentencePieceProcessor(model_file=path)
  return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
