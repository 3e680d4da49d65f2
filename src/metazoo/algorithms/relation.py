"""Relation Networks: a learned comparison of feature maps.

Sung, Yang, Zhang, Xiang, Torr, Hospedales. "Learning to Compare: Relation Network for Few-Shot
Learning". CVPR 2018. arXiv:1711.06025.

The embedding f_phi maps an image to feature maps; a class's maps are the element-wise sum of its
support examples' maps (Sec. 3.3, K-shot). The relation module g_phi scores a query against each
class from the depth-wise concatenation C(., .) of the two maps (Eq. 1):
    r_{i,j} = g_phi(C(f_phi(x_i), f_phi(x_j))),   r in (0, 1) (sigmoid output)
and is trained by regression of the scores to the match indicator (Eq. 2):
    phi, phi <- argmin sum_i sum_j (r_{i,j} - 1(y_i == y_j))^2
so the predictor returns scores in (0, 1), not logits, and `task_loss` is that mean squared error.
The relation module is the paper's (Sec. 3.4, Fig. 2): two blocks of [conv 3x3 with `hidden`
filters, batch norm, ReLU, max-pool 2] and two fully connected layers (`fc_hidden`=8 units,
ReLU; then 1, sigmoid).

Deviations: the embedding is our conv4 with `model.pools=2` (pooling in the first two of four
blocks, as the paper) but with padding 1 everywhere, so 28x28 Omniglot gives 64x7x7 maps where the
paper's padding-0 network gives 64x5x5; the relation module's pooling is skipped on maps already
1x1 (backbones that pool everywhere). Batch norm uses the batch statistics of the episode (support
and query embedded in one pass), as in the paper's code, which keeps batch norm in training mode.
Presets: relation-omniglot-5w1s, relation-omniglot-20w1s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import BatchNorm
from metazoo.metrics import accuracy
from metazoo.types import Predictor


@dataclass(frozen=True)
class RelationConfig(AlgorithmConfig):
    hidden: int | None = None  # filters of the relation module's convs; None = the embedding's
    fc_hidden: int = 8  # units of the first fully connected layer (Sec. 3.4: 8)

    def validate(self) -> None:
        if (self.hidden is not None and self.hidden < 1) or self.fc_hidden < 1:
            raise ConfigError(f"relation hidden and fc_hidden must be >= 1, got {self.hidden} "
                              f"and {self.fc_hidden}")


def class_maps(maps: Tensor, y: Tensor, ways: int) -> Tensor:
    """Sum of each class's support feature maps (Sec. 3.3): `[N*K, C, H, W]` -> `[N, C, H, W]`."""
    onehot = (y[:, None] == torch.arange(ways, device=y.device)).to(maps.dtype)  # [N*K, N]
    return torch.einsum("sn,schw->nchw", onehot, maps)


class RelationModule(nn.Module):
    """g_phi: `[P, 2C, H, W]` concatenated pairs -> `[P]` relation scores in (0, 1)."""

    def __init__(self, in_shape: tuple[int, int, int], hidden: int, fc_hidden: int) -> None:
        super().__init__()
        c, h, w = in_shape
        self.convs = nn.ModuleList()
        self.pools: list[bool] = []
        for c_in in (2 * c, hidden):
            self.convs.append(nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1),
                                            BatchNorm(hidden)))
            pool = min(h, w) >= 2
            self.pools.append(pool)
            h, w = (h // 2, w // 2) if pool else (h, w)
        self.fc1 = nn.Linear(hidden * h * w, fc_hidden)
        self.fc2 = nn.Linear(fc_hidden, 1)

    def logits(self, pairs: Tensor) -> Tensor:
        """The scores before the sigmoid: `[P, 2C, H, W]` -> `[P]`."""
        return self._after_first_conv(self.first_conv()(pairs))

    def first_conv(self) -> nn.Conv2d:
        return cast(nn.Conv2d, cast(nn.Sequential, self.convs[0])[0])

    def pair_logits(self, classes: Tensor, queries: Tensor) -> Tensor:
        """`logits` of every pair C(class map, query map): `[N, C, H, W]`, `[M, C, H, W]` ->
        `[M, N]` (MetaGAN's class logits). The first convolution is linear in the
        concatenation, conv(C(a, b)) = conv_a(a) + conv_b(b), so it runs on the N + M maps
        and the N M pairs start after it: the same numbers up to float rounding, at a
        fraction of the cost (it is most of the module's)."""
        conv, c = self.first_conv(), classes.shape[1]
        by_class = F.conv2d(classes, conv.weight[:, :c], conv.bias, padding=conv.padding)
        by_query = F.conv2d(queries, conv.weight[:, c:], None, padding=conv.padding)
        m, n = queries.shape[0], classes.shape[0]
        return self._after_first_conv((by_query[:, None] + by_class[None]).flatten(0, 1)
                                      ).view(m, n)

    def _after_first_conv(self, h: Tensor) -> Tensor:
        x = h
        for i, (block, pool) in enumerate(zip(self.convs, self.pools, strict=True)):
            x = torch.relu(cast(nn.Sequential, block)[1](x) if i == 0 else block(x))  # its BN
            x = F.max_pool2d(x, 2) if pool else x
        return self.fc2(torch.relu(self.fc1(x.flatten(1)))).squeeze(-1)

    def forward(self, pairs: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(pairs))


@register("relation", display="Relation Net", family="metric", config=RelationConfig,
          paper="Sung et al. Learning to Compare: Relation Network for Few-Shot Learning. "
                "CVPR 2018", tasks={"classification"})
class RelationNet(Algorithm):
    """Relation Networks: a meta-learned embedding and a meta-learned comparison module."""

    config: RelationConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        shape = tuple(getattr(backbone, "feature_shape", (dim, 1, 1)))
        self.map_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        hidden = self.config.hidden or shape[0]
        self.relation = RelationModule(self.map_shape, hidden, self.config.fc_hidden)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways

        def predict(query_x: Tensor) -> Tensor:
            maps = self.backbone(torch.cat([support_x, query_x]))  # one pass, as the paper's code
            maps = maps.view(maps.shape[0], *self.map_shape)  # [N*K + M, C, H, W]
            classes = class_maps(maps[: support_x.shape[0]], support_y, n)  # [N, C, H, W]
            queries = maps[support_x.shape[0]:]  # [M, C, H, W]
            return torch.sigmoid(self.relation.pair_logits(classes, queries))  # [M, N] (Eq. 1)

        return predict

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean squared error of the scores against one-hot targets (Eq. 2)."""
        scores = self.adapt(support_x, support_y, ways=ways)(query_x)
        loss = F.mse_loss(scores, F.one_hot(query_y, ways).to(scores.dtype))
        return loss, {"acc": accuracy(scores.detach(), query_y)}
