"""Lake et al.'s 20-way one-shot runs as an evaluation of a trained run (`eval --oneshot-runs`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metazoo.algorithms.base import Algorithm
from metazoo.data.oneshot import error_rates, read_runs


def evaluate_oneshot(alg: Algorithm, runs_dir: Path, image_size: int,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """Classify every test item of every run against its 20 training images; print and return
    the error rate per run and overall."""
    runs = read_runs(runs_dir, image_size)
    ways = int(runs[0].support_x.shape[0])
    alg.check_ways(ways)
    alg.eval()

    def predict(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        grad = torch.enable_grad() if alg.adapts_with_gradients else contextlib.nullcontext()
        with grad:
            out = alg.adapt(support_x.to(device), support_y.to(device), ways=ways)(
                query_x.to(device))
        return out.detach().cpu()

    rates = error_rates(predict, runs)
    for name, rate in rates.items():
        if name != "mean":
            print(f"{name}\terror {100 * rate:.1f}%")
    print(f"overall error {100 * rates['mean']:.2f}% over {len(runs)} runs "
          f"({ways}-way one-shot)")
    return {"error_rate": rates["mean"], "runs": {k: v for k, v in rates.items() if k != "mean"},
            "ways": ways}
