"""Imported by the gin files of the subprocess tests (`import cli_tasks`, PYTHONPATH=tests):
registers small in-memory tasks so the command-line tests need no corpus."""

import trainer_helpers as th

th.register_task("cli_memorise", th.memorise_examples(16))
th.register_task("cli_memorise_b", [{"inputs": f"m{i:02d}", "targets": th.WORDS[(i * 7) % 16]} for i in range(16)])
th.register_mixture("cli_joint", ["cli_memorise", "cli_memorise_b"])
