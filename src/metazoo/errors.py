"""The errors a user can cause, each with a message that says what to change.

The CLI prints a `MetazooError` as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class MetazooError(Exception):
    """Base class of every error caused by user input (config, data, shapes, files)."""


class ConfigError(MetazooError):
    """A configuration value, key, preset or algorithm name is wrong."""


class DataError(MetazooError):
    """A dataset is missing, corrupt or too small for the requested episodes."""


class ChecksumError(DataError):
    """A downloaded or local file does not match its published checksum."""


class ShapeError(MetazooError):
    """Tensors given to a task or an algorithm have inconsistent shapes or labels."""


class CheckpointError(MetazooError):
    """A run folder or checkpoint is missing, incomplete or from an incompatible run."""


class TrainingError(MetazooError):
    """Training cannot go on: the meta-loss or the meta-parameters stopped being finite."""

