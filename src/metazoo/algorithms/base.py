"""The `Algorithm` base class, its per-algorithm config, and the registry.

An algorithm maps a support set to a predictor (`adapt`) and defines the outer loss
(`meta_loss`). `adapt` is written for ONE task with unbatched shapes and never writes to `self`;
`meta_loss` and `predict` map it over the tasks of a `TaskBatch`, with `torch.vmap` where the
algorithm allows it and a loop otherwise. Registering a class is the only step that makes it
visible to the CLI, the presets, the README table and the contract tests.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.errors import ConfigError, ShapeError
from metazoo.functional import apply_params
from metazoo.metrics import accuracy
from metazoo.task_threads import map_chunks
from metazoo.tasks import TaskBatch
from metazoo.types import Family, Params, Predictor, TaskKind

Strategy = Literal["auto", "vmap", "loop", "threads"]


@dataclass(frozen=True)
class AlgorithmConfig:
    """Base of every algorithm's config; defaults are the paper's. Subclasses add fields."""

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
        """The spec's config with its registered defaults, then `overrides`, validated."""
        known = {f.name for f in dataclasses.fields(self.config)}
        for key in overrides:
            if key not in known:
                raise ConfigError(f"algorithm '{self.name}' has no option '{key}'"
                                  f"{_did_you_mean(key, known)}")
        cfg = self.config(**{**self.defaults, **overrides})
        cfg.validate()
        return cfg


_REGISTRY: dict[str, AlgorithmSpec] = {}
A = TypeVar("A", bound="type[Algorithm]")


