"""2D navigation (Finn et al. 2017, Sec. 5.3): the dynamics, reward, termination and time limit
by hand; the batched vector env equals single Gymnasium envs; the sampler's trajectories replay
through the dynamics."""

from __future__ import annotations

import numpy as np
import torch

from metazoo.rl.base import make_family
from metazoo.rl.families.navigation import Navigation2D, NavigationTask
from metazoo.rl.policies import GaussianMLPPolicy
from metazoo.rl.policy_gradient import sample_episodes, vector_env


def test_dynamics_reward_and_termination_by_hand():
    env = Navigation2D().make_env(NavigationTask((0.25, -0.05)))
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs, [0.0, 0.0]) and obs.dtype == np.float32
    obs, r, term, trunc, _ = env.step(np.array([0.5, -0.02]))  # x clipped to 0.1
    assert np.allclose(obs, [0.1, -0.02]) and not (term or trunc)
    assert np.isclose(r, -np.hypot(0.1 - 0.25, -0.02 + 0.05))
    env.step(np.array([0.1, -0.03]))
    obs, r, term, trunc, _ = env.step(np.array([0.045, 0.0]))  # within 0.01 on both axes
    assert np.allclose(obs, [0.245, -0.05]) and term and not trunc
    assert np.isclose(r, -0.005)
    env.reset()
    for t in range(100):  # standing still never reaches the goal: truncated at H = 100
        *_, term, trunc, _ = env.step(np.zeros(2))
        assert not term and trunc == (t == 99)


def test_family_draws_goals_in_the_unit_square_from_the_rng():
    fam = make_family("navigation_2d")
    goals = np.array([t.goal for t in fam.sample_tasks(500, np.random.default_rng(0))])
    assert goals.min() >= -0.5 and goals.max() <= 0.5 and goals.std(0).min() > 0.25
    again = fam.sample_tasks(500, np.random.default_rng(0))
    assert [t.goal for t in again] == [tuple(g) for g in goals.tolist()]


def test_vector_env_equals_single_envs_with_next_step_autoreset():
    fam = Navigation2D(horizon=12)
    tasks = [NavigationTask((0.05, 0.05)), NavigationTask((-0.3, 0.4)), NavigationTask((0, 0))]
    venv = fam.make_vector_env(tasks)
    singles = [fam.make_env(t) for t in tasks]
    rng = np.random.default_rng(1)
    obs, _ = venv.reset(seed=3)
    expect = [e.reset(seed=3)[0] for e in singles]
    assert np.array_equal(obs, np.stack(expect))
    done, ends = [False] * 3, 0
    for _ in range(30):
        act = rng.uniform(-0.15, 0.15, size=(3, 2)).astype(np.float32)
        act[0] = [0.05, 0.05]  # env 0 reaches its goal at step 1, then restarts
        obs, r, term, trunc, _ = venv.step(act)
        for i, e in enumerate(singles):
            if done[i]:  # next-step autoreset: first observation, reward 0, not ended
                o, ri, ti, tri = e.reset()[0], 0.0, False, False
            else:
                o, ri, ti, tri, _ = e.step(act[i])
            assert np.allclose(obs[i], o) and np.isclose(r[i], ri)
            assert term[i] == ti and trunc[i] == tri
            done[i] = ti or tri
        ends += int(np.sum(term | trunc))
    assert ends >= 17  # env 0 every other step, envs 1 and 2 at least by the time limit


def test_sampled_trajectories_replay_through_the_dynamics():
    fam = Navigation2D(horizon=30)
    tasks = fam.sample_tasks(3, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_std=0.05)
    params = dict(policy.named_parameters())
    env, owned = vector_env(fam, tasks, 4)
    assert not owned and env.num_envs == 12
    eps = sample_episodes(policy, params, env, 4, seed=5)
    assert eps.observations.shape == (30, 12, 2) and eps.num_tasks == 3
    for j in range(12):
        goal = np.array(tasks[j // 4].goal)
        pos, n = np.zeros(2), int(eps.mask[:, j].sum())
        assert torch.all(eps.mask[:n, j] == 1) and torch.all(eps.mask[n:, j] == 0)
        for t in range(n):
            assert np.allclose(eps.observations[t, j].numpy(), pos, atol=1e-6)
            pos = pos + np.clip(eps.actions[t, j].numpy(), -0.1, 0.1)
            assert np.isclose(float(eps.rewards[t, j]), -np.linalg.norm(pos - goal), atol=1e-5)
        ended_early = n < 30
        assert ended_early == bool(np.all(np.abs(pos - goal) < 0.01))
    assert float(eps.rewards[eps.mask == 0].abs().sum()) == 0.0
    same = sample_episodes(policy, params, env, 4, seed=5)
    assert torch.equal(same.actions, eps.actions)  # the seed decides every draw
