"""Every algorithm, registered by an explicit import of its module: this list IS the registry.

Adding an algorithm is one file (`<name>.py`, registering itself with `@register`) plus one line
here; `tests/algorithms/test_contract.py` then holds it to the contract (docs/contributing.md).
`build(name, backbone, ways=N, **overrides)` makes one; `names()` lists them; `get(name)` gives
the spec (family, paper, config class).
"""

from __future__ import annotations

from metazoo.algorithms import (  # noqa: F401  (imported to register)
    anil,
    cavia,
    gnn,
    imaml,
    imp,
    maml,
    maml_pp,
    matching,
    meta_lstm,
    meta_sgd,
    protonet,
    relation,
    reptile,
    siamese,
)
from metazoo.algorithms.base import (
    Algorithm,
    AlgorithmConfig,
    AlgorithmSpec,
    build,
    build_with,
    get,
    names,
    register,
)

SHARED_MODULES = ("base", "networks")
"""Modules of this package that register nothing: the base class and the shared network."""

__all__ = ["Algorithm", "AlgorithmConfig", "AlgorithmSpec", "build", "build_with", "get",
           "names", "register"]
