"""HalfCheetah with a random goal velocity or direction (Finn, Abbeel, Levine, "Model-Agnostic
Meta-Learning for Fast Adaptation of Deep Networks", ICML 2017, arXiv:1703.03400, Sec. 5.3).

Gymnasium's `HalfCheetah-v5` (MuJoCo, the `mujoco` extra) with its reward replaced by the task's,
as the reference code's rllab envs (cbfinn/maml_rl `half_cheetah_env_rand.py`, `..._direc.py`):
    cheetah_vel:  r = -|v - v_goal| - 0.05 |a|^2,   v_goal ~ U[0, 2]  (Sec. 5.3)
    cheetah_dir:  r = d * v - 0.05 |a|^2,           d = +1 or -1 with probability 1/2
v is the forward velocity (Gymnasium's `x_velocity`), a the action clipped to [-1, 1]; the
control cost 0.05 |a|^2 is the code's 0.5 * 1e-1 * sum(a^2). Horizon H = 200 (Sec. 5.3).
Deviations: the v5 model, observation (17 numbers, without rllab's 3 centre-of-mass coordinates)
and initial-state noise are Gymnasium's; v is the torso's finite-difference velocity over a step
(rllab: the centre-of-mass velocity of the torso's subtree).

`make_vector_env` keeps a pool of simulators and hands them out in a Gymnasium `SyncVectorEnv`
with the tasks set, since building one HalfCheetah costs ~30 ms (a meta-batch holds 800).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from metazoo.errors import ConfigError
from metazoo.rl.base import register_family

HORIZON = 200  # H = 200 (Sec. 5.3)
CONTROL_COST = 0.05  # 0.5 * 1e-1 * |a|^2 (cbfinn/maml_rl half_cheetah_env_rand.py)


@dataclass(frozen=True)
class CheetahVelTask:
    velocity: float  # goal forward velocity, U[0, 2] (Sec. 5.3)

    def forward_reward(self, v: float) -> float:
        return -abs(v - self.velocity)


@dataclass(frozen=True)
class CheetahDirTask:
    direction: float  # +1 forward, -1 backward (Sec. 5.3)

    def forward_reward(self, v: float) -> float:
        return self.direction * v


class TaskReward(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """A HalfCheetah whose reward is `task.forward_reward(v) - 0.05 |clip(a)|^2`."""

    def __init__(self, env: gym.Env, task: CheetahVelTask | CheetahDirTask) -> None:
        super().__init__(env)
        self.task = task

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        space = self.action_space
        assert isinstance(space, gym.spaces.Box)
        a = np.clip(np.asarray(action, dtype=space.dtype), space.low, space.high)
        obs, _, terminated, truncated, info = self.env.step(a)
        v = float(info["x_velocity"])
        ctrl = CONTROL_COST * float(np.sum(np.square(a, dtype=np.float64)))
        forward = self.task.forward_reward(v)
        info = {**info, "task_forward_reward": forward, "task_ctrl_cost": ctrl}
        return obs, forward - ctrl, terminated, truncated, info


def half_cheetah(horizon: int) -> gym.Env:
    """Gymnasium's HalfCheetah-v5 limited to `horizon` steps; a one-line hint without MuJoCo."""
    try:
        return gym.make("HalfCheetah-v5", max_episode_steps=horizon)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"the HalfCheetah task families need MuJoCo ({e}); install it with "
                          "pip install 'metazoo[mujoco]'") from None


def _returning(env: gym.Env) -> Callable[[], gym.Env]:
    """An env factory that hands out an existing env (a pooled one)."""
    return lambda: env


class _HalfCheetahFamily:
    name = "half_cheetah"

    def __init__(self, horizon: int = HORIZON) -> None:
        self.horizon = horizon
        self._pool: list[TaskReward] = []

    def make_env(self, task: CheetahVelTask | CheetahDirTask) -> gym.Env:
        return TaskReward(half_cheetah(self.horizon), task)

    def make_vector_env(self, tasks: Sequence[CheetahVelTask | CheetahDirTask]
                        ) -> gym.vector.VectorEnv:
        """Pooled simulators, one per entry of `tasks`; the family keeps them (do not close)."""
        while len(self._pool) < len(tasks):
            self._pool.append(TaskReward(half_cheetah(self.horizon), tasks[0]))
        envs = self._pool[:len(tasks)]
        for env, task in zip(envs, tasks, strict=True):
            env.task = task
        return gym.vector.SyncVectorEnv([_returning(e) for e in envs])


@register_family("cheetah_vel", "HalfCheetah-v5 running at a goal velocity in [0, 2], H = 200 "
                 "(Finn et al. 2017, Sec. 5.3)", extra="mujoco")
class CheetahVel(_HalfCheetahFamily):
    """Goal velocities uniform in `[low, high]`."""

    name = "cheetah_vel"

    def __init__(self, low: float = 0.0, high: float = 2.0, horizon: int = HORIZON) -> None:
        super().__init__(horizon)
        self.low, self.high = low, high

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[CheetahVelTask]:
        return [CheetahVelTask(float(v)) for v in rng.uniform(self.low, self.high, size=n)]


@register_family("cheetah_dir", "HalfCheetah-v5 running forward or backward, H = 200 "
                 "(Finn et al. 2017, Sec. 5.3)", extra="mujoco")
class CheetahDir(_HalfCheetahFamily):
    """Directions +1 and -1 with equal probability."""

    name = "cheetah_dir"

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[CheetahDirTask]:
        return [CheetahDirTask(float(d)) for d in rng.choice([-1.0, 1.0], size=n)]
