#!/usr/bin/env python3
"""Peak memory of one meta-iteration: iMAML against second-order MAML as inner steps grow.

iMAML's claim (Rajeswaran et al. 2019, Sec. 3-4): its meta-gradient needs the memory of one
inner-loop gradient (plus the Hessian-vector products at the solution), whatever the number of
inner steps, while MAML's backpropagation through the inner loop keeps the graph of every step.
This script measures it on Omniglot-shaped synthetic tasks (conv4 with 64 filters, 5-way 1-shot
1-query, 1x28x28, meta-batch 4, inner lr 0.1; iMAML: lambda 2, 5 CG steps) at 5, 20 and 50 inner
steps. A meta-iteration is: zero the gradients, `meta_backward` (task by task for both: one
task's graph alive at a time), one Adam step.

Each (algorithm, steps) runs in a child process of its own, so peaks do not mix: on CPU the
peak is the process's peak resident set (VmHWM in /proc/self/status, as in maml_vs_peers.py),
reported with the resident set just before the meta-iteration (model, data and torch itself)
and their difference; on CUDA it is `torch.cuda.max_memory_allocated`. glibc's malloc is tuned
as `metazoo train` tunes it (`metazoo.allocator`), which keeps freed pages resident.

    python3 benchmarks/imaml_memory.py [--steps 5,20,50] [--tasks 4] [--hidden 64] [--device cpu]

Output: one JSON object per line (algorithm, inner_steps, seconds, rss_before_mib,
peak_rss_mib, iteration_mib and, on CUDA, cuda_peak_mib). About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

WAYS, SHOTS, QUERIES, INNER_LR, THREADS = 5, 1, 1, 0.1, 2


def rss_mib(field: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak so far) of this process, in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def measure(algorithm: str, steps: int, tasks: int, hidden: int, device: str) -> dict:
    """One meta-iteration of `algorithm` in this process; its time and memory."""
    from metazoo import batching
    from metazoo.algorithms import build
    from metazoo.allocator import tune_allocator
    from metazoo.models.conv4 import Conv4
    from metazoo.tasks import TaskBatch

    tune_allocator()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    options = {"lam": 2.0, "cg_steps": 5} if algorithm == "imaml" else {"first_order": False}
    alg = build(algorithm, Conv4((1, 28, 28), hidden), ways=WAYS, inner_lr=INNER_LR,
                inner_steps=steps, **options).to(device)
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(torch.rand(tasks, WAYS * SHOTS, 1, 28, 28, generator=g),
                      torch.arange(WAYS).repeat_interleave(SHOTS).repeat(tasks, 1),
                      torch.rand(tasks, WAYS * QUERIES, 1, 28, 28, generator=g),
                      torch.arange(WAYS).repeat_interleave(QUERIES).repeat(tasks, 1),
                      WAYS, SHOTS, QUERIES).to(device)
    opt = torch.optim.Adam(alg.parameters(), lr=1e-3)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss_mib("VmRSS")
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss, _ = batching.meta_backward(alg, batch, "loop")  # task by task: one task's peak
    opt.step()
    if cuda:
        torch.cuda.synchronize()
    rec = {"algorithm": algorithm, "inner_steps": steps, "tasks": tasks, "hidden": hidden,
           "device": device, "seconds": round(time.perf_counter() - t0, 3),
           "loss": round(float(loss), 4), "rss_before_mib": round(before, 1),
           "peak_rss_mib": round(rss_mib("VmHWM"), 1)}
    rec["iteration_mib"] = round(rec["peak_rss_mib"] - before, 1)
    if cuda:
        rec["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="5,20,50", help="comma-separated inner step counts")
    ap.add_argument("--algorithms", default="imaml,maml", help="comma-separated")
    ap.add_argument("--tasks", type=int, default=4, help="meta-batch size")
    ap.add_argument("--hidden", type=int, default=64, help="conv4 filters")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=2, metavar=("ALGORITHM", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.tasks, args.hidden,
                                 args.device)))
        return 0
    print(f"# torch {torch.__version__}, {THREADS} threads, {args.device}, conv4-{args.hidden}, "
          f"{WAYS}-way {SHOTS}-shot {QUERIES}-query, meta-batch {args.tasks}", flush=True)
    rc = 0
    for steps in args.steps.split(","):
        for algorithm in args.algorithms.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", algorithm, steps,
                   "--tasks", str(args.tasks), "--hidden", str(args.hidden),
                   "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"# {algorithm} {steps} steps: child failed: "
                      f"{out.stderr.strip().splitlines()[-1:]}", flush=True)
                rc = 1
                continue
            print(out.stdout.strip().splitlines()[-1], flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
