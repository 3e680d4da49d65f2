"""Meta-gradients against central finite differences of an independent unrolled training."""

import pytest
import torch
import torch.nn.functional as F

from metazoo.graph.metagrad import approx_meta_gradient, meta_gradient

N, D, K = 7, 4, 2


def _problem():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(N, N, generator=g) < 0.45).double().triu(1)
    a = a + a.T
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=g)
    theta0 = {"w0": torch.randn(D, 5, generator=g, dtype=torch.float64) * 0.5,
              "w1": torch.randn(5, K, generator=g, dtype=torch.float64) * 0.5}
    return a, x, y, theta0, torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5, 6])


def _logits(a, x, w0, w1):
    a1 = a + torch.eye(N, dtype=a.dtype)
    d = a1.sum(1) ** -0.5
    a_hat = d[:, None] * a1 * d[None, :]
    return a_hat @ a_hat @ x @ w0 @ w1  # the linearised surrogate, no biases


def _attack_loss_after_training(a, x, y, theta0, lab, atk, steps, lr, mom):
    w0, w1 = theta0["w0"].clone(), theta0["w1"].clone()
    v0, v1 = torch.zeros_like(w0), torch.zeros_like(w1)
    for _ in range(steps):
        w0.requires_grad_(True)
        w1.requires_grad_(True)
        loss = F.cross_entropy(_logits(a, x, w0, w1)[lab], y[lab])
        g0, g1 = torch.autograd.grad(loss, [w0, w1])
        v0, v1 = mom * v0 + g0, mom * v1 + g1
        w0, w1 = (w0 - lr * v0).detach(), (w1 - lr * v1).detach()
    return F.cross_entropy(_logits(a, x, w0, w1)[atk], y[atk])


def _finite_difference(fn, a, u, v, eps=1e-6):
    e = torch.zeros_like(a)
    e[u, v] = e[v, u] = 1.0
    return (fn(a + eps * e) - fn(a - eps * e)) / (2 * eps)


@pytest.mark.parametrize("steps", [1, 4])
def test_meta_gradient_equals_finite_differences(steps):
    a, x, y, theta0, lab, unl = _problem()
    grad = meta_gradient(a, x, y, lab, unl, theta0, steps=steps, lr=0.1, momentum=0.9)
    assert torch.equal(grad, grad.T) and not grad.diagonal().any()

    def loss(adj):
        return _attack_loss_after_training(adj, x, y, theta0, lab, unl, steps, 0.1, 0.9)

    pairs = [(0, 1), (0, 5), (2, 6), (3, 4), (1, 6)]
    fd = torch.stack([_finite_difference(loss, a, u, v) for u, v in pairs])
    mine = torch.stack([grad[u, v] for u, v in pairs])
    assert fd.abs().max() > 1e-4  # the pairs do move the loss
    assert torch.allclose(mine, fd, rtol=1e-5, atol=1e-8), (mine, fd)
    if steps > 1:  # the training path matters: differs from the gradient at θ0
        at_theta0 = meta_gradient(a, x, y, lab, unl, theta0, steps=0, lr=0.1, momentum=0.9)
        assert not torch.allclose(grad, at_theta0, atol=1e-4)


def test_approx_meta_gradient_of_one_step_is_the_gradient_at_theta0():
    a, x, y, theta0, lab, unl = _problem()
    for lam in (0.0, 1.0):
        grad = approx_meta_gradient(a, x, y, lab, unl, theta0, steps=1, lr=0.01, lam=lam)

        def loss(adj, lam=lam):
            z = _logits(adj, x, theta0["w0"], theta0["w1"])
            return lam * F.cross_entropy(z[lab], y[lab]) + (1 - lam) * F.cross_entropy(z[unl],
                                                                                      y[unl])

        for u, v in [(0, 1), (2, 6), (3, 5)]:
            assert torch.allclose(grad[u, v], _finite_difference(loss, a, u, v), rtol=1e-5)


def test_approx_meta_gradient_sums_along_the_trajectory():
    a, x, y, theta0, lab, unl = _problem()
    one = approx_meta_gradient(a, x, y, lab, unl, theta0, steps=1, lr=0.01, lam=0.0)
    two = approx_meta_gradient(a, x, y, lab, unl, theta0, steps=2, lr=0.01, lam=0.0)
    w0, w1 = (theta0[k].clone().requires_grad_(True) for k in ("w0", "w1"))
    opt = torch.optim.Adam([w0, w1], lr=0.01)  # the first step of the trajectory, by hand
    F.cross_entropy(_logits(a, x, w0, w1)[lab], y[lab]).backward()
    opt.step()
    ad = a.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(_logits(ad, x, w0.detach(), w1.detach())[unl],
                                               y[unl]), ad)
    second = (g + g.T).fill_diagonal_(0)
    assert torch.allclose(two, one + second, atol=1e-10)
