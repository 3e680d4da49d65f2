"""metazoo: meta-learning and few-shot learning on PyTorch 2.

Classes and examples come from `metazoo.data`, tasks made of them from `metazoo.tasks`, backbones
from `metazoo.models`, methods from `metazoo.algorithms`; `metazoo.engine` trains and evaluates
them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metazoo.allocator import tune_allocator
from metazoo.errors import ConfigError, DataError, MetazooError, ShapeError
from metazoo.tasks import EpisodeSampler, TaskBatch

if TYPE_CHECKING:
    from metazoo.trainer import Trainer

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`metazoo.Trainer`, imported when first used (it loads the engine and every algorithm)."""
    if name == "Trainer":
        from metazoo.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'metazoo' has no attribute '{name}'")

__all__ = [
    "ConfigError",
    "DataError",
    "EpisodeSampler",
    "MetazooError",
    "ShapeError",
    "TaskBatch",
    "Trainer",
    "__version__",
    "tune_allocator",
]
