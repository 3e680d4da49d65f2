"""R2-D2: ridge regression on meta-learned features, solved in closed form per task.

Bertinetto, Henriques, Torr, Vedaldi. "Meta-learning with differentiable closed-form solvers".
ICLR 2019. arXiv:1805.08136.

The backbone phi embeds support and query (one pass). The base learner is ridge regression from
the support features, with a constant feature for the bias, to one-hot labels (Eq. 4):
    W = argmin_W ||X W - Y||^2 + lambda ||W||^2 = X^T (X X^T + lambda I)^-1 Y      (Eq. 5)
the Woodbury (dual) form, an (N K) x (N K) system, used whenever the support is smaller than
the feature dimension (`metazoo.solvers.ridge_regression` picks the smaller system). Ridge
outputs are not calibrated for a softmax, so the query logits are (Eq. 6)
    Y_hat = alpha X_query W + beta
with alpha, beta and lambda meta-learned with phi by back-propagating the query cross-entropy
through the solver (Sec. 3.2). Settings: lambda starts at 50, alpha at 1e-4 (miniImageNet,
CIFAR-FS) or 10 (Omniglot), beta at 0; as the reference code, X and Y are scaled by 1/sqrt(N K);
Adam, 5e-3, halved every 20 epochs; training ways 60 (Omniglot), 16 (miniImageNet).
Backbone: `r2d2_conv` (96-192-384-512 filters, features of the last two blocks).
Deviations: batch norm uses batch statistics only (as every backbone here); the reference code
draws a random shot count (1-10) per training episode, here the preset's K is fixed.
Presets: r2d2-omniglot-5w1s, -20w1s, r2d2-glyphs-5w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.solvers import ridge_regression
from metazoo.types import Predictor


@dataclass(frozen=True)
class R2D2Config(AlgorithmConfig):
    init_lambda: float = 50.0  # lambda's start (reference code's init_lambda)
    learn_lambda: bool = True  # meta-learn lambda (Sec. 3.2); the reference code's default: off
    init_scale: float = 1e-4  # alpha's start: 1e-4 miniImageNet/CIFAR-FS, 10 Omniglot (code)
    init_bias: float = 0.0  # beta's start

    def validate(self) -> None:
        if not (self.init_lambda > 0 and math.isfinite(self.init_lambda)):
            raise ConfigError(f"r2d2 init_lambda must be a finite number > 0, "
                              f"got {self.init_lambda}")


def positive_scalar(module: nn.Module, name: str, value: float, learn: bool) -> None:
    """Register `log(value)` as parameter `name` (learned) or buffer (fixed); the scalar itself
    is `getattr(module, name).exp()`, positive whatever the optimiser does."""
    log_value = torch.tensor(math.log(value))
    if learn:
        module.register_parameter(name, nn.Parameter(log_value))
    else:
        module.register_buffer(name, log_value)


def with_bias_feature(z: Tensor) -> Tensor:
    """`[M, D]` -> `[M, D + 1]`: a constant 1 appended, so a linear map carries a bias."""
    return torch.cat([z, z.new_ones(z.shape[0], 1)], 1)


def episode_features(backbone: nn.Module, support_x: Tensor, query_x: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """Support and query features with the bias feature, from one backbone pass over
    `[support; query]` (as R2-D2's code: batch norm sees the episode)."""
    z = with_bias_feature(backbone(torch.cat([support_x, query_x])))
    return z[: support_x.shape[0]], z[support_x.shape[0]:]


@register("r2d2", display="R2-D2", family="closed_form", config=R2D2Config,
          paper="Bertinetto, Henriques, Torr, Vedaldi. Meta-learning with differentiable "
                "closed-form solvers. ICLR 2019", tasks={"classification"})
class R2D2(Algorithm):
    """R2-D2: per-task ridge regression on meta-learned features, calibrated by alpha, beta."""

    config: R2D2Config
    log_lambda: Tensor  # log of lambda: a parameter, or a buffer when not learned

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        positive_scalar(self, "log_lambda", cfg.init_lambda, cfg.learn_lambda)
        self.scale = nn.Parameter(torch.tensor(cfg.init_scale))  # alpha of Eq. 6
        self.bias = nn.Parameter(torch.tensor(cfg.init_bias))  # beta of Eq. 6

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways

        def predict(query_x: Tensor) -> Tensor:
            zs, zq = episode_features(self.backbone, support_x, query_x)
            root = math.sqrt(zs.shape[0])  # the reference code's 1/sqrt(N K) on X and Y
            targets = F.one_hot(support_y, n).to(zs.dtype) / root
            w = ridge_regression((zs / root)[None], targets[None], self.log_lambda.exp())[0]
            return self.scale * (zq @ w) + self.bias  # [M, N] (Eq. 6)

        return predict
