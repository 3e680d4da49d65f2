#!/usr/bin/env python3
"""One MAML meta-iteration: metazoo against learn2learn, higher and torchopt, same process setup.

Every implementation starts from the same Conv-4 (64 filters, batch norm with batch statistics)
plus Linear(64, 5) weights and sees the same synthetic Omniglot-shaped tasks (5-way 1-shot,
1x28x28, meta-batch 32, query 1 or 15 per class). A meta-iteration is: zero the gradients,
adapt each task (1 or 5 SGD steps, lr 0.4, first or second order), average the query losses'
meta-gradient over the tasks, take one Adam step. Each (implementation, configuration) runs in
its own child process, so peak RSS (VmHWM) is its own; before timing, the child writes the
meta-gradient of a fixed batch, and the parent compares it with the plain-autograd reference.
That check runs in float64, in a process of its own: in float32 these random tasks are
ill-conditioned (batch norm over 5 images, 5 steps at lr 0.4), and the reference's own float32
meta-gradient is up to 9% (relative norm) from its float64 value, so any change in the order
of float32 sums (e.g. channels-last kernels) moves the float32 gradient by that much; in
float64 correct implementations agree to ~1e-15.

Run with the peers' venv (see ../../shared/bench/peers/README.md); metazoo comes from ../src:
    ~/.cache/metazoo-peers-venv/bin/python benchmarks/maml_vs_peers.py [--quick]
Output: one JSON object per line (impl, config, median_s, peak_rss_mib, grad_max_abs_diff, plus
it_per_s, speedup_vs_l2l and matmul_peak_fraction); lines starting with '#' are comments.
`--interleaved [--tune-allocator]` times all implementations in one process instead, alternating
iteration by iteration: on a shared machine whose speed drifts (the 2048² matmul rate moved
between 101 and 171 GFLOP/s within a day here), only such ratios are steady. It also profiles
one more meta-iteration of each and reports `conv_s`, the time spent inside convolution
kernels, and `conv_bound_vs_l2l` = learn2learn's median / `conv_s`: the most that
implementation could gain over learn2learn with the same convolution kernels.
Absolute times depend on the machine and on its other load: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

WAYS, SHOTS, TASKS, INNER_LR, OUTER_LR, THREADS = 5, 1, 32, 0.4, 1e-3, 2
CONFIGS = {f"{o}{s}_q{q * WAYS}": {"steps": s, "first_order": o == "fo", "queries": q}
           for q in (1, 15) for o, s in (("so", 1), ("so", 5), ("fo", 5))}
QUICK = ["so1_q5", "fo5_q5", "so1_q75"]
IMPLS = ["reference", "l2l", "higher", "torchopt", "metazoo"]
QUICK_IMPLS = ["reference", "l2l", "metazoo"]  # --quick: under 3 minutes (l2l+malloc: --impls)
Batch = tuple[Tensor, Tensor, Tensor, Tensor]


def peer_model(seed: int = 0) -> nn.Sequential:
    """Conv-4 + head as the peers use it: torch's BatchNorm2d, batch statistics only."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for c in (1, 64, 64, 64):
        layers += [nn.Conv2d(c, 64, 3, padding=1), nn.BatchNorm2d(64, track_running_stats=False),
                   nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, WAYS))


