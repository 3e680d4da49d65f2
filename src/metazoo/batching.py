"""How the tasks of a meta-batch run together: the one module that chooses and runs a strategy.

An algorithm is written for one task (`adapt`, `task_loss`); this module maps it over a
`TaskBatch`. Strategies, each tested equal to the loop for every algorithm
(`tests/test_batching.py`, `tests/algorithms/test_contract.py`):
* "loop": task after task. In `meta_backward` each task's graph is backpropagated and freed
  before the next is built: the same gradient, with one task's peak memory.
* "vmap": `torch.vmap` over the tasks (algorithms with `can_vmap()`; others loop).
* "threads": the loop split over the intra-op threads, one worker thread per core, each running
  whole tasks with one intra-op thread (`metazoo.task_threads`).
* "first_step": the first inner step of every task in one vmapped call (they all start from the
  same parameters), then a loop (`InnerLoopAlgorithm`s whose task loss is the default).
"auto" picks from measurements (`docs/benchmarks.md`): on a CPU with a conv backbone the loop,
or threads for the algorithms measured faster in threads; elsewhere (MLPs, GPUs) vmap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, Protocol, TypeVar, cast, runtime_checkable

import torch
from torch import Tensor, nn

from metazoo.adaptation import loss_and_metrics
from metazoo.errors import ConfigError
from metazoo.task_threads import map_chunks
from metazoo.tasks import TaskBatch
from metazoo.types import Params, Predictor

Strategy = Literal["auto", "loop", "vmap", "threads", "first_step"]
STRATEGIES: tuple[Strategy, ...] = ("loop", "vmap", "threads", "first_step")

THREADS_MEASURED_FASTER = frozenset({"maml", "meta_sgd", "anil", "maml_pp", "cavia", "imaml"})
"""Algorithms whose conv4 presets ran faster in threads than in the loop on 2 CPU cores
(1.07-1.74x: `benchmarks/maml_vs_peers.py --interleaved`, `benchmarks/task_threads.py`). Others
are unmeasured, or draw random numbers per task (threads would make runs irreproducible)."""

Metrics = dict[str, Tensor]


class Algorithm(Protocol):
    """What this module needs of an algorithm (`metazoo.algorithms.base.Algorithm` has it);
    a protocol, so that this module does not import the algorithms that import it."""

    backbone: nn.Module
    ways: int

    @property
    def spec(self) -> Any: ...  # its registry entry: `spec.name`

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor: ...
    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                  query_y: Tensor, ways: int) -> tuple[Tensor, Metrics]: ...
    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, Metrics]: ...
    def check_ways(self, ways: int) -> int: ...
    def can_vmap(self) -> bool: ...
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...
F = TypeVar("F", bound=Callable[..., object])
_DEFAULT = "__metazoo_batching_default__"


def batched_default(method: F) -> F:
    """Marks `Algorithm`'s own `meta_loss` and `task_loss`: a subclass that keeps them is run
    with every strategy; one that overrides them declares its own objective."""
    setattr(method, _DEFAULT, True)
    return method


def _keeps_default(alg: Algorithm, name: str) -> bool:
    return bool(getattr(getattr(type(alg), name), _DEFAULT, False))


@runtime_checkable
class InnerLoop(Protocol):
    """The shape "first_step" needs (`metazoo.algorithms.networks.InnerLoopAlgorithm`)."""

    def start_params(self) -> Params: ...
    def inner_loop(self, params: Params, support_x: Tensor, support_y: Tensor, steps: int
                   ) -> Params: ...
    def steps(self) -> int: ...
    def predictor(self, params: Params, support_x: Tensor) -> Predictor: ...


def choose(alg: Algorithm, strategy: Strategy = "auto") -> Strategy:
    """The strategy "auto" stands for on `alg`'s device and backbone (else `strategy` itself).

    Measured on 2 CPU cores: a task loop beats `vmap` for conv backbones (grouped convolutions
    under vmap are slow and channels-last is unavailable there), threads beat the loop for
    `THREADS_MEASURED_FASTER` when more than one intra-op thread is allowed; `vmap` wins ~10x
    for MLPs, and is the usual win on GPUs.
    """
    if strategy != "auto":
        return strategy
    convs = any(isinstance(m, nn.Conv2d) for m in alg.backbone.modules())
    on_cpu = next(alg.parameters()).device.type == "cpu"
    if not (on_cpu and convs):
        return "vmap"
    threads = alg.spec.name in THREADS_MEASURED_FASTER and torch.get_num_threads() > 1
    return "threads" if threads else "loop"


def overrides_meta_loss(alg: Algorithm) -> bool:
    """Whether `alg`'s outer objective is its own (Reptile), not the mean of `task_loss`."""
    return not _keeps_default(alg, "meta_loss")


