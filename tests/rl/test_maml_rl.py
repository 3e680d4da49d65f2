"""MAML-RL (Finn et al. 2017, Sec. 5.3): the registry and config, the batched inner step equals
per-task REINFORCE steps by hand, the meta-gradient flows through the inner step, evaluation's
keys, and that it learns 2D navigation (one inner step helps far more after a short run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metazoo.errors import ConfigError
from metazoo.rl.base import algorithm_spec, build_algorithm, make_family
from metazoo.rl.policies import gaussian_log_prob, mean_log_std, stacked_mean_log_std
from metazoo.rl.policy_gradient import (
    PerTask,
    advantages,
    sample_episodes,
    surrogate_loss,
    vector_env,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: sized for one core


def make_maml_rl(family, **options):
    torch.manual_seed(0)
    return build_algorithm("maml_rl", family, algorithm_spec("maml_rl").make_config(**options))


@pytest.mark.parametrize("bad", [{"inner_lr": 0.0}, {"max_kl": -1.0}, {"trajectories": 0},
                                 {"gamma": 1.5}, {"backtrack_ratio": 1.0}, {"hidden": []},
                                 {"eval_steps": -1}, {"objective": "oracle"}])
def test_bad_config_raises(bad):
    with pytest.raises(ConfigError):
        algorithm_spec("maml_rl").make_config(**bad)


def test_paper_defaults_and_the_policy_shape():
    cfg = algorithm_spec("maml_rl").make_config()
    assert (cfg.hidden, cfg.inner_lr, cfg.trajectories, cfg.max_kl, cfg.cg_iters) == \
        ((100, 100), 0.1, 20, 0.01, 10)
    assert (cfg.eval_steps, cfg.eval_trajectories, cfg.eval_later_lr) == (3, 40, 0.05)
    alg = make_maml_rl(make_family("navigation_2d"))
    shapes = {k: tuple(v.shape) for k, v in alg.policy.named_parameters()}
    assert shapes == {"log_std": (2,), "body.0.weight": (100, 2), "body.0.bias": (100,),
                      "body.2.weight": (100, 100), "body.2.bias": (100,),
                      "mean.weight": (2, 100), "mean.bias": (2,)}
    with pytest.raises(ConfigError, match="Box"):
        make_maml_rl(make_family("bandit", arms=2, episodes=3))


def _rollouts(alg, fam, tasks, n):
    theta = {k: v.detach() for k, v in alg.policy.named_parameters()}
    stacked = {k: v.expand(len(tasks), *v.shape) for k, v in theta.items()}
    env, _ = vector_env(fam, tasks, n)
    eps = sample_episodes(alg.policy, stacked, env, n, seed=0, stacked=True)
    return theta, stacked, eps, PerTask.of(eps, advantages(eps, 0.99))


def _task_loss(alg, p, ep, adv):
    """Task i's REINFORCE loss with unstacked parameters, written out (a reference)."""
    mean, log_std = mean_log_std(alg.policy, p, ep.observations)  # [T, n, A]
    return -(gaussian_log_prob(mean, log_std, ep.actions) * adv * ep.mask).sum() / ep.mask.sum()


