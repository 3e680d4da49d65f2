"""Every algorithm, registered by importing its module here: this list is the registry's source.

`build(name, backbone, ways=N, **overrides)` makes one; `names()` lists them; `get(name)` gives
the spec (family, paper, config class).
"""

from __future__ import annotations

from metazoo.algorithms import (
    maml,  # noqa: F401
    protonet,  # noqa: F401  (registers "protonet")
)
from metazoo.algorithms.base import (
    Algorithm,
    AlgorithmConfig,
    AlgorithmSpec,
    build,
    get,
    names,
    register,
)

__all__ = ["Algorithm", "AlgorithmConfig", "AlgorithmSpec", "build", "get", "names", "register"]
