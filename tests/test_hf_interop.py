"""Hugging Face interop: import (vs HF's own logits, stored as fixtures), export (vs HF loading it,
through the torch env), mismatch errors, the UER-style WordPiece path, and a fine-tune round trip.

The fixtures in tests/fixtures/hf/ come from tools/make_hf_fixtures.py (torch + transformers):
tiny random T5/MT5 directories and the logits / greedy outputs HF computed for them.  Tests that
need HF itself run tools/hf_check.py with the torch env's interpreter (.venv-torch/bin/python, or
$PUNIFIED_TORCH_PYTHON; `bash tools/env/torch_env.sh` creates it) and are skipped without it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import trainer_helpers  # pylint: disable=unused-import  # before JAX starts: fast-compile XLA flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from punified_jax import __main__ as cli
from punified_jax import run_dir as run_dir_lib
from punified_jax import generate
from punified_jax import hf_files
from punified_jax import hf_interop
from punified_jax import model as model_lib
from punified_jax import model_info
from punified_jax import vocab as vocab_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "hf")
NAMES = ("t5_untied", "t5_tied", "mt5", "uer_tiny")


def _torch_python() -> str | None:
  candidate = os.environ.get("PUNIFIED_TORCH_PYTHON") or os.path.join(REPO_ROOT, ".venv-torch", "bin",
                                                                       "python")
  return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


TORCH_PYTHON = _torch_python()
needs_torch_env = pytest.mark.skipif(
    TORCH_PYTHON is None, reason="no torch env (.venv-torch or $PUNIFIED_TORCH_PYTHON): run "
    "`bash tools/env/torch_env.sh`")


def fixture_dir(name: str) -> str:
  return os.path.join(FIXTURES, name)


def expected(name: str) -> dict[str, np.ndarray]:
  with np.load(os.path.join(fixture_dir(name), "expected.npz")) as data:
    return {key: data[key] for key in data.files}


def expected_info(name: str) -> dict:
  with open(os.path.join(fixture_dir(name), "expected.json"), encoding="utf-8") as handle:
    return json.load(handle)


@functools.lru_cache(maxsize=None)
def _logits_fn(config: model_lib.T5Config):
  network = model_lib.Transformer(config)

  @jax.jit
  def logits(params, encoder_ids, decoder_ids):
    return network.apply({"params": params}, encoder_ids, decoder_ids, jnp.ones_like(decoder_ids),
                         enable_dropout=False)

  return logits


def our_logits(config, params, encoder_ids, decoder_ids) -> np.ndarray:
  return np.asarray(_logits_fn(config)(params, jnp.asarray(encoder_ids, jnp.int32),
                                       jnp.asarray(decoder_ids, jnp.int32)))


def assert_greedy_matches(ours: np.ndarray, hf: np.ndarray) -> None:
  """ours [b, len] (no start token, 0 after EOS) vs HF's [b, 1 + n] (start token first)."""
  generated = hf[:, 1:]
  np.testing.assert_array_equal(ours[:, :generated.shape[1]], generated)
  assert not ours[:, generated.shape[1]:].any()


# ----------------------------------------------------------------------------------------------
# Import: HF's logits, from the fixtures (no torch needed).
# ----------------------------------------------------------------------------------------------


def test_t5_config_from_hf_reads_shapes_head_and_special_ids():
  config = hf_interop.t5_config_from_hf(fixture_dir("uer_tiny"))
  assert config == model_lib.T5Config(
      vocab_size=194, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
      num_decoder_layers=2, dropout_rate=0.0, dtype="float32", relative_attention_num_buckets=32,
      relative_attention_max_distance=128, logits_via_embedding=False, decoder_start_token_id=101)
  untied = hf_interop.t5_config_from_hf(fixture_dir("t5_untied"))
  assert (untied.num_encoder_layers, untied.num_decoder_layers, untied.num_heads, untied.head_dim,
          untied.emb_dim, untied.logits_via_embedding, untied.decoder_start_token_id) == (2, 3, 3, 8, 16,
                                                                                          False, 0)
  mt5 = hf_interop.t5_config_from_hf(fixture_dir("mt5"), dropout_rate=0.1, dtype="bfloat16")
  assert (mt5.relative_attention_num_buckets, mt5.relative_attention_max_distance, mt5.dropout_rate,
          mt5.dtype) == (16, 64, 0.1, "bfloat16")
  # A tied, scaled head (original-T5 style) is exactly our logits_via_embedding.
  assert hf_interop.t5_config_from_hf(fixture_dir("t5_tied")).logits_via_embedding


