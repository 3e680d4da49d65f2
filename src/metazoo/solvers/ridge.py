"""Ridge regression in closed form, batched over tasks, in its primal or dual (Woodbury) form.

For each task `b`, `W = argmin_W ||X W - Y||_F^2 + lam ||W||_F^2` (R2-D2, Bertinetto, Henriques,
Torr and Vedaldi, ICLR 2019, Eq. 4):

* primal (Eq. 4): `W = (X^T X + lam I_d)^{-1} X^T Y`, a `d x d` system;
* dual (Eq. 5, by the Woodbury identity): `W = X^T (X X^T + lam I_n)^{-1} Y`, an `n x n` system.

Both are the same matrix; the dual is what makes few-shot learning cheap, where the support set
has far fewer examples `n` than features `d`. `form="auto"` picks the smaller system. Both
systems are symmetric positive definite for `lam > 0` and are solved by Cholesky factorisation
(`torch.linalg.cholesky` and `torch.cholesky_solve`), never an explicit inverse. Every operation
has an autograd formula, so `W` is differentiable w.r.t. `x`, `y` and a learnable `lam`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from metazoo.errors import ConfigError, ShapeError

Form = Literal["auto", "primal", "dual"]


def _check_regulariser(lam: float | Tensor, name: str = "lam") -> None:
    """Raise `ConfigError` for a float regulariser <= 0 or a tensor one that is not 0-d.

    A tensor's value is not read (that would synchronise with the device): keeping a learnable
    one positive (e.g. `exp` of a parameter) is the caller's job.
    """
    if isinstance(lam, Tensor):
        if lam.dim() != 0:
            raise ConfigError(f"{name} must be a float or a 0-d tensor, got shape "
                              f"{tuple(lam.shape)}")
    elif not lam > 0:
        raise ConfigError(f"{name} must be > 0, got {lam}")


def _eye_plus(gram: Tensor, lam: float | Tensor) -> Tensor:
    """`gram + lam I` for a batch of square matrices `[B, k, k]`."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return gram + lam * eye


def ridge_regression(x: Tensor, y: Tensor, lam: float | Tensor, form: Form = "auto") -> Tensor:
    """Ridge regression weights for each task of a batch.

    Args:
        x: inputs (support features) `[B, n, d]`.
        y: targets `[B, n, c]` (e.g. one-hot labels for R2-D2's classifier).
        lam: the L2 regulariser, > 0: a float or a 0-d tensor (a learnable one gets a gradient).
        form: "primal" solves the `d x d` system `(X^T X + lam I) W = X^T Y`, "dual" the `n x n`
            system `(X X^T + lam I) A = Y` and returns `W = X^T A`; "auto" (default) takes the
            primal when `d <= n`, the dual when `n < d`.

    Returns:
        `W` `[B, d, c]`, so that predictions for query inputs `[B, m, d]` are `x_query @ W`.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[:2] != y.shape[:2]:
        raise ShapeError(f"ridge_regression needs x [B, n, d] and y [B, n, c], got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if form not in ("auto", "primal", "dual"):
        raise ConfigError(f"form must be 'auto', 'primal' or 'dual', got {form!r}")
    _check_regulariser(lam)
    n, d = x.shape[1], x.shape[2]
    xt = x.transpose(1, 2)
    if form == "primal" or (form == "auto" and d <= n):
        chol = torch.linalg.cholesky(_eye_plus(xt @ x, lam))  # [B, d, d]
        return torch.cholesky_solve(xt @ y, chol)
    chol = torch.linalg.cholesky(_eye_plus(x @ xt, lam))  # [B, n, n]
    return xt @ torch.cholesky_solve(y, chol)
