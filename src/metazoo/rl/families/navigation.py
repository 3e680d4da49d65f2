"""2D navigation (Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML 2017, arXiv:1703.03400, Sec. 5.3): a point agent starts at the origin and must
reach a goal drawn uniformly in the square [-0.5, 0.5]^2, unknown to it.

Observation: the 2D position. Action: a velocity, clipped to [-0.1, 0.1] per axis; the position
moves by it. Reward: minus the Euclidean distance to the goal after the move (the reference code
cbfinn/maml_rl `point_env_randgoal.py`; the paper's text says "negative squared distance").
An episode ends when both coordinates are within 0.01 of the goal's, or after H = 100 steps.
Deviation: the reference code wraps the env in rllab's `normalize`, which maps actions in
[-1, 1] linearly onto the bounds before clipping; here an action is clipped as the paper states.

`make_env` gives a Gymnasium env per task; `make_vector_env` runs many tasks' copies as one
natively batched `gymnasium.vector.VectorEnv` (numpy arrays, the same dynamics, next-step
autoreset), far faster than a `SyncVectorEnv` of single envs for this two-number state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from metazoo.rl.base import register_family

HORIZON = 100  # H = 100 (Sec. 5.3)
MAX_SPEED = 0.1  # velocity commands clipped to [-0.1, 0.1] (Sec. 5.3)
GOAL_TOLERANCE = 0.01  # "terminate when the agent is within 0.01 of the goal" (Sec. 5.3)


@dataclass(frozen=True)
class NavigationTask:
    goal: tuple[float, float]  # the goal position, uniform in [low, high]^2


def _obs_space(shape: tuple[int, ...]) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)


def _act_space(shape: tuple[int, ...]) -> gym.spaces.Box:
    return gym.spaces.Box(-MAX_SPEED, MAX_SPEED, shape, np.float32)


def _move(position: np.ndarray, action: np.ndarray, goal: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New position, reward (minus the distance to the goal) and whether it was reached."""
    position = position + np.clip(action, -MAX_SPEED, MAX_SPEED)
    delta = position - goal
    reached = np.all(np.abs(delta) < GOAL_TOLERANCE, axis=-1)
    return position, -np.sqrt((delta ** 2).sum(-1)), reached


class Navigation2DEnv(gym.Env[np.ndarray, np.ndarray]):
    """One 2D navigation task (the episode limit is `gymnasium.wrappers.TimeLimit`'s)."""

    def __init__(self, goal: tuple[float, float]) -> None:
        self.goal = np.asarray(goal, dtype=np.float64)
        self.observation_space = _obs_space((2,))
        self.action_space = _act_space((2,))
        self.position = np.zeros(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.position = np.zeros(2)
        return self.position.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.position, reward, reached = _move(self.position, np.asarray(action), self.goal)
        return self.position.astype(np.float32), float(reward), bool(reached), False, {}


class Navigation2DVectorEnv(gym.vector.VectorEnv):
    """Many 2D navigation envs (one goal each) stepped together as arrays, time limit included.

    Next-step autoreset (Gymnasium's default): the step after a sub-env's episode ends resets
    it, ignoring its action, and returns its first observation with reward 0.
    """

    def __init__(self, goals: np.ndarray, horizon: int = HORIZON) -> None:
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self.goals = np.asarray(goals, dtype=np.float64).reshape(-1, 2)  # [M, 2]
        self.num_envs = len(self.goals)
        self.horizon = horizon
        self.single_observation_space = _obs_space((2,))
        self.single_action_space = _act_space((2,))
        self.observation_space = _obs_space((self.num_envs, 2))
        self.action_space = _act_space((self.num_envs, 2))
        self.position = np.zeros((self.num_envs, 2))
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        self.position[:] = 0.0
        self.steps[:] = 0
        self.ended[:] = False
        return self.position.astype(np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, dict[str, Any]]:
        restart = self.ended.copy()
        position, reward, reached = _move(self.position, np.asarray(actions), self.goals)
        self.steps += 1
        truncated = self.steps >= self.horizon  # as gymnasium's TimeLimit
        self.position = np.where(restart[:, None], 0.0, position)
        self.steps[restart] = 0
        reward = np.where(restart, 0.0, reward)
        reached, truncated = reached & ~restart, truncated & ~restart
        self.ended = reached | truncated
        return self.position.astype(np.float32), reward, reached, truncated, {}


@register_family("navigation_2d", "point agent to a random goal in [-0.5, 0.5]^2, H = 100 "
                 "(Finn et al. 2017, Sec. 5.3)")
class Navigation2D:
    """The task family: goals uniform in `[low, high]^2`, episodes of at most `horizon` steps."""

    name = "navigation_2d"

    def __init__(self, low: float = -0.5, high: float = 0.5, horizon: int = HORIZON) -> None:
        self.low, self.high, self.horizon = low, high, horizon

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[NavigationTask]:
        goals = rng.uniform(self.low, self.high, size=(n, 2))
        return [NavigationTask((float(x), float(y))) for x, y in goals]

    def make_env(self, task: NavigationTask) -> gym.Env:
        return gym.wrappers.TimeLimit(Navigation2DEnv(task.goal), self.horizon)

    def make_vector_env(self, tasks: Sequence[NavigationTask]) -> gym.vector.VectorEnv:
        return Navigation2DVectorEnv(np.array([t.goal for t in tasks]), self.horizon)
