"""L2-regularised logistic regression by a few Newton (IRLS) steps, batched over tasks.

LR-D2's base learner (Bertinetto, Henriques, Torr and Vedaldi, ICLR 2019, Sec. 3.3 and the
appendix): for each task and each class `j` (one-vs-rest: `c` independent binary problems), from
`w = 0`, `steps` Newton steps on

    L(w) = sum_i [log(1 + exp(x_i . w)) - t_i x_i . w] + lam / 2 ||w||^2

(the negative log-likelihood of targets `t_i` in [0, 1] plus a Gaussian prior). With
`mu = sigmoid(X w)`, `S = diag(mu (1 - mu))` and the working response
`z = X w + S^{-1} (t - mu)`, one Newton step is the weighted ridge solve of iteratively
reweighted least squares (Bishop, *Pattern Recognition and Machine Learning*, Sec. 4.3.3,
with the prior added)

    w <- (X^T S X + lam I_d)^{-1} X^T S z                      (primal, d x d)
       = X^T (X X^T + lam S^{-1})^{-1} z                          (dual, n x n: LR-D2's form).

Every iterate lies in the row space of `X`, `w = X^T a`, and the dual step is computed as
`a <- a - (S K + lam I_n)^{-1} (mu - t + lam a)` with `K = X X^T`: algebraically the LR-D2 update
above, but free of `S^{-1}`, which overflows once a support point is fitted confidently
(`mu (1 - mu)` -> 0). `S K + lam I` is not symmetric but its eigenvalues are those of the
positive semi-definite `S^{1/2} K S^{1/2}` shifted by `lam`, so it is well conditioned for a
moderate `lam` and is solved by LU (`torch.linalg.solve`). The primal step
`w <- w - (X^T S X + lam I)^{-1} (X^T (mu - t) + lam w)` is solved by Cholesky. `form="auto"`
takes the smaller system, as ridge regression does.

Gradients w.r.t. `x`, the targets and `lam` come from backpropagation through the Newton steps.
Newton's method converges quadratically near the optimum; from `w = 0` it needs no line search
on well-posed few-shot problems (a few steps suffice, LR-D2 uses a handful).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metazoo.errors import ConfigError, ShapeError
from metazoo.solvers.ridge import Form, _check_regulariser


def logistic_regression(x: Tensor, y: Tensor, lam: float | Tensor, steps: int,
                        form: Form = "auto") -> Tensor:
    """One-vs-rest L2-regularised logistic regression weights for each task of a batch.

    Args:
        x: inputs (support features) `[B, n, d]`.
        y: binary targets `[B, n]` (one problem) or `[B, n, c]` (`c` one-vs-rest problems, e.g.
            one-hot labels), values in [0, 1]; any floating or integer dtype.
        lam: the L2 regulariser (the prior's precision), > 0: a float or a 0-d tensor.
        steps: Newton iterations from `w = 0`, >= 1.
        form: "dual" solves `n x n` systems, "primal" `d x d` ones; "auto" (default) the primal
            when `d <= n`, else the dual (module docstring).

    Returns:
        `W` `[B, d, c]` (`c = 1` for targets `[B, n]`): logits of query inputs `[B, m, d]` are
        `x_query @ W` (no bias: append a constant feature for one).
    """
    if y.dim() == 2:
        y = y.unsqueeze(-1)
    if x.dim() != 3 or y.dim() != 3 or x.shape[:2] != y.shape[:2]:
        raise ShapeError(f"logistic_regression needs x [B, n, d] and y [B, n] or [B, n, c], "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if form not in ("auto", "primal", "dual"):
        raise ConfigError(f"form must be 'auto', 'primal' or 'dual', got {form!r}")
    if steps < 1:
        raise ConfigError(f"logistic_regression needs steps >= 1, got {steps}")
    _check_regulariser(lam)
    t = y.to(x.dtype).transpose(1, 2)  # [B, c, n]: one row per binary problem
    n, d = x.shape[1], x.shape[2]
    if form == "primal" or (form == "auto" and d <= n):
        return _newton_primal(x, t, lam, steps).transpose(1, 2)
    return x.transpose(1, 2) @ _newton_dual(x, t, lam, steps).transpose(1, 2)


def _newton_dual(x: Tensor, t: Tensor, lam: float | Tensor, steps: int) -> Tensor:
    """Dual coefficients `a` `[B, c, n]` (`w_j = X^T a_j`) after `steps` Newton steps."""
    gram = x @ x.transpose(1, 2)  # [B, n, n]
    eye = torch.eye(gram.shape[-1], dtype=x.dtype, device=x.device)
    a = torch.zeros_like(t)
    for _ in range(steps):
        mu = torch.sigmoid(a @ gram)  # [B, c, n]; gram is symmetric: (K a_j)^T = a_j^T K
        weight = mu * (1 - mu)
        system = weight.unsqueeze(-1) * gram.unsqueeze(1) + lam * eye  # S K + lam I [B, c, n, n]
        grad = (mu - t + lam * a).unsqueeze(-1)  # X^T times this is the primal gradient
        a = a - torch.linalg.solve(system, grad).squeeze(-1)
    return a


def _newton_primal(x: Tensor, t: Tensor, lam: float | Tensor, steps: int) -> Tensor:
    """Weights `w` `[B, c, d]` after `steps` Newton steps."""
    xt = x.transpose(1, 2).unsqueeze(1)  # [B, 1, d, n]
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    w = x.new_zeros(t.shape[0], t.shape[1], x.shape[-1])
    for _ in range(steps):
        mu = torch.sigmoid(w @ x.transpose(1, 2))  # [B, c, n]
        weight = mu * (1 - mu)
        hessian = (xt * weight.unsqueeze(2)) @ x.unsqueeze(1) + lam * eye  # [B, c, d, d]
        grad = (mu - t) @ x + lam * w  # [B, c, d]
        w = w - torch.cholesky_solve(grad.unsqueeze(-1), torch.linalg.cholesky(hessian)).squeeze(-1)
    return w
