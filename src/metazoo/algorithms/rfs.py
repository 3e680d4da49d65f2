"""RFS: multinomial logistic regression on L2-normalised features of a pre-trained, frozen backbone.

Tian, Wang, Krishnan, Tenenbaum, Isola. "Rethinking Few-Shot Image Classification: a Good
Embedding Is All You Need?". ECCV 2020. arXiv:2003.11539.

A backbone f trained by plain classification over all meta-training classes (`metazoo pretrain`,
Sec. 3.2) is frozen; each task fits a linear classifier on the L2-normalised support features
(Sec. 3.2-3.3; the code's `meta_test(..., is_norm=True, classifier='LR')` calls scikit-learn's
`LogisticRegression` with its defaults: multinomial, L2 penalty, C = 1, intercept not penalised):
    min_{W, b}  sum_i CE(W z_i + b, y_i) + ||W||^2 / (2 C),    z = f(x) / ||f(x)||
and a query x is classified by W z + b. The solver is Newton's method in torch
(`metazoo.solvers.multinomial_logistic`) where the code runs L-BFGS (tolerance 1e-4): the same
minimiser. This is RFS-simple: no self-distillation (Sec. 3.4, RFS-distill) and no test-time copies
of the support set (the code's 5 augmented views of each support image).
Meta-loss (none in the paper, which never meta-trains): the query cross-entropy with (W, b) fitted
on detached support features, so a meta-gradient reaches f through the queries only.
Deviation: support and query are embedded in one backbone pass (the episode's batch-norm
statistics, as every algorithm here; the paper's backbone keeps running statistics).
Presets: rfs-omniglot-5w1s, rfs-glyphs-5w1s, on `metazoo pretrain` weights (model.pretrained).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.solvers.multinomial_logistic import multinomial_logistic
from metazoo.types import Predictor


@dataclass(frozen=True)
class RFSConfig(AlgorithmConfig):
    c: float = 1.0  # inverse penalty C: scikit-learn's default, used by the code (meta_eval.py)
    normalize: bool = True  # L2-normalise the features (is_norm=True; Sec. 3.3, Table 5)
    solver_steps: int = 10  # Newton steps (converged: gradient ~1e-15 in float64 on 5-way tasks)

    def validate(self) -> None:
        if self.c <= 0 or self.solver_steps < 1:
            raise ConfigError(f"c must be > 0 and solver_steps >= 1, got {self.c} and "
                              f"{self.solver_steps}")


@register("rfs", display="RFS", family="hybrid", config=RFSConfig,
          paper="Tian, Wang, Krishnan, Tenenbaum, Isola. Rethinking Few-Shot Image "
                "Classification: a Good Embedding Is All You Need? ECCV 2020",
          tasks={"classification"})
class RFS(Algorithm):
    """Logistic regression per task on frozen, L2-normalised features."""

    config: RFSConfig

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n, k, cfg = ways or self.ways, support_x.shape[0], self.config

        def predict(query_x: Tensor) -> Tensor:
            z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D], one pass
            if cfg.normalize:
                z = F.normalize(z, dim=-1)
            w, b = multinomial_logistic(z[:k].detach(), support_y, n, c=cfg.c,
                                        steps=cfg.solver_steps)  # [N, D], [N]
            return z[k:] @ w.T + b  # [M, N]

        return predict
