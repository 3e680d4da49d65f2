"""Memory-Augmented Neural Network (MANN) with Least Recently Used Access.

Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. "Meta-Learning with Memory-Augmented Neural
Networks". ICML 2016. arXiv:1605.06065.

An LSTM controller reads a task as a sequence: N K support steps [f(x_t); onehot(y_t)], then the
query step [f(x_q); 0], with the read vectors r_{t-1} of the previous step appended to its input.
From its state h_t it emits, per read head, a key k_t (tanh) and a gate alpha_t; the external
memory M (128 x 40, 4 heads) is written by LRUA (Eq. 5-8: the least used slots or the last read
ones, the least used slot zeroed first) and read by cosine-similarity content addressing (Eq.
2-4) with the same key (`metazoo.lrua_memory`). The logits are a linear map of
[h_t; r_t] (Sec. 3.1: reads are the classifier's input and the next controller input). Memory and
usage start fresh for every task. Settings (Omniglot): controller 200 units, usage decay gamma
0.95 (the reference re-implementations'), raw 20x20 pixels (backbone `mlp` without layers),
RMSProp 1e-4, 16 episodes a batch.
Labels: the paper's offset stream (`presentation: offset_labels`, step t carries y_{t-1}, every
step scored; `metazoo eval RUN --protocol offset_labels` reports accuracy by presentation
number as Table 1) or support steps with their own labels then the query (`support_query`).
Deviations: alpha is emitted by the controller per head, tanh on keys (the paper leaves both
open; as the reference re-implementations); `write: add` writes a separate tanh add vector a_t
where Eq. 8 writes the key (NTM-style re-implementations; reads keep k_t); head j writes to
the j-th least used slot, so the heads share the n least used slots of Eq. 6 one each; each
query runs as its own continuation of the support's state (exact, batched), so queries never
see each other; batch norm (if the backbone has it) takes statistics from the support rows.
Presets: mann-omniglot-5w (offset labels, Table 1), mann-omniglot-5w1s, mann-glyphs-5w1s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from metazoo import lrua_memory
from metazoo.algorithms.base import AlgorithmConfig
from metazoo.algorithms.recurrent import RecurrentSequenceAlgorithm
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.lrua_memory import MemoryState
from metazoo.sequence_tasks import LabelPresentation, lstm_step


@dataclass(frozen=True)
class MANNConfig(AlgorithmConfig):
    hidden: int = 200  # LSTM controller units (paper, Omniglot)
    memory_slots: int = 128  # rows of M (paper, Omniglot: 128 x 40)
    memory_size: int = 40  # columns of M
    read_heads: int = 4  # read heads; also the n least used slots written (Eq. 6)
    gamma: float = 0.95  # usage decay of Eq. 5 (reference re-implementations' value)
    presentation: LabelPresentation = "support_query"  # or the paper's "offset_labels"
    write: Literal["key", "add"] = "key"  # Eq. 8 writes the key k_t, or "add": a separate a_t


    def validate(self) -> None:
        for name in ("hidden", "memory_slots", "memory_size", "read_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mann {name} must be >= 1, got {getattr(self, name)}")
        if self.read_heads > self.memory_slots:
            raise ConfigError(f"mann read_heads ({self.read_heads}) must not exceed "
                              f"memory_slots ({self.memory_slots})")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"mann gamma must be in [0, 1], got {self.gamma}")


State = tuple[Tensor, Tensor, MemoryState]  # controller h, c and the memory


@register("mann", display="MANN", family="black_box", config=MANNConfig,
          paper="Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. Meta-Learning with "
                "Memory-Augmented Neural Networks. ICML 2016", tasks={"classification"})
class MANN(RecurrentSequenceAlgorithm):
    """LSTM controller with an LRUA external memory, reset per task; logits from [h; reads]."""

    config: MANNConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg = self.config
        reads = cfg.read_heads * cfg.memory_size
        dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        self.controller = nn.LSTMCell(dim + ways + reads, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, reads)  # k_t per head (Eq. 2, 8)
        self.gate = nn.Linear(cfg.hidden, cfg.read_heads)  # alpha_t per head (Eq. 7)
        self.add = nn.Linear(cfg.hidden, reads) if cfg.write == "add" else None  # a_t per head
        self.out = nn.Linear(cfg.hidden + reads, ways)  # classifier on [h_t; r_t]

    def initial_state(self, like: Tensor) -> State:
        """Zero controller state and a fresh memory (one sequence)."""
        cfg = self.config
        h = like.new_zeros(1, cfg.hidden)
        memory = lrua_memory.initial_state((1,), cfg.memory_slots, cfg.memory_size,
                                           cfg.read_heads, like=like)
        return h, h, memory

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step for `B` sequences: `[B, D + N]` inputs -> `[B, N]` logits, new state."""
        h, c, memory = state
        h, c = lstm_step(self.controller, torch.cat([x, memory.reads.flatten(-2)], -1), h, c)
        heads = (self.config.read_heads, -1)
        keys = torch.tanh(self.key(h)).unflatten(-1, heads)
        values = None if self.add is None else torch.tanh(self.add(h)).unflatten(-1, heads)
        memory = lrua_memory.step(memory, keys, self.gate(h), self.config.gamma, values)
        return self.out(torch.cat([h, memory.reads.flatten(-2)], -1)), (h, c, memory)
