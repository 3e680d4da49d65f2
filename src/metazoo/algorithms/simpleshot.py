"""SimpleShot: nearest class centroid on centred, L2-normalised features of a pre-trained backbone.

Wang, Chao, Weinberger, van der Maaten. "SimpleShot: Revisiting Nearest-Neighbor Classification
for Few-Shot Learning". arXiv:1911.04623, 2019.

A backbone f trained by plain classification on the base classes (`metazoo pretrain`; Sec. 3)
embeds support and query, and each feature is transformed (Sec. 3, "feature transformations"):
    UN:    z = f(x)
    L2N:   z = f(x) / ||f(x)||
    CL2N:  z = (f(x) - m) / ||f(x) - m||,   m = mean of f over the base classes' training images
A query goes to the nearest class centroid (the mean of the class's transformed support features;
one shot: the nearest neighbour) in Euclidean distance (Sec. 3). Logits are the negative squared
distances, which give the same prediction. m comes from the weights file of `metazoo pretrain`
(`model.pretrained`); without one m = 0 and CL2N is L2N.
Meta-loss (none in the paper, which never meta-trains): the query cross-entropy of these logits,
ProtoNet's loss on the transformed features; the gradient flows through support and query.
Deviation: support and query are embedded in one backbone pass (the episode's batch-norm
statistics, as every algorithm here; the paper's backbones keep running statistics).
Presets: simpleshot-omniglot-5w1s, simpleshot-glyphs-5w1s, on `metazoo pretrain` weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.protonet import prototypes, sq_distances
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.types import Predictor

Transform = Literal["CL2N", "L2N", "UN"]


@dataclass(frozen=True)
class SimpleShotConfig(AlgorithmConfig):
    transform: Transform = "CL2N"  # the paper's recommended transform; L2N and UN its ablations


def transform_features(z: Tensor, mean: Tensor, transform: Transform) -> Tensor:
    """SimpleShot's feature transformation of `z` `[M, D]` with base-class mean `mean` `[D]`."""
    if transform == "UN":
        return z
    return F.normalize(z - mean if transform == "CL2N" else z, dim=-1)


@register("simpleshot", display="SimpleShot", family="hybrid", config=SimpleShotConfig,
          paper="Wang, Chao, Weinberger, van der Maaten. SimpleShot: Revisiting Nearest-Neighbor "
                "Classification for Few-Shot Learning. arXiv:1911.04623, 2019",
          tasks={"classification"})
class SimpleShot(Algorithm):
    """Nearest centroid on CL2N (or L2N, UN) features."""

    config: SimpleShotConfig
    base_mean: Tensor  # [D], m of CL2N: the pre-training's mean feature (zeros without one)

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        d = int(backbone.feature_dim)  # type: ignore[arg-type]
        mean = getattr(backbone, "pretrained_mean", None)  # set by model.pretrained
        if mean is not None and mean.numel() != d:
            raise ConfigError(f"simpleshot: the pre-training's mean feature has {mean.numel()} "
                              f"values but the backbone gives {d} features")
        self.register_buffer("base_mean", torch.zeros(d) if mean is None else
                             mean.detach().reshape(d).clone())

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n, k = ways or self.ways, support_x.shape[0]

        def predict(query_x: Tensor) -> Tensor:
            z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D], one pass
            z = transform_features(z, self.base_mean, self.config.transform)
            centroids = prototypes(z[:k], support_y, n)  # [N, D]
            return -sq_distances(z[k:], centroids)  # [M, N]

        return predict
