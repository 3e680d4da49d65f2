"""Reading files out of tar archives in memory: no extraction, so nothing can land outside.

A published dataset archive (CUB's `.tgz`, Fungi's, CIFAR-100's) is streamed member by member;
member names are checked (no absolute paths, no `..`), links and folders are skipped, and the
bytes of the wanted files are handed to the caller. Nothing is written to disk.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from metazoo.errors import DataError


def safe_member_name(archive: Path, name: str) -> str:
    """A tar member's name as a relative POSIX path without leading `./`.

    Raises:
        DataError: an absolute name or one with a `..` component (the archive is not trusted).
    """
    clean = name.replace("\\", "/")
    while clean.startswith("./"):
        clean = clean[2:]
    parts = PurePosixPath(clean).parts
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":") or ".." in parts:
        raise DataError(f"{archive}: refusing unsafe member '{name}' (absolute path or '..'); "
                        "the archive is not trustworthy: delete it and download it again")
    return "/".join(p for p in parts if p != ".")


def iter_tar_files(archive: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """`(name, bytes)` of each regular file of a tar archive whose name `want` accepts.

    The archive is streamed (gzip or plain), members are read into memory in archive order and
    nothing is written to disk; links and folders are skipped. Names are `safe_member_name`s.

    Raises:
        DataError: an unsafe member name, or a truncated or damaged archive.
    """
    try:
        with tarfile.open(archive, mode="r|*") as tf:
            for member in tf:
                name = safe_member_name(archive, member.name)
                if not name or not member.isfile() or not want(name):
                    continue
                fp = tf.extractfile(member)
                if fp is not None:
                    yield name, fp.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive} is not a readable tar archive ({e}); it may be truncated: "
                        "delete it and download it again") from None