def _mean(outs: list[tuple[Tensor, Metrics]]) -> tuple[Tensor, Metrics]:
    losses = torch.stack([o[0] for o in outs])
    return losses.mean(), {k: torch.stack([o[1][k] for o in outs]).mean() for k in outs[0][1]}


def mean_task_loss(alg: Algorithm, batch: TaskBatch, strategy: Strategy = "auto"
                   ) -> tuple[Tensor, Metrics]:
    """Mean over tasks of `alg.task_loss` and the mean of each metric (with the graph)."""
    ways, tasks, chosen = alg.check_ways(batch.ways), len(batch), choose(alg, strategy)
    args = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    if chosen == "first_step" and tasks > 1:
        return _first_step(alg, batch, ways)
    if chosen == "vmap" and tasks > 1 and alg.can_vmap():
        losses, metrics = torch.vmap(lambda sx, sy, qx, qy: alg.task_loss(sx, sy, qx, qy, ways)
                                     )(*args)
        return losses.mean(), {k: v.mean() for k, v in metrics.items()}
    return _mean([alg.task_loss(batch.support_x[i], batch.support_y[i], batch.query_x[i],
                                batch.query_y[i], ways) for i in range(tasks)])


def _first_step(alg: Algorithm, batch: TaskBatch, ways: int) -> tuple[Tensor, Metrics]:
    if not isinstance(alg, InnerLoop) or not _keeps_default(alg, "task_loss"):
        raise ConfigError(f"strategy 'first_step' needs an algorithm that adapts by inner steps "
                          f"from shared parameters (maml, fomaml, anil, meta_sgd); "
                          f"'{alg.spec.name}' is not one: use 'loop', 'threads' or 'vmap'")
    start = alg.start_params()
    first = torch.vmap(lambda sx, sy: alg.inner_loop(start, sx, sy, 1))(batch.support_x,
                                                                         batch.support_y)
    outs = []
    for i in range(len(batch)):
        sx = batch.support_x[i]
        params = alg.inner_loop({k: v[i] for k, v in first.items()}, sx, batch.support_y[i],
                                alg.steps() - 1)
        outs.append(loss_and_metrics(alg.predictor(params, sx)(batch.query_x[i]),
                                     batch.query_y[i]))
    return _mean(outs)


def meta_loss(alg: Algorithm, batch: TaskBatch, strategy: Strategy = "auto"
              ) -> tuple[Tensor, Metrics]:
    """`alg.meta_loss(batch)` where the algorithm has its own outer objective, else the mean
    task loss under `strategy`."""
    if overrides_meta_loss(alg):
        return alg.meta_loss(batch)
    return mean_task_loss(alg, batch, strategy)


