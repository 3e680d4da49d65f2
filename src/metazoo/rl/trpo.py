"""One Trust Region Policy Optimization step (Schulman, Levine, Moritz, Jordan, Abbeel, "Trust
Region Policy Optimization", ICML 2015, arXiv:1502.05477), the meta-optimiser of MAML-RL.

    minimise L(theta)  subject to  KL(theta_old, theta) <= delta                 (Eq. 14)
Appendix C: the step direction x = A^{-1} g solves A x = g by conjugate gradient (here
`metazoo.solvers.conjugate_gradient`), A the Hessian of the mean KL at theta_old (the Fisher
information; the KL is 0 and minimal there) plus a damping `damping * I`, g = grad L; the full
step beta x has beta = sqrt(2 delta / x^T A x) (the step at which the quadratic model of the KL
reaches delta); a backtracking line search shrinks it by `backtrack_ratio` until the loss
decreases and the exact KL is at most delta, and rejects the step otherwise. The defaults are
rllab's `ConjugateGradientOptimizer` (the reference code of MAML-RL): 10 CG iterations, damping
1e-5, ratio 0.8, 15 trials. Deviation: the reference code approximates A v by finite differences
of grad KL ("to avoid computing third derivatives", Finn et al. Sec. 5.3); here A v is exact,
the double backward of the KL (Pearlmutter 1994).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from metazoo.solvers import conjugate_gradient
from metazoo.types import Params

Surrogate = Callable[[Params, bool], tuple[Tensor, Tensor]]
"""`(params, differentiable) -> (loss, mean KL from the old policy)`; with `differentiable`
the two keep their graphs to `params` (up to second order for the KL)."""


def _dot(a: Params, b: Params) -> Tensor:
    return torch.stack([(a[k] * b[k]).sum() for k in a]).sum()


def fisher_vector_product(kl: Tensor, params: Params, damping: float
                          ) -> Callable[[Params], Params]:
    """`v -> (Hessian of kl w.r.t. params) v + damping v`, by double backward through the
    graph of `kl` (built with `create_graph` where it has inner gradients)."""
    names = list(params)
    grads = torch.autograd.grad(kl, [params[k] for k in names], create_graph=True)

    def product(v: Params) -> Params:
        gv = torch.stack([(g * v[k]).sum() for g, k in zip(grads, names, strict=True)]).sum()
        hv = torch.autograd.grad(gv, [params[k] for k in names], retain_graph=True)
        return {k: h.detach() + damping * v[k] for k, h in zip(names, hv, strict=True)}

    return product


def trpo_step(params: Params, surrogate: Surrogate, *, max_kl: float, cg_iters: int = 10,
              damping: float = 1e-5, backtrack_ratio: float = 0.8, max_backtracks: int = 15
              ) -> tuple[Params, dict[str, float]]:
    """The parameters after one TRPO step from `params` (leaf tensors), and its statistics.

    Returns `params` themselves (detached copies) when no trial of the line search both lowers
    the loss and keeps the KL within `max_kl` (rllab: "Rejecting the step").
    """
    old = {k: v.detach().requires_grad_() for k, v in params.items()}
    loss, kl = surrogate(old, True)
    names = list(old)
    g = dict(zip(names, torch.autograd.grad(loss, [old[k] for k in names], retain_graph=True),
                 strict=True))
    fvp = fisher_vector_product(kl, old, damping)
    direction = conjugate_gradient(fvp, g, steps=cg_iters)  # A^{-1} g
    curvature = float(_dot(direction, fvp(direction)))
    beta = math.sqrt(2.0 * max_kl / (curvature + 1e-8))
    loss_before = float(loss.detach())
    stats = {"loss_before": loss_before, "loss_after": loss_before, "kl": 0.0,
             "backtracks": float(max_backtracks), "accepted": 0.0}
    for k in range(max_backtracks):
        scale = beta * backtrack_ratio ** k
        trial = {n: (old[n] - scale * direction[n]).detach().requires_grad_() for n in names}
        new_loss, new_kl = (float(x.detach()) for x in surrogate(trial, False))
        if new_loss < loss_before and new_kl <= max_kl:
            stats.update(loss_after=new_loss, kl=new_kl, backtracks=float(k), accepted=1.0)
            return {n: v.detach() for n, v in trial.items()}, stats
    return {n: v.detach() for n, v in old.items()}, stats
