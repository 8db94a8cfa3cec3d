"""Mixing schemes (punified_jax/tasks/mixing.py, gin/mixtures/*.gin): literal rates, how the gin files reach
the tasks (our trainer and t5x's way of parsing gin), loud failures, the run directory's record
(data_manifest.json), and that packed training batches follow the configured rates."""

import dataclasses
import math
import os

import gin
import numpy as np
import pytest

import tasks
from punified_jax import entity_types
from punified_jax import prompts
from punified_jax import trainer  # imported before any test locks gin
from punified_jax.data import builtin
from tasks import mixing
from tasks import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIXTURE_FILES = {name: os.path.join(REPO, "gin", "mixtures", f"{name}.gin")
                 for name in ("uniform", "proportional", "temperature2", "temperature4")}

# Three built-in datasets at very different sizes (training sentences).
SIZES = {"resume": 400, "ecommerce": 100, "cluener": 25}


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config(clear_constants=True)
  previous = tasks.current_config()
  yield
  gin.clear_config(clear_constants=True)
  if tasks.current_config() != previous:
    tasks.register_all(previous)


def test_literal_rates_and_labels():
  counts = [400, 100, 25]
  assert [mixing.MixingScheme("uniform").rate(n) for n in counts] == [1.0, 1.0, 1.0]
  capped = mixing.MixingScheme("proportional", cap=200)
  assert [capped.rate(n) for n in counts] == [200.0, 100.0, 25.0]
  assert [mixing.MixingScheme("temperature", 2.0).rate(n) for n in counts] == [20.0, 10.0, 5.0]
  t4 = mixing.MixingScheme("temperature", 4.0)
  assert [round(t4.rate(n), 4) for n in counts] == [4.4721, 3.1623, 2.2361]
  assert mixing.shares({"a": 200.0, "b": 100.0, "c": 100.0}) == {"a": 0.5, "b": 0.25, "c": 0.25}
  assert capped.label == "proportional (cap 200)"
  assert mixing.MixingScheme("temperature", 2.0).label == "temperature T=2"


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="mixed"), "unknown scheme 'mixed'"),
    (dict(name="uniform", cap=10), "'uniform' takes no temperature or cap"),
    (dict(name="proportional", temperature=2.0), "'proportional' has temperature 1"),
    (dict(name="temperature", temperature=0.0), "temperature must be a finite number > 0"),
    (dict(name="proportional", cap=0), "cap must be an int >= 1"),
])
def test_bad_schemes_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    mixing.MixingScheme(**kwargs)


def test_gin_binding_errors():
  gin.parse_config(["tasks.mixing.scheme.cap = 5"])
  with pytest.raises(ValueError, match="no scheme name"):
    mixing.scheme()
  gin.clear_config()
  gin.parse_config(["tasks.mixing.scheme.name = 'temperature'"])
  with pytest.raises(ValueError, match="needs a temperature"):
    mixing.scheme()


@pytest.mark.parametrize("name, expected", [
    ("uniform", mixing.MixingScheme("uniform")),
    ("proportional", mixing.MixingScheme("proportional", cap=16384)),
    ("temperature2", mixing.MixingScheme("temperature", 2.0)),
    ("temperature4", mixing.MixingScheme("temperature", 4.0)),
])
def test_each_gin_file_selects_its_scheme(name, expected):
  # As t5x parses: files then bindings, finalized, and nobody calls tasks.configure.
  gin.parse_config_files_and_bindings([MIXTURE_FILES[name]], [], finalize_config=True)
  chosen = mixing.current_scheme(registry.DataConfig())
  assert chosen == expected and chosen.source == "gin"


def test_cap_macro_overrides():
  gin.parse_config_files_and_bindings([MIXTURE_FILES["proportional"]], ["MIXING_CAP = 100"])
  assert mixing.current_scheme(registry.DataConfig()) == mixing.MixingScheme("proportional",
                                                                              cap=100)


