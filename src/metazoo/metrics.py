"""Accuracy, mean squared error and the 95% confidence interval the papers report.

>>> mean_and_ci95([1.0, 1.0, 1.0])
(1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of rows whose arg-max equals the label.

    Args:
        logits: scores, `[..., M, N]`.
        labels: integer classes, `[..., M]`.
    """
    return (logits.argmax(dim=-1) == labels).to(logits.dtype).mean(dim=-1)


def mse(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error over the last two dimensions (`[..., M, d_out]`)."""
    return ((predictions - targets) ** 2).mean(dim=(-2, -1))


def mean_and_ci95(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval, 1.96 * std / sqrt(n).

    The sample standard deviation (n - 1) is used, as in the papers' evaluation code.

    >>> m, h = mean_and_ci95([0.5, 0.7])
    >>> round(m, 3), round(h, 4)
    (0.6, 0.196)
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("mean_and_ci95 needs at least one value")
    if v.numel() == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(1.96 * v.std(unbiased=True) / math.sqrt(v.numel()))
