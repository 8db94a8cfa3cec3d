"""Our tasks, gin files and checkpoint bridge under real t5x (when installed), and without it.

Without t5x: text-level checks of gin/t5x/*.gin (includes exist, macros set, the beam widths of
the paper, shapes equal to our own tiny model), and the bridge on checkpoint directories this
file writes in the two layouts t5x uses:

* orbax (t5x's default since `use_orbax=True`): `<dir>/checkpoint_<step>/state/` is an orbax
  PyTree item written with OCDBT (`PyTreeCheckpointHandler(use_ocdbt=True)`) holding t5x's
  `TrainState.state_dict()`, {"target": params, "state": {"step", "param_states"}}, saved by a
  CheckpointManager with step_prefix "checkpoint" (t5x's OrbaxCheckpointManagerInterface also
  writes a "dataset" item; the bridge never reads it, so the fixture leaves it out);
* msgpack + TensorStore (t5x's Checkpointer): `<dir>/checkpoint_<step>/checkpoint` is
  flax-msgpack of {"version": 3, "optimizer": {"target": ..., "state": ...}} where each
  partitioned array is replaced by its zarr TensorStore spec, with a kvstore path relative to
  the step directory ("target.encoder.layers_0.mlp.wi_0.kernel/", gzip, dimension separator ".")
  and the array is written there; unpartitioned leaves stay inline in the msgpack.
Both were compared against checkpoints written by t5x itself (google-research/t5x cc342d4, see
docs/t5x.md): same directory layout, same tree keys, same spec fields.

With t5x importable: t5x.train (adapt, then joint fine-tuning with our metric in its inference
evaluation) on the built-in corpus with the tiny size, t5x.eval producing our span macro F1,
t5x.infer (greedy predictions with gin/t5x/greedy.gin, and target scores), then the bridge:
the converted checkpoint in our model scores targets like t5x does, greedy-decodes the same
text, and our Extractor serves the converted directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gin
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from punified_jax import model as model_lib
from punified_jax import run_dir
from punified_jax import t5x_interop


def _load_converted(model_dir: str):
  """Config, parameters (through run_dir.load_params), vocabulary path and step of a from_t5x
  directory, as its model.json describes them."""
  import types  # pylint: disable=g-import-not-at-top
  description = json.loads(open(os.path.join(model_dir, "model.json"), encoding="utf-8").read())
  config = model_lib.T5Config(**description["config"])
  params = run_dir.load_params(model_dir, run_dir.single_device_abstract(config))
  vocabulary = description.get("vocabulary")
  return types.SimpleNamespace(config=config, params=params, step=int(description["step"]),
                               vocabulary=os.path.join(model_dir, vocabulary) if vocabulary else None)


REPO = Path(__file__).resolve().parent.parent
GIN_DIR = REPO / "gin" / "t5x"
RUN_FILES = ("adapt.gin", "finetune_joint.gin", "finetune_single.gin", "eval.gin", "infer.gin")
SIZE_FILES = ("tiny.gin", "small.gin", "base.gin", "large.gin")
HAS_T5X = importlib.util.find_spec("t5x") is not None

# A T5 v1.1 small enough to write and read in milliseconds.
SMALL = model_lib.T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=12,
                           num_encoder_layers=2, num_decoder_layers=1, dropout_rate=0.0)


# ------------------------------------------------------------------------------------------
# Fixtures: t5x-format checkpoints written with orbax / tensorstore / flax msgpack.
# ------------------------------------------------------------------------------------------


def _random_params(config, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  shapes = model_lib.flatten_params(model_lib.param_shapes(config))
  flat = {name: rng.standard_normal(leaf.shape).astype(np.float32)
          for name, leaf in shapes.items()}
  return model_lib.unflatten_params(flat)


def _adafactor_slots(params) -> dict:
  """Stand-ins for t5x's Adafactor param_states (what a real train state carries besides)."""
  def slots(value):
    if isinstance(value, dict):
      return {key: slots(inner) for key, inner in value.items()}
    return {"m": np.zeros([1], np.float32), "v": np.zeros([1], np.float32),
            "v_col": np.ones(value.shape[-1:], np.float32),
            "v_row": np.ones(value.shape[:1], np.float32)}
  return slots(params)


def write_t5x_orbax(model_dir, params, step: int) -> Path:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(
      os.fspath(model_dir),
      options=ocp.CheckpointManagerOptions(step_prefix="checkpoint", create=True,
                                           enable_async_checkpointing=False),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(use_ocdbt=True)})
  state = {"target": params,
           "state": {"step": np.asarray(step, np.int32), "param_states": _adafactor_slots(params)}}
  # t5x saves jax.Arrays (orbax then also writes their shardings and array metadata).
  state = jax.tree.map(jax.numpy.asarray, state)
  manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)))
  manager.wait_until_finished()
  manager.close()
  return Path(model_dir) / f"checkpoint_{step}"


