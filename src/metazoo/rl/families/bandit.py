"""Bernoulli multi-armed bandits as Duan et al. draw them (RL², arXiv:1611.02779, Sec. 4.1).

A task is k arm means p_i ~ Uniform[0, 1] (i.i.d.); pulling arm a pays 1 with probability p_a.
An episode is one pull; a trial is n episodes on one task (the paper: k in {5, 10, 50}, n in {10,
100, 500}). Each step's `info` carries `expected_reward` p_a and `regret` max_i p_i - p_a, so a
trial's regret n max_i p_i - sum_t p_{a_t} (expected, not sampled, rewards) is read off the
environment without the learner seeing the task. `baselines` scores the paper's Table 1
references on the same tasks (`metazoo.rl.bandit_baselines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metazoo.errors import ConfigError
from metazoo.rl.base import register_family

BASELINES = ("random", "greedy", "ucb1", "ucb1_duan", "thompson", "gittins")


@dataclass(frozen=True)
class BanditTask:
    means: tuple[float, ...]  # p_i, the probability that arm i pays 1


class BernoulliBanditEnv(gym.Env[np.int64, np.int64]):
    """One pull per episode: observation 0 (a bandit has no state), reward 0 or 1."""

    def __init__(self, task: BanditTask) -> None:
        self.means = np.asarray(task.means, dtype=np.float64)
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(len(task.means))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        return np.int64(0), {}

    def step(self, action: np.int64) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        p = float(self.means[int(action)])
        reward = float(self.np_random.random() < p)
        info = {"expected_reward": p, "regret": float(self.means.max()) - p}
        return np.int64(0), reward, True, False, info


@register_family("bandit", "k-armed Bernoulli bandits, means ~ U[0,1], trials of n one-pull "
                           "episodes (Duan et al. 2016, Sec. 4.1)")
class BanditFamily:
    """Args:
        arms: k.
        episodes: n, one-pull episodes in a trial.
        baselines: the references `baselines` scores (of `BASELINES`).
    """

    name = "bandit"
    horizon = 1  # steps per episode

    def __init__(self, arms: int = 5, episodes: int = 10,
                 baselines: Sequence[str] = BASELINES) -> None:
        if arms < 2 or episodes < 1:
            raise ConfigError(f"bandit needs arms >= 2 and episodes >= 1; got arms={arms}, "
                              f"episodes={episodes} (rl.options)")
        unknown = sorted(set(baselines) - set(BASELINES))
        if unknown:
            raise ConfigError(f"bandit baselines {unknown} unknown; choose from "
                              f"{', '.join(BASELINES)} (rl.options.baselines)")
        self.arms, self.episodes_per_trial = arms, episodes
        self.baseline_names = tuple(baselines)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[BanditTask]:
        means = rng.uniform(0.0, 1.0, size=(n, self.arms))
        return [BanditTask(tuple(float(p) for p in row)) for row in means]

    def make_env(self, task: BanditTask) -> gym.Env:
        return BernoulliBanditEnv(task)

    def baselines(self, tasks: Sequence[BanditTask], rng: np.random.Generator
                  ) -> dict[str, dict[str, list[float]]]:
        """Per-task `regret` and `return` of each reference policy on `tasks` over a trial."""
        from metazoo.rl import bandit_baselines

        means = np.array([t.means for t in tasks])  # [tasks, k]
        return {name: bandit_baselines.run(name, means, self.episodes_per_trial, rng)
                for name in self.baseline_names}
