"""Float32 precision of the meta-gradient against float64, and the price of exactness (issue 28).

torch 2.13's CPU batch-norm kernel for channels-last inputs (conv4's default layout on CPU, see
`metazoo.functional.cpu_layout`) keeps about 5e-6 relative precision where its NCHW kernel and
metazoo's two-pass sums keep about 5e-8. For each preset this prints, from one set of weights and
one meta-batch of real (or generated) episodes:

* the relative error |g32 - g64| / |g64| and cosine of the float32 meta-gradient against the
  float64 one, in the default layout and with every pass NCHW;
* the median time of one meta-gradient (`batching.meta_backward`) in three modes, interleaved in
  one process: channels-last with the native kernel (the default), channels-last with the
  two-pass sums (exact), NCHW with the native kernel (exact); ratios to the default.

    METAZOO_DATA=../shared/data python benchmarks/batchnorm_precision.py \
        --presets fomaml-omniglot-5w1s protonet-omniglot-5w1s maml-omniglot-5w1s imaml-omniglot-5w1s

One JSON object per preset. iMAML's passes are NCHW already (`precise=True` in
`metazoo.adaptation`): its default and NCHW rows agree.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from metazoo import batching  # noqa: E402
from metazoo.config_files import load_config  # noqa: E402
from metazoo.engine.run import build_algorithm  # noqa: E402
from metazoo.models import conv4  # noqa: E402
from metazoo.tasks import make_task_source  # noqa: E402

NATIVE_LAYOUT, NATIVE_BLOCK = conv4.cpu_layout, conv4.batch_norm_relu_pool


def nchw_layout(x: torch.Tensor, memory_format: torch.memory_format | None):  # type: ignore[no-untyped-def]
    return NATIVE_LAYOUT(x, memory_format or torch.contiguous_format)


def exact_block(x, weight, bias, eps=1e-5, kernel=2, stats_rows=None):  # type: ignore[no-untyped-def]
    """conv4's fused block with the two-pass statistics on channels-last inputs too (asking for
    the statistics of all rows skips the native kernel)."""
    rows = stats_rows if x.is_contiguous() or stats_rows is not None else x.shape[0]
    return NATIVE_BLOCK(x, weight, bias, eps, kernel, stats_rows=rows)


MODES = {"channels-last native": (NATIVE_LAYOUT, NATIVE_BLOCK),
         "channels-last two-pass": (NATIVE_LAYOUT, exact_block),
         "NCHW native": (nchw_layout, NATIVE_BLOCK)}


def use(mode: str) -> None:
    conv4.cpu_layout, conv4.batch_norm_relu_pool = MODES[mode]


def meta_gradient(alg, batch) -> tuple[torch.Tensor, float]:  # type: ignore[no-untyped-def]
    alg.zero_grad(set_to_none=True)
    start = time.perf_counter()
    batching.meta_backward(alg, batch)
    seconds = time.perf_counter() - start
    return torch.cat([p.grad.reshape(-1).double() for p in alg.parameters()
                      if p.grad is not None]), seconds


def precision(alg, batch, mode: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    use(mode)
    g32, _ = meta_gradient(alg, batch)
    exact = copy.deepcopy(alg).double()
    batch64 = dataclasses.replace(batch, support_x=batch.support_x.double(),
                                  query_x=batch.query_x.double())
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        g64, _ = meta_gradient(exact, batch64)
    finally:
        torch.set_default_dtype(default)
    return {"relative_error": float((g32 - g64).norm() / g64.norm()),
            "cosine": float(F.cosine_similarity(g32, g64, dim=0))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["fomaml-omniglot-5w1s",
                                                     "protonet-omniglot-5w1s",
                                                     "maml-omniglot-5w1s",
                                                     "imaml-omniglot-5w1s"])
    ap.add_argument("--tasks", type=int, default=None, help="meta-batch (default: the preset's)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets:
        cfg = load_config(preset)
        d = cfg.data
        source = make_task_source(d.name, "train", ways=d.ways, shots=d.shots,
                                  queries=d.queries, seed=cfg.seed, root=d.root)
        batch = source.batch(0, args.tasks or cfg.train.meta_batch_size)
        alg = build_algorithm(cfg, (1, 28, 28))
        alg.train()
        row: dict[str, object] = {"preset": preset, "tasks": len(batch)}
        for mode in ("channels-last native", "NCHW native"):
            row[f"precision, {mode}"] = precision(alg, batch, mode)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.repeats + 1):  # the first round warms up
            for mode in MODES:
                use(mode)
                times[mode].append(meta_gradient(alg, batch)[1])
        base = statistics.median(times["channels-last native"][1:])
        row["seconds"] = {m: round(statistics.median(t[1:]), 4) for m, t in times.items()}
        row["ratio to default"] = {m: round(statistics.median(t[1:]) / base, 3)
                                   for m, t in times.items()}
        use("channels-last native")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
