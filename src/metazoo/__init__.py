"""metazoo: meta-learning and few-shot learning on PyTorch 2.

Classes and examples come from `metazoo.data`, tasks made of them from `metazoo.tasks`, backbones
from `metazoo.models`, methods from `metazoo.algorithms`; `metazoo.engine` trains and evaluates
them.
"""

from __future__ import annotations

from metazoo.allocator import tune_allocator
from metazoo.errors import ConfigError, DataError, MetazooError, ShapeError
from metazoo.tasks import EpisodeSampler, TaskBatch

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "EpisodeSampler",
    "MetazooError",
    "ShapeError",
    "TaskBatch",
    "__version__",
    "tune_allocator",
]
