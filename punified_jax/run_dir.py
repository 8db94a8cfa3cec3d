"""The run directory: what files a run holds, which checkpoint to load, how to load parameters.

Every module that reads or writes a run directory takes its names and rules from here.  A run
directory (the trainer's MODEL_DIR; also what `import_hf` and `from_t5x` write) may be local or
`gs://` (all IO goes through `storage`):

    <model_dir>/checkpoints/<step>/state/   orbax train state {"step", "params", "opt_state"}
    <model_dir>/checkpoints/<step>/meta/    JSON: step, consumed batches, data settings
    <model_dir>/best/<step>/...             the checkpoint with the best mean F1 (same layout)
    <model_dir>/eval/step_<N>.json          evaluation at step N;  eval/best.json: {"metric",
                                            "value", "step"} of the checkpoint kept in best/
    <model_dir>/punified_model.json         the model's self-description (model_info.py)
    <model_dir>/vocab/<name>                a copy of the vocabulary it names
    <model_dir>/metrics.jsonl               one JSON object per logged step (metric_writers.py)
    <model_dir>/tensorboard/                TensorBoard events
    <model_dir>/config.gin                  the operative gin config (as t5x writes it)
    <model_dir>/data_manifest.json          where the data came from (datasets, files, counts)
    <model_dir>/predictions/                per-example predictions (JSON lines)
    <model_dir>/report/                     report.json + report.png
    <model_dir>/model.json, model.gin       written by from_t5x / import_hf (converted models)

Choosing a checkpoint -- ONE rule, used by Extractor.load, eval, report, export and infer
(`choose_checkpoint`):
    "auto"    best/ when the run kept a best checkpoint, else the newest in checkpoints/
    "best"    best/ (error naming the directory when the run kept none)
    "latest"  the newest finished step in checkpoints/
    "<N>"     step N of checkpoints/ (or of best/, where the step kept as best lives)
    a path    anything `resolve_checkpoint_path` accepts: a run directory (its "auto" choice),
              a checkpoints/ or best/ directory (its newest step), a step directory, or its
              `state` item; local or gs://.
A step counts only once finished: orbax writes a local step under a temporary name and renames
it (an unfinished save has no all-digit name), and on gs:// it writes `commit_success.txt` last.

Loading parameters (`load_params`): our checkpoints (any path above), a Hugging Face T5 v1.1 /
MT5 directory (hf_interop translates) or a t5x checkpoint (t5x_interop translates).  The
converters know nothing of this layout; conversions that WRITE a run directory (`import_hf_dir`,
`convert_t5x`, `export_checkpoint`) live here.

This module is light to import (storage, model_info, hf_files): jax, orbax and the converters are
imported inside the functions that need them, so `report` and other light commands stay fast.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Mapping, Optional

from punified_jax import hf_files
from punified_jax import model_info
from punified_jax import storage

logger = logging.getLogger(__name__)

# -- file and directory names ------------------------------------------------------------------
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
EVAL_DIR = "eval"
BEST_SUMMARY_FILE = "best.json"          # inside eval/
MODEL_INFO_FILE = model_info.MODEL_INFO_FILE  # model_info.py reads and writes it
VOCAB_DIR = model_info.VOCAB_SUBDIR
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_GIN_FILE = "config.gin"
DATA_MANIFEST_FILE = "data_manifest.json"
PREDICTIONS_DIR = "predictions"
REPORT_DIR = "report"
CONVERTED_MODEL_JSON = model_info.CONVERTED_MODEL_JSON  # from_t5x's description
MODEL_GIN_FILE = "model.gin"             # from_t5x / import_hf: the network as a gin file
STATE_ITEM = "state"                     # orbax items of a step (checkpoints.py writes them)
META_ITEM = "meta"
COMMIT_SUCCESS_FILE = "commit_success.txt"  # orbax's "finished" marker on object stores

CHECKPOINT_CHOICES = ("auto", "best", "latest")
_EVAL_JSON = re.compile(r"step_(\d+)\.json")


class CheckpointNotFoundError(FileNotFoundError):
  """No checkpoint matches the request (the message names the directory and what it holds)."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """Paths of one run directory (strings; local or gs://)."""
  model_dir: str

  def __init__(self, model_dir: storage.PathLike):
    object.__setattr__(self, "model_dir", storage.absolute(model_dir))

  def _join(self, *parts: str) -> str:
    return storage.join(self.model_dir, *parts)

  @property
  def checkpoints(self) -> str:
    return self._join(CHECKPOINTS_DIR)

  @property
  def best(self) -> str:
    return self._join(BEST_DIR)

  @property
  def eval_dir(self) -> str:
    return self._join(EVAL_DIR)

  def eval_json(self, step: int) -> str:
    return self._join(EVAL_DIR, f"step_{int(step)}.json")

  @property
  def best_summary(self) -> str:
    return self._join(EVAL_DIR, BEST_SUMMARY_FILE)

  @property
  def model_info_file(self) -> str:
    return self._join(MODEL_INFO_FILE)

  @property
  def vocab_dir(self) -> str:
    return self._join(VOCAB_DIR)

  @property
  def metrics(self) -> str:
    return self._join(METRICS_FILE)

  @property
  def tensorboard(self) -> str:
    return self._join(TENSORBOARD_DIR)

  @property
  def config_gin(self) -> str:
    return self._join(CONFIG_GIN_FILE)

  @property
  def data_manifest(self) -> str:
    return self._join(DATA_MANIFEST_FILE)

  @property
  def predictions(self) -> str:
    return self._join(PREDICTIONS_DIR)

  @property
  def report(self) -> str:
    return self._join(REPORT_DIR)

  @property
  def model_gin(self) -> str:
    return self._join(MODEL_GIN_FILE)

  @property
  def converted_model_json(self) -> str:
    return self._join(CONVERTED_MODEL_JSON)


# -- choosing a checkpoint ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A finished checkpoint: its orbax `state` item, its step and the step directory."""
  item_dir: str
  step: int
  step_dir: str


def is_finished_step(step_dir: str) -> bool:
  """A step directory orbax finished writing (see the module docstring)."""
  name = storage.basename(step_dir)
  if not name.isdigit() or not storage.isdir(storage.join(step_dir, STATE_ITEM)):
    return False
  return not storage.is_remote(step_dir) or storage.exists(storage.join(step_dir,
                                                                        COMMIT_SUCCESS_FILE))


def finished_steps(directory: str) -> list[int]:
  """Sorted finished steps of an orbax manager directory (checkpoints/ or best/); [] if absent."""
  if not storage.isdir(directory):
    return []
  return sorted(int(name) for name in storage.listdir(directory)
                if name.isdigit() and is_finished_step(storage.join(directory, name)))


def _at(directory: str, step: int) -> Checkpoint:
  step_dir = storage.join(directory, str(step))
  return Checkpoint(storage.join(step_dir, STATE_ITEM), int(step), step_dir)


def _newest(directory: str) -> Optional[Checkpoint]:
  steps = finished_steps(directory)
  return _at(directory, steps[-1]) if steps else None


def choose_checkpoint(model_dir: storage.PathLike, choice: str | int = "auto") -> Checkpoint:
  """The checkpoint of run `model_dir` meant by `choice` (the rule in the module docstring).

  Raises CheckpointNotFoundError naming the directory and the steps it has.
  """
  layout = Layout(model_dir)
  choice = str(choice)
  best, latest = _newest(layout.best), _newest(layout.checkpoints)
  if choice == "auto":
    found = best or latest
    if found is None:
      raise CheckpointNotFoundError(
          f"{layout.model_dir} holds no finished checkpoint (looked in {layout.best} and "
          f"{layout.checkpoints})")
    return found
  if choice == "best":
    if best is None:
      raise CheckpointNotFoundError(
          f"{layout.model_dir} kept no best checkpoint ({layout.best} has no finished step; the "
          "run evaluated nothing?): choose 'latest' or a step")
    return best
  if choice == "latest":
    if latest is None:
      raise CheckpointNotFoundError(f"{layout.model_dir} has no finished checkpoint in "
                                    f"{layout.checkpoints}")
    return latest
  if choice.isdigit():
    step = int(choice)
    for directory in (layout.checkpoints, layout.best):
      if step in finished_steps(directory):
        return _at(directory, step)
    raise CheckpointNotFoundError(
        f"{layout.model_dir} has no finished checkpoint of step {step} (steps in "
        f"{layout.checkpoints}: {finished_steps(layout.checkpoints)}, in {layout.best}: "
        f"{finished_steps(layout.best)})")
  raise ValueError(f"checkpoint choice {choice!r}: expected one of {', '.join(CHECKPOINT_CHOICES)}, "
                   "a step number, or use resolve_checkpoint_path for a path")


def resolve_checkpoint_path(path: storage.PathLike, choice: str = "auto") -> Checkpoint:
  """The checkpoint a PATH means: a run directory (`choose_checkpoint(path, choice)`), a manager
  directory (checkpoints/ or best/: its newest step), a step directory, or its `state` item."""
  path = storage.absolute(path)
  if not storage.isdir(path):
    raise CheckpointNotFoundError(f"checkpoint path {path} does not exist")
  name = storage.basename(path)
  if name == STATE_ITEM and is_finished_step(storage.dirname(path)):
    step_dir = storage.dirname(path)
    return Checkpoint(path, int(storage.basename(step_dir)), step_dir)
  if is_finished_step(path):
    return Checkpoint(storage.join(path, STATE_ITEM), int(name), path)
  if storage.isdir(storage.join(path, CHECKPOINTS_DIR)) or storage.isdir(storage.join(path, BEST_DIR)):
    return choose_checkpoint(path, choice)
  newest = _newest(path)
  if newest is not None:
    return newest
  raise CheckpointNotFoundError(
      f"{path} holds no checkpoint: expected a run directory (with {CHECKPOINTS_DIR}/ or "
      f"{BEST_DIR}/), a directory of numbered steps, a step directory or its '{STATE_ITEM}' item")


def checkpoint_for(model_dir: storage.PathLike, choice: str = "auto") -> Checkpoint:
  """`choose_checkpoint` for "auto"/"best"/"latest"/a step, `resolve_checkpoint_path` for a
  path: what a `--checkpoint` flag or `checkpoint=` argument means for `model_dir`."""
  choice = str(choice)
  if choice in CHECKPOINT_CHOICES or choice.isdigit():
    return choose_checkpoint(model_dir, choice)
  return resolve_checkpoint_path(choice)


# -- evaluation reports of a run ---------------------------------------------------------------


def eval_steps(eval_dir: str) -> list[int]:
  """Steps N with a `step_<N>.json` in an evaluation directory, sorted."""
  if not storage.isdir(eval_dir):
    return []
  return sorted(int(m.group(1)) for m in map(_EVAL_JSON.fullmatch, storage.listdir(eval_dir)) if m)


def latest_eval_json(eval_dir: str) -> str:
  """The `step_<N>.json` with the largest N in `eval_dir`."""
  steps = eval_steps(eval_dir)
  if not steps:
    raise FileNotFoundError(f"no step_<N>.json evaluation report in {eval_dir}")
  return storage.join(eval_dir, f"step_{steps[-1]}.json")


def best_step(model_dir: storage.PathLike) -> Optional[int]:
  """The step of the checkpoint the run kept as best (eval/best.json), or None."""
  path = Layout(model_dir).best_summary
  if not storage.exists(path):
    return None
  step = storage.read_json(path).get("step")
  return int(step) if step is not None else None


def eval_json_for(model_dir: storage.PathLike, choice: str = "auto") -> str:
  """The evaluation report of the checkpoint `choice` picks (the checkpoint rule, for reports):
  "auto" the best checkpoint's report when the run kept one, else the newest report; "best"
  insists on it; "latest" the newest report; "<N>" step N's report."""
  layout = Layout(model_dir)
  choice = str(choice)
  steps = eval_steps(layout.eval_dir)
  if choice in ("auto", "best"):
    step = best_step(model_dir)
    if step is not None and step in steps:
      return layout.eval_json(step)
    if choice == "best":
      raise FileNotFoundError(
          f"{layout.model_dir} kept no best checkpoint with an evaluation report "
          f"({layout.best_summary} {'names step %s' % step if step is not None else 'is missing'}; "
          f"reports in {layout.eval_dir}: steps {steps}): choose 'latest' or a step")
    return latest_eval_json(layout.eval_dir)
  if choice == "latest":
    return latest_eval_json(layout.eval_dir)
  if choice.isdigit():
    if int(choice) not in steps:
      raise FileNotFoundError(f"{layout.eval_dir} has no report of step {int(choice)} "
                              f"(steps: {steps})")
    return layout.eval_json(int(choice))
  raise ValueError(f"checkpoint choice {choice!r}: expected one of {', '.join(CHECKPOINT_CHOICES)} "
                   "or a step number")


# -- loading parameters ------------------------------------------------------------------------


def is_hf_dir(path: storage.PathLike) -> bool:
  """A Hugging Face model directory (config.json + weights)."""
  return hf_files.is_hf_checkpoint_dir(path)


def load_params(path: storage.PathLike, abstract_params: Any, *, choice: str = "auto") -> Any:
  """Parameters from `path`, placed like `abstract_params` (ShapeDtypeStructs with shardings).

  `path`: one of our checkpoints (anything `resolve_checkpoint_path` accepts; a run directory
  uses `choice`) or a Hugging Face directory (converted on the fly).  The INITIAL_CHECKPOINT_PATH
  and every "load this model" path go through here.
  """
  from punified_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from punified_jax import hf_interop  # pylint: disable=g-import-not-at-top
  if hf_files.is_hf_checkpoint_dir(path):
    return hf_interop.restore_hf_params(path, abstract_params)
  checkpoint = resolve_checkpoint_path(path, choice)
  return checkpoints.restore_params(checkpoint.item_dir, abstract_params)


def single_device_abstract(t5_config) -> Any:
  """The abstract parameters of `t5_config` on the first local device (serving, export)."""
  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                      model_lib.param_shapes(t5_config))