@pytest.mark.parametrize("name", NAMES)
def test_import_gives_hf_logits_and_greedy_output(name):
  config = hf_interop.t5_config_from_hf(fixture_dir(name))
  params = hf_interop.load_hf_params(fixture_dir(name), config)
  data = expected(name)
  logits = our_logits(config, params, data["encoder_input_ids"], data["decoder_input_ids"])
  assert logits.shape == data["logits"].shape
  np.testing.assert_allclose(logits, data["logits"], atol=1e-4, rtol=0)
  eos = expected_info(name)["hf_model"]["eos_token_id"]
  tokens, _ = generate.predict_batch(model_lib.Transformer(config), params,
                                     jnp.asarray(data["encoder_input_ids"]), beam_size=1,
                                     max_decode_length=6, eos_id=eos)
  assert_greedy_matches(np.asarray(tokens[:, 0]), data["greedy"])


def test_relative_position_buckets_equal_hf():
  """Our bucket formula (t5x's, with float32 eps inside the log) vs HF's, |distance| <= 600."""
  with np.load(os.path.join(FIXTURES, "buckets.npz")) as tables:
    relative = jnp.asarray(tables["relative_position"])
    for key in tables.files:
      if key == "relative_position":
        continue
      kind, buckets, distance = key.split("_")
      ours = model_lib.relative_position_bucket(relative, bidirectional=kind == "bi",
                                                num_buckets=int(buckets), max_distance=int(distance))
      np.testing.assert_array_equal(np.asarray(ours), tables[key].astype(np.int32), err_msg=key)


def _with_config(tmp_path, name: str, **changes) -> str:
  """A copy of a fixture directory with config.json fields changed (None deletes a field)."""
  directory = tmp_path / f"{name}_changed"
  shutil.copytree(fixture_dir(name), directory)
  path = directory / "config.json"
  config = json.loads(path.read_text())
  for key, value in changes.items():
    if value is None:
      config.pop(key, None)
    else:
      config[key] = value
  path.write_text(json.dumps(config))
  return str(directory)


def test_head_variants_follow_hf_scaling(tmp_path):
  """The head is linear in the decoder output: HF's d_model ** -0.5 scaling divides the logits by
  sqrt(d_model) = 4 in these fixtures, whichever way our model represents the head."""
  tied = expected("t5_tied")
  # Tied + scaled, loaded as an untied logits_dense (shared^T * d ** -0.5): same logits.
  config = hf_interop.t5_config_from_hf(fixture_dir("t5_tied"), logits_via_embedding=False)
  params = hf_interop.load_hf_params(fixture_dir("t5_tied"), config)
  np.testing.assert_allclose(our_logits(config, params, tied["encoder_input_ids"], tied["decoder_input_ids"]),
                             tied["logits"], atol=1e-4, rtol=0)
  # Tied but unscaled (a transformers 5.x v1.1 file whose lm_head equals shared): 4x the logits.
  unscaled_dir = _with_config(tmp_path, "t5_tied", scale_decoder_outputs=False)
  config = hf_interop.t5_config_from_hf(unscaled_dir)
  assert not config.logits_via_embedding
  params = hf_interop.load_hf_params(unscaled_dir, config)
  np.testing.assert_allclose(our_logits(config, params, tied["encoder_input_ids"], tied["decoder_input_ids"]),
                             4.0 * tied["logits"], atol=4e-4, rtol=0)
  # An own head that HF scales (original T5 with tie_word_embeddings true and an lm_head).
  untied = expected("t5_untied")
  scaled_dir = _with_config(tmp_path, "t5_untied", tie_word_embeddings=True)
  config = hf_interop.t5_config_from_hf(scaled_dir)
  params = hf_interop.load_hf_params(scaled_dir, config)
  np.testing.assert_allclose(our_logits(config, params, untied["encoder_input_ids"], untied["decoder_input_ids"]),
                             untied["logits"] / 4.0, atol=1e-4, rtol=0)
  with pytest.raises(hf_interop.HfInteropError, match="logits_via_embedding=True needs a tied head"):
    hf_interop.t5_config_from_hf(fixture_dir("t5_untied"), logits_via_embedding=True)


def test_sharded_and_bfloat16_safetensors(tmp_path):
  import ml_dtypes
  tensors = load_file(os.path.join(fixture_dir("mt5"), "model.safetensors"))
  names = sorted(tensors)
  sharded = tmp_path / "sharded"
  shutil.copytree(fixture_dir("mt5"), sharded)
  os.remove(sharded / "model.safetensors")
  halves = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
  for shard, shard_names in halves.items():
    save_file({n: tensors[n] for n in shard_names}, str(sharded / shard), metadata={"format": "pt"})
  index = {"metadata": {}, "weight_map": {n: s for s, ns in halves.items() for n in ns}}
  (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
  reference = hf_interop.load_hf_params(fixture_dir("mt5"))
  jax.tree.map(np.testing.assert_array_equal, hf_interop.load_hf_params(str(sharded)), reference)

  bf16 = tmp_path / "bf16"
  shutil.copytree(fixture_dir("mt5"), bf16)
  save_file({n: t.astype(ml_dtypes.bfloat16) for n, t in tensors.items()}, str(bf16 / "model.safetensors"),
            metadata={"format": "pt"})
  rounded = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), reference)
  jax.tree.map(np.testing.assert_array_equal, hf_interop.load_hf_params(str(bf16)), rounded)


