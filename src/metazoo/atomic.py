"""Atomic file writes: a reader, or a run killed at any moment, sees the old file or the new one.

The new content goes to a temporary file in the destination's folder (the same file system, so
the rename is atomic), is flushed to disk (`fsync`), then `os.replace`s the destination. A write
that fails leaves the destination as it was and no temporary file behind. The file gets the
permissions an ordinary `open()` would give it (0666 less the umask), not the temporary's 0600.
Checkpoints, the data cache and the JSON files of a run folder are all written this way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK: int | None = None


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path next to `path` to write to; when the block ends without an exception the
    file is synced to disk and moved onto `path`, and in every case the temporary path is gone.

    For writers that take a file name (`safetensors.torch.save_file`):
    `with replacing(dest) as tmp: save_file(tensors, str(tmp))`.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _plain_mode())  # mkstemp's 0600 would hide it from others
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _plain_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the process's umask (read when first
    needed: `os.umask` can only be read by setting it, which must not race other threads)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))
