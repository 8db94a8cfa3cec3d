"""Optimizers (Adafactor, AdamW), learning-rate schedules and gradient clipping, all gin-configured.

Adafactor is T5's optimizer: factored second moments (a [rows] and a [cols] statistic instead of
a full [rows, cols] one), update clipping at RMS 1, updates scaled by the parameter's RMS, no
momentum; with a constant 1e-3 rate it is the usual T5 fine-tuning recipe. AdamW with a linear
warm-up is the paper's setting (learning rate 1e-4).

Gradient accumulation is not an optax wrapper here: the trainer scans over micro-batches inside
one jitted step (see trainer.py), so the optimizer always sees the full-batch gradient.
"""

from __future__ import annotations

import logging
import math

import gin
import jax.numpy as jnp
import optax

logger = logging.getLogger(__name__)

SCHEDULES = ("constant", "rsqrt", "linear", "cosine")


@gin.configurable
def make_schedule(
    *,
    base_learning_rate: float = 1e-3,
    kind: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    final_learning_rate: float = 0.0,
) -> optax.Schedule:
  """A learning-rate schedule: linear warm-up from 0 to `base_learning_rate`, then `kind`.

  kind:
    constant: stays at the base rate.
    rsqrt:    base * sqrt(warmup / step) after warm-up (T5's inverse square root decay, scaled so
              the peak is `base_learning_rate`; with no warm-up the decay starts at step 1).
    linear:   straight line down to `final_learning_rate` at `total_steps`.
    cosine:   half cosine down to `final_learning_rate` at `total_steps`.
  """
  if kind not in SCHEDULES:
    raise ValueError(f"make_schedule.kind must be one of {SCHEDULES}, got {kind!r}")
  if base_learning_rate <= 0:
    raise ValueError(f"make_schedule.base_learning_rate must be > 0, got {base_learning_rate}")
  if warmup_steps < 0:
    raise ValueError(f"make_schedule.warmup_steps must be >= 0, got {warmup_steps}")
  if kind in ("linear", "cosine"):
    if total_steps is None or total_steps < 1:
      raise ValueError(f"make_schedule.kind={kind!r} needs total_steps >= 1 (TRAIN_STEPS), got {total_steps}")
    if total_steps <= warmup_steps:
      # A short (smoke-test) run of a long recipe: it ends inside the warm-up, no decay happens.
      logger.warning("make_schedule: total_steps=%d <= warmup_steps=%d: the run ends during warm-up",
                     total_steps, warmup_steps)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    if warmup_steps > 0:
      warmup_factor = jnp.minimum(1.0, (step + 1.0) / warmup_steps)
    else:
      warmup_factor = 1.0
    if kind == "constant":
      decayed = base_learning_rate
    elif kind == "rsqrt":
      pivot = float(max(warmup_steps, 1))
      decayed = base_learning_rate * jnp.sqrt(pivot / jnp.maximum(step + 1.0, pivot))
    else:
      progress = jnp.clip((step - warmup_steps) / float(max(total_steps - warmup_steps, 1)), 0.0, 1.0)
      if kind == "linear":
        shape = 1.0 - progress
      else:
        shape = 0.5 * (1.0 + jnp.cos(math.pi * progress))
      decayed = final_learning_rate + (base_learning_rate - final_learning_rate) * shape
    return warmup_factor * decayed

  return schedule


@gin.configurable
def make_optimizer(
    *,
    name: str = "adafactor",
    learning_rate: optax.Schedule | float | None = None,
    clip_grad_norm: float | None = None,
    weight_decay: float = 0.0,
    # Adafactor (T5 defaults).
    decay_rate: float = 0.8,
    min_dim_size_to_factor: int = 128,
    multiply_by_parameter_scale: bool = True,
    update_clipping_threshold: float | None = 1.0,
    # AdamW (the paper's / Hugging Face's defaults).
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
  """Builds the optimizer.

  Args:
    name: "adafactor" (T5's default) or "adamw" (the paper's).
    learning_rate: a schedule (`make_schedule()` when None) or a constant.
    clip_grad_norm: clip the global gradient norm to this value before the update (None = off).
    weight_decay: decoupled weight decay (AdamW) / Adafactor's `weight_decay_rate`; 0 = off.
    decay_rate, min_dim_size_to_factor, multiply_by_parameter_scale, update_clipping_threshold:
      Adafactor settings (optax's defaults are T5's: factor matrices whose two largest
      dimensions are >= 128; smaller ones keep a full second moment).
    b1, b2, eps: AdamW settings.
  """
  if learning_rate is None:
    learning_rate = make_schedule()
  if clip_grad_norm is not None and clip_grad_norm <= 0:
    raise ValueError(f"make_optimizer.clip_grad_norm must be > 0 or None, got {clip_grad_norm}")
  if name == "adafactor":
    core = optax.adafactor(
        learning_rate=learning_rate,
        min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate,
        multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=update_clipping_threshold,
        weight_decay_rate=weight_decay or None,
        factored=True,
    )
  elif name == "adamw":
    core = optax.adamw(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  else:
    raise ValueError(f"make_optimizer.name must be 'adafactor' or 'adamw', got {name!r}")
  if clip_grad_norm is None:
    return core
  return optax.chain(optax.clip_by_global_norm(clip_grad_norm), core)
