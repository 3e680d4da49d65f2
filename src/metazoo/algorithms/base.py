"""The `Algorithm` contract and the base of every algorithm's config.

An algorithm maps ONE task's support set to a predictor (`adapt`, pure, unbatched shapes) and
defines the loss a task contributes (`task_loss`); `meta_loss` overrides the mean of task losses
only where a paper's outer objective differs. How the tasks of a meta-batch run together (loop,
`vmap`, threads, per-task backward) is not an algorithm's business: `metazoo.batching` does it.
Registration is `metazoo.algorithms.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from metazoo import batching
from metazoo.adaptation import loss_and_metrics
from metazoo.errors import ConfigError, ShapeError
from metazoo.tasks import TaskBatch
from metazoo.types import Predictor


@dataclass(frozen=True)
class AlgorithmConfig:
    """Base of every algorithm's config; defaults are the paper's. Field types are checked on
    construction from plain data (`Literal` choices included): `validate` holds range checks."""

    def validate(self) -> None:
        """Raise `ConfigError` for impossible values (subclasses extend this)."""


class Algorithm(nn.Module):
    """Holds the meta-parameters; maps support sets to predictors.

    Args:
        backbone: a feature extractor with a `feature_dim` attribute (see `metazoo.models`).
        config: the algorithm's config (see `AlgorithmSpec.make_config`).
        ways: N of the tasks it is built for (1 for regression). Algorithms without a fixed-size
            head accept other N at `adapt` time.
    """

    spec: ClassVar[Any]  # its `metazoo.algorithms.registry.AlgorithmSpec`, set by `@register`
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

    def outer_lr(self, scheduled: float) -> float:
        """The outer learning rate of the coming optimiser step, given the trainer's scheduled
        one (`train.outer_lr` times its schedule); called after `end_step`. The default keeps it;
        AlphaMAML returns its rate adapted by hypergradient descent."""
        return scheduled
