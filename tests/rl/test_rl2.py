"""RL²: the hidden state across a trial's episodes, the evaluation's metrics, and that it learns
a 2-armed bandit (regret far below a random policy's after a short run)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metazoo.errors import ConfigError
from metazoo.rl.base import algorithm_spec, build_algorithm, make_family
from metazoo.rl.trials import run_trials


def make_rl2(family, **options):
    torch.manual_seed(0)
    return build_algorithm("rl2", family, algorithm_spec("rl2").make_config(**options))


def test_hidden_state_persists_across_episodes_and_resets_between_trials():
    fam = make_family("bandit", arms=3, episodes=6)  # one pull per episode: 6 boundaries
    alg = make_rl2(fam, hidden=16)
    tasks = fam.sample_tasks(5, np.random.default_rng(0))
    trials = run_trials(alg.policy, fam, tasks, 6, torch.Generator().manual_seed(1), 0)
    assert trials.actions.shape == (6, 5) and trials.mask.all() and trials.dones.all()
    with torch.no_grad():
        logits, values = alg.policy.sequence(trials.inputs)  # one pass from a zero state
        # the same inputs with the state reset at every episode boundary
        reset = torch.stack([alg.policy.sequence(x[None])[0][0] for x in trials.inputs])
    logp = torch.log_softmax(logits, -1).gather(2, trials.actions[..., None])[..., 0]
    assert torch.allclose(logp, trials.log_probs, atol=1e-5)  # carried, never reset inside
    assert torch.allclose(values, trials.values, atol=1e-5)
    assert not torch.allclose(torch.log_softmax(reset, -1), torch.log_softmax(logits, -1),
                              atol=1e-3)  # a reset would show: the test can tell
    # a second trial starts from zero again: its first step depends on nothing before it
    again = run_trials(alg.policy, fam, tasks[::-1], 6, torch.Generator().manual_seed(2), 9)
    first = alg.policy.step(again.inputs[0], alg.policy.initial_state(5))[0]
    assert torch.allclose(torch.log_softmax(first, -1).gather(1, again.actions[0, :, None])[:, 0],
                          again.log_probs[0], atol=1e-6)
    # inputs: no previous action, reward 0 and the done flag at a trial's start
    assert torch.equal(trials.inputs[0, :, 1:], torch.tensor([[0, 0, 0, 0, 1.0]] * 5))


def test_evaluate_reports_return_regret_and_their_curves():
    fam = make_family("bandit", arms=2, episodes=4)
    alg = make_rl2(fam, hidden=8)
    tasks = fam.sample_tasks(7, np.random.default_rng(3))
    out = alg.evaluate(fam, tasks, np.random.default_rng(4))
    assert set(out) == {"return", "regret", *(f"{m}_after_{i}" for m in ("return", "regret")
                                              for i in range(1, 5))}
    assert all(len(v) == 7 for v in out.values())
    assert out["regret_after_4"] == out["regret"]
    assert out == alg.evaluate(fam, tasks, np.random.default_rng(4))  # the rng decides all
    gaps = [max(t.means) - min(t.means) for t in tasks]
    assert all(0 <= r <= 4 * g + 1e-6 for r, g in zip(out["regret"], gaps, strict=True))
    mdp = make_family("tabular_mdp", episodes=2, horizon=3)
    res = make_rl2(mdp, hidden=8).evaluate(mdp, mdp.sample_tasks(3, np.random.default_rng(0)),
                                           np.random.default_rng(1))
    assert set(res) == {"return", "return_after_1", "return_after_2"}


def test_rl2_beats_a_random_policy_on_a_2_armed_bandit(one_thread):
    fam = make_family("bandit", arms=2, episodes=10)
    alg = make_rl2(fam, hidden=32, lr=0.01, epochs=4, minibatches=2, discount=0.9)
    test_tasks = fam.sample_tasks(500, np.random.default_rng(123))
    for step in range(60):
        metrics = alg.meta_update(fam, fam.sample_tasks(128, np.random.default_rng([0, step])),
                                  np.random.default_rng([1, step]))
        assert all(np.isfinite(v) for v in metrics.values())
    regret = np.mean(alg.evaluate(fam, test_tasks, np.random.default_rng(1))["regret"])
    random_regret = 10 * (2 / 3 - 1 / 2)  # n (E max(p1, p2) - E p), p ~ U[0, 1]
    assert regret < 0.7 * random_regret, regret


class BoxActions:
    name = "box_actions"

    def sample_tasks(self, n, rng):
        return list(range(n))

    def make_env(self, task):
        env = gym.make("MountainCarContinuous-v0")
        return env


def test_bad_configs_raise():
    spec = algorithm_spec("rl2")
    for bad in ({"hidden": 0}, {"discount": 1.5}, {"gae_lambda": -0.1}, {"clip": 0.0},
                {"trial_episodes": 0}, {"max_grad_norm": -1.0}):
        with pytest.raises(ConfigError):
            spec.make_config(**bad)
    with pytest.raises(ConfigError, match="has no option 'hiden'; did you mean 'hidden'"):
        spec.make_config(hiden=3)
    with pytest.raises(ConfigError, match="discrete actions"):
        make_rl2(BoxActions())
