"""punified-jax: PUnifiedNER (one prompt-driven T5 for many Chinese NER datasets) on JAX/Flax."""

__version__ = "0.1.0"
