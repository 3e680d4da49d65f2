"""Stein variational gradient descent (SVGD): particles, the RBF kernel and the update direction.

Liu, Wang. "Stein Variational Gradient Descent: A General Purpose Bayesian Inference Algorithm".
NeurIPS 2016. arXiv:1608.04471.

M particles theta_1..theta_M (each a whole parameter set, flattened to a row of `[M, P]`) move
together towards a target density p (Algorithm 1):
    theta_i <- theta_i + eps * phi(theta_i),
    phi(theta) = 1/M sum_j [k(theta_j, theta) grad log p(theta_j)
                            + grad_{theta_j} k(theta_j, theta)]
The first term drives the particles up the log density, smoothed by the kernel; the second
repels them from each other, so they spread over the density instead of collapsing on a mode.
The kernel is the RBF k(a, b) = exp(-||a - b||^2 / h), whose gradient is
grad_a k(a, b) = -(2 / h) (a - b) k(a, b), with the median heuristic h = med^2 / log M, med the
median of the pairwise distances between the particles (Sec. 5); h is a constant of the step
(no gradient flows through it). With one particle k = 1, the repulsion vanishes and a step is a
plain gradient ascent step on log p.

Parameters travel as `dict[str, Tensor]` whose tensors carry the particles first, `[M, ...]`;
`stack_particles` makes a module's parameters such stacks (BMAML's meta-parameters).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from metazoo.inner_loop import grads
from metazoo.types import Params


def flatten(params: Params) -> Tensor:
    """`{name: [M, ...]}` -> `[M, P]`, the particles as rows (names in the dict's order)."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in params.values()], dim=1)


def unflatten(flat: Tensor, like: Params) -> Params:
    """The inverse of `flatten`: rows `[M, P]` back to tensors shaped as those of `like`."""
    sizes = [v[0].numel() for v in like.values()]
    parts = torch.split(flat, sizes, dim=1)
    return {k: p.reshape(v.shape) for (k, v), p in zip(like.items(), parts, strict=True)}


def median_bandwidth(theta: Tensor) -> Tensor:
    """h = med^2 / log M for particles `[M, P]`, med the median of the M(M-1)/2 pairwise
    distances (the mean of the two middle ones for an even count); detached. 1 where it is
    undefined: one particle (log 1 = 0; the kernel is then 1 whatever h) or all at one point."""
    m = theta.shape[0]
    if m < 2:
        return theta.new_ones(())
    theta = theta.detach()
    i, j = torch.triu_indices(m, m, 1, device=theta.device)
    dist = (theta[i] - theta[j]).norm(dim=1).sort().values  # [M(M-1)/2], ascending
    n = dist.shape[0]
    med = dist[n // 2] if n % 2 else (dist[n // 2 - 1] + dist[n // 2]) / 2
    return torch.where(med > 0, med * med / math.log(m), torch.ones_like(med))


def rbf_kernel(theta: Tensor, bandwidth: Tensor) -> tuple[Tensor, Tensor]:
    """The kernel matrix `K[i, j] = k(theta_i, theta_j)` `[M, M]` and the repulsion
    `R[i] = sum_j grad_{theta_j} k(theta_j, theta_i) = (2 / h) sum_j K[i, j] (theta_i - theta_j)`
    `[M, P]`, for particles `theta` `[M, P]` and bandwidth h."""
    m = theta.shape[0]
    centred = theta - theta.mean(0, keepdim=True)  # distances unchanged, less cancellation
    sq = (centred * centred).sum(1)  # [M]
    dist2 = (sq[:, None] + sq[None, :] - 2 * centred @ centred.T).clamp_min(0)  # [M, M]
    dist2 = dist2 * (1 - torch.eye(m, dtype=theta.dtype, device=theta.device))  # exact 0 diagonal
    k = torch.exp(-dist2 / bandwidth)
    repulsion = (2 / bandwidth) * (centred * k.sum(1, keepdim=True) - k @ centred)
    return k, repulsion


def svgd_direction(theta: Tensor, score: Tensor, bandwidth: Tensor | None = None) -> Tensor:
    """phi(theta_i) for every particle: `(K @ score + R) / M`, `[M, P]`.

    Args:
        theta: the particles `[M, P]`.
        score: grad log p at each particle `[M, P]`.
        bandwidth: h; default the median heuristic of `theta`.
    """
    h = median_bandwidth(theta) if bandwidth is None else bandwidth
    k, repulsion = rbf_kernel(theta, h)
    return (k @ score + repulsion) / theta.shape[0]  # K is symmetric: k(theta_j, theta_i) = K[i, j]


def svgd_steps(neg_log_density: Callable[[Params], Tensor], params: Params, *, steps: int,
               lr: float, first_order: bool) -> Params:
    """`steps` SVGD steps of size `lr` from the particles `params` (`{name: [M, ...]}`).

    Args:
        neg_log_density: the particles -> sum over particles of -log p(theta_m) (up to a
            constant); its gradient w.r.t. particle m is then -grad log p(theta_m).
        params: the starting particles; not modified.
        steps: number of steps (0 returns `params`).
        lr: the step size eps.
        first_order: treat every step's direction as a constant (no second-order terms).
    """
    for _ in range(steps):
        score = -flatten(grads(neg_log_density, params, first_order))  # grad log p, [M, P]
        theta = flatten(params)
        phi = svgd_direction(theta, score)
        params = unflatten(theta + lr * (phi.detach() if first_order else phi), params)
    return params


def stack_particles(module: nn.Module, count: int) -> nn.Module:
    """`module` itself, each parameter replaced by a stack `[count, *shape]` of particles:
    particle 0 its current values, the others fresh initialisations of a copy (the
    `reset_parameters()` of every submodule that has one; others keep their values)."""
    copies = [module]
    for _ in range(count - 1):
        other = copy.deepcopy(module)
        for sub in other.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
        copies.append(other)
    for name, _ in list(module.named_parameters()):
        stacked = torch.stack([c.get_parameter(name).detach() for c in copies])
        owner, _, attr = name.rpartition(".")
        setattr(module.get_submodule(owner), attr, nn.Parameter(stacked))
    return module
