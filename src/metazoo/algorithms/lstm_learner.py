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
Both label presentations (`presentation`, `metazoo.sequence_tasks`): the paper's offset labels
(step t carries y_{t-1}; every step scored; `metazoo eval RUN --protocol offset_labels` gives
accuracy by presentation number, as Table 1), or support steps with their own labels then the
query. Each query runs as its own continuation of the support's state (exact, batched), so
queries never see each other; the backbone's batch norm takes support-row statistics.
Presets: lstm_learner-omniglot-5w (offset labels, Table 1), lstm_learner-omniglot-5w1s,
lstm_learner-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.recurrent import RecurrentSequenceAlgorithm
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.sequence_tasks import LabelPresentation, lstm_step


@dataclass(frozen=True)
class LSTMLearnerConfig(AlgorithmConfig):
    hidden: int = 200  # LSTM units (the paper's LSTM baseline: one layer of 200)
    presentation: LabelPresentation = "support_query"  # or the paper's "offset_labels"

    def validate(self) -> None:
        if self.hidden < 1:
            raise ConfigError(f"lstm_learner hidden must be >= 1, got {self.hidden}")


State = tuple[Tensor, Tensor]  # h, c


@register("lstm_learner", display="LSTM learner", family="black_box", config=LSTMLearnerConfig,
          paper="Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. Meta-Learning with "
                "Memory-Augmented Neural Networks. ICML 2016 (LSTM baseline)",
          tasks={"classification"})
class LSTMLearner(RecurrentSequenceAlgorithm):
    """An LSTM reads the (embedding, label) steps; its hidden state gives the logits."""

    config: LSTMLearnerConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        hidden = self.config.hidden
        dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        self.lstm = nn.LSTMCell(dim + ways, hidden)
        self.out = nn.Linear(hidden, ways)

    def initial_state(self, like: Tensor) -> State:
        h = like.new_zeros(1, self.config.hidden)
        return h, h

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = lstm_step(self.lstm, x, *state)
        return self.out(h), (h, c)