def read_t5x_params(path: str, *, step: Optional[int] = None):
  """(located t5x checkpoint, its parameters as float32 numpy) from a t5x checkpoint path."""
  from punified_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from punified_jax import t5x_interop  # pylint: disable=g-import-not-at-top
  located = t5x_interop.locate_checkpoint(path, step=step)
  if located.kind == "orbax":
    item = storage.join(located.path, t5x_interop.ORBAX_STATE_ITEM)
    try:
      tree = checkpoints.read_tree_entry(item, t5x_interop.PARAMS_KEY)
    except KeyError as error:
      raise t5x_interop.BridgeError(f"{item}: {error.args[0]}; is this a t5x checkpoint?") from None
    except ValueError as error:
      raise t5x_interop.BridgeError(str(error)) from error
  else:
    tree = t5x_interop.read_msgpack_params(located)
  return located, t5x_interop.as_float32(tree, located.path)



# -- writing converted model directories; exporting one checkpoint -----------------------------


def _count(params) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from punified_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(leaf.shape)) for leaf in model_lib.flatten_params(params).values())


def _clear_for_model(layout: Layout, overwrite: bool, error_type: type) -> None:
  """Refuses (or with `overwrite` empties) a directory that already holds a model."""
  taken = [p for p in (layout.checkpoints, layout.model_info_file, layout.converted_model_json)
           if storage.exists(p) and (not storage.isdir(p) or storage.listdir(p))]
  if not taken:
    return
  if not overwrite:
    raise error_type(f"{layout.model_dir} already holds a model ({taken[0]}); pass --overwrite "
                     "to replace it")
  storage.rmtree(layout.checkpoints)
  storage.rmtree(layout.vocab_dir)
  for path in (layout.model_info_file, layout.converted_model_json):
    if storage.exists(path):
      storage.remove(path)


