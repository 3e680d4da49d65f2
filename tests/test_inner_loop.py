"""sgd_steps: closed forms on a quadratic, learning-rate forms, first/second order, vmap."""

import pytest
import torch

from metazoo.errors import ConfigError
from metazoo.inner_loop import sgd_steps


@pytest.fixture(autouse=True)
def _float64():
    """float64 for this module only (a module-level default would leak into other tests)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _quadratic(a: torch.Tensor, b: torch.Tensor):
    # L(w) = 1/2 w^T A w - b^T w, grad = A w - b, Hessian = A
    return lambda p: 0.5 * p["w"] @ a @ p["w"] - b @ p["w"]


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = m @ m.T / 4 + torch.eye(4)
    return a, torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g)


def test_steps_match_closed_form_and_trajectory():
    a, b, w0 = _problem()
    w, lr = w0.clone(), 0.1
    expected = [w0]
    for _ in range(3):
        w = w - lr * (a @ w - b)
        expected.append(w)
    traj = sgd_steps(_quadratic(a, b), {"w": w0}, steps=3, lr=lr, first_order=False,
                     keep_trajectory=True)
    assert len(traj) == 4
    for got, want in zip(traj, expected, strict=True):
        torch.testing.assert_close(got["w"], want)


def test_per_parameter_and_per_step_learning_rates():
    a, b, w0 = _problem()
    loss = _quadratic(a, b)
    lr_vec = torch.tensor([0.1, 0.2, 0.05, 0.0])  # Meta-SGD: one rate per coordinate
    out = sgd_steps(loss, {"w": w0}, steps=1, lr={"w": lr_vec}, first_order=False)
    torch.testing.assert_close(out["w"], w0 - lr_vec * (a @ w0 - b))
    out = sgd_steps(loss, {"w": w0}, steps=2, lr=[0.1, 0.3], first_order=False)  # MAML++
    w1 = w0 - 0.1 * (a @ w0 - b)
    torch.testing.assert_close(out["w"], w1 - 0.3 * (a @ w1 - b))
    with pytest.raises(ConfigError):
        sgd_steps(loss, {"w": w0}, steps=3, lr=[0.1, 0.3], first_order=False)


def test_second_and_first_order_meta_gradients():
    a, b, w0 = _problem()
    lr = 0.1
    w = w0.clone().requires_grad_()
    for first_order, jac in ((False, torch.eye(4) - lr * a), (True, torch.eye(4))):
        out = sgd_steps(_quadratic(a, b), {"w": w}, steps=1, lr=lr, first_order=first_order)
        (g,) = torch.autograd.grad(0.5 * (out["w"] ** 2).sum(), [w])
        # d/dw0 of 1/2 |w1|^2 = J^T w1, J = I - lr A (second order) or I (first order)
        torch.testing.assert_close(g, jac.T @ out["w"].detach())


def test_learning_rate_receives_gradient():
    a, b, w0 = _problem()
    lr = torch.tensor(0.1, requires_grad=True)
    out = sgd_steps(_quadratic(a, b), {"w": w0}, steps=1, lr=lr, first_order=True)
    (g,) = torch.autograd.grad(0.5 * (out["w"] ** 2).sum(), [lr])
    torch.testing.assert_close(g, -(a @ w0 - b) @ out["w"].detach())


@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_equals_loop(first_order):
    a, _, w0 = _problem()
    bs = torch.randn(3, 4)  # three tasks that differ in b
    w = w0.clone().requires_grad_()

    def meta(bi):
        out = sgd_steps(_quadratic(a, bi), {"w": w}, steps=2, lr=0.1, first_order=first_order)
        return 0.5 * (out["w"] ** 2).sum()

    (g_vmap,) = torch.autograd.grad(torch.vmap(meta)(bs).sum(), [w])
    (g_loop,) = torch.autograd.grad(sum(meta(bi) for bi in bs), [w])
    torch.testing.assert_close(g_vmap, g_loop)


def test_first_order_gradients_are_constants_for_captured_tensors_under_vmap():
    """A loss that captures a differentiable tensor (ANIL's features, CAVIA's network): first
    order treats the inner gradients as constants w.r.t. it too, under vmap as in the loop."""
    a, _, w0 = _problem()
    bs = torch.randn(3, 4)
    scale = torch.tensor(1.5, requires_grad=True)  # captured by the inner loss
    w = w0.clone().requires_grad_()

    def meta(bi):
        loss = _quadratic(a, scale * bi)
        out = sgd_steps(loss, {"w": w}, steps=2, lr=0.1, first_order=True)
        return 0.5 * (out["w"] ** 2).sum()

    _, g_vmap = torch.autograd.grad(torch.vmap(meta)(bs).sum(), [w, scale], allow_unused=True)
    _, g_loop = torch.autograd.grad(sum(meta(bi) for bi in bs), [w, scale], allow_unused=True)
    assert g_loop is None  # the eager loop: no path from scale to the adapted w
    assert g_vmap is None or g_vmap.abs().max() == 0


def test_zero_steps_and_bad_steps():
    a, b, w0 = _problem()
    assert sgd_steps(_quadratic(a, b), {"w": w0}, steps=0, lr=0.1, first_order=False)["w"] is w0
    with pytest.raises(ConfigError):
        sgd_steps(_quadratic(a, b), {"w": w0}, steps=-1, lr=0.1, first_order=False)
