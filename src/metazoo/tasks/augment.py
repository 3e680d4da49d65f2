"""Augmentation of image episodes as the few-shot papers train on miniImageNet, CIFAR-FS and CUB.

Batched in torch over float32 images in [0, 1], `[..., C, H, W]` (what `EpisodeSampler.batch`
makes with `ClassDataset.as_float`); no torchvision. The ops, in the papers' order:

1. crop, one of
   * "pad": zero-pad `padding` pixels per side, take an H x W window at a uniform offset
     (torchvision `RandomCrop(size, padding=p)`; MetaOptNet: p = 8 at 84x84, 4 at 32x32);
   * "resized": a box of area fraction in `scale` and aspect ratio (w/h) log-uniform in `ratio`,
     10 tries then the central fallback, resized back to H x W bilinearly (torchvision's
     `RandomResizedCrop`, used by Chen et al. 2019). The box is at most the image, so resizing
     only ever upsamples and torchvision's antialias changes nothing; the crop and resize of all
     images is one `F.grid_sample` (equal to crop + `F.interpolate`, bilinear);
2. colour jitter of strength `jitter`: brightness, contrast and saturation factors uniform in
   `[max(0, 1 - jitter), 1 + jitter]`, applied in a random order per image with a clamp to
   [0, 1] after each, with torchvision `ColorJitter`'s float formulas (contrast blends with the
   mean of the grey image, saturation with the grey image, grey = 0.2989 R + 0.587 G + 0.114 B;
   other than 3 channels, grey is the channel mean).
   No hue jitter: neither recipe below uses it. Chen et al.'s `ImageJitter` (PIL enhancers
   Brightness, Contrast, Color with the same factor range) applies the three in a fixed order;
3. horizontal flip with probability 1/2 (done by the crop's indexing when a crop is on: per image,
   a flip commutes with the jitter and the normalisation);
4. per-channel normalisation `(x - mean) / std`. It is the only op of the evaluation splits
   (`AugmentConfig.test_time()`): the model must see the same scale at test as in training.

Recipes: MetaOptNet (Lee et al. 2019, `data/mini_imagenet.py`): RandomCrop(84, padding=8),
ColorJitter(0.4, 0.4, 0.4), RandomHorizontalFlip, Normalize(its miniImageNet mean/std) =
`AugmentConfig(crop="pad", padding=8, jitter=0.4, flip=True, normalize="miniimagenet")`;
CIFAR-FS: padding 4 and `normalize="cifar"`. Chen et al. 2019 ("A Closer Look at Few-shot
Classification"): RandomResizedCrop, ImageJitter(0.4, 0.4, 0.4), flip, Normalize(ImageNet) =
`AugmentConfig(crop="resized", jitter=0.4, flip=True, normalize="imagenet")`.

Randomness comes from an explicit `torch.Generator` only: `draw_params` draws every image's
parameters (batched draws), `apply_params` applies them to the whole batch at once. In
`AugmentedEpisodes` each episode gets its own generator, seeded from (seed, split, episode
index) as `episode_seed` seeds the episode itself, so an augmented episode is a pure function of
(seed, split, index) and does not depend on how episodes are grouped into meta-batches.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.errors import ConfigError, ShapeError
from metazoo.tasks.batch import TaskBatch, TaskSource
from metazoo.tasks.episodes import episode_seed

Crop = Literal["none", "pad", "resized"]
Normalization = Literal["none", "imagenet", "miniimagenet", "cifar", "custom"]

NORMALIZE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # torchvision's ImageNet statistics (Chen et al. 2019 on miniImageNet and CUB)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # MetaOptNet's miniImageNet (and tieredImageNet) statistics, data/mini_imagenet.py
    "miniimagenet": (tuple(v / 255.0 for v in (120.39586422, 115.59361427, 104.54012653)),
                     tuple(v / 255.0 for v in (70.68188272, 68.27635443, 72.54505529))),
    # MetaOptNet's CIFAR-FS and FC100 statistics, data/CIFAR_FS.py
    "cifar": (tuple(v / 255.0 for v in (129.37731888, 124.10583864, 112.47758569)),
              tuple(v / 255.0 for v in (68.20947949, 65.43124043, 70.45866994))),
}
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights (ITU-R 601-2)
TRIES = 10  # RandomResizedCrop's attempts before the central fallback


@dataclass(frozen=True)
class AugmentConfig:
    """What to do to the images of training episodes; the defaults do nothing."""

    crop: Crop = "none"  # "pad": RandomCrop with zero padding; "resized": RandomResizedCrop
    padding: int = 0  # "pad": zero pixels per side (MetaOptNet: 8 at 84x84, 4 at 32x32)
    scale: tuple[float, float] = (0.08, 1.0)  # "resized": range of the box's area fraction
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # "resized": range of the box's width / height
    jitter: float = 0.0  # brightness = contrast = saturation strength (0: off; papers: 0.4)
    flip: bool = False  # horizontal flip with probability 1/2
    normalize: Normalization = "none"  # a NORMALIZE_PRESETS name, or "custom": mean and std
    mean: tuple[float, ...] = ()  # "custom": per-channel mean
    std: tuple[float, ...] = ()  # "custom": per-channel standard deviation

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range and cross-field checks (`ConfigError` naming the `augment.` key)."""
        if self.padding < 0 or (self.crop == "pad" and self.padding == 0):
            raise ConfigError(f"augment.padding must be >= 1 with crop 'pad' (>= 0 otherwise); "
                              f"got {self.padding}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"augment.scale must satisfy 0 < low <= high <= 1; got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"augment.ratio must satisfy 0 < low <= high; got {self.ratio}")
        if not 0 <= self.jitter < math.inf:
            raise ConfigError(f"augment.jitter must be >= 0; got {self.jitter}")
        if self.normalize == "custom":
            if not self.mean or len(self.mean) != len(self.std) or min(self.std) <= 0:
                raise ConfigError("augment.normalize 'custom' needs augment.mean and augment.std "
                                  f"of one value per channel, std > 0; got mean={self.mean}, "
                                  f"std={self.std}")
        elif self.mean or self.std:
            raise ConfigError("augment.mean and augment.std are read only with "
                              f"augment.normalize 'custom'; it is '{self.normalize}'")

    @property
    def random(self) -> bool:
        """Whether any op draws random numbers (crop, jitter, flip)."""
        return self.crop != "none" or self.jitter > 0 or self.flip

    @property
    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """`(mean, std)` of the normalisation, or None when off."""
        if self.normalize == "none":
            return None
        return (self.mean, self.std) if self.normalize == "custom" else \
            NORMALIZE_PRESETS[self.normalize]

    def test_time(self) -> AugmentConfig:
        """The same normalisation and nothing random: what validation and test episodes get."""
        return dataclasses.replace(self, crop="none", padding=0, jitter=0.0, flip=False)


