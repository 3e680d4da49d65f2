"""Infinite Mixture Prototypes (IMP).

Allen, Shelhamer, Shin, Tenenbaum. "Infinite Mixture Prototypes for Few-Shot Learning".
ICML 2019. arXiv:1902.04552.

Each class is a mixture of clusters in the embedding instead of one prototype. Adapting to a
support set runs DP-means clustering of the labelled embeddings (Algorithm 1, fully supervised):
  1. every class starts with one cluster at its prototype (class mean, as ProtoNet's Eq. 1);
  2. in support order, a point z_i whose squared distance to every cluster of its own class
     exceeds lambda, min_c d(z_i, mu_c) > lambda, starts a new cluster at z_i;
  3. each point is softly assigned over its own class's clusters,
     p(c | z_i) = softmax_c(-d(z_i, mu_c) / (2 sigma)), and the means are updated to
     mu_c = sum_i p(c | z_i) z_i / sum_i p(c | z_i); clusters with total weight <= 1e-3 are dropped.
Steps 2-3 repeat `cluster_steps` times. The threshold follows the small-variance DP derivation,
    lambda = -2 sigma log(alpha) + D sigma log(1 + rho / sigma),
with the cluster variance sigma (learned, as log sigma), the DP concentration alpha, the prior
variance rho of cluster means (the variance of the episode's class prototypes, averaged over the
D dimensions). A query is scored per class by its best cluster (Gaussian of variance sigma):
    logit_n(z) = max_{c in class n} [ -d(z, mu_c) / (2 sigma) - (D / 2) log(2 pi sigma) ],
with cross-entropy on these logits. lambda, the seeds and the soft assignments carry no
gradient; the means and sigma do. These rules follow the authors' code (github.com/k-r-allen/imp,
fewshot/models/imp.py); more in docs/algorithms.md.
Deviations: conv4 with batch statistics and PyTorch's default initialisation (authors' code:
Xavier-uniform, gain sqrt(2)); Adam, not RMSprop; only the fully supervised rule.
Presets: imp-omniglot-5w1s, imp-omniglot-20w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.protonet import prototypes, sq_distances
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.types import Predictor

_EMPTY = 1e-3  # clusters with less total assignment weight are dropped (authors' code, eps=1e-3)


@dataclass(frozen=True)
class IMPConfig(AlgorithmConfig):
    init_sigma: float = 5.0  # initial cluster variance sigma (authors' Omniglot config: 5.0)
    alpha: float = 0.1  # DP concentration alpha (authors' Omniglot config ALPHA = 0.1)
    rho: float | None = None  # prior variance of cluster means; None: variance of the prototypes
    lam: float | None = None  # threshold lambda; None: from sigma, rho, alpha; a number fixes it
    cluster_steps: int = 1  # clustering iterations (authors' Omniglot config: 1)

    def validate(self) -> None:
        if not self.init_sigma > 0:
            raise ConfigError(f"imp init_sigma must be > 0, got {self.init_sigma}")
        if not self.alpha > 0:
            raise ConfigError(f"imp alpha must be > 0 (it enters log alpha), got {self.alpha}")
        if self.rho is not None and not self.rho >= 0:
            raise ConfigError(f"imp rho must be >= 0 or null (estimated), got {self.rho}")
        if self.lam is not None and not self.lam >= 0:
            raise ConfigError(f"imp lam must be >= 0 or null (from sigma, rho, alpha), "
                              f"got {self.lam}")
        if self.cluster_steps < 1:
            raise ConfigError(f"imp cluster_steps must be >= 1, got {self.cluster_steps}")


def dp_threshold(protos: Tensor, sigma: float, alpha: float, rho: float | None = None) -> float:
    """lambda = -2 sigma log(alpha) + D sigma log(1 + rho / sigma) for prototypes `[N, D]`.

    `rho` None estimates it as the variance of the prototypes across classes, averaged over the
    D dimensions (authors' `estimate_lambda`; 0 for a single class).
    """
    if rho is None:
        rho = protos.var(0).mean().item() if protos.shape[0] > 1 else 0.0
    return -2.0 * sigma * math.log(alpha) + protos.shape[1] * sigma * math.log1p(rho / sigma)


def _seed_clusters(z: Tensor, y: Tensor, centres: Tensor, labels: Tensor, lam: float
                   ) -> tuple[Tensor, Tensor]:
    """One DP-means pass in support order: a point farther than `lam` (squared distance) from
    every cluster of its class starts a new cluster at itself. `z` `[N*K, D]`, `centres` `[C, D]`
    -> centres `[C', D]` and their class labels `[C']`. Data-dependent, so run without gradient."""
    for i in range(z.shape[0]):
        own = centres[labels == y[i]]  # [C_y, D]
        if ((own - z[i]) ** 2).sum(-1).min() > lam:
            centres = torch.cat([centres, z[i : i + 1]])
            labels = torch.cat([labels, y[i : i + 1]])
    return centres, labels


def cluster(z: Tensor, y: Tensor, ways: int, sigma: float, lam: float | None,
            cfg: IMPConfig) -> tuple[Tensor, Tensor]:
    """Algorithm 1 on support embeddings `z` `[N*K, D]`: cluster means `[C, D]` and labels `[C]`.

    The seeding pass runs on a detached CPU copy (it is sequential); the means are weighted
    averages of `z`, so the backbone gets gradients through them.
    """
    means = prototypes(z, y, ways)  # [N, D], one cluster per class to start
    labels = torch.arange(ways)
    if lam is None:
        lam = dp_threshold(means.detach(), sigma, cfg.alpha, cfg.rho)
    z_cpu, y_cpu = z.detach().cpu(), y.cpu()
    for _ in range(cfg.cluster_steps):
        centres, labels = _seed_clusters(z_cpu, y_cpu, means.detach().cpu(), labels, lam)
        centres, own = centres.to(z), y[:, None] == labels.to(y.device)[None, :]  # [N*K, C]
        logits = (-sq_distances(z.detach(), centres) / (2 * sigma)).masked_fill(~own, -math.inf)
        prob = logits.softmax(-1)  # [N*K, C] soft assignment within the point's own class
        keep = prob.sum(0) > _EMPTY  # [C]
        prob, labels = prob[:, keep], labels[keep.cpu()]
        means = prob.T @ z / prob.sum(0)[:, None]  # [C', D]
    return means, labels.to(y.device)


@register("imp", display="IMP", family="metric", config=IMPConfig,
          paper="Allen, Shelhamer, Shin, Tenenbaum. Infinite Mixture Prototypes for Few-Shot "
                "Learning. ICML 2019", tasks={"classification"})
class IMP(Algorithm):
    """Infinite mixture prototypes: each class a DP-means mixture of clusters in the embedding."""

    config: IMPConfig
    vmappable = False  # the number of clusters depends on the data

    def __init__(self, backbone: nn.Module, config: IMPConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(config.init_sigma)))

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways

        def predict(query_x: Tensor) -> Tensor:
            z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D], one BN batch
            sigma = self.log_sigma.detach().exp().item()  # clustering is not differentiated
            means, labels = cluster(z[: support_x.shape[0]], support_y, n, sigma,
                                    self.config.lam, self.config)  # [C, D], [C]
            d = sq_distances(z[support_x.shape[0]:], means)  # [M, C]
            dim = z.shape[1]
            logp = -d / (2 * self.log_sigma.exp()) - 0.5 * dim * (
                math.log(2 * math.pi) + self.log_sigma)  # [M, C] Gaussian log-density
            own = labels[None, :] == torch.arange(n, device=labels.device)[:, None]  # [N, C]
            return logp[:, None, :].masked_fill(~own, -math.inf).amax(-1)  # [M, N] best cluster

        return predict
