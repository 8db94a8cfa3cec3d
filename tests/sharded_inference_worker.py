"""Run in a subprocess with 8 fake CPU devices (test_sharded_inference.py; XLA_FLAGS must be set
before jax starts).  Loads one tiny random model directory with the Extractor on one device and
on the partitioning presets, decodes the same batch of 5 inputs (not a multiple of 8) greedy and
beam, constrained and not, extracts entities from 11 texts (one long enough for several windows),
and writes ids, scores, entities and the shard shapes of chosen parameters as JSON.

    python sharded_inference_worker.py OUT.json WORK_DIR [layout,layout,...]

With `--process RANK --port PORT` (2 processes x 4 fake devices, joined by jax.distributed on
127.0.0.1) both processes load the model directory a previous run left in WORK_DIR with a global
FSDP mesh over all 8 devices and decode the same batch; each writes OUT.json.RANK.
"""

import json
import os
import sys

import jax
import numpy as np

from punified_jax import constraints
from punified_jax import inference
from punified_jax import partitioning
from punified_jax import prompts
from punified_jax import vocab as vocab_lib

import test_inference as ti

LAYOUTS = ("single", "data_parallel", "fsdp", "2d", "tensor_parallel")
BEAM_SIZE = 3
MAX_DECODE_LENGTH = ti.FEATURE_LENGTHS["targets"]
LONG_TEXT = "张三去了上海，没有去北京。李四在深圳的公司工作。" * 4
TEXTS = [text for text, _ in ti.TRAIN_EXAMPLES] + ti.CORPUS[-2:] + [
    LONG_TEXT, "", "北京大学", "上海和深圳", "Apple（苹果）", "经理：李四"]


def partitioning_of(name: str):
  if name == "single":
    return partitioning.preset_partitioner("data_parallel", devices=jax.devices()[:1])
  return name


def shard_shape(array) -> list[int]:
  return list(array.addressable_shards[0].data.shape)


def make_model_dir(work_dir: str):
  vocab_path = ti.train_vocab(work_dir)
  vocabulary = vocab_lib.get_vocabulary(vocab_path)
  config = ti.tiny_config(vocabulary.vocab_size)
  model_dir = ti.write_model_dir(os.path.join(work_dir, "run"), vocab_path, config,
                                 ti.random_params(config, seed=3), step=1)
  return model_dir, vocabulary


def input_batch(vocabulary) -> np.ndarray:
  """5 prompts padded to 32 tokens: the batch is not a multiple of the 8 devices."""
  rows = [vocabulary.encode(prompts.format_input(text, ti.TYPES))[:31] + [vocabulary.eos_id]
          for text in TEXTS[:5]]
  inputs = np.zeros((len(rows), ti.FEATURE_LENGTHS["inputs"]), np.int32)
  for index, row in enumerate(rows):
    inputs[index, :len(row)] = row
  return inputs


def main_two_processes(out_path: str, work_dir: str, rank: int, port: int) -> None:
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=rank)
  assert len(jax.devices()) == 8 and len(jax.local_devices()) == 4, jax.devices()
  # The model directory the 8-device run wrote (`main`, same WORK_DIR): both processes load it.
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  model_dir = os.path.join(work_dir, "run")
  vocabulary = vocab_lib.get_vocabulary(os.path.join(work_dir, "char.model"))
  partitioner = partitioning.preset_partitioner("fsdp")  # over all 8 devices of both hosts
  extractor = inference.Extractor.load(model_dir, partitioning=partitioner, batch_size=5,
                                       beam_size=BEAM_SIZE)
  embedding = extractor.params["token_embedder"]["embedding"]
  output = extractor.decoder.decode(
      extractor.model, extractor.params, input_batch(vocabulary),
      constraints.NerCopyConstraint.from_vocabulary(vocabulary), beam_size=BEAM_SIZE,
      max_decode_length=MAX_DECODE_LENGTH, eos_id=extractor.eos_id, stopping="best")
  result = {
      "mesh": dict(extractor.decoder.mesh.shape),
      "local_shards": len(embedding.addressable_shards),
      "shard": shard_shape(embedding),
      "tokens": output.tokens.tolist(),
      "scores": [[float(s) if np.isfinite(s) else None for s in row] for row in output.scores],
      "entities": extractor.extract(TEXTS, ti.TYPES),
  }
  with open(f"{out_path}.{rank}", "w", encoding="utf-8") as handle:
    json.dump(result, handle, ensure_ascii=False, indent=1)
  multihost_utils.sync_global_devices("done")


