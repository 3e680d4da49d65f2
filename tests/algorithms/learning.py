"""Shared pieces of the "it learns" tests: episodes, a short meta-training loop, accuracy."""

from __future__ import annotations

import math

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
    """`steps` Adam steps on `meta_loss` of consecutive meta-batches, with the trainer's
    `begin_step` and `end_step` calls around each."""
    opt = torch.optim.Adam(alg.parameters(), lr)
    for step in range(steps):
        alg.begin_step(step, steps)
        batch = episodes.batch(step, meta_batch_size)
        loss, _ = alg.meta_loss(batch)
        opt.zero_grad()
        loss.backward()
        alg.end_step(batch)
        opt.step()


def accuracy_before_after(alg: Algorithm, episodes: EpisodeSampler, test: TaskBatch,
                          steps: int, lr: float = 1e-3, meta_batch_size: int = 4
                          ) -> tuple[float, float]:
    """Test accuracy before and after `steps` of meta-training (seeded for repeatability)."""
    torch.manual_seed(0)
    before = query_accuracy(alg, test)
    meta_train(alg, episodes, steps, lr, meta_batch_size)
    return before, query_accuracy(alg, test)


def float64_sine_batch(tasks=3, shots=4, queries=5, seed=0) -> TaskBatch:
    """Sine regression tasks in float64 (amplitude 0.1-5, phase 0-pi), for reference checks."""
    g = torch.Generator().manual_seed(seed)
    amp = torch.rand(tasks, 1, 1, generator=g, dtype=torch.float64) * 4.9 + 0.1
    phase = torch.rand(tasks, 1, 1, generator=g, dtype=torch.float64) * math.pi
    xs = torch.rand(tasks, shots, 1, generator=g, dtype=torch.float64) * 10 - 5
    xq = torch.rand(tasks, queries, 1, generator=g, dtype=torch.float64) * 10 - 5
    return TaskBatch(xs, amp * torch.sin(xs - phase), xq, amp * torch.sin(xq - phase), 1, shots,
                     queries)


def float64_noise_image_batch(tasks=2, ways=3, shots=2, queries=2, size=16, seed=0) -> TaskBatch:
    """Random 1-channel float64 images with class-sorted labels, for reference checks."""
    g, dt = torch.Generator().manual_seed(seed), torch.float64
    return TaskBatch(torch.randn(tasks, ways * shots, 1, size, size, generator=g, dtype=dt),
                     torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous(),
                     torch.randn(tasks, ways * queries, 1, size, size, generator=g, dtype=dt),
                     torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous(),
                     ways, shots, queries)


def assert_strategy_equals_loop(alg: Algorithm, batch: TaskBatch, strategy: str) -> None:
    """The meta-gradient under `strategy` equals the loop's (float64 tolerances)."""
    from metazoo import batching

    grads = []
    for s in ("loop", strategy):
        alg.zero_grad(set_to_none=True)
        batching.meta_loss(alg, batch, s)[0].backward()  # type: ignore[arg-type]
        grads.append([p.grad.clone() for p in alg.parameters() if p.grad is not None])
    assert max(g.abs().max() for g in grads[0]) > 1e-6  # a check that can fail
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


def sinusoid_mse_before_after(model: Algorithm, steps: int, lr: float,
                              tasks_per_batch: int) -> tuple[float, float]:
    """Meta-train a regressor `steps` Adam steps on 10-shot sinusoid tasks, then the query MSE of
    100 test tasks at the meta-learned parameters (no adaptation) and after adaptation."""
    from metazoo.tasks import SinusoidTasks

    tasks = SinusoidTasks(shots=10, queries=10, seed=0, split="train")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for i in range(steps):
        opt.zero_grad()
        model.meta_loss(tasks.batch(i, tasks_per_batch))[0].backward()
        opt.step()
    return unadapted_and_adapted_mse(model, SinusoidTasks(10, 10, seed=0, split="test")
                                     .batch(0, 100))


def unadapted_and_adapted_mse(model: Algorithm, batch: TaskBatch) -> tuple[float, float]:
    """Query MSE of `batch` at the meta-learned parameters, and after adapting to each support."""
    model.eval()
    with torch.no_grad():
        pre = ((torch.vmap(model)(batch.query_x) - batch.query_y) ** 2).mean()
        post = model.predict(batch.support_x, batch.support_y, batch.query_x)
    return float(pre), float(((post - batch.query_y) ** 2).mean())


def float64_vector_batch(tasks=3, ways=3, shots=2, queries=3, dim=4, seed=0) -> TaskBatch:
    """Float64 classification tasks on `dim`-dimensional inputs: class means plus noise."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    means = torch.randn(tasks, ways, 1, dim, generator=g, dtype=dt) * 2
    xs = (means + torch.randn(tasks, ways, shots, dim, generator=g, dtype=dt)).flatten(1, 2)
    xq = (means + torch.randn(tasks, ways, queries, dim, generator=g, dtype=dt)).flatten(1, 2)
    labels = [torch.arange(ways).repeat_interleave(n).expand(tasks, -1).contiguous()
              for n in (shots, queries)]
    return TaskBatch(xs, labels[0], xq, labels[1], ways, shots, queries)
