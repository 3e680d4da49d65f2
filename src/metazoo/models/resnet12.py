"""ResNet-12 of MetaOptNet and TADAM, with DropBlock: `[M, C, H, W]` -> `[M, feature_dim]`.

The backbone of MetaOptNet (Lee, Maji, Ravichandran, Soatto, "Meta-Learning with Differentiable
Convex Optimization", CVPR 2019, Sec. 4.1 and github.com/kjunelee/MetaOptNet,
`models/ResNet12_embedding.py`, `models/dropblock.py`), which follows TADAM (Oreshkin, Rodriguez,
Lacoste, NeurIPS 2018) and SNAIL (Mishra et al., ICLR 2018). Four residual blocks of widths
64-160-320-640; block i maps x to

    h1  = lrelu(BN(conv3x3(x)))
    h2  = lrelu(BN(conv3x3(h1)))
    out = maxpool2x2(lrelu(BN(conv3x3(h2)) + BN(conv1x1(x))))      (1x1 conv + BN shortcut)

with leaky ReLU of slope 0.1, convolutions without bias (batch norm follows each), then dropout
(blocks 1-2) or DropBlock (blocks 3-4) in training mode. No head and no average pooling: the
640 x 5 x 5 maps of an 84x84 input flatten to 16000 features (`avg_pool=True`: 640, the global
average MetaOptNet's `nn.AvgPool2d(5)` takes of those 5x5 maps). Spatial sizes: 84 -> 42, 21, 10, 5;
32 -> 16, 8, 4, 2 (2560 features); 28 -> 14, 7, 3, 1 (640). 12,424,320 parameters at
64-160-320-640 with a 3-channel input (the "12.4M" usually quoted). Convolutions get the
reference's init (Kaiming normal, fan-out, leaky-ReLU gain); batch norm starts at scale 1, shift 0.

DropBlock (Ghiasi, Lin, Le, NeurIPS 2018, Alg. 1) zeroes `b x b` squares of a block's output maps:
seeds are drawn with probability

    gamma = (1 - keep_prob) / b^2 * (H W) / ((H - b + 1)(W - b + 1))

on the (H-b+1) x (W-b+1) positions where a whole square fits, each seed drops the square below and
right of it, and the kept activations are rescaled by count(mask) / count_ones(mask) over the whole
batch, all as in MetaOptNet's `dropblock.py` (b = `dropblock_size`: 5 on miniImageNet and
tieredImageNet, 2 on CIFAR-FS and FC100 in its `train.py`). The keep probability follows
MetaOptNet's linear schedule, `keep_prob = 1 - drop_rate * progress` with progress in [0, 1];
MetaOptNet advances it with a counter of forward calls (`max(1 - drop_rate * t / 40000,
1 - drop_rate)`, t = 2 calls per batch of 8 episodes, so the ramp ends after 20 of its 60 epochs).
Here the schedule is driven from outside: `set_progress(fraction)` (MetaOptNet's ramp:
`set_progress(step / (steps / 3))`, clamped to 1). It starts at 1 (the full rate) so a trainer
that never calls it still regularises as the paper's later epochs do. Blocks 1-2 use ordinary
dropout with `p = drop_rate`, as the reference.

Randomness: dropout and DropBlock draw from `self.generator` (a `torch.Generator` on the input's
device, constructor argument `generator`), or from torch's global generator when it is `None`
(the default), so runs are then deterministic given `torch.manual_seed`. In eval mode nothing
is random. Under `torch.vmap` in training mode pass `randomness="different"` (or "same").

Deviations from the reference:
* batch norm uses batch statistics only (`metazoo.functional.batch_norm`: no running
  statistics, so eval mode normalises with the batch too; `stats_rows` for non-transductive use);
* the max-pool runs before the block's last leaky ReLU (they commute: the ReLU is increasing),
  so FiLM `modulation` of block i is applied after norm, residual sum and pool, before the
  nonlinearity, as in conv4;
* DropBlock's square side is `min(dropblock_size, H, W)` (the reference fails on maps smaller
  than the block: 28x28 and 32x32 inputs with b = 5) and its count ratio is guarded against an
  all-dropped batch; `avg_pool` is a global mean over any map size (the reference's fixed 5x5
  window equals it at 84x84 only);
* DropBlock always drops whole squares (Ghiasi et al.'s definition). The reference pairs seed k
  with offset k mod b^2 after `repeat`ing both lists, so when the number of seeds in the batch
  shares a factor with b^2 only part of each square is dropped (checked against a CPU port of
  its `_compute_block_mask`); the dilation here equals it exactly whenever they are coprime.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.functional import BatchNorm, batch_norm, cpu_layout
from metazoo.models.conv4 import Modulation, modulate
from metazoo.types import Params

NEGATIVE_SLOPE = 0.1
"""Leaky ReLU slope of MetaOptNet's ResNet-12 (and of R2-D2's backbone)."""


def dropout(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout: zero each entry with probability `p`, scale the rest by 1/(1-p)."""
    if p <= 0:
        return x
    if p >= 1:
        return x * 0
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= p
    return x * keep.to(x.dtype) / (1 - p)


