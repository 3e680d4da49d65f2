"""Bayesian Model-Agnostic Meta-Learning (BMAML).

Yoon, Kim, Dia, Kim, Bengio, Ahn. "Bayesian Model-Agnostic Meta-Learning". NeurIPS 2018.
arXiv:1806.03836.

The meta-parameters Theta_0 are M particles, each a whole network (backbone + linear head, as
MAML's). Bayesian fast adaptation (Sec. 3.1): n SVGD steps (`metazoo.svgd`) of size eps on the
task posterior p(theta | D_trn) proportional to prod_i p(y_i | x_i, theta) N(theta; 0, 1/lambda),
a categorical likelihood for labels, N(y; f(x), noise_var I) for targets. Predictions average
the particles: log (1/M sum_m softmax f_m(x)), or the mean of f_m(x) with `predictive` (their
moment-matched Gaussian plus the noise) and `function_samples` (the particles' functions).
Meta-loss `chaser` (Sec. 3.2, Eq. 5-6): the chaser Theta_n = SVGD_n(Theta_0; D_trn), the leader
Theta_{n+s} = SVGD_s(Theta_n; D_trn u D_val) with no gradient, and
    L = sum_m ||theta_n^m - stopgrad(theta_{n+s}^m)||^2   (mean over tasks).
Meta-loss `bfa` (Sec. 3.1): -log (1/M sum_m p(D_val | theta_n^m)), divided by |D_val|.
Settings (reference code jaesik817/bmaml, sinusoid): M 10, n = s = 1, eps 1e-3 for chaser and
leader, Adam 1e-3, 10 tasks per meta-batch, a 40-40-40 ReLU MLP, second order.
Deviations: the code learns a likelihood precision gamma and a prior precision lambda per particle
(Gamma hyper-priors; initial 1/gamma = 0.01, lambda = 1): here both are fixed (`noise_var`,
`prior_precision`); its repulsion omits the kernel gradient's factor 2 and its median runs over
the whole distance matrix, zeros included (here Liu & Wang's h = med^2 / log M); particles are
fresh initialisations by `reset_parameters` (resnet12's own init only for particle 0); the
paper's parameter sharing among particles for large models is not implemented.
Presets: bmaml-sinusoid, bmaml-sinusoid_line, bmaml-glyphs-5w1s, bmaml-omniglot-5w1s,
bmaml-miniimagenet-5w1s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import BNMode, detached_unless_grad, first_order_now, inner_steps_now
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import LinearHeadAlgorithm
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.metrics import accuracy
from metazoo.svgd import stack_particles, svgd_steps
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class BMAMLConfig(AlgorithmConfig):
    particles: int = 10  # M (the code's sinusoid runs: num_particles=10)
    inner_lr: float = 1e-3  # eps of the chaser's SVGD steps (code: follow_lr)
    inner_steps: int = 1  # n, SVGD steps on D_trn while meta-training (code: follow_step)
    eval_inner_steps: int | None = None  # steps at evaluation; None = inner_steps
    leader_steps: int = 1  # s, further steps of the leader on D_trn u D_val (code: leader_step)
    leader_lr: float | None = None  # eps of the leader; None = inner_lr (code: leader_lr 1e-3)
    meta_loss: Literal["chaser", "bfa"] = "chaser"  # Sec. 3.2 (BMAML) or Sec. 3.1 (BFA)
    first_order: bool = False  # SVGD directions as constants in the meta-gradient (code: False)
    noise_var: float = 0.01  # regression likelihood variance (code: initial 1/gamma = 0.01)
    prior_precision: float = 1.0  # lambda of the N(0, 1/lambda) weight prior; 0 = flat (code: 1)
    bn_mode: BNMode = "transductive"  # statistics of each batch, as MAML's code

    def validate(self) -> None:
        if self.particles < 1:
            raise ConfigError(f"particles must be >= 1, got {self.particles}")
        if self.inner_lr <= 0 or (self.leader_lr is not None and self.leader_lr <= 0):
            raise ConfigError(f"inner_lr and leader_lr must be > 0, got {self.inner_lr} and "
                              f"{self.leader_lr}")
        if self.inner_steps < 1 or (self.eval_inner_steps is not None
                                    and self.eval_inner_steps < 1):
            raise ConfigError("inner_steps and eval_inner_steps must be >= 1, got "
                              f"{self.inner_steps} and {self.eval_inner_steps}")
        if self.leader_steps < 0:
            raise ConfigError(f"leader_steps must be >= 0, got {self.leader_steps}")
        if not self.noise_var > 0 or self.prior_precision < 0:
            raise ConfigError(f"noise_var must be > 0 and prior_precision >= 0, got "
                              f"{self.noise_var} and {self.prior_precision}")


@register("bmaml", display="BMAML", family="bayesian", config=BMAMLConfig,
          paper="Yoon, Kim, Dia, Kim, Bengio, Ahn. Bayesian Model-Agnostic Meta-Learning. "
                "NeurIPS 2018", tasks={"classification", "regression"})
class BMAML(LinearHeadAlgorithm):
    """BMAML: M particles adapted by SVGD; chaser (or BFA) meta-loss."""

    config: BMAMLConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        stack_particles(self.backbone, self.config.particles)  # every weight now [M, ...]
        assert self.head is not None  # always added here (own_head_allowed is False)
        stack_particles(self.head, self.config.particles)

    def outputs(self, params: Params, x: Tensor, support_x: Tensor | None = None) -> Tensor:
        """Every particle's network on `x`: `[M, rows, out]`. With `support_x` and
        non-transductive batch norm, the statistics come from the support rows."""
        if support_x is None or self.config.bn_mode == "transductive":
            return torch.vmap(lambda p: self.forward_with(p, x))(params)
        n, both = support_x.shape[0], torch.cat([support_x, x])
        return torch.vmap(lambda p: self.forward_with(p, both, stats_rows=n))(params)[:, n:]

    def forward(self, x: Tensor) -> Tensor:
        """The particles' mean output at Theta_0, `[rows, out]` (the unadapted curve)."""
        return self.outputs(params_of(self), x).mean(0)

    def log_likelihood(self, out: Tensor, y: Tensor) -> Tensor:
        """log p(y_i | x_i, theta_m) for outputs `[M, rows, out]`: `[M, rows]`."""
        if not y.is_floating_point():
            labels = y[None, :, None].expand(out.shape[0], -1, 1)
            return out.log_softmax(-1).gather(-1, labels)[..., 0]
        var = self.config.noise_var
        return -((out - y) ** 2).sum(-1) / (2 * var) - out.shape[-1] / 2 * math.log(
            2 * math.pi * var)

    def neg_log_posterior(self, x: Tensor, y: Tensor) -> Callable[[Params], Tensor]:
        """particles -> sum over particles of -log p(theta_m | x, y), up to a constant."""
        lam = self.config.prior_precision

        def loss(params: Params) -> Tensor:
            total = -self.log_likelihood(self.outputs(params, x), y).sum()
            if lam > 0:
                total = total + lam / 2 * sum((v * v).sum() for v in params.values())
            return total

        return loss

    def adapted(self, support_x: Tensor, support_y: Tensor) -> Params:
        """Theta_n: the particles after the SVGD steps on the support set."""
        steps = inner_steps_now(self, self.config.inner_steps, self.config.eval_inner_steps)
        return svgd_steps(self.neg_log_posterior(support_x, support_y), params_of(self),
                          steps=steps, lr=self.config.inner_lr,
                          first_order=first_order_now(self, self.config.first_order))

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        params = detached_unless_grad(self.adapted(support_x, support_y))
        return lambda query_x: _ensemble(self.outputs(params, query_x, support_x), support_y)

    def predictive(self, support_x: Tensor, support_y: Tensor, query_x: Tensor
                   ) -> tuple[Tensor, Tensor]:
        """Mean `[Q, d]` and covariance `[Q, d, d]` of the particles' outputs, plus the noise."""
        out = self.function_samples(support_x, support_y, query_x, self.config.particles)
        dev = out - out.mean(0)
        cov = torch.einsum("mqi,mqj->qij", dev, dev) / out.shape[0]
        eye = torch.eye(out.shape[-1], dtype=out.dtype, device=out.device)
        return out.mean(0), cov + self.config.noise_var * eye

    def function_samples(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                         samples: int) -> Tensor:
        """The adapted particles' functions `[samples, Q, d]` (particle s mod M: no draws)."""
        params = detached_unless_grad(self.adapted(support_x, support_y))
        out = self.outputs(params, query_x, support_x)
        return out[torch.arange(samples, device=out.device) % out.shape[0]]

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        self.check_ways(ways)
        chaser = self.adapted(support_x, support_y)
        out = self.outputs(chaser, query_x, support_x)  # [M, Q, out]
        if self.config.meta_loss == "bfa":  # -log mean_m p(D_val | theta_m), per query point
            joint = self.log_likelihood(out, query_y).sum(1)  # [M]
            loss = (math.log(out.shape[0]) - torch.logsumexp(joint, 0)) / query_y.shape[0]
        else:
            loss = _chaser_loss(chaser, self.leader(chaser, support_x, support_y, query_x,
                                                    query_y))
        return loss, _metrics(_ensemble(out.detach(), query_y), query_y)

    def leader(self, chaser: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor,
               query_y: Tensor) -> Params:
        """Theta_{n+s}: the chaser moved s more steps on D_trn u D_val; constants."""
        fit = self.neg_log_posterior(torch.cat([support_x, query_x]),
                                     torch.cat([support_y, query_y]))
        lr = self.config.inner_lr if self.config.leader_lr is None else self.config.leader_lr
        start = {k: v.detach() for k, v in chaser.items()}
        moved = svgd_steps(fit, start, steps=self.config.leader_steps, lr=lr, first_order=True)
        return {k: v.detach() for k, v in moved.items()}


def _chaser_loss(chaser: Params, leader: Params) -> Tensor:
    """sum over particles and weights of (chaser - leader)^2 (Eq. 6)."""
    return torch.stack([((chaser[k] - leader[k]) ** 2).sum() for k in chaser]).sum()


def _ensemble(out: Tensor, y: Tensor) -> Tensor:
    """Particles' outputs `[M, Q, out]` -> mean targets, or log of the mean probabilities."""
    if y.is_floating_point():
        return out.mean(0)
    return torch.logsumexp(out.log_softmax(-1), 0) - math.log(out.shape[0])


def _metrics(pred: Tensor, y: Tensor) -> dict[str, Tensor]:
    if y.is_floating_point():
        return {"mse": F.mse_loss(pred, y).detach()}
    return {"acc": accuracy(pred, y)}