def tasks(queries: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(TASKS, WAYS * SHOTS, 1, 28, 28, generator=g)
    qx = torch.randn(TASKS, WAYS * queries, 1, 28, 28, generator=g)
    sy = torch.arange(WAYS).repeat_interleave(SHOTS).repeat(TASKS, 1)
    qy = torch.arange(WAYS).repeat_interleave(queries).repeat(TASKS, 1)
    return sx, sy, qx, qy


# Each builder returns (module whose parameters are meta-learned, meta_grad(batch)); meta_grad
# leaves the task-averaged meta-gradient in .grad.

def build_reference(steps: int, first_order: bool) -> tuple[nn.Module, Callable[[Batch], None]]:
    """Plain autograd over torch.func.functional_call, one task at a time."""
    model = peer_model()
    names = [n for n, _ in model.named_parameters()]

    def meta_grad(b: Batch) -> None:
        total = 0.0
        for i in range(TASKS):
            w = list(model.parameters())
            for _ in range(steps):
                out = torch.func.functional_call(model, dict(zip(names, w, strict=True)), b[0][i])
                g = torch.autograd.grad(F.cross_entropy(out, b[1][i]), w,
                                        create_graph=not first_order)
                w = [p - INNER_LR * gi for p, gi in zip(w, g, strict=True)]
            out = torch.func.functional_call(model, dict(zip(names, w, strict=True)), b[2][i])
            total = total + F.cross_entropy(out, b[3][i])
        (total / TASKS).backward()

    return model, meta_grad


def build_l2l(steps: int, first_order: bool) -> tuple[nn.Module, Callable[[Batch], None]]:
    try:
        import learn2learn as l2l
    except RuntimeError:  # torchvision's CUDA wheel on CPU torch: use the peers' import shim
        sys.path.insert(0, os.path.join(os.path.dirname(ROOT), "shared", "bench", "peers"))
        import peers_compat

        l2l = peers_compat.import_learn2learn()
    maml = l2l.algorithms.MAML(peer_model(), lr=INNER_LR, first_order=first_order)

    def meta_grad(b: Batch) -> None:
        for i in range(TASKS):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(b[0][i]), b[1][i]))
            (F.cross_entropy(learner(b[2][i]), b[3][i]) / TASKS).backward()

    return maml, meta_grad


def build_higher(steps: int, first_order: bool) -> tuple[nn.Module, Callable[[Batch], None]]:
    import higher

    model = peer_model()
    inner = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    params = list(model.parameters())

    def meta_grad(b: Batch) -> None:
        for i in range(TASKS):
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False,
                                      track_higher_grads=not first_order) as (fmodel, opt):
                for _ in range(steps):
                    opt.step(F.cross_entropy(fmodel(b[0][i]), b[1][i]))
                loss = F.cross_entropy(fmodel(b[2][i]), b[3][i]) / TASKS
                if not first_order:
                    loss.backward()
                    continue
                # first order: the fast weights are detached; d(query)/d(fast) is the update
                for p, g in zip(params, torch.autograd.grad(loss, fmodel.fast_params),
                                strict=True):
                    p.grad = g if p.grad is None else p.grad + g

    return model, meta_grad


def build_torchopt(steps: int, first_order: bool) -> tuple[nn.Module, Callable[[Batch], None]]:
    import torchopt

    if first_order:
        raise NotImplementedError("torchopt first-order MAML is not benchmarked")
    model = peer_model()
    inner = torchopt.MetaSGD(model, lr=INNER_LR)

    def meta_grad(b: Batch) -> None:
        start = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
        opt_start = torchopt.extract_state_dict(inner, by="reference")
        for i in range(TASKS):
            for _ in range(steps):
                inner.step(F.cross_entropy(model(b[0][i]), b[1][i]))
            (F.cross_entropy(model(b[2][i]), b[3][i]) / TASKS).backward()
            torchopt.recover_state_dict(model, start)
            torchopt.recover_state_dict(inner, opt_start)

    return model, meta_grad


def build_metazoo(steps: int, first_order: bool, strategy: str = "auto"
                  ) -> tuple[nn.Module, Callable[[Batch], None]]:
    from metazoo import batching
    from metazoo.algorithms import build
    from metazoo.models.conv4 import Conv4
    from metazoo.tasks import TaskBatch

    algo = build("maml", Conv4((1, 28, 28), 64), ways=WAYS, inner_lr=INNER_LR,
                 inner_steps=steps, first_order=first_order)
    with torch.no_grad():  # the same initial weights as the peers (same parameter order)
        for mine, theirs in zip(algo.parameters(), peer_model().parameters(), strict=True):
            mine.copy_(theirs)

    def meta_grad(b: Batch) -> None:
        queries = b[2].shape[1] // WAYS
        batching.meta_backward(algo, TaskBatch(b[0], b[1], b[2], b[3], WAYS, SHOTS, queries),
                               strategy)  # type: ignore[arg-type]

    return algo, meta_grad


