"""Importing `tasks` registers every PUnifiedNER SeqIO Task and Mixture.

Works the same under our trainer and under a real t5x install (`--gin_file` with
`import tasks`, or `--gin.MIXTURE_OR_TASK_NAME=...` after `import tasks` in a gin file). Data
location, vocabulary and mixing rates come from environment variables or `tasks.configure`
(gin); see `tasks/registry.py` for the list.
"""

from tasks.registry import (DataConfig, MIXTURES, NER_MODES, configure, current_config,
                            load_examples, register_all, vocabulary_for)

register_all()

__all__ = ["DataConfig", "MIXTURES", "NER_MODES", "configure", "current_config",
           "load_examples", "register_all", "vocabulary_for"]
