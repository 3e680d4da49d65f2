"""MetaOptNet's multi-class (Crammer-Singer) SVM: its dual QP, solved batched, with an implicit
gradient through its optimality conditions.

The Crammer and Singer (JMLR 2001) SVM on `n` support points with labels `y_i` in `N` classes,
in the dual form of MetaOptNet (Lee, Maji, Ravichandran and Soatto, CVPR 2019, Eq. 8-10 and
appendix), over `alpha` `[n, N]` with the kernel `K = X X^T`:

    min_alpha  1/2 sum_m alpha_m^T K alpha_m - sum_i alpha_i^{y_i}
    s.t.       alpha_i^m <= C [m = y_i]  for all i, m,      sum_m alpha_i^m = 0  for all i,

and the class-`m` weights are `w_m = sum_i alpha_i^m x_i`, so query logits are `K_qs alpha`.
As a QP `min 1/2 z^T Q z + p^T z  s.t.  z <= h,  A z = 0` in the class-major order
`z = (alpha_1, ..., alpha_N)`: `Q = I_N (x) K` is block diagonal (one `n x n` block per class),
`p = -onehot`, `h = C onehot`, and `A = [I_n ... I_n]` sums over the classes.

Forward: a batched primal-dual interior-point method (Mehrotra predictor-corrector, as in
Nocedal and Wright, *Numerical Optimization*, Algorithm 16.4, and CVXOPT's `coneqp` from which
qpth, the solver MetaOptNet's code used, derives), run for a fixed number of iterations per
batch. Each Newton system
`[[Q + D, A^T], [A, 0]] (dz, dnu) = (a, c)` with `D = diag(lambda / s)` is solved through its
structure: `Q + D` is block diagonal, so it costs `N` Cholesky factorisations of `n x n` blocks
plus one of the `n x n` Schur complement `sum_m (K + D_m)^{-1}`, instead of a dense
`(nN + n)`-sized KKT factorisation. A task whose duality measure `mu = s^T lambda / (nN)` falls
below `tol` stops moving, without a host synchronisation (on the CPU, where checking is free,
the loop ends once every task has stopped; the result is the same).

Backward: implicit differentiation of the KKT conditions at the returned point (OptNet, Amos
and Kolter, ICML 2017, Sec. 3, Eq. 6-8), not backpropagation through the iterations. For the
loss gradient `g = dl/dz`, one solve of the same structured system gives `v` from
`(Q + D) v + A^T w = -g, A v = 0`; then `dl/dQ = v z^T` (hence `dl/dK = sum_m v_m z_m^T`),
`dl/dp = v` and `dl/dh = -D v` (`= -lambda v / s`, OptNet's `-D(lambda) d_lambda`). As in qpth,
at a point not fully converged (few iterations) this is the gradient of the problem as if that
point were its solution.

Strict convexity: a small ridge `ridge * I` is added to `K` (default 1e-5; MetaOptNet's code
adds 1.0 to the block kernel "to avoid a PSD error"), so `Q` is positive definite even when `K`
is singular (more support points than feature dimensions, duplicated points) and the solution
and its gradient are unique.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from metazoo.errors import ConfigError, ShapeError
from metazoo.solvers.ridge import _check_regulariser


class _KKTFactor:
    """Factorisation of `[[I_N (x) K + D, A^T], [A, 0]]` for a batch, `D` diagonal `[B, N, n]`."""

    def __init__(self, kmat: Tensor, d: Tensor) -> None:
        blocks = kmat.unsqueeze(1) + torch.diag_embed(d)  # [B, N, n, n]: K + D_m
        self.inv = torch.cholesky_inverse(torch.linalg.cholesky(blocks))  # (K + D_m)^{-1}
        self.schur = torch.linalg.cholesky(self.inv.sum(1))  # A (Q + D)^{-1} A^T [B, n, n]

    def solve(self, a: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """`(dz [B, N, n], dnu [B, n])` with `(Q + D) dz + A^T dnu = a` and `A dz = c`."""
        u = (self.inv @ a.unsqueeze(-1)).squeeze(-1)  # (Q + D)^{-1} a
        dnu = torch.cholesky_solve((u.sum(1) - c).unsqueeze(-1), self.schur)  # [B, n, 1]
        dz = u - (self.inv @ dnu.unsqueeze(1)).squeeze(-1)
        return dz, dnu.squeeze(-1)


def _max_step(v: Tensor, dv: Tensor) -> Tensor:
    """Per task, the largest `t` with `v + t dv >= 0` (inf if `dv >= 0`), `v > 0` `[B, N, n]`."""
    ratio = torch.where(dv < 0, -v / dv.clamp(max=-torch.finfo(v.dtype).tiny), torch.inf)
    return ratio.flatten(1).amin(1)


def _positive_shift(v: Tensor) -> Tensor:
    """CVXOPT's initial shift: `v + (1 - min v)` where `min v <= 0`, else `v`, per task."""
    low = v.flatten(1).amin(1)[:, None, None]
    return torch.where(low <= 0, v + (1 - low), v)


