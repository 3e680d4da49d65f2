"""Logistic regression by Newton steps against an independent reference: L-BFGS (strong Wolfe
line search) on the regularised negative log-likelihood in float64, one problem at a time."""

import pytest
import torch
import torch.nn.functional as F

from metazoo.errors import ConfigError, ShapeError
from metazoo.solvers import logistic_regression
from tests.solvers import single_thread  # noqa: F401  (autouse fixture)

DT = torch.float64


def _data(b: int, n: int, d: int, c: int, seed: int = 0):
    """Overlapping classes (noisy labels), so the optimum is finite and interior."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=DT)
    truth = torch.randn(b, d, c, generator=g, dtype=DT)
    logits = x @ truth + 0.8 * torch.randn(b, n, c, generator=g, dtype=DT)
    return x, (logits > 0).to(DT)


def _objective(w: torch.Tensor, x: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    """sum_i softplus(x_i . w) - t_i x_i . w + lam / 2 ||w||^2 for one binary problem."""
    f = x @ w
    return (F.softplus(f) - t * f).sum() + 0.5 * lam * w.square().sum()


def _lbfgs(x: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    w = torch.zeros(x.shape[1], dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=500, tolerance_grad=1e-13,
                            tolerance_change=1e-16, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _objective(w, x, t, lam)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _reference(x: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    return torch.stack([torch.stack([_lbfgs(x[b], t[b, :, j], lam) for j in range(t.shape[2])], 1)
                        for b in range(x.shape[0])])


@pytest.mark.parametrize("n,d,form", [(10, 16, "dual"), (24, 5, "primal"), (10, 16, "primal"),
                                      (24, 5, "dual")])
def test_converges_to_the_lbfgs_optimum(n, d, form):
    x, t = _data(2, n, d, 3)
    lam = 0.5
    ref = _reference(x, t, lam)
    w = logistic_regression(x, t, lam, steps=12, form=form)
    assert w.shape == (2, d, 3)
    torch.testing.assert_close(w, ref, rtol=0, atol=1e-6)
    # the gradient of the objective vanishes at the result
    for b in range(2):
        for j in range(3):
            wj = w[b, :, j].clone().requires_grad_()
            (grad,) = torch.autograd.grad(_objective(wj, x[b], t[b, :, j], lam), wj)
            assert grad.abs().max() < 1e-9


def test_newton_converges_fast_from_zero():
    x, t = _data(1, 8, 20, 1, seed=3)
    ref = _reference(x, t, 1.0)
    errors = [float((logistic_regression(x, t[..., 0], 1.0, steps=k) - ref).abs().max())
              for k in (1, 2, 3, 4)]  # (the reference itself is good to ~1e-9 here)
    assert errors[0] > 1e-2 and errors[-1] < 1e-6
    assert errors == sorted(errors, reverse=True)
    assert errors[3] < errors[2] ** 1.5  # faster than linear convergence near the optimum


def test_float32_and_integer_targets():
    x, t = _data(2, 6, 12, 2, seed=4)
    w32 = logistic_regression(x.float(), t.long(), torch.tensor(0.5), steps=8)
    assert w32.dtype == torch.float32
    torch.testing.assert_close(w32.double(), logistic_regression(x, t, 0.5, steps=8),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", ["primal", "dual"])
def test_gradcheck(form):
    x, t = _data(2, 5, 4, 2, seed=5)
    soft = 0.1 + 0.8 * t  # soft targets in (0, 1): differentiable w.r.t. them too
    lam = torch.tensor(0.4, dtype=DT)
    inputs = tuple(v.clone().requires_grad_() for v in (x, soft, lam))
    assert torch.autograd.gradcheck(
        lambda a, b, c: logistic_regression(a, b, c, steps=3, form=form), inputs)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"steps": 0}, ConfigError, "steps"),
    ({"lam": -1.0}, ConfigError, "lam"),
    ({"form": "both"}, ConfigError, "form"),
    ({"y": torch.zeros(2, 3)}, ShapeError, "y"),
])
def test_bad_arguments_raise(kwargs, error, match):
    args = {"x": torch.zeros(2, 4, 3), "y": torch.zeros(2, 4), "lam": 1.0, "steps": 2, **kwargs}
    with pytest.raises(error, match=match):
        logistic_regression(**args)
