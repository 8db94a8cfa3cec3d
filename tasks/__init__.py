"""`import tasks` registers every PUnifiedNER SeqIO Task and Mixture.

The t5x-style module name the gin files (`import tasks`, `from tasks import mixing`),
MIXTURE_OR_TASK_MODULE = 'tasks' and seqio users know. The code lives in punified_jax/tasks/
(registry.py, mixing.py, names.py); this repository-root package is only an alias of it, so that
`tasks.registry`, `tasks.mixing` and `tasks.names` are the very same module objects (one seqio
registration, one set of gin configurables: `tasks.configure.*`, `tasks.mixing.scheme.*`). It is
not in the wheel: a top-level `tasks` in site-packages would collide with any other project's.

Data location, vocabulary and mixing rates come from environment variables or `tasks.configure`
(gin); see punified_jax/tasks/registry.py for the list. With no data source configured (neither
PUNIFIED_RAW_DIR -- a directory, or `builtin` for the synthetic corpus -- nor PUNIFIED_TFDS_DIR)
nothing is registered and a warning says which settings to make.
"""

import sys

from punified_jax.tasks import mixing, names, registry
from punified_jax.tasks.registry import (DataConfig, MIXTURES, NER_MODES, NoDataSourceError,
                                         configure, current_config, load_examples, register_all,
                                         require_data_source, vocabulary_for)

for _name, _module in (("mixing", mixing), ("names", names), ("registry", registry)):
  sys.modules[f"{__name__}.{_name}"] = _module

register_all()

__all__ = ["DataConfig", "MIXTURES", "NER_MODES", "NoDataSourceError", "configure",
           "current_config", "load_examples", "mixing", "names", "register_all", "registry",
           "require_data_source", "vocabulary_for"]
