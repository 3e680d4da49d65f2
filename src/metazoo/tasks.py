"""Tasks: the `TaskBatch` every algorithm consumes and the N-way K-shot episode sampler.

An episode is a pure function of (seed, split, episode index): there is no sampler state, so a
resumed run sees the same episodes as an uninterrupted one and every method is tested on the same
fixed test episodes. Inside an episode, examples are ordered class-major (`[c0 x K, c1 x K, ...]`)
and labels are `0..N-1` in the order the classes were drawn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from metazoo.errors import DataError, ShapeError
from metazoo.types import TaskKind

if TYPE_CHECKING:
    from metazoo.data.base import ClassDataset


@dataclass(frozen=True)
class TaskBatch:
    """`B` tasks of one shape; every tensor carries a leading task dimension.

    Attributes:
        support_x: `[B, N*K, *x]` inputs of the support sets.
        support_y: `[B, N*K]` int64 labels in `0..N-1`, or `[B, N*K, d_out]` float targets.
        query_x: `[B, N*Q, *x]` inputs of the query sets.
        query_y: `[B, N*Q]` labels or `[B, N*Q, d_out]` targets.
        ways: N (1 for regression); shots: K; queries: Q.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    ways: int
    shots: int
    queries: int

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
                         self.ways, self.shots, self.queries)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to `device`; `dtype` applies to the inputs (and to regression targets)."""
        def x(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype) if dtype else t.to(device)

        def y(t: Tensor) -> Tensor:
            return x(t) if t.is_floating_point() else t.to(device)

        return TaskBatch(x(self.support_x), y(self.support_y), x(self.query_x), y(self.query_y),
                         self.ways, self.shots, self.queries)


class TaskSource(Protocol):
    """Anything that yields `TaskBatch`es as a pure function of an index (episodes, sinusoids)."""

    ways: int
    shots: int
    queries: int

    def batch(self, index: int, meta_batch_size: int) -> TaskBatch: ...


def episode_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed from (seed, split, index), stable across machines and Python versions."""
    digest = hashlib.blake2b(f"{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpisodeSampler:
    """N-way K-shot episodes drawn from the classes of one split.

    Episode `e` of a sampler is fixed by (seed, split name, e): its classes are drawn without
    replacement, and for each class `shots + queries` distinct examples, the first `shots` for the
    support set and the rest for the query set, so support and query never overlap.

    Args:
        dataset: the split's examples, as a `ClassDataset`.
        ways, shots, queries: N, K and Q (queries per class).
        seed: the run's seed; the test episodes of every method share it.
    """

    def __init__(self, dataset: ClassDataset, ways: int, shots: int, queries: int, *, seed: int):
        if ways < 1 or shots < 1 or queries < 0:
            raise DataError(f"episodes need ways >= 1, shots >= 1, queries >= 0; got "
                            f"{ways}-way {shots}-shot {queries}-query")
        if ways > dataset.num_classes:
            raise DataError(
                f"{ways}-way episodes need {ways} classes but split '{dataset.name}' has "
                f"{dataset.num_classes}; lower the ways or use a larger split"
            )
        fewest = int(dataset.class_counts.min())
        if shots + queries > fewest:
            raise DataError(
                f"{shots} shots + {queries} queries need {shots + queries} examples per class but "
                f"split '{dataset.name}' has classes with only {fewest}; lower shots or queries"
            )
        self.dataset, self.ways, self.shots, self.queries, self.seed = (
            dataset, ways, shots, queries, seed)
        self._uniform = bool((dataset.class_counts == dataset.class_counts[0]).all())

    def indices(self, episode: int) -> tuple[Tensor, Tensor]:
        """Row indices into the dataset of one episode: support `[N*K]`, query `[N*Q]`."""
        g = torch.Generator().manual_seed(episode_seed(self.seed, self.dataset.name, episode))
        n, k, q, ds = self.ways, self.shots, self.queries, self.dataset
        classes = torch.randperm(ds.num_classes, generator=g)[:n]            # [N]
        counts = ds.class_counts[classes]                                     # [N]
        width = int(counts.max())
        keys = torch.rand(n, width, generator=g)                              # [N, max count]
        if not self._uniform:  # push missing slots of small classes to the end of the sort
            keys = keys.masked_fill(torch.arange(width) >= counts[:, None], 2.0)
        pick = keys.argsort(dim=1)[:, : k + q] + ds.class_offsets[classes][:, None]  # [N, K+Q]
        return pick[:, :k].reshape(-1), pick[:, k:].reshape(-1)

    def episode(self, index: int) -> TaskBatch:
        """Episode `index` as a batch of one."""
        return self.batch(index, 1)

    def batch(self, index: int, meta_batch_size: int) -> TaskBatch:
        """Episodes `index*B .. index*B + B - 1` stacked into one `TaskBatch`."""
        first = index * meta_batch_size
        sup, qry = zip(*(self.indices(first + b) for b in range(meta_batch_size)), strict=True)
        s_idx, q_idx = torch.stack(sup), torch.stack(qry)                     # [B, N*K], [B, N*Q]
        n = self.ways
        s_y = torch.arange(n).repeat_interleave(self.shots).expand(meta_batch_size, -1)
        q_y = torch.arange(n).repeat_interleave(self.queries).expand(meta_batch_size, -1)
        return TaskBatch(self.dataset.as_float(s_idx), s_y.contiguous(),
                         self.dataset.as_float(q_idx), q_y.contiguous(), n, self.shots,
                         self.queries)
