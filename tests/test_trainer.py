"""The training loop: overfitting + exact decoding, sharding equivalence on 8 fake devices,
SIGTERM resume, gradient accumulation, params-only initialisation, the input pipeline."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from punified_jax import evaluation, optimizers, partitioning, trainer

import trainer_helpers as th

LENGTHS = {"inputs": 8, "targets": 12}  # the longest word (8 bytes) + EOS fits the targets


@pytest.fixture(scope="module")
def memorise_task():
  return th.register_task("trainer_memorise", th.memorise_examples(16))


_SHARED = {}


def _shared(name, build):
  """One model / optimizer / schedule object per setting, so repeated runs reuse compiled steps."""
  if name not in _SHARED:
    _SHARED[name] = build()
  return _SHARED[name]


def _train(model_dir, task, *, steps, model=None, optimizer_name="adamw", lr=3e-3, **kwargs):
  schedule = _shared(("schedule", lr), lambda: optimizers.make_schedule(base_learning_rate=lr))
  optimizer = _shared(("optimizer", optimizer_name, lr),
                      lambda: optimizers.make_optimizer(name=optimizer_name, learning_rate=schedule))
  model = model or _shared("model", th.tiny_model)
  kwargs.setdefault("log_every", 1)
  return trainer.train(model=model, model_dir=str(model_dir), mixture_or_task_name=task,
                       task_feature_lengths=LENGTHS, train_steps=steps, batch_size=8, optimizer=optimizer,
                       learning_rate_schedule=schedule, tensorboard=False, **kwargs)


def test_overfits_16_examples_then_decodes_them_exactly(tmp_path, memorise_task):
  def beam_evaluator(**kwargs):
    return evaluation.Evaluator(**kwargs, beam_size=2, batch_size=16)

  schedule = optimizers.make_schedule(base_learning_rate=3e-3)
  summary = trainer.train(model=th.tiny_model(), model_dir=str(tmp_path), mixture_or_task_name=memorise_task,
                          task_feature_lengths=LENGTHS, train_steps=200, batch_size=16,
                          optimizer=optimizers.make_optimizer(name="adamw", learning_rate=schedule),
                          learning_rate_schedule=schedule, log_every=50, eval_period=200,
                          evaluator_factory=beam_evaluator, tensorboard=True)
  assert summary.final_step == 200 and summary.stopped_by is None
  final = summary.history[-1]
  assert final["cross_entropy"] < 0.02  # near-zero loss per target token (z-loss not included)
  assert final["loss"] == pytest.approx(final["cross_entropy"] + final["z_loss"], rel=1e-5)
  # Beam search decodes every one of the 16 targets exactly (100 x exact match = 100).
  result = summary.eval_results[-1]
  assert result["tasks"][memorise_task] == {"macro_f1": 100.0, "exact_match": 16}
  assert result["mean"] == 100.0
  # The per-eval report, the best checkpoint and the metric files.
  report = json.loads((tmp_path / "eval" / "step_200.json").read_text())
  assert report["tasks"][memorise_task]["macro_f1"] == 100.0 and report["beam_size"] == 2
  assert json.loads((tmp_path / "eval" / "best.json").read_text()) == {"metric": "macro_f1", "value": 100.0,
                                                                      "step": 200}
  assert sorted(os.listdir(tmp_path / "best")) == ["200"]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["200"]
  records = th.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [50, 100, 150, 200]  # one object per logged step
  assert records[-1][f"eval/{memorise_task}/macro_f1"] == 100.0 and records[-1]["eval/mean_macro_f1"] == 100.0
  assert {"train/loss", "train/z_loss", "train/learning_rate", "train/grad_norm", "train/steps_per_second",
          "train/target_tokens_per_second"} <= set(records[0])
  assert os.listdir(tmp_path / "tensorboard")


def test_sharded_training_matches_one_device_on_8_fake_devices(tmp_path):
  """Data-parallel, FSDP, tensor-parallel (1 x 8) and a 2 x 4 mesh give one device's losses; state
  really is sharded."""
  out = tmp_path / "report.json"
  result = th.run_python([os.path.join(th.TESTS_DIR, "sharding_worker.py"), str(out), str(tmp_path / "runs")],
                         env=th.subprocess_env(devices=8), cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  reference = report["single"]["losses"]
  assert len(reference) == 10 and reference[-1] < reference[0]
  for name in ("data_parallel", "fsdp", "tensor_parallel", "2x4"):
    # Tolerance: the same math with reductions split across devices: float32 round-off only.
    np.testing.assert_allclose(report[name]["losses"], reference, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(report[name]["grad_norms"], report["single"]["grad_norms"], rtol=1e-4, err_msg=name)
  assert report["2x4"]["mesh"] == {"data": 2, "model": 4}
  assert report["tensor_parallel"]["mesh"] == {"data": 1, "model": 8}
  # Shard shapes (first addressable shard) of params [vocab 384, embed 32], wi_0 [embed 32, mlp 64],
  # relpos [heads 4, buckets 32] and Adafactor's factored statistics of wi_0 / the embedding.
  assert report["data_parallel"]["shards"] == report["single"]["shards"] == {
      "embedding": [384, 32], "wi_0": [32, 64], "logits_dense": [32, 384], "relpos": [4, 32],
      "wi_0.v_row": [32], "wi_0.v_col": [64], "embedding.v_row": [32], "embedding.v_col": [384]}
  assert report["fsdp"]["shards"] == {
      "embedding": [384, 4], "wi_0": [4, 64], "logits_dense": [4, 384], "relpos": [4, 4],
      "wi_0.v_row": [4], "wi_0.v_col": [64], "embedding.v_row": [4], "embedding.v_col": [384]}
  # Tensor parallel: vocab and mlp split 8 ways, embed whole; relpos' 4 heads do not divide 8
  # (replicated); Adafactor's statistics follow (v_col of the embedding keeps the vocab split).
  assert report["tensor_parallel"]["shards"] == {
      "embedding": [48, 32], "wi_0": [32, 8], "logits_dense": [32, 48], "relpos": [4, 32],
      "wi_0.v_row": [32], "wi_0.v_col": [8], "embedding.v_row": [32], "embedding.v_col": [48]}
  assert report["2x4"]["shards"] == {
      "embedding": [96, 16], "wi_0": [16, 16], "logits_dense": [16, 96], "relpos": [1, 16],
      "wi_0.v_row": [16], "wi_0.v_col": [16], "embedding.v_row": [16], "embedding.v_col": [96]}


def test_sigterm_saves_and_the_resumed_run_continues_identically(tmp_path, memorise_task):
  model = th.tiny_model(dropout_rate=0.1)  # dropout on: the masks must continue too
  reference = _train(tmp_path / "reference", memorise_task, steps=9, model=model)

  def terminate_after_step_4(step, metrics):
    del metrics
    if step == 4:
      os.kill(os.getpid(), signal.SIGTERM)  # delivered to the loop's handler, as from a scheduler

  interrupted = _train(tmp_path / "run", memorise_task, steps=9, model=model, step_callback=terminate_after_step_4)
  assert (interrupted.final_step, interrupted.stopped_by) == (4, "SIGTERM")
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["4"]
  resumed = _train(tmp_path / "run", memorise_task, steps=9, model=model)
  assert resumed.start_step == 4 and resumed.final_step == 9
  losses = {h["step"]: h["loss"] for h in interrupted.history + resumed.history}
  expected = {h["step"]: h["loss"] for h in reference.history}
  assert sorted(losses) == list(range(1, 10))
  np.testing.assert_allclose([losses[s] for s in range(1, 10)], [expected[s] for s in range(1, 10)], rtol=1e-6)
  # metrics.jsonl reads like one uninterrupted run.
  assert [r["step"] for r in th.read_jsonl(str(tmp_path / "run" / "metrics.jsonl"))] == list(range(1, 10))


def test_gradient_accumulation_gives_the_full_batch_update():
  model = th.tiny_model()
  optimizer = optax.sgd(1.0)  # the update is the gradient: compares gradients, not Adam's ratios
  partitioner = partitioning.Partitioner()
  layout = trainer.build_state_layout(model, optimizer, partitioner)
  rng = np.random.default_rng(0)
  targets = rng.integers(3, 200, size=(8, 6)).astype(np.int32)
  targets[:, 4:] = 0  # padding: the normaliser counts real tokens only
  targets[0, 2:] = 0
  batch = {"encoder_input_tokens": rng.integers(3, 200, size=(8, 5)).astype(np.int32),
           "decoder_target_tokens": targets,
           "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
           "decoder_loss_weights": (targets > 0).astype(np.float32)}
  results = []
  for microbatches in (1, 4):
    step = jax.jit(trainer.make_train_step(model, optimizer, lambda s: 1e-2, seed=0, microbatches=microbatches))
    state, metrics = step(trainer.initialize_state(layout, partitioner, seed=0), batch)
    results.append((state, jax.device_get(metrics)))
  (state_1, metrics_1) = results[0]
  assert metrics_1["target_tokens"] == 8 * 4 - 2
  for state, metrics in results[1:]:
    np.testing.assert_allclose(metrics["loss"], metrics_1["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], metrics_1["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(state_1.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_initial_checkpoint_loads_parameters_only(tmp_path, memorise_task):
  adapted = _train(tmp_path / "adapt", memorise_task, steps=3, optimizer_name="adafactor", lr=1e-2)
  finetune = _train(tmp_path / "finetune", memorise_task, steps=0,
                    initial_checkpoint_path=str(tmp_path / "adapt"))
  assert finetune.final_step == 0 and int(finetune.state.step) == 0
  for a, b in zip(jax.tree_util.tree_leaves(finetune.state.params), jax.tree_util.tree_leaves(adapted.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  adam_state = finetune.state.opt_state[0]  # a fresh AdamW state, although adapt used Adafactor
  assert int(adam_state.count) == 0
  assert all(float(jnp.abs(mu).max()) == 0.0 for mu in jax.tree_util.tree_leaves(adam_state.mu))


def test_input_shards_concatenate_to_the_same_global_batches(memorise_task):
  common = dict(mixture_or_task_name=memorise_task, task_feature_lengths=LENGTHS, global_batch_size=4, seed=7)
  both = trainer.make_train_iterator(data_shards=2, shard_range=(0, 2), **common)
  first = trainer.make_train_iterator(data_shards=2, shard_range=(0, 1), **common)
  second = trainer.make_train_iterator(data_shards=2, shard_range=(1, 2), **common)
  batches = [next(both) for _ in range(3)]
  for batch in batches:
    part_a, part_b = next(first), next(second)
    for key in batch:
      np.testing.assert_array_equal(batch[key], np.concatenate([part_a[key], part_b[key]]))
  assert batches[0]["encoder_input_tokens"].shape == (4, 8)
  # Resuming skips exactly the consumed batches.
  skipped = trainer.make_train_iterator(data_shards=2, shard_range=(0, 2), skip_batches=2, **common)
  np.testing.assert_array_equal(next(skipped)["decoder_target_tokens"], batches[2]["decoder_target_tokens"])
  # Same seed, same order; another seed, another order.
  again = trainer.make_train_iterator(data_shards=2, shard_range=(0, 2), **common)
  np.testing.assert_array_equal(next(again)["encoder_input_tokens"], batches[0]["encoder_input_tokens"])
  other = trainer.make_train_iterator(data_shards=2, shard_range=(0, 2), **{**common, "seed": 8})
  assert not all(np.array_equal(next(other)["encoder_input_tokens"], b["encoder_input_tokens"]) for b in batches)


def test_bad_settings_fail_clearly(tmp_path, memorise_task):
  with pytest.raises(ValueError, match="vocabulary of 259 ids but the model has vocab_size=128"):
    _train(tmp_path, memorise_task, steps=1, model=th.tiny_model(vocab_size=128))
  with pytest.raises(ValueError, match="not divisible by microbatches=3"):
    _train(tmp_path, memorise_task, steps=1, microbatches=3)
  with pytest.raises(ValueError, match="not divisible by the 3 input shards"):
    trainer.make_train_iterator(mixture_or_task_name=memorise_task, task_feature_lengths=LENGTHS,
                                global_batch_size=8, seed=0, data_shards=3, shard_range=(0, 3))
  with pytest.raises(ValueError, match="loss_normalizer"):
    trainer.make_train_step(th.tiny_model(), optax.adamw(1e-3), lambda s: 1e-3, seed=0, loss_normalizer="mean")


def test_resume_at_a_later_step_restores_the_input_position_without_rereading(tmp_path, memorise_task, capsys,
                                                                              monkeypatch):
  """Periodic checkpoints at 4 and 8, SIGTERM after step 11, resume to 14: the input comes back from
  the checkpoint's iterator state (no batch re-read) and the losses are the uninterrupted run's.
  The same checkpoint without its input item resumes by skipping, with the same losses."""
  import shutil
  from punified_jax import input_state
  model = th.tiny_model(dropout_rate=0.1)
  reference = _train(tmp_path / "reference", memorise_task, steps=14, model=model)
  expected = {h["step"]: h["loss"] for h in reference.history}

  def terminate_after_step_11(step, metrics):
    del metrics
    if step == 11:
      os.kill(os.getpid(), signal.SIGTERM)

  interrupted = _train(tmp_path / "run", memorise_task, steps=14, model=model, checkpoint_period=4,
                       step_callback=terminate_after_step_11)
  assert (interrupted.final_step, interrupted.stopped_by) == (11, "SIGTERM")
  checkpoints_dir = tmp_path / "run" / "checkpoints"
  assert sorted(os.listdir(checkpoints_dir), key=int) == ["4", "8", "11"]
  assert sorted(n for n in os.listdir(checkpoints_dir / "11" / "input") if n.startswith("shard-")) == [
      "shard-00000-of-00001.data-00000-of-00001", "shard-00000-of-00001.index"]
  meta = json.loads((checkpoints_dir / "11" / "meta" / "metadata").read_text())
  assert meta["consumed_batches"] == 11
  assert meta["input_state"] == {"kind": "tf.data iterator per input shard", "data_shards": 1}
  shutil.copytree(tmp_path / "run", tmp_path / "without_input")
  shutil.rmtree(tmp_path / "without_input" / "checkpoints" / "11" / "input")

  skips = []
  original_init = input_state.TrainInput.__init__

  def recording_init(self, *, skip_batches=0, **kwargs):
    skips.append(skip_batches)
    original_init(self, skip_batches=skip_batches, **kwargs)

  monkeypatch.setattr(input_state.TrainInput, "__init__", recording_init)
  capsys.readouterr()
  resumed = _train(tmp_path / "run", memorise_task, steps=14, model=model, checkpoint_period=4)
  assert "input position restored from the checkpoint (11 batches consumed)" in capsys.readouterr().out
  assert skips == [0]  # one pipeline, nothing re-read
  assert resumed.start_step == 11 and resumed.final_step == 14
  losses = {h["step"]: h["loss"] for h in interrupted.history + resumed.history}
  np.testing.assert_allclose([losses[s] for s in range(1, 15)], [expected[s] for s in range(1, 15)], rtol=1e-6)

  skipped = _train(tmp_path / "without_input", memorise_task, steps=14, model=model, checkpoint_period=4)
  assert ("the checkpoint holds no input state for these input shards: skipping the 11 consumed batches "
          "(re-reads them)") in capsys.readouterr().out
  assert skips == [0, 11]
  np.testing.assert_allclose([h["loss"] for h in skipped.history], [expected[s] for s in range(12, 15)], rtol=1e-6)


def test_each_host_saves_its_input_shards_and_another_host_layout_restores_them(tmp_path, memorise_task):
  """Two hosts (one input shard each) write their iterator states into one item; one host reading
  both shards restores them and continues with the global batches the two hosts would have read."""
  from punified_jax import input_state
  common = dict(mixture_or_task_name=memorise_task, task_feature_lengths=LENGTHS, global_batch_size=4, seed=7,
                data_shards=2)
  hosts = [input_state.TrainInput(shard_range=(index, index + 1), **common) for index in range(2)]
  for host in hosts:
    for _ in range(3):
      next(host)
  handler = input_state.InputStateHandler()
  item = tmp_path / "input"
  item.mkdir()
  handler.save(item, input_state.InputStateSave(hosts[0].state_files()))
  (tmp_path / "first_only").mkdir()
  for name in os.listdir(item):
    (tmp_path / "first_only" / name).write_bytes((item / name).read_bytes())
  handler.save(item, input_state.InputStateSave(hosts[1].state_files()))
  assert sorted(os.listdir(item)) == [
      "shard-00000-of-00002.data-00000-of-00001", "shard-00000-of-00002.index",
      "shard-00001-of-00002.data-00000-of-00001", "shard-00001-of-00002.index"]
  following = []
  for _ in range(2):
    parts = [next(host) for host in hosts]
    following.append({key: np.concatenate([part[key] for part in parts]) for key in parts[0]})

  one_host = input_state.TrainInput(shard_range=(0, 2), **common)
  one_host.restore_state(handler.restore(item, input_state.InputStateRestore(prefixes=one_host.wanted_prefixes())))
  for batch in following:
    restored = next(one_host)
    for key in batch:
      np.testing.assert_array_equal(restored[key], batch[key])
  with pytest.raises(FileNotFoundError, match=r"shard-00001-of-00002\.index does not exist"):
    handler.restore(tmp_path / "first_only", input_state.InputStateRestore(prefixes=one_host.wanted_prefixes()))


def _generator_task(name):
  """A task whose source is a Python generator: tf.data cannot checkpoint its iterator."""
  import seqio
  import tensorflow as tf

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed

    def records():
      for example in th.memorise_examples(16):
        yield example
    spec = tf.TensorSpec([], tf.string)
    return tf.data.Dataset.from_generator(records, output_signature={"inputs": spec, "targets": spec})

  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  features = {key: seqio.Feature(th.VOCAB, add_eos=True) for key in ("inputs", "targets")}
  seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset_fn, splits=("train",)),
                         preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
                         output_features=features)
  return name


def test_a_pipeline_tf_data_cannot_save_says_so_and_resumes_by_skipping(capsys):
  from punified_jax import input_state
  common = dict(mixture_or_task_name=_generator_task("trainer_generator"), task_feature_lengths=LENGTHS,
                global_batch_size=4, seed=7, data_shards=1, shard_range=(0, 1))
  train_input = input_state.TrainInput(**common)
  batches = [next(train_input) for _ in range(3)]
  assert input_state.checkpoint_items(train_input) == ({}, None)
  out = capsys.readouterr().out
  assert out == ("warning: the input pipeline cannot be checkpointed (PyFunc is stateful.); checkpoints hold no "
                 "input position and a resume will re-read the consumed batches\n")
  assert input_state.checkpoint_items(train_input) == ({}, None) and capsys.readouterr().out == ""  # said once

  class NoInputItem:
    def restore_item(self, *args):
      raise AssertionError("not asked: the meta records no input state")

  resumed = input_state.open_train_input(checkpointer=NoInputItem(), step=2, meta={"input_state": None},
                                         consumed_batches=2, settings_changed=False, announce=True, **common)
  assert capsys.readouterr().out == ("the checkpoint holds no input state for these input shards: skipping the 2 "
                                     "consumed batches (re-reads them)\n")
  np.testing.assert_array_equal(next(resumed)["decoder_target_tokens"], batches[2]["decoder_target_tokens"])


def test_the_ner_tasks_input_position_round_trips(tmp_path, monkeypatch):
  """The real NER tasks (a tiny Resume release) can be checkpointed: their source is tensors."""
  import tasks
  from punified_jax import input_state
  resume = tmp_path / "raw" / "resume"
  resume.mkdir(parents=True)
  sentences = ["张 B-NAME\n三 E-NAME\n， O\n汉 B-RACE\n族 E-RACE", "任 O\n经 B-TITLE\n理 E-TITLE", "好 O"]
  (resume / "train.char.bmes").write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
  (resume / "dev.char.bmes").write_text(sentences[0] + "\n", encoding="utf-8")
  monkeypatch.setenv("PUNIFIED_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("PUNIFIED_RAW_DIR", str(tmp_path / "raw"))
  monkeypatch.setenv("PUNIFIED_DATASETS", "resume")
  try:
    tasks.register_all()
    common = dict(mixture_or_task_name="punified_ner_joint", task_feature_lengths={"inputs": 64, "targets": 32},
                  global_batch_size=2, seed=3, data_shards=1, shard_range=(0, 1))
    first = input_state.TrainInput(**common)
    for _ in range(4):
      next(first)
    files = first.state_files()
    assert sorted(files) == ["shard-00000-of-00001.data-00000-of-00001", "shard-00000-of-00001.index"]
    expected = [next(first) for _ in range(3)]
    second = input_state.TrainInput(**common)
    second.restore_state(files)
    for batch in expected:
      restored = next(second)
      for key in batch:
        np.testing.assert_array_equal(restored[key], batch[key])
  finally:
    monkeypatch.undo()
    tasks.register_all()


def test_every_preset_and_recipe_checkpoints_periodically():
  """A long run loses at most a few thousand steps to a preemption: periods are below the longest
  stage of each main-job preset and at most 5000 in the paper's recipes."""
  import re
  from punified_jax.commands import main as main_job
  presets = {name: main_job.preset_named(name) for name in main_job.PRESET_NAMES}
  assert {name: preset.checkpoint_period for name, preset in presets.items()} == {"cpu": 200, "paper": 2000}
  for preset in presets.values():
    assert preset.checkpoint_period < max(preset.adapt_steps, preset.finetune_steps)
  for recipe in ("adapt", "finetune_joint", "finetune_single", "train_base"):
    with open(os.path.join(th.REPO_ROOT, "gin", "runs", f"{recipe}.gin"), encoding="utf-8") as handle:
      periods = re.findall(r"^CHECKPOINT_PERIOD = (\d+)", handle.read(), flags=re.M)
    assert len(periods) == 1 and 0 < int(periods[0]) <= 5000, (recipe, periods)
