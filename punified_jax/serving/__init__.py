"""The HTTP service (`python -m punified_jax serve`): app, dynamic batcher, metrics, demo page."""