def write_t5x_msgpack(model_dir, params, step: int, *, inline=(), dtype=np.float32) -> Path:
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  step_dir = Path(model_dir) / f"checkpoint_{step}"
  step_dir.mkdir(parents=True)

  def stored(prefix: str, tree):
    out = {}
    for key, value in tree.items():
      name = f"{prefix}.{key}"
      if isinstance(value, dict):
        out[key] = stored(name, value)
        continue
      array = np.asarray(value).astype(dtype)
      if name.split(".", 1)[1].replace(".", "/") in inline:
        out[key] = array
        continue
      spec = {"driver": "zarr", "dtype": np.dtype(dtype).name,
              "kvstore": {"driver": "file", "path": f"{name}/"},
              "metadata": {"chunks": list(array.shape), "compressor": {"id": "gzip", "level": 1},
                           "shape": list(array.shape)}}
      absolute = json.loads(json.dumps(spec))
      absolute["kvstore"]["path"] = os.fspath(step_dir / spec["kvstore"]["path"])
      absolute["metadata"]["dimension_separator"] = "."
      ts.open(absolute, create=True, open=True).result().write(array).result()
      out[key] = spec
    return out

  contents = {"version": 3, "optimizer": {
      "target": stored("target", params),
      "state": {"step": np.asarray(step, np.int32), "param_states": {}}}}
  (step_dir / "checkpoint").write_bytes(serialization.msgpack_serialize(contents))
  return step_dir


def _assert_same_tree(got, want):
  got_flat, want_flat = model_lib.flatten_params(got), model_lib.flatten_params(want)
  assert sorted(got_flat) == sorted(want_flat)
  for name, value in want_flat.items():
    assert np.asarray(got_flat[name]).dtype == np.float32, name
    np.testing.assert_array_equal(np.asarray(got_flat[name]), np.asarray(value), err_msg=name)


@pytest.fixture(scope="module")
def small_params():
  return _random_params(SMALL)


@pytest.fixture(scope="module")
def orbax_dir(tmp_path_factory, small_params):
  root = tmp_path_factory.mktemp("t5x_orbax")
  write_t5x_orbax(root, _random_params(SMALL, seed=1), 100)
  write_t5x_orbax(root, small_params, 200)
  # What a killed orbax save leaves behind: never a candidate.
  (root / "checkpoint_300.orbax-checkpoint-tmp-1795000000" / "state").mkdir(parents=True)
  return root


@pytest.fixture(scope="module")
def msgpack_dir(tmp_path_factory, small_params):
  root = tmp_path_factory.mktemp("t5x_msgpack")
  write_t5x_msgpack(root, small_params, 7, inline=("encoder/encoder_norm/scale",))
  (root / "checkpoint_9.tmp-1795000000").mkdir()  # a legacy save killed half-way
  return root


# ------------------------------------------------------------------------------------------
# Locating and reading checkpoints.
# ------------------------------------------------------------------------------------------


def test_locate_every_kind_of_path(orbax_dir, msgpack_dir):
  newest = t5x_interop.locate_checkpoint(str(orbax_dir))
  assert (newest.step, newest.kind) == (200, "orbax")
  assert newest.path == str(orbax_dir / "checkpoint_200")
  assert t5x_interop.locate_checkpoint(str(orbax_dir), step=100).path == str(
      orbax_dir / "checkpoint_100")
  assert t5x_interop.locate_checkpoint(str(orbax_dir / "checkpoint_100" / "state")).step == 100
  assert t5x_interop.locate_checkpoint(str(orbax_dir / "checkpoint_100") + "/").step == 100
  legacy = t5x_interop.locate_checkpoint(str(msgpack_dir))
  assert (legacy.step, legacy.kind) == (7, "msgpack")
  from_file = t5x_interop.locate_checkpoint(str(msgpack_dir / "checkpoint_7" / "checkpoint"))
  assert from_file == legacy


