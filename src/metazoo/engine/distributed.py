"""Data-parallel meta-training under `torchrun`: each process takes a share of the meta-batch.

`torchrun --nproc-per-node N -m metazoo train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; `session` reads them (`World`) and joins the group:
gloo on CPU, NCCL on CUDA (each process on cuda:LOCAL_RANK). Without WORLD_SIZE (or with 1) a
run is one process, with no group and no collective. Every process builds the same full
`TaskBatch` of a step (episodes are pure functions of their index) and runs the contiguous
tasks `World.shard` gives it, so the shares are exactly the one-process meta-batch; its
meta-gradient is weighted by share / meta-batch size in the backward pass and summed over the
processes in one all-reduce of a flat buffer (with the loss, the metrics and which parameters
have a gradient), so each holds the one-process mean. `alg.end_step` then sees the full batch
everywhere and the state stays identical on every process. Process 0 alone writes the run
folder; evaluation episodes are split the same way and their per-episode values gathered in
episode order (`gather_scores`), so the test numbers equal one process's. How a step's
meta-batch is split (or, where it cannot be split exactly, replicated) is `engine.sharding`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from metazoo import calibration, output
from metazoo.engine import lock
from metazoo.engine.log import MetricsLog
from metazoo.engine.run import resolve_device
from metazoo.engine.scoring import Scores
from metazoo.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process in a data-parallel run: `rank` of `size`, `local_rank` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (process 0)."""
        return self.rank == 0

    def shard(self, items: int) -> range:
        """This process's contiguous share of `range(items)`; the shares cover it in order."""
        return range(self.rank * items // self.size, (self.rank + 1) * items // self.size)

    def agree(self, value: int) -> int:
        """The largest `value` over the processes (a stop request, a spent time budget)."""
        if not self.parallel:
            return int(value)
        t = torch.tensor([int(value)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def require_single(self, what: str) -> None:
        """`ConfigError` when `what` runs in more than one process."""
        if self.parallel:
            raise ConfigError(f"{what} runs in one process; start it without torchrun")

    def broadcast_module(self, module: nn.Module) -> None:
        """Process 0's weights and buffers into `module` on every process."""
        if self.parallel:
            with torch.no_grad():
                for t in module.state_dict().values():
                    dist.broadcast(t, src=0)

    def gather_scores(self, scores: Scores) -> Scores:
        """Every process's per-episode values, in process (so episode) order, and the pooled
        reliability bins summed."""
        if not self.parallel:
            return scores
        rel = scores.reliability
        mine = ({k: torch.cat(v) for k, v in scores.values.items()},
                None if rel is None else (rel.bins, rel.count, rel.confidence, rel.correct))
        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, mine)
        merged = Scores()
        for values, bins in parts:
            for k, v in values.items():
                merged.values.setdefault(k, []).append(v)
            if bins is not None:
                old = merged.reliability or calibration.Reliability(bins[0])
                merged.reliability = calibration.Reliability(bins[0], *(
                    [a + b for a, b in zip(getattr(old, name), got, strict=True)]
                    for name, got in zip(("count", "confidence", "correct"), bins[1:],
                                         strict=True)))
        return merged


SINGLE = World()
"""One process: no group, no collective."""


def from_env(env: Mapping[str, str] = os.environ) -> World:
    """The `World` torchrun describes in `env` (one process without WORLD_SIZE)."""
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets "
                          f"them); got {env.get('RANK')}, {env.get('WORLD_SIZE')}, "
                          f"{env.get('LOCAL_RANK')}") from None
    if not (size >= 1 and 0 <= rank < size and local >= 0):
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={size} (need 0 <= RANK < "
                          "WORLD_SIZE); launch with torchrun")
    return World(rank, size, local)


def device_of(world: World, name: str) -> torch.device:
    """`train.device` for this process: under torchrun, cuda is cuda:LOCAL_RANK."""
    device = resolve_device(name)
    if device.type != "cuda" or not world.parallel:
        return device
    if device.index is not None:
        raise ConfigError(f"under torchrun each process takes cuda:LOCAL_RANK; set "
                          f"train.device=cuda (or auto), not {name}")
    return torch.device("cuda", world.local_rank % torch.cuda.device_count())


@contextmanager
def session(device: str) -> Iterator[World]:
    """This process's `World` on `device`, in its process group for the block (joined here
    unless the caller did; left on exit); processes other than 0 print warnings only."""
    world = from_env()
    world = replace(world, device=device_of(world, device))
    if not world.parallel:
        yield world
        return
    created = not dist.is_initialized()
    if created:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world.size} is set but {' and '.join(missing)} "
                              "not: launch with torchrun")
        if world.device.type == "cuda":
            torch.cuda.set_device(world.device)
        dist.init_process_group("nccl" if world.device.type == "cuda" else "gloo",
                                rank=world.rank, world_size=world.size)
    elif dist.get_world_size() != world.size or dist.get_rank() != world.rank:
        raise ConfigError("the process group already joined does not match RANK/WORLD_SIZE")
    output.progress_on()  # the logger configured first, so the level below stays
    level = output.logger.level
    if world.rank:
        output.logger.setLevel(logging.WARNING)
    try:
        yield world
    finally:
        output.logger.setLevel(level)
        if created:
            dist.destroy_process_group()


@contextmanager
def claim(run_dir: Path, world: World, command: str = "train") -> Iterator[lock.Claim]:
    """Process 0 holds `run_dir` for the block (`engine.lock.claim`); the others leave it be."""
    if world.writes:
        with lock.claim(run_dir, command) as claimed:
            yield claimed
    else:
        yield lock.Claim()


class NullLog(MetricsLog):
    """The metrics log of a process other than 0: it writes nothing."""

    def __init__(self) -> None:  # no file
        pass

    def write(self, step: int, split: str, **values: float | None) -> None:
        pass

    def close(self) -> None:
        pass


def episode_share(episodes: int, batch_size: int, world: World = SINGLE
                  ) -> list[tuple[int, int]]:
    """`(index, size)` of this process's evaluation batches (`source.batch(index, size)`):
    episodes `0..episodes-1` in batches of `batch_size` (the last ones single), the batches
    split into contiguous shares."""
    full = episodes // batch_size
    items = [(i, batch_size) for i in range(full)] + [(e, 1) for e in
                                                       range(full * batch_size, episodes)]
    part = world.shard(len(items))
    return items[part.start:part.stop]

