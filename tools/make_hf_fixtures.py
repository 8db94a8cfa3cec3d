"""Writes tests/fixtures/hf/: tiny random Hugging Face T5 / MT5 directories and what HF computes.

Run with the torch env (bash tools/env/torch_env.sh):

    .venv-torch/bin/python tools/make_hf_fixtures.py [--output tests/fixtures/hf]

Each fixture is a directory as `save_pretrained` writes it (config.json, model.safetensors, and
for `uer_tiny` UER-style tokenizer files) plus `expected.npz`:
  encoder_input_ids [2, L] (row 1 padded with 0), decoder_input_ids [2, T] (starting with the
  decoder start id), logits [2, T, vocab] float32 (HF eager, float32), greedy [2, 1 + N]
  (HF greedy generation, the start id first, padded with pad after EOS).
`buckets.npz` holds HF's relative-position buckets for a few (bidirectional, buckets, max
distance) settings over relative positions -600..600, to pin our bucket formula to HF's.

The models are random (seeded) and tiny (a few tens of KB) and their weights are perturbed away
from HF's init (layer norms != 1, every tensor noisy) so that a transposed or misplaced tensor
changes the logits.  The fixtures:
  t5_untied  model_type t5, gated-gelu, own lm_head (T5 v1.1), 2 encoder / 3 decoder layers,
             3 heads x 8 != d_model 16 (catches q/k/v layout mistakes)
  t5_tied    model_type t5, gated-gelu, tie_word_embeddings (head = embedding, scaled)
  mt5        model_type mt5 (MT5ForConditionalGeneration), 16 buckets, max distance 64
  uer_tiny   model_type mt5 like uer/t5-v1_1-*-chinese-cluecorpussmall: a BERT vocab.txt of our
             own (ids 0 [PAD], 1-99 [unusedN], 100 [UNK], 101 [CLS], 102 [SEP], 103 [MASK]),
             BertTokenizer files, decoder start 101, eos 102
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_check  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tokens after [MASK] in the tiny UER-style vocabulary (ours, written for these tests): the
# target syntax, some CJK characters of prompt names and example sentences, a few word pieces
# and UER's sentinel spelling.
UER_TOKENS = (
    ["(", ")", ",", ":", "，", "。", "！", "-", "!", "?"]
    + [str(d) for d in range(10)]
    + list("abcdefghijklmnopqrstuvwxyz")
    + ["play", "##ing", "##s", "##ed", "new", "york", "ner"]
    + list("地点组织名称人物公司张三李四昨天去了北京大学上海东西南中国的在是和有")
    + ["extra0", "extra1", "extra2"]
)
UER_TEXTS = [
    "张三昨天去了北京大学。",
    "Playing in New York!",
    "((地点:北京),(组织:北京大学))",
]


def uer_vocab() -> list[str]:
  return (["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)]
          + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + UER_TOKENS)


FIXTURES = {
    "t5_untied": dict(model_type="t5", seed=1, vocab_size=96, d_model=16, d_kv=8, num_heads=3,
                      d_ff=24, num_layers=2, num_decoder_layers=3,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      tie_word_embeddings=False),
    "t5_tied": dict(model_type="t5", seed=6, vocab_size=80, d_model=16, d_kv=4, num_heads=4,
                    d_ff=32, num_layers=2, num_decoder_layers=2,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    tie_word_embeddings=True),
    "mt5": dict(model_type="mt5", seed=3, vocab_size=72, d_model=12, d_kv=6, num_heads=2,
                d_ff=20, num_layers=3, num_decoder_layers=2, relative_attention_num_buckets=16,
                relative_attention_max_distance=64, tie_word_embeddings=False),
    "uer_tiny": dict(model_type="mt5", seed=4, vocab_size=len(uer_vocab()), d_model=16, d_kv=8,
                     num_heads=2, d_ff=32, num_layers=2, num_decoder_layers=2,
                     relative_attention_num_buckets=32, relative_attention_max_distance=128,
                     tie_word_embeddings=False, decoder_start_token_id=101, eos_token_id=102,
                     pad_token_id=0),
}

ENCODER_LENGTH = 9
DECODER_LENGTH = 5
GENERATE_TOKENS = 6


def build_model(spec: dict):
  from transformers import MT5Config, MT5ForConditionalGeneration, T5Config, T5ForConditionalGeneration
  spec = dict(spec)
  model_type = spec.pop("model_type")
  seed = spec.pop("seed")
  tied = spec["tie_word_embeddings"]
  config_cls, model_cls = ((MT5Config, MT5ForConditionalGeneration) if model_type == "mt5"
                           else (T5Config, T5ForConditionalGeneration))
  config = config_cls(feed_forward_proj="gated-gelu", dropout_rate=0.0, **spec)
  torch.manual_seed(seed)
  model = model_cls(config)
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      if "layer_norm" in name:
        parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
      else:
        parameter.add_(0.1 * torch.randn_like(parameter) * parameter.std().clamp(min=1e-3))
    if not tied:
      # transformers 5.x builds every T5 with the head tied to `shared`: untie it explicitly.
      model.lm_head.weight = torch.nn.Parameter(
          torch.randn(config.vocab_size, config.d_model) * config.d_model ** -0.5)
  model.eval()
  return model


def save(model, directory: str, spec: dict) -> None:
  """config.json + model.safetensors as save_pretrained writes them, with the head we mean.

  transformers 5.x rewrites tie_word_embeddings to true in every T5 config it saves (and keeps
  the v1.1 meaning in `scale_decoder_outputs`); the fixtures are meant to look like the files
  on the Hub (v1.1: tie_word_embeddings false), so config.json is written from the spec.
  """
  from safetensors.torch import save_file
  os.makedirs(directory, exist_ok=True)
  state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
  # save_pretrained stores one tensor per storage: drop the tied/duplicate embeddings.
  for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
    state.pop(name, None)
  if spec["tie_word_embeddings"]:
    state.pop("lm_head.weight", None)
  save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  config = {k: v for k, v in model.config.to_dict().items()
            if k not in ("scale_decoder_outputs", "transformers_version", "dtype", "torch_dtype",
                         "dense_act_fn", "is_gated_act", "_name_or_path")}
  config["tie_word_embeddings"] = spec["tie_word_embeddings"]
  config["architectures"] = [type(model).__name__]
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as handle:
    json.dump(config, handle, indent=2, sort_keys=True)
    handle.write("\n")


def write_uer_tokenizer(directory: str) -> None:
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as handle:
    handle.write("".join(f"{token}\n" for token in uer_vocab()))
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as handle:
    json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512},
              handle, indent=2)
  with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as handle:
    json.dump({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "cls_token": "[CLS]", "mask_token": "[MASK]"}, handle, indent=2)


def inputs_for(name: str, spec: dict, directory: str) -> tuple[np.ndarray, np.ndarray, dict]:
  """Encoder ids [2, L] (row 1 shorter, 0-padded) and decoder ids [2, T]."""
  rng = np.random.RandomState(100 + spec["seed"])
  vocab = spec["vocab_size"]
  start = spec.get("decoder_start_token_id", 0)
  eos = spec.get("eos_token_id", 1)
  extra = {}
  if name == "uer_tiny":
    report = hf_check.tokenize(directory, UER_TEXTS)
    extra["uer_texts"] = UER_TEXTS
    extra["uer_ids"] = report["ids"]
    rows = [report["ids"][0] + [eos], report["ids"][1][:4] + [eos]]
  else:
    rows = [list(rng.randint(2, vocab, size=ENCODER_LENGTH - 1)) + [eos],
            list(rng.randint(2, vocab, size=4)) + [eos]]
  length = max(len(row) for row in rows)
  encoder = np.zeros((2, length), np.int64)
  for i, row in enumerate(rows):
    encoder[i, :len(row)] = row
  decoder = np.concatenate([np.full((2, 1), start), rng.randint(2, vocab, size=(2, DECODER_LENGTH - 1))],
                           axis=1).astype(np.int64)
  return encoder, decoder, extra


def bucket_tables() -> dict[str, np.ndarray]:
  from transformers.models.t5.modeling_t5 import T5Attention
  relative = torch.arange(-600, 601)
  tables = {"relative_position": relative.numpy().astype(np.int32)}
  for bidirectional in (True, False):
    for buckets, distance in ((32, 128), (16, 64), (64, 256), (32, 256)):
      table = T5Attention._relative_position_bucket(relative, bidirectional=bidirectional,
                                                    num_buckets=buckets, max_distance=distance)
      tables[f"{'bi' if bidirectional else 'uni'}_{buckets}_{distance}"] = table.numpy().astype(np.int8)
  return tables


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output", default=os.path.join(REPO_ROOT, "tests", "fixtures", "hf"))
  args = parser.parse_args(argv)
  os.makedirs(args.output, exist_ok=True)
  for name, spec in FIXTURES.items():
    directory = os.path.join(args.output, name)
    shutil.rmtree(directory, ignore_errors=True)
    model = build_model(spec)
    save(model, directory, spec)
    if name == "uer_tiny":
      write_uer_tokenizer(directory)
    encoder, decoder, extra = inputs_for(name, spec, directory)
    # Reload from disk: the expected values are what a user loading the files gets.
    loaded = hf_check.load_model(directory)
    info = hf_check.model_info(loaded)
    expected = {
        "encoder_input_ids": encoder.astype(np.int32),
        "decoder_input_ids": decoder.astype(np.int32),
        "logits": hf_check.logits(loaded, encoder, decoder).astype(np.float32),
        "greedy": hf_check.greedy(loaded, encoder, GENERATE_TOKENS).astype(np.int32),
    }
    np.savez_compressed(os.path.join(directory, "expected.npz"), **expected)
    with open(os.path.join(directory, "expected.json"), "w", encoding="utf-8") as handle:
      json.dump({"hf_model": info, **extra}, handle, ensure_ascii=False, indent=2, sort_keys=True)
      handle.write("\n")
    size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
    print(f"{name}: {info['class']} lm_head_is_shared={info['lm_head_is_shared']} "
          f"scaled={info['scale_decoder_outputs']} {size / 1024:.0f} KB")
  np.savez_compressed(os.path.join(args.output, "buckets.npz"), **bucket_tables())
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
