#!/usr/bin/env python3
"""Does the "threads" task strategy beat the plain "loop" for each gradient-family algorithm?

`metazoo.batching.choose` runs a CPU task loop in threads ("auto") only for the algorithms in
`THREADS_MEASURED_FASTER` (design note 10). This measures, per algorithm, one `meta_backward` of its
Omniglot 5-way 1-shot preset (its meta-batch size, queries, inner steps, network) on synthetic
1x28x28 inputs, with strategy "loop" and "threads" interleaved in one process, after a warm-up,
and reports the relative difference of their float32 gradients (the contract tests check that
they are equal in float64). MAML++ is measured at its first iteration (first
order, under derivative-order annealing) and after the switch to second order ("maml_pp@so").
Not measured: Meta-LSTM (its preset's meta-batch is one task, so no loop to split) and Reptile
(its batched meta-loss runs its own loop).

    python benchmarks/task_threads.py [--algorithms meta_sgd,cavia] [--iters 5]

Prints one JSON line per algorithm: median seconds per meta-iteration for each strategy and
their ratio (loop / threads: above 1 means threads are faster), then a summary table.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metazoo import batching
from metazoo.algorithms.base import Algorithm
from metazoo.allocator import tune_allocator
from metazoo.config_files import load_config
from metazoo.engine.run import build_algorithm
from metazoo.tasks import TaskBatch

ALGORITHMS = ["maml", "meta_sgd", "anil", "maml_pp", "maml_pp@so", "cavia", "imaml"]
SHAPE = (1, 28, 28)


def setup(name: str) -> tuple[Algorithm, TaskBatch]:
    """The algorithm of `name`'s 5-way 1-shot Omniglot preset and one synthetic meta-batch."""
    algorithm, _, phase = name.partition("@")
    cfg = load_config(preset=f"{algorithm}-omniglot-5w1s")
    alg = build_algorithm(cfg, SHAPE)
    alg.train()
    total = cfg.train.meta_steps
    first_order_until = getattr(alg.config, "first_order_iterations", 0)
    alg.begin_step(min(first_order_until, total - 1) if phase == "so" else 0, total)
    d, b = cfg.data, cfg.train.meta_batch_size
    g = torch.Generator().manual_seed(0)
    support_y = torch.arange(d.ways).repeat_interleave(d.shots).expand(b, -1).contiguous()
    query_y = torch.arange(d.ways).repeat_interleave(d.queries).expand(b, -1).contiguous()
    batch = TaskBatch(torch.rand(b, d.ways * d.shots, *SHAPE, generator=g), support_y,
                      torch.rand(b, d.ways * d.queries, *SHAPE, generator=g), query_y,
                      d.ways, d.shots, d.queries)
    return alg, batch


def step(alg: Algorithm, batch: TaskBatch, strategy: str) -> tuple[float, list[torch.Tensor]]:
    """Seconds for one `meta_backward` under `strategy`, and the gradients it left."""
    alg.zero_grad(set_to_none=True)
    start = time.perf_counter()
    batching.meta_backward(alg, batch, strategy)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    return seconds, [p.grad.clone() for p in alg.parameters() if p.grad is not None]


def measure(name: str, iters: int) -> dict[str, object]:
    alg, batch = setup(name)
    times: dict[str, list[float]] = {"loop": [], "threads": []}
    grads = {s: torch.cat([g.reshape(-1) for g in step(alg, batch, s)[1]])
             for s in times}  # warm-up, and the gradients compared
    # float32 sums in another order: a relative difference, not equality (the contract tests
    # check equality in float64)
    difference = float((grads["threads"] - grads["loop"]).norm() / grads["loop"].norm())
    for i in range(iters):
        for s in (("loop", "threads") if i % 2 == 0 else ("threads", "loop")):
            times[s].append(step(alg, batch, s)[0])
    loop, threads = statistics.median(times["loop"]), statistics.median(times["threads"])
    return {"algorithm": name, "tasks": len(batch), "loop_s": round(loop, 4),
            "threads_s": round(threads, 4), "loop_over_threads": round(loop / threads, 3),
            "gradient_rel_difference": float(f"{difference:.2g}"),
            "threads_by_default": alg.spec.name in batching.THREADS_MEASURED_FASTER}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per strategy")
    args = parser.parse_args()
    tune_allocator()  # as `metazoo train` does
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}))
    rows = []
    for name in args.algorithms.split(","):
        rows.append(measure(name, args.iters))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| algorithm | loop s/it | threads s/it | loop / threads | gradient rel. difference | "
          "threads by default |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['algorithm']} | {r['loop_s']} | {r['threads_s']} | "
              f"{r['loop_over_threads']} | {r['gradient_rel_difference']} | "
              f"{r['threads_by_default']} |")


if __name__ == "__main__":
    main()
