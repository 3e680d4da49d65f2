"""Downloading published archives with a checksum, and extracting them safely.

Why: a dataset file is fetched once per machine and then trusted for every run, so it must be
exactly the published bytes. `download` streams to `<dest>.part`, resumes an interrupted transfer
with an HTTP Range request when the server allows it (otherwise starts over), checks the MD5 or
SHA-256, and only then renames the file into place: `dest` either does not exist or is complete
and verified. Network failures (timeouts, refused connections, 5xx) are retried with exponential
backoff. Only the standard library's `urllib` is used.

`safe_extract` unpacks a zip without trusting its entry names: absolute paths, `..` components and
symbolic links pointing outside the target are refused, and everything is written to a temporary
folder beside the target that is renamed into place at the end, so a crash never leaves half an
extraction behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from metazoo.errors import ChecksumError, DataError

CHUNK = 1 << 20  # bytes read per network call
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes (`algorithm` is a hashlib name, e.g. "md5")."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, timeout: float) -> None:
    """One attempt: append to `part` from its current size (Range), or rewrite it from byte 0."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "metazoo"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:  # nothing left to send: the part file is already whole
            return
        raise
    with response:
        resumed = offset > 0 and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
        length = response.headers.get("Content-Length")
        total = (int(length) + (offset if resumed else 0)) if length else None
        # a bar of bytes on a terminal only (tqdm's disable=None), resumed from the part file
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=offset if resumed else 0, unit="B", unit_scale=True,
                     desc=f"download {part.name[:-len('.part')]}", disable=None,
                     leave=False) as bar:  # no resume support: start over
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))


def download(url: str, dest: str | os.PathLike[str], *, md5: str | None = None,
             sha256: str | None = None, retries: int = 3, timeout: float = 15,
             backoff: float = 1.0) -> Path:
    """Download `url` to `dest`, verified, resuming a previous partial download.

    Args:
        url: http(s) or file URL.
        dest: final path; the transfer goes to `dest` + ".part" first.
        md5: expected MD5 hex digest (checked when given).
        sha256: expected SHA-256 hex digest (checked when given).
        retries: attempts in all before giving up on network errors.
        timeout: seconds without data before an attempt fails.
        backoff: seconds before the first retry, doubled after each failure.

    Returns:
        `dest` as a `Path`.

    Raises:
        ChecksumError: the downloaded bytes do not match; the part file is deleted.
        DataError: the server refused the file (4xx) or every attempt failed.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for attempt in range(max(1, retries)):
        try:
            _fetch(url, part, timeout)
            last = None
            break
        except urllib.error.HTTPError as e:
            if e.code not in _RETRYABLE_HTTP:
                raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}; check the URL "
                                f"or place the file at {dest} yourself") from None
            last = e
        except (urllib.error.URLError, TimeoutError, ConnectionError,
                http.client.HTTPException) as e:
            last = e
        if attempt + 1 < retries:
            time.sleep(backoff * 2**attempt)
    if last is not None:
        raise DataError(f"cannot download {url} after {retries} attempts ({last}); check the "
                        f"network or place the file at {dest} yourself")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        got = file_digest(part, algorithm)
        if got.lower() != expected.lower():
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{dest.name} from {url}: {algorithm} expected {expected}, got "
                                f"{got}; the partial file was deleted, download again or place a "
                                f"verified copy at {dest}")
    os.replace(part, dest)
    return dest


def _check_entry(info: zipfile.ZipInfo, zip_path: Path) -> PurePosixPath:
    """The entry's safe relative path; refuses absolute paths, `..` and every link.

    Links are refused outright, not judged one by one: a chain of links that each stay inside
    (`a -> .`, `a/b -> ..`) can still lead out, and no dataset archive needs one.
    """
    name = info.filename.replace("\\", "/")
    rel = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in rel.parts:
        raise DataError(f"{zip_path}: refusing unsafe entry '{info.filename}' (absolute path or "
                        "'..'); the archive is not trustworthy")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"{zip_path}: refusing symbolic link '{info.filename}'; dataset "
                        "archives hold plain files only, so this one is not trustworthy")
    return rel


def safe_extract(zip_path: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Extract a zip archive into `target` (which must not exist yet, or be empty).

    Args:
        zip_path: the archive.
        target: the folder to create with the archive's contents.

    Returns:
        `target` as a `Path`.

    Raises:
        DataError: an unsafe entry (named in the message), a damaged archive, or a non-empty
            target.
    """
    zip_path, target = Path(zip_path), Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"cannot extract {zip_path} into {target}: it already exists and is not "
                        "an empty folder; delete it or choose another target")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            entries = [(info, _check_entry(info, zip_path)) for info in zf.infolist()]
            inside = tmp.resolve()
            for info, rel in entries:
                out = tmp.joinpath(*rel.parts)
                if not out.resolve().is_relative_to(inside):  # belt and braces: no links exist
                    raise DataError(f"{zip_path}: entry '{info.filename}' would leave the target "
                                    "folder; the archive is not trustworthy")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{zip_path} is not a valid zip archive ({e}); delete it and download "
                        "it again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
