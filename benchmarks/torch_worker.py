"""The PyTorch + Hugging Face side of the benchmarks; runs in .venv-torch (Python 3.11).

The drivers (our venv) write a request JSON and the batches as an .npz, run this script in a
subprocess and read back one JSON object. Nothing here imports the project.

  python benchmarks/torch_worker.py train REQUEST.json
      REQUEST: {"model_dir": HF dir (config.json + model.safetensors: the same initial weights
                as our run), "batches": NPZ with input_ids_<i>, labels_<i> (0 = padding),
                "steps": N, "dtype": "fp32" | "bf16", "lr", "weight_decay", "clip_grad_norm",
                "threads": 2, "output": result JSON}
      Trains T5ForConditionalGeneration with torch.optim.AdamW (bf16: torch.autocast on the
      CPU; the master weights stay fp32, as in our bf16 runs), cycling through the batches.
      Result: per-step wall seconds, loss (mean cross entropy over non-padding target tokens)
      and non-padding target tokens.
  python benchmarks/torch_worker.py generate REQUEST.json
      REQUEST: {"model_dir", "inputs": NPZ with input_ids_<i> (0 = padding), "beams": [..],
                "max_new_tokens", "dtype", "threads", "output", "passes": 1,
                "warmup_batches": [indices decoded first, untimed in the passes],
                "stopping": ["exact", "early"],
                "shard": [k, n] (optional: batches k, k + n, ...), "barrier": {"dir", "parties",
                "id"} (optional: n such workers start every timed section together),
                "turns": {"read_fd", "write_fd"} (optional: pipes from and to the driver,
                inherited; the worker says "loaded", then runs each section when the driver
                names it and names it back when done, so that the driver times its own pass
                between two of HF's; turns.py)}
      HF `generate` (greedy at beam 1) per beam size and stopping rule ("exact" is HF's
      early_stopping="never", the canonical beam search; "early" is early_stopping=True): the
      warm-up batches, then `passes` passes over every batch; results keyed "<beam>_<rule>"
      (beam 1: "1_greedy"), pass_seconds = [warm-up, pass 1, ...], outputs of the last pass.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import numpy as np
import torch

import file_barrier  # benchmarks/ (this script's directory)
import turns as turns_lib  # benchmarks/ (this script's directory)


def _load(model_dir: str):
  from transformers import T5ForConditionalGeneration  # pylint: disable=g-import-not-at-top
  model = T5ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
  return model


def _batches(path: str, names: tuple[str, ...]) -> list[dict]:
  data = np.load(path)
  count = len([k for k in data.files if k.startswith(names[0] + "_")])
  return [{name: torch.from_numpy(data[f"{name}_{i}"].astype(np.int64)) for name in names}
          for i in range(count)]


def train(request: dict) -> dict:
  torch.manual_seed(0)
  torch.set_num_threads(int(request.get("threads", 2)))
  model = _load(request["model_dir"])
  model.train()
  batches = _batches(request["batches"], ("input_ids", "labels"))
  optimizer = torch.optim.AdamW(model.parameters(), lr=float(request["lr"]), betas=(0.9, 0.999),
                                eps=1e-8, weight_decay=float(request.get("weight_decay", 0.0)))
  clip = request.get("clip_grad_norm")
  use_bf16 = request["dtype"] == "bf16"
  times, losses, tokens = [], [], []
  for step in range(int(request["steps"])):
    batch = batches[step % len(batches)]
    input_ids, labels = batch["input_ids"], batch["labels"]
    start = time.perf_counter()
    # Targets shifted right with 0 (T5's decoder_start_token_id = pad); padded labels -> -100.
    decoder_input_ids = torch.zeros_like(labels)
    decoder_input_ids[:, 1:] = labels[:, :-1]
    masked_labels = labels.masked_fill(labels == 0, -100)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
      out = model(input_ids=input_ids, attention_mask=(input_ids != 0).long(),
                  decoder_input_ids=decoder_input_ids, labels=masked_labels)
    loss = out.loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
      torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
    optimizer.step()
    loss_value = float(loss.detach())  # synchronises (CPU: already done)
    times.append(time.perf_counter() - start)
    losses.append(loss_value)
    tokens.append(int((labels > 0).sum()))
  return {"step_seconds": times, "loss": losses, "target_tokens": tokens,
          "torch": torch.__version__, "threads": torch.get_num_threads()}


def _barrier(barrier: Optional[dict], name: str) -> None:
  """Waits until all workers of a split run (`barrier`: {"dir", "parties", "id"}) reached
  `name`; no-op without a barrier."""
  if barrier:
    file_barrier.arrive(barrier["dir"], name, str(barrier["id"]), int(barrier["parties"]))


@torch.no_grad()
def generate(request: dict) -> dict:
  torch.set_num_threads(int(request.get("threads", 2)))
  model = _load(request["model_dir"])
  model.eval()
  if request.get("dtype") == "bf16":
    model = model.to(torch.bfloat16)
  batches = _batches(request["inputs"], ("input_ids",))
  # A split run: this worker takes batches shard[0], shard[0] + shard[1], ... (see
  # extract_throughput --hf_processes) and starts each timed section with the others.
  shard, barrier = request.get("shard"), request.get("barrier")
  if shard:
    batches = batches[int(shard[0])::int(shard[1])]
  # A paired run (extract_throughput): this worker and the driver take turns (turns.py).
  turns = turns_lib.worker_turns(request.get("turns"))
  if turns:
    turns.send("loaded")
  results = {}
  def run(batch, beams, rule):
    input_ids = batch["input_ids"]
    out = model.generate(
        input_ids=input_ids, attention_mask=(input_ids != 0).long(),
        max_new_tokens=int(request["max_new_tokens"]), num_beams=int(beams), do_sample=False,
        length_penalty=float(request.get("length_penalty", 1.0)),
        early_stopping={"exact": "never", "early": True, "greedy": False}[rule],
        decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    return out[:, 1:].numpy()  # drop the decoder start token

  for beams in request["beams"]:
    for rule in (["greedy"] if beams == 1 else request.get("stopping", ["early"])):
      _barrier(barrier, f"{beams}_{rule}_warmup")
      if turns:
        turns.expect(f"{beams}_{rule}_warmup")
      start = time.perf_counter()
      for index in request.get("warmup_batches", []):
        if -len(batches) <= index < len(batches):
          run(batches[index], beams, rule)
      seconds, outputs = [time.perf_counter() - start], []
      if turns:
        turns.send(f"{beams}_{rule}_warmup")
      for number in range(int(request.get("passes", 1))):
        outputs = []
        _barrier(barrier, f"{beams}_{rule}_{number}")
        if turns:
          turns.expect(f"{beams}_{rule}_{number}")
        start = time.perf_counter()
        for batch in batches:
          outputs.append(run(batch, beams, rule))
        seconds.append(time.perf_counter() - start)
        if turns:
          turns.send(f"{beams}_{rule}_{number}")
      results[f"{beams}_{rule}"] = {
          "pass_seconds": seconds,
          "outputs": [row[row > 0].tolist() for out in outputs for row in out]}
  return {"beams": results, "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv: list[str]) -> int:
  if len(argv) != 3 or argv[1] not in ("train", "generate"):
    print(__doc__, file=sys.stderr)
    return 2
  with open(argv[2], encoding="utf-8") as handle:
    request = json.load(handle)
  result = train(request) if argv[1] == "train" else generate(request)
  with open(request["output"], "w", encoding="utf-8") as handle:
    json.dump(result, handle)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