def drop_block(x: Tensor, keep_prob: float, block_size: int,
               generator: torch.Generator | None = None) -> Tensor:
    """DropBlock of `[M, C, H, W]` maps (Ghiasi et al. 2018, Alg. 1; MetaOptNet's version).

    Seeds on the (H-b+1) x (W-b+1) positions where a `b x b` square fits, each with probability
    gamma (module docstring), drop the square below and right of them; the kept entries are
    scaled by numel / number kept (over the whole batch). `b = min(block_size, H, W)`.
    """
    if keep_prob >= 1:
        return x
    _, _, h, w = x.shape
    b = max(1, min(block_size, h, w))
    gamma = min(1.0, (1 - keep_prob) / b**2 * (h * w) / ((h - b + 1) * (w - b + 1)))
    seeds = torch.rand(x.shape[0], x.shape[1], h - b + 1, w - b + 1, generator=generator,
                       device=x.device, dtype=x.dtype) < gamma
    # a seed at (i, j) drops rows i..i+b-1, cols j..j+b-1: a b x b max over the seeds padded
    # by b-1 on every side (max-pooling's padding is limited to k/2, so pad explicitly)
    dropped = F.max_pool2d(F.pad(seeds.to(x.dtype), [b - 1] * 4), b, stride=1)
    keep = 1 - dropped
    return x * keep * (keep.numel() / keep.sum().clamp_min(1))


class _ResBlock(nn.Module):
    """Three 3x3 conv + BN (+ leaky ReLU) with a 1x1 conv + BN shortcut, then 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = BatchNorm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = BatchNorm(c_out)
        self.conv3 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn3 = BatchNorm(c_out)
        self.shortcut_conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.shortcut_bn = BatchNorm(c_out)

    def run(self, params: Params, prefix: str, x: Tensor, stats_rows: int | None,
            film: Modulation | None) -> Tensor:
        """The block's output before dropout, with `params[prefix + name]` where given."""

        def conv(name: str, h: Tensor) -> Tensor:
            module: nn.Conv2d = getattr(self, name)
            if not params:  # plain forward: through the module, so its hooks run
                return module(h)
            return F.conv2d(h, params.get(f"{prefix}{name}.weight", module.weight), None,
                            module.stride, module.padding)

        def bn(name: str, h: Tensor) -> Tensor:
            module: BatchNorm = getattr(self, name)
            return batch_norm(h, params.get(f"{prefix}{name}.weight", module.weight),
                              params.get(f"{prefix}{name}.bias", module.bias), module.eps,
                              stats_rows)

        h = F.leaky_relu(bn("bn1", conv("conv1", x)), NEGATIVE_SLOPE)
        h = F.leaky_relu(bn("bn2", conv("conv2", h)), NEGATIVE_SLOPE)
        h = bn("bn3", conv("conv3", h)) + bn("shortcut_bn", conv("shortcut_conv", x))
        h = F.max_pool2d(h, 2)  # before the ReLU: they commute, and the ReLU runs 4x smaller
        return F.leaky_relu(h if film is None else modulate(h, film), NEGATIVE_SLOPE)


