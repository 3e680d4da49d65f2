"""Evaluation on fixed episodes: mean accuracy (or MSE) and its 95% confidence interval.

Episode `e` of a split is the same for every method and every batch size (episodes are pure
functions of (seed, split, e)), so numbers from different runs are comparable.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from metazoo.algorithms.base import Algorithm
from metazoo.metrics import accuracy, mean_and_ci95, mse
from metazoo.tasks import TaskBatch, TaskSource


@dataclass(frozen=True)
class EvalResult:
    """Mean of the per-episode metric over `episodes` episodes, with its 95% CI half-width."""

    metric: str  # "accuracy" or "mse"
    mean: float
    ci95: float
    episodes: int
    ways: int
    shots: int
    queries: int
    split: str
    seconds: float

    def line(self) -> str:
        """One line for the terminal, e.g. `test accuracy 0.9712 ± 0.0031 (600 episodes, ...)`."""
        return (f"{self.split} {self.metric} {self.mean:.4f} ± {self.ci95:.4f} "
                f"({self.episodes} episodes, {self.ways}-way {self.shots}-shot "
                f"{self.queries}-query, {self.seconds:.1f} s)")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d[self.metric] = d.pop("mean")
        return d


def episode_batches(source: TaskSource, episodes: int, batch_size: int) -> Iterator[TaskBatch]:
    """Episodes `0..episodes-1` of `source`, `batch_size` at a time (the last batches smaller)."""
    full = episodes // batch_size
    for index in range(full):
        yield source.batch(index, batch_size)
    for e in range(full * batch_size, episodes):
        yield source.batch(e, 1)


def evaluate(algorithm: Algorithm, source: TaskSource, *, episodes: int, batch_size: int = 16,
             split: str = "test", device: torch.device | str = "cpu") -> EvalResult:
    """Evaluate `algorithm` on episodes `0..episodes-1` of `source`."""
    was_training = algorithm.training
    algorithm.eval()
    values: list[torch.Tensor] = []
    metric = "accuracy"
    start = time.perf_counter()
    grad = contextlib.nullcontext() if algorithm.adapts_with_gradients else torch.no_grad()
    try:
        with grad:
            for batch in episode_batches(source, episodes, batch_size):
                b = batch.to(device)
                out = algorithm.predict(b.support_x, b.support_y, b.query_x, ways=b.ways)
                out = out.detach()
                if b.kind == "regression":
                    metric = "mse"
                    values.append(mse(out, b.query_y).cpu())
                else:
                    values.append(accuracy(out, b.query_y).cpu())
    finally:
        algorithm.train(was_training)
    mean, ci = mean_and_ci95(torch.cat(values))
    return EvalResult(metric, mean, ci, episodes, source.ways, source.shots, source.queries, split,
                      time.perf_counter() - start)
