"""What PUnifiedNER's SeqIO task and mixture names mean: the one place that spells them.

Tasks, per dataset `<ds>` of `entity_types.DATASETS` (kind -> name):
  prefix_lm         punified_prefix_lm_<ds>         language-model adaptation
  ner               punified_ner_<ds>               dataset-dependent prompt (the paper's best)
  ner_random        punified_ner_<ds>_random        random prompt
  ner_random_exact  punified_ner_<ds>_random_exact  random prompt + exact-match prompt
Mixtures (one kind each, over the datasets with a train split): punified_prefix_lm,
punified_ner_joint, punified_ner_joint_random, punified_ner_joint_random_exact.

Light (no TensorFlow, no seqio, registers nothing), so the trainer, reports, comparisons and
benchmarks map names to datasets without importing the registry.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

from punified_jax import entity_types

PREFIX_LM = "prefix_lm"
NER = "ner"
NER_RANDOM = "ner_random"
NER_RANDOM_EXACT = "ner_random_exact"

# kind -> (prefix, suffix) of its task names.
_AFFIXES = {
    PREFIX_LM: ("punified_prefix_lm_", ""),
    NER: ("punified_ner_", ""),
    NER_RANDOM: ("punified_ner_", "_random"),
    NER_RANDOM_EXACT: ("punified_ner_", "_random_exact"),
}
KINDS = tuple(_AFFIXES)
NER_KINDS = (NER, NER_RANDOM, NER_RANDOM_EXACT)

# mixture name -> the kind of its tasks.
MIXTURES = {
    "punified_prefix_lm": PREFIX_LM,
    "punified_ner_joint": NER,
    "punified_ner_joint_random": NER_RANDOM,
    "punified_ner_joint_random_exact": NER_RANDOM_EXACT,
}
JOINT_MIXTURE = "punified_ner_joint"


class TaskName(NamedTuple):
  dataset: str
  kind: str


def task_name(dataset: str, kind: str = NER) -> str:
  """`task_name("resume", "ner_random")` -> `punified_ner_resume_random`."""
  entity_types.check_dataset(dataset)
  if kind not in _AFFIXES:
    raise ValueError(f"unknown task kind {kind!r}; kinds: {', '.join(KINDS)}")
  prefix, suffix = _AFFIXES[kind]
  return f"{prefix}{dataset}{suffix}"


def parse_task_name(name: str) -> Optional[TaskName]:
  """`punified_ner_cluener_random` -> TaskName("cluener", "ner_random"); None for a name that is
  not one of our tasks (a mixture, another project's task, a test's in-memory task)."""
  # Unambiguous because the middle must be a known dataset: `punified_ner_resume_random` is not
  # kind `ner` of a dataset `resume_random`.
  for kind, (prefix, suffix) in _AFFIXES.items():
    if name.startswith(prefix) and name.endswith(suffix):
      dataset = name[len(prefix):len(name) - len(suffix)]
      if dataset in entity_types.DATASETS:
        return TaskName(dataset, kind)
  return None


def dataset_of_task(name: str) -> Optional[str]:
  """The dataset of one of our task names (any kind), else None."""
  parsed = parse_task_name(name)
  return parsed.dataset if parsed else None


def datasets_of(task_names: Iterable[str]) -> list[str]:
  """The datasets of those names that are our tasks, first occurrence first, each once."""
  return list(dict.fromkeys(d for d in map(dataset_of_task, task_names) if d is not None))

