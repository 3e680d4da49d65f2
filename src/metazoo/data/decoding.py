"""Decoding many image files at once into one uint8 tensor: threads and a progress bar.

Pillow decodes JPEGs outside the GIL, so `DECODE_THREADS` threads decode while the files are
still being read (from a folder or streamed from a tar); each image goes through the same
`images.open_image` and `images.to_rgb` as every file dataset (LANCZOS resize), and a damaged
file is a one-line `DataError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import numpy as np
import torch
from tqdm import tqdm

from metazoo.data.base import ClassDataset
from metazoo.data.images import Source, open_image, to_rgb

DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))  # Pillow decodes outside the GIL


def _decode_rgb(source: Source, image_size: int, name: str) -> np.ndarray:
    return to_rgb(open_image(source, name), image_size)


def decode_rgb_images(items: Iterable[tuple[str, Source, str]], image_size: int, *,
                      total: int | None, desc: str) -> dict[str, np.ndarray]:
    """Decode `(key, bytes or path, name for errors)` items to `[3, S, S]` uint8 arrays by key.

    Runs `DECODE_THREADS` decoders while `items` is still being produced (e.g. streamed from a
    tar), with a bounded number of images in flight; a tqdm bar shows progress on a terminal.

    Raises:
        DataError: an image cannot be decoded (its name is in the message).
    """
    out: dict[str, np.ndarray] = {}
    limit = 4 * DECODE_THREADS
    with tqdm(total=total, desc=desc, unit="img", disable=None, leave=False) as bar, \
            ThreadPoolExecutor(DECODE_THREADS) as pool:
        pending: dict[Future[np.ndarray], str] = {}

        def collect(futures: Iterable[Future[np.ndarray]]) -> None:
            for f in futures:
                out[pending.pop(f)] = f.result()
                bar.update()

        try:
            for key, source, name in items:
                if len(pending) >= limit:
                    collect(wait(pending, return_when=FIRST_COMPLETED).done)
                pending[pool.submit(_decode_rgb, source, image_size, name)] = key
            collect(wait(pending).done)
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    return out


def assemble(files: list[list[str]], arrays: dict[str, np.ndarray], class_names: tuple[str, ...],
             name: str) -> ClassDataset:
    """A `ClassDataset` whose class `i` holds the arrays of `files[i]`, in that order.

    Rows are moved out of `arrays` into one preallocated tensor, so the peak memory is about one
    copy of the images, not two.
    """
    shape = next(iter(arrays.values())).shape
    images = torch.empty((sum(len(f) for f in files), *shape), dtype=torch.uint8)
    row = 0
    for keys in files:
        for key in keys:
            images[row] = torch.from_numpy(arrays.pop(key))
            row += 1
    counts = torch.tensor([len(f) for f in files])
    labels = torch.repeat_interleave(torch.arange(len(files)), counts)
    return ClassDataset(images, labels, class_names, name)