# ----------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------


def test_shape_mismatch_names_the_parameter_and_both_shapes():
  config = hf_interop.t5_config_from_hf(fixture_dir("t5_untied"))
  wider = model_lib.T5Config(**{**config.__dict__, "mlp_dim": 40})
  with pytest.raises(hf_interop.HfInteropError) as error:
    hf_interop.load_hf_params(fixture_dir("t5_untied"), wider)
  message = str(error.value)
  assert ("'encoder.block.0.layer.1.DenseReluDense.wi_0.weight' (our 'encoder/layers_0/mlp/wi_0/kernel'): "
          "checkpoint shape (24, 16), i.e. (16, 24) as ours != our model's (16, 40)") in message
  assert "parameter mismatch(es)" in message and message.startswith(fixture_dir("t5_untied"))


def test_layer_count_mismatch_and_missing_tensor_are_reported():
  config = hf_interop.t5_config_from_hf(fixture_dir("t5_untied"))
  fewer = model_lib.T5Config(**{**config.__dict__, "num_decoder_layers": 2})
  with pytest.raises(hf_interop.HfInteropError,
                     match=r"'decoder\.block\.2\.layer\.0\.SelfAttention\.q\.weight' \(shape \(24, 16\)\) "
                     r"has no counterpart in our T5 v1.1 model \(2 encoder \+ 2 decoder layers\)"):
    hf_interop.load_hf_params(fixture_dir("t5_untied"), fewer)
  tensors = hf_files.read_hf_tensors(fixture_dir("t5_untied"))
  del tensors["decoder.final_layer_norm.weight"]
  hf_config = hf_files.read_hf_config(fixture_dir("t5_untied"))
  with pytest.raises(hf_interop.HfInteropError,
                     match=r"'decoder\.final_layer_norm\.weight' \(our 'decoder/decoder_norm/scale', "
                     r"shape \(16,\)\) is missing from the checkpoint"):
    hf_interop.convert_hf_tensors(tensors, hf_config, config, source="x")
  tensors = hf_files.read_hf_tensors(fixture_dir("t5_untied"))
  tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"] + 1.0
  with pytest.raises(hf_interop.HfInteropError, match="'encoder.embed_tokens.weight' differs from shared.weight"):
    hf_interop.convert_hf_tensors(tensors, hf_config, config, source="x")
  # An identical copy (some checkpoints store one) is accepted.
  tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"].copy()
  hf_interop.convert_hf_tensors(tensors, hf_config, config, source="x")


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "bert"}, "model_type 'bert' is not supported"),
    ({"feed_forward_proj": "relu"}, "original-T5 \\(1.0\\) checkpoint with a ReLU MLP"),
    ({"feed_forward_proj": None}, "feed_forward_proj 'relu' is not supported"),  # T5's default
    ({"layer_norm_epsilon": 1e-5}, "layer_norm_epsilon 1e-05 differs"),
    ({"d_model": 0}, "field 'd_model' must be a positive integer, got 0"),
    ({"num_heads": None}, "field 'num_heads' is missing"),
    ({"is_encoder_decoder": False}, "is_encoder_decoder is false"),
])
def test_unsupported_configs_are_clear_errors(tmp_path, changes, message):
  directory = _with_config(tmp_path, "t5_untied", **changes)
  with pytest.raises(hf_interop.HfInteropError, match=message) as error:
    hf_interop.t5_config_from_hf(directory)
  assert os.path.join(directory, "config.json") in str(error.value)


