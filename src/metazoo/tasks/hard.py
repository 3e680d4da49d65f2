"""Hard tasks re-composed from a meta-batch's failure classes (MTL's HT meta-batch).

Sun et al., "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019, Sec. 4.2: after a
meta-batch, each task's classes are ranked by their query accuracy (a ranking, not a threshold)
and the lowest, the task's failure class, goes into a set from which harder tasks are made. Here
a hard task takes the samples those classes already have in the batch (the paper's first of two
ways; its second draws new samples of the class, which needs the dataset): the support and query
rows of each chosen (task, class) pair become one class of an N-way task with the same K and Q.
Pure functions of the batch and the scores, so a step stays a function of its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.tasks.batch import TaskBatch


def class_scores(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class query cross-entropy (with its graph) and accuracy of each task.

    Args:
        logits: `[B, M, N]` query logits; labels: `[B, M]` in `0..N-1`.

    Returns:
        `[B, N]` mean loss and `[B, N]` accuracy over each class's query rows.
    """
    ways = logits.shape[-1]
    onehot = F.one_hot(labels, ways).to(logits.dtype)                        # [B, M, N]
    count = onehot.sum(1).clamp_min(1)                                        # [B, N]
    rows = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    loss = (onehot * rows.view(labels.shape)[..., None]).sum(1) / count       # [B, N]
    right = (logits.detach().argmax(-1) == labels).to(logits.dtype)           # [B, M]
    return loss, (onehot * right[..., None]).sum(1) / count


def hardest_pairs(loss: Tensor, acc: Tensor) -> Tensor:
    """Every (task, class) pair, hardest first: `[B*N, 2]` rows of (task, class).

    Within a task classes rank by accuracy, ties by higher loss; across tasks every task's
    failure class (rank 0) comes first, then every rank-1 class, and so on, each rank ordered by
    accuracy and loss again.
    """
    tasks, ways = acc.shape

    def order(key_acc: Tensor, key_loss: Tensor) -> Tensor:  # stable: accuracy, then -loss
        by_loss = key_loss.argsort(dim=-1, descending=True, stable=True)
        return by_loss.gather(-1, key_acc.gather(-1, by_loss).argsort(dim=-1, stable=True))

    within = order(acc, loss)                                                 # [B, N] classes
    rank = torch.empty_like(within).scatter_(1, within, torch.arange(ways).expand(tasks, -1))
    flat = order(acc.flatten(), loss.flatten())                               # [B*N]
    flat = flat[rank.flatten()[flat].argsort(stable=True)]                    # rank first
    return torch.stack([flat // ways, flat % ways], dim=1)


def hard_task_batch(batch: TaskBatch, loss: Tensor, acc: Tensor, count: int) -> TaskBatch:
    """`count` hard tasks of `batch`'s classification tasks: hard task h takes pairs
    `h*N .. h*N + N-1` of `hardest_pairs(loss, acc)` as its classes 0..N-1 (`count <= B`)."""
    pairs = hardest_pairs(loss.detach(), acc.detach()).tolist()
    n = batch.ways

    def rows(x: Tensor, y: Tensor, chosen: list[list[int]]) -> tuple[Tensor, Tensor]:
        parts = [x[b][y[b] == c] for b, c in chosen]                          # [K or Q, *x] each
        labels = [torch.full((len(p),), j, dtype=y.dtype, device=y.device)
                  for j, p in enumerate(parts)]
        return torch.cat(parts), torch.cat(labels)

    support, query = [], []
    for h in range(count):
        chosen = pairs[h * n:(h + 1) * n]
        support.append(rows(batch.support_x, batch.support_y, chosen))
        query.append(rows(batch.query_x, batch.query_y, chosen))
    return TaskBatch(torch.stack([s[0] for s in support]), torch.stack([s[1] for s in support]),
                     torch.stack([q[0] for q in query]), torch.stack([q[1] for q in query]),
                     n, batch.shots, batch.queries)
