#!/usr/bin/env python3
"""MetaOptNet's SVM QP: `metazoo.solvers.svm_dual` against qpth 0.0.18 on the same problems.

qpth (Amos and Kolter's batched OptNet solver) is what MetaOptNet's code solves its
Crammer-Singer dual with: a dense QP in `nN` variables with `G = I` (`nN` inequalities) and
`A = I_n (x) 1_N^T` (`n` equalities), built from the block kernel `K (x) I_N` (its
`MetaOptNetHead_SVM_CS`). metazoo solves the same QP through its block structure (module
docstring of `metazoo.solvers.svm`). Both are given the same random MetaOptNet-shaped episodes:
5-way 1-shot and 5-shot, a meta-batch of 8 tasks, 15 queries per class, support and query
features from a random embedding (ReLU of a Gaussian, class-dependent mean) of 512 or 16000
dimensions, `C = 0.1`, the same ridge on the kernel and the same number of interior-point
iterations (3 as in MetaOptNet's meta-training, 15 as its default), in float32 (MetaOptNet's
default) and float64. Per configuration it times one forward and backward of a meta-batch
(median over repetitions interleaved between the solvers, after a warm-up): support kernel ->
QP -> query logits -> cross-entropy -> gradient w.r.t. the support kernel (the kernels are
computed beforehand: the feature products are the same work for both). It reports the largest
absolute difference between the two solvers' `alpha` and between their kernel gradients
(relative to the largest gradient entry); each solver's distance to the converged `alpha`
(metazoo at 50 iterations in float64, which the tests check against cvxpy); and each
gradient's relative error, along one random symmetric direction, against a central finite
difference of the loss with the QP solved to convergence in float64 (an independent check of
the gradient of the solution map).

    pip install qpth==0.0.18 --no-deps    # benchmark-only; not a metazoo dependency
    python benchmarks/svm_qp_vs_qpth.py [--quick] [--threads 1] [--dtypes float32,float64]
        [--dims 512,16000] [--shots 1,5] [--iters 3,15] [--repeats 20]

(qpth 0.0.18 declares `numpy<2` and `cvxpy`; it runs with numpy 2 for the batched solver used
here, hence `--no-deps` to keep the environment's numpy.) Prints one JSON line per
configuration and a markdown table. Absolute times depend on the machine's load; compare the
ratio from one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metazoo.solvers import svm_dual, svm_logits

WAYS, BATCH, QUERIES, C, RIDGE = 5, 8, 15, 0.1, 1e-5


def episode(shots: int, dim: int, dtype: torch.dtype, seed: int = 0) -> dict[str, Tensor]:
    """Support and query features (ReLU of Gaussians around class means) and labels."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(BATCH, WAYS, dim, generator=g, dtype=torch.float64)

    def draw(per_class: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(WAYS).repeat_interleave(per_class).expand(BATCH, -1).contiguous()
        x = torch.randn(BATCH, WAYS * per_class, dim, generator=g, dtype=torch.float64)
        x = x + torch.gather(means, 1, y[..., None].expand(*y.shape, dim))
        return x.relu().to(dtype), y

    xs, ys = draw(shots)
    xq, yq = draw(QUERIES)
    scale = 1 / xs.square().sum(-1).mean()
    return {"support": xs, "support_y": ys, "query": xq, "query_y": yq, "scale": scale}


def ours(kernel: Tensor, y: Tensor, iters: int) -> Tensor:
    return svm_dual(kernel, y, WAYS, C, iters=iters, ridge=RIDGE)


def qpth_solver(kernel: Tensor, y: Tensor, iters: int) -> Tensor:
    """MetaOptNet's construction of the dense QP for qpth (`MetaOptNetHead_SVM_CS`), with the
    same ridge as ours; `alpha` `[B, n, N]`."""
    from qpth.qp import QPFunction

    b, n, _ = kernel.shape
    size = n * WAYS
    eye_n = torch.eye(n, dtype=kernel.dtype)
    block = (kernel[:, :, None, :, None] * torch.eye(WAYS, dtype=kernel.dtype)[:, None, :]
             ).reshape(b, size, size)  # K (x) I_N, variables ordered (sample, class)
    q = block + RIDGE * torch.eye(size, dtype=kernel.dtype)
    onehot = F.one_hot(y, WAYS).to(kernel.dtype).reshape(b, size)
    g = torch.eye(size, dtype=kernel.dtype).expand(b, size, size)
    a = (eye_n[:, :, None] * torch.ones(WAYS, dtype=kernel.dtype)).reshape(n, size)
    solve = QPFunction(verbose=-1, maxIter=iters)
    z = solve(q, -onehot, g, C * onehot, a.expand(b, n, size), torch.zeros(b, n, dtype=q.dtype))
    return z.reshape(b, n, WAYS)


def kernels(data: dict[str, Tensor], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The support kernel `[B, n, n]` and the query-support kernel `[B, m, n]` (linear)."""
    support = data["support"].to(dtype)
    return (support @ support.transpose(1, 2),
            data["query"].to(dtype) @ support.transpose(1, 2))


def query_loss(solver: Callable[[Tensor, Tensor, int], Tensor], kernel: Tensor,
               query_kernel: Tensor, data: dict[str, Tensor], iters: int) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the query logits, and alpha. The logits are scaled by a constant (the
    episode's `scale`: one over the mean squared feature norm) that keeps the softmax
    unsaturated, as MetaOptNet's learned scale does."""
    alpha = solver(kernel, data["support_y"], iters)
    logits = float(data["scale"]) * svm_logits(query_kernel, alpha)
    return F.cross_entropy(logits.flatten(0, 1), data["query_y"].flatten()), alpha


def forward_backward(solver: Callable[[Tensor, Tensor, int], Tensor], kernel: Tensor,
                     query_kernel: Tensor, data: dict[str, Tensor],
                     iters: int) -> tuple[float, Tensor, Tensor]:
    """Seconds for support kernel -> alpha -> query loss -> d loss / d kernel (the kernels are
    computed beforehand: the feature products are the same for both solvers), alpha, gradient."""
    start = time.perf_counter()
    leaf = kernel.detach().requires_grad_()
    loss, alpha = query_loss(solver, leaf, query_kernel, data, iters)
    (grad,) = torch.autograd.grad(loss, leaf)
    return time.perf_counter() - start, alpha.detach(), grad


def directional_fd(kernel: Tensor, query_kernel: Tensor, data: dict[str, Tensor],
                   direction: Tensor) -> float:
    """Central finite difference of the query loss along a symmetric `direction`, with the
    QP solved to convergence in float64 (metazoo, 50 iterations); the step is 1e-5 of the
    kernel's mean magnitude (near the optimum for central differences in float64)."""
    k, qk = kernel.double(), query_kernel.double()
    eps = 1e-5 * float(k.abs().mean() / direction.abs().mean())

    def loss(t: float) -> float:
        return float(query_loss(ours, k + t * direction, qk, data, 50)[0])

    return (loss(eps) - loss(-eps)) / (2 * eps)


def measure(shots: int, dim: int, dtype: torch.dtype, iters: int,
            repeats: int) -> dict[str, object]:
    data = episode(shots, dim, torch.float64)
    kernel, query_kernel = kernels(data, dtype)
    ref = ours(kernels(data, torch.float64)[0], data["support_y"], 50)
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(kernel.shape, generator=g, dtype=torch.float64)
    direction = direction + direction.transpose(1, 2)
    fd = directional_fd(*kernels(data, torch.float64), data, direction)
    solvers = {"metazoo": ours, "qpth": qpth_solver}
    times: dict[str, list[float]] = {k: [] for k in solvers}
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for name, solver in solvers.items():  # warm-up, and the results compared
        _, alpha, grad = forward_backward(solver, kernel, query_kernel, data, iters)
        out[name] = alpha, grad
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for name, solver in solvers.items():
            times[name].append(forward_backward(solver, kernel, query_kernel, data, iters)[0])
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    (a_ours, g_ours), (a_qpth, g_qpth) = out["metazoo"], out["qpth"]

    def fd_error(grad: Tensor) -> float:
        return abs(float((grad.double() * direction).sum()) - fd) / abs(fd)

    return {
        "config": f"5w{shots}s d={dim}", "dtype": str(dtype).removeprefix("torch."),
        "iters": iters, "batch": BATCH,
        "ms_metazoo": round(ms["metazoo"], 2), "ms_qpth": round(ms["qpth"], 2),
        "speedup": round(ms["qpth"] / ms["metazoo"], 2),
        "max_abs_diff_alpha": float((a_ours - a_qpth).abs().max()),
        "max_abs_diff_grad_rel": float((g_ours - g_qpth).abs().max() / g_qpth.abs().max()),
        "alpha_err_metazoo": float((a_ours.double() - ref).abs().max()),
        "alpha_err_qpth": float((a_qpth.double() - ref).abs().max()),
        "fd_err_metazoo": fd_error(g_ours), "fd_err_qpth": fd_error(g_qpth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of --repeats")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--dims", default="512,16000")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--iters", default="3,15")
    args = parser.parse_args()
    try:
        import qpth  # noqa: F401
    except ImportError:
        sys.exit("qpth is not installed: `pip install qpth==0.0.18 --no-deps` to run this "
                 "benchmark (it is not a metazoo dependency)")
    warnings.filterwarnings("ignore", module="qpth")
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    rows = []
    for dtype_name in args.dtypes.split(","):
        for dim in map(int, args.dims.split(",")):
            for shots in map(int, args.shots.split(",")):
                for iters in map(int, args.iters.split(",")):
                    row = measure(shots, dim, getattr(torch, dtype_name), iters, repeats)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), {repeats} repeats, "
          f"median ms per meta-batch of {BATCH} (forward + backward)\n")
    print("| episode | dtype | iters | metazoo ms | qpth ms | speed-up | max abs diff alpha | "
          "max rel diff grad K | alpha err metazoo | alpha err qpth | FD err metazoo | "
          "FD err qpth |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['dtype']} | {r['iters']} | {r['ms_metazoo']} | "
              f"{r['ms_qpth']} | {r['speedup']}x | {r['max_abs_diff_alpha']:.1e} | "
              f"{r['max_abs_diff_grad_rel']:.1e} | {r['alpha_err_metazoo']:.1e} | "
              f"{r['alpha_err_qpth']:.1e} | {r['fd_err_metazoo']:.1e} | {r['fd_err_qpth']:.1e} |")


if __name__ == "__main__":
    main()
