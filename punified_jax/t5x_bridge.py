"""The old name of `t5x_interop` (renamed when hf_interop and t5x_interop were named alike).

Kept only so that users' gin files written for t5x, which bind or call
`t5x_bridge.padded_vocab_size` (gin's dynamic registration resolves it through this module),
keep working; new code and gin files use `punified_jax.t5x_interop`.
"""

from punified_jax.t5x_interop import padded_vocab_size

__all__ = ["padded_vocab_size"]
