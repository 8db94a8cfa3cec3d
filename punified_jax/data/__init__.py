"""Data layer: release-format readers, the built-in corpus, TFDS builder and statistics."""

from punified_jax.data.example import DataFormatError, Example, RepairReport, Span

__all__ = ["DataFormatError", "Example", "RepairReport", "Span"]
