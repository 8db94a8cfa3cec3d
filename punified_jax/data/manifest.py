"""What data made a run: the data settings fingerprint and the run directory's records.

Every run directory holds, written by process 0 after the first train step:
  config.gin           the operative gin config (`gin.operative_config_str()`, as t5x writes it):
                       every parameter a configurable actually used, macros resolved.
  data_manifest.json   where the data came from: the data source, each dataset's format,
                       directory and files per split, per-split sentence / mention / repair
                       counts and whether the split is labeled, the vocabulary file and its
                       sha256, and the mixture with its per-task rates as seqio reports them.

`data_settings(config)` is the small, cheap description of the data settings that every process
of a multi-process run exchanges at start-up (`distributed.check_same_settings`): the
`DataConfig` fields plus the size of every raw file (or the built-in generator's digest), so two
hosts with different copies of a dataset disagree before the first step.

File IO goes through `punified_jax.storage`, so a `gs://` run directory works like a local one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any, Mapping, Optional

from punified_jax import run_dir
from punified_jax import storage
from punified_jax import tasks as punified_tasks
from punified_jax.data import builtin
from punified_jax.data import sources
from punified_jax.tasks import mixing
from punified_jax.tasks import names as task_names

logger = logging.getLogger(__name__)

# File names in a run directory (run_dir.py owns the layout).
CONFIG_GIN_FILE = run_dir.CONFIG_GIN_FILE
DATA_MANIFEST_FILE = run_dir.DATA_MANIFEST_FILE
MANIFEST_VERSION = 1


def _config_fields(config) -> dict:
  fields = dataclasses.asdict(config)
  fields["datasets"] = list(config.datasets)
  return fields


def data_settings(config) -> dict:
  """The data settings every process must agree on (see module doc). Cheap: sizes, no reads."""
  settings: dict[str, Any] = {"config": _config_fields(config)}
  if config.raw_dir == sources.BUILTIN:
    settings["builtin_generator"] = builtin.generator_digest()
  elif config.raw_dir and not config.tfds_dir:
    sizes = {}
    for dataset in config.datasets:
      try:
        files = sources.split_files(dataset, config.raw_dir, format=config.format_for(dataset))
      except sources.MissingDataError:
        continue
      for path in sorted({p for paths in files.values() for p in paths}):
        relative = path[len(config.raw_dir):].lstrip("/") if path.startswith(config.raw_dir) else path
        sizes[relative] = storage.as_path(path).stat().length
    settings["raw_file_sizes"] = sizes
  if config.vocabulary:
    settings["vocabulary_sha256"] = file_sha256(config.vocabulary)
  return settings


def file_sha256(path: str) -> str:
  return hashlib.sha256(storage.read_bytes(path)).hexdigest()


def _datasets_of(provider) -> list[str]:
  """Dataset names of a mixture's (or a task's) PUnifiedNER tasks, in order."""
  return task_names.datasets_of(task.name for task in getattr(provider, "tasks", [provider]))


def mixture_record(provider) -> dict:
  """{"name", "kind", "rates": {task: rate}, "probabilities", "scheme"} read from the registered
  seqio provider itself; "scheme" is the mixing scheme of our mixtures (punified_jax/tasks/mixing.py)."""
  import seqio  # pylint: disable=g-import-not-at-top
  if isinstance(provider, seqio.Mixture):
    rates = {task.name: float(provider.get_rate(task)) for task in provider.tasks}
    total = sum(rates.values())
    return {"name": provider.name, "kind": "mixture", "rates": rates,
            "probabilities": {k: (v / total if total else None) for k, v in rates.items()},
            "scheme": mixing.scheme_of(provider)}
  return {"name": provider.name, "kind": "task", "rates": {provider.name: 1.0},
          "probabilities": {provider.name: 1.0}, "scheme": None}


def _counts(examples) -> tuple[int, int]:
  return len(examples), sum(len(e.spans) for e in examples)


def dataset_record(config, dataset: str) -> dict:
  """Format, location, files and per-split counts of one dataset under `config`."""
  from punified_jax.tasks import registry  # pylint: disable=g-import-not-at-top
  format = sources.check_format(dataset, config.format_for(dataset))
  record: dict[str, Any] = {"format": format}
  splits: dict[str, dict] = {}
  if config.tfds_dir:
    builder = registry._tfds_builder(config, dataset)  # pylint: disable=protected-access
    record["directory"] = os.fspath(builder.data_dir)
    record["tfds_name"] = f"punified_ner/{builder.builder_config.name}:{builder.version}"
    static_unlabeled = sources.unlabeled_splits(dataset, format)
    for split, examples in registry.load_examples(config, dataset).items():
      sentences, mentions = _counts(examples)
      # TFDS holds the examples, not the reader's repair counts (`prepare` logged them).
      splits[split] = {"sentences": sentences, "mentions": mentions, "repairs": None,
                       "labeled": split not in static_unlabeled}
  else:
    loaded = registry.loaded_dataset(config, dataset)
    record["directory"] = loaded.directory
    record["files"] = sources.split_files(dataset, config.raw_dir, format=format)
    for split, examples in loaded.splits.items():
      sentences, mentions = _counts(examples)
      splits[split] = {"sentences": sentences, "mentions": mentions,
                       "repairs": loaded.repairs[split].as_dict(),
                       "labeled": split not in loaded.unlabeled}
  record["splits"] = splits
  return record


def vocabulary_record(provider) -> dict:
  from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocabulary = provider.output_features["targets"].vocabulary
  vocabulary = getattr(vocabulary, "vocabulary", vocabulary)  # tasks.LazyVocabulary -> the real one
  info = vocab_lib.vocab_info(vocabulary)
  record = {"kind": info["type"], "path": info["path"], "size": info["vocab_size"]}
  record["sha256"] = file_sha256(info["path"]) if info["path"] else None
  return record


def build_manifest(mixture_or_task_name: str, config=None) -> dict:
  """The data manifest of a run on `mixture_or_task_name` under the tasks' data config."""
  import seqio  # pylint: disable=g-import-not-at-top
  from punified_jax.tasks import registry  # pylint: disable=g-import-not-at-top
  config = registry.require_data_source(config)
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  resolved = None
  if config.raw_dir and not config.tfds_dir:
    resolved = sources.resolve_raw_dir(config.raw_dir)
  return {
      "version": MANIFEST_VERSION,
      "source": config.describe_source(),
      "builtin": config.is_builtin,
      "config": _config_fields(config),
      "raw_dir_resolved": resolved,
      "mixture": mixture_record(provider),
      "vocabulary": vocabulary_record(provider),
      "datasets": {dataset: dataset_record(config, dataset) for dataset in _datasets_of(provider)},
  }


