"""Decoding over a device mesh (punified_jax/sharded_decoding.py).

The 8-device test runs tests/sharded_inference_worker.py in a subprocess (XLA_FLAGS must be set
before jax starts): the same model directory loaded by the Extractor on one device,
data-parallel (8 x 1), FSDP (8 x 1), 2-D (2 x 4) and tensor-parallel (1 x 8) must give the
same ids, scores and entities.  The other tests run on this process's single device.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import generate
from punified_jax import model as model_lib
from punified_jax import partitioning
from punified_jax import sharded_decoding

import trainer_helpers as th

pytestmark = pytest.mark.usefixtures("fast_compiles")

# Tolerances: the same math with the batch or the parameters split over devices, so only float32
# round-off of differently blocked / all-reduced matmuls may differ (observed: 1e-5 on a summed
# log-probability of -43, 1e-9 on entity scores).
SCORE_TOLERANCE = dict(rtol=1e-5, atol=2e-5)


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory):
  """(work directory holding the model directory `run/` and `char.model`, the worker's report)."""
  work = tmp_path_factory.mktemp("sharded_inference")
  out = work / "report.json"
  result = th.run_python([os.path.join(th.TESTS_DIR, "sharded_inference_worker.py"), str(out),
                          str(work)], env=th.subprocess_env(devices=8), cwd=str(work), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return work, json.loads(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def eight_device_report(eight_device_run):
  return eight_device_run[1]


def _scores(values):
  return np.asarray([[-np.inf if v is None else v for v in row] for row in values], np.float64)


def test_every_layout_decodes_like_one_device(eight_device_report):
  report = eight_device_report
  single = report["single"]
  assert set(single["decodes"]) == {"beam1_free", "beam1_constrained", "beam3_free",
                                    "beam3_constrained"}
  for name in ("data_parallel", "fsdp", "2d", "tensor_parallel"):
    layout = report[name]
    assert layout["decodes"], name
    for setting, decoded in layout["decodes"].items():
      reference = single["decodes"][setting]
      # 5 input rows (padded to 8 inside the decoder), beam_size hypotheses, 40 tokens each.
      assert np.asarray(decoded["tokens"]).shape == np.asarray(reference["tokens"]).shape
      assert np.asarray(decoded["tokens"]).shape[0] == 5
      assert decoded["tokens"] == reference["tokens"], (name, setting)
      np.testing.assert_allclose(_scores(decoded["scores"]), _scores(reference["scores"]),
                                 err_msg=f"{name} {setting}", **SCORE_TOLERANCE)
    # The Extractor: the same entities (texts, offsets, types) and scores, the same counters.
    assert layout["stats"] == single["stats"], name
    assert len(layout["entities"]) == len(single["entities"]) == 12
    for got, expected in zip(layout["entities"], single["entities"]):
      assert [{k: v for k, v in e.items() if k != "score"} for e in got] == \
             [{k: v for k, v in e.items() if k != "score"} for e in expected], name
      np.testing.assert_allclose([e["score"] for e in got], [e["score"] for e in expected],
                                 **SCORE_TOLERANCE)
  # Entity scores on FSDP-sharded parameters (the search's recorded token log-probs; the
  # product has no separate scoring pass) were compared above: there are some to compare.
  assert any(report["fsdp"]["entities"])
  # The comparison is not vacuous: the random model finds entities, the long text is windowed.
  assert single["stats"]["entities"] > 5 and single["stats"]["split_texts"] >= 1


def test_parameters_are_restored_sharded(eight_device_report):
  report = eight_device_report
  assert {name: report[name]["mesh"] for name in report if name != "vocab_size"} == {
      "single": {"data": 1, "model": 1}, "data_parallel": {"data": 8, "model": 1},
      "fsdp": {"data": 8, "model": 1}, "2d": {"data": 2, "model": 4},
      "tensor_parallel": {"data": 1, "model": 8}}
  # batch_size=5 is rounded up to a multiple of the data axis.
  assert {name: report[name]["batch_size"] for name in report if name != "vocab_size"} == {
      "single": 5, "data_parallel": 8, "fsdp": 8, "2d": 6, "tensor_parallel": 5}
  for name in ("single", "data_parallel", "fsdp", "2d", "tensor_parallel"):
    assert report[name]["restored_in_place"], name
  # Shapes of the first shard: embedding [vocab 399, embed 64], wi_0 [embed 64, mlp 128],
  # query [embed 64, heads*kv 64], logits [embed 64, vocab 399], relpos [heads 4, buckets 32].
  assert report["vocab_size"] == 399  # not divisible by 2, 4 or 8: the vocab axis is never split
  whole = {"embedding": [399, 64], "wi_0": [64, 128], "query": [64, 64],
           "logits_dense": [64, 399], "relpos": [4, 32]}
  assert report["single"]["shards"] == report["data_parallel"]["shards"] == whole
  assert report["fsdp"]["shards"] == {"embedding": [399, 8], "wi_0": [8, 128], "query": [8, 64],
                                      "logits_dense": [8, 399], "relpos": [4, 4]}
  assert report["2d"]["shards"] == {"embedding": [399, 32], "wi_0": [32, 32], "query": [32, 16],
                                    "logits_dense": [32, 399], "relpos": [1, 16]}
  assert report["tensor_parallel"]["shards"] == {"embedding": [399, 64], "wi_0": [64, 16],
                                                 "query": [64, 8], "logits_dense": [64, 399],
                                                 "relpos": [4, 32]}
  # 2-D: relpos [heads 4 over model, buckets over data] (FSDP-style relocation of `data`).
  # With FSDP every parameter of more than 64 values holds 1/8 of it per device.
  assert report["fsdp"]["largest_shard_fraction"] == pytest.approx(1 / 8)
  assert report["data_parallel"]["largest_shard_fraction"] == 1.0


# ------------------------------------------------------------------------------------------
# One device (this process).
# ------------------------------------------------------------------------------------------


def _tiny():
  model = th.tiny_model()
  params = model_lib.init_params(model.config, jax.random.key(0))
  return model, params


def test_one_device_decoder_equals_the_plain_jitted_search():
  model, params = _tiny()
  decoder = sharded_decoding.MeshDecoder.create()
  assert dict(decoder.mesh.shape) == {"data": 1, "model": 1} and decoder.data_size == 1
  placed = decoder.place_params(params, model.config)
  # Any mapping type with the model's names is accepted (here flax's FrozenDict).
  import flax  # pylint: disable=g-import-not-at-top
  frozen = decoder.place_params(flax.core.freeze(params), model.config)
  assert jax.tree.structure(frozen) == jax.tree.structure(placed)
  inputs = np.asarray([[5, 6, 7, 1, 0], [9, 1, 0, 0, 0], [4, 4, 4, 4, 1]], np.int32)
  for beam_size in (1, 2):
    got = decoder.decode(model, placed, inputs, beam_size=beam_size, max_decode_length=6)
    expected = generate.decode_batch(model, params, jnp.asarray(inputs), beam_size=beam_size,
                                     max_decode_length=6)
    assert isinstance(got.tokens, np.ndarray) and got.tokens.shape == (3, beam_size, 6)
    np.testing.assert_array_equal(got.tokens, np.asarray(expected.tokens))
    np.testing.assert_allclose(got.scores, np.asarray(expected.scores), rtol=1e-6)
    np.testing.assert_allclose(got.token_log_probs, np.asarray(expected.token_log_probs),
                               rtol=1e-6, atol=1e-6)


def test_padded_size_and_preset_names():
  decoder = sharded_decoding.MeshDecoder(partitioning.Partitioner())
  assert [decoder.padded_size(n) for n in (1, 2, 7)] == [1, 2, 7]  # one device: no padding
  assert sharded_decoding.MeshDecoder.create(decoder) is decoder
  fsdp = sharded_decoding.MeshDecoder.create("fsdp")
  assert fsdp.partitioner.relocate_indivisible
  assert fsdp.partitioner.logical_axis_rules == partitioning.fsdp_rules()
  with pytest.raises(ValueError, match="unknown partitioning preset 'zero3'; presets: "
                                       "data_parallel, fsdp, tensor_parallel, 2d"):
    sharded_decoding.MeshDecoder.create("zero3")
  with pytest.raises(TypeError, match="partitioning must be a preset name"):
    sharded_decoding.MeshDecoder.create(8)
  with pytest.raises(ValueError, match="data=2 does not divide the 1 devices"):
    sharded_decoding.MeshDecoder.create("2d")  # the 2-D preset needs an even device count


def test_bad_parameters_and_inputs_fail_clearly():
  model, params = _tiny()
  decoder = sharded_decoding.MeshDecoder.create()
  wrong = jax.tree.map(lambda x: x, params)
  wrong["decoder"]["logits_dense"]["kernel"] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match=r"parameter \['decoder'\]\['logits_dense'\]\['kernel'\] "
                                       r"has shape \(3, 3\), the model config needs \(32, 384\)"):
    decoder.place_params(wrong, model.config)
  with pytest.raises(ValueError, match=r"do not have the parameter tree .*: missing "
                                       r"\[\"\['decoder'\]\['decoder_norm'\]\['scale'\]\""):
    decoder.place_params({"encoder": params["encoder"], "token_embedder": params["token_embedder"]},
                         model.config)
  numpy_params = jax.tree.map(np.asarray, params)
  with pytest.raises(ValueError, match="not on this decoder's mesh {'data': 1, 'model': 1}: place them with "):
    decoder.decode(model, numpy_params, np.ones((2, 3), np.int32), beam_size=1,
                   max_decode_length=4)
  placed = decoder.place_params(numpy_params, model.config)
  with pytest.raises(ValueError, match=r"non-empty \[batch, input_len\] array, got shape \(3,\)"):
    decoder.decode(model, placed, np.ones((3,), np.int32), beam_size=1, max_decode_length=4)
  with pytest.raises(TypeError, match="integer ids, got float32"):
    decoder.decode(model, placed, np.ones((2, 3), np.float32), beam_size=1, max_decode_length=4)
  # Further keywords go to generate.decode_batch as they are.
  with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
    decoder.decode(model, placed, np.ones((2, 3), np.int32), beam_size=1, max_decode_length=4,
                   no_such_option=True)


def test_batch_inference_with_the_fsdp_preset_writes_one_devices_predictions(tmp_path):
  """`python -m punified_jax.infer` on 8 devices with gin/partitioning/fsdp.gin writes the
  predictions one device writes (built-in corpus, a random tiny model: the entities are noise,
  but the same noise)."""
  import test_inference as ti  # pylint: disable=g-import-not-at-top
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocab_path = ti.train_vocab(tmp_path)
  config = ti.tiny_config(vocab_lib.get_vocabulary(vocab_path).vocab_size)
  model_dir = ti.write_model_dir(tmp_path / "run", vocab_path, config,
                                 ti.random_params(config, seed=5), step=3)
  outputs = {}
  for devices, extra in ((1, []), (8, ["--gin_file=gin/partitioning/fsdp.gin"])):
    out_dir = tmp_path / f"predictions_{devices}"
    env = th.subprocess_env(devices=devices)
    env["PUNIFIED_RAW_DIR"] = "builtin"
    result = th.run_python(
        ["-m", "punified_jax.infer", "--gin_file=gin/runs/infer.gin", *extra,
         f"--gin.MODEL_DIR={model_dir}", f"--gin.INFER_OUTPUT_DIR={out_dir}",
         "--gin.MIXTURE_OR_TASK_NAME=punified_ner_resume", "--gin.INFER_SPLIT=validation",
         "--gin.INFER_MAX_EXAMPLES=7", "--gin.INFER_BATCH_SIZE=3", "--gin.INFER_BEAM_SIZE=2"],
        env=env, cwd=th.REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    mesh = "{'data': 1, 'model': 1}" if devices == 1 else "{'data': 8, 'model': 1}"
    assert f"decoding on MeshDecoder(mesh={mesh}" in result.stdout
    outputs[devices] = th.read_jsonl(str(out_dir / "resume-validation.jsonl"))
  one, eight = outputs[1], outputs[8]
  assert len(one) == len(eight) == 7
  assert sum(len(row["entities"]) for row in one) > 0
  for row_one, row_eight in zip(one, eight):
    strip = lambda entities: [{k: v for k, v in e.items() if k != "score"} for e in entities]
    assert {**row_one, "entities": strip(row_one["entities"])} == \
           {**row_eight, "entities": strip(row_eight["entities"])}
    np.testing.assert_allclose([e["score"] for e in row_eight["entities"]],
                               [e["score"] for e in row_one["entities"]], **SCORE_TOLERANCE)


def test_two_processes_decode_over_one_global_fsdp_mesh(tmp_path, eight_device_run):
  """2 processes x 4 fake devices joined on 127.0.0.1: a global FSDP mesh over all 8 devices
  (each process holds 4 shards of each parameter) decodes one device's ids and entities, and
  both processes get the whole result."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  work, eight_device_report = eight_device_run
  port = th.free_port()
  out = tmp_path / "report.json"
  env = th.subprocess_env(devices=4)
  workers = [subprocess.Popen(
      [sys.executable, os.path.join(th.TESTS_DIR, "sharded_inference_worker.py"), str(out),
       str(work), "--process", str(rank), "--port", str(port)],
      env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for rank in range(2)]
  try:
    results = [worker.communicate(timeout=600) for worker in workers]
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
  for worker, (_, stderr) in zip(workers, results):
    assert worker.returncode == 0, stderr[-3000:]
  single = eight_device_report["single"]
  for rank in range(2):
    report = json.loads((tmp_path / f"report.json.{rank}").read_text(encoding="utf-8"))
    assert report["mesh"] == {"data": 8, "model": 1}
    assert report["local_shards"] == 4 and report["shard"] == [399, 8]
    assert report["tokens"] == single["decodes"]["beam3_constrained"]["tokens"], rank
    np.testing.assert_allclose(_scores(report["scores"]),
                               _scores(single["decodes"]["beam3_constrained"]["scores"]),
                               **SCORE_TOLERANCE)
    assert [[(e["type"], e["start"], e["end"]) for e in row] for row in report["entities"]] == \
           [[(e["type"], e["start"], e["end"]) for e in row] for row in single["entities"]]
