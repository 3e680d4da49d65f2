"""The two shapes of meta-RL: a task family (a distribution over Gymnasium environments) and a
meta-RL learner trained on tasks drawn from it.

A task is a small frozen value (a goal, an arm's probabilities, a target velocity) that
`TaskFamily.make_env` turns into a `gymnasium.Env`; the learner sees only environments, never the
task value, as in the papers. Draws take a `numpy.random.Generator`, so a run's task stream is a
pure function of its seed and step (fixed evaluation tasks: the generator seeded by the split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from torch import nn

from metazoo.errors import ConfigError


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
    training tasks, and `evaluate` on fixed evaluation tasks; the weights are the module's."""

    def meta_update(self, family: TaskFamily, tasks: Sequence[Any],
                    rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration on `tasks`; returns scalar metrics for the log."""
        raise NotImplementedError(f"{type(self).__name__} must define meta_update()")

    def evaluate(self, family: TaskFamily, tasks: Sequence[Any],
                 rng: np.random.Generator) -> dict[str, list[float]]:
        """Per-task metrics on `tasks` (one list entry per task), e.g. `return_after_1` for
        MAML-RL or `regret` for RL²; the engine reports their means with 95% CIs."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate()")


@dataclass(frozen=True)
class FamilySpec:
    name: str
    build: Callable[..., TaskFamily]
    description: str


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(name: str, description: str) -> Callable[[Callable[..., TaskFamily]],
                                                               Callable[..., TaskFamily]]:
    """Class decorator: `@register_family("bandit", "...")` on a TaskFamily builder."""
    def wrap(build: Callable[..., TaskFamily]) -> Callable[..., TaskFamily]:
        _FAMILIES[name] = FamilySpec(name, build, description)
        return build
    return wrap


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def make_family(name: str, **options: Any) -> TaskFamily:
    """The task family `name` built with `options`; a one-line error for an unknown name."""
    if name not in _FAMILIES:
        raise ConfigError(f"unknown meta-RL task family '{name}'; choose from "
                          f"{', '.join(family_names()) or '(none registered)'}")
    return _FAMILIES[name].build(**options)
