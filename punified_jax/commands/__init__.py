"""Subcommands of `python -m punified_jax`; see `punified_jax/__main__.py`."""