@dataclasses.dataclass(frozen=True)
class Imported:
  """What `import_hf_dir` wrote."""
  hf_dir: str
  output_dir: str
  checkpoint_dir: str  # <output>/checkpoints/0
  config: Any          # model.T5Config
  num_params: int
  vocabulary_path: str  # the copy inside the model directory
  model_type: str


def import_hf_dir(hf_dir: str, output_dir: str, *, task_feature_lengths: Mapping[str, int],
                  vocabulary_path: Optional[str] = None,
                  decoder_start_token_id: Optional[int] = None,
                  dropout_rate: Optional[float] = None, dtype: str = "float32",
                  overwrite: bool = False) -> Imported:
  """An HF directory -> our model directory (checkpoints/0, punified_model.json, vocab/, model.gin).

  The result is what the trainer (INITIAL_CHECKPOINT_PATH=output_dir, --gin_file=output/model.gin)
  and the extractor (`Extractor.load(output_dir)`) read.
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  from punified_jax import checkpoints, hf_interop, t5x_interop  # pylint: disable=g-import-not-at-top
  hf_dir = storage.absolute(hf_dir)
  layout = Layout(output_dir)
  hf_config = hf_files.read_hf_config(hf_dir)
  model_type = hf_interop._check_architecture(  # pylint: disable=protected-access
      hf_config, storage.join(hf_dir, hf_files.CONFIG_FILE))
  config = hf_interop.t5_config_from_hf(hf_dir, dropout_rate=dropout_rate, dtype=dtype,
                                        decoder_start_token_id=decoder_start_token_id)
  params = hf_interop.load_hf_params(hf_dir, config)
  if vocabulary_path is None:
    try:
      vocabulary_path = hf_files.hf_vocabulary_path(hf_dir)
    except hf_files.HfInteropError as error:
      raise hf_files.HfInteropError(f"{error}; pass --vocabulary") from None
  lower_case = hf_files.hf_lower_case(hf_dir) if vocabulary_path.endswith(".txt") else None
  if lower_case is False:
    # model_info reads vocab.txt with BERT's lower-casing; a cased vocabulary needs that passed on.
    logger.warning("%s: the tokenizer is cased (do_lower_case=false); punified_model.json records "
                   "lower_case=false in 'extra', but get_vocabulary lower-cases by default", hf_dir)
  _clear_for_model(layout, overwrite, hf_files.HfInteropError)
  storage.makedirs(layout.model_dir)
  with tempfile.TemporaryDirectory(prefix=".vocab-") as scratch:  # local: a renamed vocab.txt
    source_vocab = (hf_files.canonical_wordpiece(vocabulary_path, scratch)
                    if vocabulary_path.endswith(".txt") else vocabulary_path)
    step_dir = checkpoints.save_params(
        layout.checkpoints, params, step=0,
        meta={"step": 0, "source": "huggingface", "hf_dir": hf_dir, "model_type": model_type})
    extra = {"imported_from": {"hf_dir": hf_dir, "model_type": model_type}}
    if lower_case is not None:
      extra["lower_case"] = lower_case
    model_info.save_model_info(layout.model_dir, t5_config=config, vocabulary_path=source_vocab,
                               task_feature_lengths=dict(task_feature_lengths), extra=extra)
  info = model_info.load_model_info(layout.model_dir)
  storage.write_text_atomic(layout.model_gin, t5x_interop.model_gin_text(
      config, comment=f"Written by `python -m punified_jax import_hf` from {hf_dir}."))
  return Imported(hf_dir, layout.model_dir, step_dir, config, _count(params), info.vocabulary_path,
                  model_type)


@dataclasses.dataclass(frozen=True)
class ExportedCheckpoint:
  checkpoint: str  # the state item that was read
  exported: Any    # hf_interop.Exported


def export_checkpoint(model_dir: str, output_dir: str, *, checkpoint: str = "auto",
                      model_type: str = "t5", overwrite: bool = False) -> ExportedCheckpoint:
  """Exports the checkpoint `checkpoint` (the checkpoint rule) of a described model directory to
  a Hugging Face directory (`python -m punified_jax export`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from punified_jax import checkpoints, hf_interop  # pylint: disable=g-import-not-at-top
  info = model_info.load_model_info(model_dir)
  chosen = checkpoint_for(info.model_dir, checkpoint)
  params = jax.device_get(checkpoints.restore_params(chosen.item_dir,
                                                     single_device_abstract(info.t5_config)))
  exported = hf_interop.export_hf(params, info.t5_config, output_dir,
                                  vocabulary_path=info.vocabulary_path, model_type=model_type,
                                  overwrite=overwrite,
                                  lower_case=bool(info.extra.get("lower_case", True)))
  return ExportedCheckpoint(chosen.item_dir, exported)


@dataclasses.dataclass(frozen=True)
class Converted:
  """What `convert_t5x` wrote."""
  output_dir: str
  checkpoint_dir: str      # <output>/checkpoints/<step>
  step: int
  config: Any              # model.T5Config
  num_params: int
  source: Any              # t5x_interop.T5xCheckpoint
  vocabulary: Optional[str]                        # the copy inside output_dir, if any
  task_feature_lengths: Optional[dict[str, int]]   # recorded for serving, if known


def _check_lengths(lengths: Any, error_type: type) -> Optional[dict[str, int]]:
  if lengths is None:
    return None
  if (not isinstance(lengths, Mapping) or set(lengths) < {"inputs", "targets"}
      or not all(isinstance(lengths[k], int) and lengths[k] > 0 for k in ("inputs", "targets"))):
    raise error_type(f"task feature lengths must be {{'inputs': N, 'targets': M}} with "
                     f"positive ints, got {lengths!r}")
  return {"inputs": lengths["inputs"], "targets": lengths["targets"]}


def convert_t5x(checkpoint: str, output_dir: str, *, step: Optional[int] = None,
                vocabulary: Optional[str] = None,
                task_feature_lengths: Optional[Mapping[str, int]] = None, overwrite: bool = False,
                **config_overrides) -> Converted:
  """Converts a t5x checkpoint into our model directory (`python -m punified_jax from_t5x`).

  Writes `checkpoints/<step>` (params only), `model.json` (T5Config fields, vocabulary, feature
  lengths, provenance), `model.gin` (the network as a gin file) and, with `vocabulary`, a copy in
  `vocab/`; when the feature lengths are known too (`task_feature_lengths`, else the t5x run's
  config.gin) also `punified_model.json`, as our trainer does, so `Extractor.load` serves it.
  `vocabulary`'s size must fit the checkpoint's vocab_size.  `config_overrides` set what shapes
  cannot tell (dtype, dropout_rate, decoder_start_token_id); without a dropout_rate the t5x run's
  DROPOUT_RATE (config.gin) is recorded, so further fine-tuning keeps the run's dropout.
  """
  import dataclasses as dc  # pylint: disable=g-import-not-at-top,reimported
  from punified_jax import checkpoints, t5x_interop  # pylint: disable=g-import-not-at-top
  located, t5x_params = read_t5x_params(checkpoint, step=step)
  settings = t5x_interop.t5x_run_settings(located)
  if config_overrides.get("dropout_rate") is None and isinstance(
      settings.get("DROPOUT_RATE"), (int, float)):
    config_overrides["dropout_rate"] = float(settings["DROPOUT_RATE"])
  config = t5x_interop.config_from_params(t5x_params, source=located.path, **config_overrides)
  params = t5x_interop.to_model_params(t5x_params, config, source=located.path)
  lengths = _check_lengths(task_feature_lengths if task_feature_lengths is not None
                           else settings.get("TASK_FEATURE_LENGTHS"), t5x_interop.BridgeError)
  vocab_file = None
  if vocabulary is not None:
    from punified_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    try:
      loaded = vocab_lib.get_vocabulary(vocabulary)
    except (FileNotFoundError, ValueError) as error:
      raise t5x_interop.BridgeError(f"--vocabulary: {error}") from error
    if loaded.vocab_size > config.vocab_size:
      raise t5x_interop.BridgeError(
          f"vocabulary {vocabulary} has {loaded.vocab_size} entries but the checkpoint's "
          f"embedding has only {config.vocab_size} rows: not the vocabulary this model was "
          "trained with")
    vocab_file = f"{VOCAB_DIR}/{storage.basename(vocabulary)}"

  layout = Layout(output_dir)
  _clear_for_model(layout, overwrite, t5x_interop.BridgeError)
  storage.makedirs(layout.model_dir)
  out_step = int(located.step or 0)
  converted_from = {"path": located.path, "format": located.kind, "step": located.step}
  meta = {"step": out_step, "source": "t5x", "t5x_checkpoint": located.path,
          "t5x_format": located.kind}
  step_dir = checkpoints.save_params(layout.checkpoints, params, step=out_step, meta=meta)
  if vocab_file is not None:
    extra = {"converted_from": converted_from}
    if isinstance(settings.get("MIXTURE_OR_TASK_NAME"), str):
      extra["mixture_or_task_name"] = settings["MIXTURE_OR_TASK_NAME"]
    if lengths is not None:
      model_info.save_model_info(layout.model_dir, t5_config=config, vocabulary_path=vocabulary,
                                 task_feature_lengths=lengths, extra=extra)
    else:  # model.json alone describes the directory (model_info reads it too)
      storage.copy(vocabulary, storage.join(layout.model_dir, vocab_file))
  description = {
      "config": dc.asdict(config),
      "vocabulary": vocab_file,
      "vocabulary_source": storage.absolute(vocabulary) if vocabulary else None,
      "task_feature_lengths": lengths,
      "step": out_step,
      "checkpoint": f"{CHECKPOINTS_DIR}/{out_step}",
      "converted_from": converted_from,
  }
  storage.write_json_atomic(layout.converted_model_json, description, sort_keys=False)
  storage.write_text_atomic(layout.model_gin, t5x_interop.model_gin_text(
      config, comment=f"Written by `python -m punified_jax from_t5x` from {located.path}."))
  return Converted(layout.model_dir, step_dir, out_step, config, _count(params), located,
                   storage.join(layout.model_dir, vocab_file) if vocab_file else None, lengths)
