"""Classify a user's own images with a trained run: a support folder of classes, a query folder."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from metazoo.data import get_spec
from metazoo.data.folder import load_class_folder, load_images
from metazoo.engine.run import image_size, input_transform, load_run
from metazoo.errors import ConfigError, DataError


def predict_folders(run_dir: Path, support: Path, query: Path | Sequence[Path], *,
                    invert: Literal["auto", "yes", "no"] = "auto"
                    ) -> list[tuple[Path, str, float]]:
    """Adapt the run's algorithm to `support/<class>/*` and classify the `query` images: image
    files, or folders whose images are all taken (`metazoo.data.folder.load_images`).

    Images are resized to the run's image size and converted to its channels. With
    `invert="auto"`, grey levels are inverted when the run was trained on ink-high drawings
    (Omniglot, glyphs) and the support images have light backgrounds (dark ink on paper).

    Returns:
        `(query file, predicted class name, probability)` per query image.
    """
    cfg, alg = load_run(run_dir, writes=False)  # reads only: fine during training
    spec = get_spec(cfg.data.name)
    if spec.kind != "images":
        raise ConfigError(f"run '{run_dir}' was trained on {cfg.data.name}, not on images")
    channels = int(alg.backbone.input_shape[0])  # type: ignore[index]
    sx, sy, names, _ = load_class_folder(support, image_size(cfg), channels)
    qx, files = load_images(query, image_size(cfg), channels)
    if len(names) < 2:
        raise DataError(f"the support folder '{support}' needs at least two class sub-folders")
    alg.check_ways(len(names))
    flip = invert == "yes" or (invert == "auto" and spec.ink_high and sx.float().mean() > 127)
    if flip:
        sx, qx = 255 - sx, 255 - qx
    alg.eval()
    grad = contextlib.nullcontext() if alg.adapts_with_gradients else torch.no_grad()
    with grad:
        prepare = input_transform(cfg)
        logits = alg.adapt(prepare(sx.float() / 255), sy, ways=len(names))(
            prepare(qx.float() / 255))
    probs = logits.detach().softmax(-1)
    best = probs.max(-1)
    return [(f, names[int(i)], float(p)) for f, i, p in
            zip(files, best.indices, best.values, strict=True)]
