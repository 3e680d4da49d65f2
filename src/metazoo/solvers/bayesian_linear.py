"""Bayesian linear regression with a matrix-normal prior: ALPaCA's closed-form last layer.

ALPaCA (Harrison, Sharma and Pavone, WAFR 2018, Sec. 3, Eq. 3-7): targets `y in R^c` are modelled as
`y = K^T phi(x) + eps`, `eps ~ N(0, Sigma_eps)`, with features `phi(x) in R^d` and a
matrix-normal prior on the last layer `K ~ MN(K_0, Lambda_0^{-1}, Sigma_eps)` (`Lambda_0^{-1}`
the `d x d` covariance among the rows of `K`, `Sigma_eps` the `c x c` covariance among its
columns, i.e. `vec(K) ~ N(vec(K_0), Sigma_eps (x) Lambda_0^{-1})`). Conditioning on `n` support
pairs (features `Phi` `[n, d]`, targets `Y` `[n, c]`) keeps the posterior matrix normal,
`MN(K_n, Lambda_n^{-1}, Sigma_eps)`, with

    Lambda_n = Phi^T Phi + Lambda_0,        K_n = Lambda_n^{-1} (Phi^T Y + Lambda_0 K_0),

and the posterior predictive at a query feature `phi` is Gaussian

    y | phi ~ N(K_n^T phi, (1 + phi^T Lambda_n^{-1} phi) Sigma_eps),

whose log density on the query set is ALPaCA's meta-training objective. The noise
covariance is known (meta-learned), so no inverse-Wishart term appears. `Lambda_n` is
symmetric positive definite for a positive definite prior precision `Lambda_0`; every solve is
a Cholesky one, and every result is differentiable w.r.t. all inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metazoo.errors import ShapeError


def blr_posterior(phi: Tensor, y: Tensor, k0: Tensor, lambda0: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior over the last layer given each task's support set.

    Args:
        phi: support features `[B, n, d]`.
        y: support targets `[B, n, c]`.
        k0: prior mean `[d, c]` (or one per task, `[B, d, c]`).
        lambda0: prior precision `[d, d]` (or `[B, d, d]`), symmetric positive definite (e.g.
            `L L^T + eps I` of a learned `L`).

    Returns:
        `(k_n [B, d, c], lambda_n [B, d, d])`: the posterior mean and the posterior precision of
        the rows of `K` (its covariance is `Sigma_eps (x) lambda_n^{-1}`).
    """
    if phi.dim() != 3 or y.dim() != 3 or phi.shape[:2] != y.shape[:2]:
        raise ShapeError(f"blr_posterior needs phi [B, n, d] and y [B, n, c], got "
                         f"{tuple(phi.shape)} and {tuple(y.shape)}")
    d, c = phi.shape[2], y.shape[2]
    if k0.shape[-2:] != (d, c) or lambda0.shape[-2:] != (d, d):
        raise ShapeError(f"blr_posterior needs k0 [d, c] = {(d, c)} and lambda0 [d, d], got "
                         f"{tuple(k0.shape)} and {tuple(lambda0.shape)}")
    phi_t = phi.transpose(1, 2)
    lambda_n = phi_t @ phi + lambda0
    rhs = phi_t @ y + lambda0 @ k0
    k_n = torch.cholesky_solve(rhs, torch.linalg.cholesky(lambda_n))
    return k_n, lambda_n


def blr_predictive(phi_query: Tensor, k_n: Tensor, lambda_n: Tensor,
                   sigma_eps: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior predictive Gaussian at each query feature.

    Args:
        phi_query: query features `[B, m, d]`.
        k_n: posterior mean `[B, d, c]` (from `blr_posterior`).
        lambda_n: posterior precision `[B, d, d]` (from `blr_posterior`).
        sigma_eps: noise covariance `[c, c]`, symmetric positive definite.

    Returns:
        `(mean [B, m, c], cov [B, m, c, c])`: `mean = K_n^T phi` and
        `cov = (1 + phi^T Lambda_n^{-1} phi) Sigma_eps` for each query.
    """
    if (phi_query.dim() != 3 or k_n.dim() != 3 or lambda_n.dim() != 3
            or phi_query.shape[2] != k_n.shape[1] or lambda_n.shape[1:] != (k_n.shape[1],) * 2
            or sigma_eps.shape != (k_n.shape[2],) * 2):
        raise ShapeError(f"blr_predictive needs phi_query [B, m, d], k_n [B, d, c], lambda_n "
                         f"[B, d, d] and sigma_eps [c, c], got {tuple(phi_query.shape)}, "
                         f"{tuple(k_n.shape)}, {tuple(lambda_n.shape)}, {tuple(sigma_eps.shape)}")
    mean = phi_query @ k_n
    # phi^T Lambda_n^{-1} phi = ||L^{-1} phi||^2 with Lambda_n = L L^T
    chol = torch.linalg.cholesky(lambda_n)
    white = torch.linalg.solve_triangular(chol, phi_query.transpose(1, 2), upper=False)
    scale = 1 + white.square().sum(1)  # [B, m]
    return mean, scale[..., None, None] * sigma_eps


def blr_log_likelihood(y: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """Gaussian log density `log N(y; mean, cov)` of each query target.

    Args:
        y: targets `[B, m, c]`.
        mean: predictive means `[B, m, c]`.
        cov: predictive covariances `[B, m, c, c]`, symmetric positive definite.

    Returns:
        `[B, m]`: `-1/2 (c log 2 pi + log det cov + r^T cov^{-1} r)`, `r = y - mean`.
    """
    if y.shape != mean.shape or cov.shape != (*mean.shape, mean.shape[-1]):
        raise ShapeError(f"blr_log_likelihood needs y and mean [B, m, c] and cov [B, m, c, c], "
                         f"got {tuple(y.shape)}, {tuple(mean.shape)} and {tuple(cov.shape)}")
    chol = torch.linalg.cholesky(cov)
    white = torch.linalg.solve_triangular(chol, (y - mean).unsqueeze(-1), upper=False)
    log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    c = y.shape[-1]
    return -0.5 * (c * math.log(2 * math.pi) + log_det + white.squeeze(-1).square().sum(-1))
