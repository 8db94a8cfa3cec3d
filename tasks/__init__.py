"""Importing `tasks` registers every PUnifiedNER SeqIO Task and Mixture.

Works the same under our trainer and under a real t5x install (`--gin_file` with
`import tasks`, or `--gin.MIXTURE_OR_TASK_NAME=...` after `import tasks` in a gin file). Data
location, vocabulary and mixing rates come from environment variables or `tasks.configure`
(gin); see `tasks/registry.py` for the list. With no data source configured (neither
PUNIFIED_RAW_DIR -- a directory, or `builtin` for the synthetic corpus -- nor PUNIFIED_TFDS_DIR)
nothing is registered and a warning says which settings to make.
"""

from tasks.registry import (DataConfig, MIXTURES, NER_MODES, NoDataSourceError, configure,
                            current_config, load_examples, register_all, require_data_source,
                            vocabulary_for)

register_all()

__all__ = ["DataConfig", "MIXTURES", "NER_MODES", "NoDataSourceError", "configure",
           "current_config", "load_examples", "register_all", "require_data_source",
           "vocabulary_for"]
