"""The Hugging Face side of the interop checks; runs in the torch env (.venv-torch, Python 3.11).

Our tests (Python 3.12, no torch) call this script through a subprocess; it loads directories
with transformers and reports what HF computes, so the tests can compare with our JAX model.

  python tools/hf_check.py run REQUEST.json
      REQUEST: {"output": "result.npz", "jobs": [{
          "name": "a", "model_dir": "...",
          "encoder_input_ids": [[...]], "decoder_input_ids": [[...]],   # -> a/logits [b, t, vocab]
          "generate_max_new_tokens": 6,                                    # -> a/greedy [b, <=1+6]
          "tokenize": ["text", ...]}]}                                     # -> info.tokenize
      Writes the arrays into `output` (npz, keys "<name>/<what>") and prints one JSON object:
      per job, what was loaded (class, tie/scale flags, whether lm_head is the embedding) and
      the token ids of `tokenize` (add_special_tokens=False) and their decoding.
  python tools/hf_check.py convert-bin HF_DIR
      pytorch_model.bin -> model.safetensors (for importing without torch in the main env).

Encoder padding is id 0 (the attention mask is ids != 0), as in our model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch


def load_model(model_dir: str):
  """AutoModelForSeq2SeqLM in float32, eval mode (no dropout)."""
  from transformers import AutoModelForSeq2SeqLM  # pylint: disable=g-import-not-at-top
  model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32)
  model.eval()
  return model


def _special_id(model, name: str, default):
  """A special id from the model config, else its generation config (transformers 5.x keeps
  decoder_start_token_id there for T5), else `default`."""
  value = getattr(model.config, name, None)
  if value is None and getattr(model, "generation_config", None) is not None:
    value = getattr(model.generation_config, name, None)
  return default if value is None else value


def model_info(model) -> dict:
  config = model.config
  return {
      "class": type(model).__name__,
      "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
      "scale_decoder_outputs": bool(getattr(config, "scale_decoder_outputs", False)),
      "lm_head_is_shared": model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr(),
      "decoder_start_token_id": _special_id(model, "decoder_start_token_id", 0),
      "eos_token_id": _special_id(model, "eos_token_id", 1),
      "pad_token_id": _special_id(model, "pad_token_id", 0),
  }


@torch.no_grad()
def logits(model, encoder_input_ids, decoder_input_ids) -> np.ndarray:
  input_ids = torch.tensor(encoder_input_ids, dtype=torch.long)
  decoder_ids = torch.tensor(decoder_input_ids, dtype=torch.long)
  output = model(input_ids=input_ids, attention_mask=(input_ids != 0).long(),
                 decoder_input_ids=decoder_ids)
  return output.logits.float().numpy()


@torch.no_grad()
def greedy(model, encoder_input_ids, max_new_tokens: int) -> np.ndarray:
  """Greedy generation (starts with decoder_start_token_id; rows padded with pad after EOS)."""
  input_ids = torch.tensor(encoder_input_ids, dtype=torch.long)
  out = model.generate(input_ids=input_ids, attention_mask=(input_ids != 0).long(),
                       max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=False,
                       num_beams=1, use_cache=False,  # 5.17: the cache breaks when decoder layers != encoder layers
                       decoder_start_token_id=_special_id(model, "decoder_start_token_id", 0),
                       eos_token_id=_special_id(model, "eos_token_id", 1),
                       pad_token_id=_special_id(model, "pad_token_id", 0))
  return out.numpy()


def tokenize(model_dir: str, texts: list[str]) -> dict:
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = AutoTokenizer.from_pretrained(model_dir)
  ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
  return {
      "class": type(tokenizer).__name__,
      "ids": ids,
      "with_special_tokens": [tokenizer(text)["input_ids"] for text in texts],
      "decoded": [tokenizer.decode(row) for row in ids],
      "decoded_skip_special": [tokenizer.decode(row, skip_special_tokens=True) for row in ids],
  }


def run(request_path: str) -> dict:
  with open(request_path, encoding="utf-8") as handle:
    request = json.load(handle)
  arrays = {}
  report = {"torch": torch.__version__}
  import transformers  # pylint: disable=g-import-not-at-top
  report["transformers"] = transformers.__version__
  jobs = {}
  for job in request["jobs"]:
    name = job["name"]
    info = {}
    if "encoder_input_ids" in job or "generate_max_new_tokens" in job:
      model = load_model(job["model_dir"])
      info["model"] = model_info(model)
      if "decoder_input_ids" in job:
        arrays[f"{name}/logits"] = logits(model, job["encoder_input_ids"], job["decoder_input_ids"])
      if job.get("generate_max_new_tokens"):
        arrays[f"{name}/greedy"] = greedy(model, job["encoder_input_ids"],
                                          int(job["generate_max_new_tokens"]))
    if job.get("tokenize"):
      try:
        info["tokenize"] = tokenize(job["model_dir"], job["tokenize"])
      except Exception as error:  # report, do not hide: the caller decides what it means
        info["tokenize_error"] = f"{type(error).__name__}: {error}"
    jobs[name] = info
  report["jobs"] = jobs
  if request.get("output"):
    np.savez(request["output"], **arrays)
  return report


def convert_bin(hf_dir: str) -> str:
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  source = os.path.join(hf_dir, "pytorch_model.bin")
  state = torch.load(source, map_location="cpu", weights_only=True)
  # safetensors refuses tensors that share storage (a tied head saved twice): keep copies.
  state = {name: tensor.detach().clone().contiguous() for name, tensor in state.items()}
  target = os.path.join(hf_dir, "model.safetensors")
  save_file(state, target, metadata={"format": "pt"})
  return target


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest="command", required=True)
  run_parser = commands.add_parser("run", help="logits / greedy / tokenization of HF directories")
  run_parser.add_argument("request")
  convert_parser = commands.add_parser("convert-bin", help="pytorch_model.bin -> model.safetensors")
  convert_parser.add_argument("hf_dir")
  args = parser.parse_args(argv)
  if args.command == "run":
    print(json.dumps(run(args.request), ensure_ascii=False))
  else:
    print(f"wrote {convert_bin(args.hf_dir)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
