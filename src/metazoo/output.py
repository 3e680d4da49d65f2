"""What a run says, through the `metazoo` logger: progress at INFO, results at RESULT, details
at DEBUG, problems at WARNING.

The CLI sets the level from `--quiet` (results and warnings only) and `--verbose` (details too);
a program that uses the library gets the same lines on stdout unless it configures the `metazoo`
logger (or the root logger) itself. Progress bars are drawn only when INFO is on and stderr is a
terminal.
"""

from __future__ import annotations

import logging
import os
import sys

RESULT = 25  # between INFO and WARNING: what a command found, printed even with --quiet
logging.addLevelName(RESULT, "RESULT")
logger = logging.getLogger("metazoo")


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Plain lines on the current `sys.stdout`; a reader that went away (`| head -1`) does not
    stop the run."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # follows redirection (pytest's capture, contextlib)
        try:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # later lines and the exit flush go nowhere
            os.close(devnull)


def configure(verbosity: int = 0) -> None:
    """Lines on stdout at `verbosity` -1 (results and warnings), 0 (progress) or 1 (details)."""
    if not any(isinstance(h, _Stdout) for h in logger.handlers):
        logger.addHandler(_Stdout())
        logger.propagate = False
    logger.setLevel({-1: RESULT, 0: logging.INFO, 1: logging.DEBUG}[max(-1, min(1, verbosity))])


def _ready() -> None:
    # a library user who configured no logging still sees progress, as from the CLI
    if not logger.handlers and not logging.getLogger().handlers:
        configure(0)


def info(line: str) -> None:
    _ready()
    logger.info(line)


def warning(line: str) -> None:
    _ready()
    logger.warning(line)


def result(line: str) -> None:
    _ready()
    logger.log(RESULT, line)


def debug(line: str) -> None:
    _ready()
    logger.debug(line)


def progress_on() -> bool:
    """Whether progress lines and bars are wanted at the configured level."""
    _ready()
    return logger.isEnabledFor(logging.INFO)