def _newton(r_comp: Tensor, factor: _KKTFactor, r_dual: Tensor, r_prim: Tensor, r_eq: Tensor,
            s: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Newton direction `(dz, ds, dlambda, dnu)` of the interior-point method for the
    residuals `r_dual = Q z + p + lambda + A^T nu`, `r_prim = z + s - h`, `r_eq = A z` and the
    complementarity residual `r_comp` (`s lambda` minus its target): with `ds = -r_prim - dz`
    and `dlambda = -(r_comp + lambda ds) / s` eliminated, `(Q + D) dz + A^T dnu =
    -r_dual + (r_comp - lambda r_prim) / s`, `A dz = -r_eq`, `D = lambda / s`."""
    dz, dnu = factor.solve(-r_dual + (r_comp - lam * r_prim) / s, -r_eq)
    ds = -r_prim - dz
    return dz, ds, -(r_comp + lam * ds) / s, dnu


def _interior_point(kmat: Tensor, p: Tensor, h: Tensor, iters: int,
                    tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """`iters` Mehrotra predictor-corrector steps for `min 1/2 z^T (I (x) K) z + p^T z`,
    `z <= h`, `sum_m z_m = 0`; `kmat` `[B, n, n]`, `p` and `h` `[B, N, n]`.

    Returns the primal point `z`, the slacks `s = h - z` and the inequality multipliers
    `lambda` (all `[B, N, n]`, `s, lambda > 0`).
    """
    count = p.shape[1] * p.shape[2]
    on_cpu = p.device.type == "cpu"
    zeros = p.new_zeros(p.shape[0], p.shape[2])
    # Start (CVXOPT's default): solve the KKT system with D = I, i.e.
    # min 1/2 z^T Q z + p^T z + 1/2 ||z - h||^2 s.t. A z = 0; s = h - z, lambda = z - h, each
    # shifted to be positive.
    z, nu = _KKTFactor(kmat, torch.ones_like(p)).solve(h - p, zeros)
    s, lam = _positive_shift(h - z), _positive_shift(z - h)
    for _ in range(iters):
        r_dual = z @ kmat + p + lam + nu.unsqueeze(1)  # Q z + p + lambda + A^T nu
        r_prim = z + s - h
        r_eq = z.sum(1)
        mu = (s * lam).flatten(1).sum(1) / count  # [B]
        moving = (mu > tol)[:, None, None]
        if on_cpu and not bool(moving.any()):  # all converged (free to check on the CPU only)
            break
        d = lam / s
        factor = _KKTFactor(kmat, d)

        # predictor (affine scaling) step, then the centring parameter sigma = (mu_aff / mu)^3
        residuals = (factor, r_dual, r_prim, r_eq, s, lam)
        _, ds, dlam, _ = _newton(s * lam, *residuals)
        t_aff = torch.minimum(_max_step(s, ds), _max_step(lam, dlam)).clamp(max=1)[:, None, None]
        mu_aff = ((s + t_aff * ds) * (lam + t_aff * dlam)).flatten(1).sum(1) / count
        sigma = (mu_aff / mu) ** 3
        # corrector: second-order term and centring
        dz, ds, dlam, dnu = _newton(s * lam + ds * dlam - (sigma * mu)[:, None, None], *residuals)
        t = (0.99 * torch.minimum(_max_step(s, ds), _max_step(lam, dlam))).clamp(max=1)
        t = t[:, None, None]
        z = torch.where(moving, z + t * dz, z)
        s = torch.where(moving, s + t * ds, s)
        lam = torch.where(moving, lam + t * dlam, lam)
        nu = torch.where(moving[:, :, 0], nu + t[:, :, 0] * dnu, nu)
    return z, s, lam


class _CrammerSingerQP(torch.autograd.Function):
    """`z(K, p, h)` of the structured QP; backward by implicit differentiation of the KKT
    conditions (module docstring)."""

    @staticmethod
    def forward(kmat: Tensor, p: Tensor, h: Tensor, iters: int,
                tol: float) -> tuple[Tensor, Tensor, Tensor]:
        return _interior_point(kmat, p, h, iters, tol)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple[Any, ...], output: Any) -> None:
        kmat = inputs[0]
        z, s, lam = output
        ctx.save_for_backward(kmat, z, s, lam)
        ctx.mark_non_differentiable(s, lam)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_z: Tensor, *unused: Any) -> tuple[Tensor | None, ...]:
        kmat, z, s, lam = ctx.saved_tensors  # type: ignore[attr-defined]
        d = lam / s
        v, _w = _KKTFactor(kmat, d).solve(-grad_z, grad_z.new_zeros(z.shape[0], z.shape[2]))
        grad_kmat = v.transpose(1, 2) @ z  # sum_m v_m z_m^T
        return grad_kmat, v, -d * v, None, None


def svm_dual(kernel: Tensor, y: Tensor, ways: int, c: float | Tensor = 0.1, iters: int = 15,
             ridge: float = 1e-5, tol: float | None = None) -> Tensor:
    """The dual variables of MetaOptNet's Crammer-Singer SVM for each task of a batch.

    Args:
        kernel: support Gram matrices `[B, n, n]` (`X X^T` for the linear kernel); only its
            symmetric part is used.
        y: support labels `[B, n]`, int64 in `[0, ways)`.
        ways: the number of classes `N`.
        c: the SVM's cost `C` > 0 (MetaOptNet: 0.1), a float or a 0-d tensor (gets a gradient).
        iters: interior-point iterations (MetaOptNet: 3 in meta-training, more at test); >= 1.
        ridge: added to the kernel's diagonal for strict convexity (module docstring), >= 0.
        tol: a task stops moving once its duality measure `mu = s^T lambda / (nN)` is at most
            `tol` (default: 1e-24 in float64, 1e-14 in float32; both reached only when converged
            to rounding, the stop guards the later iterations against underflow).

    Returns:
        `alpha` `[B, n, N]`, differentiable w.r.t. `kernel` and a tensor `c` through the KKT
        conditions of the returned point; query logits are `svm_logits(K_qs, alpha)`.
    """
    if kernel.dim() != 3 or kernel.shape[1] != kernel.shape[2]:
        raise ShapeError(f"svm_dual needs a kernel [B, n, n], got {tuple(kernel.shape)}")
    if y.shape != kernel.shape[:2] or y.dtype != torch.int64:
        raise ShapeError(f"svm_dual needs int64 labels [B, n] = {tuple(kernel.shape[:2])}, got "
                         f"{y.dtype} {tuple(y.shape)}")
    if ways < 2:
        raise ConfigError(f"svm_dual needs ways >= 2, got {ways}")
    if iters < 1:
        raise ConfigError(f"svm_dual needs iters >= 1, got {iters}")
    if ridge < 0:
        raise ConfigError(f"svm_dual needs ridge >= 0, got {ridge}")
    _check_regulariser(c, "c")
    if tol is None:
        tol = 1e-24 if kernel.dtype == torch.float64 else 1e-14
    onehot = F.one_hot(y, ways).to(kernel.dtype).transpose(1, 2)  # [B, N, n], class-major
    eye = torch.eye(kernel.shape[1], dtype=kernel.dtype, device=kernel.device)
    kmat = 0.5 * (kernel + kernel.transpose(1, 2)) + ridge * eye
    z, _, _ = _CrammerSingerQP.apply(kmat, -onehot, c * onehot, iters, tol)
    return z.transpose(1, 2)


def svm_logits(query_support_kernel: Tensor, alpha: Tensor) -> Tensor:
    """Query scores of the SVM: `[B, m, n] @ [B, n, N] -> [B, m, N]`.

    `query_support_kernel[b, q, i]` is `k(x_q, x_i)` (`X_query X_support^T` for the linear
    kernel); `alpha` comes from `svm_dual`. Score `m` of query `q` is `w_m . x_q`.
    """
    if (query_support_kernel.dim() != 3 or alpha.dim() != 3
            or query_support_kernel.shape[0] != alpha.shape[0]
            or query_support_kernel.shape[2] != alpha.shape[1]):
        raise ShapeError(f"svm_logits needs [B, m, n] and [B, n, N], got "
                         f"{tuple(query_support_kernel.shape)} and {tuple(alpha.shape)}")
    return query_support_kernel @ alpha
