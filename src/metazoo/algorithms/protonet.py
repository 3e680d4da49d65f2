"""Prototypical Networks.

Snell, Swersky, Zemel. "Prototypical Networks for Few-shot Learning". NeurIPS 2017.
arXiv:1703.05175.

Each class is represented by the mean embedding of its support examples (Eq. 1):
    c_k = 1/|S_k| * sum_{(x_i, y_i) in S_k} f_phi(x_i)
and a query is classified by a softmax over negative distances to the prototypes (Eq. 2):
    p(y = k | x) = softmax_k(-d(f_phi(x), c_k)),   d = squared Euclidean (Sec. 2.7).
The meta-loss is the query cross-entropy J(phi) = -log p(y = k | x) (Algorithm 1).
No head is learned, so the training ways may exceed the test ways (the paper trains 60-way for
Omniglot and tests 5- and 20-way). Support and query are embedded in one backbone pass, as in the
paper's code, so batch norm uses the statistics of the whole episode (transductive).
Presets: protonet-omniglot-5w1s, -5w5s, -20w1s, -20w5s, protonet-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.types import Predictor


@dataclass(frozen=True)
class ProtoNetConfig(AlgorithmConfig):
    distance: Literal["sqeuclidean", "cosine"] = "sqeuclidean"  # Sec. 2.7 argues for sq. Euclidean
    temperature: float = 1.0  # logits = -d / temperature; not in the paper, 1.0 reproduces it

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"protonet temperature must be > 0, got {self.temperature}")


def prototypes(z: Tensor, y: Tensor, ways: int) -> Tensor:
    """Class means of embeddings `z` `[N*K, D]` with labels `y` `[N*K]` -> `[N, D]` (Eq. 1)."""
    onehot = (y[:, None] == torch.arange(ways, device=y.device)).to(z.dtype)  # [N*K, N]
    return onehot.T @ z / onehot.sum(0).clamp_min(1.0)[:, None]


def sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances `[M, D]` x `[N, D]` -> `[M, N]`, exact (no expansion)."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


@register("protonet", display="ProtoNet", family="metric", config=ProtoNetConfig,
          paper="Snell, Swersky, Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017",
          tasks={"classification"})
class ProtoNet(Algorithm):
    """Prototypical Networks: nearest class mean in a meta-learned embedding."""

    config: ProtoNetConfig

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways
        cfg = self.config

        def predict(query_x: Tensor) -> Tensor:
            # One backbone pass over [support; query], as the paper's code: batch norm sees one
            # batch (transductive), and the pass is faster than two smaller ones.
            z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D]
            protos = prototypes(z[: support_x.shape[0]], support_y, n)  # [N, D] (Eq. 1)
            zq = z[support_x.shape[0]:]  # [M, D]
            if cfg.distance == "cosine":
                d = 1.0 - F.normalize(zq, dim=-1) @ F.normalize(protos, dim=-1).T
            else:
                d = sq_distances(zq, protos)  # [M, N] (Eq. 2)
            return -d / cfg.temperature

        return predict
