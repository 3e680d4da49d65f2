"""Sine-wave regression tasks: the toy problem of MAML.

Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks".
ICML 2017. arXiv:1703.03400. Sec. 5.1.

Why: a regression task distribution small enough to meta-train in seconds, whose true functions
are known, so adaptation can be plotted against the truth. Each task is a sine wave
    y = A * sin(x - phi),   A ~ U[0.1, 5.0],   phi ~ U[0, pi],   x ~ U[-5, 5],
observed at K support points and Q query points (MAML uses K = 5 or 10 and the MSE loss).

What: `SinusoidTasks` is a `TaskSource` like `EpisodeSampler`: task `t` of a split is a pure
function of (seed, split, t) through `episode_seed`, so training and test tasks never depend on
how many were drawn before, and different splits see different tasks. The true function is
`metazoo.data.sinusoid.curve`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from metazoo.data.sinusoid import curve
from metazoo.errors import ConfigError
from metazoo.tasks.batch import TaskBatch
from metazoo.tasks.episodes import episode_seed


def _range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
        raise ConfigError(f"sinusoid {name} must be (low, high) with finite low <= high, "
                          f"got {value}")
    return float(value[0]), float(value[1])


class SinusoidTasks:
    """Sine-wave regression tasks (MAML Sec. 5.1) as a `TaskSource`.

    Args:
        shots: K, support points per task.
        queries: Q, query points per task.
        seed: the run's seed; with the split and the task index it fixes every task.
        split: a name such as "train" or "test"; different splits draw different tasks.
        amplitude: range of the uniform amplitude A.
        phase: range of the uniform phase phi, radians.
        x_range: range of the uniform inputs x.

    Raises:
        ConfigError: shots < 1, queries < 0, an empty split name or a malformed range.
    """

    ways = 1  # regression: one output, no classes
    input_shape: tuple[int, ...] = (1,)  # one scalar x per example

    def __init__(self, shots: int, queries: int, seed: int, split: str = "train",
                 amplitude: tuple[float, float] = (0.1, 5.0),
                 phase: tuple[float, float] = (0.0, math.pi),
                 x_range: tuple[float, float] = (-5.0, 5.0)) -> None:
        if shots < 1 or queries < 0:
            raise ConfigError(f"sinusoid tasks need shots >= 1 and queries >= 0, got "
                              f"shots={shots}, queries={queries}")
        if not split:
            raise ConfigError("sinusoid tasks need a non-empty split name")
        self.shots, self.queries, self.seed, self.split = shots, queries, seed, split
        self.amplitude = _range("amplitude", amplitude)
        self.phase = _range("phase", phase)
        self.x_range = _range("x_range", x_range)

    def _task(self, task: int) -> tuple[float, float, Tensor]:
        """Amplitude, phase and inputs `[K + Q]` of task `task`."""
        g = torch.Generator().manual_seed(episode_seed(self.seed, f"sinusoid/{self.split}", task))
        u = torch.rand(2, generator=g, dtype=torch.float64)
        amp = self.amplitude[0] + float(u[0]) * (self.amplitude[1] - self.amplitude[0])
        phase = self.phase[0] + float(u[1]) * (self.phase[1] - self.phase[0])
        lo, hi = self.x_range
        x = lo + torch.rand(self.shots + self.queries, generator=g) * (hi - lo)
        return amp, phase, x

    def truth(self, task: int) -> Callable[[Tensor], Tensor]:
        """The true function of task `task` (what `batch(task, 1)` observes)."""
        amp, phase, _ = self._task(task)
        return lambda x: curve(amp, phase, x)

    def params(self, index: int, meta_batch_size: int) -> tuple[Tensor, Tensor]:
        """Amplitudes `[B]` and phases `[B]` (float32) of the tasks of `batch(index, B)`."""
        tasks = [self._task(index * meta_batch_size + b) for b in range(meta_batch_size)]
        return (torch.tensor([t[0] for t in tasks], dtype=torch.float32),
                torch.tensor([t[1] for t in tasks], dtype=torch.float32))

    def batch(self, index: int, meta_batch_size: int) -> TaskBatch:
        """Tasks `index*B .. index*B + B - 1`: support `[B, K, 1]`, query `[B, Q, 1]`, float32."""
        if index < 0 or meta_batch_size < 1:
            raise ConfigError(f"sinusoid batch needs index >= 0 and meta_batch_size >= 1, got "
                              f"index={index}, meta_batch_size={meta_batch_size}")
        tasks = [self._task(index * meta_batch_size + b) for b in range(meta_batch_size)]
        amp = torch.tensor([t[0] for t in tasks], dtype=torch.float32)  # [B]
        phase = torch.tensor([t[1] for t in tasks], dtype=torch.float32)  # [B]
        x = torch.stack([t[2] for t in tasks]).unsqueeze(-1)  # [B, K+Q, 1]
        y = curve(amp, phase, x)  # [B, K+Q, 1]
        k = self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], 1, self.shots, self.queries)

    def __repr__(self) -> str:
        return (f"SinusoidTasks(shots={self.shots}, queries={self.queries}, seed={self.seed}, "
                f"split='{self.split}', amplitude={self.amplitude}, phase={self.phase}, "
                f"x_range={self.x_range})")
