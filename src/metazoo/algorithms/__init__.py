"""Every algorithm, registered by importing its module: each `*.py` here registers one.

Modules are imported in name order at package import, so adding an algorithm is adding its file.
`build(name, backbone, ways=N, **overrides)` makes one; `names()` lists them; `get(name)` gives
the spec (family, paper, config class).
"""

from __future__ import annotations

import importlib
import pkgutil

from metazoo.algorithms.base import (
    Algorithm,
    AlgorithmConfig,
    AlgorithmSpec,
    build,
    get,
    names,
    register,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Algorithm", "AlgorithmConfig", "AlgorithmSpec", "build", "get", "names", "register"]
