"""Decoding one image file into a small uint8 array: the preprocessing every file dataset shares.

Why one module: Omniglot, Lake's one-shot runs and the user's folders must see the same pixels for
the same file (a model trained on one and evaluated on the other should not notice a different
resize filter). Every decode error becomes a one-line `DataError` naming the file.

Omniglot-style drawings are black strokes on white; the library stores ink high (255 on 0), so
`decode_gray(..., invert=True)` flips them. Resizing uses Pillow's LANCZOS filter, which is
antialiased (a 105 -> 28 downscale averages every source pixel instead of sampling a few).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metazoo.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
RESAMPLE = Image.Resampling.LANCZOS
MAX_PIXELS = 40_000_000  # largest image decoded; above it a one-line error (Pillow warns at 89 M)
GRAY_TOLERANCE = 3  # max channel spread (levels) of a pixel that still counts as gray

Source = bytes | str | os.PathLike[str]


def open_image(source: Source, name: str | None = None) -> Image.Image:
    """Open and fully decode an image from bytes or a path.

    Args:
        source: the encoded file's bytes, or its path.
        name: what to call the file in error messages (defaults to the path).

    Raises:
        DataError: the file is missing, truncated or not an image.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        with fp:
            img = Image.open(fp)  # reads the header only
            width, height = img.size
            if width * height > MAX_PIXELS:  # refuse before allocating the pixels
                raise DataError(f"image {label} declares {width}x{height} pixels, more than "
                                f"the {MAX_PIXELS:,} this library decodes (a decompression "
                                "bomb or a wrong file); replace or delete the file")
            img.load()  # decode now, while the error can still name the file
            return img
    except FileNotFoundError:
        raise DataError(f"image file not found: {label}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {label}: {e}; replace or delete the file") from None


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Transparent pixels become white, as an image viewer shows them on a light page."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba)
    return img


def to_gray(img: Image.Image, image_size: int, *, invert: bool = False) -> np.ndarray:
    """A decoded image as `[image_size, image_size]` uint8 grayscale, optionally inverted."""
    gray = _flatten_alpha(img).convert("L")
    if gray.size != (image_size, image_size):
        gray = gray.resize((image_size, image_size), RESAMPLE)
    arr = np.asarray(gray, dtype=np.uint8)
    return 255 - arr if invert else arr.copy()


def to_rgb(img: Image.Image, image_size: int) -> np.ndarray:
    """A decoded image as `[3, image_size, image_size]` uint8 RGB (channels first)."""
    rgb = _flatten_alpha(img).convert("RGB")
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), RESAMPLE)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def decode_gray(source: Source, image_size: int, *, invert: bool = True,
                name: str | None = None) -> np.ndarray:
    """Decode a drawing as `[image_size, image_size]` uint8; `invert=True` makes ink high.

    Args:
        source: encoded bytes (e.g. read from a zip) or a path.
        image_size: side of the square output, pixels.
        invert: store 255 - pixel (Omniglot strokes are black on white; we keep ink = 255).
        name: the file's name for error messages.

    Raises:
        DataError: the file cannot be decoded.
    """
    return to_gray(open_image(source, name), image_size, invert=invert)


def is_grayscale(img: Image.Image) -> bool:
    """Whether an image carries no colour: mode 1/L/I/F, or RGB/palette with R ~= G ~= B.

    Lossy codecs (JPEG, WebP) store colour as YUV, so a gray image can come back with channels one
    or two levels apart; differences up to `GRAY_TOLERANCE` still count as gray.
    """
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    rgb = np.asarray(_flatten_alpha(img).convert("RGB"), dtype=np.int16)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return bool(spread.max() <= GRAY_TOLERANCE)


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name; hidden files are skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def check_image_size(name: str, image_size: int) -> None:
    """Refuse image sides below 8 pixels (`ConfigError` naming the dataset)."""
    if image_size < 8:
        raise ConfigError(f"{name} image_size must be >= 8, got {image_size}")
