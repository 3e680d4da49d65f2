"""MetaOptNet's Crammer-Singer SVM dual: the KKT conditions at the solution, agreement with a
general convex solver (cvxpy, dev-only), the implicit gradient against finite differences
(gradcheck in float64), and batched against one task at a time."""

import pytest
import torch
import torch.nn.functional as F

from metazoo.errors import ConfigError, ShapeError
from metazoo.solvers import svm_dual, svm_logits
from metazoo.solvers.svm import _interior_point
from tests.solvers import single_thread  # noqa: F401  (autouse fixture)

DT = torch.float64
RIDGE = 1e-5  # svm_dual's default


def _episode(b: int, ways: int, shots: int, dim: int, seed: int = 0, dtype: torch.dtype = DT):
    """Features with a class-dependent mean (so some points are margin errors, some not) and
    shuffled labels."""
    g = torch.Generator().manual_seed(seed)
    n = ways * shots
    y = torch.stack([torch.randperm(n, generator=g) % ways for _ in range(b)])
    means = torch.randn(b, ways, dim, generator=g, dtype=dtype)
    x = torch.randn(b, n, dim, generator=g, dtype=dtype) + torch.gather(
        means, 1, y[..., None].expand(b, n, dim))
    return x, y


def _qp_data(kernel, y, ways, c):
    onehot = F.one_hot(y, ways).to(kernel.dtype).transpose(1, 2)
    return kernel + RIDGE * torch.eye(kernel.shape[1], dtype=kernel.dtype), -onehot, c * onehot


def test_solution_satisfies_the_kkt_conditions():
    x, y = _episode(4, 5, 3, 16)
    kmat, p, h = _qp_data(x @ x.transpose(1, 2), y, 5, 0.1)
    z, s, lam = _interior_point(kmat, p, h, iters=30, tol=1e-24)
    assert torch.allclose(svm_dual(x @ x.transpose(1, 2), y, 5, 0.1, iters=30).transpose(1, 2), z)
    assert (z <= h + 1e-12).all()  # primal feasibility: alpha_i^m <= C [m = y_i]
    assert z.sum(1).abs().max() < 1e-12  # sum_m alpha_i^m = 0
    torch.testing.assert_close(s, h - z, rtol=0, atol=1e-12)
    assert (lam >= 0).all() and (lam * s).abs().max() < 1e-12  # complementary slackness
    # stationarity: K alpha_m + p_m + lambda_m + nu = 0 for one nu shared by all classes m
    nu = -(z @ kmat + p + lam)
    assert (nu - nu.mean(1, keepdim=True)).abs().max() < 1e-10
    # both kinds of constraint occur (otherwise the test would not test much)
    active = s < 1e-8
    assert active.any() and (~active).any()


def test_equals_cvxpy():
    cp = pytest.importorskip("cvxpy", reason="cvxpy (a dev-only dependency) is not installed")
    import numpy as np

    ways, shots, c = 4, 3, 0.3
    x, y = _episode(3, ways, shots, 10, seed=1)
    kernel = x @ x.transpose(1, 2)
    alpha = svm_dual(kernel, y, ways, c, iters=30)
    for b in range(3):
        k = kernel[b].numpy() + RIDGE * np.eye(ways * shots)
        onehot = np.eye(ways)[y[b].numpy()]
        var = cp.Variable((ways * shots, ways))
        objective = 0.5 * cp.sum_squares(np.linalg.cholesky(k).T @ var) - cp.sum(
            cp.multiply(onehot, var))
        problem = cp.Problem(cp.Minimize(objective),
                             [var <= c * onehot, cp.sum(var, axis=1) == 0])
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        assert problem.status == "optimal"
        np.testing.assert_allclose(alpha[b].numpy(), var.value, rtol=0, atol=1e-8)


def test_batched_equals_one_by_one():
    x, y = _episode(5, 5, 2, 12, seed=2)
    kernel = x @ x.transpose(1, 2)
    batched = svm_dual(kernel, y, 5, iters=6)  # few iterations: not converged, still equal
    single = torch.cat([svm_dual(kernel[i:i + 1], y[i:i + 1], 5, iters=6) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-10, atol=1e-12)


def test_logits_are_the_weights_applied_to_the_query():
    x, y = _episode(2, 3, 4, 8, seed=3)
    query = torch.randn(2, 7, 8, dtype=DT)
    alpha = svm_dual(x @ x.transpose(1, 2), y, 3, c=1.0, iters=25)
    weights = x.transpose(1, 2) @ alpha  # w_m = sum_i alpha_i^m x_i, [B, d, N]
    logits = svm_logits(query @ x.transpose(1, 2), alpha)
    torch.testing.assert_close(logits, query @ weights)
    # well-separated support points (class means added) are classified correctly
    support_logits = svm_logits(x @ x.transpose(1, 2), alpha)
    assert (support_logits.argmax(-1) == y).float().mean() == 1.0


def test_float32_agrees_with_float64():
    x, y = _episode(3, 5, 5, 64, seed=4)
    kernel = x @ x.transpose(1, 2)
    a32 = svm_dual(kernel.float(), y, 5, iters=20)
    assert a32.dtype == torch.float32
    torch.testing.assert_close(a32.double(), svm_dual(kernel, y, 5, iters=20), rtol=0, atol=1e-5)


def test_implicit_gradient_matches_finite_differences():
    """gradcheck w.r.t. the kernel and C, and w.r.t. features through K = X X^T: the backward
    is one solve of the linearised KKT system, finite differences re-run the solver (converged,
    float64)."""
    x, y = _episode(2, 3, 2, 8, seed=5)
    kernel = (x @ x.transpose(1, 2)).requires_grad_()
    c = torch.tensor(0.2, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k, cc: svm_dual(k, y, 3, cc, iters=40),
                                    (kernel, c), eps=1e-6, atol=1e-6, rtol=1e-4)
    feats = x.clone().requires_grad_()  # logits of three "queries" (support rows)
    assert torch.autograd.gradcheck(
        lambda f: svm_logits(f[:, :3] @ f.transpose(1, 2),
                             svm_dual(f @ f.transpose(1, 2), y, 3, 0.2, iters=40)),
        (feats,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_backward_does_not_go_through_the_iterations():
    x, y = _episode(1, 3, 2, 8, seed=6)
    kernel = (x @ x.transpose(1, 2)).requires_grad_()
    alpha = svm_dual(kernel, y, 3, iters=3)
    assert "CrammerSingerQP" in type(alpha.grad_fn.next_functions[0][0]).__name__
    alpha.sum().backward()
    assert kernel.grad is not None and torch.isfinite(kernel.grad).all()


@pytest.mark.parametrize("kwargs,error,match", [
    ({"iters": 0}, ConfigError, "iters"),
    ({"ways": 1}, ConfigError, "ways"),
    ({"c": 0.0}, ConfigError, "c must"),
    ({"ridge": -1.0}, ConfigError, "ridge"),
    ({"y": torch.zeros(2, 4)}, ShapeError, "int64"),
    ({"kernel": torch.zeros(2, 4, 3)}, ShapeError, "kernel"),
])
def test_bad_arguments_raise(kwargs, error, match):
    args = {"kernel": torch.eye(4).expand(2, 4, 4), "y": torch.zeros(2, 4, dtype=torch.int64),
            "ways": 2, **kwargs}
    with pytest.raises(error, match=match):
        svm_dual(**args)
