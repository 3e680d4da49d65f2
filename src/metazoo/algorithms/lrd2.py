"""LR-D2: logistic regression on meta-learned features, a few Newton steps per task.

Bertinetto, Henriques, Torr, Vedaldi. "Meta-learning with differentiable closed-form solvers".
ICLR 2019. arXiv:1805.08136. Sec. 3.3.

As R2-D2 (`metazoo.algorithms.r2d2`), with L2-regularised logistic regression as the base
learner, one-vs-rest for N classes (N binary problems). Each is solved by iteratively reweighted
least squares from w_0 = 0: Newton's method, where step i is a weighted ridge regression
    w_i = (X^T S_i X + lambda I)^-1 X^T S_i z_i = X^T (X X^T + lambda S_i^-1)^-1 z_i
with mu_i = sigmoid(X w_{i-1}), S_i = diag(mu_i (1 - mu_i)), working response
z_i = X w_{i-1} + S_i^-1 (y - mu_i): the Woodbury form again costs one (N K) x (N K) solve per
step (`metazoo.solvers.logistic_regression`). The query logits of class c are the c-th
binary problem's X_query w_c, and the meta-loss is their softmax cross-entropy, back-propagated
through the Newton steps into phi and lambda. Settings: lambda starts at 50 (reference code),
`newton_steps` as the paper's ablation (1 to 5); the reference code adds no calibration layer.
Deviations: batch norm uses batch statistics only; fixed shots per training episode (the
reference code draws 1-10).
Presets: lrd2-omniglot-5w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.r2d2 import episode_features, positive_scalar
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.solvers import logistic_regression
from metazoo.types import Predictor


@dataclass(frozen=True)
class LRD2Config(AlgorithmConfig):
    init_lambda: float = 50.0  # lambda's start (reference code)
    learn_lambda: bool = True  # meta-learn lambda, as R2-D2
    newton_steps: int = 5  # IRLS iterations (reference code's --base_learner.iterations)

    def validate(self) -> None:
        if not (self.init_lambda > 0 and math.isfinite(self.init_lambda)):
            raise ConfigError(f"lrd2 init_lambda must be a finite number > 0, "
                              f"got {self.init_lambda}")
        if self.newton_steps < 1:
            raise ConfigError(f"lrd2 newton_steps must be >= 1, got {self.newton_steps}")


@register("lrd2", display="LR-D2", family="closed_form", config=LRD2Config,
          paper="Bertinetto, Henriques, Torr, Vedaldi. Meta-learning with differentiable "
                "closed-form solvers. ICLR 2019 (logistic regression)", tasks={"classification"})
class LRD2(Algorithm):
    """LR-D2: per-task one-vs-rest logistic regression by Newton steps on meta-learned features."""

    config: LRD2Config
    log_lambda: Tensor  # log of lambda: a parameter, or a buffer when not learned

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        positive_scalar(self, "log_lambda", self.config.init_lambda, self.config.learn_lambda)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways

        def predict(query_x: Tensor) -> Tensor:
            zs, zq = episode_features(self.backbone, support_x, query_x)
            targets = F.one_hot(support_y, n).to(zs.dtype)  # N one-vs-rest problems
            w = logistic_regression(zs[None], targets[None], self.log_lambda.exp(),
                                    self.config.newton_steps)[0]  # [D + 1, N]
            return zq @ w

        return predict
