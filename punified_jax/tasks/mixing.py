"""Mixing schemes: how often each dataset of a joint Mixture is sampled.

A scheme gives every task of a Mixture a rate from its number of training examples n; seqio
normalises the rates of a Mixture into sampling probabilities:

  uniform       rate 1                       every dataset equally likely: the paper's "each
                                             batch draws examples from all datasets"
  proportional  rate min(n, cap)             T5's examples-proportional mixing; the cap K stops
                                             one large dataset (MSRA) from crowding out the rest
  temperature   rate min(n, cap) ** (1 / T)  T5's temperature-scaled mixing: T = 1 is
                                             proportional, T -> infinity approaches uniform

Where the scheme comes from (`current_scheme`):
  1. gin: `tasks.mixing.scheme.name / .temperature / .cap`, which `gin/mixtures/*.gin` bind.
     seqio asks a Mixture for its rates only when a dataset is built, i.e. after every gin file
     is parsed, so the binding takes effect under our trainer AND under t5x (which never calls
     `tasks.configure`) without re-registering anything: each Mixture's rate is a `SchemeRate`
     that looks the scheme up at that moment.
  2. otherwise the data config (`PUNIFIED_MIXTURE_RATE` / `_TEMPERATURE` / `_CAP` or
     `tasks.configure.mixture_rate / temperature / cap`).
  Both set and different: an error (two settings that disagree are a mistake, not a choice).

`scheme_of(mixture)` is the scheme a registered Mixture samples with, which the run directory's
data manifest records next to the per-task rates (punified_jax/data/manifest.py);
`describe(name)` returns the scheme with each task's training examples, rate and share.

Bindings that cannot take effect fail loudly: a finalize hook (gin runs it at the end of parsing,
in t5x and in our entry points) raises when `tasks.configure.*` is bound but nothing applied it,
which is what happens under t5x: t5x never calls `tasks.configure`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Optional

import gin

SCHEMES = ("uniform", "proportional", "temperature")


@dataclasses.dataclass(frozen=True)
class MixingScheme:
  """A scheme and its parameters (see the module docstring). `source` says where it was set."""
  name: str = "uniform"
  temperature: float = 1.0
  cap: Optional[int] = None
  source: str = dataclasses.field(default="default", compare=False)

  def __post_init__(self):
    where = f"mixing scheme ({self.source})"
    if self.name not in SCHEMES:
      raise ValueError(f"{where}: unknown scheme {self.name!r}; schemes: {', '.join(SCHEMES)}")
    if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
            and self.temperature > 0):
      raise ValueError(f"{where}: temperature must be a finite number > 0, got "
                       f"{self.temperature!r}")
    if self.cap is not None and (isinstance(self.cap, bool) or not isinstance(self.cap, int)
                                 or self.cap < 1):
      raise ValueError(f"{where}: cap must be an int >= 1 or None, got {self.cap!r}")
    # A parameter the scheme does not use is a setting that would be silently ignored.
    if self.name == "uniform" and (self.temperature != 1.0 or self.cap is not None):
      raise ValueError(f"{where}: 'uniform' takes no temperature or cap (got temperature="
                       f"{self.temperature}, cap={self.cap}); use 'proportional' or "
                       "'temperature'")
    if self.name == "proportional" and self.temperature != 1.0:
      raise ValueError(f"{where}: 'proportional' has temperature 1 (got {self.temperature}); "
                       "use 'temperature'")

  def rate(self, num_train_examples: int) -> float:
    """The unnormalised rate of a task with `num_train_examples` training examples."""
    if self.name == "uniform":
      return 1.0
    n = num_train_examples if self.cap is None else min(num_train_examples, self.cap)
    return float(n) ** (1.0 / self.temperature)

  @property
  def label(self) -> str:
    """'uniform', 'proportional (cap 16384)', 'temperature T=2' ... for tables and plots."""
    if self.name == "uniform":
      return "uniform"
    text = "proportional" if self.name == "proportional" else f"temperature T={self.temperature:g}"
    return text + (f" (cap {self.cap})" if self.cap is not None else "")

  def as_dict(self) -> dict:
    return {"name": self.name, "temperature": self.temperature, "cap": self.cap,
            "source": self.source, "label": self.label}


@gin.configurable(module="tasks.mixing")
def scheme(name: Optional[str] = None, temperature: Optional[float] = None,
           cap: Optional[int] = None) -> Optional[MixingScheme]:
  """The scheme gin binds (gin/mixtures/*.gin), or None when gin names none.

  Called (not referenced) by `current_scheme`, so it reads whatever gin holds at that moment.
  """
  if name is None:
    if temperature is not None or cap is not None:
      raise ValueError("tasks.mixing.scheme: temperature/cap are bound but no scheme name "
                       f"(set tasks.mixing.scheme.name to one of {', '.join(SCHEMES)})")
    return None
  if name == "temperature" and temperature is None:
    raise ValueError("tasks.mixing.scheme: scheme 'temperature' needs a temperature")
  return MixingScheme(name=name, temperature=1.0 if temperature is None else float(temperature),
                      cap=cap, source="gin")


def scheme_from_config(config) -> MixingScheme:
  """The scheme a `tasks.DataConfig` (environment / tasks.configure) asks for.

  `proportional` with a temperature other than 1 is read as `temperature` (the environment's
  spelling before temperature became a scheme of its own).
  """
  name, temperature, cap = config.mixture_rate, float(config.temperature), config.cap
  if name == "proportional" and temperature != 1.0:
    name = "temperature"
  default = (name, temperature, cap) == ("uniform", 1.0, None)
  return MixingScheme(name=name, temperature=temperature, cap=cap,
                      source="default" if default else "data config")


def current_scheme(config) -> MixingScheme:
  """The scheme in effect now: gin's binding, else the data config's; both and different: error."""
  from_gin = scheme()
  from_config = scheme_from_config(config)
  if from_gin is None:
    return from_config
  if from_config.source != "default" and from_config != from_gin:
    raise ValueError(
        f"two mixing schemes: gin binds {from_gin.label!r} (tasks.mixing.scheme) but the data "
        f"config asks for {from_config.label!r} (PUNIFIED_MIXTURE_RATE/_TEMPERATURE/_CAP or "
        "tasks.configure.mixture_rate/temperature/cap); keep one")
  return from_gin


class SchemeRate:
  """A Mixture's rate function: the scheme in effect when seqio asks, applied to the task.

  `uniform` never reads the data (rate 1); the others count the task's training examples.
  """

  def __init__(self, config):
    self.config = config

  def __call__(self, task) -> float:
    chosen = current_scheme(self.config)
    if chosen.name == "uniform":
      return 1.0
    return chosen.rate(task.num_input_examples("train"))

  def __repr__(self) -> str:
    return f"SchemeRate({self.config!r})"


def rate_fn(config) -> SchemeRate:
  """The rate registry.py gives every task of every Mixture it registers under `config`."""
  return SchemeRate(config)


def scheme_of(provider) -> Optional[dict]:
  """`MixingScheme.as_dict()` of the scheme a seqio Mixture samples with now, or None for a Task
  or a Mixture whose rates are not a `SchemeRate` (not registered by `tasks`)."""
  configs = {rate.config for rate in getattr(provider, "rate_per_task_name", {}).values()
             if isinstance(rate, SchemeRate)}
  return current_scheme(next(iter(configs))).as_dict() if len(configs) == 1 else None


def describe(mixture_or_task_name: str) -> dict:
  """{"mixture", "scheme", "tasks": {task: {"train_examples", "rate", "share"}}}.

  `scheme` is None when the rates are not ours (a Mixture someone else registered, or a single
  Task, whose share is 1). Rates are what seqio will sample with (`Mixture.get_rate`).
  """
  # seqio (TensorFlow) here, not at the top: light modules (the data manifest) import mixing.py.
  import seqio  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  if not isinstance(provider, seqio.Mixture):
    return {"mixture": mixture_or_task_name, "scheme": None,
            "tasks": {provider.name: {"train_examples": _train_examples(provider), "rate": 1.0,
                                      "share": 1.0}}}
  chosen = scheme_of(provider)
  rates = {task.name: float(provider.get_rate(task)) for task in provider.tasks}
  share = shares(rates)
  return {"mixture": mixture_or_task_name,
          "scheme": chosen,
          "tasks": {name: {"train_examples": _train_examples(seqio.get_mixture_or_task(name)),
                           "rate": rate, "share": share[name]}
                    for name, rate in sorted(rates.items())}}


def _train_examples(task) -> Optional[int]:
  try:
    return int(task.num_input_examples("train"))
  except Exception as error:  # pylint: disable=broad-except
    # A source that cannot count (some TFDS sources): recorded as unknown, and said so.
    logging.warning("%s: number of training examples unknown (%s)", task.name, error)
    return None


# ------------------------------------------------------------------------------------------
# Bindings that nothing applies: fail at the end of gin parsing.
# ------------------------------------------------------------------------------------------

_applied_configure_bindings: Optional[dict] = None


def _configure_bindings() -> dict:
  try:
    bound = gin.get_bindings("tasks.configure", resolve_references=False)
  except ValueError:  # tasks.configure is not registered in this process
    return {}
  return {key: repr(value) for key, value in sorted(bound.items())}


def note_configure_applied() -> None:
  """Called by `tasks.configure`: the gin bindings it saw have taken effect."""
  global _applied_configure_bindings
  _applied_configure_bindings = _configure_bindings()


def check_configure_applied(unused_config: Any = None) -> None:
  """Finalize hook: `tasks.configure.*` bound but not applied -> ValueError naming them.

  Our entry points call `tasks.configure()` before finalizing gin; t5x does not, so there the
  data settings must come from the environment (PUNIFIED_*) and the mixing scheme from
  `tasks.mixing.scheme` (gin/mixtures/*.gin), which works in both.
  """
  bound = _configure_bindings()
  if bound and bound != _applied_configure_bindings:
    names = ", ".join(f"tasks.configure.{key}" for key in bound)
    raise ValueError(
        f"{names} bound in gin but never applied: only our trainer/eval/infer call "
        "tasks.configure (t5x does not). Under t5x set the PUNIFIED_* environment variables "
        "(PUNIFIED_RAW_DIR, PUNIFIED_DATASETS, PUNIFIED_VOCAB, ...) and choose the mixing "
        "scheme with a gin/mixtures/*.gin file; or call tasks.configure() before gin.finalize()")


gin.config.register_finalize_hook(check_configure_applied)


def shares(rates: Mapping[str, float]) -> dict[str, float]:
  """Rates -> sampling probabilities (what seqio's sample_from_datasets draws with)."""
  total = sum(rates.values())
  if total <= 0:
    raise ValueError(f"rates must sum to > 0, got {dict(rates)}")
  return {name: rate / total for name, rate in rates.items()}