def test_unreadable_directories_name_the_file(tmp_path):
  with pytest.raises(hf_interop.HfInteropError, match="does not exist"):
    hf_files.read_hf_config(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(hf_interop.HfInteropError, match=r"empty/config.json does not exist: not a Hugging Face"):
    hf_files.read_hf_config(str(tmp_path / "empty"))
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "config.json").write_text('{\n  "d_model": 16,\n  oops\n}')
  with pytest.raises(hf_interop.HfInteropError, match=r"broken/config.json:3: not valid JSON"):
    hf_files.read_hf_config(str(broken))
  no_weights = tmp_path / "no_weights"
  no_weights.mkdir()
  shutil.copy(os.path.join(fixture_dir("mt5"), "config.json"), no_weights)
  assert not hf_files.is_hf_checkpoint_dir(str(no_weights))
  with pytest.raises(hf_interop.HfInteropError, match="no weights found"):
    hf_interop.load_hf_params(str(no_weights))
  corrupt = tmp_path / "corrupt"
  shutil.copytree(fixture_dir("mt5"), corrupt)
  (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
  with pytest.raises(hf_interop.HfInteropError, match=r"corrupt/model.safetensors: not a readable safetensors"):
    hf_interop.load_hf_params(str(corrupt))


def test_pytorch_bin_without_torch_says_how_to_convert(tmp_path, monkeypatch):
  directory = tmp_path / "bin"
  shutil.copytree(fixture_dir("mt5"), directory)
  os.remove(directory / "model.safetensors")
  (directory / "pytorch_model.bin").write_bytes(b"PK")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  assert hf_files.is_hf_checkpoint_dir(str(directory))
  with pytest.raises(hf_interop.HfInteropError,
                     match=r"pytorch_model.bin needs torch.*tools/hf_check.py convert-bin"):
    hf_interop.load_hf_params(str(directory))


def test_pytorch_bin_goes_through_torch_load(tmp_path, monkeypatch):
  """The .bin path with a stand-in for torch (the main env has none): names and dtypes map."""
  tensors = load_file(os.path.join(fixture_dir("mt5"), "model.safetensors"))

  class FakeTensor:
    def __init__(self, array):
      self.array = array

    def detach(self):
      return self

    def to(self, dtype):
      assert dtype == "float32"
      return self

    def cpu(self):
      return self

    def numpy(self):
      return self.array

  calls = []

  class FakeTorch:
    float32 = "float32"

    @staticmethod
    def load(path, map_location, weights_only):
      calls.append((os.path.basename(path), map_location, weights_only))
      return {name: FakeTensor(array) for name, array in tensors.items()}

  directory = tmp_path / "bin"
  shutil.copytree(fixture_dir("mt5"), directory)
  os.remove(directory / "model.safetensors")
  (directory / "pytorch_model.bin").write_bytes(b"PK")
  monkeypatch.setitem(sys.modules, "torch", FakeTorch)
  params = hf_interop.load_hf_params(str(directory))
  assert calls[-1] == ("pytorch_model.bin", "cpu", True)
  jax.tree.map(np.testing.assert_array_equal, params, hf_interop.load_hf_params(fixture_dir("mt5")))


# ----------------------------------------------------------------------------------------------
# Export (files and the round trip through our own reader; HF loading is below).
# ----------------------------------------------------------------------------------------------


@st.composite
def small_configs(draw):
  heads = draw(st.integers(1, 3))
  return model_lib.T5Config(
      vocab_size=draw(st.integers(8, 40)), emb_dim=draw(st.sampled_from([4, 6, 8])), num_heads=heads,
      head_dim=draw(st.integers(1, 4)), mlp_dim=draw(st.integers(2, 10)),
      num_encoder_layers=draw(st.integers(1, 3)), num_decoder_layers=draw(st.integers(1, 3)),
      relative_attention_num_buckets=draw(st.sampled_from([8, 16, 32])),
      relative_attention_max_distance=draw(st.sampled_from([16, 128])),
      logits_via_embedding=draw(st.booleans()), decoder_start_token_id=draw(st.integers(0, 7)),
      dropout_rate=0.0)


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(config=small_configs(), seed=st.integers(0, 2**16))
def test_export_then_import_is_the_identity(tmp_path_factory, config, seed):
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(np.float32),
                        model_lib.param_shapes(config))
  directory = tmp_path_factory.mktemp("export")
  hf_interop.export_hf(params, config, str(directory), overwrite=True)
  hf_config = json.loads((directory / "config.json").read_text())
  assert hf_config["tie_word_embeddings"] == config.logits_via_embedding
  assert hf_config["decoder_start_token_id"] == config.decoder_start_token_id
  imported_config = hf_interop.t5_config_from_hf(str(directory), dropout_rate=0.0)
  assert imported_config == config
  back = hf_interop.load_hf_params(str(directory), imported_config)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_export_writes_uer_style_wordpiece_tokenizer_files(tmp_path):
  config = hf_interop.t5_config_from_hf(fixture_dir("uer_tiny"))
  params = hf_interop.load_hf_params(fixture_dir("uer_tiny"), config)
  vocab_path = os.path.join(fixture_dir("uer_tiny"), "vocab.txt")
  result = hf_interop.export_hf(params, config, str(tmp_path / "out"), vocabulary_path=vocab_path)
  assert result.files == ("config.json", "model.safetensors", "special_tokens_map.json",
                          "tokenizer_config.json", "vocab.txt")
  hf_config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert {k: hf_config[k] for k in ("model_type", "architectures", "decoder_start_token_id", "eos_token_id",
                                    "pad_token_id", "tie_word_embeddings", "feed_forward_proj",
                                    "tokenizer_class")} == {
      "model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "decoder_start_token_id": 101,
      "eos_token_id": 102, "pad_token_id": 0, "tie_word_embeddings": False,
      "feed_forward_proj": "gated-gelu", "tokenizer_class": "BertTokenizer"}
  lines = (tmp_path / "out" / "vocab.txt").read_text(encoding="utf-8").split("\n")
  original = open(vocab_path, encoding="utf-8").read().split("\n")
  # Same ids; only the markers' reserved lines are renamed to the markers.
  assert lines[:5] == ["[PAD]", "<entity>", "<text>", "NULL", "[unused4]"]
  assert lines[4:] == original[4:]
  tokenizer_config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
  assert tokenizer_config["tokenizer_class"] == "BertTokenizer" and tokenizer_config["do_lower_case"]
  assert tokenizer_config["added_tokens_decoder"]["3"] == {
      "content": "NULL", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
      "special": False}
  assert tokenizer_config["added_tokens_decoder"]["102"]["special"]
  # Our own reader of the exported vocabulary gives the original ids (markers included).
  exported = hf_files.hf_vocabulary(str(tmp_path / "out"))
  ours = vocab_lib.WordPieceVocabulary(vocab_path)
  text = "<entity>地点<entity>组织<text>张三去了北京。NULL null"
  assert exported.encode(text) == ours.encode(text) == [
      1, 157, 158, 1, 159, 160, 2, 167, 168, 173, 174, 175, 176, 109, 3, 100]
  with pytest.raises(hf_interop.HfInteropError, match="exists and is not empty; pass overwrite=True"):
    hf_interop.export_hf(params, config, str(tmp_path / "out"), vocabulary_path=vocab_path)


