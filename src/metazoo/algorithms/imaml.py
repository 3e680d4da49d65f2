"""Implicit MAML (iMAML): meta-gradients of a proximally regularised inner problem.

Rajeswaran, Finn, Kakade, Levine. "Meta-Learning with Implicit Gradients". NeurIPS 2019.
arXiv:1909.04630.

A task's predictor is the network (backbone + linear head) at the solution of the inner problem
of Eq. 4, the support loss with a proximal pull toward the meta-parameters theta:
    phi_i = Alg*_i(theta) = argmin_phi  L_support(phi) + lambda/2 ||phi - theta||^2
solved approximately by `inner_steps` gradient-descent steps from phi = theta (the paper's "GD"
variant of Table 2) with no graph kept: memory does not grow with the number of steps.
The meta-gradient of the query loss follows from the chain rule (Eq. 5) and the implicit
Jacobian of Lemma 1, d phi_i / d theta = (I + H_i / lambda)^{-1} with H_i the Hessian of the
support loss at phi_i (Eq. 6):
    g_i = (I + H_i / lambda)^{-1} grad_phi L_query(phi_i)
computed as in Algorithm 2 by `cg_steps` conjugate-gradient iterations (`metazoo.solvers`), each
with one Hessian-vector product by double backward. The outer update uses the mean of g_i over
the meta-batch (Algorithm 1), by Adam. `meta_loss` is a surrogate (theta . g_i, g_i constant)
whose value is the mean query loss and whose gradient is that mean of g_i.

Float32 precision: the support and query passes run NCHW (`precise`), where torch's CPU batch
norm keeps ~1e-7 precision: the channels-last kernel's ~5e-6, grown by the inner steps and CG,
left 0.37 relative error in its meta-gradient on Omniglot, now 3e-6; test_imaml.py.

Deviations: batch norm as in MAML (`bn_mode`); `inner_lr` 0.025 (the paper gives none); CG stops
at the first direction of non-positive curvature; `eval_lam` sets lambda at evaluation (the
reference tests with lambda = 0). The reference code's procedure is `inner_prox: final_step`,
`cg_damping: 1.0`, `lam_damping: 10.0`, `inner_lr: 0.1`. Details: docs/algorithms.md.
Presets: imaml-omniglot-5w1s, -5w5s, -20w1s, -20w5s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from metazoo.adaptation import (
    BNMode,
    inner_steps_now,
    loss_and_metrics,
    predictor,
    support_loss,
)
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import LinearHeadAlgorithm
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.inner_loop import sgd_steps
from metazoo.solvers import conjugate_gradient
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class IMAMLConfig(AlgorithmConfig):
    lam: float = 2.0  # lambda of Eq. 4, the proximal strength; 2.0 on Omniglot (Table 2)
    # GD step size on Eq. 4's objective; the paper gives none. every_step needs
    # inner_lr * (h + lam) < 2 (see above): 0.025 is stable on conv4 Omniglot, where the
    # reference code's 0.1 (for its final_step loop, where h falls to ~1) oscillates
    inner_lr: float = 0.025
    inner_steps: int = 16  # GD steps while meta-training: 16 for 5-way, 25 for 20-way (Table 2)
    eval_inner_steps: int | None = None  # GD steps at evaluation; None = inner_steps
    eval_lam: float | None = None  # lambda at evaluation; None = lam (reference code: 0)
    cg_steps: int = 5  # CG iterations of Algorithm 2 (Table 2: 5)
    # The reference code's variant (0, 0, "every_step" is the paper): CG on
    # (1 + cg_damping) I + H / (lambda + lam_damping) (its cg_damping 1.0, lam_damping 10.0),
    # and an inner loop of plain GD on the support loss followed by one proximal step
    cg_damping: float = 0.0
    lam_damping: float = 0.0
    inner_prox: Literal["every_step", "final_step"] = "every_step"
    bn_mode: BNMode = "transductive"  # as MAML's

    def validate(self) -> None:
        for name in ("lam", "inner_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"imaml {name} must be > 0, got {getattr(self, name)}")
        if self.cg_damping < 0 or self.lam_damping < 0:
            raise ConfigError(f"imaml cg_damping and lam_damping must be >= 0, got "
                              f"{self.cg_damping} and {self.lam_damping}")
        if self.eval_lam is not None and self.eval_lam < 0:
            raise ConfigError(f"imaml eval_lam must be >= 0 (or null), got {self.eval_lam}")
        for name in ("inner_steps", "cg_steps", "eval_inner_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"imaml {name} must be >= 1, got {value}")


def _grad(loss: Tensor, params: Params, create_graph: bool = False) -> list[Tensor]:
    """d loss / d params; zeros for parameters the loss does not use."""
    return list(torch.autograd.grad(loss, list(params.values()), create_graph=create_graph,
                                    allow_unused=True, materialize_grads=True))


@register("imaml", display="iMAML", family="gradient", config=IMAMLConfig,
          paper="Rajeswaran, Finn, Kakade, Levine. Meta-Learning with Implicit Gradients. "
                "NeurIPS 2019", tasks={"classification", "regression"})
class IMAML(LinearHeadAlgorithm):
    """iMAML: meta-learn the centre of a proximal inner problem, with implicit meta-gradients."""

    config: IMAMLConfig
    vmappable = False  # CG stops on a data-dependent residual; double backward per task

    def inner_solve(self, support_x: Tensor, support_y: Tensor) -> Params:
        """phi_i of Eq. 4 by GD from theta; detached (no graph), with the eval settings in
        eval mode."""
        cfg = self.config
        steps = inner_steps_now(self, cfg.inner_steps, cfg.eval_inner_steps)
        lam = cfg.lam if self.training or cfg.eval_lam is None else cfg.eval_lam
        theta = {k: v.detach() for k, v in params_of(self).items()}

        final = cfg.inner_prox == "final_step"

        # precise (NCHW, as the query pass): channels-last batch norm's float32 error, grown by
        # the inner steps and CG, had put the meta-gradient at 0.93 cosine from float64's
        loss = support_loss(self, support_x, support_y, first_order=True, precise=True)

        def objective(p: Params) -> Tensor:
            if final:
                return loss(p)
            return loss(p) + lam / 2 * sum(((p[k] - theta[k]) ** 2).sum() for k in p)

        phi = sgd_steps(objective, theta, steps=steps, lr=cfg.inner_lr, first_order=True)
        if final:  # the reference's one GD step on lambda/2 ||phi - theta||^2
            phi = {k: v - cfg.inner_lr * lam * (v - theta[k]) for k, v in phi.items()}
        return phi

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        return predictor(self, self.inner_solve(support_x, support_y), support_x,
                         self.config.bn_mode)

    def implicit_matrix(self, phi: Params, support_x: Tensor, support_y: Tensor
                        ) -> Callable[[Params], Params]:
        """`u -> (I + H / lambda) u`, H the Hessian of the support loss at `phi` (Lemma 1);
        with the reference's damping `u -> (1 + cg_damping) u + H u / (lambda + lam_damping)`."""
        phi = {k: v.detach().requires_grad_() for k, v in phi.items()}
        with torch.enable_grad():  # the support loss in the layout of second-order passes
            loss = support_loss(self, support_x, support_y, first_order=False)(phi)
            g = _grad(loss, phi, create_graph=True)
        keep = [i for i, t in enumerate(g) if t.requires_grad]  # the others have H rows = 0
        leaves, cfg = list(phi.values()), self.config
        lam, identity = cfg.lam + cfg.lam_damping, 1.0 + cfg.cg_damping

        def matvec(u: Params) -> Params:
            if not keep:  # a loss linear in every parameter: H = 0
                return {k: identity * v for k, v in u.items()}
            us = list(u.values())
            # H u = d(g . u)/d phi: the vector-Jacobian product of g with u (H is symmetric);
            # the graph of g is kept for the next product
            hu = torch.autograd.grad([g[i] for i in keep], leaves, [us[i] for i in keep],
                                     retain_graph=True, allow_unused=True,
                                     materialize_grads=True)
            return {k: identity * v + h / lam for (k, v), h in zip(u.items(), hu, strict=True)}

        return matvec

    def implicit_gradient(self, phi: Params, support_x: Tensor, support_y: Tensor,
                          query_grad: Params) -> Params:
        """Algorithm 2, step 3: `cg_steps` of CG on (I + H / lambda) g = `query_grad`."""
        matvec = self.implicit_matrix(phi, support_x, support_y)
        return conjugate_gradient(matvec, query_grad, self.config.cg_steps)

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Query loss at phi_i; its gradient w.r.t. theta is g_i (Eq. 6), not backprop."""
        self.check_ways(ways)
        meta_gradient = torch.is_grad_enabled()  # not in evaluation
        phi = {k: v.requires_grad_(meta_gradient)
               for k, v in self.inner_solve(support_x, support_y).items()}
        loss, metrics = loss_and_metrics(predictor(self, phi, support_x, self.config.bn_mode,
                                                   precise=True)(query_x), query_y)
        if not meta_gradient:
            return loss, metrics
        v = dict(zip(phi, _grad(loss, phi), strict=True))  # Algorithm 2, step 2
        g = self.implicit_gradient(phi, support_x, support_y, v)
        surrogate = sum((t * g[k]).sum() for k, t in params_of(self).items())
        assert isinstance(surrogate, Tensor)
        return loss.detach() + (surrogate - surrogate.detach()), metrics
