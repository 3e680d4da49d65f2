"""PLATIPUS (probabilistic MAML): a meta-learned Gaussian over MAML's initialisation.

Finn, Xu, Levine. "Probabilistic Model-Agnostic Meta-Learning". NeurIPS 2018. arXiv:1806.02817.

Meta-parameters: mu_theta (the network: backbone + head), sigma_theta^2 and v_q (diagonal, one
entry per weight), scalar steps gamma_p, gamma_q. L is MAML's task loss (cross-entropy, MSE), so
-grad log p = grad L. Meta-training (Algorithm 1), per task:
    q(theta | D_tr, D_test) = N(mu_theta - gamma_q grad_mu L(mu_theta, D_test), v_q)   (l. 6-7)
    theta ~ q,  phi = theta - alpha grad_theta L(theta, D_tr)   (MAML's inner loop, l. 8-9)
    p(theta | D_tr) = N(mu_theta - gamma_p grad_mu L(mu_theta, D_tr), sigma_theta^2)    (l. 10)
    loss = L(phi, D_test) + kl_weight * KL(q || p)                                      (l. 11)
the negated lower bound of Sec. 4, KL summed over weights. q shifts by the TEST points' loss
alone, as Algorithm 1 (l. 6, 11: q(theta | D_test)): the KL to a prior already conditioned on
D_tr then measures only what the test points add (`posterior_data: train_test` uses both).
Meta-testing (Algorithm 2): theta_s ~ p(theta | D_tr), phi_s by the inner loop, s = 1..S
(`samples`). Output: classification log(1/S sum_s softmax f_phi_s(x)); regression the mean of
f_phi_s(x), with `predictive` (moments of the S functions + noise_var I) and
`function_samples`. Draws: one N(0, 1) tensor per weight in parameter order, from a generator of
(sample_seed, meta-iteration, episode), in evaluation (sample_seed, episode); never the global one.
Settings: one inner step, second order, Adam (Alg. 1); alpha and the data as MAML's.
Deviations: the paper gives no start for sigma_theta, sqrt(v_q), gamma_p, gamma_q (ours: 0.01,
0.005, 0.01, 0.01); log standard deviations are learned (positivity); the presets weigh the KL
by 0.1 (1.0 learnt slower in short runs).
Presets: platipus-sinusoid_line, platipus-sinusoid, platipus-glyphs-5w1s, platipus-omniglot-5w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import first_order_now, loss_and_metrics, support_loss
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.networks import InnerLoopAlgorithm, InnerLoopConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.inner_loop import sgd_steps
from metazoo.seeding import episode_generator
from metazoo.types import Params, Predictor


@dataclass(frozen=True)
class PLATIPUSConfig(InnerLoopConfig):
    # inner_lr (alpha), inner_steps, eval_inner_steps, first_order, bn_mode: MAML's (the base)
    kl_weight: float = 1.0  # weight of KL(q || p) (Alg. 1 l. 11: 1, the bound itself)
    prior_std_init: float = 0.01  # sigma_theta's start, every entry (ours: the paper gives none)
    posterior_std_init: float = 0.005  # sqrt(v_q)'s start (ours: narrower than the prior)
    prior_step_init: float = 0.01  # gamma_p's start (ours)
    posterior_step_init: float = 0.01  # gamma_q's start (ours)
    posterior_data: Literal["test", "train_test"] = "test"  # q's shift: D_test (Alg. 1 l. 6)
    samples: int = 10  # S functions drawn per task at test (Alg. 2); ours
    noise_var: float = 0.09  # regression likelihood variance in `predictive`: 0.3^2 (Sec. 5.1)
    sample_seed: int = 0  # with the meta-iteration and the episode, fixes every draw

    def validate(self) -> None:
        super().validate()
        stds = (self.prior_std_init, self.posterior_std_init)
        if not all(s > 0 and math.isfinite(s) for s in stds):
            raise ConfigError(f"prior_std_init and posterior_std_init must be finite and > 0, "
                              f"got {list(stds)}")
        steps = (self.prior_step_init, self.posterior_step_init)
        if min(steps) < 0:
            raise ConfigError(f"prior_step_init and posterior_step_init must be >= 0, "
                              f"got {list(steps)}")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.samples < 1:
            raise ConfigError(f"samples must be >= 1, got {self.samples}")
        if not self.noise_var > 0:
            raise ConfigError(f"noise_var must be > 0, got {self.noise_var}")


def diagonal_gaussian_kl(mean_q: Params, log_std_q: Params, mean_p: Params, log_std_p: Params
                         ) -> Tensor:
    """KL(N(mean_q, diag e^(2 log_std_q)) || N(mean_p, diag e^(2 log_std_p))), summed over every
    entry of every tensor named in `mean_q`."""
    total = []
    for k, m in mean_q.items():
        ratio = torch.exp(2 * (log_std_q[k] - log_std_p[k]))  # var_q / var_p
        mahalanobis = (m - mean_p[k]).square() * torch.exp(-2 * log_std_p[k])
        total.append((log_std_p[k] - log_std_q[k] + (ratio + mahalanobis - 1) / 2).sum())
    return torch.stack(total).sum()


def _key(name: str) -> str:
    """A parameter name as a `ParameterDict` key, which may not hold dots."""
    return name.replace(".", ":")


@register("platipus", display="PLATIPUS", family="bayesian", config=PLATIPUSConfig,
          paper="Finn, Xu, Levine. Probabilistic Model-Agnostic Meta-Learning. NeurIPS 2018",
          tasks={"classification", "regression"})
class PLATIPUS(InnerLoopAlgorithm):
    """PLATIPUS: sample MAML's initialisation from a learned prior shifted by the support
    gradient, then adapt it by MAML's inner loop; several functions per task."""

    config: PLATIPUSConfig
    vmappable = False  # every draw comes from a generator seeded by the episode's bytes

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg, network = self.config, dict(self.named_parameters())

        def log_stds(std: float) -> nn.ParameterDict:  # one tensor per weight, same shape
            return nn.ParameterDict({_key(k): nn.Parameter(torch.full_like(p, math.log(std)))
                                     for k, p in network.items()})

        def step(start: float) -> nn.Parameter:
            return nn.Parameter(torch.tensor(start))

        self.prior_log_std = log_stds(cfg.prior_std_init)  # log sigma_theta
        self.posterior_log_std = log_stds(cfg.posterior_std_init)  # log sqrt(v_q)
        self.gamma_p, self.gamma_q = step(cfg.prior_step_init), step(cfg.posterior_step_init)
        self.step = 0  # meta-iteration, set by begin_step: seeds the training draws

    def begin_step(self, step: int, total: int) -> None:
        self.step = step

    def start_params(self) -> Params:
        """mu_theta: the network's parameters (not the variances and steps)."""
        return {k: v for k, v in params_of(self).items() if _key(k) in self.prior_log_std}

    @staticmethod
    def by_name(log_stds: nn.ParameterDict) -> Params:
        """A log-std dict keyed by network parameter name (`head.weight`, ...)."""
        return {k.replace(":", "."): v for k, v in log_stds.items()}

    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params:
        """MAML's `steps` SGD steps (alpha = inner_lr) on the support loss from `params`."""
        first_order = first_order_now(self, self.config.first_order)
        return sgd_steps(support_loss(self, support_x, support_y, first_order=first_order),
                         params, steps=steps, lr=self.config.inner_lr, first_order=first_order)

    def shifted_mean(self, x: Tensor, y: Tensor, gamma: Tensor) -> Params:
        """mu_theta - gamma grad_mu L(mu_theta; x, y): the mean of q (gamma_q) or p (gamma_p)."""
        first_order = first_order_now(self, self.config.first_order)
        return sgd_steps(support_loss(self, x, y, first_order=first_order), self.start_params(),
                         steps=1, lr=gamma, first_order=first_order)

    def generator(self, support_x: Tensor) -> torch.Generator:
        """The task's source of draws: (seed, meta-iteration, episode) in training, (seed,
        episode) in evaluation, so a test episode always sees the same functions."""
        if self.training:
            return episode_generator("platipus", self.config.sample_seed, self.step, support_x)
        return episode_generator("platipus/eval", self.config.sample_seed, 0, support_x)

    @staticmethod
    def draw(mean: Params, log_std: Params, g: torch.Generator) -> Params:
        """mean + exp(log_std) * eps, one N(0, 1) tensor per name in `mean`'s order."""
        return {k: m + log_std[k].exp() * torch.randn(m.shape, generator=g, dtype=m.dtype
                                                       ).to(m.device)
                for k, m in mean.items()}

    def sampled_params(self, support_x: Tensor, support_y: Tensor, samples: int) -> list[Params]:
        """Algorithm 2: `samples` draws theta_s ~ p(theta | D_tr), each adapted by inner steps."""
        mean = self.shifted_mean(support_x, support_y, self.gamma_p)
        log_std, g = self.by_name(self.prior_log_std), self.generator(support_x)
        phis = [self.inner_loop(self.draw(mean, log_std, g), support_x, support_y, self.steps())
                for _ in range(samples)]
        if self.training and torch.is_grad_enabled():  # a meta-gradient may flow through them
            return phis
        return [{k: v.detach() for k, v in p.items()} for p in phis]  # evaluation keeps no graph

    def function_samples(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                         samples: int) -> Tensor:
        """Outputs `[S, M, d]` of `samples` adapted networks at `query_x` (noise-free)."""
        return torch.stack([self.predictor(p, support_x)(query_x)
                            for p in self.sampled_params(support_x, support_y, samples)])

    def predictive(self, support_x: Tensor, support_y: Tensor, query_x: Tensor
                   ) -> tuple[Tensor, Tensor]:
        """Mean `[M, d]` and covariance `[M, d, d]` of the `samples` functions (moments over
        the samples), plus noise_var on the diagonal."""
        f = self.function_samples(support_x, support_y, query_x, self.config.samples)
        mean = f.mean(0)
        centred = f - mean  # [S, M, d]
        cov = torch.einsum("smi,smj->mij", centred, centred) / f.shape[0]
        eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
        return mean, cov + self.config.noise_var * eye

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        self.check_ways(ways or self.ways)
        predictors = [self.predictor(p, support_x)
                      for p in self.sampled_params(support_x, support_y, self.config.samples)]

        def predict(query_x: Tensor) -> Tensor:
            outs = torch.stack([f(query_x) for f in predictors])  # [S, M, N or d]
            if support_y.is_floating_point():  # regression: the predictive mean
                return outs.mean(0)
            return torch.logsumexp(F.log_softmax(outs, -1), 0) - math.log(len(predictors))
        return predict

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Algorithm 1, lines 6-11: query loss at phi + kl_weight * KL(q || p)."""
        self.check_ways(ways)
        post_x, post_y = query_x, query_y
        if self.config.posterior_data == "train_test":
            post_x, post_y = torch.cat([support_x, query_x]), torch.cat([support_y, query_y])
        mean_q = self.shifted_mean(post_x, post_y, self.gamma_q)
        mean_p = self.shifted_mean(support_x, support_y, self.gamma_p)
        log_std_q = self.by_name(self.posterior_log_std)
        log_std_p = self.by_name(self.prior_log_std)
        theta = self.draw(mean_q, log_std_q, self.generator(support_x))
        phi = self.inner_loop(theta, support_x, support_y, self.steps())
        loss, metrics = loss_and_metrics(self.predictor(phi, support_x)(query_x), query_y)
        kl = diagonal_gaussian_kl(mean_q, log_std_q, mean_p, log_std_p)
        return loss + self.config.kl_weight * kl, metrics
