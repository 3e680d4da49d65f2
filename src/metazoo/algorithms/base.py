"""The `Algorithm` contract, its per-algorithm config, and the registry.

An algorithm maps ONE task's support set to a predictor (`adapt`, pure, unbatched shapes) and
defines the loss a task contributes (`task_loss`); `meta_loss` overrides the mean of task losses
only where a paper's outer objective differs. How the tasks of a meta-batch run together (loop,
`vmap`, threads, per-task backward) is not an algorithm's business: `metazoo.batching` does it.
Registering a class is the only step that makes it visible to the CLI, the presets, the README
table and the contract tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from metazoo import batching
from metazoo.adaptation import loss_and_metrics
from metazoo.errors import ConfigError, ShapeError
from metazoo.fields import did_you_mean, from_mapping
from metazoo.registry import Registry
from metazoo.tasks import TaskBatch
from metazoo.types import Family, Predictor, TaskKind


@dataclass(frozen=True)
class AlgorithmConfig:
    """Base of every algorithm's config; defaults are the paper's. Field types are checked on
    construction from plain data (`Literal` choices included): `validate` holds range checks."""

    def validate(self) -> None:
        """Raise `ConfigError` for impossible values (subclasses extend this)."""


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
    return spec.cls(backbone, config, ways=ways)


class Algorithm(nn.Module):
    """Holds the meta-parameters; maps support sets to predictors.

    Args:
        backbone: a feature extractor with a `feature_dim` attribute (see `metazoo.models`).
        config: the algorithm's config (see `AlgorithmSpec.make_config`).
        ways: N of the tasks it is built for (1 for regression). Algorithms without a fixed-size
            head accept other N at `adapt` time.
    """

    spec: ClassVar[AlgorithmSpec]
    vmappable: ClassVar[bool] = True  # False where adapt cannot run under torch.vmap
    fixed_ways: ClassVar[bool] = False  # True when a head of size `ways` is meta-learned
    adapts_with_gradients: ClassVar[bool] = False  # True when adapt() differentiates (MAML...)

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__()
        if ways < 1:
            raise ConfigError(f"ways must be >= 1, got {ways}")
        self.backbone = backbone
        self.config = config
        self.ways = ways

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        """Turn ONE task's support set (`[N*K, *x]`, `[N*K]`) into a predictor; pure."""
        raise NotImplementedError(f"{type(self).__name__} must define adapt()")

    @batching.batched_default
    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Query loss of one task after adaptation: cross-entropy, or MSE for regression."""
        return loss_and_metrics(self.adapt(support_x, support_y, ways=ways)(query_x), query_y)

    @batching.batched_default
    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean over tasks of `task_loss`, and the mean of each metric."""
        return batching.mean_task_loss(self, batch)

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                ways: int | None = None) -> Tensor:
        """Batched `adapt(support)(query)`: `[B, N*K, *x]`, `[B, N*K]`, `[B, M, *x]` -> `[B, M, N]`
        (`ways` defaults to the N the algorithm was built for)."""
        return batching.predict(self, support_x, support_y, query_x, ways)

    def can_vmap(self) -> bool:
        """Whether the tasks may run under `torch.vmap` now (`vmappable`, unless a mode that
        draws random numbers per task is on)."""
        return self.vmappable

    def check_ways(self, ways: int) -> int:
        """`ways` itself; `ShapeError` when a fixed-size head cannot serve it."""
        if self.fixed_ways and ways != self.ways:
            raise ShapeError(f"{type(self).__name__} was built for {self.ways}-way tasks and "
                             f"cannot serve {ways}-way ones; train with ways={ways}")
        return ways

    def begin_step(self, step: int, total: int) -> None:
        """Called by the trainer before meta-iteration `step` of `total` (0-based), for objectives
        that change over training (MAML++'s schedules). Sets plain attributes only, derived
        from `step`, so a resumed run replays the same state."""

    def end_step(self, batch: TaskBatch) -> None:
        """Called by the trainer after the meta-gradient of `batch`, before the optimiser step,
        for state that is not a parameter (Reptile's inner Adam moments, MAML++'s running
        statistics): `meta_loss` stays pure, this stores the state."""
