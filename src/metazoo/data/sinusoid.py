"""Sine-wave regression (MAML Sec. 5.1): the true function of a task, and the dataset's entry.

Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks".
ICML 2017. arXiv:1703.03400. Sec. 5.1.

A task is a sine wave `y = A * sin(x - phi)`. There are no stored examples: the tasks (A, phi
and the inputs x) are drawn by `metazoo.tasks.SinusoidTasks`, the layer above, so this dataset's
spec has no loader.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metazoo.data.base import DatasetSpec


def curve(amplitude: Tensor | float, phase: Tensor | float, x: Tensor) -> Tensor:
    """The true function of a task, `amplitude * sin(x - phase)`.

    Args:
        amplitude: A, a scalar or `[B]` (one per task; broadcast over the trailing dims of `x`).
        phase: phi, like `amplitude`.
        x: inputs, any shape; with `[B]` parameters its leading dimension is B.

    Returns:
        Targets with the shape of `x`.
    """
    a, p = torch.as_tensor(amplitude, dtype=x.dtype), torch.as_tensor(phase, dtype=x.dtype)
    if a.dim():  # one value per task: align [B] with the leading dimension of x
        a = a.reshape(-1, *([1] * (x.dim() - 1)))
        p = p.reshape(-1, *([1] * (x.dim() - 1)))
    return a * torch.sin(x - p)


SPEC = DatasetSpec("sinusoid", None, "regression", ("train", "val", "test"),
                   "sine regression, amplitude U[0.1, 5], phase U[0, pi] (MAML Sec. 5.1)", False)
