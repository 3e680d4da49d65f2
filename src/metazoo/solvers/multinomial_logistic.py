"""Multinomial (softmax) logistic regression with an L2 penalty, by Newton steps, for one task.

RFS's base learner (Tian et al., ECCV 2020; its code calls scikit-learn's `LogisticRegression`
with the defaults: multinomial loss, L2 penalty, C = 1, an intercept that is not penalised):

    min_{W, b}  sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 C)       W [N, D], b [N]

The optimal W lies in the row space of the support features: setting the gradient to zero gives
W = C (Y - P)^T X. So with the thin SVD X = U S V^T (rank r <= min(n, D)) the problem is the same
one on the coordinates X V = U S (`[n, r]`) with W = W' V^T and ||W|| = ||W'||: a system of
N (r + 1) unknowns whatever D is (130 for 5-way 5-shot, where D = 16000 would give 80005).
Newton's method from zero on (W', b): gradient (P - Y)^T [XV, 1] + W'/C, Hessian
sum_i (diag p_i - p_i p_i^T) (x) phi_i phi_i^T + I/C on W'. Adding a constant to every b_k leaves
the softmax unchanged, a flat direction of the Hessian; a rank-one term along it makes the system
definite without changing the step (the gradient is orthogonal to it, so b keeps sum 0, as
L-BFGS from zero keeps it). Each step tries the step lengths 1, 1/2, ..., 1/128 and 0 and keeps
the longest whose objective is the lowest up to rounding: a backtracking search without
data-dependent control flow (the solver runs under `torch.vmap`), no step increases the objective
beyond rounding, and the full Newton steps at the end converge to machine precision. It is not
meant to be differentiated (the SVD's gradient is undefined at repeated singular values): pass
constants.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metazoo.errors import ConfigError, ShapeError

TRIALS = 8  # step lengths 2^0 .. 2^-7 (and 0)


def logistic_objective(theta: Tensor, phi: Tensor, targets: Tensor, penalty: Tensor) -> Tensor:
    """The objective at parameters `theta` `[..., N, r+1]` (W' and b as the last column), for
    inputs with a constant column `phi` `[n, r+1]` and one-hot `targets` `[n, N]` -> `[...]`."""
    z = phi @ theta.transpose(-1, -2)  # [..., n, N]
    ce = (torch.logsumexp(z, -1) - (z * targets).sum(-1)).sum(-1)
    return ce + 0.5 * (theta.square() * penalty).sum((-1, -2))


def multinomial_logistic(x: Tensor, y: Tensor, ways: int, *, c: float = 1.0, steps: int = 10
                         ) -> tuple[Tensor, Tensor]:
    """Weights `[N, D]` and intercepts `[N]` of the penalised softmax regression of one task.

    Args:
        x: features `[n, D]` (constants).
        y: labels `[n]` in `0..ways-1`.
        ways: N, the number of classes.
        c: the inverse penalty strength C (scikit-learn's meaning), > 0.
        steps: Newton steps from zero, >= 1.

    Returns:
        `(W, b)`: logits of features `z` are `z @ W.T + b`.
    """
    if x.dim() != 2 or y.shape != x.shape[:1]:
        raise ShapeError(f"multinomial_logistic needs x [n, D] and y [n], got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if not c > 0 or steps < 1:
        raise ConfigError(f"multinomial_logistic needs c > 0 and steps >= 1, got {c} and {steps}")
    u, s, vh = torch.linalg.svd(x, full_matrices=False)  # [n, r], [r], [r, D]
    ones = x.new_ones(x.shape[0], 1)
    phi = torch.cat([u * s, ones], 1)  # [n, r+1]: row-space coordinates and the intercept's 1
    width = phi.shape[1]
    targets = (y[:, None] == torch.arange(ways, device=y.device)).to(x.dtype)  # [n, N]
    penalty = torch.cat([x.new_full((width - 1,), 1.0 / c), x.new_zeros(1)])  # [r+1]
    size = ways * width
    last = (torch.arange(width, device=x.device) == width - 1).to(x.dtype)  # [r+1]
    flat = (x.new_full((ways, ways), 1.0 / ways)[:, None, :, None]
            * (last[:, None] * last[None, :])[None, :, None, :])  # [N, r+1, N, r+1]
    fixed = torch.diag_embed(penalty.repeat(ways)) + flat.reshape(size, size)
    lengths = torch.cat([2.0 ** -torch.arange(TRIALS, dtype=x.dtype, device=x.device),
                         x.new_zeros(1)])  # [T]
    theta = x.new_zeros(ways, width)  # [N, r+1]: W' and b
    slack = 64 * torch.finfo(x.dtype).eps
    for _ in range(steps):
        p = torch.softmax(phi @ theta.T, -1)  # [n, N]
        grad = (p - targets).T @ phi + theta * penalty  # [N, r+1]
        curv = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # [n, N, N]
        hess = torch.einsum("ikl,ia,ic->kalc", curv, phi, phi).reshape(size, size) + fixed
        step = torch.linalg.solve(hess, grad.reshape(size, 1)).reshape(ways, width)
        trials = theta - lengths[:, None, None] * step  # [T, N, r+1]
        values = logistic_objective(trials, phi, targets, penalty).nan_to_num(torch.inf)
        # the longest step within rounding of the best: near the optimum the values tie, and
        # the full Newton step keeps converging where the smallest value would be noise
        best = values.min()
        near = values <= best + slack * (1 + best.abs())
        pick = (torch.arange(lengths.shape[0], device=x.device) == near.int().argmax()
                ).to(x.dtype)
        theta = torch.einsum("t,tkc->kc", pick, trials)
    return theta[:, :-1] @ vh, theta[:, -1]