def test_export_rejects_params_of_another_config(tmp_path):
  config = hf_interop.t5_config_from_hf(fixture_dir("mt5"))
  params = hf_interop.load_hf_params(fixture_dir("mt5"), config)
  other = model_lib.T5Config(**{**config.__dict__, "mlp_dim": 21})
  with pytest.raises(hf_interop.HfInteropError,
                     match=r"our parameter 'encoder/layers_0/mlp/wi_0/kernel' has shape \(12, 20\), but "
                     r"the config implies \(12, 21\)"):
    hf_interop.export_hf(params, other, str(tmp_path / "x"))
  assert not (tmp_path / "x").exists()
  tied = model_lib.T5Config(**{**config.__dict__, "logits_via_embedding": True})
  with pytest.raises(hf_interop.HfInteropError,
                     match="'decoder/logits_dense/kernel' has no HF counterpart for this config"):
    hf_interop.export_hf(params, tied, str(tmp_path / "x"))


def test_uer_wordpiece_ids_match_hf_bert_tokenizer():
  """Our WordPieceVocabulary on a UER-style vocab.txt gives the ids HF's BertTokenizer gave."""
  info = expected_info("uer_tiny")
  vocabulary = hf_files.hf_vocabulary(fixture_dir("uer_tiny"))
  assert (vocabulary.eos_id, vocabulary.pad_id, vocabulary.token_to_id("[CLS]")) == (102, 0, 101)
  assert [vocabulary.encode(text) for text in info["uer_texts"]] == info["uer_ids"]


# ----------------------------------------------------------------------------------------------
# The import_hf / export commands and the trainer hook.
# ----------------------------------------------------------------------------------------------


def _abstract(config):
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                      model_lib.param_shapes(config))


def test_import_hf_cli_writes_a_model_directory(tmp_path, capsys):
  output = tmp_path / "uer"
  args = ["import_hf", "--hf_dir", fixture_dir("uer_tiny"), "--output", str(output),
          "--max_input_length", "64", "--max_target_length", "32"]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  assert "decoder_start=101" in out and "tied_logits=False" in out
  info = model_info.load_model_info(str(output))
  assert info.t5_config == hf_interop.t5_config_from_hf(fixture_dir("uer_tiny"))
  assert info.task_feature_lengths == {"inputs": 64, "targets": 32}
  assert os.path.basename(info.vocabulary_path) == "vocab.txt"
  assert info.vocabulary().eos_id == 102
  assert (output / "model.gin").read_text().count("decoder_start_token_id = 101") == 1
  # INITIAL_CHECKPOINT_PATH=<output> restores exactly the HF weights.
  restored = run_dir_lib.load_params(str(output), _abstract(info.t5_config))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
               hf_interop.load_hf_params(fixture_dir("uer_tiny"), info.t5_config))
  # A second import refuses to mix models; --overwrite replaces.
  assert cli.main(args) == 2
  assert "already holds a model" in capsys.readouterr().err
  assert cli.main(args + ["--overwrite"]) == 0


