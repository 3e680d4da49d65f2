"""Where data lives, and the on-disk cache of decoded arrays.

The data root is `--data-root`, else `$METAZOO_DATA`, else `~/.cache/metazoo`. Decoded and resized
splits are cached as safetensors under `<root>/cache/`, keyed by a hash of their source and
transform, so images are decoded once per machine. Writes are atomic (`metazoo.atomic`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from metazoo import atomic
from metazoo.data.base import ClassDataset


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: `root` if given, else `$METAZOO_DATA`, else `~/.cache/metazoo`."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("METAZOO_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metazoo"


def cache_key(**parts: Any) -> str:
    """A short stable hash of JSON-serialisable `parts` (source, transform, version)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_dataset(cache_dir: Path | None, key: str, name: str,
                   build: Callable[[], ClassDataset]) -> ClassDataset:
    """Load split `name` from `cache_dir/<key>.safetensors`, or build it and store it there.

    With `cache_dir=None` nothing is read or written. A cache file that cannot be read is rebuilt.
    """
    if cache_dir is None:
        return build()
    path = cache_dir / f"{key}.safetensors"
    if path.exists():
        try:
            t = load_file(str(path))
            names = tuple(json.loads(path.with_suffix(".json").read_text())["class_names"])
            return ClassDataset(t["images"], t["labels"], names, name)
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    ds = build()
    with atomic.replacing(path) as tmp:  # the class names first: a split never lacks its names
        save_file({"images": ds.images.contiguous(), "labels": ds.labels.contiguous()}, str(tmp))
        atomic.write_text(path.with_suffix(".json"),
                          json.dumps({"class_names": list(ds.class_names)}))
    return ds


def image_tensor(arrays: list[Any]) -> torch.Tensor:
    """Stack HxW uint8 arrays into `[M, 1, H, W]`."""
    return torch.stack([torch.as_tensor(a, dtype=torch.uint8) for a in arrays]).unsqueeze(1)


def writable_cache_dir(root: Path, avoid: Path | None = None) -> Path | None:
    """`root/cache` if it can be written, else `~/.cache/metazoo/cache`, else None (no cache).

    A candidate inside `avoid` (e.g. the user's own image folder) is skipped before it is created.
    """
    for candidate in (root / "cache", Path.home() / ".cache" / "metazoo" / "cache"):
        if avoid is not None and candidate.resolve().is_relative_to(avoid.resolve()):
            continue
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=candidate):
                pass
            return candidate
        except OSError:
            continue
    return None


def file_stamp(path: Path) -> tuple[str, int, int]:
    """`(name, size, mtime_ns)` of a file or folder, for cache keys."""
    st = path.stat()
    return path.name, st.st_size, st.st_mtime_ns
