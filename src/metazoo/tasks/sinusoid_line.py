"""Ambiguous regression: each task is a noisy sine wave or a noisy line, with equal probability.

Finn, Xu, Levine. "Probabilistic Model-Agnostic Meta-Learning" (PLATIPUS). NeurIPS 2018.
arXiv:1806.02817. Sec. 5.1 ("ambiguous regression"); also the task family of the Bayesian
meta-learners (BMAML, VERSA's comparisons) and a test of ALPaCA's predictive variance.

Why: from five points a sine and a line can be indistinguishable, so a good meta-learner must keep
both explanations: its predictive spread should be wide where they disagree. Each task is
    sine  y = A sin(x - phi) + eps,   A ~ U[0.1, 5],  phi ~ U[0, pi]         (p = 1/2)
    line  y = a x + b + eps,          a ~ U[-3, 3],   b ~ U[-3, 3]            (p = 1/2)
with x ~ U[-5, 5] and eps ~ N(0, 0.3^2) on every observed target (support and query alike).
`truth(task)` is the noise-free function, for plots and for measuring calibration.

What: `SinusoidLineTasks`, a `TaskSource` like `SinusoidTasks`: task `t` of a split is a pure
function of (seed, split, t) through `episode_seed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metazoo.data.sinusoid import curve
from metazoo.errors import ConfigError
from metazoo.tasks.batch import TaskBatch
from metazoo.tasks.episodes import episode_seed


@dataclass(frozen=True)
class MixtureTask:
    """One drawn task: its kind and parameters (A, phi for a sine; slope a, intercept b)."""

    kind: str  # "sine" or "line"
    first: float  # A or a
    second: float  # phi or b

    def __call__(self, x: Tensor) -> Tensor:
        """The noise-free target at `x` (any shape)."""
        if self.kind == "sine":
            return curve(self.first, self.second, x)
        return self.first * x + self.second


class SinusoidLineTasks:
    """The PLATIPUS sine-or-line regression family (Sec. 5.1) as a `TaskSource`.

    Args:
        shots: K, support points per task (PLATIPUS: 5).
        queries: Q, query points per task.
        seed: the run's seed; with the split and the task index it fixes every task.
        split: a name such as "train" or "test"; different splits draw different tasks.
        noise_std: standard deviation of the Gaussian noise on observed targets (0.3).

    Raises:
        ConfigError: shots < 1, queries < 0, an empty split name or a negative noise.
    """

    ways = 1
    input_shape: tuple[int, ...] = (1,)
    amplitude = (0.1, 5.0)
    phase = (0.0, torch.pi)
    slope = (-3.0, 3.0)
    intercept = (-3.0, 3.0)
    x_range = (-5.0, 5.0)

    def __init__(self, shots: int, queries: int, seed: int, split: str = "train",
                 noise_std: float = 0.3) -> None:
        if shots < 1 or queries < 0:
            raise ConfigError(f"sinusoid_line tasks need shots >= 1 and queries >= 0, got "
                              f"shots={shots}, queries={queries}")
        if not split:
            raise ConfigError("sinusoid_line tasks need a non-empty split name")
        if not noise_std >= 0:
            raise ConfigError(f"sinusoid_line noise_std must be >= 0, got {noise_std}")
        self.shots, self.queries, self.seed, self.split = shots, queries, seed, split
        self.noise_std = float(noise_std)

    def _generator(self, task: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            episode_seed(self.seed, f"sinusoid_line/{self.split}", task))

    def truth(self, task: int) -> Callable[[Tensor], Tensor]:
        """The noise-free function of task `task` (a `MixtureTask`)."""
        return self._draw(task)[0]

    def _draw(self, task: int) -> tuple[MixtureTask, Tensor, Tensor]:
        """Task `task`: its function, inputs `[K + Q]` and noisy targets `[K + Q]`."""
        g = self._generator(task)
        u = torch.rand(3, generator=g, dtype=torch.float64).tolist()
        if u[0] < 0.5:
            (a0, a1), (p0, p1) = self.amplitude, self.phase
            fn = MixtureTask("sine", a0 + u[1] * (a1 - a0), p0 + u[2] * (p1 - p0))
        else:
            (s0, s1), (b0, b1) = self.slope, self.intercept
            fn = MixtureTask("line", s0 + u[1] * (s1 - s0), b0 + u[2] * (b1 - b0))
        lo, hi = self.x_range
        x = lo + torch.rand(self.shots + self.queries, generator=g) * (hi - lo)
        noise = torch.randn(self.shots + self.queries, generator=g) * self.noise_std
        return fn, x, fn(x) + noise

    def batch(self, index: int, meta_batch_size: int) -> TaskBatch:
        """Tasks `index*B .. index*B + B - 1`: support `[B, K, 1]`, query `[B, Q, 1]`, float32."""
        if index < 0 or meta_batch_size < 1:
            raise ConfigError(f"sinusoid_line batch needs index >= 0 and meta_batch_size >= 1, "
                              f"got index={index}, meta_batch_size={meta_batch_size}")
        drawn = [self._draw(index * meta_batch_size + b) for b in range(meta_batch_size)]
        x = torch.stack([d[1] for d in drawn]).unsqueeze(-1)  # [B, K+Q, 1]
        y = torch.stack([d[2] for d in drawn]).unsqueeze(-1)
        k = self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], 1, self.shots, self.queries)

    def __repr__(self) -> str:
        return (f"SinusoidLineTasks(shots={self.shots}, queries={self.queries}, seed={self.seed}, "
                f"split='{self.split}', noise_std={self.noise_std})")