def test_import_hf_cli_errors(tmp_path, capsys):
  assert cli.main(["import_hf", "--hf_dir", fixture_dir("mt5"), "--output", str(tmp_path / "m")]) == 2
  assert "no vocabulary file (vocab.txt or spiece.model)" in capsys.readouterr().err
  assert cli.main(["import_hf", "--hf_dir", str(tmp_path / "nope"), "--output", str(tmp_path / "m")]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_export_cli_round_trip_and_checkpoint_choice(tmp_path, capsys):
  model_dir = tmp_path / "uer"
  assert cli.main(["import_hf", "--hf_dir", fixture_dir("uer_tiny"), "--output", str(model_dir)]) == 0
  assert cli.main(["export", "--model_dir", str(model_dir), "--output", str(tmp_path / "hf"),
                   "--checkpoint", "latest"]) == 0
  assert "checkpoints/0/state" in capsys.readouterr().out
  jax.tree.map(np.testing.assert_array_equal, hf_interop.load_hf_params(str(tmp_path / "hf")),
               hf_interop.load_hf_params(fixture_dir("uer_tiny")))
  assert cli.main(["export", "--model_dir", str(model_dir), "--output", str(tmp_path / "x"),
                   "--checkpoint", "7"]) == 2
  assert (f"{model_dir} has no finished checkpoint of step 7 (steps in {model_dir}/checkpoints: [0], "
          f"in {model_dir}/best: [])") in capsys.readouterr().err
  assert cli.main(["export", "--model_dir", str(model_dir), "--output", str(tmp_path / "x"),
                   "--checkpoint", "best"]) == 2
  assert "kept no best checkpoint" in capsys.readouterr().err
  assert cli.main(["export", "--model_dir", str(tmp_path), "--output", str(tmp_path / "x")]) == 2
  assert "has no punified_model.json" in capsys.readouterr().err


def test_restore_hf_params_places_like_the_abstract_tree():
  config = hf_interop.t5_config_from_hf(fixture_dir("t5_tied"), logits_via_embedding=False)
  abstract = _abstract(config)
  restored = hf_interop.restore_hf_params(fixture_dir("t5_tied"), abstract)
  assert restored["decoder"]["logits_dense"]["kernel"].sharding == abstract["decoder"]["logits_dense"][
      "kernel"].sharding
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
               hf_interop.load_hf_params(fixture_dir("t5_tied"), config))
  smaller = model_lib.T5Config(**{**config.__dict__, "num_heads": 2})
  with pytest.raises(hf_interop.HfInteropError, match=r"our 'encoder/relpos_bias/rel_embedding'\): checkpoint "
                     r"shape \(32, 4\), i.e. \(4, 32\) as ours != our model's \(2, 32\)"):
    hf_interop.restore_hf_params(fixture_dir("t5_tied"), _abstract(smaller), smaller)


def test_sentencepiece_export_writes_an_exact_tokenizer_json(tmp_path):
  model_path = vocab_lib.train_sentencepiece(["张三去了北京。", "Hello (World)"], str(tmp_path / "char.model"))
  vocabulary = vocab_lib.get_vocabulary(model_path)
  config = model_lib.T5Config(vocab_size=384, emb_dim=4, num_heads=1, head_dim=2, mlp_dim=4,
                              num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
  params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float32), model_lib.param_shapes(config))
  result = hf_interop.export_hf(params, config, str(tmp_path / "hf"), vocabulary_path=model_path)
  assert result.files == ("config.json", "model.safetensors", "special_tokens_map.json", "spiece.model",
                          "tokenizer.json", "tokenizer_config.json")
  tokenizer = json.loads((tmp_path / "hf" / "tokenizer.json").read_text(encoding="utf-8"))
  pieces = [piece for piece, _ in tokenizer["model"]["vocab"]]
  assert len(pieces) == vocabulary.vocab_size
  assert pieces[:6] == ["<pad>", "</s>", "<unk>", "<entity>", "<text>", "NULL"]
  assert pieces.index("京") == vocabulary.encode("京")[0]
  assert [(t["id"], t["content"], t["special"]) for t in tokenizer["added_tokens"]] == [
      (0, "<pad>", True), (1, "</s>", True), (2, "<unk>", True), (3, "<entity>", False), (4, "<text>", False),
      (5, "NULL", False)]
  assert tokenizer["normalizer"] is None and tokenizer["pre_tokenizer"]["behavior"] == "Isolated"
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == 1