def builder(impl: str, allocator: bool = True
            ) -> Callable[[int, bool], tuple[nn.Module, Callable[[Batch], None]]]:
    """`metazoo` tunes glibc's malloc as `metazoo train` does (metazoo.allocator); a peer's name
    with `+malloc` (e.g. `l2l+malloc`) runs that peer with the same tuning, for a fair view.
    `allocator=False` leaves malloc alone (the interleaved mode sets it once for all)."""
    if allocator and (impl.startswith("metazoo") or impl.endswith("+malloc")):
        from metazoo.allocator import tune_allocator

        tune_allocator()
        impl = impl.removesuffix("+malloc")
    if impl.startswith("metazoo-"):  # metazoo-loop, metazoo-vmap, metazoo-first_step
        return lambda s, fo: build_metazoo(s, fo, impl.split("-", 1)[1])
    return {"reference": build_reference, "l2l": build_l2l, "higher": build_higher,
            "torchopt": build_torchopt, "metazoo": build_metazoo}[impl]


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def run_child(impl: str, config: str, iters: int, out_dir: str, check: bool) -> None:
    """Time one configuration in this process and write its record, or (`check`) write its
    float64 meta-gradient of a fixed batch (a process of its own, so it adds no peak RSS)."""
    torch.set_num_threads(THREADS)
    cfg = CONFIGS[config]
    model, meta_grad = builder(impl)(cfg["steps"], cfg["first_order"])
    data = [tasks(cfg["queries"], seed) for seed in range(3)]
    if check:
        model.double()
        meta_grad(tuple(t.double() if t.is_floating_point() else t for t in data[0]))
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        torch.save(grad, os.path.join(out_dir, f"{impl}.{config}.pt"))
        return
    opt = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    times = []
    for k in range(iters + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        meta_grad(data[k % 3])
        opt.step()
        times.append(time.perf_counter() - t0)
    rec = {"median_s": statistics.median(times[1:]), "n": iters, "peak_rss_mib": peak_rss_mib()}
    with open(os.path.join(out_dir, f"{impl}.{config}.json"), "w") as f:
        json.dump(rec, f)


def run_interleaved(configs: list[str], impls: list[str], iters: int, tuned: bool) -> None:
    """Time the implementations in this one process, alternating meta-iterations, so that a
    slow spell of a shared machine hits all of them alike; prints medians and ratios (no RSS)."""
    torch.set_num_threads(THREADS)
    if tuned:
        from metazoo.allocator import tune_allocator

        tune_allocator()
    for config in configs:
        cfg = CONFIGS[config]
        data = [tasks(cfg["queries"], seed) for seed in range(3)]
        runs = {}
        for impl in impls:
            if impl.startswith("torchopt") and cfg["first_order"]:
                continue
            model, meta_grad = builder(impl, allocator=False)(
                cfg["steps"], cfg["first_order"])
            runs[impl] = (model, meta_grad, torch.optim.Adam(model.parameters(), lr=OUTER_LR))
        times: dict[str, list[float]] = {impl: [] for impl in runs}
        for k in range(iters + 1):  # the first round is a warm-up
            for impl, (_, meta_grad, opt) in runs.items():
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                meta_grad(data[k % 3])
                opt.step()
                if k:
                    times[impl].append(time.perf_counter() - t0)
        medians = {impl: statistics.median(t) for impl, t in times.items()}
        for impl, median in medians.items():
            conv_s = conv_seconds(runs[impl][1], data[0])
            l2l = medians.get("l2l")
            print(json.dumps({
                "impl": impl, "config": config, "mode": "interleaved",
                "allocator": "tuned" if tuned else "default", "median_s": round(median, 4),
                "n": iters, "speedup_vs_l2l": round(l2l / median, 2) if l2l else None,
                "conv_s": round(conv_s, 4), "conv_share": round(conv_s / median, 2),
                "conv_bound_vs_l2l": round(l2l / conv_s, 2) if l2l else None,
                "load_avg_1min": round(os.getloadavg()[0], 1)}), flush=True)


CONV_KERNELS = {"aten::mkldnn_convolution", "aten::convolution_backward",
                "aten::mkldnn_convolution_backward", "aten::_slow_conv2d_forward",
                "aten::_slow_conv2d_backward", "aten::_nnpack_spatial_convolution"}


def conv_seconds(meta_grad: Callable[[Batch], None], batch: Batch) -> float:
    """CPU time one meta-gradient spends inside convolution kernels (their own time, profiled).

    The ceiling of any speed-up at unchanged kernels: an implementation whose convolutions
    take `conv_s` cannot run a meta-iteration in less, so it is at most `l2l / conv_s` times
    as fast as learn2learn even if batch norm, pooling and autograd cost nothing. Under task
    threads the profiler sees the calling thread only (its share of the tasks), which still
    bounds the wall time from below.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        meta_grad(batch)
    return sum(e.self_cpu_time_total for e in prof.key_averages()
               if e.key in CONV_KERNELS) / 1e6


def analytic_gflop(config: str) -> float:
    """Conv/linear FLOPs of a meta-iteration: forward F, backward 2F, double backward 4F,
    so a second-order inner step costs 9F, a first-order one 3F, the query 3F."""
    cfg = CONFIGS[config]
    macs, c, h = 0, 1, 28
    for _ in range(4):
        macs, c, h = macs + h * h * 64 * c * 9, 64, h // 2
    f = 2 * (macs + 64 * WAYS)
    step = (3 if cfg["first_order"] else 9) * f * WAYS * SHOTS
    return TASKS * (cfg["steps"] * step + 3 * f * WAYS * cfg["queries"]) / 1e9


def matmul_gflops(seconds: float = 2.0) -> float:
    torch.set_num_threads(THREADS)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    times, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 5:
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"configs {QUICK}, impls {QUICK_IMPLS}, 3 timed iterations")
    ap.add_argument("--configs", help="comma-separated, from " + ",".join(CONFIGS))
    ap.add_argument("--impls", help=f"comma-separated (default {','.join(IMPLS)});"
                    " also metazoo-loop, metazoo-vmap, metazoo-first_step, and PEER+malloc")
    ap.add_argument("--iters", type=int, help="timed iterations (default 3 quick, 20 full)")
    ap.add_argument("--interleaved", action="store_true",
                    help="one process, implementations alternating iteration by iteration "
                    "(robust ratios on a shared machine; no peak RSS, no gradient check)")
    ap.add_argument("--tune-allocator", action="store_true",
                    help="with --interleaved: tune malloc for all (default: glibc defaults)")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "CONFIG", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    iters = args.iters or (3 if args.quick else 20)
    if args.child:
        run_child(*args.child[:2], iters, args.child[2], args.check)
        return 0
    configs = (args.configs.split(",") if args.configs else QUICK if args.quick else list(CONFIGS))
    impls = (args.impls or ",".join(QUICK_IMPLS if args.quick else IMPLS)).split(",")
    if args.interleaved:
        impls = list(dict.fromkeys(i.removesuffix("+malloc") for i in impls))
        run_interleaved(configs, impls, iters, args.tune_allocator)
        return 0
    if "reference" not in impls:
        impls = ["reference", *impls]
    peak = matmul_gflops()
    print(f"# torch {torch.__version__}, {THREADS} threads, matmul peak {peak:.0f} GFLOP/s "
          f"(2048^2, median), load average {os.getloadavg()[0]:.1f} at start", flush=True)
    rc = 0
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            l2l_s = None
            for impl in impls:
                if impl.startswith("torchopt") and CONFIGS[config]["first_order"]:
                    continue
                cmd = [sys.executable, os.path.abspath(__file__), "--iters", str(iters),
                       "--child", impl, config, tmp]
                if any(subprocess.run(c).returncode for c in ([*cmd, "--check"], cmd)):
                    print(f"# {impl} {config}: child failed", flush=True)
                    rc = 1
                    continue
                with open(os.path.join(tmp, f"{impl}.{config}.json")) as f:
                    rec = json.load(f)
                grad = torch.load(os.path.join(tmp, f"{impl}.{config}.pt"))
                ref = torch.load(os.path.join(tmp, f"reference.{config}.pt"))
                l2l_s = rec["median_s"] if impl == "l2l" else l2l_s
                gflop = analytic_gflop(config)
                print(json.dumps({
                    "impl": impl, "config": config, "median_s": round(rec["median_s"], 4),
                    "peak_rss_mib": round(rec["peak_rss_mib"]),
                    "grad_max_abs_diff": float((grad - ref).abs().max()),
                    "it_per_s": round(1 / rec["median_s"], 3), "n": rec["n"],
                    "speedup_vs_l2l": round(l2l_s / rec["median_s"], 2) if l2l_s else None,
                    "matmul_peak_fraction": round(gflop / rec["median_s"] / peak, 3),
                    "load_avg_1min": round(os.getloadavg()[0], 1)}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