def test_environment_scheme_and_conflict_with_gin():
  env_t2 = registry.DataConfig.from_env({"PUNIFIED_MIXTURE_RATE": "proportional",
                                         "PUNIFIED_MIXTURE_TEMPERATURE": "2"})
  # The environment's older spelling of a temperature scheme.
  assert mixing.current_scheme(env_t2) == mixing.MixingScheme("temperature", 2.0)
  gin.parse_config_files_and_bindings([MIXTURE_FILES["temperature2"]], [])
  assert mixing.current_scheme(env_t2) == mixing.MixingScheme("temperature", 2.0)  # agree
  gin.clear_config(clear_constants=True)
  gin.parse_config_files_and_bindings([MIXTURE_FILES["uniform"]], [])
  with pytest.raises(ValueError, match="two mixing schemes: gin binds 'uniform'.*"
                     "'temperature T=2'"):
    mixing.current_scheme(env_t2)
  with pytest.raises(ValueError, match="'uniform' takes no temperature or cap"):
    registry.DataConfig(mixture_rate="uniform", cap=100)


def test_configure_bindings_nothing_applies_fail_at_finalize():
  # t5x parses and finalizes gin but never calls tasks.configure: the binding must not vanish.
  gin.parse_config(["tasks.configure.raw_dir = '/data/raw'"])
  with pytest.raises(ValueError, match=r"tasks.configure.raw_dir bound in gin but never "
                     "applied.*PUNIFIED_"):
    gin.finalize()


def test_configure_bindings_applied_pass_finalize(monkeypatch):
  # Our entry points: parse, tasks.configure() (which re-registers), then finalize.
  monkeypatch.setattr(registry, "register_all", lambda config: config)
  gin.parse_config(["tasks.configure.split_seed = 3"])
  assert tasks.configure().split_seed == 3
  gin.finalize()


# ------------------------------------------------------------------------------------------
# Sampling follows the rates (packed training batches, as the trainer draws them).
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sized_corpus(tmp_path_factory):
  """A download root whose datasets have SIZES training sentences, and a vocabulary for it."""
  root = tmp_path_factory.mktemp("sized")
  os.makedirs(root / "raw")
  for dataset, n in SIZES.items():
    corpus = builtin.write_corpus(root / f"corpus_{n}", sizes={"train": n, "validation": 2,
                                                               "test": 2})
    folder = builtin.DATASET_DIRS[dataset]
    os.symlink(os.path.join(corpus, folder), root / "raw" / folder)
  from punified_jax import vocab  # pylint: disable=g-import-not-at-top
  config = registry.DataConfig(raw_dir=str(root / "raw"), datasets=tuple(SIZES))
  texts = [ex.text for ds in SIZES for ex in registry.load_examples(config, ds)["train"]]
  vocabulary = str(root / "vocab.model")
  vocab.train_sentencepiece(texts, vocabulary)
  return dataclasses.replace(config, vocabulary=vocabulary)


def _prompt_heads() -> dict[str, str]:
  """The input text before <text> -> dataset (dataset-dependent prompts name all its types)."""
  heads = {}
  for dataset in SIZES:
    inputs = prompts.format_input("x", entity_types.prompt_names(dataset))
    heads[inputs.partition(prompts.TEXT_MARKER)[0]] = dataset
  assert len(heads) == len(SIZES)
  return heads


def _count_examples(config, num_batches: int) -> dict[str, int]:
  """Examples of each dataset in the first packed training batches of punified_ner_joint."""
  vocabulary = registry.vocabulary_for(config)
  heads = _prompt_heads()
  batches = trainer.make_train_iterator(
      mixture_or_task_name="punified_ner_joint",
      task_feature_lengths={"inputs": 256, "targets": 256}, global_batch_size=16, seed=0,
      data_shards=1, shard_range=(0, 1))
  counts = dict.fromkeys(SIZES, 0)
  for _ in range(num_batches):
    batch = next(batches)
    for tokens, segments in zip(batch["encoder_input_tokens"], batch["encoder_segment_ids"]):
      for segment in np.unique(segments[segments > 0]):
        text = vocabulary.decode([int(t) for t in tokens[segments == segment]])
        counts[heads[text.partition(prompts.TEXT_MARKER)[0]]] += 1
  return counts


