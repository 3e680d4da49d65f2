"""Conjugate gradient: `A x = b` for a symmetric positive definite `A` given as a product.

The method of Hestenes and Stiefel (1952), as Algorithm 5.2 of Nocedal and Wright, *Numerical
Optimization* (2nd ed.), stopped like truncated Newton-CG (their Algorithm 7.1) at a direction of
non-positive curvature. iMAML (Rajeswaran et al. 2019) solves `(I + H / lambda) g = grad L_test`
with it, `H v` being a Hessian-vector product.

It accepts a plain tensor or a `Params` dict (one tensor per parameter name) as the vector: the
dict form lets an algorithm work on a network's parameters without flattening them. It is written
with ordinary tensor operations, so it is differentiable when its inputs are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from metazoo.errors import ConfigError
from metazoo.types import Params

Vector = TypeVar("Vector", Tensor, Params)


def _dot(a: Tensor | Params, b: Tensor | Params) -> Tensor:
    """Euclidean inner product of two tensors, or of two dicts over all their entries."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return (a * b).sum()
    assert isinstance(a, dict) and isinstance(b, dict)
    return torch.stack([(a[k] * b[k]).sum() for k in a]).sum()


def _zeros_like(x: Vector) -> Vector:
    if isinstance(x, Tensor):
        return torch.zeros_like(x)
    return {k: torch.zeros_like(v) for k, v in x.items()}  # type: ignore[return-value]


def _axpy(alpha: Tensor, x: Vector, y: Vector) -> Vector:
    """`y + alpha * x` for tensors or dicts (same keys)."""
    if isinstance(x, Tensor) and isinstance(y, Tensor):
        return y + alpha * x
    assert isinstance(x, dict) and isinstance(y, dict)
    return {k: y[k] + alpha * x[k] for k in y}  # type: ignore[return-value]


def conjugate_gradient(matvec: Callable[[Vector], Vector], b: Vector, steps: int,
                       tol: float = 1e-10) -> Vector:
    """Approximately solve `A x = b` by `steps` iterations of conjugate gradient from `x = 0`.

    In exact arithmetic CG reaches the solution in at most n iterations for an n-dimensional
    SPD `A`; with fewer it returns the minimiser of `1/2 x^T A x - b^T x` over the Krylov space
    `span{b, A b, ..., A^{steps-1} b}`, which is what iMAML's few CG steps compute.

    Where `A` is not positive definite (a non-convex loss whose Hessian has eigenvalues below
    `-lambda` makes iMAML's `I + H / lambda` indefinite), CG's steps can grow without bound and
    point anywhere. As in truncated Newton-CG (Nocedal and Wright, Algorithm 7.1), a search
    direction `p` with `p^T A p <= 0` stops the iterations: the result is the iterate reached
    so far, or `b` itself if that happens at the first direction (`A` replaced by `I`).

    Args:
        matvec: `v -> A v` for a symmetric (positive definite) `A`; same kind (tensor or dict,
            same keys and shapes) as `b`.
        b: the right-hand side: a tensor of any shape, or a dict of tensors.
        steps: the most iterations (each one calls `matvec` once); must be >= 1.
        tol: stop early once the residual norm `||b - A x||` is at most `tol * ||b||` (0:
            only on an exactly zero residual). This check and the curvature check read two
            numbers per iteration back from the device.

    Returns:
        The approximate solution `x`, of the same kind and shapes as `b`.
    """
    if steps < 1:
        raise ConfigError(f"conjugate gradient needs steps >= 1, got {steps}")
    if tol < 0:
        raise ConfigError(f"conjugate gradient needs tol >= 0, got {tol}")
    x = _zeros_like(b)
    r, p = b, b  # residual b - A x and search direction, at x = 0
    rr = _dot(r, r)
    stop = float(rr.detach()) * tol**2
    for k in range(steps):
        if float(rr.detach()) <= stop:  # converged; also avoids 0/0 at an exact solution (or b = 0)
            break
        ap = matvec(p)
        curvature = _dot(p, ap)
        if float(curvature.detach()) <= 0:  # A is not positive definite along p
            return b if k == 0 else x
        alpha = rr / curvature  # exact line search along p
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rr_next = _dot(r, r)
        p = _axpy(rr_next / rr, p, r)  # next direction, A-conjugate to the previous ones
        rr = rr_next
    return x
