"""Learning-rate schedules and optimizer construction (literal values)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from punified_jax import optimizers


def _values(schedule, steps):
  return [round(float(schedule(step)), 6) for step in steps]


def test_constant_with_and_without_warmup():
  assert _values(optimizers.make_schedule(base_learning_rate=1e-3), [0, 1, 1000]) == [1e-3, 1e-3, 1e-3]
  warm = optimizers.make_schedule(base_learning_rate=1.0, warmup_steps=4)
  # The first step already moves (1/4 of the rate), the fourth (step 3) reaches the base rate.
  assert _values(warm, [0, 1, 3, 10]) == [0.25, 0.5, 1.0, 1.0]


def test_rsqrt_decay_peaks_at_base_after_warmup():
  schedule = optimizers.make_schedule(base_learning_rate=1.0, kind="rsqrt", warmup_steps=4)
  # Steps are 0-based: step s is the (s+1)-th update; decay = sqrt(4 / (s+1)) after warm-up.
  assert _values(schedule, [0, 3, 15, 63]) == [0.25, 1.0, 0.5, 0.25]
  no_warmup = optimizers.make_schedule(base_learning_rate=1.0, kind="rsqrt")
  assert _values(no_warmup, [0, 3, 99]) == [1.0, 0.5, 0.1]


def test_linear_and_cosine_decay():
  linear = optimizers.make_schedule(base_learning_rate=1.0, kind="linear", total_steps=10)
  assert _values(linear, [0, 5, 10, 20]) == [1.0, 0.5, 0.0, 0.0]
  cosine = optimizers.make_schedule(base_learning_rate=1.0, kind="cosine", total_steps=10,
                                    final_learning_rate=0.2)
  assert _values(cosine, [0, 5, 10]) == [1.0, 0.6, 0.2]
  warm_linear = optimizers.make_schedule(base_learning_rate=1e-4, kind="linear", warmup_steps=10,
                                         total_steps=110)
  assert _values(warm_linear, [4, 9, 60, 110]) == [5e-5, 1e-4, 5e-5, 0.0]


def test_run_shorter_than_warmup_stays_in_warmup():
  schedule = optimizers.make_schedule(base_learning_rate=1.0, kind="linear", warmup_steps=100, total_steps=20)
  assert _values(schedule, [0, 19]) == [0.01, 0.2]


def test_schedule_is_jittable():
  schedule = optimizers.make_schedule(base_learning_rate=1.0, kind="cosine", total_steps=10)
  assert float(jax.jit(schedule)(jnp.asarray(5))) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="exponential"), "kind must be one of"),
    (dict(base_learning_rate=0.0), "base_learning_rate must be > 0"),
    (dict(warmup_steps=-1), "warmup_steps must be >= 0"),
    (dict(kind="linear"), "needs total_steps >= 1"),
    (dict(kind="cosine", total_steps=0), "needs total_steps >= 1"),
])
def test_schedule_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optimizers.make_schedule(**kwargs)


def test_adamw_first_update_is_signed_learning_rate():
  optimizer = optimizers.make_optimizer(name="adamw", learning_rate=0.1)
  params = {"w": jnp.array([1.0, 2.0])}
  grads = {"w": jnp.array([0.5, -0.1])}
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  # Bias-corrected Adam's first step is lr * g / |g|.
  np.testing.assert_allclose(np.asarray(updates["w"]), [-0.1, 0.1], rtol=1e-5)  # float32 sqrt


def test_global_norm_clipping_scales_the_gradient():
  optimizer = optimizers.make_optimizer(name="adamw", learning_rate=1.0, clip_grad_norm=1.0)
  assert isinstance(optimizer.init({"w": jnp.zeros(2)})[0], optax.EmptyState)  # the clipping stage
  clip = optax.clip_by_global_norm(1.0)
  clipped, _ = clip.update({"w": jnp.array([3.0, 4.0])}, clip.init(None))
  np.testing.assert_allclose(np.asarray(clipped["w"]), [0.6, 0.8], rtol=1e-6)


def test_adafactor_factors_large_matrices_only():
  optimizer = optimizers.make_optimizer(name="adafactor", learning_rate=1e-3)
  state = optimizer.init({"matrix": jnp.zeros((256, 128)), "small": jnp.zeros((64, 32)), "vector": jnp.zeros(300)})
  factored = [s for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: hasattr(x, "v_row"))
              if hasattr(s, "v_row")][0]
  # T5's factored second moment: one vector per dimension instead of 256 x 128 (optax's v_row
  # reduces the largest dimension away, v_col the other one).
  assert factored.v_row["matrix"].shape == (128,)
  assert factored.v_col["matrix"].shape == (256,)
  assert factored.v["matrix"].shape == (1,)
  assert factored.v["small"].shape == (64, 32)     # below min_dim_size_to_factor=128: unfactored
  assert factored.v["vector"].shape == (300,)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="sgd"), "must be 'adafactor' or 'adamw'"),
    (dict(clip_grad_norm=0.0), "clip_grad_norm must be > 0"),
])
def test_optimizer_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optimizers.make_optimizer(learning_rate=1e-3, **kwargs)
