"""HalfCheetah velocity and direction tasks (Finn et al. 2017, Sec. 5.3): the reward of a step
equals the formula computed from the simulator's state, the time limit is H = 200, and the pooled
vector env carries each sub-env's task. Skipped where MuJoCo is not installed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco", reason="the cheetah task families need MuJoCo: pip install "
                    "'metazoo[mujoco]'")

from metazoo.rl.base import make_family
from metazoo.rl.families.cheetah import CheetahDirTask, CheetahVelTask


def _step_by_hand(env, action):
    """(reward by the paper's formula, the env's reward) for one step of `env`."""
    sim = env.unwrapped
    x0 = float(sim.data.qpos[0])
    _, reward, *_ = env.step(action)
    v = (float(sim.data.qpos[0]) - x0) / sim.dt  # forward velocity over the step
    a = np.clip(action, -1, 1)
    return v, 0.05 * float(np.sum(a.astype(np.float64) ** 2)), reward


def test_velocity_task_reward_is_minus_speed_error_minus_control_cost():
    fam = make_family("cheetah_vel")
    tasks = fam.sample_tasks(300, np.random.default_rng(0))
    goals = np.array([t.velocity for t in tasks])
    assert goals.min() >= 0 and goals.max() <= 2 and goals.std() > 0.5
    env = fam.make_env(CheetahVelTask(1.3))
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(5):
        action = rng.uniform(-1.5, 1.5, size=6).astype(np.float32)  # some beyond the bounds
        v, ctrl, reward = _step_by_hand(env, action)
        assert np.isclose(reward, -abs(v - 1.3) - ctrl, rtol=1e-6, atol=1e-8)
    assert abs(v) > 1e-3  # the cheetah moved: the velocity term is not trivially zero


def test_direction_task_reward_is_signed_speed_minus_control_cost():
    fam = make_family("cheetah_dir")
    dirs = [t.direction for t in fam.sample_tasks(200, np.random.default_rng(0))]
    assert set(dirs) == {-1.0, 1.0} and 60 < dirs.count(1.0) < 140
    for d in (1.0, -1.0):
        env = fam.make_env(CheetahDirTask(d))
        env.reset(seed=2)
        action = np.linspace(-0.9, 0.9, 6).astype(np.float32)
        for _ in range(3):
            v, ctrl, reward = _step_by_hand(env, action)
            assert np.isclose(reward, d * v - ctrl, rtol=1e-6, atol=1e-8)


def test_horizon_and_pooled_vector_env_tasks():
    fam = make_family("cheetah_vel")
    env = fam.make_env(CheetahVelTask(0.5))
    env.reset(seed=0)
    truncated = [env.step(np.zeros(6, np.float32))[3] for _ in range(200)]
    assert truncated[-1] and not any(truncated[:-1])  # H = 200
    tasks = [CheetahVelTask(0.0), CheetahVelTask(2.0)]
    venv = fam.make_vector_env(tasks)
    venv.reset(seed=[7, 7])  # both sub-envs from the same initial state
    action = np.full((2, 6), 0.3, np.float32)
    _, r, *_ = venv.step(action)
    for task, reward in zip(tasks, r, strict=True):  # each sub-env has its own task's reward
        single = fam.make_env(task)
        single.reset(seed=7)
        assert np.isclose(reward, single.step(action[0])[1], rtol=1e-6)
    assert not np.isclose(r[0], r[1])
    again = fam.make_vector_env(tasks[::-1])  # the same simulators, tasks swapped
    assert [e.task for e in again.envs] == tasks[::-1]
