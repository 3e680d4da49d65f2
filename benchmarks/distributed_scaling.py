#!/usr/bin/env python3
"""Meta-iterations per second of data-parallel MAML at 1 and 2 processes (`engine.distributed`).

The `maml-omniglot-5w1s` preset's meta-iteration (conv4, 5-way 1-shot, 1 query, meta-batch 32,
one second-order inner step, Adam) on synthetic 1x28x28 episodes, as the trainer runs it:
`sharding.meta_backward` (each process its share of the 32 tasks, one gloo all-reduce of the
gradients on 127.0.0.1) then the optimiser step. Layouts compared on the same cores: 1 process
with `--cores` intra-op threads (the task strategy "auto" picks), `--cores` processes with one
thread each, and 1 process with one thread (the per-process baseline). Each layout starts its
processes afresh (forked), warms up, then times `--iters` meta-iterations; process 0 reports the
median and the median time of the gradient all-reduce alone. The layouts run in `--rounds`
interleaved rounds; the table shows each layout's median round.

    python benchmarks/distributed_scaling.py [--iters 4] [--rounds 3] [--cores 2]

Prints one JSON line per layout and round, then a table. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metazoo import batching
from metazoo.allocator import tune_allocator
from metazoo.config_files import load_config
from metazoo.engine import distributed, sharding
from metazoo.engine.precision import Precision
from metazoo.engine.run import build_algorithm
from metazoo.tasks import TaskBatch

SHAPE = (1, 28, 28)


def _batch(ways: int, shots: int, queries: int, tasks: int) -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous()
    return TaskBatch(torch.rand(tasks, ways * shots, *SHAPE, generator=g), sy,
                     torch.rand(tasks, ways * queries, *SHAPE, generator=g), qy,
                     ways, shots, queries)


def _worker(rank: int, size: int, threads: int, port: int, args: argparse.Namespace,
            out: mp.SimpleQueue) -> None:  # type: ignore[type-arg]
    if size > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    tune_allocator()
    cfg = load_config("maml-omniglot-5w1s", overrides=["data.name=glyphs"])
    d = cfg.data
    batch = _batch(d.ways, d.shots, d.queries, args.meta_batch)
    with distributed.session("cpu") as world:
        alg = build_algorithm(cfg, SHAPE)
        alg.train()
        opt = torch.optim.Adam(alg.parameters(), lr=cfg.train.outer_lr)
        amp = Precision("float32", world.device, opt)
        steps, reduce = [], []
        for i in range(args.iters + 1):  # the first is a warm-up
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            sharding.meta_backward(alg, batch, world, amp)
            amp.step()
            if i:
                steps.append(time.perf_counter() - start)
        if world.parallel:
            flat = torch.zeros(sum(p.numel() for p in alg.parameters()) + 8)
            for _ in range(5):
                dist.barrier()
                start = time.perf_counter()
                dist.all_reduce(flat)
                reduce.append(time.perf_counter() - start)
        if world.writes:
            out.put({"processes": size, "threads_each": threads,
                     "strategy": batching.choose(alg), "meta_batch": args.meta_batch,
                     "s_per_iter": round(statistics.median(steps), 4),
                     "iters_per_s": round(1 / statistics.median(steps), 3),
                     "allreduce_ms": round(1e3 * statistics.median(reduce), 3) if reduce
                     else 0.0})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=4, help="timed meta-iterations per layout")
    p.add_argument("--cores", type=int, default=2, help="cores to share out (processes x threads)")
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the layouts")
    args = p.parse_args()
    layouts = ((1, args.cores), (args.cores, 1), (1, 1))
    runs: dict[tuple[int, int], list[dict]] = {layout: [] for layout in layouts}
    for _ in range(args.rounds):  # layouts interleaved: a shared machine's load drifts
        for size, threads in layouts:
            queue: mp.SimpleQueue = mp.get_context("fork").SimpleQueue()  # type: ignore[type-arg]
            mp.start_processes(_worker, args=(size, threads, _free_port(), args, queue),
                               nprocs=size, start_method="fork")
            runs[size, threads].append(queue.get())
            print(json.dumps(runs[size, threads][-1]), flush=True)
    rows = []
    for got in runs.values():  # the round with the median time of each layout
        rows.append(sorted(got, key=lambda r: r["s_per_iter"])[(len(got) - 1) // 2])
    base = rows[0]["s_per_iter"]
    print("\n| processes x threads | strategy | s / meta-iteration | meta-iterations / s | "
          "vs 1 process | all-reduce ms |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} x {r['threads_each']} | {r['strategy']} | {r['s_per_iter']} | "
              f"{r['iters_per_s']} | {base / r['s_per_iter']:.2f}x | {r['allreduce_ms']} |")


if __name__ == "__main__":
    main()
