"""Matching Networks.

Vinyals, Blundell, Lillicrap, Kavukcuoglu, Wierstra. "Matching Networks for One Shot Learning".
NeurIPS 2016. arXiv:1606.04080.

A query is labelled by attention over the support set, a differentiable nearest neighbour (Eq. 1):
    y_hat = sum_i a(x_hat, x_i) y_i,   y_i one-hot, so support examples of one class add up,
with the attention a softmax over the support of cosine similarities (Eq. 2):
    a(x_hat, x_i) = exp(c(f(x_hat), g(x_i))) / sum_j exp(c(f(x_hat), g(x_j))),   c = cosine
By default (`normalize: support`) c divides by the support embedding's norm only, as the
reference implementations' distance network does, so the query's norm is a learned inverse
temperature; `normalize: both` is Eq. 2's literal cosine, whose softmax over [-1, 1] caps a 5-way
1-shot probability at e / (e + 4/e) = 0.65 and learns far slower (docs/results.md, issue 28).
The predictor returns log y_hat (clamped away from 0), so the base cross-entropy is the paper's
loss -log P(y | x_hat, S) (Sec. 2.2). Without full context embeddings (FCE) f = g = the backbone.
With `fce=True` (Sec. 2.1.2, Appendix A), f' = g' = the backbone and
  g (A.2): a bidirectional LSTM over the support embeddings g'(x_i) in episode order, with skip
    g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i);
  f (A.1): an LSTM run for K = `fce_steps` steps on the query embedding f'(x), reading g(S):
    h_hat_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})              (Eq. 3)
    h_k = h_hat_k + f'(x)                                                  (Eq. 4)
    r_{k-1} = sum_i softmax_i(h_{k-1}^T g(x_i, S)) g(x_i, S)               (Eqs. 5-6)
  and f(x, S) = h_K for each query on its own, from h_0 = c_0 = 0 (the paper leaves it open).
FCE is the paper's miniImageNet variant (Table 2), not used on Omniglot (Sec. 4.1.1), so `fce`
defaults to False.
Deviations: conv4 uses the episode's batch statistics (transductive; the paper does not say);
K = 5 (not in the paper) follows github.com/AntreasAntoniou/MatchingNetworks
(--full_context_unroll_k 5). Details: docs/algorithms.md.
Presets: matching-omniglot-5w1s, matching-omniglot-20w1s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.types import Predictor


@dataclass(frozen=True)
class MatchingConfig(AlgorithmConfig):
    fce: bool = False  # full context embeddings (Sec. 2.1.2); off for Omniglot (Sec. 4.1.1)
    fce_steps: int = 5  # K attention-LSTM steps of f (App. A.1); not in the paper, reimpl.'s 5
    normalize: Literal["support", "both"] = "support"  # c's norms: the reference code's, or Eq. 2's

    def validate(self) -> None:
        if self.fce_steps < 1:
            raise ConfigError(f"matching fce_steps must be >= 1, got {self.fce_steps}")


def cosine_attention(zq: Tensor, zs: Tensor, normalize: str = "support") -> Tensor:
    """a(x_hat, x_i), the softmax over the support of c: `[M, D]`, `[S, D]` -> `[M, S]`; c is
    f . g / |g| (`normalize="support"`) or the cosine f . g / (|f| |g|) (`"both"`, Eq. 2)."""
    zq = F.normalize(zq, dim=-1) if normalize == "both" else zq
    return torch.softmax(zq @ F.normalize(zs, dim=-1).T, dim=-1)


def class_log_probs(attention: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """log sum_i a_i y_i: attention `[M, S]`, labels `[S]` -> `[M, N]` (Eq. 1)."""
    onehot = (support_y[:, None] == torch.arange(ways, device=support_y.device))  # [S, N]
    probs = attention @ onehot.to(attention.dtype)  # [M, N]; a class's support examples add up
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def lstm_step(gates: nn.Linear, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step: `gates` maps [x, h] to the i, f, g, o pre-activations; returns (h', c')."""
    i, f, g, o = gates(torch.cat([x, h], dim=-1)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def context_support(fwd: nn.Linear, bwd: nn.Linear, zs: Tensor) -> Tensor:
    """g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i): a bidirectional LSTM over `[S, D]` (App. A.2)."""
    outs: dict[str, list[Tensor]] = {}
    for name, cell, order in (("fwd", fwd, range(zs.shape[0])),
                              ("bwd", bwd, reversed(range(zs.shape[0])))):
        h = c = zs.new_zeros(zs.shape[1:])  # [D]
        outs[name] = []
        for i in order:
            h, c = lstm_step(cell, zs[i], h, c)
            outs[name].append(h)
    return torch.stack(outs["fwd"]) + torch.stack(outs["bwd"][::-1]) + zs  # [S, D]


def context_query(cell: nn.Linear, zq: Tensor, gs: Tensor, steps: int) -> Tensor:
    """f(x, S) = h_K of the attention LSTM over the queries `[M, D]`, reading g(S) `[S, D]` (A.1).

    Every row is its own LSTM: a query's embedding does not depend on the other queries.
    """
    h = c = torch.zeros_like(zq)  # [M, D]
    for _ in range(steps):
        r = torch.softmax(h @ gs.T, dim=-1) @ gs  # [M, D] read-out r_{k-1} (Eqs. 5-6)
        h_hat, c = lstm_step(cell, zq, torch.cat([h, r], dim=-1), c)  # (Eq. 3)
        h = h_hat + zq  # skip connection (Eq. 4)
    return h


@register("matching", display="Matching Networks", family="metric", config=MatchingConfig,
          paper="Vinyals, Blundell, Lillicrap, Kavukcuoglu, Wierstra. Matching Networks for One "
                "Shot Learning. NeurIPS 2016", tasks={"classification"})
class Matching(Algorithm):
    """Matching Networks: cosine attention over the support set, optionally with FCE."""

    config: MatchingConfig

    def __init__(self, backbone: nn.Module, config: MatchingConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        if config.fce:
            # LSTM states have the embedding's size D, so the skip connections can add
            d = int(backbone.feature_dim)  # type: ignore[arg-type]
            self.g_fwd = nn.Linear(2 * d, 4 * d)  # input g'(x_i), state h_fwd
            self.g_bwd = nn.Linear(2 * d, 4 * d)  # input g'(x_i), state h_bwd
            self.f_lstm = nn.Linear(3 * d, 4 * d)  # input f'(x), state [h, r]

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways
        cfg, s = self.config, support_x.shape[0]

        def predict(query_x: Tensor) -> Tensor:
            # One backbone pass over [support; query], as ProtoNet: batch norm sees one batch.
            z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D]
            zs, zq = z[:s], z[s:]  # g'(S) [N*K, D], f'(x) [M, D]
            if cfg.fce:
                zs = context_support(self.g_fwd, self.g_bwd, zs)  # g(x_i, S) (A.2)
                zq = context_query(self.f_lstm, zq, zs, cfg.fce_steps)  # f(x, S) (A.1)
            attention = cosine_attention(zq, zs, cfg.normalize)  # (Eq. 2)
            return class_log_probs(attention, support_y, n)  # [M, N] (Eq. 1)

        return predict
