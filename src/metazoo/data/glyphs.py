"""Glyphs: procedurally drawn characters, the library's embedded default image dataset.

Why: every example, test and README command needs a few-shot image dataset that works offline, in
seconds, with no download and no licence question. Glyphs plays Omniglot's part: many classes,
few examples each, 28x28 single-channel ink (255) on a black (0) background.

What: class `c` is a random "character", 2-4 strokes, each a cubic Bezier curve through random
control points (a stroke may start where the previous one ended, as pen strokes often do). An
example is that character as one more person would draw it: each control point moves a little,
then the whole glyph is rotated, scaled, sheared and shifted, and drawn with its own pen width.
The difficulty is tuned so raw pixels are a poor metric (1-NN on pixels stays well below 60% on
5-way 1-shot test episodes) while a learned embedding does well (ProtoNet with Conv4 passes 80%
after a few minutes on a CPU).

How: every random number comes from one `torch.Generator` seeded with `GENERATION_SEED`, so the
dataset is the same on every machine and run (the loader's `seed` argument does not change it).
Strokes are rendered for thousands of examples at once and anti-aliased: each curve is sampled
densely, every sample is splatted bilinearly with its arc length as weight (ink per unit length),
and the canvas is blurred with the pen's Gaussian, a line integral whose profile peaks at 1 on the
stroke's centre. The blur is separable, `K @ canvas @ K^T`, so a split is a few large matrix
products (a few seconds on one core); the splits are cached on disk.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.data.base import ClassDataset, DatasetSpec
from metazoo.data.cache import cache_key, cached_dataset, resolve_root
from metazoo.errors import ConfigError

GENERATION_SEED = 20170303  # the dataset's own seed: the same glyphs for every run
VERSION = 1  # bump when the drawing changes, so stale caches are not reused
EXAMPLES_PER_CLASS = 20
SPLITS: dict[str, tuple[int, int]] = {"train": (0, 1600), "val": (1600, 1800), "test": (1800, 2400)}
NUM_CLASSES = 2400
MAX_STROKES = 4
POINTS_PER_STROKE = 32  # samples along each Bezier curve, about a pixel apart or closer
PEN_LEVELS = 6  # pen widths are drawn from this many evenly spaced levels
EXTENT = 0.35  # the glyph square [-1, 1]^2 spans 70% of the image, leaving room to move
_CHUNK = 4096  # examples rendered per batched matrix product


@dataclass(frozen=True)
class GlyphStyle:
    """How characters are made and how much people's drawings of one character vary.

    Lengths are in glyph units: a character fits the square [-1, 1]^2, drawn over 70% of the
    image (`EXTENT`).
    """

    min_strokes: int = 2
    max_strokes: int = 4  # at most MAX_STROKES
    stroke_length: float = 1.0  # step scale of the random walk through a stroke's control points
    connect_prob: float = 0.5  # chance that a stroke starts where the previous one ended
    point_noise: float = 0.12  # std of the per-example offset of every control point
    rotation: float = 20.0  # max rotation, degrees
    scale: tuple[float, float] = (0.8, 1.1)  # range of the isotropic scale
    stretch: float = 0.1  # max anisotropic stretch (log-ratio of x to y scale)
    shear: float = 0.1  # max shear
    shift: float = 0.35  # max translation, glyph units (about 3 pixels at 28x28)
    pen: tuple[float, float] = (0.7, 1.2)  # range of the pen's Gaussian std, pixels at 28x28
    gain: float = 2.0  # ink = clamp(gain * coverage, 0, 1): solid core, soft anti-aliased edge


STYLE = GlyphStyle()


def _bernstein(t: Tensor) -> Tensor:
    """Cubic Bernstein basis at parameters `t` `[T]` -> `[T, 4]`."""
    s = 1.0 - t
    return torch.stack([s**3, 3 * s * s * t, 3 * s * t * t, t**3], dim=1)


def _characters(g: torch.Generator, n: int, style: GlyphStyle) -> tuple[Tensor, Tensor]:
    """Control points `[n, S, 4, 2]` (fit to [-1, 1]^2) and stroke masks `[n, S]` of n classes."""
    s = MAX_STROKES
    starts = torch.rand(n, s, 1, 2, generator=g) * 1.6 - 0.8  # [n, S, 1, 2]
    steps = torch.randn(n, s, 3, 2, generator=g) * (style.stroke_length / 2.5)
    points = starts + torch.cumsum(steps, dim=2)  # [n, S, 3, 2]: a random walk of 3 more points
    pts = torch.cat([starts, points], dim=2)  # [n, S, 4, 2]
    connect = torch.rand(n, s, generator=g) < style.connect_prob
    for k in range(1, s):  # a connected stroke is shifted to begin at the previous one's end
        delta = pts[:, k - 1, 3] - pts[:, k, 0]  # [n, 2]
        pts[:, k] += torch.where(connect[:, k, None], delta, torch.zeros_like(delta))[:, None]
    count = torch.randint(style.min_strokes, style.max_strokes + 1, (n,), generator=g)
    mask = torch.arange(s)[None, :] < count[:, None]  # [n, S]
    # fit the used control points into [-1, 1]^2, keeping the aspect ratio
    big = torch.where(mask[:, :, None, None], pts, torch.full_like(pts, math.inf))
    small = torch.where(mask[:, :, None, None], pts, torch.full_like(pts, -math.inf))
    lo, hi = big.amin(dim=(1, 2)), small.amax(dim=(1, 2))  # [n, 2]
    centre, half = (lo + hi) / 2, ((hi - lo) / 2).amax(dim=1).clamp_min(1e-3)  # [n, 2], [n]
    pts = (pts - centre[:, None, None]) / half[:, None, None, None]
    return pts, mask


def _examples(g: torch.Generator, pts: Tensor, style: GlyphStyle) -> Tensor:
    """Per-example drawings of characters `pts` `[E, S, 4, 2]`: jittered control points."""
    e = pts.shape[0]
    pts = pts + torch.randn(pts.shape, generator=g) * style.point_noise
    u = torch.rand(e, 5, generator=g) * 2 - 1  # [E, 5] uniform in [-1, 1]
    angle = u[:, 0] * math.radians(style.rotation)
    lo, hi = style.scale
    scale = lo + (u[:, 1] + 1) / 2 * (hi - lo)
    stretch = torch.exp(u[:, 2] * style.stretch / 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [E, 2, 2]
    shear = torch.eye(2).repeat(e, 1, 1)
    shear[:, 0, 1] = u[:, 3] * style.shear
    diag = torch.stack([scale * stretch, scale / stretch], 1)  # [E, 2]
    affine = rot @ shear * diag[:, None, :]  # [E, 2, 2]: scale, then shear, then rotate
    shift = torch.rand(e, 2, generator=g) * 2 - 1  # independent of u: 2-D translation
    return torch.einsum("eij,eskj->eski", affine, pts) + (shift * style.shift)[:, None, None]


def _blur_matrix(size: int, pad: int, pen: float) -> Tensor:
    """Gaussian blur from a padded canvas to the image, `[size, size + 2 * pad]`, one axis."""
    out = torch.arange(size, dtype=torch.float32)[:, None]
    src = torch.arange(-pad, size + pad, dtype=torch.float32)[None, :]
    return torch.exp(-0.5 * ((out - src) / pen) ** 2)


def _render(pts: Tensor, mask: Tensor, pen: Tensor, size: int, gain: float) -> Tensor:
    """Anti-aliased uint8 images `[E, size, size]` of curves `pts` `[E, S, 4, 2]`.

    `mask` `[E, S]` switches strokes off; `pen` `[E]` is the pen's Gaussian std in pixels, one of
    a few levels (examples of one level are blurred together by two large matrix products).
    """
    e, pad = pts.shape[0], 4
    side = size + 2 * pad  # the canvas is padded so ink just outside still blurs in
    basis = _bernstein(torch.linspace(0, 1, POINTS_PER_STROKE))  # [T, 4]
    half = EXTENT * size  # glyph units -> pixels
    curve = torch.einsum("tk,eskd->estd", basis, pts) * half + (size - 1) / 2 + pad  # [E,S,T,2]
    seg = (curve[:, :, 1:] - curve[:, :, :-1]).norm(dim=-1)  # [E, S, T-1]
    # arc length each sample stands for (trapezoid rule): the canvas holds ink per unit length
    weight = (F.pad(seg, (0, 1)) + F.pad(seg, (1, 0))) / 2 * mask[:, :, None]  # [E, S, T]
    curve, weight = curve.reshape(e, -1, 2), weight.reshape(e, -1)  # [E, P, 2], [E, P]
    # bilinear splat of every sample onto the canvas
    base = curve.floor()
    frac = curve - base
    base = base.long()
    canvas = torch.zeros(e * side * side)
    offset = (torch.arange(e) * side * side)[:, None]  # [E, 1]
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        x, y = base[..., 0] + dx, base[..., 1] + dy
        wx = frac[..., 0] if dx else 1 - frac[..., 0]
        wy = frac[..., 1] if dy else 1 - frac[..., 1]
        inside = (x >= 0) & (x < side) & (y >= 0) & (y < side)
        index = (offset + y.clamp(0, side - 1) * side + x.clamp(0, side - 1)).reshape(-1)
        canvas.index_add_(0, index, (weight * wx * wy * inside).reshape(-1))
    canvas = canvas.view(e, side, side)
    coverage = torch.empty(e, size, size)
    for level in pen.unique().tolist():  # blur rows then columns: [E', H', W'] -> [E', H, W]
        rows = (pen == level).nonzero().squeeze(1)
        k = _blur_matrix(size, pad, level)  # [size, side]
        k_norm = k / (math.sqrt(2 * math.pi) * level)  # a line integrates to peak 1 across it
        coverage[rows] = k_norm @ (canvas[rows] @ k.T)
    return (coverage * gain).clamp_(0, 1).mul_(255).round_().to(torch.uint8)


def generate(classes: range, image_size: int = 28, style: GlyphStyle = STYLE,
             seed: int = GENERATION_SEED) -> Tensor:
    """Images of `classes` (a range in `0..NUM_CLASSES-1`), `[len(classes) * 20, 1, H, W]` uint8.

    Every class and example is drawn from one generator seeded with `seed`, always for all
    `NUM_CLASSES` classes (drawing parameters is cheap), so a class looks the same whichever
    split or range it is generated in; only the requested rows are rendered.
    """
    g = torch.Generator().manual_seed(seed)
    chars, masks = _characters(g, NUM_CLASSES, style)  # [C, S, 4, 2], [C, S]
    pts = _examples(g, chars.repeat_interleave(EXAMPLES_PER_CLASS, 0), style)  # [C*20, S, 4, 2]
    levels = torch.linspace(*style.pen, PEN_LEVELS) * image_size / 28
    pen = levels[torch.randint(PEN_LEVELS, (pts.shape[0],), generator=g)]  # [C*20] pixels
    rows = range(classes.start * EXAMPLES_PER_CLASS, classes.stop * EXAMPLES_PER_CLASS)
    masks = masks.repeat_interleave(EXAMPLES_PER_CLASS, 0)
    chunks = [slice(i, min(i + _CHUNK, rows.stop)) for i in range(rows.start, rows.stop, _CHUNK)]
    out = [_render(pts[c], masks[c], pen[c], image_size, style.gain) for c in chunks]
    return torch.cat(out).unsqueeze(1)


def _build(split: str, image_size: int) -> ClassDataset:
    first, stop = SPLITS[split]
    images = generate(range(first, stop), image_size)
    labels = torch.arange(stop - first).repeat_interleave(EXAMPLES_PER_CLASS)
    names = tuple(f"glyph{c:04d}" for c in range(first, stop))
    return ClassDataset(images, labels, names, f"glyphs/{split}")


def _writable_cache(root: str | os.PathLike[str] | None, key: str) -> Path | None:
    """The cache folder, or None when it cannot be created or written (then no cache is used)."""
    folder = resolve_root(root) / "cache"
    if (folder / f"{key}.safetensors").exists():
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def load(split: str, *, root: str | os.PathLike[str] | None = None, download: bool = False,
         image_size: int = 28, seed: int = 0) -> ClassDataset:
    """The glyphs of `split` ("train": 1600 classes, "val": 200, "test": 600; 20 examples each).

    Args:
        split: "train", "val" or "test"; the classes of the splits are disjoint.
        root: data root whose `cache/` folder holds the generated splits (see `resolve_root`).
        download: ignored; nothing is downloaded.
        image_size: side of the square images, pixels (28 by default).
        seed: ignored; the dataset is fixed by `GENERATION_SEED`, the same for every run.

    Returns:
        A `ClassDataset` of `[M, 1, image_size, image_size]` uint8 images, ink 255 on 0.

    Raises:
        ConfigError: unknown split or an image size below 8.
    """
    del download, seed  # generated, and fixed by the dataset's own seed
    if split not in SPLITS:
        raise ConfigError(f"glyphs has no split '{split}'; choose one of {', '.join(SPLITS)}")
    if image_size < 8:
        raise ConfigError(f"glyphs image_size must be >= 8, got {image_size}")
    key = cache_key(dataset="glyphs", version=VERSION, split=split, image_size=image_size,
                    seed=GENERATION_SEED, style=asdict(STYLE), classes=SPLITS[split],
                    drawing=(POINTS_PER_STROKE, PEN_LEVELS, EXTENT, EXAMPLES_PER_CLASS))
    built: list[ClassDataset] = []

    def build() -> ClassDataset:
        built.append(_build(split, image_size))
        return built[0]

    try:
        return cached_dataset(_writable_cache(root, key), key, f"glyphs/{split}", build)
    except OSError:  # the cache could not be written (disk full, read-only): use what we built
        return built[0] if built else _build(split, image_size)


SPEC = DatasetSpec("glyphs", load, "images", tuple(SPLITS),
                   "procedurally drawn characters, 28x28; the embedded default", False, True)
