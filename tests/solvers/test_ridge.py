"""Ridge regression: primal and dual forms against each other and against a least-squares solve
of the augmented system `[X; sqrt(lam) I] W = [Y; 0]`; gradients by gradcheck in float64."""

import math

import pytest
import torch

from metazoo.errors import ConfigError, ShapeError
from metazoo.solvers import ridge_regression
from tests.solvers import single_thread  # noqa: F401  (autouse fixture)

DT = torch.float64


def _data(b: int, n: int, d: int, c: int, seed: int = 0, dtype: torch.dtype = DT):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g, dtype=dtype),
            torch.randn(b, n, c, generator=g, dtype=dtype))


def _augmented_lstsq(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin ||X W - Y||^2 + lam ||W||^2 as the plain least squares of a taller system."""
    b, _, d = x.shape
    eye = math.sqrt(lam) * torch.eye(d, dtype=x.dtype).expand(b, d, d)
    zeros = torch.zeros(b, d, y.shape[-1], dtype=x.dtype)
    return torch.linalg.lstsq(torch.cat([x, eye], 1), torch.cat([y, zeros], 1)).solution


@pytest.mark.parametrize("n,d", [(5, 12), (12, 5), (6, 6)])
def test_primal_dual_and_lstsq_agree(n, d):
    x, y = _data(3, n, d, 4)
    lam = 0.7
    primal = ridge_regression(x, y, lam, form="primal")
    dual = ridge_regression(x, y, lam, form="dual")
    assert primal.shape == (3, d, 4)
    ref = _augmented_lstsq(x, y, lam)
    torch.testing.assert_close(primal, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dual, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ridge_regression(x, y, lam), ref, rtol=1e-10, atol=1e-10)


def test_float32_and_tensor_regulariser():
    x, y = _data(2, 5, 30, 3, dtype=torch.float32)
    lam = torch.tensor(0.5, requires_grad=True)
    w = ridge_regression(x, y, lam)
    assert w.dtype == torch.float32
    ref = _augmented_lstsq(x.double(), y.double(), 0.5)
    torch.testing.assert_close(w.double(), ref, rtol=1e-4, atol=1e-5)
    w.square().sum().backward()
    assert lam.grad is not None and torch.isfinite(lam.grad)


@pytest.mark.parametrize("form", ["primal", "dual"])
def test_gradcheck(form):
    x, y = _data(2, 4, 6, 3, seed=1)
    lam = torch.tensor(0.3, dtype=DT)
    inputs = tuple(t.clone().requires_grad_() for t in (x, y, lam))
    assert torch.autograd.gradcheck(lambda a, b, c: ridge_regression(a, b, c, form=form), inputs)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"lam": 0.0}, ConfigError, "lam"),
    ({"lam": torch.ones(2)}, ConfigError, "0-d"),
    ({"lam": 1.0, "form": "qr"}, ConfigError, "form"),
    ({"lam": 1.0, "y": torch.zeros(2, 3, 1)}, ShapeError, "y"),
])
def test_bad_arguments_raise(kwargs, error, match):
    args = {"x": torch.zeros(2, 4, 3), "y": torch.zeros(2, 4, 1), **kwargs}
    with pytest.raises(error, match=match):
        ridge_regression(**args)
