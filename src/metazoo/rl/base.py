"""The two shapes of meta-RL: a task family (a distribution over Gymnasium environments) and a
meta-RL learner trained on tasks drawn from it.

A task is a small frozen value (a goal, an arm's probabilities, a target velocity) that
`TaskFamily.make_env` turns into a `gymnasium.Env`; the learner sees only environments, never the
task value, as in the papers. Draws take a `numpy.random.Generator`, so a run's task stream is a
pure function of its seed and step (fixed evaluation tasks: the generator seeded by the split).

Registration (the single source of the interface; `metazoo.engine.rl` drives both):
- a family: `@register_family(name, description)` on its builder, whose keyword options are the
  run's `rl.options`; its module is imported by `metazoo/rl/families/__init__.py`, which
  `make_family` imports lazily (so `import metazoo` needs no gymnasium);
- a learner: `@register_algorithm(name, config=..., display=..., paper=..., curve=...)` on its
  `MetaRLAlgorithm` class, built as `cls(family, config)`; its module is listed in
  `ALGORITHM_MODULES` (imported when the name is first asked for). `algorithm.name` of a run
  picks it; its config is a frozen `AlgorithmConfig` subclass (the paper's defaults).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from metazoo.algorithms.base import AlgorithmConfig
from metazoo.errors import ConfigError
from metazoo.fields import did_you_mean, from_mapping
from metazoo.registry import Registry

if TYPE_CHECKING:
    import gymnasium as gym


class TaskFamily(Protocol):
    """A distribution over tasks, each made into a Gymnasium environment."""

    name: str

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Any]:
        """`n` tasks drawn with `rng`."""
        ...

    def make_env(self, task: Any) -> gym.Env:
        """A fresh environment for `task` (episode length and spaces as the papers)."""
        ...


class MetaRLAlgorithm(nn.Module):
    """A meta-RL learner. The engine calls `meta_update` once per meta-iteration with a batch of
    training tasks, and `evaluate` on fixed evaluation tasks; the weights are the module's.

    Every random draw comes from the `rng` passed in (torch draws from a generator seeded from
    it), so a resumed run repeats an uninterrupted one. A learner that keeps an optimiser across
    meta-iterations holds it as `self.optimizer`: the engine checkpoints and restores its state.
    `evaluate` chooses its own autograd mode (MAML-RL differentiates there, RL² does not).
    """

    spec: ClassVar[Any]  # its `MetaRLSpec`, set by `@register_algorithm`
    optimizer: torch.optim.Optimizer | None = None

    def meta_update(self, family: TaskFamily, tasks: Sequence[Any],
                    rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration on `tasks`; returns scalar metrics for the log."""
        raise NotImplementedError(f"{type(self).__name__} must define meta_update()")

    def evaluate(self, family: TaskFamily, tasks: Sequence[Any],
                 rng: np.random.Generator) -> dict[str, list[float]]:
        """Per-task metrics on `tasks` (one list entry per task), e.g. `return_after_1` for
        MAML-RL or `regret` for RL²; the engine reports their means with 95% CIs. Keys
        `<metric>_after_<i>` form a curve that `metazoo plot` draws against `i` (the spec's
        `curve` names that axis)."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate()")


def env_spaces(family: TaskFamily) -> tuple[gym.Space, gym.Space]:
    """Observation and action spaces of `family` (those of an environment of one task drawn with
    a fixed generator: every task of a family shares them), for building a policy."""
    env = family.make_env(family.sample_tasks(1, np.random.default_rng(0))[0])
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


def curve_points(episodes: int, most: int = 20) -> list[int]:
    """Where a `<metric>_after_<i>` curve over `episodes` is reported: every i up to `most`
    episodes, else `most` points spread over 1 .. episodes."""
    if episodes <= most:
        return list(range(1, episodes + 1))
    return sorted({round(x) for x in np.linspace(1, episodes, most).tolist()})


@dataclass(frozen=True)
class FamilySpec:
    name: str
    build: Callable[..., TaskFamily]
    description: str
    extra: str = "rl"  # the pip extra its environments need: "rl" (gymnasium) or "mujoco"


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(name: str, description: str, extra: str = "rl"
                    ) -> Callable[[Callable[..., TaskFamily]], Callable[..., TaskFamily]]:
    """Class decorator: `@register_family("bandit", "...")` on a TaskFamily builder; `extra`
    is the pip extra its environments need (`mujoco` for HalfCheetah)."""
    def wrap(build: Callable[..., TaskFamily]) -> Callable[..., TaskFamily]:
        _FAMILIES[name] = FamilySpec(name, build, description, extra)
        return build
    return wrap


def _load_families() -> None:
    importlib.import_module("metazoo.rl.families")  # registers every family (needs gymnasium)


def family_names() -> list[str]:
    _load_families()
    return sorted(_FAMILIES)


def family_spec(name: str) -> FamilySpec:
    """The spec of family `name`; a one-line `ConfigError` for an unknown name."""
    _load_families()
    if name not in _FAMILIES:
        raise ConfigError(f"unknown meta-RL task family '{name}'"
                          f"{did_you_mean(name, _FAMILIES)}; choose from "
                          f"{', '.join(sorted(_FAMILIES)) or '(none registered)'}")
    return _FAMILIES[name]


def make_family(name: str, **options: Any) -> TaskFamily:
    """The task family `name` built with `options`; a one-line error for an unknown name or an
    option the builder does not take (its own checks raise `ConfigError` too)."""
    build = family_spec(name).build
    try:
        return build(**options)
    except TypeError as e:  # an unknown or missing keyword of the builder
        raise ConfigError(f"task family '{name}': {e} (rl.options)") from None


C = TypeVar("C", bound="type[MetaRLAlgorithm]")


@dataclass(frozen=True)
class MetaRLSpec:
    """What the registry knows about a meta-RL learner."""

    name: str
    display: str
    cls: type[MetaRLAlgorithm]
    config: type[AlgorithmConfig]
    paper: str
    curve: str = ""  # what `i` of its `<metric>_after_<i>` keys counts (for `metazoo plot`)
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def make_config(self, **overrides: Any) -> AlgorithmConfig:
        """Its config with registered defaults, then `overrides`, typed and validated."""
        known = [f.name for f in dataclasses.fields(self.config)]
        for key in overrides:
            if key not in known:
                raise ConfigError(f"algorithm '{self.name}' has no option '{key}'"
                                  f"{did_you_mean(key, known)}")
        cfg = from_mapping(self.config, {**self.defaults, **overrides}, "algorithm")
        try:
            cfg.validate()
        except ConfigError as e:
            raise ConfigError(f"{self.name} {e}") from None
        return cfg


ALGORITHMS: Registry[MetaRLSpec] = Registry("meta-RL algorithm", "metazoo list algorithms")
ALGORITHM_MODULES = {"rl2": "metazoo.rl.rl2", "maml_rl": "metazoo.rl.maml_rl"}
"""Every meta-RL learner's name and module: the registration list, imported on first use."""


