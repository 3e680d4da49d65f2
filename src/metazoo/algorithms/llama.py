"""LLAMA: MAML as hierarchical Bayes, with a Laplace approximation of each task's evidence.

Grant, Finn, Levine, Darrell, Griffiths. "Recasting Gradient-Based Meta-Learning as Hierarchical
Bayes". ICLR 2018. arXiv:1801.08930. (Equation numbers: the OpenReview text.)

MAML's inner steps give phi_j, the MAP estimate of task j under the implicit Gaussian prior that
early stopping puts around theta (Sec. 3.1-3.2, Eq. 4-6; k steps of size alpha: covariance
~ k alpha I where the curvature is small). Instead of the point estimate of the evidence (Eq. 2-3,
MAML), the outer loss is its Laplace approximation without the prior term (Sec. 4.1; Algorithm 2
with subroutine ML-LAPLACE):  -log p(X_j | phi_j) + eta log det(H_j)   (eta = 1/2: plain Laplace),
X_j the query set, H_j its curvature at phi_j (Sec. 4.2): K-FAC blocks of the Fisher of every
conv and linear layer, head included (`metazoo.curvature`), plus tau I for the prior
(`prior_precision`); log det from the factors' eigenvalues, or of the diagonal (`curvature:
diagonal`). Batch-norm scale/shift get no inner steps and no curvature (Sec. 5.2). Settings
(Sec. 5.2): Conv4 with 64 filters, Adam, SGD inner steps, eta = 1e-6, 60,000 iterations; the
rest MAML's (assumed). Prediction: the MAP network (Table 1); `samples: S` > 0 draws S networks
from N(phi_j, (H_support + tau I)^-1) and returns log(1/S sum_s softmax f_s) (regression: the
mean; `predictive`, `function_samples`).
Deviations: the Fisher is of the mean loss, its expectation over the model's labels exact (the
paper does not say; TensorFlow K-FAC draws one label per input); tau is not reported: default
1 / (inner_lr * steps); the curvature pass runs the backbone's plain forward (transductive batch
norm); posterior draws come from a generator of (sample_seed, episode).
Presets: llama-miniimagenet-5w1s, llama-omniglot-5w1s, llama-glyphs-5w1s, llama-sinusoid,
llama-sinusoid_line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from metazoo import curvature
from metazoo.adaptation import (
    detached_unless_grad,
    first_order_now,
    loss_and_metrics,
    support_loss,
)
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import InnerLoopAlgorithm, InnerLoopConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.inner_loop import sgd_steps
from metazoo.seeding import episode_generator
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class LLAMAConfig(InnerLoopConfig):
    inner_lr: float = 0.01  # alpha: MAML's miniImageNet value (the paper builds on its code)
    inner_steps: int = 5  # MAML's miniImageNet value (assumed; the paper gives none)
    eval_inner_steps: int | None = 10  # MAML's miniImageNet test steps (assumed)
    eta: float = 1e-6  # weight of log det H: 10^-6 "via cross-validation" (Sec. 5.2)
    curvature: Literal["kfac", "diagonal"] = "kfac"  # K-FAC blocks (Sec. 4.2) or their diagonal
    prior_precision: float | None = None  # tau; None = 1 / (inner_lr * steps), the early-
    # stopping prior of Sec. 3.2 where the curvature is small (the paper reports no value)
    adapt_bn: bool = False  # inner steps on batch-norm scale/shift: no (Sec. 5.2)
    samples: int = 0  # Laplace-posterior draws at evaluation; 0: the MAP network (Table 1)
    sample_seed: int = 0  # with the episode, fixes the draws
    noise_var: float = 0.5  # regression likelihood variance: squared error is N(f, 1/2)'s NLL

    def validate(self) -> None:
        super().validate()
        if not self.eta >= 0:
            raise ConfigError(f"eta must be >= 0, got {self.eta}")
        if self.prior_precision is not None and not self.prior_precision > 0:
            raise ConfigError(f"prior_precision must be > 0 (or null), got "
                              f"{self.prior_precision}")
        if self.samples < 0 or not self.noise_var > 0:
            raise ConfigError(f"samples must be >= 0 and noise_var > 0, got {self.samples} "
                              f"and {self.noise_var}")
        if self.eta > 0 and self.bn_mode != "transductive":
            raise ConfigError("bn_mode non_transductive needs eta=0: the curvature pass runs "
                              "the backbone's plain forward (batch statistics of the query)")


@register("llama", display="LLAMA", family="bayesian", config=LLAMAConfig,
          paper="Grant, Finn, Levine, Darrell, Griffiths. Recasting Gradient-Based "
                "Meta-Learning as Hierarchical Bayes. ICLR 2018",
          tasks={"classification", "regression"})
class LLAMA(InnerLoopAlgorithm):
    """LLAMA: MAML whose outer loss adds the Laplace curvature term eta log det H."""

    config: LLAMAConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        self.layers = curvature.curved_layers(self)
        adapted = dict(self.named_parameters()) if self.config.adapt_bn else {
            f"{n}.{p}": v for n, m in self.layers.items() for p, v in m.named_parameters()}
        self.adapted = frozenset(adapted)

    def can_vmap(self) -> bool:
        """Not with the curvature term or draws (autograd on hooked layer outputs, per-episode
        generators)."""
        return self.config.eta == 0 and self.config.samples == 0

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """`steps` SGD steps of MAML's Eq. 1 on the conv and linear layers (all with adapt_bn)."""
        first_order = first_order_now(self, self.config.first_order)
        fixed = {k: v for k, v in params.items() if k not in self.adapted}
        loss = support_loss(self, support_x, support_y, first_order=first_order)
        adapted = sgd_steps(lambda p: loss({**fixed, **p}),
                            {k: v for k, v in params.items() if k in self.adapted},
                            steps=steps, lr=self.config.inner_lr, first_order=first_order)
        return {**fixed, **adapted}

    def prior_precision(self) -> float:
        """tau: the configured value, or 1 / (inner_lr * steps now)."""
        tau = self.config.prior_precision
        return tau if tau is not None else 1.0 / (self.config.inner_lr * self.steps())

    def log_det(self, factors: dict[str, curvature.Factors]) -> Tensor:
        """log det(H + tau I) of the block-diagonal curvature (or its diagonal)."""
        tau, diagonal = self.prior_precision(), self.config.curvature == "diagonal"
        return torch.stack([curvature.log_det(f, tau, diagonal) for f in factors.values()]).sum()

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Query loss at phi_j plus eta log det H_j (the query set's curvature at phi_j)."""
        self.check_ways(ways)
        params = self.inner_loop(self.start_params(), support_x, support_y, self.steps())
        if self.config.eta == 0:
            return loss_and_metrics(self.predictor(params, support_x)(query_x), query_y)
        out, factors = curvature.kfac_factors(
            self, params, query_x, classification=not query_y.is_floating_point(),
            create_graph=torch.is_grad_enabled())
        loss, metrics = loss_and_metrics(out, query_y)
        return loss + self.config.eta * self.log_det(factors), metrics

    def draws(self, params: Params, support_x: Tensor, support_y: Tensor, samples: int
              ) -> list[Params]:
        """`samples` networks from N(phi, (H + tau I)^-1), H the support set's curvature."""
        _, factors = curvature.kfac_factors(
            self, params, support_x, classification=not support_y.is_floating_point(),
            create_graph=False)
        g = episode_generator("llama", self.config.sample_seed, 0, support_x)
        tau, diagonal = self.prior_precision(), self.config.curvature == "diagonal"
        deltas = []
        for f in factors.values():
            f = curvature.Factors(f.a.detach(), f.g.detach(), f.positions)
            eps = torch.randn((samples, f.g.shape[0], f.a.shape[0]), generator=g,
                              dtype=f.a.dtype).to(f.a.device)  # on the CPU: the generator's
            deltas.append(curvature.posterior_draw(f, tau, eps, diagonal))
        return [curvature.perturbed(params, self.layers, {n: d[s] for n, d in
                                                          zip(factors, deltas, strict=True)})
                for s in range(samples)]

    def function_samples(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                         samples: int) -> Tensor:
        """Sampled networks' outputs on the query `[S, M, d]` (noise-free functions)."""
        params = detached_unless_grad(
            self.inner_loop(self.start_params(), support_x, support_y, self.steps()))
        return torch.stack([self.predictor(p, support_x)(query_x).detach()
                            for p in self.draws(params, support_x, support_y, samples)])

    def predictive(self, support_x: Tensor, support_y: Tensor, query_x: Tensor
                   ) -> tuple[Tensor, Tensor]:
        """Regression: mean `[M, d]` and covariance `[M, d, d]` over `samples` draws (the MAP
        network alone when 0), plus `noise_var` on the diagonal."""
        s = self.config.samples
        f = (self.function_samples(support_x, support_y, query_x, s) if s else
             self.adapt(support_x, support_y)(query_x).detach()[None])
        mean, dev = f.mean(0), f - f.mean(0)
        eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
        return mean, torch.einsum("smi,smj->mij", dev, dev) / len(f) + self.config.noise_var * eye

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        params = detached_unless_grad(
            self.inner_loop(self.start_params(), support_x, support_y, self.steps()))
        s = self.config.samples
        if s == 0 or self.training:
            return self.predictor(params, support_x)
        nets = [self.predictor(p, support_x)
                for p in self.draws(params, support_x, support_y, s)]
        if support_y.is_floating_point():
            return lambda query_x: torch.stack([net(query_x) for net in nets]).mean(0)
        return lambda query_x: torch.logsumexp(
            torch.stack([net(query_x).log_softmax(-1) for net in nets]), 0) - math.log(s)
