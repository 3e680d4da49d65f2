"""A step's meta-batch over the processes of a data-parallel run (`engine.distributed`).

Most algorithms' meta-loss is a mean over independent tasks: each process runs its contiguous
share of the batch (`World.shard`), back-propagates share / B of its loss, and one all-reduce of
a flat buffer (the gradients, which parameters have one, the loss and the metrics) leaves every
process holding the single-process mean. Where a share's loss weighted by its size is not exact
(`unsplittable`: Reptile carrying its inner Adam state from task to task, MTL's hard tasks built
from the whole batch, a `meta_loss` override not known to be a task mean, fewer tasks than
processes), every process runs the whole batch from the same generator state, as one process
would, and the same all-reduce averages the identical gradients: the run gives the
single-process numbers with no speed-up, and says so once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from metazoo import batching, output
from metazoo.engine.distributed import World
from metazoo.engine.precision import Precision
from metazoo.tasks import TaskBatch

Metrics = dict[str, Tensor]

TASK_MEANS: set[str] = {"deml", "mtl", "reptile"}
"""Algorithms that override `meta_loss` with a mean over tasks (with the configs that
`unsplittable` lets through), so a share's loss weighted by its size is exact: DEML's
discriminator loss averages over images, every task having as many; MTL without hard tasks is
the mean task loss; Reptile's surrogate gradient is phi - mean_i W_i."""


def unsplittable(alg: batching.Algorithm, meta_batch_size: int, world: World) -> str | None:
    """Why `alg`'s meta-batch cannot be split over `world` exactly, or None."""
    if not world.parallel:
        return None
    cfg, name = getattr(alg, "config", None), alg.spec.name
    if meta_batch_size < world.size:
        return f"train.meta_batch_size={meta_batch_size} is smaller than {world.size} processes"
    if getattr(cfg, "inner_adam_state", None) == "carry":
        return (f"{name} with inner_adam_state=carry runs the tasks of a meta-batch in order, "
                "each from the Adam state the last left (algorithm.inner_adam_state=reset "
                "splits)")
    if getattr(cfg, "hard_tasks", 0):
        return (f"{name} builds hard tasks from the whole meta-batch's scores "
                "(algorithm.hard_tasks=0 splits)")
    if batching.overrides_meta_loss(alg) and name not in TASK_MEANS:
        return (f"{name} has its own meta_loss, not known to be a mean over tasks (add it to "
                "metazoo.engine.sharding.TASK_MEANS if it is)")
    return None


def announce(alg: batching.Algorithm, meta_batch_size: int, world: World) -> bool:
    """Whether every process must run the whole meta-batch; says why once (process 0)."""
    why = unsplittable(alg, meta_batch_size, world)
    if why is not None and world.writes:
        output.warning(f"every process runs the whole meta-batch (the numbers of one process, "
                       f"no speed-up): {why}")
    return why is not None


def shard_batch(batch: TaskBatch, part: range) -> TaskBatch:
    """Tasks `part` of `batch`, which keep their positions in it (`TaskBatch.first`)."""
    s = slice(part.start, part.stop)
    return TaskBatch(batch.support_x[s], batch.support_y[s], batch.query_x[s], batch.query_y[s],
                     batch.ways, batch.shots, batch.queries,
                     None if batch.classes is None else batch.classes[s],
                     first=batch.first + part.start)


def meta_backward(alg: batching.Algorithm, batch: TaskBatch, world: World, amp: Precision,
                  replicate: bool = False) -> tuple[Tensor, Metrics]:
    """`batching.meta_backward` of this process's share of `batch` (all of it with
    `replicate`) in `amp`'s precision, the gradients summed over the processes into the mean
    of the whole batch (unscaled); returns the batch's mean loss and metrics, the same on
    every process."""
    if not world.parallel:
        loss, metrics = batching.meta_backward(alg, batch, scale=amp.loss_scale(),
                                               forward=amp.forward)
        amp.unscale()
        return loss, metrics
    if replicate:  # the global generators agree, so every process draws as one process would
        weight = 1.0 / world.size
        loss, metrics = batching.meta_backward(alg, batch, scale=weight * amp.loss_scale(),
                                               forward=amp.forward)
    else:
        part = world.shard(len(batch))
        weight = len(part) / len(batch)
        cuda = [world.device] if world.device.type == "cuda" else []
        seed = int(torch.randint(2**62, ()))  # the same draw everywhere: the generators agree
        with torch.random.fork_rng(devices=cuda):  # global-generator dropout: per process
            torch.manual_seed(seed + world.rank)
            loss, metrics = batching.meta_backward(alg, shard_batch(batch, part),
                                                   scale=weight * amp.loss_scale(),
                                                   forward=amp.forward)
    out = _all_reduce(alg, [loss * weight, *(v * weight for v in metrics.values())], world)
    amp.unscale()
    return out[0], dict(zip(metrics, out[1:], strict=True))


def _all_reduce(alg: batching.Algorithm, values: list[Tensor], world: World) -> list[Tensor]:
    """Sum `.grad` of every meta-parameter and `values` over the processes, in one flat buffer
    (a gradient that no process has stays None)."""
    params = [p for p in alg.parameters() if p.requires_grad]
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32

    def flat(p: nn.Parameter) -> Tensor:
        g = p.grad
        return torch.zeros(p.numel(), dtype=dtype, device=world.device) if g is None else \
            g.reshape(-1).to(world.device, dtype)

    has = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=world.device)
    stats = torch.stack([v.detach().to(world.device, dtype) for v in values])
    buffer = torch.cat([*(flat(p) for p in params), has, stats])
    dist.all_reduce(buffer)
    offset = sum(p.numel() for p in params)
    present = buffer[offset:offset + len(params)].tolist()
    start = 0
    for p, any_grad in zip(params, present, strict=True):
        part = buffer[start:start + p.numel()].view(p.shape)
        start += p.numel()
        if p.grad is not None:
            p.grad.copy_(part)  # keeps the gradient's layout (channels-last convolutions)
        elif any_grad:
            p.grad = part.to(p.dtype).clone()
    return list(buffer[offset + len(params):].to(values[0].dtype).unbind())
