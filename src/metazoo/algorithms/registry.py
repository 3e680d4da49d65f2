"""The algorithm registry: a spec per registered name, the `@register` decorator, and `build`.

Registering a class is the only step that makes it visible to the CLI, the presets, the README
table and the contract tests; `metazoo/algorithms/__init__.py` imports every algorithm module
(the registration list).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.errors import ConfigError
from metazoo.fields import did_you_mean, from_mapping
from metazoo.registry import Registry
from metazoo.types import Family, TaskKind


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the registry knows about an algorithm: enough for `metazoo list` and the docs."""

    name: str
    display: str
    family: Family
    cls: type[Algorithm]
    config: type[AlgorithmConfig]
    paper: str
    tasks: frozenset[TaskKind]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def make_config(self, **overrides: Any) -> AlgorithmConfig:
        """The spec's config with its registered defaults, then `overrides`, checked: types and
        choices from the field types (`metazoo.fields`), ranges by `validate`."""
        known = [f.name for f in dataclasses.fields(self.config)]
        for key in overrides:
            if key not in known:
                raise ConfigError(f"algorithm '{self.name}' has no option '{key}'"
                                  f"{did_you_mean(key, known)}")
        try:
            cfg = from_mapping(self.config, {**self.defaults, **overrides}, "algorithm")
            cfg.validate()
        except ConfigError as e:  # name the algorithm once
            if str(e).startswith(f"{self.name} "):
                raise
            raise ConfigError(f"{self.name} {e}") from None
        return cfg


REGISTRY: Registry[AlgorithmSpec] = Registry("algorithm", "metazoo list algorithms")
A = TypeVar("A", bound="type[Algorithm]")


def register(name: str, *, display: str, family: Family, config: type[AlgorithmConfig],
             paper: str, tasks: set[TaskKind], defaults: Mapping[str, Any] | None = None
             ) -> Callable[[A], A]:
    """Class decorator: register an algorithm (or, with `defaults`, a variant of one)."""

    def wrap(cls: A) -> A:
        spec = REGISTRY.add(AlgorithmSpec(name, display, family, cls, config, paper,
                                          frozenset(tasks), dict(defaults or {})))
        if "spec" not in cls.__dict__:  # a variant registered on the same class keeps the first
            cls.spec = spec
        return cls

    return wrap


def get(name: str) -> AlgorithmSpec:
    """The spec registered as `name`; an unknown name raises `ConfigError` with a suggestion."""
    return REGISTRY.get(name)


def names(family: Family | None = None) -> list[str]:
    """Registered names, optionally of one family, sorted."""
    return [n for n in REGISTRY.names() if family is None or REGISTRY.get(n).family == family]


def build(name: str, backbone: nn.Module, *, ways: int, **overrides: Any) -> Algorithm:
    """Build algorithm `name` around `backbone` for `ways`-way tasks (1 for regression)."""
    return build_with(name, backbone, ways=ways, config=get(name).make_config(**overrides))


def build_with(name: str, backbone: nn.Module, *, ways: int, config: AlgorithmConfig
               ) -> Algorithm:
    """Build algorithm `name` with a config instance made by its spec (`RunConfig.algorithm`)."""
    spec = get(name)
    if not isinstance(config, spec.config):
        raise ConfigError(f"algorithm '{name}' takes a {spec.config.__name__}, "
                          f"got a {type(config).__name__}")
    warn_running_statistics(backbone)
    return spec.cls(backbone, config, ways=ways)


_WARNED: set[str] = set()


def warn_running_statistics(backbone: nn.Module) -> None:
    """Warn once per layer type when a backbone holds torch's batch norm with running
    statistics: in evaluation it would normalise with running averages gathered across training
    episodes, not with each episode's own statistics (the library's rule, `bn_mode`), and under
    `vmap` it cannot update them at all. `metazoo.functional.BatchNorm` (or
    `track_running_stats=False`) follows the rule."""
    for module in backbone.modules():
        kind = type(module).__name__
        if (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
                and kind not in _WARNED):
            _WARNED.add(kind)
            warnings.warn(f"the backbone's {kind} keeps running statistics: evaluation would "
                          "normalise with averages over training episodes, unlike metazoo's "
                          "batch-norm rule (each episode's own statistics, algorithm.bn_mode); "
                          "use metazoo.functional.BatchNorm or track_running_stats=False",
                          UserWarning, stacklevel=3)
