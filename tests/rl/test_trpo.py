"""TRPO's pieces against references: conjugate gradient on a parameter dict vs a linear solve,
the Fisher-vector product vs the Hessian of the KL from `torch.autograd.functional.hessian`
(also through a MAML inner step), and a step that respects its KL bound and lowers the loss."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metazoo.inner_loop import sgd_steps
from metazoo.rl.policies import GaussianMLPPolicy, gaussian_kl, gaussian_log_prob, mean_log_std
from metazoo.rl.policy_gradient import surrogate_loss
from metazoo.rl.trpo import fisher_vector_product, trpo_step
from metazoo.solvers import conjugate_gradient

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: sized for one core


def test_conjugate_gradient_solves_a_small_spd_system_given_as_parameter_dicts():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0], dtype=torch.float64)) @ q.T
    b = torch.randn(5, generator=g, dtype=torch.float64)

    def matvec(v):  # the same A acting on a vector split into two named parts
        y = a @ torch.cat([v["w"].flatten(), v["b"]])
        return {"w": y[:3].view(3, 1), "b": y[3:]}

    x = conjugate_gradient(matvec, {"w": b[:3].view(3, 1), "b": b[3:]}, steps=5, tol=0.0)
    torch.testing.assert_close(torch.cat([x["w"].flatten(), x["b"]]), torch.linalg.solve(a, b))


def _tiny():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(3,), init_std=0.8).double()
    params = {k: v.detach().clone() for k, v in policy.named_parameters()}
    obs = torch.randn(6, 2, dtype=torch.float64)
    return policy, params, obs


def _flat(params):
    return torch.cat([v.flatten() for v in params.values()])


def _unflat(flat, like):
    out, i = {}, 0
    for k, v in like.items():
        out[k] = flat[i:i + v.numel()].view_as(v)
        i += v.numel()
    return out


def _adapted(policy, params, obs, actions, adv):
    """One REINFORCE step of size 0.3 (second order), as MAML-RL's inner loop."""
    def loss(p):
        logp = gaussian_log_prob(*functional_call(policy, p, (obs,)), actions)
        return -(logp * adv).mean()
    return sgd_steps(loss, params, steps=1, lr=0.3, first_order=False)


def test_fisher_vector_product_is_the_hessian_of_the_kl_times_v():
    policy, params, obs = _tiny()
    actions = torch.randn(6, 2, dtype=torch.float64)
    adv = torch.randn(6, dtype=torch.float64)
    v = torch.randn(_flat(params).numel(), dtype=torch.float64)
    for through_inner_step in (False, True):
        def post(p, inner=through_inner_step):
            return _adapted(policy, p, obs, actions, adv) if inner else p

        old = [t.detach() for t in mean_log_std(policy, post(params), obs)]

        def kl_of(flat, post=post, old=old):
            mean, log_std = mean_log_std(policy, post(_unflat(flat, params)), obs)
            return gaussian_kl(old[0], old[1], mean, log_std).mean()

        x0 = _flat(params)
        hessian = torch.autograd.functional.hessian(kl_of, x0)
        leaves = {k: t.clone().requires_grad_() for k, t in params.items()}
        kl = kl_of(torch.cat([t.flatten() for t in leaves.values()]))
        fvp = fisher_vector_product(kl, leaves, damping=0.0)(_unflat(v, params))
        torch.testing.assert_close(_flat(fvp), hessian @ v, rtol=1e-7, atol=1e-9)
        assert float(_flat(fvp).norm()) > 1e-3  # not trivially zero
        damped = fisher_vector_product(kl, leaves, damping=0.1)(_unflat(v, params))
        torch.testing.assert_close(_flat(damped), hessian @ v + 0.1 * v)
        # at the old parameters the KL Hessian is the Fisher: symmetric positive semi-definite
        assert float(torch.linalg.eigvalsh(hessian).min()) > -1e-9


def test_gaussian_kl_and_log_prob_match_torch_distributions():
    g = torch.Generator().manual_seed(3)
    m0, m1, s0, s1, a = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(5))
    n0, n1 = torch.distributions.Normal(m0, s0.exp()), torch.distributions.Normal(m1, s1.exp())
    torch.testing.assert_close(gaussian_kl(m0, s0, m1, s1),
                               torch.distributions.kl_divergence(n0, n1).sum(-1))
    torch.testing.assert_close(gaussian_log_prob(m0, s0, a), n0.log_prob(a).sum(-1))


def _surrogate_problem():
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(3, 2, hidden=(8, 8))
    obs = torch.randn(200, 3)
    with torch.no_grad():
        mean0, log_std0 = policy(obs)
        actions = mean0 + torch.exp(log_std0) * torch.randn(200, 2)
    adv = actions.sum(-1) - obs[:, 0]  # better actions: large action sums
    mask = torch.ones(200)

    def surrogate(params, differentiable):
        with torch.set_grad_enabled(differentiable):
            mean, log_std = mean_log_std(policy, params, obs)
            logp = gaussian_log_prob(mean, log_std, actions)
            logp0 = gaussian_log_prob(mean0, log_std0, actions)
            kl = gaussian_kl(mean0, log_std0, mean, log_std).mean()
            return surrogate_loss(logp, logp0, adv, mask), kl
    return policy, surrogate


def test_trpo_step_keeps_the_kl_within_its_bound_and_lowers_the_surrogate():
    policy, surrogate = _surrogate_problem()
    params = dict(policy.named_parameters())
    for max_kl in (0.01, 0.001):
        new, stats = trpo_step(params, surrogate, max_kl=max_kl)
        loss0, _ = surrogate({k: v.detach() for k, v in params.items()}, False)
        loss1, kl1 = surrogate(new, False)
        assert stats["accepted"] == 1.0
        assert float(kl1) <= max_kl * (1 + 1e-5)
        # the full step reaches the KL bound in the quadratic model: the exact KL is near it
        assert float(kl1) > 0.6 * max_kl
        assert float(loss1) < float(loss0) - 1e-4
        assert abs(stats["kl"] - float(kl1)) < 1e-7
        assert abs(stats["loss_after"] - float(loss1)) < 1e-6


def test_trpo_step_rejects_a_step_that_does_not_lower_the_loss():
    policy, surrogate = _surrogate_problem()
    params = dict(policy.named_parameters())

    def flat_loss(p, differentiable):  # a loss with zero gradient: nothing can improve it
        loss, kl = surrogate(p, differentiable)
        return 0.0 * loss + 1.0, kl

    new, stats = trpo_step(params, flat_loss, max_kl=0.01)
    assert stats["accepted"] == 0.0
    assert all(torch.equal(new[k], v.detach()) for k, v in params.items())