def main(out_path: str, work_dir: str, only: str = "") -> None:
  assert len(jax.devices()) == 8, jax.devices()
  model_dir, vocabulary = make_model_dir(work_dir)
  config = ti.tiny_config(vocabulary.vocab_size)
  inputs = input_batch(vocabulary)
  constraint = constraints.NerCopyConstraint.from_vocabulary(vocabulary)
  report = {"vocab_size": vocabulary.vocab_size}
  for name in LAYOUTS:
    if only and name not in only.split(","):
      continue
    # batch_size 5: rounded up to 8 on the meshes whose data axis has 8 devices.
    extractor = inference.Extractor.load(model_dir, partitioning=partitioning_of(name),
                                         batch_size=5, beam_size=BEAM_SIZE)
    decoder = extractor.decoder
    params = extractor.params
    expected = decoder.param_shardings(config)
    result = {
        "mesh": dict(decoder.mesh.shape),
        "batch_size": extractor.batch_size,
        # Restored straight into the preset's shardings (Extractor.load -> abstract_params).
        "restored_in_place": all(leaf.sharding == sharding for leaf, sharding in
                                 zip(jax.tree.leaves(params), jax.tree.leaves(expected))),
        "shards": {
            "embedding": shard_shape(params["token_embedder"]["embedding"]),
            "wi_0": shard_shape(params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]),
            "query": shard_shape(params["encoder"]["layers_0"]["attention"]["query"]["kernel"]),
            "logits_dense": shard_shape(params["decoder"]["logits_dense"]["kernel"]),
            "relpos": shard_shape(params["encoder"]["relpos_bias"]["rel_embedding"]),
        },
        "largest_shard_fraction": max(
            leaf.addressable_shards[0].data.size / leaf.size for leaf in jax.tree.leaves(params)
            if leaf.size > 64),
        "decodes": {},
    }
    # Every search setting on one device and the two layouts the brief is about; the other
    # presets decode the Extractor's setting only (each setting is one more compile).
    settings = [(1, False), (1, True), (BEAM_SIZE, False), (BEAM_SIZE, True)]
    if name not in ("single", "data_parallel", "fsdp"):
      settings = [(BEAM_SIZE, True)]
    for beam_size, constrained in settings:
      output = decoder.decode(extractor.model, params, inputs,
                              constraint if constrained else None, beam_size=beam_size,
                              max_decode_length=MAX_DECODE_LENGTH, eos_id=extractor.eos_id,
                              stopping="best")
      result["decodes"][f"beam{beam_size}_{'constrained' if constrained else 'free'}"] = {
          "tokens": output.tokens.tolist(),
          "scores": [[float(s) if np.isfinite(s) else None for s in row]
                     for row in output.scores]}
    result["entities"] = extractor.extract(TEXTS, ti.TYPES)
    result["stats"] = extractor.stats
    report[name] = result
    print(name, result["mesh"], "done", flush=True)
  with open(out_path, "w", encoding="utf-8") as handle:
    json.dump(report, handle, ensure_ascii=False, indent=1)


if __name__ == "__main__":
  if "--process" in sys.argv:
    main_two_processes(sys.argv[1], sys.argv[2], int(sys.argv[sys.argv.index("--process") + 1]),
                       int(sys.argv[sys.argv.index("--port") + 1]))
  else:
    main(*sys.argv[1:4])
