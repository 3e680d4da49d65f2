"""REINFORCE and the linear baseline against independent computations: the estimator's mean is
the exact gradient of a one-step Gaussian bandit, the baseline is the ridge least-squares fit by
hand, returns and advantages as their definitions."""

from __future__ import annotations

import numpy as np
import torch

from metazoo.rl import linear_baseline
from metazoo.rl.policies import GaussianMLPPolicy, mean_log_std
from metazoo.rl.policy_gradient import (
    Episodes,
    PerTask,
    advantages,
    discounted_returns,
    reinforce_losses,
)


def test_reinforce_mean_is_the_exact_gradient_of_a_gaussian_bandit():
    # one step, reward r(a) = -(a - c)^2: J(theta) = E[r] = -((mu - c)^2 + sigma^2) exactly
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(1, 1, hidden=(4,), init_std=0.7)
    params = {k: v.detach().requires_grad_() for k, v in policy.named_parameters()}
    obs, c = torch.tensor([[0.3]]), 0.5
    mean, log_std = mean_log_std(policy, params, obs)
    exact_j = -((mean[0, 0] - c) ** 2 + torch.exp(2 * log_std[0]))
    exact = torch.autograd.grad(exact_j, list(params.values()))
    exact_flat = torch.cat([g.flatten() for g in exact])
    gen = torch.Generator().manual_seed(1)
    estimates = []
    for _ in range(40):  # 40 independent estimates of 4000 one-step trajectories each
        with torch.no_grad():
            a = mean + torch.exp(log_std) * torch.randn(4000, 1, generator=gen)  # [M, 1]
        ep = Episodes(obs.expand(4000, 1)[None], a[None], -(a[None, :, 0] - c) ** 2,
                      torch.ones(1, 4000), 4000)  # one task, 4000 one-step trajectories
        stacked = {k: v[None] for k, v in params.items()}
        loss = reinforce_losses(policy, stacked, PerTask.of(ep, ep.rewards)).sum()
        g = torch.autograd.grad(loss, list(params.values()))
        estimates.append(-torch.cat([x.flatten() for x in g]))  # the loss estimates -grad J
    est = torch.stack(estimates)
    stderr = est.std(0) / np.sqrt(len(est))
    moving = exact_flat.abs() > 1e-6  # ReLU units dead at this input have zero gradient
    assert moving.sum() >= 4
    z = (est.mean(0) - exact_flat)[moving] / stderr[moving]
    assert z.abs().max() < 4.5, z
    assert torch.allclose(est.mean(0), exact_flat, atol=0.05, rtol=0.05)
    # and within 10% of each moving coordinate (160,000 samples in all)
    assert (est.mean(0)[moving] / exact_flat[moving] - 1).abs().max() < 0.1


def test_linear_baseline_is_the_ridge_least_squares_fit_by_hand():
    rng = np.random.default_rng(0)
    t_len, m, d = 7, 3, 2
    obs = rng.normal(size=(t_len, m, d)) * 6  # some beyond the clip at 10
    returns = rng.normal(size=(t_len, m))
    lengths = [7, 4, 5]
    mask = np.array([[t < n for n in lengths] for t in range(t_len)], dtype=np.float64)
    rows, ys = [], []
    for t, i in zip(*np.nonzero(mask), strict=True):  # the valid steps, row-major
        o = np.clip(obs[t, i], -10, 10)
        s = t / 100
        rows.append(np.concatenate([o, o ** 2, [s, s ** 2, s ** 3, 1.0]]))
        ys.append(returns[t, i])
    x, y = np.array(rows), np.array(ys)
    ridge = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
    w = linear_baseline.fit(torch.tensor(obs), torch.tensor(returns), torch.tensor(mask))
    np.testing.assert_allclose(w.numpy(), ridge, rtol=1e-6, atol=1e-8)
    pred = linear_baseline.predict(w, torch.tensor(obs)).numpy()
    np.testing.assert_allclose(pred[mask > 0], x @ ridge, rtol=1e-6, atol=1e-8)


def test_discounted_returns_and_normalised_advantages():
    rewards = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]])  # [T, M]; 2nd ended at t = 1
    g = discounted_returns(rewards, 0.9)
    expected = torch.tensor([[1 + 0.9 * 0 + 0.81 * 3, 2 + 0.9], [0 + 0.9 * 3, 1.0], [3.0, 0.0]])
    assert torch.allclose(g, expected)
    torch.manual_seed(0)
    obs = torch.randn(5, 6, 2)
    mask = torch.ones(5, 6)
    mask[3:, 1] = 0
    ep = Episodes(obs, torch.zeros(5, 6, 1), torch.randn(5, 6) * mask, mask, 3)
    adv = advantages(ep, 0.99, normalize=True)
    for i in range(2):  # per task: mean 0, std 1 over its valid steps, 0 where padded
        a, mk = adv[:, 3 * i:3 * i + 3], mask[:, 3 * i:3 * i + 3]
        vals = a[mk > 0]
        assert abs(float(vals.mean())) < 1e-5
        assert abs(float(vals.pow(2).mean().sqrt()) - 1) < 1e-4
        assert float(a[mk == 0].abs().sum()) == 0
    raw = advantages(ep, 0.99, normalize=False)
    one = ep.task(0)
    ret = discounted_returns(one.rewards, 0.99)
    w = linear_baseline.fit(one.observations, ret, one.mask)
    assert torch.allclose(raw[:, :3], (ret - linear_baseline.predict(w, one.observations))
                          * one.mask, atol=1e-5)
