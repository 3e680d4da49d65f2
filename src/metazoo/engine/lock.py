"""One writer per run folder: an OS lock on `<run folder>/.lock`, held for the run's life.

`fcntl.flock` where the platform has it: the OS drops the lock when the process ends, however it
ends (`kill -9` included), so no stale lock is left to clear by hand. The file names its holder
(pid, host, start time, command) for the refusal message, and is removed when the holder lets
go; an acquirer checks that the file it locked is still the one at the path, so a removal racing
an acquisition cannot give the lock to two processes. Elsewhere the lock is the file's creation
(`O_CREAT | O_EXCL`), taken over when its holder, on this host, is no longer running.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metazoo.errors import ConfigError, MetazooError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"
_WAIT_S = 0.5  # how long an acquirer retries before refusing (covers a holder writing its name)


class RunFolderBusy(MetazooError):
    """Another process holds the run folder."""


def _holder_info(command: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def describe(info: dict[str, Any] | None) -> str:
    """`metazoo train (pid 12, host h, started 2025-01-01T10:00:00+00:00)`, or what is known."""
    if not info:
        return "another process (it has not written its name yet)"
    return (f"metazoo {info.get('command', '?')} (pid {info.get('pid', '?')}, host "
            f"{info.get('host', '?')}, started {info.get('started', '?')})")


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
        handle = kernel32.OpenProcess(0x00100000 | 0x1000, False, pid)  # SYNCHRONIZE | QUERY
        if not handle:
            return False
        try:
            return bool(kernel32.WaitForSingleObject(handle, 0) == 0x102)  # WAIT_TIMEOUT
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """The exclusive lock of a run folder (which must exist); `RunFolderBusy` when held."""

    def __init__(self, run_dir: Path, command: str = "train") -> None:
        self.path = Path(run_dir) / LOCK
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        deadline = time.monotonic() + _WAIT_S
        while True:
            if self._try():
                return
            if time.monotonic() > deadline:
                info = _read_info(self.path)
                raise RunFolderBusy(f"'{self.path.parent}' is in use by {describe(info)}; wait "
                                    "for it to end or choose another --out")
            time.sleep(0.05)

    def _try(self) -> bool:
        if fcntl is None:
            return self._try_exclusive_create()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:  # the file may have been removed by its previous holder after we opened it
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return self._try()
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder_info(self.command)).encode())
        self._fd = fd
        return True

    def _try_exclusive_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = _read_info(self.path)
            stale = (info is not None and info.get("host") == socket.gethostname()
                     and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]))
            if stale:
                self.path.unlink(missing_ok=True)
                return self._try_exclusive_create()
            return False
        os.write(fd, json.dumps(_holder_info(self.command)).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: see the module's docstring
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds `run_dir` (another process), or None when nobody does."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        return None
    if fcntl is None:
        info = _read_info(path)
        if info and info.get("host") == socket.gethostname() and isinstance(
                info.get("pid"), int) and not _pid_alive(info["pid"]):
            return None
        return info or {}
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        info = _read_info(path) or {}
        return None if info.get("pid") == os.getpid() else info
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class Claim:
    """A locked run folder; `started` is set once the run begins to change the folder."""

    def __init__(self) -> None:
        self.started = False


@contextmanager
def claim(run_dir: Path, command: str = "train") -> Iterator[Claim]:
    """Create `run_dir` if needed and lock it for the block. If the block fails before setting
    `started`, the folders this created are removed again: a failed start leaves nothing."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file, not a folder; name a new folder")
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run folder '{run_dir}' ({e.strerror}); name "
                          "another --out") from None
    lock = RunLock(run_dir, command)
    state = Claim()
    try:
        lock.acquire()
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield state
    except BaseException:
        lock.release()
        if not state.started:
            _remove_empty(created)
        raise
    lock.release()


def _remove_empty(created: list[Path]) -> None:
    for p in created:  # deepest first
        try:
            p.rmdir()
        except OSError:
            break