def register_algorithm(name: str, *, config: type[AlgorithmConfig], display: str, paper: str,
                       curve: str = "", defaults: Mapping[str, Any] | None = None
                       ) -> Callable[[C], C]:
    """Class decorator: register a `MetaRLAlgorithm` (name also in `ALGORITHM_MODULES`)."""
    def wrap(cls: C) -> C:
        spec = ALGORITHMS.add(MetaRLSpec(name, display, cls, config, paper, curve,
                                         dict(defaults or {})))
        if "spec" not in cls.__dict__:
            cls.spec = spec
        return cls
    return wrap


def is_algorithm(name: str) -> bool:
    """Whether `name` is a meta-RL learner (no import needed to tell)."""
    return name in ALGORITHM_MODULES


def algorithm_spec(name: str) -> MetaRLSpec:
    """The spec of meta-RL learner `name` (its module imported on first use)."""
    if name in ALGORITHM_MODULES and name not in ALGORITHMS:
        importlib.import_module(ALGORITHM_MODULES[name])
    return ALGORITHMS.get(name)


def build_algorithm(name: str, family: TaskFamily, config: AlgorithmConfig) -> MetaRLAlgorithm:
    """Learner `name` for `family` with `config` (a config made by its spec)."""
    spec = algorithm_spec(name)
    if not isinstance(config, spec.config):
        raise ConfigError(f"algorithm '{name}' takes a {spec.config.__name__}, "
                          f"got a {type(config).__name__}")
    return spec.cls(family, config)