def register(name: str, *, display: str, family: Family, config: type[AlgorithmConfig],
             paper: str, tasks: set[TaskKind], defaults: Mapping[str, Any] | None = None
             ) -> Callable[[A], A]:
    """Class decorator: register an algorithm (or, with `defaults`, a variant of one)."""

    def wrap(cls: A) -> A:
        if name in _REGISTRY:
            raise RuntimeError(f"algorithm '{name}' is registered twice")
        spec = AlgorithmSpec(name, display, family, cls, config, paper, frozenset(tasks),
                             dict(defaults or {}))
        _REGISTRY[name] = spec
        if "spec" not in cls.__dict__:  # a variant registered on the same class keeps the first
            cls.spec = spec
        return cls

    return wrap


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def get(name: str) -> AlgorithmSpec:
    """The spec registered as `name`; an unknown name raises `ConfigError` with a suggestion."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown algorithm '{name}'{_did_you_mean(name, _REGISTRY)}; "
                          "`metazoo list algorithms` shows them all")
    return _REGISTRY[name]


def names(family: Family | None = None) -> list[str]:
    """Registered names, optionally of one family, sorted."""
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)


def build(name: str, backbone: nn.Module, *, ways: int, **overrides: Any) -> Algorithm:
    """Build algorithm `name` around `backbone` for `ways`-way tasks (1 for regression)."""
    spec = get(name)
    return spec.cls(backbone, spec.make_config(**overrides), ways=ways)


class Algorithm(nn.Module):
    """Holds the meta-parameters; maps support sets to predictors.

    Args:
        backbone: a feature extractor with a `feature_dim` attribute (see `metazoo.models`).
        config: the algorithm's config (see `AlgorithmSpec.make_config`).
        ways: N of the tasks it is built for (1 for regression). Algorithms without a fixed-size
            head accept other N at `adapt` time.
    """

    spec: ClassVar[AlgorithmSpec]
    vmappable: ClassVar[bool] = True
    fixed_ways: ClassVar[bool] = False  # True when a head of size `ways` is meta-learned
    adapts_with_gradients: ClassVar[bool] = False  # True when adapt() differentiates (MAML...)
    # True where "auto" may run a CPU task loop in threads (measured faster; no random draws)
    threads_by_default: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__()
        if ways < 1:
            raise ConfigError(f"ways must be >= 1, got {ways}")
        self.backbone = backbone
        self.config = config
        self.ways = ways
        self.strategy: Strategy = "auto"

    # --- what each algorithm writes -------------------------------------------------------
    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        """Turn ONE task's support set (`[N*K, *x]`, `[N*K]`) into a predictor; pure."""
        raise NotImplementedError(f"{type(self).__name__} must define adapt()")

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Query loss of one task after adaptation: cross-entropy, or MSE for regression."""
        out = self.adapt(support_x, support_y, ways=ways)(query_x)
        if query_y.is_floating_point():
            loss = F.mse_loss(out, query_y)
            return loss, {"mse": loss.detach()}
        return F.cross_entropy(out, query_y), {"acc": accuracy(out.detach(), query_y)}

    def begin_step(self, step: int, total: int) -> None:
        """Called by the trainer before meta-iteration `step` of `total` (0-based).

        For algorithms whose objective changes over training (MAML++'s annealed multi-step loss
        weights and derivative order); the default does nothing. It may set plain attributes
        but not parameters, so a resumed run that replays it gets the same state.
        """

    def end_step(self) -> None:
        """Called by the trainer after the meta-update of each step, before any checkpoint.

        For algorithms that carry state other than parameters from step to step (Reptile's
        inner Adam moments): `meta_loss` computes the new state and this stores it, so calling
        `meta_loss` twice gives the same result. The default does nothing.
        """

    # --- what the base provides -----------------------------------------------------------
    def check_ways(self, ways: int) -> int:
        """`ways` itself; `ShapeError` when a fixed-size head cannot serve it."""
        if self.fixed_ways and ways != self.ways:
            raise ShapeError(f"{type(self).__name__} was built for {self.ways}-way tasks and "
                             f"cannot serve {ways}-way ones; train with ways={ways}")
        return ways

    def auto_strategy(self) -> Literal["loop", "vmap", "threads"]:
        """What `strategy="auto"` runs: measured on 2 CPU cores, a task loop beats `vmap` for
        conv backbones (vmap's grouped convolutions are slow and channels-last is unavailable
        under it), and for classes with `threads_by_default` the loop split over threads
        (`metazoo.task_threads`) beats the plain loop where more than one intra-op thread is
        allowed; `vmap` wins ~10x for MLPs; on GPUs `vmap` is the usual win."""
        convs = any(isinstance(m, nn.Conv2d) for m in self.backbone.modules())
        on_cpu = next(self.parameters()).device.type == "cpu"
        if not (on_cpu and convs):
            return "vmap"
        return "threads" if self.threads_by_default and torch.get_num_threads() > 1 else "loop"

    def resolved_strategy(self) -> str:
        """`strategy`, with "auto" replaced by `auto_strategy()`."""
        return self.auto_strategy() if self.strategy == "auto" else self.strategy

    def _use_vmap(self, batch_size: int) -> bool:
        if not self.vmappable or batch_size == 1:
            return False
        return self.resolved_strategy() == "vmap"

    def _task_workers(self, batch_size: int) -> int:
        """Threads for a task loop: all intra-op threads under "threads", else 1."""
        if batch_size == 1 or self.resolved_strategy() != "threads":
            return 1
        return torch.get_num_threads()

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean over tasks of `task_loss`, and the mean of each metric."""
        ways = self.check_ways(batch.ways)

        def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, dict]:
            return self.task_loss(sx, sy, qx, qy, ways)

        args = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        if self._use_vmap(len(batch)):
            losses, metrics = torch.vmap(one)(*args)
        else:
            outs = [one(*(a[i] for a in args)) for i in range(len(batch))]
            losses = torch.stack([o[0] for o in outs])
            metrics = {k: torch.stack([o[1][k] for o in outs]) for k in outs[0][1]}
        return losses.mean(), {k: v.mean() for k, v in metrics.items()}

    def meta_backward(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """`meta_loss(batch)` and its backward pass (gradients accumulate in `.grad`).

        Returns the detached loss and metrics. Where the tasks run as a loop of `task_loss`
        (the base `meta_loss` without `vmap`), each task's graph is backpropagated and freed
        before the next one is built: the same gradient, with the peak memory of one task
        instead of the whole meta-batch's. Subclasses that override `meta_loss` get the plain
        path unless they opt in with `_backward_per_task`.
        """
        if type(self).meta_loss is not Algorithm.meta_loss or self._use_vmap(len(batch)):
            return self._backward_whole(batch)
        return self._backward_per_task(batch)

    def _backward_whole(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        loss, metrics = self.meta_loss(batch)
        loss.backward()
        return loss.detach(), {k: v.detach() for k, v in metrics.items()}

    def _backward_per_task(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The task loop of `meta_backward`, split over `_task_workers` threads."""
        ways, tasks = self.check_ways(batch.ways), len(batch)
        workers = self._task_workers(tasks)
        params = [p for p in self.parameters() if p.requires_grad]

        def run(alg: Algorithm, part: range) -> tuple[list[Tensor | None], list[Tensor],
                                                      list[dict[str, Tensor]]]:
            total: list[Tensor | None] = [None] * len(params)
            losses, metrics = [], []
            for i in part:
                loss, m = alg.task_loss(batch.support_x[i], batch.support_y[i],
                                        batch.query_x[i], batch.query_y[i], ways)
                if workers == 1:  # accumulate in .grad directly: no extra copy of the grads
                    (loss / tasks).backward()  # d(mean)/d(loss_i) = 1/B
                else:
                    gs = torch.autograd.grad(loss / tasks, params, allow_unused=True)
                    total = [t if g is None else g if t is None else t + g
                             for t, g in zip(total, gs, strict=True)]
                losses.append(loss.detach())
                metrics.append({k: v.detach() for k, v in m.items()})
            return total, losses, metrics

        results = map_chunks(run, self, tasks, workers)
        for total, _, _ in results:  # worker order: the sum does not depend on thread timing
            for p, g in zip(params, total, strict=True):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
        losses = [x for r in results for x in r[1]]
        metrics = [x for r in results for x in r[2]]
        return (torch.stack(losses).mean(),
                {k: torch.stack([m[k] for m in metrics]).mean() for k in metrics[0]})

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                ways: int | None = None) -> Tensor:
        """Batched `adapt(support)(query)`: `[B, N*K, *x]`, `[B, N*K]`, `[B, M, *x]` -> `[B, M, N]`.

        `ways` defaults to the N the algorithm was built for.
        """
        n = self.check_ways(ways or self.ways)

        def one(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
            return self.adapt(sx, sy, ways=n)(qx)

        tasks = support_x.shape[0]
        if self._use_vmap(tasks):
            return torch.vmap(one)(support_x, support_y, query_x)

        def run(alg: Algorithm, part: range) -> list[Tensor]:
            return [alg.adapt(support_x[i], support_y[i], ways=n)(query_x[i]) for i in part]

        return torch.stack([out for outs in map_chunks(run, self, tasks,
                                                       self._task_workers(tasks))
                            for out in outs])


class LinearHeadAlgorithm(Algorithm):
    """An algorithm whose network is the backbone plus a linear head of `ways` outputs, run with
    given parameters through `forward_with` (the gradient family: MAML, iMAML, Reptile...)."""

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        self.head = nn.Linear(int(backbone.feature_dim), ways)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        """The network at the meta-parameters: `[M, *x]` -> `[M, ways]`."""
        return self.head(self.backbone(x))

    def forward_with(self, params: Params, x: Tensor) -> Tensor:
        """`forward` with `params` in place of the parameters they name (see `call`)."""
        body = {k.removeprefix("backbone."): v for k, v in params.items()
                if k.startswith("backbone.")}
        features = apply_params(self.backbone, body, x)  # in the caller's batch-norm mode
        return F.linear(features, params.get("head.weight", self.head.weight),
                        params.get("head.bias", self.head.bias))
