"""N-way K-shot episodes drawn from the classes of a `ClassDataset`.

An episode is a pure function of (seed, split, episode index): there is no sampler state, so a
resumed run sees the same episodes as an uninterrupted one and every method is tested on the same
fixed test episodes. Inside an episode, examples are ordered class-major (`[c0 x K, c1 x K, ...]`)
and labels are `0..N-1` in the order the classes were drawn; with `order="shuffled"` the support
rows and the query rows are each permuted by a generator of their own per episode, for
sequence learners that read the support in order (SNAIL, MANN, the LSTM learner).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import torch
from torch import Tensor

from metazoo.data.base import ClassDataset
from metazoo.errors import DataError
from metazoo.tasks.batch import TaskBatch

EpisodeOrder = Literal["class_major", "shuffled"]


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
        order: "class_major", or "shuffled": episode e's support and query rows permuted by a
            generator seeded by (seed, split + "/order", e), so the same classes and examples
            arrive in an order that is still a pure function of e.
    """

    def __init__(self, dataset: ClassDataset, ways: int, shots: int, queries: int, *, seed: int,
                 order: EpisodeOrder = "class_major"):
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
        self.order = order
        self._uniform = bool((dataset.class_counts == dataset.class_counts[0]).all())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """`(C, H, W)` of one image of the split."""
        return self.dataset.image_shape

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

    def permutations(self, episode: int) -> tuple[Tensor, Tensor]:
        """The orders of episode `episode`'s support `[N*K]` and query `[N*Q]` rows when
        `order="shuffled"`, from a generator of their own (the episode's draws are unchanged)."""
        g = torch.Generator().manual_seed(
            episode_seed(self.seed, f"{self.dataset.name}/order", episode))
        n = self.ways
        return (torch.randperm(n * self.shots, generator=g),
                torch.randperm(n * self.queries, generator=g))

    def episode(self, index: int) -> TaskBatch:
        """Episode `index` as a batch of one."""
        return self.batch(index, 1)

    def batch(self, index: int, meta_batch_size: int) -> TaskBatch:
        """Episodes `index*B .. index*B + B - 1` stacked into one `TaskBatch`."""
        first = index * meta_batch_size
        sup, qry = zip(*(self.indices(first + b) for b in range(meta_batch_size)), strict=True)
        s_idx, q_idx = torch.stack(sup), torch.stack(qry)                     # [B, N*K], [B, N*Q]
        n = self.ways
        classes = self.dataset.labels[s_idx.view(meta_batch_size, n, self.shots)[:, :, 0]]  # [B, N]
        s_y = torch.arange(n).repeat_interleave(self.shots).expand(meta_batch_size, -1)
        q_y = torch.arange(n).repeat_interleave(self.queries).expand(meta_batch_size, -1)
        if self.order == "shuffled":
            s_perm, q_perm = zip(*(self.permutations(first + b) for b in range(meta_batch_size)),
                                 strict=True)
            s_sel, q_sel = torch.stack(s_perm), torch.stack(q_perm)
            s_idx, s_y = s_idx.gather(1, s_sel), s_y.gather(1, s_sel)
            q_idx, q_y = q_idx.gather(1, q_sel), q_y.gather(1, q_sel)
        return TaskBatch(self.dataset.as_float(s_idx), s_y.contiguous(),
                         self.dataset.as_float(q_idx), q_y.contiguous(), n, self.shots,
                         self.queries, classes)