class ResNet12(nn.Module):
    """MetaOptNet's ResNet-12 feature extractor: `[M, C, H, W]` -> `[M, feature_dim]`.

    Args:
        input_shape: (C, H, W) of one input.
        widths: channels of the residual blocks (MetaOptNet: 64-160-320-640).
        drop_rate: dropout rate of the blocks before the last two, and DropBlock's final
            drop rate (1 - keep_prob) in the last two (MetaOptNet: 0.1).
        dropblock_size: side of DropBlock's squares (MetaOptNet: 5 on mini/tieredImageNet,
            2 on CIFAR-FS and FC100).
        avg_pool: average the last maps over space (features = widths[-1]); MetaOptNet: off.
        generator: source of dropout and DropBlock's randomness (None: torch's global one).
    """

    def __init__(self, input_shape: tuple[int, ...] = (3, 84, 84),
                 widths: tuple[int, ...] = (64, 160, 320, 640), drop_rate: float = 0.1,
                 dropblock_size: int = 5, avg_pool: bool = False, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one block")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if dropblock_size < 1:
            raise ValueError(f"dropblock_size must be at least 1, got {dropblock_size}")
        channels = [input_shape[0], *widths]
        self.blocks = nn.ModuleList(_ResBlock(a, b) for a, b in itertools.pairwise(channels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        self.input_shape = tuple(input_shape)
        self.block_widths: tuple[int, ...] = tuple(widths)  # channels a modulation scales
        self.drop_rate = drop_rate
        self.dropblock_size = dropblock_size
        self.dropblock_blocks = tuple(range(max(0, len(widths) - 2), len(widths)))
        self.avg_pool = avg_pool
        self.generator = generator
        self.progress = 1.0
        # a dummy forward on the meta device: shapes only, no compute, no random draws
        meta = {k: torch.empty_like(v, device="meta") for k, v in self.named_parameters()}
        try:
            maps = self._run(meta, torch.zeros(2, *input_shape, device="meta"), None, None,
                             None, drop=False, flatten=False)
        except RuntimeError as e:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for "
                             f"{len(widths)} blocks: {e}") from None
        self.feature_shape: tuple[int, ...] = tuple(maps.shape[1:])
        self.feature_dim = int(maps[0].numel())

    def set_progress(self, fraction: float) -> None:
        """Move DropBlock's linear schedule: keep_prob = 1 - drop_rate * clamp(fraction, 0, 1).

        MetaOptNet reaches the final rate a third of the way through training (20 of 60 epochs):
        call `set_progress(3 * step / total_steps)` before each step to reproduce it.
        """
        self.progress = min(1.0, max(0.0, float(fraction)))

    @property
    def keep_prob(self) -> float:
        """DropBlock's current keep probability."""
        return 1.0 - self.drop_rate * self.progress

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
            modulation: block index (0-based) -> (scale, shift) after norm, residual sum and
                pool, before the block's last leaky ReLU.
        """
        return self._run(params, x, stats_rows, memory_format, modulation, drop=self.training,
                         flatten=True)

    def _run(self, params: Params, x: Tensor, stats_rows: int | None,
             memory_format: torch.memory_format | None,
             modulation: Mapping[int, Modulation] | None, *, drop: bool, flatten: bool
             ) -> Tensor:
        x, layout = cpu_layout(x, memory_format)
        for i, block in enumerate(self.blocks):
            if layout is not None:  # every conv keeps its input's layout; dropout's mask may not
                x = x.contiguous(memory_format=layout)
            x = block.run(params, f"blocks.{i}.", x, stats_rows,  # type: ignore[operator]
                          (modulation or {}).get(i))
            if drop and i in self.dropblock_blocks:
                x = drop_block(x, self.keep_prob, self.dropblock_size, self.generator)
            elif drop:
                x = dropout(x, self.drop_rate, self.generator)
        if self.avg_pool:
            x = x.mean((2, 3), keepdim=True)
        return x.flatten(1) if flatten else x
