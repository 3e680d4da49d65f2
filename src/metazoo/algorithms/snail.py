"""SNAIL: a Simple Neural AttentIve meta-Learner.

Mishra, Rohaninejad, Chen, Abbeel. "A Simple Neural Attentive Meta-Learner". ICLR 2018.
arXiv:1707.03141.

A black-box meta-learner: an N-way K-shot task is a sequence (Sec. 3, 4.2) of T = N K + 1 steps,
the N K support steps `[f(x_i), onehot(y_i)]` and then the query step `[f(x), 0]`, whose label
slot is zeros; a causal network over the sequence outputs the query's N logits at the last step,
trained with cross-entropy on that step (the query loss of `adapt`). The network
(`metazoo.models.snail_blocks`, App. B) for few-shot classification is
    AttentionBlock(64, 32), TCBlock(T, 128), AttentionBlock(256, 128), TCBlock(T, 128),
    AttentionBlock(512, 256), 1x1 conv (linear) to N outputs,
with DenseBlock(R, D) = [X, tanh(conv_f(X)) * sigmoid(conv_g(X))] (causal, kernel 2, dilation
R), TCBlock(T, D) = DenseBlocks of dilation 2^i, i = 1..ceil(log2 T), and AttentionBlock(d_k,
d_v) = [X, softmax(causal_mask(Q K^T / sqrt(d_k))) V]. Embedding f: the backbone (the paper's
Omniglot one is Vinyals' 4 x [conv 3x3 64, batch norm, leaky ReLU 0.1, max-pool]).
Each of the M queries of a task gets its own sequence (support steps + that query), batched as
`[M, T, D + N]`, so no query sees another. Table 1 (Omniglot): 5-way 99.07 +- 0.16 (1-shot),
99.78 +- 0.09 (5-shot); 20-way 97.64 +- 0.30, 99.36 +- 0.18.
Deviations: conv4 has ReLU, not leaky ReLU; batch norm uses batch statistics, by default those
of the support rows (`bn_mode`), so a query's logits depend on the support set and itself only;
the support steps come in the sampler's class-sorted order; T (the TC depth) is fixed at build
time from `shots`. Presets: snail-omniglot-5w1s, -5w5s, -20w1s, -20w5s, snail-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.adaptation import BNMode
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import call
from metazoo.models.snail_blocks import SNAILNetwork
from metazoo.types import Predictor


@dataclass(frozen=True)
class SNAILConfig(AlgorithmConfig):
    shots: int = 1  # K the network is built for: T = N K + 1 sets the TC blocks' depth
    key_sizes: tuple[int, ...] = (64, 256, 512)  # d_k of the attention blocks (App. B)
    value_sizes: tuple[int, ...] = (32, 128, 256)  # d_v of the attention blocks (App. B)
    tc_filters: tuple[int, ...] = (128, 128)  # D of the TC blocks between them (App. B)
    bn_mode: BNMode = "non_transductive"  # backbone batch statistics: support rows, or all rows

    def validate(self) -> None:
        if self.shots < 1:
            raise ConfigError(f"snail shots must be >= 1, got {self.shots}")
        sizes = (*self.key_sizes, *self.value_sizes, *self.tc_filters)
        if not self.key_sizes or min(sizes) < 1:
            raise ConfigError(f"snail key_sizes, value_sizes and tc_filters must be positive, "
                              f"got {list(self.key_sizes)}, {list(self.value_sizes)}, "
                              f"{list(self.tc_filters)}")
        if not len(self.key_sizes) == len(self.value_sizes) == len(self.tc_filters) + 1:
            raise ConfigError(f"snail needs as many value_sizes as key_sizes (attention blocks) "
                              f"and one fewer tc_filters, got {len(self.key_sizes)}, "
                              f"{len(self.value_sizes)} and {len(self.tc_filters)}")


def episode_sequences(z_support: Tensor, support_y: Tensor, z_query: Tensor, ways: int) -> Tensor:
    """One sequence per query: `[S, D]`, `[S]`, `[M, D]` -> `[M, S + 1, D + N]`, the support
    steps `[z_i, onehot(y_i)]` in order, then the query step `[z, 0]` (its label unknown)."""
    onehot = (support_y[:, None] == torch.arange(ways, device=support_y.device))  # [S, N]
    support = torch.cat([z_support, onehot.to(z_support.dtype)], dim=-1)  # [S, D + N]
    query = torch.cat([z_query, z_query.new_zeros(z_query.shape[0], ways)], dim=-1)  # [M, D + N]
    m = z_query.shape[0]
    return torch.cat([support.expand(m, -1, -1), query[:, None]], dim=1)


@register("snail", display="SNAIL", family="black_box", config=SNAILConfig,
          paper="Mishra, Rohaninejad, Chen, Abbeel. A Simple Neural Attentive Meta-Learner. "
                "ICLR 2018", tasks={"classification"})
class SNAIL(Algorithm):
    """SNAIL: causal temporal convolutions and attention over (embedding, label) sequences."""

    config: SNAILConfig
    fixed_ways = True  # the label slots and the output layer have N units

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        d = int(backbone.feature_dim) + ways  # type: ignore[arg-type]
        self.net = SNAILNetwork(d, ways * cfg.shots + 1, ways, cfg.key_sizes, cfg.value_sizes,
                                cfg.tc_filters)

    def embed(self, support_x: Tensor, query_x: Tensor) -> Tensor:
        """Backbone features of `[support; query]` in one pass, batch norm per `bn_mode`."""
        x = torch.cat([support_x, query_x])
        if self.config.bn_mode == "transductive":
            return self.backbone(x)
        return call(self.backbone, {}, x, stats_rows=support_x.shape[0])

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = self.check_ways(ways or self.ways)

        def predict(query_x: Tensor) -> Tensor:
            z = self.embed(support_x, query_x)  # [S + M, D]
            s = support_x.shape[0]
            seq = episode_sequences(z[:s], support_y, z[s:], n)  # [M, S + 1, D + N]
            return self.net(seq)[:, -1]  # [M, N]: the query step's logits

        return predict
