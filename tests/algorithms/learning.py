"""Shared pieces of the "it learns" tests: episodes, a short meta-training loop, accuracy."""

from __future__ import annotations

import torch

from metazoo.algorithms.base import Algorithm
from metazoo.tasks import EpisodeSampler, TaskBatch
from tests.conftest import make_dataset


def separable_episodes(train_classes: int = 40, per_class: int = 10, shots: int = 1
                       ) -> tuple[EpisodeSampler, TaskBatch]:
    """5-way episodes over separable random-pattern classes: a training sampler and 50 test
    episodes of 20 held-out classes."""
    train = EpisodeSampler(make_dataset(train_classes, per_class, name="s/train", seed=1),
                           5, shots, 5, seed=0)
    test = EpisodeSampler(make_dataset(20, 10, name="s/test", seed=2), 5, shots, 5, seed=0)
    return train, test.batch(0, 50)


def glyph_episodes() -> tuple[EpisodeSampler, TaskBatch]:
    """5-way 1-shot glyph episodes: the training split and 100 test-split episodes."""
    from metazoo.data import glyphs

    train = EpisodeSampler(glyphs.load("train"), 5, 1, 5, seed=0)
    return train, EpisodeSampler(glyphs.load("test"), 5, 1, 5, seed=1).batch(0, 100)


def query_accuracy(alg: Algorithm, batch: TaskBatch) -> float:
    """Mean query accuracy of `alg.predict` over the tasks of `batch`, in eval mode."""
    alg.eval()
    with torch.no_grad():
        out = alg.predict(batch.support_x, batch.support_y, batch.query_x)
    alg.train()
    return (out.argmax(-1) == batch.query_y).float().mean().item()


def meta_train(alg: Algorithm, episodes: EpisodeSampler, steps: int, lr: float,
               meta_batch_size: int = 4) -> None:
    """`steps` Adam steps on `meta_loss` of consecutive meta-batches."""
    opt = torch.optim.Adam(alg.parameters(), lr)
    for step in range(steps):
        loss, _ = alg.meta_loss(episodes.batch(step, meta_batch_size))
        opt.zero_grad()
        loss.backward()
        opt.step()


def accuracy_before_after(alg: Algorithm, episodes: EpisodeSampler, test: TaskBatch,
                          steps: int, lr: float = 1e-3) -> tuple[float, float]:
    """Test accuracy before and after `steps` of meta-training (seeded for repeatability)."""
    torch.manual_seed(0)
    before = query_accuracy(alg, test)
    meta_train(alg, episodes, steps, lr)
    return before, query_accuracy(alg, test)