def write_run_records(model_dir: str, mixture_or_task_name: str) -> None:
  """Writes config.gin and (for PUnifiedNER tasks) data_manifest.json into `model_dir`.

  Called by the trainer on process 0 after the first step (as t5x writes config.gin: by then
  every configurable has been called, so the operative config is complete). A run on tasks that
  are not ours (tests' in-memory tasks) gets config.gin and no manifest.
  """
  import gin  # pylint: disable=g-import-not-at-top
  storage.write_text_atomic(storage.join(model_dir, CONFIG_GIN_FILE), gin.operative_config_str())
  registry = punified_tasks.loaded_registry()
  import seqio  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  if registry is None or not _datasets_of(provider):
    logger.info("%s: not PUnifiedNER tasks; no %s written", mixture_or_task_name, DATA_MANIFEST_FILE)
    return
  storage.write_json_atomic(storage.join(model_dir, DATA_MANIFEST_FILE),
                            build_manifest(mixture_or_task_name))


def read_manifest(model_dir: str) -> Optional[dict]:
  path = storage.join(model_dir, DATA_MANIFEST_FILE)
  return storage.read_json(path) if storage.exists(path) else None


def format_manifest(manifest: Mapping[str, Any]) -> str:
  """A human-readable summary: source, vocabulary, mixture rates, per-dataset split counts."""
  lines = [f"data: {manifest['source']}"]
  vocabulary = manifest.get("vocabulary") or {}
  if vocabulary:
    sha = (vocabulary.get("sha256") or "")[:16]
    lines.append(f"vocabulary: {vocabulary.get('path')} ({vocabulary.get('kind')}, "
                 f"{vocabulary.get('size')} ids, sha256 {sha}...)")
  mixture = manifest.get("mixture") or {}
  scheme = (mixture.get("scheme") or {}).get("label")
  lines.append(f"mixture: {mixture.get('name')} ({mixture.get('kind')}"
               + (f", mixing scheme {scheme})" if scheme else ")"))
  probabilities = mixture.get("probabilities") or {}
  for task, rate in (mixture.get("rates") or {}).items():
    probability = probabilities.get(task)
    shown = "" if probability is None else f"  p={probability:.3f}"
    lines.append(f"  {task:<40} rate {rate:g}{shown}")
  lines.append(f"{'dataset':<20}{'format':<14}{'split':<12}{'sentences':>10}{'mentions':>10}"
               f"{'repairs':>9}  labeled")
  for dataset, record in (manifest.get("datasets") or {}).items():
    for split, counts in record.get("splits", {}).items():
      repairs = counts.get("repairs")
      repaired = "n/a" if repairs is None else str(sum(repairs.values()))
      lines.append(f"{dataset:<20}{record.get('format', ''):<14}{split:<12}"
                   f"{counts['sentences']:>10}{counts['mentions']:>10}{repaired:>9}  "
                   f"{'yes' if counts.get('labeled', True) else 'NO'}")
  return "\n".join(lines)
