"""Functional helpers: parameters as dicts, and a batch norm that is exact under `torch.vmap`.

torch 2.13's training-mode `F.batch_norm` gives wrong second-order gradients under `vmap` (see
`tests/test_functional.py`); the batch norm here is written from `var_mean` and `rsqrt`, whose
derivatives vmap handles exactly. It normalises with the statistics of the batch at hand and keeps
no running statistics, so it can run inside `vmap` and `functional_call` without writing state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metazoo.types import Params


def params_of(module: nn.Module) -> Params:
    """The module's parameters as a name -> tensor dict (the tensors themselves, not copies)."""
    return dict(module.named_parameters())


def batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """Normalise `x` (`[M, C, ...]`) per channel with the batch's mean and biased variance."""
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
    y = (x - mean) * torch.rsqrt(var + eps)
    shape = [1, -1] + [1] * (x.dim() - 2)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


class BatchNorm(nn.Module):
    """Per-channel batch norm over the batch at hand (transductive), exact under `vmap`.

    Args:
        channels: number of channels C of inputs `[M, C, ...]`.
        affine: learn a scale and shift per channel.
    """

    def __init__(self, channels: int, *, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm(x, self.weight, self.bias, self.eps)