def test_locate_errors_name_the_path_and_the_steps(orbax_dir, tmp_path):
  with pytest.raises(t5x_interop.BridgeError, match=r"has no finished checkpoint of step 300; "
                     r"it has steps \[100, 200\]"):
    t5x_interop.locate_checkpoint(str(orbax_dir), step=300)
  with pytest.raises(t5x_interop.BridgeError, match="checkpoint of step 100, not of --step 200"):
    t5x_interop.locate_checkpoint(str(orbax_dir / "checkpoint_100"), step=200)
  with pytest.raises(t5x_interop.BridgeError, match=f"{tmp_path}/missing.*does not exist"):
    t5x_interop.locate_checkpoint(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(t5x_interop.BridgeError, match="holds no t5x checkpoint"):
    t5x_interop.locate_checkpoint(str(tmp_path / "empty"))
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(t5x_interop.BridgeError, match="notes.txt: not a t5x checkpoint"):
    t5x_interop.locate_checkpoint(str(tmp_path / "notes.txt"))


def test_read_orbax_returns_the_target_only(orbax_dir, small_params):
  params = run_dir.read_t5x_params(str(orbax_dir))[1]
  _assert_same_tree(params, small_params)  # not the optimizer slots, not step 100's params


def test_read_msgpack_with_tensorstore_and_inline_leaves(msgpack_dir, small_params):
  step_dir = msgpack_dir / "checkpoint_7"
  assert (step_dir / "target.encoder.layers_0.mlp.wi_0.kernel" / ".zarray").is_file()
  assert not (step_dir / "target.encoder.encoder_norm.scale").exists()  # inline in msgpack
  _assert_same_tree(run_dir.read_t5x_params(str(msgpack_dir))[1], small_params)


def test_read_msgpack_from_a_moved_directory(msgpack_dir, small_params, tmp_path):
  # Spec paths are relative to the step directory: a moved checkpoint reads from its new place.
  import shutil  # pylint: disable=g-import-not-at-top
  original, moved = tmp_path / "original", tmp_path / "moved"
  shutil.copytree(msgpack_dir / "checkpoint_7", original / "checkpoint_7")
  shutil.move(original, moved)
  _assert_same_tree(run_dir.read_t5x_params(str(moved))[1], small_params)
  shutil.rmtree(moved / "checkpoint_7" / "target.decoder.decoder_norm.scale")
  with pytest.raises(t5x_interop.BridgeError,
                     match=r"cannot read parameter 'decoder/decoder_norm/scale' from "
                     rf"{moved}/checkpoint_7/target.decoder.decoder_norm.scale/"):
    run_dir.read_t5x_params(str(moved))[1]


def test_bfloat16_checkpoint_reads_as_float32(tmp_path, small_params):
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  write_t5x_msgpack(tmp_path, small_params, 1, dtype=ml_dtypes.bfloat16)
  params = run_dir.read_t5x_params(str(tmp_path))[1]
  kernel = model_lib.flatten_params(params)["decoder/logits_dense/kernel"]
  assert kernel.dtype == np.float32
  expected = small_params["decoder"]["logits_dense"]["kernel"].astype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(kernel, expected.astype(np.float32))


def test_damaged_msgpack_is_named(tmp_path):
  step_dir = tmp_path / "checkpoint_3"
  step_dir.mkdir()
  (step_dir / "checkpoint").write_bytes(b"\xc1 not msgpack")
  with pytest.raises(t5x_interop.BridgeError, match=f"{step_dir}/checkpoint: not a t5x msgpack"):
    run_dir.read_t5x_params(str(tmp_path))[1]
  from flax import serialization  # pylint: disable=g-import-not-at-top
  (step_dir / "checkpoint").write_bytes(serialization.msgpack_serialize({"params": {}}))
  with pytest.raises(t5x_interop.BridgeError, match=r"no 'optimizer/target' entry \(found "
                     r"\['params'\]\)"):
    run_dir.read_t5x_params(str(tmp_path))[1]


def test_orbax_item_without_target_is_named(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(
      os.fspath(tmp_path), options=ocp.CheckpointManagerOptions(
          step_prefix="checkpoint", enable_async_checkpointing=False),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(use_ocdbt=True)})
  manager.save(5, args=ocp.args.Composite(state=ocp.args.PyTreeSave(
      {"params": {"w": np.ones(2, np.float32)}})))
  manager.wait_until_finished()
  manager.close()
  with pytest.raises(t5x_interop.BridgeError, match=r"checkpoint_5/state: no 'target' entry in "
                     r"the orbax item \(found \['params'\]\)"):
    run_dir.read_t5x_params(str(tmp_path))[1]


# ------------------------------------------------------------------------------------------
# Config inference and the name/shape check.
# ------------------------------------------------------------------------------------------


def test_config_from_params_recovers_the_shape(small_params):
  config = t5x_interop.config_from_params(small_params, dropout_rate=0.0)
  assert config == SMALL
  tied = dict(small_params, decoder={k: v for k, v in small_params["decoder"].items()
                                     if k != "logits_dense"})
  assert t5x_interop.config_from_params(tied).logits_via_embedding is True
  assert t5x_interop.config_from_params(small_params, dtype="bfloat16").dtype == "bfloat16"


def test_mismatches_name_the_parameter_and_both_shapes(small_params):
  flat = model_lib.flatten_params(small_params)
  wrong = dict(flat)
  wrong["encoder/layers_1/mlp/wo/kernel"] = np.zeros((12, 9), np.float32)
  del wrong["decoder/layers_0/encoder_decoder_attention/key/kernel"]
  wrong["encoder/layers_0/mlp/wi/kernel"] = np.zeros((8, 12), np.float32)  # a T5 1.0 MLP
  tree = model_lib.unflatten_params(wrong)
  with pytest.raises(t5x_interop.BridgeError) as error:
    t5x_interop.to_model_params(tree, SMALL, source="/ckpt/checkpoint_5")
  message = str(error.value)
  assert message.startswith("/ckpt/checkpoint_5: 3 parameter mismatch(es): ")
  assert ("parameter 'decoder/layers_0/encoder_decoder_attention/key/kernel' is missing from "
          "the t5x checkpoint (our model expects shape (8, 8))") in message
  assert ("parameter 'encoder/layers_1/mlp/wo/kernel': t5x checkpoint shape (12, 9) != our "
          "model's shape (12, 8)") in message
  assert ("parameter 'encoder/layers_0/mlp/wi/kernel' (shape (8, 12)) of the t5x checkpoint "
          "has no counterpart in our T5 v1.1 model") in message


def test_missing_shape_parameters_are_named():
  with pytest.raises(t5x_interop.BridgeError, match="parameter 'token_embedder/embedding' is "
                     "missing, so the model shape cannot be inferred"):
    t5x_interop.config_from_params({"encoder": {}}, source="/x")


@pytest.mark.parametrize("size, multiple, expected", [
    (1389, 128, 1408), (32100, 128, 32128), (128, 128, 128), (1, 128, 128), (21228, 1, 21228)])
def test_padded_vocab_size(size, multiple, expected):
  vocabulary = type("Vocab", (), {"vocab_size": size})()
  assert t5x_interop.padded_vocab_size(vocabulary, multiple) == expected


@hypothesis.given(size=st.integers(1, 10**6), multiple=st.integers(1, 512))
def test_padded_vocab_size_property(size, multiple):
  padded = t5x_interop.padded_vocab_size(type("V", (), {"vocab_size": size})(), multiple)
  assert padded % multiple == 0 and size <= padded < size + multiple


_configs = st.builds(
    model_lib.T5Config, vocab_size=st.integers(3, 30), emb_dim=st.integers(1, 6),
    num_heads=st.integers(1, 3), head_dim=st.integers(1, 3), mlp_dim=st.integers(1, 5),
    num_encoder_layers=st.integers(1, 3), num_decoder_layers=st.integers(1, 2),
    relative_attention_num_buckets=st.sampled_from([4, 8, 32]),
    logits_via_embedding=st.booleans())


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(config=_configs, seed=st.integers(0, 2**16), data=st.data())
def test_msgpack_round_trip_property(tmp_path_factory, config, seed, data):
  """Any T5 v1.1 shape written the t5x way reads back bit-exact with the same config."""
  params = _random_params(config, seed)
  names = sorted(model_lib.flatten_params(params))
  inline = data.draw(st.sets(st.sampled_from(names)))
  root = tmp_path_factory.mktemp("prop")
  write_t5x_msgpack(root, params, seed, inline=inline)
  read = run_dir.read_t5x_params(str(root))[1]
  _assert_same_tree(read, params)
  inferred = t5x_interop.config_from_params(read, dropout_rate=config.dropout_rate)
  assert inferred == config
  _assert_same_tree(t5x_interop.to_model_params(read, inferred), params)


# ------------------------------------------------------------------------------------------
# Conversion into our model directory, and the CLI.
# ------------------------------------------------------------------------------------------


def _tiny_vocabulary(path: Path) -> str:
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  return vocab_lib.train_sentencepiece(["张三去了北京大学。", "李四在上海。"], os.fspath(path),
                                       required_chars="")


def test_convert_writes_a_model_dir_our_tooling_loads(orbax_dir, small_params, tmp_path):
  out = tmp_path / "model"
  result = run_dir.convert_t5x(str(orbax_dir), str(out), dropout_rate=0.0)
  assert (result.step, result.source.kind, result.config) == (200, "orbax", SMALL)
  assert result.checkpoint_dir == str(out / "checkpoints" / "200")
  assert result.num_params == 2728 and result.vocabulary is None
  description = json.loads((out / "model.json").read_text())
  assert description["checkpoint"] == "checkpoints/200"
  assert description["vocabulary"] is None
  assert description["converted_from"] == {"path": str(orbax_dir / "checkpoint_200"),
                                           "format": "orbax", "step": 200}

  loaded = _load_converted(str(out))
  assert (loaded.config, loaded.step, loaded.vocabulary) == (SMALL, 200, None)
  _assert_same_tree(jax.tree.map(np.asarray, loaded.params), small_params)

  # model.gin describes the same network, as gin/models/<size>.gin files do.
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([str(out / "model.gin")], [])
    network = gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config()
  assert network.config == SMALL

  with pytest.raises(t5x_interop.BridgeError, match="already holds a model .* pass --overwrite"):
    run_dir.convert_t5x(str(orbax_dir), str(out))
  run_dir.convert_t5x(str(orbax_dir), str(out), step=100, overwrite=True)
  assert os.listdir(out / "checkpoints") == ["100"]


def test_convert_with_a_vocabulary_writes_a_servable_model_dir(tmp_path):
  from punified_jax import model_info  # pylint: disable=g-import-not-at-top
  # Our SentencePiece models hold 256 byte pieces, so this checkpoint's embedding has 384 rows.
  config = model_lib.T5Config(vocab_size=384, emb_dim=4, num_heads=1, head_dim=4, mlp_dim=4,
                              num_encoder_layers=1, num_decoder_layers=1)
  write_t5x_msgpack(tmp_path / "t5x", _random_params(config), 12)
  # The operative config t5x writes next to its checkpoints (a long value wrapped by gin).
  (tmp_path / "t5x" / "config.gin").write_text(
      "MIXTURE_OR_TASK_NAME = 'punified_ner_joint'\nTASK_FEATURE_LENGTHS = \\\n"
      "    {'inputs': 96, 'targets': 48}\nTRAIN_STEPS = 12\n")
  vocabulary = _tiny_vocabulary(tmp_path / "v.model")
  result = run_dir.convert_t5x(str(tmp_path / "t5x"), str(tmp_path / "m"), vocabulary=vocabulary)
  assert result.vocabulary == str(tmp_path / "m" / "vocab" / "v.model")
  assert result.task_feature_lengths == {"inputs": 96, "targets": 48}
  assert Path(result.vocabulary).read_bytes() == Path(vocabulary).read_bytes()
  description = json.loads((tmp_path / "m" / "model.json").read_text())
  assert (description["vocabulary"], description["vocabulary_source"]) == ("vocab/v.model",
                                                                           vocabulary)
  info = model_info.load_model_info(str(tmp_path / "m"))  # punified_model.json, as trainers write
  assert (info.t5_config.vocab_size, info.vocabulary_path) == (384, result.vocabulary)
  assert info.task_feature_lengths == {"inputs": 96, "targets": 48}
  assert info.extra == {"converted_from": {"path": str(tmp_path / "t5x" / "checkpoint_12"),
                                           "format": "msgpack", "step": 12},
                        "mixture_or_task_name": "punified_ner_joint"}
  assert _load_converted(str(tmp_path / "m")).vocabulary == result.vocabulary

  # Explicit lengths win; without any, model.json alone describes the directory.
  again = run_dir.convert_t5x(str(tmp_path / "t5x"), str(tmp_path / "m"), vocabulary=vocabulary,
                             task_feature_lengths={"inputs": 64, "targets": 32}, overwrite=True)
  assert model_info.load_model_info(str(tmp_path / "m")).task_feature_lengths == {
      "inputs": 64, "targets": 32} == again.task_feature_lengths
  (tmp_path / "t5x" / "config.gin").unlink()
  run_dir.convert_t5x(str(tmp_path / "t5x"), str(tmp_path / "m"), vocabulary=vocabulary,
                     overwrite=True)
  assert not (tmp_path / "m" / "punified_model.json").exists()
  info = model_info.load_model_info(str(tmp_path / "m"))
  assert (info.task_feature_lengths, info.vocabulary_path) == (None, result.vocabulary)
  with pytest.raises(t5x_interop.BridgeError, match="task feature lengths must be"):
    run_dir.convert_t5x(str(tmp_path / "t5x"), str(tmp_path / "m2"),
                       task_feature_lengths={"inputs": 0, "targets": 8})


def test_convert_records_the_dropout_of_the_t5x_run(tmp_path):
  """DROPOUT_RATE of config.gin, not T5Config's 0.1: further fine-tuning keeps the run's dropout."""
  from punified_jax import model_info  # pylint: disable=g-import-not-at-top
  from punified_jax.__main__ import main  # pylint: disable=g-import-not-at-top
  config = model_lib.T5Config(vocab_size=384, emb_dim=4, num_heads=1, head_dim=4, mlp_dim=4,
                              num_encoder_layers=1, num_decoder_layers=1)
  write_t5x_msgpack(tmp_path / "t5x", _random_params(config), 5)
  config_gin = tmp_path / "t5x" / "config.gin"
  config_gin.write_text("DROPOUT_RATE = 0.0\nTASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 16}\n"
                        "network.T5Config.dropout_rate = %DROPOUT_RATE\n")
  vocabulary = _tiny_vocabulary(tmp_path / "v.model")
  out = tmp_path / "m"
  result = run_dir.convert_t5x(str(tmp_path / "t5x"), str(out), vocabulary=vocabulary)
  assert result.config.dropout_rate == 0.0
  info = json.loads((out / model_info.MODEL_INFO_FILE).read_text())
  assert info["t5_config"]["dropout_rate"] == 0.0
  assert json.loads((out / "model.json").read_text())["config"]["dropout_rate"] == 0.0
  assert "DROPOUT_RATE = 0.0\n" in (out / "model.gin").read_text()

  # An explicit --dropout_rate still wins over the run's value.
  assert main(["from_t5x", "--checkpoint", str(tmp_path / "t5x"), "--output", str(out),
               "--vocabulary", vocabulary, "--dropout_rate", "0.2", "--overwrite"]) == 0
  info = json.loads((out / model_info.MODEL_INFO_FILE).read_text())
  assert info["t5_config"]["dropout_rate"] == 0.2

  # A DROPOUT_RATE that is not a literal (here gin.REQUIRED) is unknown: T5Config's default.
  config_gin.write_text("DROPOUT_RATE = %gin.REQUIRED\n"
                        "TASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 16}\n")
  again = run_dir.convert_t5x(str(tmp_path / "t5x"), str(out), vocabulary=vocabulary,
                             overwrite=True)
  assert again.config.dropout_rate == model_lib.T5Config.dropout_rate == 0.1


def test_convert_rejects_a_vocabulary_larger_than_the_embedding(msgpack_dir, tmp_path):
  vocabulary = _tiny_vocabulary(tmp_path / "big.model")
  with pytest.raises(t5x_interop.BridgeError, match=r"big.model has \d+ entries but the "
                     r"checkpoint's embedding has only 40 rows"):
    run_dir.convert_t5x(str(msgpack_dir), str(tmp_path / "out"), vocabulary=vocabulary)
  assert not (tmp_path / "out").exists()  # nothing written before the checks pass


def test_cli(msgpack_dir, tmp_path, capsys):
  from punified_jax.__main__ import main  # pylint: disable=g-import-not-at-top
  out = tmp_path / "cli"
  assert main(["from_t5x", "--checkpoint", str(msgpack_dir), "--output", str(out),
               "--dtype", "bfloat16"]) == 0
  printed = capsys.readouterr().out
  assert f"read msgpack t5x checkpoint {msgpack_dir}/checkpoint_7 (step 7)" in printed
  assert ("model: vocab_size=40 emb_dim=8 heads=2x4 mlp_dim=12 layers=2+1 tied_logits=False "
          "(2,728 parameters)") in printed
  assert json.loads((out / "model.json").read_text())["config"]["dtype"] == "bfloat16"
  assert main(["from_t5x", "--checkpoint", str(tmp_path / "nope"), "--output",
               str(tmp_path / "x")]) == 2
  assert f"error: t5x checkpoint '{tmp_path}/nope' does not exist" in capsys.readouterr().err


def test_bridged_params_run_in_our_model(msgpack_dir, tmp_path):
  """Logits of the converted model equal those of the same parameters never written at all."""
  run_dir.convert_t5x(str(msgpack_dir), str(tmp_path / "m"), dropout_rate=0.0)
  loaded = _load_converted(str(tmp_path / "m"))
  reference = _random_params(SMALL)
  tokens = np.array([[5, 6, 7, 1, 0], [8, 9, 1, 0, 0]], np.int32)
  network = model_lib.Transformer(loaded.config)
  got = network.apply({"params": loaded.params}, tokens, tokens, tokens, enable_dropout=False)
  want = network.apply({"params": reference}, tokens, tokens, tokens, enable_dropout=False)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ------------------------------------------------------------------------------------------
# gin/t5x/*.gin, checked as text (parsing them needs t5x).
# ------------------------------------------------------------------------------------------


def _gin(name: str) -> dict:
  """Includes, imports and bindings ("selector.param" or MACRO -> value text) of a gin file."""
  text = (GIN_DIR / name).read_text()
  includes, imports, bindings, order = [], [], {}, []
  block = None
  for raw in text.splitlines():
    line = raw.split("#", 1)[0].rstrip()
    if not line.strip():
      continue
    if match := re.fullmatch(r"include '([^']+)'", line):
      includes.append(match.group(1))
      order.append(("include", match.group(1)))
    elif match := re.fullmatch(r"(?:from (\S+) )?import (\S+)(?: as (\S+))?", line):
      module = f"{match.group(1)}.{match.group(2)}" if match.group(1) else match.group(2)
      imports.append((module, match.group(3) or match.group(2).split(".")[-1]))
    elif match := re.fullmatch(r"(\S+):", line):
      block = match.group(1)
    elif match := re.fullmatch(r"  (\w+) = (.+)", line):
      bindings[f"{block}.{match.group(1)}"] = match.group(2)
    elif match := re.fullmatch(r"(\S+) = (.+)", line):
      block = None
      bindings[match.group(1)] = match.group(2)
      order.append(("bind", match.group(1)))
    else:
      raise AssertionError(f"{name}: unexpected gin line {raw!r}")
  return {"includes": includes, "imports": imports, "bindings": bindings, "order": order,
          "text": text}


T5X_FILES = {"t5x/examples/t5/t5_1_1/base.gin", "t5x/examples/t5/t5_1_1/small.gin",
             "t5x/examples/t5/t5_1_1/large.gin", "t5x/configs/runs/pretrain.gin",
             "t5x/configs/runs/finetune.gin", "t5x/configs/runs/eval.gin",
             "t5x/configs/runs/infer.gin"}


@pytest.mark.parametrize("name", [*RUN_FILES, *(f"sizes/{s}" for s in SIZE_FILES),
                                  "vocabulary.gin", "partitioning.gin", "greedy.gin"])
def test_gin_includes_and_imports_resolve(name):
  parsed = _gin(name)
  for include in parsed["includes"]:
    if include.startswith("gin/"):
      assert (REPO / include).is_file(), f"{name}: {include} is not in the repository"
    else:
      assert include in T5X_FILES, f"{name}: unexpected include {include}"
      if HAS_T5X:
        t5x_root = Path(importlib.util.find_spec("t5x").origin).parent.parent
        assert (t5x_root / include).is_file(), f"{name}: t5x has no {include}"
  ours = [(module, alias) for module, alias in parsed["imports"]
          if module.split(".")[0] in ("tasks", "punified_jax")]
  for module, alias in ours:
    imported = importlib.import_module(module)
    for reference in re.findall(rf"@{alias}\.(\w+)", parsed["text"]):
      assert hasattr(imported, reference), f"{name}: {module} has no {reference}"


@pytest.mark.parametrize("name, task, beam, train", [
    ("adapt.gin", "'punified_prefix_lm'", None, True),
    ("finetune_joint.gin", "'punified_ner_joint'", "5", True),
    ("finetune_single.gin", "%gin.REQUIRED", "10", True),
    ("eval.gin", "'punified_ner_joint'", "5", False),
    ("infer.gin", "'punified_ner_joint'", "10", False)])
def test_run_files_set_our_task_module_and_decoding(name, task, beam, train):
  parsed = _gin(name)
  bindings = parsed["bindings"]
  assert ("tasks", "tasks") in parsed["imports"]
  assert bindings["MIXTURE_OR_TASK_NAME"] == task
  assert bindings["MIXTURE_OR_TASK_MODULE"] == "'tasks'"
  assert "gin/t5x/partitioning.gin" in parsed["includes"]
  if beam is not None:
    assert bindings["BEAM_SIZE"] == beam
    assert bindings["models.DecoderParams.num_decodes"] == "%BEAM_SIZE"
    assert bindings["models.EncoderDecoderModel.default_decoder_params"] == (
        "@models.DecoderParams()")
  if train:
    assert bindings["USE_CACHED_TASKS"] == "False"  # our tasks are never cached offline
    assert "DROPOUT_RATE" in bindings
  else:
    assert bindings["utils.DatasetConfig.split"] in ("%EVAL_SPLIT", "%INFER_SPLIT")
  # The t5x run file comes first, so our bindings override it.
  assert parsed["order"][0][0] == "include" and parsed["order"][0][1].startswith("t5x/configs")


def test_registered_names_in_run_files_exist():
  import seqio  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top,unused-import
  for name in RUN_FILES:
    value = _gin(name)["bindings"]["MIXTURE_OR_TASK_NAME"]
    if value.startswith("'"):
      assert seqio.get_mixture_or_task(value.strip("'")) is not None
  # t5x's verify_matching_vocabs compares the model's vocabulary with the tasks' by ==.
  assert tasks.vocabulary_for() == tasks.vocabulary_for()


def test_adapt_logs_inference_evaluations():
  bindings = _gin("adapt.gin")["bindings"]
  assert bindings["train_script.train.inference_evaluator_cls"] == "@seqio.Evaluator"
  loggers = bindings["seqio.Evaluator.logger_cls"]
  assert loggers.index("@seqio.TensorBoardLogger") < loggers.index("@seqio.JSONLogger")
  assert bindings["utils.RestoreCheckpointConfig.path"] == "%INITIAL_CHECKPOINT_PATH"
  assert bindings["INITIAL_CHECKPOINT_PATH"] == "[]"


def test_sizes_put_our_vocabulary_after_t5x_size_file():
  for size in SIZE_FILES:
    includes = _gin(f"sizes/{size}")["includes"]
    t5x_size = "base" if size == "tiny.gin" else size[:-4]
    assert includes == [f"t5x/examples/t5/t5_1_1/{t5x_size}.gin", "gin/t5x/vocabulary.gin"]
  vocabulary = _gin("vocabulary.gin")["bindings"]
  assert vocabulary["VOCABULARY"] == "@registry.vocabulary_for()"
  assert vocabulary["network.T5Config.vocab_size"] == "%VOCAB_SIZE"
  partitioning = _gin("partitioning.gin")["bindings"]
  assert partitioning["partitioning.PjitPartitioner.num_partitions"] == "%NUM_PARTITIONS"


def test_t5x_tiny_has_the_shape_of_our_tiny():
  ours = {}
  for line in (REPO / "gin" / "models" / "tiny.gin").read_text().splitlines():
    if match := re.fullmatch(r"  (\w+) = (\S+)", line):
      ours[match.group(1)] = match.group(2)
  t5x_tiny = {key.split(".")[-1]: value for key, value in _gin("sizes/tiny.gin")["bindings"].items()
              if key.startswith("network.T5Config.")}
  for field in ("emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                "num_decoder_layers"):
    assert t5x_tiny[field] == ours[field], field
  assert t5x_tiny["dtype"] == "'float32'"


# ------------------------------------------------------------------------------------------
# Real t5x: train, eval, infer, then the bridge.
# ------------------------------------------------------------------------------------------


def _run_t5x(module: str, files, bindings: dict, env: dict, cwd: Path) -> None:
  command = [sys.executable, "-m", f"t5x.{module}", f"--gin_search_paths={REPO}"]
  command += [f"--gin_file={name}" for name in files]
  command += [f"--gin.{key}={value}" for key, value in bindings.items()]
  done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
  if done.returncode != 0:
    pytest.fail(f"t5x.{module} failed ({done.returncode}):\n{done.stderr[-4000:]}")


@pytest.fixture(scope="module")
def t5x_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("t5x_runs")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PUNIFIED_DATASETS="resume,ecommerce", PUNIFIED_CACHE=str(root / "cache"),
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  for key in ("PUNIFIED_VOCAB", "PUNIFIED_TFDS_DIR", "PUNIFIED_FORMAT"):
    env.pop(key, None)
  env["PUNIFIED_RAW_DIR"] = "builtin"  # the built-in corpus and its default vocabulary
  tiny = "gin/t5x/sizes/tiny.gin"
  _run_t5x("train", [tiny, "gin/t5x/adapt.gin"], {
      "MODEL_DIR": f"'{root / 'adapt'}'", "TRAIN_STEPS": 3, "BATCH_SIZE": 4,
      "TASK_FEATURE_LENGTHS": "{'inputs': 64, 'targets': 64}", "CHECKPOINT_PERIOD": 3,
      "EVAL_PERIOD": 3, "EVAL_STEPS": 1}, env, root)
  _run_t5x("train", [tiny, "gin/t5x/finetune_joint.gin"], {
      "MODEL_DIR": f"'{root / 'joint'}'",
      "INITIAL_CHECKPOINT_PATH": f"'{root / 'adapt' / 'checkpoint_3'}'",
      "TRAIN_STEPS": 6, "BATCH_SIZE": 4, "TASK_FEATURE_LENGTHS": "{'inputs': 128, 'targets': 96}",
      "EVAL_PERIOD": 3, "CHECKPOINT_PERIOD": 3, "EVAL_STEPS": 1, "EVALUATOR_NUM_EXAMPLES": 4,
      "BEAM_SIZE": 2}, env, root)
  checkpoint = root / "joint" / "checkpoint_6"
  _run_t5x("eval", [tiny, "gin/t5x/eval.gin"], {
      "CHECKPOINT_PATH": f"'{checkpoint}'", "EVAL_OUTPUT_DIR": f"'{root / 'eval'}'",
      "EVALUATOR_NUM_EXAMPLES": 4, "BEAM_SIZE": 2}, env, root)
  for mode, files in (("predict", ["gin/t5x/greedy.gin"]), ("score", [])):
    _run_t5x("infer", [tiny, "gin/t5x/infer.gin", *files], {
        "CHECKPOINT_PATH": f"'{checkpoint}'", "INFER_OUTPUT_DIR": f"'{root / mode}'",
        "MIXTURE_OR_TASK_NAME": "'punified_ner_ecommerce'", "INFER_MODE": f"'{mode}'",
        "TASK_FEATURE_LENGTHS": "{'inputs': 128, 'targets': 64}"}, env, root)
  return root, env


def _metric_lines(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(not HAS_T5X, reason="t5x is not installed (optional; see docs/t5x.md)")
def test_t5x_train_and_eval_report_our_metric(t5x_runs):
  root, _ = t5x_runs
  assert sorted(p.name for p in (root / "joint").glob("checkpoint_*")) == [
      "checkpoint_3", "checkpoint_6"]  # resumed from the adapted step 3
  for directory in (root / "joint" / "inference_eval", root / "eval" / "inference_eval"):
    step = 6
    for task in ("punified_ner_resume", "punified_ner_ecommerce"):
      last = _metric_lines(directory / f"{task}-metrics.jsonl")[-1]
      assert last["step"] == step
      for key in ("macro_f1", "macro_precision", "macro_recall", "offset_macro_f1"):
        assert 0.0 <= last[key] <= 100.0, (task, key)
      predictions = _metric_lines(directory / f"{task}-{step:06d}.jsonl")
      assert len(predictions) == 4
      assert "mentions" in predictions[0]["prediction"]  # our postprocessor's record


@pytest.mark.skipif(not HAS_T5X, reason="t5x is not installed (optional; see docs/t5x.md)")
def test_t5x_checkpoint_bridges_into_our_model(t5x_runs, tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from punified_jax import generate  # pylint: disable=g-import-not-at-top
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from punified_jax.__main__ import main  # pylint: disable=g-import-not-at-top
  root, _ = t5x_runs
  # The vocabulary the t5x runs trained on the built-in corpus (gin/t5x/vocabulary.gin).
  trained = next((root / "cache").rglob("*.model"))
  assert main(["from_t5x", "--checkpoint", str(root / "joint"), "--output", str(tmp_path / "m"),
               "--vocabulary", str(trained)]) == 0
  loaded = _load_converted(str(tmp_path / "m"))
  assert (loaded.step, loaded.config.emb_dim, loaded.config.vocab_size % 128) == (6, 32, 0)
  vocabulary = vocab_lib.get_vocabulary(loaded.vocabulary)
  network = model_lib.Transformer(loaded.config)
  predicted = _metric_lines(next((root / "predict").glob("*-predict.jsonl-?????-of-?????")))
  scored = _metric_lines(next((root / "score").glob("*-score.jsonl-?????-of-?????")))
  assert len(predicted) == len(scored) > 0

  def batch(texts, length):
    ids = np.zeros((len(texts), length), np.int32)
    for row, text in enumerate(texts):
      encoded = vocabulary.encode(text)[:length - 1] + [vocabulary.eos_id]
      ids[row, :len(encoded)] = encoded
    return ids

  inputs = batch([p["inputs"]["inputs_pretokenized"] for p in predicted], 128)
  tokens, _ = generate.predict_batch(network, loaded.params, jnp.asarray(inputs), beam_size=1,
                                     max_decode_length=64)
  ours = []
  for row in np.asarray(tokens[:, 0]).tolist():
    row = row[:row.index(vocabulary.eos_id)] if vocabulary.eos_id in row else row
    ours.append(vocabulary.decode([t for t in row if t]))
  # Greedy (gin/t5x/greedy.gin on t5x's side): the same text for every example.
  assert ours == [p["prediction"] for p in predicted]

  targets = batch([s["inputs"]["targets_pretokenized"] for s in scored], 64)
  decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
  logits = network.apply({"params": loaded.params}, jnp.asarray(batch(
      [s["inputs"]["inputs_pretokenized"] for s in scored], 128)), jnp.asarray(decoder_inputs),
      jnp.asarray(targets), enable_dropout=False)
  log_probs = jax.nn.log_softmax(np.asarray(logits, np.float32), axis=-1)
  token_scores = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  ours_scores = (np.asarray(token_scores) * (targets > 0)).sum(-1)
  np.testing.assert_allclose(ours_scores, [s["score"] for s in scored], rtol=0, atol=1e-3)

  # The converted directory is a complete model directory: our extraction API serves it.
  from punified_jax import inference  # pylint: disable=g-import-not-at-top
  extractor = inference.Extractor.load(str(tmp_path / "m"), beam_size=2)
  assert extractor.checkpoint_path == str(tmp_path / "m" / "checkpoints" / "6" / "state")
  assert (extractor.max_input_length, extractor.max_decode_length) == (128, 96)  # t5x's run
  text = "张三昨天去了北京大学。"
  [entities] = extractor.extract([text], types=["名称", "组织"])
  for entity in entities:  # an untrained model: whatever it finds must be well-formed
    assert entity["type"] in ("名称", "组织")
    assert text[entity["start"]:entity["end"]] == entity["text"]


@pytest.mark.parametrize("module", ["t5x_interop", "t5x_bridge"])
def test_padded_vocab_size_through_gin_under_new_and_old_module_name(module):
  # gin/t5x/vocabulary.gin's call, with the current module name and with the name it had
  # before the rename (kept as an alias module so users' gin files still parse).
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin.parse_config(
        "from __gin__ import dynamic_registration\n"
        f"from punified_jax import {module}\n"
        f"SIZE = @{module}.padded_vocab_size()\n"
        f"{module}.padded_vocab_size.multiple = 128\n")
    vocabulary = type("V", (), {"vocab_size": 4864 + 1})()
    assert gin.query_parameter("%SIZE").scoped_configurable_fn(vocabulary) == 4992
  finally:
    gin.clear_config()
