"""Every algorithm, registered by an explicit import of its module: this list IS the registry.

Adding an algorithm is one file (`<name>.py`, registering itself with `@register`) plus one line
here; `tests/algorithms/test_contract.py` then holds it to the contract (docs/contributing.md).
`build(name, backbone, ways=N, **overrides)` makes one; `names()` lists them; `get(name)` gives
the spec (family, paper, config class).
"""

from __future__ import annotations

from metazoo.algorithms import (  # noqa: F401  (imported to register)
    alpaca,
    alpha_maml,
    anil,
    baseline,
    bmaml,
    caml,
    cavia,
    deml,
    gnn,
    imaml,
    imp,
    leo,
    leopard,
    llama,
    lrd2,
    lstm_learner,
    maml,
    maml_pp,
    mann,
    matching,
    meta_lstm,
    meta_sgd,
    metagan_maml,
    metagan_relation,
    metaoptnet_svm,
    mtl,
    platipus,
    proto_maml,
    protonet,
    r2d2,
    relation,
    reptile,
    rfs,
    siamese,
    simpleshot,
    snail,
    versa,
)
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import (
    AlgorithmSpec,
    build,
    build_with,
    get,
    names,
    register,
)

SHARED_MODULES = ("base", "metagan_parts", "networks", "recurrent", "registry")
"""Modules of this package that register nothing: the base class, MetaGAN's generator and losses,
the shared networks (linear head, recurrent sequence learner) and the registry."""

__all__ = ["Algorithm", "AlgorithmConfig", "AlgorithmSpec", "build", "build_with", "get",
           "names", "register"]
