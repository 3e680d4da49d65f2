"""ALPaCA: Bayesian linear regression on meta-learned features, with a meta-learned prior.

Harrison, Sharma, Pavone. "Meta-Learning Priors for Efficient Online Bayesian Regression".
WAFR 2018. arXiv:1807.08912.

The model is y = K^T phi(x) + eps, eps ~ N(0, Sigma_eps), with features phi (the backbone) and a
matrix-normal prior on the last layer, K ~ MN(K_0, Lambda_0^-1, Sigma_eps) (Sec. 3). Given a
task's support (Phi, Y) the posterior is closed form (Eq. 5-6):
    Lambda_n = Phi^T Phi + Lambda_0,   K_n = Lambda_n^-1 (Phi^T Y + Lambda_0 K_0)
and the posterior predictive at a query x is Gaussian (Eq. 7):
    y | x ~ N(K_n^T phi(x), (1 + phi(x)^T Lambda_n^-1 phi(x)) Sigma_eps).
phi, K_0 and Lambda_0 = L L^T are meta-learned by maximising the query points' predictive
log-likelihood (Sec. 4, Eq. 8) through the closed-form posterior
(`metazoo.solvers.blr_posterior`, `blr_predictive`). As in the paper, a training task's context
size is drawn uniformly from 0..K, so the prior alone must predict too; evaluation uses all K.
Settings (reference code, sinusoid): phi an MLP 128-128-32 with tanh, Sigma_eps = 0.02 I
(fixed), Adam at 1e-3, 10 context and 20 query points per task.
Deviations: the context size is drawn from a generator seeded by (`context_seed`,
meta-iteration, episode) rather than numpy's global one; the loss is the mean negative
log-likelihood (the reference code's log det + quadratic form, halved, plus a constant).
Presets: alpaca-sinusoid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError, ShapeError
from metazoo.seeding import episode_generator
from metazoo.solvers import blr_log_likelihood, blr_posterior, blr_predictive
from metazoo.types import Predictor


@dataclass(frozen=True)
class ALPaCAConfig(AlgorithmConfig):
    output_dim: int = 1  # dimension of y
    noise_var: float = 0.02  # Sigma_eps = noise_var * I (reference code's sigma_eps, fixed)
    context_sizes: Literal["uniform", "all"] = "uniform"  # training context size ~ U{0..K}
    context_seed: int = 0  # with the meta-iteration and the episode, fixes the context sizes

    def validate(self) -> None:
        if self.output_dim < 1:
            raise ConfigError(f"alpaca output_dim must be >= 1, got {self.output_dim}")
        if not (self.noise_var > 0 and math.isfinite(self.noise_var)):
            raise ConfigError(f"alpaca noise_var must be a finite number > 0, "
                              f"got {self.noise_var}")


@register("alpaca", display="ALPaCA", family="bayesian", config=ALPaCAConfig,
          paper="Harrison, Sharma, Pavone. Meta-Learning Priors for Efficient Online Bayesian "
                "Regression. WAFR 2018", tasks={"regression"})
class ALPaCA(Algorithm):
    """ALPaCA: a meta-learned feature map and matrix-normal prior; exact posterior per task."""

    config: ALPaCAConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        d, c = int(backbone.feature_dim), self.config.output_dim  # type: ignore[arg-type]
        self.prior_mean = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, c)))  # K_0
        self.prior_factor = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, d)))  # L
        self.step = 0  # meta-iteration, set by begin_step: seeds the context sizes

    def begin_step(self, step: int, total: int) -> None:
        self.step = step

    def can_vmap(self) -> bool:
        """Not while drawing context sizes (they are drawn from the episode's bytes)."""
        return not (self.training and self.config.context_sizes == "uniform")

    def prior_precision(self) -> Tensor:
        """Lambda_0 = L L^T (positive semi-definite by construction)."""
        return self.prior_factor @ self.prior_factor.T

    def noise(self, like: Tensor) -> Tensor:
        """Sigma_eps, `[c, c]`."""
        return self.config.noise_var * torch.eye(self.config.output_dim, dtype=like.dtype,
                                                 device=like.device)

    def predictive(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                   context: int | None = None) -> tuple[Tensor, Tensor]:
        """Posterior predictive mean `[M, c]` and covariance `[M, c, c]` (Eq. 7) from the first
        `context` support points (default all)."""
        if support_y.dim() != 2 or support_y.shape[1] != self.config.output_dim:
            raise ShapeError(f"alpaca needs targets [K, {self.config.output_dim}], got "
                             f"{tuple(support_y.shape)}; set algorithm.output_dim")
        phi_s, phi_q = self.backbone(support_x), self.backbone(query_x)
        if context is not None:  # rows past the context contribute nothing to Phi^T Phi, Phi^T Y
            keep = (torch.arange(phi_s.shape[0], device=phi_s.device) < context).to(phi_s.dtype)
            phi_s, support_y = phi_s * keep[:, None], support_y * keep[:, None]
        k_n, lambda_n = blr_posterior(phi_s[None], support_y[None], self.prior_mean,
                                      self.prior_precision())
        mean, cov = blr_predictive(phi_q[None], k_n, lambda_n, self.noise(phi_q))
        return mean[0], cov[0]

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        return lambda query_x: self.predictive(support_x, support_y, query_x)[0]

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean negative predictive log-likelihood of the query points (Eq. 8)."""
        context = None
        if self.training and self.config.context_sizes == "uniform":
            g = episode_generator("alpaca", self.config.context_seed, self.step, support_x)
            context = int(torch.randint(support_x.shape[0] + 1, (), generator=g))
        mean, cov = self.predictive(support_x, support_y, query_x, context)
        nll = -blr_log_likelihood(query_y[None], mean[None], cov[None])[0].mean()
        return nll, {"mse": F.mse_loss(mean, query_y).detach()}  # the loss logged is the NLL