@dataclass(frozen=True)
class AugmentParams:
    """Drawn parameters of `M` images (a field is None when its op is off).

    Attributes:
        offsets: `[M, 2]` int64 (top, left) of the window in the padded image, in `0..2p`.
        boxes: `[M, 4]` float (top, left, height, width) of the resized crop's box, in pixels.
        factors: `[M, 3]` float brightness, contrast and saturation factors.
        order: `[M, 3]` int64, the order of the jitter ops (0 brightness, 1 contrast, 2 sat.).
        flips: `[M]` bool, which images are mirrored.
    """

    offsets: Tensor | None = None
    boxes: Tensor | None = None
    factors: Tensor | None = None
    order: Tensor | None = None
    flips: Tensor | None = None

    @staticmethod
    def cat(parts: list[AugmentParams]) -> AugmentParams:
        """The parameters of several groups of images, in order."""
        fields = {}
        for f in dataclasses.fields(AugmentParams):
            values = [getattr(p, f.name) for p in parts]
            fields[f.name] = None if values[0] is None else torch.cat(values)
        return AugmentParams(**fields)


def draw_params(config: AugmentConfig, count: int, size: tuple[int, int],
                generator: torch.Generator) -> AugmentParams:
    """Every random parameter of `count` images of `size` (H, W), drawn from `generator`."""
    g, (h, w) = generator, size
    offsets = boxes = factors = order = flips = None
    if config.crop == "pad":
        offsets = torch.randint(0, 2 * config.padding + 1, (count, 2), generator=g)
    elif config.crop == "resized":
        boxes = _draw_boxes(count, h, w, config.scale, config.ratio, g)
    if config.jitter > 0:
        lo = max(0.0, 1.0 - config.jitter)
        factors = torch.rand(count, 3, generator=g) * (1.0 + config.jitter - lo) + lo
        order = torch.rand(count, 3, generator=g).argsort(dim=1)
    if config.flip:
        flips = torch.rand(count, generator=g) < 0.5
    return AugmentParams(offsets, boxes, factors, order, flips)