# Tolerance: 4 binomial standard errors, sqrt(p (1 - p) / n), of each dataset's share p among the
# n examples drawn. seqio draws each example's dataset independently with the normalised rates,
# so a correct pipeline falls outside with probability about 6e-5 per check (the seeds are fixed,
# so the test is deterministic). The largest dataset's shares under the four schemes (0.333,
# 0.453, 0.571, 0.706) are at least 8 standard errors apart, so a scheme that did not take effect
# fails.
TOLERANCE_SE = 4.0


@pytest.mark.parametrize("name", ["uniform", "proportional", "temperature2", "temperature4"])
def test_packed_batches_follow_the_rates(sized_corpus, name, tmp_path):
  # Gin as under t5x (no tasks.configure), on top of an explicit data config.
  tasks.register_all(sized_corpus)
  bindings = ["MIXING_CAP = 300"] if name == "proportional" else []
  gin.parse_config_files_and_bindings([MIXTURE_FILES[name]], bindings, finalize_config=True)
  record = mixing.describe("punified_ner_joint")
  expected = {
      "uniform": {"resume": 1 / 3, "ecommerce": 1 / 3, "cluener": 1 / 3},
      "proportional": {"resume": 300 / 425, "ecommerce": 100 / 425, "cluener": 25 / 425},
      "temperature2": {"resume": 20 / 35, "ecommerce": 10 / 35, "cluener": 5 / 35},
      "temperature4": {"resume": 4.4721 / 9.8705, "ecommerce": 3.1623 / 9.8705,
                       "cluener": 2.2361 / 9.8705},
  }[name]
  for dataset, share in expected.items():
    entry = record["tasks"][f"punified_ner_{dataset}"]
    assert entry["train_examples"] == SIZES[dataset]
    assert entry["share"] == pytest.approx(share, abs=1e-4)
  assert record["scheme"]["source"] == "gin"

  counts = _count_examples(sized_corpus, num_batches=20)
  total = sum(counts.values())
  assert total >= 1000, counts  # enough draws for the tolerance below to separate the schemes
  for dataset, share in expected.items():
    standard_error = math.sqrt(share * (1 - share) / total)
    observed = counts[dataset] / total
    assert abs(observed - share) <= TOLERANCE_SE * standard_error, (
        f"{name}: {dataset} drew {counts[dataset]} of {total} examples ({observed:.3f}), "
        f"configured share {share:.3f} +- {TOLERANCE_SE * standard_error:.3f}")


def test_scheme_in_the_data_manifest_and_describe(sized_corpus):
  from punified_jax.data import manifest  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  tasks.register_all(sized_corpus)
  gin.parse_config_files_and_bindings([MIXTURE_FILES["temperature2"]], [])
  record = manifest.mixture_record(seqio.get_mixture_or_task("punified_ner_joint"))
  assert record["scheme"] == {"name": "temperature", "temperature": 2.0, "cap": None,
                              "source": "gin", "label": "temperature T=2"}
  assert record["rates"] == {"punified_ner_cluener": 5.0, "punified_ner_ecommerce": 10.0,
                             "punified_ner_resume": 20.0}
  described = mixing.describe("punified_ner_joint")
  assert described["scheme"] == record["scheme"]
  assert described["tasks"]["punified_ner_cluener"] == {"train_examples": 25, "rate": 5.0,
                                                        "share": pytest.approx(5 / 35)}
  single = mixing.describe("punified_ner_resume")
  assert single["scheme"] is None and single["tasks"] == {
      "punified_ner_resume": {"train_examples": 400, "rate": 1.0, "share": 1.0}}
  assert manifest.mixture_record(seqio.get_mixture_or_task("punified_ner_resume"))["scheme"] is None
