"""VERSA: an amortised Gaussian posterior over each class's softmax weights, Monte-Carlo predictive.

Gordon, Bronskill, Bauer, Nowozin, Turner. "Meta-Learning Probabilistic Inference for Prediction".
ICLR 2019. arXiv:1805.09921. Reference code: github.com/Gordonjo/versa (run_classifier.py).

The backbone maps inputs to features x. For each class k the support features are mean-pooled
(instance pooling, one class at a time: any N at test) and an amortisation network gives a
diagonal Gaussian q(w_k, b_k | D_k): four MLPs (weight mean, weight log-variance, bias mean, bias
log-variance), each d -> hidden -> hidden -> out with ELU (code `inference_block`). With the local
reparameterisation trick the logits are drawn, not the weights:
    logit_k ~ N(mu_k . x + mu_b,k, (x^2) . sigma_k^2 + sigma_b,k^2).
Training maximises Eq. 4, the mean over query points of log (1/L sum_l p(y | x, w_l)), a
log-mean-exp over L samples with no KL term; that is the cross-entropy of the log Monte-Carlo
predictive that the predictor returns, log(1/S sum_s softmax(logit_s)), so `task_loss` is the
base one. Draws come from generators of (sample_seed, meta-iteration, episode) in training and
of (sample_seed, episode) in evaluation. Support and query features are separate backbone passes
(the code's two calls, batch statistics of each set).
Settings (code, which states it reproduces the published numbers): L = 10 in training and test,
d_theta = 256, Adam 1e-4, 16 tasks per batch, 15 query points per class in training and `shot`
at test; weights Xavier-normal, biases N(0, 1e-3^2). Deviations: the registered conv4 (64 features
at 28x28 by floor pooling; the code pads to 256); no dropout in the backbone (code: keep 0.9
Omniglot, 0.5 miniImageNet); the code's accuracy takes the argmax of a logsumexp of raw logits,
here of the averaged probabilities.
Presets: versa-omniglot-5w1s, versa-omniglot-20w1s, versa-miniimagenet-5w1s, versa-glyphs-5w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.protonet import prototypes
from metazoo.algorithms.r2d2 import with_bias_feature
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.seeding import episode_generator
from metazoo.types import Predictor


@dataclass(frozen=True)
class VersaConfig(AlgorithmConfig):
    hidden: int | None = None  # d_theta, the MLPs' hidden width (None: the feature dim, as code)
    train_samples: int = 10  # L of Eq. 4 in training (code --samples 10)
    samples: int = 10  # Monte-Carlo samples of the predictive in evaluation (code: the same L)
    sample_seed: int = 0  # with the meta-iteration and the episode, fixes every draw

    def validate(self) -> None:
        if self.hidden is not None and self.hidden < 1:
            raise ConfigError(f"versa hidden must be >= 1 (or null), got {self.hidden}")
        if self.train_samples < 1 or self.samples < 1:
            raise ConfigError(f"versa train_samples and samples must be >= 1, got "
                              f"{self.train_samples} and {self.samples}")


def inference_block(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Three dense layers with ELU between; Xavier-normal weights, N(0, 1e-3^2) biases (code)."""
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                        nn.Linear(hidden, d_out))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.normal_(m.bias, std=1e-3)
    return net


class AmortisedClassifier(nn.Module):
    """q(w_k, b_k | D_k) of a linear softmax layer from pooled class features.

    Maps `[N, D]` (one row per class) to the mean and log-variance `[N, D + 1]` of each class's
    weights, the bias in the last column; each row depends on its own class only.
    """

    def __init__(self, feature_dim: int, hidden: int) -> None:
        super().__init__()
        self.weight_mean = inference_block(feature_dim, hidden, feature_dim)
        self.weight_log_variance = inference_block(feature_dim, hidden, feature_dim)
        self.bias_mean = inference_block(feature_dim, hidden, 1)
        self.bias_log_variance = inference_block(feature_dim, hidden, 1)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.cat([self.weight_mean(pooled), self.bias_mean(pooled)], -1)
        log_var = torch.cat([self.weight_log_variance(pooled), self.bias_log_variance(pooled)], -1)
        return mean, log_var


def logit_moments(x: Tensor, mean: Tensor, log_var: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance `[M, N]` of the logits [x, 1] . w_k for w_k ~ N(mean_k, exp(log_var_k))
    (the local reparameterisation): features `[M, D]`, `mean`, `log_var` `[N, D + 1]`."""
    xa = with_bias_feature(x)
    return xa @ mean.T, xa.square() @ log_var.exp().T


def log_predictive(logits: Tensor) -> Tensor:
    """log(1/S sum_s softmax(logits_s)): `[S, M, N]` -> `[M, N]` (a log-mean-exp over samples)."""
    return torch.logsumexp(F.log_softmax(logits, -1), 0) - math.log(logits.shape[0])


@register("versa", display="VERSA", family="bayesian", config=VersaConfig,
          paper="Gordon, Bronskill, Bauer, Nowozin, Turner. Meta-Learning Probabilistic "
                "Inference for Prediction. ICLR 2019", tasks={"classification"})
class Versa(Algorithm):
    """VERSA: per-class amortised Gaussian classifier weights, sampled logits, MC predictive."""

    config: VersaConfig
    vmappable = False  # every predictor draws from a generator seeded by the episode's bytes

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        d = int(backbone.feature_dim)  # type: ignore[arg-type]
        self.amortisation = AmortisedClassifier(d, self.config.hidden or d)
        self.step = 0  # meta-iteration, set by begin_step: seeds the training draws

    def begin_step(self, step: int, total: int) -> None:
        self.step = step

    def generator(self, support_x: Tensor) -> torch.Generator:
        """The episode's source of draws: per meta-iteration in training, fixed in evaluation."""
        if self.training:
            return episode_generator("versa", self.config.sample_seed, self.step, support_x)
        return episode_generator("versa/eval", self.config.sample_seed, 0, support_x)

    def posterior(self, support_x: Tensor, support_y: Tensor, ways: int) -> tuple[Tensor, Tensor]:
        """q's mean and log-variance `[N, D + 1]` from the class means of the support features."""
        return self.amortisation(prototypes(self.backbone(support_x), support_y, ways))

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        mean, log_var = self.posterior(support_x, support_y, self.check_ways(ways or self.ways))

        def predict(query_x: Tensor) -> Tensor:
            m, v = logit_moments(self.backbone(query_x), mean, log_var)  # [M, N] each
            samples = self.config.train_samples if self.training else self.config.samples
            eps = torch.randn((samples, *m.shape), generator=self.generator(support_x),
                              dtype=m.dtype).to(m.device)  # drawn on the CPU, as the generator
            return log_predictive(m + v.sqrt() * eps)  # [M, N]

        return predict