def _draw_boxes(count: int, h: int, w: int, scale: tuple[float, float],
                ratio: tuple[float, float], g: torch.Generator) -> Tensor:
    """RandomResizedCrop.get_params for `count` images at once: `[count, 4]` (top, left, h, w)."""
    area = torch.rand(count, TRIES, generator=g) * (scale[1] - scale[0]) + scale[0]
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(torch.rand(count, TRIES, generator=g) * (lr[1] - lr[0]) + lr[0])
    bw = torch.sqrt(area * (h * w) * aspect).round()
    bh = torch.sqrt(area * (h * w) / aspect).round()
    ok = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)                   # first good try
    bw, bh = bw.gather(1, first)[:, 0], bh.gather(1, first)[:, 0]
    u = torch.rand(count, 2, generator=g)
    top, left = (u[:, 0] * (h - bh + 1)).floor(), (u[:, 1] * (w - bw + 1)).floor()
    # fallback of torchvision: the central crop with the ratio clamped into `ratio`
    if w / h < ratio[0]:
        fw, fh = w, round(w / ratio[0])
    elif w / h > ratio[1]:
        fw, fh = round(h * ratio[1]), h
    else:
        fw, fh = w, h
    fallback = torch.tensor([(h - fh) // 2, (w - fw) // 2, fh, fw], dtype=torch.float32)
    boxes = torch.stack([top, left, bh, bw], dim=1)
    return torch.where(ok.any(dim=1, keepdim=True), boxes, fallback)


def pad_crop(images: Tensor, padding: int, offsets: Tensor,
             flips: Tensor | None = None) -> Tensor:
    """Window `offsets[m]` (top, left) of image m zero-padded by `padding`: `[M, C, H, W]`.

    Output pixel (y, x) is input pixel (y + top - padding, x + left - padding), or 0 outside;
    one `gather` over the flattened padded planes. `flips[m]`: also mirror the window (free).
    """
    m, c, h, w = images.shape
    wide = w + 2 * padding
    planes = F.pad(images, (padding, padding, padding, padding)).view(m, c, -1)
    offsets = offsets.to(images.device)
    rows = torch.arange(h, device=images.device)[None, :, None] + offsets[:, 0, None, None]
    x = torch.arange(w, device=images.device).expand(m, w)
    if flips is not None:
        x = torch.where(flips.to(images.device)[:, None], x.flip(1), x)
    cols = x[:, None, :] + offsets[:, 1, None, None]
    index = (rows * wide + cols).view(m, 1, h * w).expand(m, c, h * w)   # [M, C, H*W]
    return planes.gather(2, index).view(m, c, h, w)


def resized_crop(images: Tensor, boxes: Tensor, flips: Tensor | None = None) -> Tensor:
    """Box `boxes[m]` (top, left, height, width) of image m resized to H x W, bilinearly.

    The same as cropping the box then `F.interpolate(..., mode="bilinear", align_corners=False)`
    (torchvision's `resized_crop` without antialias, which only acts when shrinking): output
    pixel u reads box coordinate `(u + 0.5) * width / W - 0.5`, clamped into the box; all images
    in one `F.grid_sample`. `flips[m]`: also mirror the result (free).
    """
    m, _c, h, w = images.shape
    top, left, bh, bw = boxes.to(images.device, images.dtype).unbind(1)

    def coords(start: Tensor, extent: Tensor, n: int) -> Tensor:  # [M, n], grid units
        u = torch.arange(n, device=images.device, dtype=images.dtype) + 0.5
        p = start[:, None] + u * (extent / n)[:, None] - 0.5
        p = torch.minimum(torch.maximum(p, start[:, None]), (start + extent - 1)[:, None])
        return (2 * p + 1) / n - 1

    gx, gy = coords(left, bw, w), coords(top, bh, h)
    if flips is not None:
        gx = torch.where(flips.to(images.device)[:, None], gx.flip(1), gx)
    grid = torch.stack([gx[:, None, :].expand(m, h, w), gy[:, :, None].expand(m, h, w)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Brightness, contrast and saturation by `factors[m]`, in the order `order[m]`.

    Each op blends with a reference and clamps to [0, 1] (torchvision's `_blend`): brightness
    with black, contrast with the mean grey level, saturation with the grey image.
    """
    m, c, h, w = images.shape
    factors, order = factors.to(images.device, images.dtype), order.to(images.device)
    weights = (torch.tensor(GREY, device=images.device, dtype=images.dtype) if c == 3
               else torch.full((c,), 1.0 / c, device=images.device, dtype=images.dtype))
    weights = weights.view(1, 1, c).expand(m, 1, c)
    x = images
    for k in range(3):
        op = order[:, k].view(m, 1, 1, 1)
        f = factors.gather(1, order[:, k, None]).view(m, 1, 1, 1)
        grey = torch.bmm(weights, x.reshape(m, c, h * w)).view(m, 1, h, w)
        ref = torch.where(op == 2, grey, grey.mean(dim=(2, 3), keepdim=True) * (op == 1))
        x = torch.lerp(ref.expand_as(x), x, f).clamp_(0.0, 1.0)  # f x + (1 - f) ref
    return x


def hflip(images: Tensor, flips: Tensor) -> Tensor:
    """Images with `flips[m]` mirrored left-right, the others unchanged."""
    mask = flips.to(images.device).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """`(images - mean) / std` per channel, channels at dim -3."""
    c = images.shape[-3]
    if len(mean) != c or len(std) != c:
        raise ShapeError(f"normalisation has {len(mean)} means and {len(std)} stds for images "
                         f"with {c} channels")
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(c, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(c, 1, 1)
    return (images - m) / s


def apply_params(images: Tensor, config: AugmentConfig, params: AugmentParams) -> Tensor:
    """Crop, jitter, flip, normalise `[M, C, H, W]` images with drawn `params`."""
    x, flips = images, params.flips  # a flip commutes with jitter: done by the crop's indexing
    if params.offsets is not None:
        x, flips = pad_crop(x, config.padding, params.offsets, flips), None
    if params.boxes is not None:
        x, flips = resized_crop(x, params.boxes, flips), None
    if params.factors is not None and params.order is not None:
        x = color_jitter(x, params.factors, params.order)
    if flips is not None:
        x = hflip(x, flips)
    stats = config.statistics
    return x if stats is None else normalize(x, *stats)


def augment(images: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """`images` `[..., C, H, W]` (float in [0, 1]) augmented by `config`, same shape and dtype.

    Every image gets its own parameters; all are drawn from `generator`. With nothing on,
    `images` itself is returned.
    """
    if not images.is_floating_point() or images.dim() < 3:
        raise ShapeError(f"augment needs float images [..., C, H, W]; got {images.dtype} "
                         f"{tuple(images.shape)}")
    if not config.random and config.statistics is None:
        return images
    c, h, w = images.shape[-3:]
    if config.crop == "pad" and config.padding > min(h, w):
        raise ShapeError(f"padding {config.padding} is larger than the {h}x{w} images")
    flat = images.reshape(-1, c, h, w)
    params = draw_params(config, flat.shape[0], (h, w), generator)
    return apply_params(flat, config, params).reshape(images.shape)


class AugmentedEpisodes:
    """A task source whose episodes' images (support and query) are augmented.

    Episode e (task b of `batch(i, B)` is episode i*B + b) is augmented with a generator seeded
    by `episode_seed(seed, split + "/augment", e)`: a pure function of (seed, split, e), the same
    whatever the meta-batch size, and independent of the draws that chose the episode. Labels
    and shapes are unchanged. Wrap validation and test sources with `config.test_time()`.

    Args:
        source: a `TaskSource` of image episodes (e.g. `EpisodeSampler`).
        config: what to apply.
        seed, split: default to `source.seed` and `source.dataset.name` (`EpisodeSampler`).
    """

    def __init__(self, source: TaskSource, config: AugmentConfig, *, seed: int | None = None,
                 split: str | None = None) -> None:
        seed = getattr(source, "seed", None) if seed is None else seed
        if split is None:
            split = getattr(getattr(source, "dataset", None), "name", None)
        if seed is None or split is None:
            raise ConfigError("AugmentedEpisodes needs the source's seed and split name; pass "
                              "seed= and split= for a source that is not an EpisodeSampler")
        self.source, self.config, self.seed, self.split = source, config, int(seed), str(split)
        self.ways, self.shots, self.queries = source.ways, source.shots, source.queries

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    def generator(self, episode: int) -> torch.Generator:
        """The generator of episode `episode`'s augmentation."""
        return torch.Generator().manual_seed(episode_seed(self.seed, f"{self.split}/augment",
                                                          episode))

    def episode(self, index: int) -> TaskBatch:
        """Episode `index` as a batch of one."""
        return self.batch(index, 1)

    def batch(self, index: int, meta_batch_size: int) -> TaskBatch:
        """The source's batch `index` with every image augmented."""
        b = self.source.batch(index, meta_batch_size)
        cfg = self.config
        if not cfg.random:
            stats = cfg.statistics
            if stats is None:
                return b
            return dataclasses.replace(b, support_x=normalize(b.support_x, *stats),
                                       query_x=normalize(b.query_x, *stats))
        s, q = b.support_x, b.query_x
        if s.dim() != 5:
            raise ShapeError(f"AugmentedEpisodes needs image episodes [B, M, C, H, W]; got "
                             f"inputs {tuple(s.shape)}")
        c, h, w = s.shape[2:]
        if cfg.crop == "pad" and cfg.padding > min(h, w):
            raise ShapeError(f"padding {cfg.padding} is larger than the {h}x{w} images")
        sup, qry = [], []
        for e in range(len(b)):
            g = self.generator(index * meta_batch_size + e)
            sup.append(draw_params(cfg, s.shape[1], (h, w), g))
            qry.append(draw_params(cfg, q.shape[1], (h, w), g))
        xs = apply_params(s.reshape(-1, c, h, w), cfg, AugmentParams.cat(sup)).reshape(s.shape)
        if q.shape[1] == 0:
            return dataclasses.replace(b, support_x=xs)
        xq = apply_params(q.reshape(-1, c, h, w), cfg, AugmentParams.cat(qry)).reshape(q.shape)
        return dataclasses.replace(b, support_x=xs, query_x=xq)
