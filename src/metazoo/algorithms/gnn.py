"""Few-shot Graph Neural Network.

Garcia, Bruna. "Few-Shot Learning with Graph Neural Networks". ICLR 2018. arXiv:1711.04043.

A query is classified by message passing on a fully connected graph whose nodes are the N*K
support examples and the query. Node features start as the embedding and the label (Sec. 4.1):
    x_i^(0) = [phi(x_i), h(l_i)],  h = one-hot label for support nodes, uniform 1/N for the query.
Each block learns an adjacency from the current node features (Sec. 4.2):
    A_ij = softmax_{j != i}( MLP(|x_i - x_j|) ),   rows sum to 1,
and applies a graph convolution with the operator family {I, A} (Sec. 4.2, Eq. 3):
    Gc(x) = rho( I x theta_I + A x theta_A ),      rho = batch norm then leaky ReLU,
whose output is concatenated to its input (dense connections). The last block has no rho and N
outputs; its row for the query node is the logits, trained with cross-entropy (Sec. 5.1).
Every query gets its own graph, so the M graphs of a task run batched, `[M, N*K+1, d]`.
Architecture as the reference code's Omniglot model (`GNN_nl_omniglot`, nf=96): 2 hidden blocks
adding 48 features each, an output block, adjacency MLPs of widths (2, 1.5, 1, 1) x the block's
input width, leaky ReLU (slope 0.01), batch norm on the output.

Deviations: batch norm inside the GNN normalises over the nodes (or node pairs) of each graph,
not the whole meta-batch; the query's label part is 1/N as in the paper (code: zeros); no
dropout in the last adjacency MLP; the embedding is our conv4, not the code's leaky-ReLU
network; the N*Q query graphs of a task share its support set. Details: docs/algorithms.md.
Presets: gnn-omniglot-5w1s, gnn-omniglot-20w1s.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.types import Predictor

SLOPE = 0.01  # leaky ReLU slope: torch's default, used by the reference code


@dataclass(frozen=True)
class GNNConfig(AlgorithmConfig):
    layers: int = 2  # hidden graph-conv blocks before the output block (reference code: 2)
    growth: int = 48  # features each hidden block adds (reference code: nf / 2 = 96 / 2)
    adj_ratios: tuple[float, ...] = (2.0, 1.5, 1.0, 1.0)  # adjacency MLP widths / base (Omniglot)
    adj_width: int | None = None  # base width; None = block input width (Omniglot), 96 miniImageNet
    output_norm: bool = True  # batch norm on the output block (code: Omniglot yes, miniImageNet no)

    def validate(self) -> None:
        if self.layers < 0 or self.growth < 1:
            raise ConfigError(f"gnn layers must be >= 0 and growth >= 1, got {self.layers} and "
                              f"{self.growth}")
        if not self.adj_ratios or min(self.adj_ratios) <= 0:
            raise ConfigError(f"gnn adj_ratios must be a non-empty list of positive numbers, got "
                              f"{list(self.adj_ratios)}")
        if self.adj_width is not None and self.adj_width < 1:
            raise ConfigError(f"gnn adj_width must be >= 1 or null, got {self.adj_width}")


class GraphBatchNorm(nn.Module):
    """Batch norm of `[M, *nodes, C]` per graph: statistics over the node dims of each graph."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dims = tuple(range(1, x.dim() - 1))
        mean = x.mean(dims, keepdim=True)  # [M, 1.., C]
        var = ((x - mean) ** 2).mean(dims, keepdim=True)  # biased, as batch norm
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class Adjacency(nn.Module):
    """Learned adjacency: `[M, V, F]` node features -> `[M, V, V]` row-stochastic A (Sec. 4.2)."""

    def __init__(self, in_dim: int, widths: list[int]) -> None:
        super().__init__()
        dims = [in_dim, *widths]
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=False)
                                     for a, b in itertools.pairwise(dims))
        self.norms = nn.ModuleList(GraphBatchNorm(w) for w in widths)
        self.score = nn.Linear(dims[-1], 1, bias=False)  # a bias cancels in the softmax

    def forward(self, x: Tensor) -> Tensor:
        h = (x[:, :, None, :] - x[:, None, :, :]).abs()  # [M, V, V, F] |x_i - x_j|
        for linear, norm in zip(self.linears, self.norms, strict=True):
            h = F.leaky_relu(norm(linear(h)), SLOPE)  # the code's 1x1 conv, BN, leaky ReLU
        scores = self.score(h).squeeze(-1)  # [M, V, V]
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        return torch.softmax(scores.masked_fill(eye, float("-inf")), dim=-1)  # over j != i


