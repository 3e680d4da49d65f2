"""Solvers against references: conjugate gradient vs torch.linalg.solve (float64)."""

import pytest
import torch

from metazoo.errors import ConfigError
from metazoo.solvers import conjugate_gradient

DT = torch.float64


def _spd(n: int, seed: int = 0, cond: float = 10.0) -> torch.Tensor:
    """A random symmetric positive definite matrix with eigenvalues spread over [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    return q @ torch.diag(torch.linspace(1.0, cond, n, dtype=DT)) @ q.T


def test_converges_in_n_steps_to_the_linear_solve():
    n = 12
    a = _spd(n)
    b = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=DT)
    x = conjugate_gradient(lambda v: a @ v, b, steps=n, tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-10, atol=1e-12)


def test_fewer_steps_are_not_converged_and_the_error_shrinks():
    n = 12
    a = _spd(n, cond=100.0)
    b = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=DT)
    ref = torch.linalg.solve(a, b)
    errors = [float((conjugate_gradient(lambda v: a @ v, b, steps=k) - ref).norm())
              for k in (1, 3, 6, n)]
    assert errors[0] > 1e-2 * float(ref.norm())  # a check that can fail: 1 step is not enough
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-9


def test_dict_of_tensors_equals_the_flat_solve():
    shapes = {"w": (3, 2), "b": (2,), "c": (1,)}
    n = sum(torch.Size(s).numel() for s in shapes.values())
    a = _spd(n, seed=2)
    flat_b = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=DT)

    def unflatten(v: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(shapes, (t.reshape(s) for t, s in zip(
            v.split([torch.Size(s).numel() for s in shapes.values()]), shapes.values(),
            strict=True)), strict=True))

    def matvec(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return unflatten(a @ torch.cat([t.flatten() for t in d.values()]))

    x = conjugate_gradient(matvec, unflatten(flat_b), steps=n, tol=0.0)
    assert x.keys() == shapes.keys() and all(x[k].shape == shapes[k] for k in shapes)
    flat_x = torch.cat([x[k].flatten() for k in shapes])
    torch.testing.assert_close(flat_x, torch.linalg.solve(a, flat_b), rtol=1e-10, atol=1e-12)


def test_tolerance_stops_early_and_zero_rhs_gives_zero():
    a = _spd(8)
    calls = []

    def matvec(v):
        calls.append(1)
        return a @ v

    x = conjugate_gradient(matvec, torch.zeros(8, dtype=DT), steps=5)
    assert torch.equal(x, torch.zeros(8, dtype=DT)) and not calls
    b = torch.ones(8, dtype=DT)
    conjugate_gradient(matvec, b, steps=50, tol=1e-8)
    assert 0 < len(calls) <= 8  # stopped once converged, not after 50 products


def test_is_differentiable_through_its_inputs():
    """d x / d b = A^{-1}: the solver is built from tensor ops, so autograd sees through it."""
    n = 5
    a = _spd(n, seed=4)
    b = torch.randn(n, generator=torch.Generator().manual_seed(5), dtype=DT, requires_grad=True)
    x = conjugate_gradient(lambda v: a @ v, b, steps=n, tol=0.0)
    (grad,) = torch.autograd.grad(x.sum(), b)
    torch.testing.assert_close(grad, torch.linalg.solve(a, torch.ones(n, dtype=DT)))


def test_stops_at_non_positive_curvature():
    """Indefinite A: the first direction with p^T A p <= 0 ends the iterations (Newton-CG):
    `b` if it is the first one, else the iterate so far, never a step along that direction."""
    a = torch.diag(torch.tensor([2.0, 1.0, -1.0], dtype=DT))
    b = torch.ones(3, dtype=DT)
    # by hand: p1 = b, p1^T A p1 = 2, x1 = 1.5 b; r1 = (-2, -0.5, 2.5), p2 = r1 + 3.5 b =
    # (1.5, 3, 6) with p2^T A p2 = -22.5: stop at x1 (plain CG would go on to a saddle point)
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, steps=3), 1.5 * b)
    neg = torch.tensor([0.0, 0.0, 1.0], dtype=DT)  # b^T A b < 0 at once: b itself
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, neg, steps=3), neg)


@pytest.mark.parametrize("steps,tol", [(0, 1e-10), (-2, 1e-10), (3, -1.0)])
def test_bad_arguments_raise(steps, tol):
    with pytest.raises(ConfigError, match="steps" if steps < 1 else "tol"):
        conjugate_gradient(lambda v: v, torch.ones(3), steps=steps, tol=tol)