def test_batched_inner_step_equals_per_task_reinforce_steps_by_hand():
    fam = make_family("navigation_2d", horizon=15)
    alg = make_maml_rl(fam, hidden=[8, 8])
    tasks = fam.sample_tasks(3, np.random.default_rng(0))
    theta, stacked, eps, batch = _rollouts(alg, fam, tasks, 4)
    adapted = alg.adapt(stacked, batch, 0.1, differentiable=False)
    for i in range(3):
        p = {k: v.clone().requires_grad_() for k, v in theta.items()}
        ep = eps.task(i)
        adv = batch.advantages[i].view(-1, ep.per_task)  # back to [T, n]
        grads = torch.autograd.grad(_task_loss(alg, p, ep, adv), list(p.values()))
        for (k, v), g in zip(theta.items(), grads, strict=True):
            torch.testing.assert_close(adapted[k][i], v - 0.1 * g, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(adapted["mean.bias"][0], adapted["mean.bias"][1])


def test_meta_gradient_through_the_inner_step_equals_the_hand_unrolled_chain_rule():
    fam = make_family("navigation_2d", horizon=10)
    alg = make_maml_rl(fam, hidden=[6])
    tasks = fam.sample_tasks(2, np.random.default_rng(1))
    theta, _, eps, batch = _rollouts(alg, fam, tasks, 3)
    alpha = 0.5

    def outer_loss(adapted):  # the post-update objective on the same trajectories
        mean, log_std = stacked_mean_log_std(alg.policy, adapted, batch.observations)
        logp = gaussian_log_prob(mean, log_std.unsqueeze(1), batch.actions)
        return surrogate_loss(logp, logp.detach(), batch.advantages, batch.mask)

    def meta_grad(second_order):
        p = {k: v.clone().requires_grad_() for k, v in theta.items()}
        adapted = alg.adapt({k: v.expand(2, *v.shape) for k, v in p.items()}, batch, alpha,
                            differentiable=second_order)
        return torch.autograd.grad(outer_loss(adapted), list(p.values()))

    # by hand: d/dtheta L(theta - alpha g_i(theta)) = sum_i (I - alpha H_i) grad' L, per task
    adapted = alg.adapt({k: v.expand(2, *v.shape) for k, v in theta.items()}, batch, alpha,
                        differentiable=False)
    leaf = {k: v.detach().clone().requires_grad_() for k, v in adapted.items()}
    outer_grads = torch.autograd.grad(outer_loss(leaf), list(leaf.values()))  # [2, ...] each
    expected = [torch.zeros_like(v) for v in theta.values()]
    for i in range(2):
        ep = eps.task(i)
        adv = batch.advantages[i].view(-1, ep.per_task)  # [T, n]
        p = {k: v.clone().requires_grad_() for k, v in theta.items()}
        g = torch.autograd.grad(_task_loss(alg, p, ep, adv), list(p.values()), create_graph=True)
        gv = sum((gj * og[i]).sum() for gj, og in zip(g, outer_grads, strict=True))
        hv = torch.autograd.grad(gv, list(p.values()))
        for j, og in enumerate(outer_grads):
            expected[j] += og[i] - alpha * hv[j]
    for got, want in zip(meta_grad(True), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    first = meta_grad(False)  # first order: the Hessian term is dropped, and it matters here
    for got, og in zip(first, outer_grads, strict=True):
        torch.testing.assert_close(got, og.sum(0), rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(first, expected, strict=True))


def test_evaluate_reports_returns_after_0_to_3_steps():
    fam = make_family("navigation_2d", horizon=8)
    alg = make_maml_rl(fam, hidden=[8], eval_trajectories=3)
    tasks = fam.sample_tasks(5, np.random.default_rng(0))
    out = alg.evaluate(fam, tasks, np.random.default_rng(1))
    assert set(out) == {f"return_after_{k}" for k in range(4)}
    assert all(len(v) == 5 and all(-8 * 1.5 < x <= 0 for x in v) for v in out.values())
    assert out == alg.evaluate(fam, tasks, np.random.default_rng(1))  # the rng decides all
    before = {k: v.clone() for k, v in alg.state_dict().items()}
    metrics = alg.meta_update(fam, tasks[:2], np.random.default_rng(2))
    assert {"return_before", "return_after", "kl", "accepted"} <= set(metrics)
    assert metrics["kl"] <= alg.config.max_kl * (1 + 1e-5)
    changed = any(not torch.equal(before[k], v) for k, v in alg.state_dict().items())
    assert changed == (metrics["accepted"] == 1.0)
    # the paper's "pretrained" baseline: TRPO on the tasks' own trajectories, no inner step
    pre = make_maml_rl(fam, hidden=[8], objective="pretrained")
    m = pre.meta_update(fam, tasks, np.random.default_rng(2))
    assert m["return_before"] == m["return_after"] and m["kl"] <= 0.01 * (1 + 1e-5)


def test_learns_navigation_one_inner_step_helps_after_a_short_run():
    fam = make_family("navigation_2d")
    alg = make_maml_rl(fam, hidden=[32, 32], trajectories=10, eval_trajectories=20,
                       eval_steps=1)
    test = fam.sample_tasks(20, np.random.default_rng(123))

    def gain():
        out = alg.evaluate(fam, test, np.random.default_rng(7))
        d = np.array(out["return_after_1"]) - np.array(out["return_after_0"])
        return np.mean(out["return_after_1"]), d.mean(), d.std() / np.sqrt(len(d))

    after1_init, gain_init, _ = gain()
    rng = np.random.default_rng(0)
    for _ in range(10):
        alg.meta_update(fam, fam.sample_tasks(8, rng), rng)
    after1, gain_trained, stderr = gain()
    assert gain_trained > 3 * stderr and gain_trained > 5.0  # one step helps, clearly
    assert gain_trained > gain_init + 5.0  # and more than it did before meta-training
    assert after1 > after1_init + 30.0  # the adapted policy is much better than at the start
