"""The four-block convolutional backbone of Vinyals et al. 2016, used by most few-shot papers.

Each block is conv 3x3 (`hidden` filters, padding 1) -> batch norm -> ReLU -> 2x2 max-pool; the
output is flattened (64 features for 28x28 inputs, 1600 for 84x84 with 64 filters). `pools` keeps
the max-pool in the first blocks only (Relation Networks pool in the first two of four, so their
relation module sees 7x7 maps); `feature_shape` is the `(C, H, W)` of the maps before flattening.
No head: the algorithms add the layer they need. Batch norm is `metazoo.functional.BatchNorm` (batch
statistics only, exact under `vmap`, transductive or not: see `metazoo.functional`).

Extension points (keyword arguments of `forward_with`, passed by `metazoo.functional.call`), so
that no algorithm rewrites this loop: `stats_rows` (non-transductive batch norm), `memory_format`
(CPU layout), `modulation` (a per-channel scale and shift of block i's maps after batch norm and
pooling, before the ReLU: CAVIA's FiLM) and `norm` (a function that replaces block i's batch
norm: MAML++'s running statistics).

Speed (2-core CPU, torch 2.13): batch norm, ReLU and max-pool run fused as
`batch_norm_relu_pool` (pool first, then the affine map on a 4x smaller tensor), and on CPU
outside `torch.vmap` the convolutions run channels-last unless told otherwise (max-pooling ~15x
and batch norm 3x faster than NCHW). A 1-channel input gets channels-last strides first, or the
first conv would return NCHW maps and the whole net would run NCHW (docs/design-notes.md, 4).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.functional import BatchNorm, batch_norm, batch_norm_relu_pool, cpu_layout
from metazoo.types import Params

Modulation = tuple[Tensor | None, Tensor | None]
"""A per-channel (scale, shift), each `[C]`, `[M, C]` (one per example: CAML) or `None` (1 and
0): FiLM's gamma and beta."""
Norm = Callable[[int, Tensor, Tensor | None, Tensor | None, float], Tensor]
"""`(block, x, weight, bias, eps) -> normalised x`: a replacement for a block's batch norm."""


def modulate(x: Tensor, modulation: Modulation) -> Tensor:
    """`scale * x + shift` per channel of `x` (`[M, C, ...]`), per example for `[M, C]` ones."""
    scale, shift = modulation
    spatial = [1] * (x.dim() - 2)  # [C] -> [C, 1, 1], [M, C] -> [M, C, 1, 1]
    if scale is not None:
        x = x * scale.reshape(*scale.shape, *spatial)
    return x if shift is None else x + shift.reshape(*shift.shape, *spatial)


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    tail = [nn.MaxPool2d(2)] if pool else []
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), BatchNorm(c_out), nn.ReLU(), *tail)


class Conv4(nn.Module):
    """Conv4 feature extractor: `[M, C, H, W]` -> `[M, feature_dim]`.

    Args:
        input_shape: (C, H, W) of one input.
        hidden: filters per block (64 in the papers; 32 for MAML on miniImageNet).
        blocks: number of conv blocks (4).
        pools: how many leading blocks end in a 2x2 max-pool (None: all of them).
    """

    def __init__(self, input_shape: tuple[int, ...] = (1, 28, 28), hidden: int = 64,
                 blocks: int = 4, pools: int | None = None) -> None:
        super().__init__()
        pools = blocks if pools is None else pools
        if not 0 <= pools <= blocks:
            raise ValueError(f"pools must be between 0 and blocks={blocks}, got {pools}")
        channels = [input_shape[0]] + [hidden] * blocks
        self.features = nn.Sequential(*[_block(a, b, i < pools) for i, (a, b)
                                        in enumerate(itertools.pairwise(channels))])
        self.input_shape = tuple(input_shape)
        self.pools = pools
        with torch.no_grad():
            maps = self.features(torch.zeros(2, *input_shape))
        self.feature_shape: tuple[int, int, int] = tuple(maps.shape[1:])  # type: ignore[assignment]
        self.feature_dim = int(maps[0].numel())
        self.block_widths: tuple[int, ...] = (hidden,) * blocks  # channels a modulation scales

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with({}, x)

    def forward_with(self, params: Params, x: Tensor, *, stats_rows: int | None = None,
                     memory_format: torch.memory_format | None = None,
                     modulation: Mapping[int, Modulation] | None = None,
                     norm: Norm | None = None) -> Tensor:
        """`forward` with `params[name]` in place of each parameter it names (others: own).

        What `metazoo.functional.call` runs: the same function as `functional_call`, without
        swapping tensors into the modules, which costs more Python than the small kernels of
        a 5-image task and holds the GIL that task threads share (MAML 1.05x). Hooks on the
        conv submodules run in the plain `forward` only (those on the batch-norm, ReLU and
        pooling modules never did: the blocks are fused).

        Args:
            params, x: parameters by name (may be empty) and the input `[M, C, H, W]`.
            stats_rows: batch-norm statistics from the first `stats_rows` rows only.
            memory_format: CPU layout of the convolutions (default channels-last).
            modulation: block index (0-based) -> (scale, shift) after norm and pool.
            norm: replaces every block's batch norm (then no fused kernel is used).
        """
        x, _ = cpu_layout(x, memory_format)
        for i, block in enumerate(self.features):  # the ReLU and MaxPool2d modules are fused away
            conv, bn = block[0], block[1]  # type: ignore[index]
            p = f"features.{i}."
            if not params:  # plain forward: through the module, so its hooks run
                x = conv(x)
            else:
                x = F.conv2d(x, params.get(p + "0.weight", conv.weight),
                             params.get(p + "0.bias", conv.bias), conv.stride, conv.padding,
                             conv.dilation, conv.groups)
            weight, bias = params.get(p + "1.weight", bn.weight), params.get(p + "1.bias", bn.bias)
            pool, film = i < self.pools, (modulation or {}).get(i)
            if norm is None and film is None:  # the fused block
                x = (batch_norm_relu_pool(x, weight, bias, bn.eps, stats_rows=stats_rows) if pool
                     else torch.relu(batch_norm(x, weight, bias, bn.eps, stats_rows)))
                continue
            if norm is None:
                x = batch_norm(x, weight, bias, bn.eps, stats_rows)
            else:
                x = norm(i, x, weight, bias, bn.eps)
            x = F.max_pool2d(x, 2) if pool else x
            x = torch.relu(x if film is None else modulate(x, film))
        return x.flatten(1)  # [M, hidden * h' * w']
