#!/usr/bin/env python3
"""Would `torch.compile` speed up MAML's per-task meta-gradient on CPU? Eager vs compiled.

One task's meta-gradient is written as a pure function of (params, support, query) with
`torch.func.grad` (second order: the grad of a query loss at params adapted by `grad` of the
support loss; first order: the inner steps, then the query gradient at the adapted params) and
compiled whole with Inductor (C++ wrapper), so the double backward is traced into the graph,
unlike `torch.autograd.grad(create_graph=True)`, which `torch.compile` cannot trace. Both the
eager reference (plain autograd, NCHW) and the compiled function run the 32 tasks of a
meta-batch split over 2 Python threads with one intra-op thread each, like metazoo's "threads"
strategy. Conv-4 (64 filters, batch norm with batch statistics) + Linear(64, 5), 5-way 1-shot,
synthetic 1x28x28 inputs, lr 0.4.

    python benchmarks/maml_compiled.py [--configs so1_q5,fo5_q5,so1_q75] [--iters 5]

Prints one JSON line per configuration: warm-up (compile) seconds, eager and compiled medians,
their ratio. A cold compile takes about a minute per configuration; Inductor caches it on disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad

Params = dict[str, Tensor]
WAYS, TASKS, WORKERS, LR = 5, 32, 2, 0.4
CONFIGS = {"so1_q5": (1, False, 1), "fo5_q5": (5, True, 1), "so1_q75": (1, False, 15)}


def init(seed: int = 0) -> Params:
    g = torch.Generator().manual_seed(seed)
    p, c_in = {}, 1
    for i in range(4):
        p[f"c{i}.w"] = torch.randn(64, c_in, 3, 3, generator=g) * 0.1
        p[f"c{i}.b"] = torch.zeros(64)
        p[f"bn{i}.w"], p[f"bn{i}.b"] = torch.ones(64), torch.zeros(64)
        c_in = 64
    p["head.w"], p["head.b"] = torch.randn(WAYS, 64, generator=g) * 0.1, torch.zeros(WAYS)
    return p


def loss_at(p: Params, x: Tensor, y: Tensor) -> Tensor:
    for i in range(4):
        x = F.conv2d(x, p[f"c{i}.w"], p[f"c{i}.b"], padding=1)
        x = F.batch_norm(x, None, None, p[f"bn{i}.w"], p[f"bn{i}.b"], training=True)
        x = torch.relu(F.max_pool2d(x, 2))
    return F.cross_entropy(F.linear(x.flatten(1), p["head.w"], p["head.b"]), y)


def functional_meta_grad(steps: int, first_order: bool) -> Callable[..., Params]:
    """The meta-gradient of one task as a pure `torch.func` function (what gets compiled)."""
    def adapted(p: Params, sx: Tensor, sy: Tensor) -> Params:
        for _ in range(steps):
            g = grad(loss_at)(p, sx, sy)
            p = {k: p[k] - LR * g[k] for k in p}
        return p

    if first_order:
        return lambda p, sx, sy, qx, qy: grad(loss_at)(adapted(p, sx, sy), qx, qy)
    return grad(lambda p, sx, sy, qx, qy: loss_at(adapted(p, sx, sy), qx, qy))


def eager_meta_grad(steps: int, first_order: bool) -> Callable[..., Params]:
    """The same with `torch.autograd.grad`, as an eager task loop computes it."""
    def run(p: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Params:
        theta = {k: v.detach().requires_grad_() for k, v in p.items()}
        q = theta
        for _ in range(steps):
            if first_order:
                q = {k: v.detach().requires_grad_() for k, v in q.items()}
            gs = torch.autograd.grad(loss_at(q, sx, sy), list(q.values()),
                                     create_graph=not first_order)
            q = {k: v - LR * g for (k, v), g in zip(q.items(), gs, strict=True)}
        if first_order:
            q = {k: v.detach().requires_grad_() for k, v in q.items()}
        wrt = list(q.values()) if first_order else list(theta.values())
        return dict(zip(p, torch.autograd.grad(loss_at(q, qx, qy), wrt), strict=True))
    return run


def threaded(fn: Callable[..., Params], p: Params, batch: tuple[Tensor, ...]) -> list[Params]:
    """The tasks in WORKERS contiguous chunks, each in a thread with one intra-op thread."""
    out: list[Params] = [{} for _ in range(WORKERS)]

    def work(w: int) -> None:
        torch.set_num_threads(1)
        per = TASKS // WORKERS
        for t in range(w * per, (w + 1) * per):
            g = fn(p, *(a[t] for a in batch))
            out[w] = g if not out[w] else {k: out[w][k] + g[k] for k in g}

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch._inductor.config.cpp_wrapper = True  # one C++ call per graph: less GIL per kernel
    g = torch.Generator().manual_seed(1)
    p = init()
    for name in args.configs.split(","):
        steps, first_order, q = CONFIGS[name]
        batch = (torch.randn(TASKS, WAYS, 1, 28, 28, generator=g),
                 torch.arange(WAYS).repeat(TASKS, 1),
                 torch.randn(TASKS, WAYS * q, 1, 28, 28, generator=g),
                 torch.arange(WAYS).repeat(TASKS, q))
        eager = eager_meta_grad(steps, first_order)
        compiled = torch.compile(functional_meta_grad(steps, first_order), dynamic=False)
        start = time.perf_counter()
        compiled(p, *(a[0] for a in batch))  # compile in this thread, before the workers
        warm = time.perf_counter() - start
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.iters):
            for key, fn in (("eager", eager), ("compiled", compiled)):
                start = time.perf_counter()
                threaded(fn, p, batch)
                times[key].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({"config": name, "warmup_s": round(warm, 1),
                          "eager_s": round(med["eager"], 3),
                          "compiled_s": round(med["compiled"], 3),
                          "compiled_speedup": round(med["eager"] / med["compiled"], 2)}),
              flush=True)


if __name__ == "__main__":
    main()