# ----------------------------------------------------------------------------------------------
# Through transformers (the torch env).
# ----------------------------------------------------------------------------------------------


def run_hf_check(jobs: list[dict], output: str) -> tuple[dict, dict[str, np.ndarray]]:
  request = os.path.join(os.path.dirname(output), "hf_request.json")
  with open(request, "w", encoding="utf-8") as handle:
    json.dump({"output": output, "jobs": jobs}, handle)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "XLA_", "JAX_"))}
  env["TRANSFORMERS_OFFLINE"] = env["HF_HUB_OFFLINE"] = "1"
  process = subprocess.run([TORCH_PYTHON, os.path.join(REPO_ROOT, "tools", "hf_check.py"), "run", request],
                           capture_output=True, text=True, env=env, timeout=300)
  assert process.returncode == 0, process.stderr[-3000:]
  with np.load(output) as data:
    arrays = {key: data[key] for key in data.files}
  return json.loads(process.stdout)["jobs"], arrays


PROMPTS = ["<entity>地点<entity>组织<text>张三昨天去了北京大学。", "((地点:NULL),(组织:北京大学))", "Playing NULL null"]
SP_TEXTS = ["<entity>地点<text>张三去了北京。", "((地点:NULL))", "Hello  World ▁x", "（公司）：东西 🙂 <0x41>",
            "  two  spaces "]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
  """The issue's proof, part 1: the tiny UER-style HF directory as INITIAL_CHECKPOINT_PATH, 10 steps
  of our trainer (python -m punified_jax.train, gin/runs/adapt_from_hf.gin), then `export`."""
  if TORCH_PYTHON is None:
    pytest.skip("no torch env (.venv-torch or $PUNIFIED_TORCH_PYTHON): run `bash tools/env/torch_env.sh`")
  root = tmp_path_factory.mktemp("finetune")
  run_dir = root / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
             PUNIFIED_DATASETS="resume", PUNIFIED_CACHE=str(root / "cache"),
             XLA_FLAGS=trainer_helpers.FAST_COMPILE_FLAGS)
  for name in ("PUNIFIED_FORMAT", "PUNIFIED_TFDS_DIR", "PUNIFIED_VOCAB"):
    env.pop(name, None)
  env["PUNIFIED_RAW_DIR"] = "builtin"
  command = [sys.executable, "-m", "punified_jax.train", "--gin_file=gin/runs/adapt_from_hf.gin",
             f"--gin.INITIAL_CHECKPOINT_PATH={fixture_dir('uer_tiny')}", f"--gin.MODEL_DIR={run_dir}",
             "--gin.TRAIN_STEPS=10", "--gin.BATCH_SIZE=2", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
             "--gin.ACTIVATION_DTYPE='float32'", "--gin.DROPOUT_RATE=0.0", "--gin.WARMUP_STEPS=0",
             "--gin.LEARNING_RATE=0.01", "--gin.CHECKPOINT_PERIOD=10", "--distributed=off"]
  process = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  result = {"process": process, "run_dir": run_dir, "export_dir": root / "hf"}
  if process.returncode != 0:
    return result
  config = hf_interop.t5_config_from_hf(fixture_dir("uer_tiny"), dropout_rate=0.0, decoder_start_token_id=101)
  # The trainer is to describe its MODEL_DIR itself (model_info); saving it again checks the match.
  model_info.save_model_info(str(run_dir), t5_config=config,
                             vocabulary_path=hf_files.hf_vocabulary_path(fixture_dir("uer_tiny")),
                             task_feature_lengths={"inputs": 32, "targets": 32})
  result["export_status"] = cli.main(["export", "--model_dir", str(run_dir), "--output", str(root / "hf"),
                                      "--checkpoint", "10"])
  result["config"] = config
  return result


