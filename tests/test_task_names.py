"""punified_jax.tasks: the task-name rules every other module uses, the light package import,
the repository-root `tasks` alias (same module objects), and a wheel without a top-level `tasks`."""

import os
import subprocess
import sys
import tomllib

import hypothesis
import hypothesis.strategies as st
import pytest
import setuptools

from punified_jax import entity_types
from punified_jax.tasks import names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("dataset, kind, name", [
    ("resume", "ner", "punified_ner_resume"),
    ("cluener", "ner_random", "punified_ner_cluener_random"),
    ("msra", "ner_random_exact", "punified_ner_msra_random_exact"),
    ("peoples_daily_1998", "prefix_lm", "punified_prefix_lm_peoples_daily_1998"),
])
def test_task_names_both_ways(dataset, kind, name):
  assert names.task_name(dataset, kind) == name
  assert names.parse_task_name(name) == (dataset, kind)
  assert names.dataset_of_task(name) == dataset


def test_default_kind_is_the_dataset_prompt_and_bad_input_is_named():
  assert names.task_name("ecommerce") == "punified_ner_ecommerce"
  with pytest.raises(ValueError, match="unknown task kind 'ner_exact'"):
    names.task_name("resume", "ner_exact")
  with pytest.raises(ValueError, match="nosuch"):
    names.task_name("nosuch")


@pytest.mark.parametrize("name", [
    "punified_ner_joint", "punified_prefix_lm", "punified_ner_joint_random_exact",  # mixtures
    "punified_ner_nosuch", "punified_ner_", "cli_memorise", "punified_ner_resume_exact",
    "punified_ner_resume_random_random", "xpunified_ner_resume"])
def test_names_that_are_not_our_tasks(name):
  assert names.parse_task_name(name) is None and names.dataset_of_task(name) is None


def test_datasets_of_keeps_first_occurrences_and_skips_other_names():
  assert names.datasets_of(["punified_ner_msra_random", "cli_memorise", "punified_prefix_lm_resume",
                            "punified_ner_msra", "punified_ner_resume_random_exact"]) == ["msra", "resume"]
  assert names.datasets_of([]) == []


def test_every_mixture_has_a_kind():
  assert names.MIXTURES == {"punified_prefix_lm": "prefix_lm", "punified_ner_joint": "ner",
                            "punified_ner_joint_random": "ner_random",
                            "punified_ner_joint_random_exact": "ner_random_exact"}
  assert names.JOINT_MIXTURE in names.MIXTURES


@hypothesis.given(dataset=st.sampled_from(entity_types.DATASETS), kind=st.sampled_from(names.KINDS))
def test_parse_inverts_task_name(dataset, kind):
  assert names.parse_task_name(names.task_name(dataset, kind)) == names.TaskName(dataset, kind)


def test_the_package_is_light_and_the_root_tasks_is_the_same_modules(tmp_path):
  """`import punified_jax.tasks` registers nothing and loads no TensorFlow; `import tasks`
  registers and makes tasks.registry / .mixing / .names the package's own module objects."""
  code = (
      "import sys\n"
      "import punified_jax.tasks as package\n"
      "from punified_jax.tasks import names\n"
      "print('tensorflow' in sys.modules, 'seqio' in sys.modules, package.loaded_registry())\n"
      "import tasks, tasks.registry\n"
      "from tasks import mixing\n"
      "import punified_jax.tasks.registry as registry\n"
      "print(tasks.registry is registry is package.loaded_registry(), mixing is registry.mixing,\n"
      "      tasks.names is names, tasks.configure is registry.configure,\n"
      "      sorted(t for t in __import__('seqio').TaskRegistry.names() if 'resume' in t))\n")
  env = dict(os.environ, PYTHONPATH=REPO, PUNIFIED_RAW_DIR="builtin", PUNIFIED_DATASETS="resume",
             TF_CPP_MIN_LOG_LEVEL="3", PUNIFIED_CACHE=str(tmp_path))
  env.pop("PUNIFIED_TFDS_DIR", None)
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      "False False None",
      "True True True True ['punified_ner_resume', 'punified_ner_resume_random', "
      "'punified_ner_resume_random_exact', 'punified_prefix_lm_resume']"]


def test_the_wheel_ships_the_tasks_inside_the_package_only():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
    find = tomllib.load(handle)["tool"]["setuptools"]["packages"]["find"]
  packages = setuptools.find_packages(where=REPO, include=find["include"])
  assert "punified_jax.tasks" in packages and "punified_jax" in packages
  assert not [p for p in packages if not p.startswith("punified_jax")], packages
