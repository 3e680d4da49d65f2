"""MetaOptNet: a multi-class SVM (or ridge regression) on meta-learned features, per task.

Lee, Maji, Ravichandran, Soatto. "Meta-Learning with Differentiable Convex Optimization".
CVPR 2019. arXiv:1904.03758.

The backbone f_phi embeds support and query. The base learner is the Crammer-Singer multi-class
SVM on the support features (Eq. 8-10), solved in its dual, a QP over alpha [N K, N]:
    max_alpha  -1/2 sum_k ||sum_n alpha_n^k f(x_n)||^2 + sum_n alpha_n^{y_n}
    s.t.  alpha_n^k <= C 1[y_n = k],   sum_k alpha_n^k = 0,
which needs the support Gram matrix only; query logits are s_k(x) = gamma sum_n alpha_n^k
f(x_n) . f(x) with a learned scale gamma (Sec. 3.3). The meta-gradient flows through the QP's
optimality (KKT) conditions (Sec. 3.2; `metazoo.solvers.svm_dual`, an interior-point solver
differentiated implicitly). The meta-loss is the query cross-entropy with label smoothing 0.1
(Sec. 4.3). `metaoptnet_ridge` replaces the SVM by ridge regression (lambda 50, the paper's
"MetaOptNet-RR"; its QP's solution is twice the ridge weights, kept). Settings: C = 0.1, 3 QP
iterations in meta-training and more at test (here 15), gamma starts at 1; ResNet-12; 5-way
training episodes with more shots than at test (15 miniImageNet, 5 CIFAR-FS and FC100), 6 queries
per class, 8 episodes per batch; SGD with Nesterov momentum 0.9, lr 0.1, weight decay 5e-4.
Deviations: batch norm uses batch statistics only (support and query each their own).
Presets: metaoptnet_svm-omniglot-5w1s, -glyphs-5w1s; metaoptnet_ridge-omniglot-5w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.adaptation import metrics_of
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.solvers import ridge_regression, svm_dual, svm_logits
from metazoo.types import Predictor


@dataclass(frozen=True)
class MetaOptNetConfig(AlgorithmConfig):
    base_learner: Literal["svm", "ridge"] = "svm"  # SVM-CS (Eq. 8-10) or ridge ("RR")
    svm_c: float = 0.1  # C of the SVM (reference code's C_reg)
    ridge_lambda: float = 50.0  # lambda of the ridge base learner (reference code)
    solver_iters: int = 3  # QP iterations in meta-training (Sec. 4.3: 3)
    eval_solver_iters: int = 15  # QP iterations at evaluation: more than in training
    label_smoothing: float = 0.1  # epsilon of the training loss (Sec. 4.3)
    init_scale: float = 1.0  # gamma's start (reference code)

    def validate(self) -> None:
        for name in ("svm_c", "ridge_lambda"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"metaoptnet {name} must be a finite number > 0, got {value}")
        if self.solver_iters < 1 or self.eval_solver_iters < 1:
            raise ConfigError("metaoptnet solver_iters and eval_solver_iters must be >= 1, got "
                              f"{self.solver_iters} and {self.eval_solver_iters}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"metaoptnet label_smoothing must be in [0, 1), "
                              f"got {self.label_smoothing}")


@register("metaoptnet_ridge", display="MetaOptNet-RR", family="closed_form",
          config=MetaOptNetConfig, defaults={"base_learner": "ridge"},
          paper="Lee, Maji, Ravichandran, Soatto. Meta-Learning with Differentiable Convex "
                "Optimization. CVPR 2019 (ridge regression)", tasks={"classification"})
@register("metaoptnet_svm", display="MetaOptNet-SVM", family="closed_form",
          config=MetaOptNetConfig,
          paper="Lee, Maji, Ravichandran, Soatto. Meta-Learning with Differentiable Convex "
                "Optimization. CVPR 2019", tasks={"classification"})
class MetaOptNet(Algorithm):
    """MetaOptNet: per-task convex base learner (SVM or ridge) on meta-learned features."""

    config: MetaOptNetConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        self.scale = nn.Parameter(torch.tensor(self.config.init_scale))  # gamma

    def can_vmap(self) -> bool:
        """The ridge learner runs under vmap; the SVM's interior point stops per task."""
        return self.config.base_learner == "ridge"

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n, cfg = ways or self.ways, self.config
        zs = self.backbone(support_x)  # [N K, D]; the query is embedded apart, as the paper's
        if cfg.base_learner == "ridge":
            targets = F.one_hot(support_y, n).to(zs.dtype)
            w = 2 * ridge_regression(zs[None], targets[None], cfg.ridge_lambda)[0]  # [D, N]
            return lambda query_x: self.scale * (self.backbone(query_x) @ w)
        iters = cfg.solver_iters if self.training else cfg.eval_solver_iters
        alpha = svm_dual((zs @ zs.T)[None], support_y[None], n, cfg.svm_c, iters)  # [1, NK, N]
        return lambda query_x: self.scale * svm_logits(
            (self.backbone(query_x) @ zs.T)[None], alpha)[0]

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Query cross-entropy, with the paper's label smoothing in training: the true class
        gets 1 - eps, every other eps / (N - 1) (torch's smoothing spreads eps over all N)."""
        out = self.adapt(support_x, support_y, ways=ways)(query_x)
        eps = self.config.label_smoothing if self.training and ways > 1 else 0.0
        loss = F.cross_entropy(out, query_y, label_smoothing=eps * ways / (ways - 1)
                               if eps else 0.0)
        return loss, metrics_of(loss, out, query_y)
