"""A plain LSTM as a black-box few-shot learner: the baseline without external memory.

Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. "Meta-Learning with Memory-Augmented Neural
Networks". ICML 2016. arXiv:1605.06065. Sec. 4 ("LSTM" rows of Tables 1-2, Fig. 3).

A task is a sequence: the N K support steps, each input the concatenation [f(x_t); onehot(y_t)]
of the backbone embedding and the label, then the query step [f(x_q); 0]. The LSTM (one layer)
reads the sequence and a linear layer maps its hidden state at the query step to N logits, so
the head has a fixed size (`fixed_ways`). It is the paper's baseline: all it learns about a task
must sit in its hidden state, which the paper (and the lecture) show to be weak next to MANN's
external memory (`mann`). Settings: 200 hidden units as the paper's LSTM baseline; raw 20x20
Omniglot pixels (backbone `mlp` without layers); the paper trains with RMSProp, 1e-4, 16
episodes a batch.
Deviations: the paper presents one stream with the label of step t at step t+1 and scores
every step; here the support steps carry their labels and each query runs as its own sequence
(support prefix + that query, batched; the prefix is computed once and its state reused, which
is exact), so queries never see each other. The backbone embeds [support; query] in one pass
with batch-norm statistics from the support rows only (non-transductive), for the same reason.
Presets: lstm_learner-omniglot-5w1s, lstm_learner-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.functional import call
from metazoo.types import Predictor


@dataclass(frozen=True)
class LSTMLearnerConfig(AlgorithmConfig):
    hidden: int = 200  # LSTM units (the paper's LSTM baseline: one layer of 200)

    def validate(self) -> None:
        if self.hidden < 1:
            raise ConfigError(f"lstm_learner hidden must be >= 1, got {self.hidden}")


def lstm_step(cell: nn.LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One step of `cell` (`nn.LSTMCell`'s function, gates i, f, g, o), written from its
    weights so it runs under `torch.vmap`: `[B, in]`, `[B, H]`, `[B, H]` -> new `(h, c)`."""
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def sequence_inputs(backbone: nn.Module, support_x: Tensor, support_y: Tensor,
                    query_x: Tensor, ways: int) -> tuple[Tensor, Tensor]:
    """Support steps `[N K, D + N]` (embedding and one-hot label) and query steps `[M, D + N]`
    (embedding and zeros), from one backbone pass over `[support; query]` whose batch norm
    takes its statistics from the support rows only, so a query's input depends on the support
    and itself alone."""
    rows = support_x.shape[0]
    z = call(backbone, {}, torch.cat([support_x, query_x]), stats_rows=rows)
    labels = (support_y[:, None] == torch.arange(ways, device=z.device)).to(z.dtype)
    support = torch.cat([z[:rows], labels], dim=-1)
    query = torch.cat([z[rows:], z.new_zeros(z.shape[0] - rows, ways)], dim=-1)
    return support, query


@register("lstm_learner", display="LSTM learner", family="black_box", config=LSTMLearnerConfig,
          paper="Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. Meta-Learning with "
                "Memory-Augmented Neural Networks. ICML 2016 (LSTM baseline)",
          tasks={"classification"})
class LSTMLearner(Algorithm):
    """An LSTM reads the support (embedding, label) steps, then a query; its state gives logits."""

    config: LSTMLearnerConfig
    fixed_ways = True

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        hidden = self.config.hidden
        dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        self.lstm = nn.LSTMCell(dim + ways, hidden)
        self.out = nn.Linear(hidden, ways)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = self.check_ways(ways or self.ways)

        def predict(query_x: Tensor) -> Tensor:
            support, query = sequence_inputs(self.backbone, support_x, support_y, query_x, n)
            h = c = support.new_zeros(1, self.config.hidden)
            for t in range(support.shape[0]):  # the support prefix, once
                h, c = lstm_step(self.lstm, support[t:t + 1], h, c)
            m = query.shape[0]  # one sequence per query: the prefix state, then that query
            h, _ = lstm_step(self.lstm, query, h.expand(m, -1), c.expand(m, -1))
            return self.out(h)  # [M, N]

        return predict
