"""SNAIL's sequence blocks: causal temporal convolutions and causal soft attention.

Mishra, Rohaninejad, Chen, Abbeel. "A Simple Neural Attentive Meta-Learner". ICLR 2018.
arXiv:1707.03141, Sec. 3 and App. B. Sequences are `[B, T, C]` (steps, then channels); every
block concatenates its output to its input, so the channels grow and step t of any output
depends on steps <= t of the input only (causality):
- `DenseBlock(R, D)`: a causal conv of kernel 2 and dilation R with D filters and a gated
  activation, `tanh(x_f) * sigmoid(x_g)`, concatenated to the input;
- `TCBlock(T, D)`: `ceil(log2 T)` dense blocks of dilations 2, 4, ..., 2^ceil(log2 T) (the
  paper's `for i in 1..ceil(log2 T): DenseBlock(X, 2^i, D)`), which see the whole sequence;
- `AttentionBlock(d_k, d_v)`: single-head key/query/value attention with a causal mask,
  `softmax(Q K^T / sqrt(d_k)) V`, concatenated to the input;
- `SNAILNetwork`: attention and TC blocks alternating, then a linear map (the paper's 1x1
  conv) to the outputs at every step.
The causal mask is static (it depends on T only), so every block runs under `torch.vmap`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_mask(steps: int, device: torch.device | None = None) -> Tensor:
    """`[T, T]` bool, True where step j lies in the future of step i (j > i): masked out."""
    return torch.ones(steps, steps, dtype=torch.bool, device=device).triu(1)


class CausalConv1d(nn.Module):
    """`[B, T, C_in]` -> `[B, T, C_out]`: conv1d with `dilation * (kernel - 1)` zeros padded on
    the left only, so output step t sees input steps t, t - dilation, ... (never later ones)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, kernel: int = 2
                 ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, dilation=dilation)
        self.pad = dilation * (kernel - 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.pad(x.transpose(1, 2), (self.pad, 0)))  # [B, C_out, T]
        return y.transpose(1, 2)


class DenseBlock(nn.Module):
    """`[B, T, C]` -> `[B, T, C + filters]`: `[x, tanh(x_f) * sigmoid(x_g)]`, where x_f and x_g
    are two causal convs of `x` (computed as one conv of `2 * filters` outputs)."""

    def __init__(self, in_channels: int, dilation: int, filters: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(in_channels, 2 * filters, dilation)
        self.out_channels = in_channels + filters

    def forward(self, x: Tensor) -> Tensor:
        xf, xg = self.conv(x).chunk(2, dim=-1)
        return torch.cat([x, torch.tanh(xf) * torch.sigmoid(xg)], dim=-1)


def tc_dilations(length: int) -> list[int]:
    """The dilations of `TCBlock(length, .)`: 2^i for i = 1..ceil(log2 length)."""
    return [2 ** i for i in range(1, math.ceil(math.log2(length)) + 1)]


class TCBlock(nn.Module):
    """`[B, T, C]` -> `[B, T, C + ceil(log2 length) * filters]`: dense blocks of dilations
    2, 4, ... (`tc_dilations`), built for sequences of `length` steps."""

    def __init__(self, in_channels: int, length: int, filters: int) -> None:
        super().__init__()
        blocks = []
        for d in tc_dilations(length):
            blocks.append(DenseBlock(in_channels, d, filters))
            in_channels = blocks[-1].out_channels
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class AttentionBlock(nn.Module):
    """`[B, T, C]` -> `[B, T, C + value_size]`: `[x, softmax(mask(Q K^T / sqrt(d_k))) V]` with
    Q, K, V affine maps of x to `key_size`, `key_size`, `value_size` channels; step i attends
    to steps j <= i only."""

    def __init__(self, in_channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        self.query = nn.Linear(in_channels, key_size)
        self.key = nn.Linear(in_channels, key_size)
        self.value = nn.Linear(in_channels, value_size)
        self.scale = 1.0 / math.sqrt(key_size)
        self.out_channels = in_channels + value_size

    def forward(self, x: Tensor) -> Tensor:
        logits = self.query(x) @ self.key(x).transpose(-1, -2) * self.scale  # [B, T, T]
        logits = logits.masked_fill(causal_mask(x.shape[-2], x.device), float("-inf"))
        read = torch.softmax(logits, dim=-1) @ self.value(x)  # [B, T, value_size]
        return torch.cat([x, read], dim=-1)


class SNAILNetwork(nn.Module):
    """`[B, T, in_channels]` -> `[B, T, outputs]`: `AttentionBlock(key_sizes[0], value_sizes[0])`,
    then for each i >= 1 `TCBlock(length, tc_filters[i - 1])` and `AttentionBlock(key_sizes[i],
    value_sizes[i])`, then a linear map to `outputs` at every step (the paper's 1x1 conv).

    Few-shot classification (App. B): key sizes (64, 256, 512), value sizes (32, 128, 256),
    TC filters (128, 128), `length` T = N K + 1, N outputs.
    """

    def __init__(self, in_channels: int, length: int, outputs: int, key_sizes: Sequence[int],
                 value_sizes: Sequence[int], tc_filters: Sequence[int]) -> None:
        super().__init__()
        if not len(key_sizes) == len(value_sizes) == len(tc_filters) + 1:
            raise ValueError(f"need one more attention block than TC blocks, got key sizes "
                             f"{list(key_sizes)}, value sizes {list(value_sizes)}, TC filters "
                             f"{list(tc_filters)}")
        layers: list[nn.Module] = [AttentionBlock(in_channels, key_sizes[0], value_sizes[0])]
        for k, v, f in zip(key_sizes[1:], value_sizes[1:], tc_filters, strict=True):
            layers.append(TCBlock(layers[-1].out_channels, length, f))  # type: ignore[arg-type]
            layers.append(AttentionBlock(layers[-1].out_channels, k, v))  # type: ignore[arg-type]
        self.blocks = nn.Sequential(*layers)
        self.out = nn.Linear(int(layers[-1].out_channels), outputs)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.blocks(x))
