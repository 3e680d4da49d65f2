"""`TaskBatch`, what every algorithm consumes, and `TaskSource`, what the engine samples from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from metazoo.errors import ShapeError
from metazoo.types import TaskKind


@dataclass(frozen=True)
class TaskBatch:
    """`B` tasks of one shape; every tensor carries a leading task dimension.

    Attributes:
        support_x: `[B, N*K, *x]` inputs of the support sets.
        support_y: `[B, N*K]` int64 labels in `0..N-1`, or `[B, N*K, d_out]` float targets.
        query_x: `[B, N*Q, *x]` inputs of the query sets.
        query_y: `[B, N*Q]` labels or `[B, N*Q, d_out]` targets.
        ways: N (1 for regression); shots: K; queries: Q.
        classes: `[B, N]` the split-wide class index behind each episode label (label `l` of
            task `b` is class `classes[b, l]` of the split), where the source knows it
            (`EpisodeSampler`); None otherwise. DEML's concept discriminator reads it.
        first: the position of task 0 in its meta-batch (0; a process's share of a meta-batch
            starts later: `engine.distributed`), for draws keyed by a task's position
            (Reptile's inner mini-batch orders).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    ways: int
    shots: int
    queries: int
    classes: Tensor | None = None
    first: int = 0

    def __post_init__(self) -> None:
        b = self.support_x.shape[0] if self.support_x.dim() else 0
        n_s, n_q = self.ways * self.shots, self.ways * self.queries
        if self.ways < 1 or self.shots < 1 or self.queries < 0:
            raise ShapeError(
                f"a task needs ways >= 1, shots >= 1 and queries >= 0; got ways={self.ways}, "
                f"shots={self.shots}, queries={self.queries}"
            )
        for name, t, n in (("support", self.support_x, n_s), ("query", self.query_x, n_q)):
            if t.dim() < 2 or t.shape[0] != b or t.shape[1] != n:
                raise ShapeError(
                    f"{name}_x has shape {tuple(t.shape)}; expected [B={b}, {n}, ...] for "
                    f"{self.ways}-way with {self.shots} shots and {self.queries} queries"
                )
        if self.support_x.shape[2:] != self.query_x.shape[2:]:
            raise ShapeError(
                f"support and query inputs differ: {tuple(self.support_x.shape[2:])} vs "
                f"{tuple(self.query_x.shape[2:])}"
            )
        for name, y, x in (("support", self.support_y, self.support_x),
                           ("query", self.query_y, self.query_x)):
            if tuple(y.shape[:2]) != tuple(x.shape[:2]):
                raise ShapeError(
                    f"{name}_y has shape {tuple(y.shape)}; expected leading dims "
                    f"{tuple(x.shape[:2])}"
                )
            if self.kind == "classification":
                if y.dim() != 2:
                    raise ShapeError(f"{name}_y must be [B, M] class labels, got {tuple(y.shape)}")
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.ways):
                    raise ShapeError(
                        f"{name}_y holds labels {int(y.min())}..{int(y.max())}; a {self.ways}-way "
                        f"task needs labels in 0..{self.ways - 1}"
                    )
            elif y.dim() != 3:
                raise ShapeError(f"{name}_y must be [B, M, d_out] targets, got {tuple(y.shape)}")

    @property
    def kind(self) -> TaskKind:
        """"classification" when labels are integers, else "regression"."""
        return "regression" if self.support_y.is_floating_point() else "classification"

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def task(self, i: int) -> TaskBatch:
        """The `i`-th task as a batch of one (a view; used by reference loops in tests)."""
        s = slice(i, i + 1)
        return TaskBatch(self.support_x[s], self.support_y[s], self.query_x[s], self.query_y[s],
                         self.ways, self.shots, self.queries,
                         None if self.classes is None else self.classes[s], self.first + i)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to `device`; `dtype` applies to the inputs (and to regression targets)."""
        def x(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype) if dtype else t.to(device)

        def y(t: Tensor) -> Tensor:
            return x(t) if t.is_floating_point() else t.to(device)

        return TaskBatch(x(self.support_x), y(self.support_y), x(self.query_x), y(self.query_y),
                         self.ways, self.shots, self.queries,
                         None if self.classes is None else self.classes.to(device), self.first)


class TaskSource(Protocol):
    """Anything that yields `TaskBatch`es as a pure function of an index (episodes, sinusoids)."""

    ways: int
    shots: int
    queries: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. `(1, 28, 28)`: what the backbone is built for."""
        ...

    def batch(self, index: int, meta_batch_size: int) -> TaskBatch: ...
