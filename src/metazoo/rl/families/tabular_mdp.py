"""Random tabular MDPs as Duan et al. draw them (RL², arXiv:1611.02779, Sec. 4.2).

A task is an MDP with |S| = 10 states and |A| = 5 actions: mean rewards R(s, a) ~ Normal(1, 1)
i.i.d., transitions P(. | s, a) ~ Dirichlet(1, ..., 1) (flat), a reward r ~ Normal(R(s, a), 1).
An episode is 10 steps from state 0 (the authors' released environment starts there); a trial
is n episodes on one MDP (the paper: n in {10, 25, 50, 75, 100}). The observation is the state
(`Discrete(|S|)`); the learner never sees R or P.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metazoo.errors import ConfigError
from metazoo.rl.base import register_family


@dataclass(frozen=True, eq=False)
class TabularMDPTask:
    rewards: np.ndarray  # [S, A] mean rewards R(s, a)
    transitions: np.ndarray  # [S, A, S] P(s' | s, a), rows summing to 1


class TabularMDPEnv(gym.Env[np.int64, np.int64]):
    """Episodes of `horizon` steps from state 0; truncated (not terminated) at the horizon."""

    def __init__(self, task: TabularMDPTask, horizon: int) -> None:
        self.task, self.horizon = task, horizon
        states, actions = task.rewards.shape
        self.observation_space = spaces.Discrete(states)
        self.action_space = spaces.Discrete(actions)
        self._cdf = np.cumsum(task.transitions, axis=-1)  # [S, A, S], for inverse-CDF draws
        self.state, self.t = 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self.state, self.t = 0, 0
        return np.int64(0), {}

    def step(self, action: np.int64) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        s, a = self.state, int(action)
        mean = float(self.task.rewards[s, a])
        reward = mean + float(self.np_random.standard_normal())
        cdf = self._cdf[s, a]
        self.state = int(min(np.searchsorted(cdf, self.np_random.random() * cdf[-1],
                                             side="right"), len(cdf) - 1))
        self.t += 1
        return (np.int64(self.state), reward, False, self.t >= self.horizon,
                {"expected_reward": mean})


@register_family("tabular_mdp", "random MDPs, |S|=10 |A|=5, R ~ N(1,1), P ~ flat Dirichlet, "
                                "10-step episodes, trials of n episodes (Duan et al. 2016, "
                                "Sec. 4.2)")
class TabularMDPFamily:
    """Args:
        episodes: n, episodes in a trial.
        states, actions, horizon: |S|, |A| and the steps of an episode (the paper's 10, 5, 10).
    """

    name = "tabular_mdp"

    def __init__(self, episodes: int = 10, states: int = 10, actions: int = 5,
                 horizon: int = 10) -> None:
        if min(episodes, states, actions, horizon) < 1:
            raise ConfigError("tabular_mdp needs episodes, states, actions and horizon >= 1; "
                              f"got {episodes}, {states}, {actions}, {horizon} (rl.options)")
        self.episodes_per_trial, self.horizon = episodes, horizon
        self.states, self.actions = states, actions

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[TabularMDPTask]:
        s, a = self.states, self.actions
        return [TabularMDPTask(rng.normal(1.0, 1.0, size=(s, a)),
                               rng.dirichlet(np.ones(s), size=(s, a))) for _ in range(n)]

    def make_env(self, task: TabularMDPTask) -> gym.Env:
        return TabularMDPEnv(task, self.horizon)
