"""Orbax checkpoint wrapper: keep-N, resume, atomicity, params-only loading, best tracking, signals."""

import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from punified_jax import checkpoints
from punified_jax import run_dir


def _state(scale: float):
  params = {"dense": {"kernel": jnp.full((4, 3), scale, jnp.float32)}, "scale": jnp.arange(3, dtype=jnp.float32)}
  opt_state = optax.adamw(1e-3).init(params)
  return {"step": jnp.asarray(int(scale), jnp.int32), "params": params, "opt_state": opt_state}


def _abstract(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_periodic_keep_n_and_restore_latest(tmp_path):
  manager = checkpoints.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2, save_interval_steps=2, async_save=False)
  started = [manager.save(step, _state(step), {"step": step, "consumed_batches": step}) for step in range(1, 6)]
  assert started == [False, True, False, True, False]  # only multiples of save_interval_steps
  assert manager.save(5, _state(5), {"step": 5, "consumed_batches": 5}, force=True)  # final save
  assert not manager.save(5, _state(5), {"step": 5}, force=True)  # same step twice: no-op
  manager.wait()
  assert manager.all_steps() == [4, 5]  # keep-N dropped step 2
  assert manager.latest_step() == 5
  manager.close()

  reopened = checkpoints.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2, save_interval_steps=2)
  state, meta = reopened.restore(_abstract(_state(0)))
  _assert_trees_equal(state, _state(5))
  assert isinstance(state["opt_state"][0], optax.ScaleByAdamState)  # structure of the target
  assert meta == {"step": 5, "consumed_batches": 5}
  older, _ = reopened.restore(_abstract(_state(0)), step=4)
  _assert_trees_equal(older, _state(4))
  reopened.close()


def test_interrupted_save_is_never_the_latest(tmp_path):
  directory = tmp_path / "ckpt"
  manager = checkpoints.Checkpointer(str(directory), async_save=False)
  manager.save(3, _state(3), {"step": 3}, force=True)
  manager.close()
  # What a save killed half-way leaves behind: orbax's temporary directory (renamed to "7" only
  # once complete), here with partial contents.
  partial = directory / "7.orbax-checkpoint-tmp-1795000000"
  shutil.copytree(directory / "3", partial)
  shutil.rmtree(partial / "state")
  assert checkpoints.Checkpointer(str(directory), read_only=True).latest_step() == 3
  reopened = checkpoints.Checkpointer(str(directory))  # cleans temporary directories up
  assert reopened.latest_step() == 3
  state, _ = reopened.restore(_abstract(_state(0)))
  _assert_trees_equal(state, _state(3))
  reopened.close()
  assert not partial.exists()


def test_load_params_from_every_kind_of_path(tmp_path):
  run = tmp_path / "run"
  manager = checkpoints.Checkpointer(str(run / "checkpoints"), async_save=False)
  manager.save(10, _state(10), {"step": 10}, force=True)
  manager.save(20, _state(20), {"step": 20}, force=True)
  manager.close()
  abstract_params = _abstract(_state(0)["params"])
  for path, expected in [(run, 20), (run / "checkpoints", 20), (run / "checkpoints" / "10", 10),
                         (run / "checkpoints" / "10" / "state", 10)]:
    params = run_dir.load_params(str(path), abstract_params)
    _assert_trees_equal(params, _state(expected)["params"])
  # checkpoints.restore_params itself takes the state item and nothing else.
  _assert_trees_equal(checkpoints.restore_params(str(run / "checkpoints" / "10" / "state"), abstract_params),
                      _state(10)["params"])


def test_save_params_round_trip_and_errors(tmp_path):
  params = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)}
  step_dir = checkpoints.save_params(str(tmp_path / "converted"), params, step=0)
  assert step_dir.endswith(os.path.join("converted", "0"))
  restored = run_dir.load_params(str(tmp_path / "converted"), _abstract(params))
  _assert_trees_equal(restored, params)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    run_dir.load_params(str(tmp_path / "missing"), _abstract(params))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoints.restore_params(str(tmp_path / "missing" / "state"), _abstract(params))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    run_dir.load_params(str(tmp_path / "empty"), _abstract(params))
  with pytest.raises(ValueError, match="cannot load parameters"):
    run_dir.load_params(str(tmp_path / "converted"), _abstract({"other": jnp.zeros(2)}))


def test_best_tracker_keeps_only_the_best(tmp_path):
  summary = tmp_path / "eval" / "best.json"
  tracker = checkpoints.BestCheckpointTracker(str(tmp_path / "best"), str(summary), metric="mean_f1")
  assert tracker.update(1, 50.0, _state(1), {"step": 1})
  assert not tracker.update(2, 40.0, _state(2), {"step": 2})
  assert not tracker.update(3, 50.0, _state(3), {"step": 3})  # a tie does not replace
  assert tracker.update(4, 60.0, _state(4), {"step": 4})
  tracker.close()
  assert sorted(os.listdir(tmp_path / "best")) == ["4"]
  assert json.loads(summary.read_text()) == {"metric": "mean_f1", "value": 60.0, "step": 4}
  restarted = checkpoints.BestCheckpointTracker(str(tmp_path / "best"), str(summary), metric="mean_f1")
  assert (restarted.best_value, restarted.best_step) == (60.0, 4)
  assert not restarted.update(5, 55.0, _state(5), {"step": 5})
  restarted.close()
  params = run_dir.load_params(str(tmp_path / "best"), _abstract(_state(0)["params"]))
  _assert_trees_equal(params, _state(4)["params"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_preemption_watcher_turns_signals_into_a_flag(signum):
  previous = signal.getsignal(signum)
  with checkpoints.PreemptionWatcher(multi_process=False) as watcher:
    assert not watcher.requested
    os.kill(os.getpid(), signum)
    assert watcher.requested
    assert watcher.signal_name == signal.Signals(signum).name
  assert signal.getsignal(signum) is previous


def test_second_sigint_interrupts():
  with checkpoints.PreemptionWatcher(multi_process=False):
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)


def test_multi_process_watcher_leaves_sigterm_to_jax():
  previous = signal.getsignal(signal.SIGTERM)
  with checkpoints.PreemptionWatcher(multi_process=True):
    assert signal.getsignal(signal.SIGTERM) is previous
