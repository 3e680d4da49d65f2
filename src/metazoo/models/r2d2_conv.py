"""R2-D2's four-block backbone, features of the last two blocks: `[M, C, H, W]` -> `[M, D]`.

The embedding of R2-D2 and LR-D2 (Bertinetto, Henriques, Torr, Vedaldi, "Meta-learning with
differentiable closed-form solvers", ICLR 2019, Sec. 4.1 "Network architecture"; the authors'
code, github.com/bertinetto/r2d2, `fewshots/models/load_model.py`, class `RRFeatures`). Block i:

    x_i = dropout_i(lrelu(maxpool2x2(BN(conv3x3(x_{i-1})), stride s_i)))

with widths 96-192-384-512, convolutions with bias and padding 1, leaky ReLU of slope 0.1 and
max-pool strides s = (2, 2, 2, 1): the paper orders the block conv -> BN -> max-pool ->
leaky ReLU and uses stride 2 in the first three blocks and 1 in the last. Dropout acts in the
last two blocks (the code's default rate 0.1, `scripts/train/conf/fewshots.yaml`; the paper
reports 0.1 on miniImageNet and 0.4 on CIFAR-FS). No fully connected layer: the features are

    concat(flatten(maxpool2x2(x_3, stride 1)), flatten(x_4))

the third block's maps pooled once more with stride 1 (the code's `pool3`) so that they have the
fourth's spatial size. Sizes at 96-192-384-512: 84x84 -> 42, 21, 10, 9 (and 9 for the pooled
third block): (384 + 512) * 81 = 72576 features; 32x32 -> 16, 8, 4, 3: 8064; 28x28 -> 14, 7, 3, 2:
3584, the paper's three dimensionalities (miniImageNet, CIFAR-FS, Omniglot). 2,605,056
parameters with a 3-channel input (the paper states no count). PyTorch's default init.

MetaOptNet's re-implementation (github.com/kjunelee/MetaOptNet, `models/R2D2_embedding.py`)
differs: stride 2 in every block, no extra pool on the third block's maps, no activation after
the last block and dropout 0.1 / 0.3 (its features are 51200-d at 84x84); it is
`R2D2Conv(pool_strides=(2, 2, 2, 2), concat_pool=False, last_activation=False,
dropout=(0, 0, 0.1, 0.3))`.

Randomness: dropout draws from `self.generator` (constructor argument), or torch's global
generator when it is `None` (the default: deterministic given `torch.manual_seed`); it acts in
training mode only. Under `torch.vmap` in training mode pass `randomness="different"`.

Deviations: batch norm uses batch statistics only (`metazoo.functional.batch_norm`, no running
statistics; `stats_rows` for non-transductive use). FiLM `modulation` of block i is applied after
norm and pool, before the leaky ReLU, as in conv4.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.functional import BatchNorm, batch_norm, cpu_layout
from metazoo.models.conv4 import Modulation, modulate
from metazoo.models.resnet12 import NEGATIVE_SLOPE
from metazoo.models.resnet12 import dropout as _dropout
from metazoo.types import Params


class _ConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = BatchNorm(c_out)


class R2D2Conv(nn.Module):
    """R2-D2's backbone: `[M, C, H, W]` -> `[M, feature_dim]`, last two blocks concatenated.

    Args:
        input_shape: (C, H, W) of one input.
        widths: filters of the conv blocks (the paper: 96-192-384-512); at least two blocks.
        dropout: dropout rate of each block (the paper: in the last two).
        pool_strides: stride of each block's 2x2 max-pool (the paper: 2, 2, 2, 1).
        concat_pool: max-pool the next-to-last block's maps once more (2x2, stride 1) before
            concatenating, as the authors' code.
        last_activation: keep the last block's leaky ReLU (MetaOptNet's variant drops it).
        generator: source of dropout's randomness (None: torch's global one).
    """

    def __init__(self, input_shape: tuple[int, ...] = (3, 84, 84),
                 widths: tuple[int, ...] = (96, 192, 384, 512),
                 dropout: tuple[float, ...] = (0.0, 0.0, 0.1, 0.1),
                 pool_strides: tuple[int, ...] = (2, 2, 2, 1), concat_pool: bool = True,
                 last_activation: bool = True, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths must name at least two blocks, got {widths}")
        if not len(dropout) == len(pool_strides) == len(widths):
            raise ValueError(f"widths {widths}, dropout {dropout} and pool_strides "
                             f"{pool_strides} must have one entry per block")
        if not all(0 <= p < 1 for p in dropout):
            raise ValueError(f"dropout rates must be in [0, 1), got {dropout}")
        channels = [input_shape[0], *widths]
        self.blocks = nn.ModuleList(_ConvBN(a, b) for a, b in itertools.pairwise(channels))
        self.input_shape = tuple(input_shape)
        self.block_widths: tuple[int, ...] = tuple(widths)  # channels a modulation scales
        self.dropout = tuple(dropout)
        self.pool_strides = tuple(pool_strides)
        self.concat_pool = concat_pool
        self.last_activation = last_activation
        self.generator = generator
        # a dummy forward on the meta device: shapes only, no compute, no random draws
        meta = {k: torch.empty_like(v, device="meta") for k, v in self.named_parameters()}
        try:
            maps = self._maps(meta, torch.zeros(2, *input_shape, device="meta"), None, None,
                              None, drop=False)
        except RuntimeError as e:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for "
                             f"{len(widths)} blocks: {e}") from None
        self.feature_shapes: tuple[tuple[int, ...], ...] = tuple(
            tuple(m.shape[1:]) for m in maps)
        self.feature_dim = sum(int(m[0].numel()) for m in maps)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with({}, x)

    def forward_with(self, params: Params, x: Tensor, *, stats_rows: int | None = None,
                     memory_format: torch.memory_format | None = None,
                     modulation: Mapping[int, Modulation] | None = None) -> Tensor:
        """`forward` with `params[name]` in place of each parameter it names (others: own).

        Args:
            params, x: parameters by name (may be empty) and the input `[M, C, H, W]`.
            stats_rows: batch-norm statistics from the first `stats_rows` rows only.
            memory_format: CPU layout of the convolutions (default channels-last).
            modulation: block index (0-based) -> (scale, shift) after norm and pool, before
                the leaky ReLU.
        """
        maps = self._maps(params, x, stats_rows, memory_format, modulation, drop=self.training)
        return torch.cat([m.flatten(1) for m in maps], 1)

    def _maps(self, params: Params, x: Tensor, stats_rows: int | None,
              memory_format: torch.memory_format | None,
              modulation: Mapping[int, Modulation] | None, *, drop: bool
              ) -> tuple[Tensor, Tensor]:
        """The maps whose flattened concatenation is the feature vector."""
        x, layout = cpu_layout(x, memory_format)
        last = len(self.blocks) - 1
        outputs = []
        for i, block in enumerate(self.blocks):
            conv: nn.Conv2d = block.conv  # type: ignore[assignment]
            bn: BatchNorm = block.bn  # type: ignore[assignment]
            p = f"blocks.{i}."
            if layout is not None:  # every conv keeps its input's layout; dropout's mask may not
                x = x.contiguous(memory_format=layout)
            if not params:  # plain forward: through the module, so its hooks run
                x = conv(x)
            else:
                x = F.conv2d(x, params.get(p + "conv.weight", conv.weight),
                             params.get(p + "conv.bias", conv.bias), conv.stride, conv.padding)
            x = batch_norm(x, params.get(p + "bn.weight", bn.weight),
                           params.get(p + "bn.bias", bn.bias), bn.eps, stats_rows)
            x = F.max_pool2d(x, 2, self.pool_strides[i])
            film = (modulation or {}).get(i)
            x = x if film is None else modulate(x, film)
            if i < last or self.last_activation:
                x = F.leaky_relu(x, NEGATIVE_SLOPE)
            if drop:
                x = _dropout(x, self.dropout[i], self.generator)
            outputs.append(x)
        third = F.max_pool2d(outputs[-2], 2, 1) if self.concat_pool else outputs[-2]
        return third, outputs[-1]
