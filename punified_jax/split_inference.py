"""Predictions for a split of every dataset of a task or mixture: `infer_splits`.

The gin-configured body of `python -m punified_jax.infer` (punified_jax/infer.py, which keeps
the command line free of jax until the flags are parsed); decoding goes through
`inference.Extractor`, so offsets are exact and decoding is constrained by default.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Optional

import gin
import jax
import seqio

from punified_jax import entity_types
from punified_jax import storage
from punified_jax.inference import Extractor
from punified_jax.tasks import names as task_names
from punified_jax.tasks import registry

logger = logging.getLogger(__name__)


@gin.configurable
def infer_splits(*, model_dir: str = gin.REQUIRED, mixture_or_task_name: str = gin.REQUIRED,
          output_dir: str = gin.REQUIRED, split: str = "test", checkpoint: str = "auto",
          beam_size: int = 4, constrained: bool = True, batch_size: int = 16,
          max_examples: Optional[int] = None,
          partitioner: Any = None) -> dict[str, str]:
  """Writes predictions for `split` of each dataset of the task/mixture, one JSON line a sentence
  ({"id", "text", "types", "entities", "gold"}) in `<output_dir>/<dataset>-<split>.jsonl`, each
  sentence prompted with its dataset's types (punified_jax/infer.py is the command line).
  Returns {dataset: path}.

  `partitioner` (gin: a gin/partitioning/*.gin preset, data-parallel by default) is the mesh
  the Extractor decodes on, over every process's devices; None = this process's devices.  On
  several hosts every process runs the same extraction (each host's devices decode their rows
  of every batch) and process 0 writes the files."""
  config = registry.configure()
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  datasets = list(dict.fromkeys(
      task_names.dataset_of_task(t.name) or t.name for t in getattr(provider, "tasks", [provider])))
  extractor = Extractor.load(model_dir, checkpoint=checkpoint, beam_size=beam_size,
                             constrained=constrained, batch_size=batch_size,
                             partitioning=partitioner)
  print(f"decoding on {extractor.decoder!r}, batch {extractor.batch_size}", flush=True)
  writer = jax.process_index() == 0
  if writer:
    storage.makedirs(output_dir)
  written = {}
  for dataset in datasets:
    splits = registry.load_examples(config, dataset)
    if split not in splits:
      logger.warning("%s has no %r split; skipped", dataset, split)
      continue
    examples = splits[split][:max_examples] if max_examples else splits[split]
    types = entity_types.prompt_names(dataset)
    start = time.time()
    results = extractor.extract([ex.text for ex in examples], types)
    path = storage.join(output_dir, f"{dataset}-{split}.jsonl")
    lines = []
    for index, (ex, entities) in enumerate(zip(examples, results)):
      gold = [{"type": entity_types.prompt_name(dataset, s.type), "text": s.text_in(ex.text),
               "start": s.start, "end": s.end} for s in ex.spans]
      lines.append(json.dumps({"id": f"{dataset}-{split}-{index}", "text": ex.text,
                               "types": list(types), "entities": entities, "gold": gold},
                              ensure_ascii=False) + "\n")
    if writer:  # every process holds the same results (sharded_decoding gathers them)
      storage.write_text_atomic(path, "".join(lines))
    written[dataset] = path
    print(f"{dataset}/{split}: {len(examples)} sentences in {time.time() - start:.1f}s -> {path}",
          flush=True)
  return written
