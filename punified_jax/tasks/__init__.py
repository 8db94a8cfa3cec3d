"""PUnifiedNER's SeqIO Tasks and Mixtures, and what their names mean.

  names.py     the task and mixture names: `task_name(dataset, kind)`, `dataset_of_task(name)`,
               `datasets_of(names)` (light; the rest of the code uses these, never the literal
               prefixes)
  registry.py  the Tasks and Mixtures: data config, sources, preprocessors, vocabulary;
               `register_all()`, `configure()` (gin: tasks.configure.*)
  mixing.py    the mixing schemes of the joint Mixtures (gin: tasks.mixing.scheme.*)

Importing this package registers nothing, so the names cost no TensorFlow. What registers
everything is `import tasks`: the t5x-style module the gin files, MIXTURE_OR_TASK_MODULE and
seqio users name, kept at the repository root as an alias of this package (the wheel does not
install a top-level `tasks`, which would collide with any other). From an installed wheel
without the repository, call `punified_jax.tasks.registry.register_all()`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Optional

from punified_jax.tasks.names import (JOINT_MIXTURE, KINDS, MIXTURES, NER, NER_KINDS, NER_RANDOM,
                                      NER_RANDOM_EXACT, PREFIX_LM, TaskName, dataset_of_task,
                                      datasets_of, parse_task_name, task_name)


def loaded_registry() -> Optional[ModuleType]:
  """The registry module when this process imported it (a gin file's `import tasks` does),
  else None: the entry points configure our tasks, and require their data settings, only in runs
  that use them (never for other tasks, e.g. the tests' in-memory ones)."""
  return sys.modules.get(f"{__name__}.registry")


__all__ = ["JOINT_MIXTURE", "KINDS", "MIXTURES", "NER", "NER_KINDS", "NER_RANDOM", "NER_RANDOM_EXACT",
           "PREFIX_LM", "TaskName", "dataset_of_task", "datasets_of", "loaded_registry",
           "parse_task_name", "task_name"]
