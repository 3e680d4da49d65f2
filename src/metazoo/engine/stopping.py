"""Stopping a run on request: SIGINT (Ctrl-C) and SIGTERM (`kill`, schedulers) alike.

While training, the first signal asks the loop to stop after the step in progress; the loop then
saves a checkpoint and raises `Interrupted`, whose message says what was kept. A second signal
stops at once (the last checkpoint written is intact: checkpoints are written atomically).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop requested by `signum`; `message` says what the run folder holds (may be empty)."""

    def __init__(self, signum: int = signal.SIGINT, message: str = "") -> None:
        super().__init__(message)
        self.signum = signum
        self.message = message


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """A signal handler: stop now, as Ctrl-C does."""
    raise Interrupted(signum)


class StopRequest:
    """Set by the first SIGINT/SIGTERM inside `stop_after_step`."""

    def __init__(self) -> None:
        self.signum = 0


@contextmanager
def stop_after_step() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM set `signum` of the yielded request (the loop stops after its step); a
    second one raises `Interrupted` at once. Outside the main thread signals are not touched."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.signum:
            raise Interrupted(signum)
        request.signum = signum
        os.write(2, f"\nmetazoo: {signal_name(signum)}: stopping after this step and saving a "
                    "checkpoint (send it again to stop at once)\n".encode())

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def deadline(minutes: float | None, clock: str = "wall") -> Callable[[], bool]:
    """A function that says whether `minutes` have passed since this call, on the wall clock
    (`"wall"`) or in this process's CPU time (`"cpu"`: all its threads); never with None."""
    if not minutes:
        return lambda: False
    now = time.process_time if clock == "cpu" else time.perf_counter
    end = now() + 60 * minutes
    return lambda: now() > end


def stopped_after(signum: int, step: int, run_dir: object) -> Interrupted:
    """What a training loop raises when a signal asked it to stop after `step`."""
    return Interrupted(signum, f"{signal_name(signum)}: stopped after step {step}; checkpoint "
                               f"saved in '{run_dir}'; continue with metazoo train --out "
                               f"{run_dir} --resume")