class GraphConv(nn.Module):
    """Gc before rho: `[M, V, F]`, `[M, V, V]` -> `[I x, A x] theta` `[M, V, out]` (Eq. 3),
    batch-normalised per graph when `norm` (then without a bias, which the norm would cancel)."""

    def __init__(self, in_dim: int, out_dim: int, norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * in_dim, out_dim, bias=not norm)  # rows: [theta_I; theta_A]
        self.norm = GraphBatchNorm(out_dim) if norm else nn.Identity()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        return self.norm(self.linear(torch.cat([x, adj @ x], dim=-1)))  # [M, V, out]


def node_features(z_support: Tensor, support_y: Tensor, z_query: Tensor, ways: int) -> Tensor:
    """One graph per query: `[S, D]`, `[S]`, `[M, D]` -> `[M, S + 1, D + N]` (Sec. 4.1), the query
    last, with a one-hot label part for support nodes and a uniform 1/N one for the query."""
    onehot = (support_y[:, None] == torch.arange(ways, device=support_y.device))  # [S, N]
    support = torch.cat([z_support, onehot.to(z_support.dtype)], dim=-1)  # [S, D + N]
    query = torch.cat([z_query, torch.full_like(z_query[:, :1], 1.0 / ways).expand(-1, ways)],
                      dim=-1)  # [M, D + N]
    m = z_query.shape[0]
    return torch.cat([support.expand(m, -1, -1), query[:, None]], dim=1)  # [M, S + 1, D + N]


@register("gnn", display="GNN", family="metric", config=GNNConfig,
          paper="Garcia, Bruna. Few-Shot Learning with Graph Neural Networks. ICLR 2018",
          tasks={"classification"})
class GNN(Algorithm):
    """Few-shot GNN: label propagation from support to query nodes over learned adjacencies."""

    config: GNNConfig
    fixed_ways = True  # the output block has N units and the label part has N entries

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        d0 = int(backbone.feature_dim) + ways  # type: ignore[arg-type]
        dims = [d0 + cfg.growth * i for i in range(cfg.layers + 1)]  # block input widths
        self.adjacencies = nn.ModuleList()
        self.convs = nn.ModuleList()
        for i, d in enumerate(dims):
            base = cfg.adj_width or dims[min(i, max(cfg.layers - 1, 0))]  # last reuses previous
            self.adjacencies.append(Adjacency(d, [max(1, int(base * r)) for r in cfg.adj_ratios]))
            last = i == cfg.layers
            self.convs.append(GraphConv(d, ways if last else cfg.growth,
                                        norm=cfg.output_norm if last else True))

    def gnn(self, x: Tensor) -> Tensor:
        """Node features `[M, V, d0]` -> output block `[M, V, N]`, dense connections between."""
        for adjacency, conv in zip(self.adjacencies[:-1], self.convs[:-1], strict=True):
            x = torch.cat([x, F.leaky_relu(conv(x, adjacency(x)), SLOPE)], dim=-1)
        return self.convs[-1](x, self.adjacencies[-1](x))

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = self.check_ways(ways or self.ways)

        def predict(query_x: Tensor) -> Tensor:
            z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D], one pass
            s = support_x.shape[0]
            x = node_features(z[:s], support_y, z[s:], n)  # [M, N*K + 1, D + N]
            return self.gnn(x)[:, -1]  # [M, N] the query node's outputs

        return predict
