"""TFDS builder `punified_ner`: one config per dataset, read from the user's own download.

The datasets cannot be downloaded by TFDS (licences, mirrors that come and go), so the builder
reads them from `manual_dir` through `sources.load_dataset`; the split layout, held-out splits and
lenient repairs are exactly those of `load_splits` (repair counts are logged as warnings). A split
with no example (a held-out split of a tiny file) is not written: TFDS cannot store one.

Config names:
  `<dataset>`                 the dataset's release format (e.g. `resume`, `boson`, `weibo`);
  `<dataset>_<format>`        another format it can be read from, e.g. `resume_punified_json`
                              (the paper's JSON files), `weibo_weibo1` (Weibo's 1st release).
A held-out seed other than 0 (MSRA, Boson, People Daily) is a custom config from
`builder_config(dataset, format, seed)`, named `<config>_seed<N>`.

    import tensorflow_datasets as tfds
    from punified_jax.data import tfds_builder
    builder = tfds_builder.make_builder("resume", data_dir="~/tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/data/raw"))
    ds = builder.as_dataset(split="validation")
    # once this module is imported, tfds.builder("punified_ner/resume", data_dir=...) works too

Each record: `id` ("<dataset>-<split>-<index>"), `text`, `spans` (start, end exclusive, raw type).
Records keep file order (shuffling on write is disabled) so ids and indices agree.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from punified_jax import entity_types
from punified_jax.data import sources
from punified_jax.data.example import Example, Span

BUILDER_VERSION = "1.0.0"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class PunifiedNerConfig(tfds.core.BuilderConfig):
  """One dataset read from one release format with one held-out seed."""
  dataset: str = ""
  format: Optional[str] = None  # None: the dataset's release format
  seed: int = 0


def config_name(dataset: str, format: Optional[str] = None, seed: int = 0) -> str:
  """`resume`, `resume_punified_json`, `boson_seed3`: the config name for these options."""
  format = sources.check_format(dataset, format)
  name = dataset if format == sources.default_format(dataset) else f"{dataset}_{format}"
  return name if seed == 0 else f"{name}_seed{seed}"


def _make_config(dataset: str, format: str, seed: int = 0) -> PunifiedNerConfig:
  unlabeled = sorted(sources.unlabeled_splits(dataset, format))
  description = (f"{dataset} read from the {format} format ({sources.FORMATS[format]}); "
                 f"types: {', '.join(entity_types.raw_types(dataset))}"
                 + (f"; unlabeled splits: {', '.join(unlabeled)}" if unlabeled else ""))
  return PunifiedNerConfig(name=config_name(dataset, format, seed), version=BUILDER_VERSION,
                           description=description, dataset=dataset, format=format, seed=seed)


# Generated from the registry: every dataset in each format it can be read from.
BUILDER_CONFIGS: list[PunifiedNerConfig] = [
    _make_config(dataset, format)
    for dataset in entity_types.DATASETS for format in sources.DATASET_FORMATS[dataset]]


def builder_config(dataset: str, format: Optional[str] = None, seed: int = 0
                   ) -> PunifiedNerConfig:
  """The registered config for (dataset, format), or a custom one when `seed` is not 0."""
  format = sources.check_format(dataset, format)
  if seed == 0:
    name = config_name(dataset, format)
    return next(c for c in BUILDER_CONFIGS if c.name == name)
  return _make_config(dataset, format, seed)


class _ThisFile:
  """Class-level descriptor giving this module's path.

  TFDS finds a builder's source file (`code_path`, used to look for a checksums file) through
  `importlib_resources`, a package tensorflow-datasets does not install; the answer is known
  here, so the builder states it and needs no extra package.
  """

  def __get__(self, instance, owner) -> epath.Path:
    return epath.Path(__file__)


class PunifiedNer(tfds.core.GeneratorBasedBuilder):
  """Chinese NER datasets of PUnifiedNER (and extras), as `Example(text, spans)` records."""

  name = "punified_ner"
  code_path = _ThisFile()
  VERSION = tfds.core.Version(BUILDER_VERSION)
  RELEASE_NOTES = {BUILDER_VERSION: "Readers for every release format; held-out splits from a seed."}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the corpora yourself and pass their root as manual_dir (`prepare --raw_dir DIR`).
Layout (one subfolder per dataset; the folder of a single dataset also works):
  resume/{train,dev,test}.char.bmes          ontonotes4/{train,dev,test}.char.bmes
  ecommerce/{train,dev,test}.txt.bieos       msra/train.txt (+ test.txt)
  cluener2020/{train,dev,test}.json          ccks2021_address/{train,dev}.conll
  weibo/weiboNER_2nd_conll.{train,dev,test}  (or weiboNER.conll.* for config weibo_weibo1)
  boson/BosonNLP_NER_6C.txt                  peoples_daily_1998/pd1998.txt.gz (or .txt)
  peoples_daily_2014/{source,target}_BIO_2014_cropus.txt
For the `*_punified_json` configs, manual_dir is the folder of the paper's JSON files
(resume_train.json, ml_train.json, chinese_address_dev.json, ...) or a root containing
punifiedner_json/.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "text": tfds.features.Text(),
            "spans": tfds.features.Sequence({
                "start": np.int32,
                "end": np.int32,  # exclusive
                "type": tfds.features.Text(),
            }),
        }),
        supervised_keys=None,
        disable_shuffling=True,  # keep file order: ids and load_splits indices agree
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config: PunifiedNerConfig = self.builder_config
    loaded = sources.load_dataset(config.dataset, os.fspath(dl_manager.manual_dir),
                                  format=config.format, seed=config.seed)
    for split, report in loaded.repairs.items():
      if report:  # lenient reading: say what was repaired (`stats` shows the same counts)
        logger.warning("%s/%s from %s: repairs %s", config.name, split, loaded.directory,
                       report.as_dict())
    empty = [split for split, examples in loaded.splits.items() if not examples]
    if empty:  # TFDS cannot write a split with no example (a held-out split of a tiny file)
      logger.warning("%s: splits %s are empty and are not written", config.name, empty)
    return {split: self._generate_examples(config.dataset, split, examples)
            for split, examples in loaded.splits.items() if examples}

  def _generate_examples(self, dataset: str, split: str, examples: list[Example]):
    for index, example in enumerate(examples):
      key = f"{dataset}-{split}-{index}"
      yield key, {
          "id": key,
          "text": example.text,
          "spans": {
              "start": np.array([s.start for s in example.spans], np.int32),
              "end": np.array([s.end for s in example.spans], np.int32),
              "type": [s.type for s in example.spans],
          },
      }


def make_builder(dataset: str, *, format: Optional[str] = None, seed: int = 0,
                 data_dir: Optional[str] = None) -> PunifiedNer:
  """A `punified_ner` builder for (dataset, format, seed) writing/reading under `data_dir`."""
  return PunifiedNer(config=builder_config(dataset, format, seed), data_dir=data_dir)


def _as_str(value: Any) -> str:
  if hasattr(value, "numpy"):
    value = value.numpy()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _as_list(value: Any) -> list:
  if hasattr(value, "numpy"):
    value = value.numpy()
  return list(value)


def examples_from_tfds(record: Mapping[str, Any]) -> Example:
  """An `Example` from one `punified_ner` record (tf tensors or `tfds.as_numpy` values)."""
  spans = record["spans"]
  return Example(_as_str(record["text"]), [
      Span(int(start), int(end), _as_str(kind))
      for start, end, kind in zip(_as_list(spans["start"]), _as_list(spans["end"]),
                                  _as_list(spans["type"]))]).validate()