@pytest.fixture(scope="module")
def hf_exports(tmp_path_factory, finetuned):
  """Every fixture imported then exported, a SentencePiece export and the fine-tuned export, all
  run through transformers in one subprocess."""
  root = tmp_path_factory.mktemp("hf_exports")
  jobs = []
  for name in NAMES:
    config = hf_interop.t5_config_from_hf(fixture_dir(name))
    params = hf_interop.load_hf_params(fixture_dir(name), config)
    vocabulary = os.path.join(fixture_dir(name), "vocab.txt") if name == "uer_tiny" else None
    hf_interop.export_hf(params, config, str(root / name), vocabulary_path=vocabulary)
    data = expected(name)
    job = {"name": name, "model_dir": str(root / name), "encoder_input_ids": data["encoder_input_ids"].tolist(),
           "decoder_input_ids": data["decoder_input_ids"].tolist(), "generate_max_new_tokens": 6}
    if name == "uer_tiny":
      job["tokenize"] = PROMPTS
    jobs.append(job)
  sp_model = vocab_lib.train_sentencepiece(["张三去了北京。", "李四在上海，（公司）：东西", "Hello World"],
                                           str(root / "char.model"))
  config = model_lib.T5Config(vocab_size=384, emb_dim=4, num_heads=1, head_dim=2, mlp_dim=4,
                              num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
  params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float32), model_lib.param_shapes(config))
  hf_interop.export_hf(params, config, str(root / "sp"), vocabulary_path=sp_model)
  jobs.append({"name": "sp", "model_dir": str(root / "sp"), "tokenize": SP_TEXTS})
  if finetuned.get("export_status") == 0:
    data = expected("uer_tiny")
    jobs.append({"name": "finetuned", "model_dir": str(finetuned["export_dir"]),
                 "encoder_input_ids": data["encoder_input_ids"].tolist(),
                 "decoder_input_ids": data["decoder_input_ids"].tolist()})
  report, arrays = run_hf_check(jobs, str(root / "result.npz"))
  return {"root": root, "report": report, "arrays": arrays, "sp_model": sp_model}


@needs_torch_env
@pytest.mark.parametrize("name", NAMES)
def test_export_loads_in_transformers_with_equal_logits(hf_exports, name):
  report = hf_exports["report"][name]["model"]
  data = expected(name)
  np.testing.assert_allclose(hf_exports["arrays"][f"{name}/logits"], data["logits"], atol=1e-4, rtol=0)
  np.testing.assert_array_equal(hf_exports["arrays"][f"{name}/greedy"], data["greedy"])
  assert report["class"] == "T5ForConditionalGeneration"
  assert report["lm_head_is_shared"] == (name == "t5_tied")
  assert report["scale_decoder_outputs"] == (name == "t5_tied")
  assert report["decoder_start_token_id"] == (101 if name == "uer_tiny" else 0)


@needs_torch_env
def test_exported_bert_tokenizer_gives_our_ids(hf_exports):
  tokenize = hf_exports["report"]["uer_tiny"]["tokenize"]
  ours = hf_files.hf_vocabulary(os.path.join(str(hf_exports["root"]), "uer_tiny"))
  assert tokenize["class"] == "BertTokenizer"
  assert tokenize["ids"] == [ours.encode(text) for text in PROMPTS]
  # HF wraps a single text as [CLS] ... [SEP]; our inputs are `text [SEP]` (no [CLS]).
  assert tokenize["with_special_tokens"][0] == [101] + ours.encode(PROMPTS[0]) + [102]
  # NULL and the markers are not special: skip_special_tokens keeps them.
  assert tokenize["decoded_skip_special"][1] == "( ( 地 点 : NULL ), ( 组 织 : 北 京 大 学 ) )"


@needs_torch_env
def test_exported_sentencepiece_tokenizer_round_trips(hf_exports):
  tokenize = hf_exports["report"]["sp"]["tokenize"]
  ours = vocab_lib.get_vocabulary(hf_exports["sp_model"])
  assert tokenize["ids"] == [ours.encode(text) for text in SP_TEXTS]
  assert tokenize["decoded"] == SP_TEXTS
  # The post-processor appends EOS, as our input pipeline does.
  assert tokenize["with_special_tokens"] == [ours.encode(text) + [1] for text in SP_TEXTS]


@needs_torch_env
def test_finetune_from_hf_dir_then_export_matches_transformers(finetuned, hf_exports):
  """The issue's proof, part 2: the fine-tuned, exported model loads in transformers and gives
  our logits (and is not the untrained model any more)."""
  process = finetuned["process"]
  assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-3000:]
  assert f"initialised parameters from {fixture_dir('uer_tiny')}" in process.stdout
  assert "done: step 10" in process.stdout
  assert finetuned["export_status"] == 0
  config = finetuned["config"]
  trained = jax.device_get(run_dir_lib.load_params(str(finetuned["run_dir"]), _abstract(config)))
  initial = hf_interop.load_hf_params(fixture_dir("uer_tiny"), config)
  changed = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), trained, initial)
  assert min(jax.tree.leaves(changed)) > 0  # every tensor was trained
  data = expected("uer_tiny")
  ours = our_logits(config, trained, data["encoder_input_ids"], data["decoder_input_ids"])
  assert not np.allclose(ours, data["logits"], atol=1e-2)  # the fine-tuned model is another model
  assert hf_exports["report"]["finetuned"]["model"]["decoder_start_token_id"] == 101
  np.testing.assert_allclose(hf_exports["arrays"]["finetuned/logits"], ours, atol=1e-4, rtol=0)