def meta_backward(alg: Algorithm, batch: TaskBatch, strategy: Strategy = "auto", *,
                  scale: float = 1.0,
                  forward: Callable[[], AbstractContextManager[Any]] = nullcontext
                  ) -> tuple[Tensor, Metrics]:
    """The meta-loss of `batch` and its backward pass (gradients accumulate in `.grad`): what
    the trainer calls. Returns the detached loss and metrics.

    Where the tasks run as a loop of `task_loss` ("loop", "threads", or "vmap" for an algorithm
    that cannot vmap), each task's graph is backpropagated and freed before the next is built.
    The backward pass is of `scale` times the loss (a float16 loss scale, a process's share of
    a meta-batch: `engine.distributed`); each forward pass runs inside `forward()` (autocast:
    `engine.precision`), each backward pass outside it.
    """
    chosen, tasks = choose(alg, strategy), len(batch)
    whole = overrides_meta_loss(alg) or (tasks > 1 and (
        chosen == "first_step" or (chosen == "vmap" and alg.can_vmap())))
    if whole:
        with forward():
            loss, metrics = meta_loss(alg, batch, chosen)
        (loss * scale).backward()
        return loss.detach(), {k: v.detach() for k, v in metrics.items()}
    workers = torch.get_num_threads() if chosen == "threads" and tasks > 1 else 1
    return _backward_per_task(alg, batch, workers, scale, forward)


def _backward_per_task(alg: Algorithm, batch: TaskBatch, workers: int, scale: float = 1.0,
                       forward: Callable[[], AbstractContextManager[Any]] = nullcontext
                       ) -> tuple[Tensor, Metrics]:
    ways, tasks = alg.check_ways(batch.ways), len(batch)
    params = [p for p in alg.parameters() if p.requires_grad]

    def run(clone: nn.Module, part: range) -> tuple[list[Tensor | None], list[Tensor],
                                                    list[Metrics]]:
        worker = cast(Algorithm, clone)
        total: list[Tensor | None] = [None] * len(params)
        losses, metrics = [], []
        for i in part:
            with forward():  # in each worker's thread: autocast is thread-local
                loss, m = worker.task_loss(batch.support_x[i], batch.support_y[i],
                                           batch.query_x[i], batch.query_y[i], ways)
            if workers == 1:  # accumulate in .grad directly: no extra copy of the grads
                (loss / tasks * scale).backward()  # d(mean)/d(loss_i) = 1/B
            else:
                gs = torch.autograd.grad(loss / tasks * scale, params, allow_unused=True)
                total = [t if g is None else g if t is None else t + g
                         for t, g in zip(total, gs, strict=True)]
            losses.append(loss.detach())
            metrics.append({k: v.detach() for k, v in m.items()})
        return total, losses, metrics

    results = map_chunks(run, cast(nn.Module, alg), tasks, workers)
    for total, _, _ in results:  # worker order: the sum does not depend on thread timing
        for p, g in zip(params, total, strict=True):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
    return _mean([(loss, m) for r in results for loss, m in zip(r[1], r[2], strict=True)])


def predict(alg: Algorithm, support_x: Tensor, support_y: Tensor, query_x: Tensor,
            ways: int | None = None, strategy: Strategy = "auto") -> Tensor:
    """Batched `adapt(support)(query)`: `[B, N*K, *x]`, `[B, N*K]`, `[B, M, *x]` -> `[B, M, N]`
    (`ways` defaults to the N the algorithm was built for)."""
    n, tasks, chosen = alg.check_ways(ways or alg.ways), support_x.shape[0], choose(alg, strategy)
    if chosen == "vmap" and tasks > 1 and alg.can_vmap():
        return torch.vmap(lambda sx, sy, qx: alg.adapt(sx, sy, ways=n)(qx))(support_x, support_y,
                                                                            query_x)

    def run(clone: nn.Module, part: range) -> list[Tensor]:
        worker = cast(Algorithm, clone)
        return [worker.adapt(support_x[i], support_y[i], ways=n)(query_x[i]) for i in part]

    workers = torch.get_num_threads() if chosen == "threads" and tasks > 1 else 1
    return torch.stack([out for outs in map_chunks(run, cast(nn.Module, alg), tasks, workers)
                        for out in outs])
