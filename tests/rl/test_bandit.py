"""The `bandit` and `tabular_mdp` families: Gymnasium environments as Duan et al. draw them."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metazoo.errors import ConfigError
from metazoo.rl.base import family_names, make_family


def test_families_are_registered_and_a_bad_name_is_one_line():
    assert {"bandit", "tabular_mdp"} <= set(family_names())
    with pytest.raises(ConfigError, match=r"unknown meta-RL task family 'bandt'; did you mean "
                                          r"'bandit'") as e:
        make_family("bandt")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="arms"):
        make_family("bandit", arms=1)
    with pytest.raises(ConfigError, match=r"rl\.options"):
        make_family("bandit", legs=3)
    with pytest.raises(ConfigError, match="baselines"):
        make_family("bandit", baselines=["oracle"])


def test_bandit_env_pays_bernoulli_rewards_and_reports_expected_regret():
    fam = make_family("bandit", arms=3, episodes=4)
    tasks = fam.sample_tasks(200, np.random.default_rng(0))
    assert tasks == fam.sample_tasks(200, np.random.default_rng(0))  # a pure function of rng
    means = np.array([t.means for t in tasks])
    assert means.shape == (200, 3) and means.min() >= 0 and means.max() <= 1
    assert abs(means.mean() - 0.5) < 0.05  # Uniform[0, 1]
    env = fam.make_env(tasks[0])
    check_env(env, skip_render_check=True)
    assert env.reset(seed=1) == (0, {})
    obs, reward, terminated, truncated, info = env.step(1)
    assert obs == 0 and reward in (0.0, 1.0) and terminated and not truncated  # one pull
    assert info["expected_reward"] == tasks[0].means[1]
    assert info["regret"] == pytest.approx(max(tasks[0].means) - tasks[0].means[1])
    env.reset(seed=5)
    rewards = [env.step(2)[1] for _ in range(4000)]
    assert abs(np.mean(rewards) - tasks[0].means[2]) < 4 * 0.5 / np.sqrt(4000)


def test_tabular_mdp_env_follows_its_task():
    fam = make_family("tabular_mdp", episodes=3)
    task = fam.sample_tasks(1, np.random.default_rng(0))[0]
    assert task.rewards.shape == (10, 5) and task.transitions.shape == (10, 5, 10)
    assert np.allclose(task.transitions.sum(-1), 1.0)
    env = fam.make_env(task)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs == 0  # every episode starts in state 0
    for t in range(10):
        obs, _, terminated, truncated, _ = env.step(t % 5)
        assert not terminated and truncated == (t == 9)  # 10-step episodes
    # from state 0 with action 2: next states ~ P(. | 0, 2), rewards ~ N(R(0, 2), 1)
    nxt, rew = [], []
    for _ in range(5000):
        env.reset()
        s, r, *_ = env.step(2)
        nxt.append(s)
        rew.append(r)
    freq = np.bincount(nxt, minlength=10) / 5000
    assert np.abs(freq - task.transitions[0, 2]).max() < 0.03
    assert abs(np.mean(rew) - task.rewards[0, 2]) < 4 / np.sqrt(5000)
    with pytest.raises(ConfigError, match="tabular_mdp"):
        make_family("tabular_mdp", horizon=0)
