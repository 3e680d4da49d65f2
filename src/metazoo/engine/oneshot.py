"""Lake et al.'s 20-way one-shot runs as an evaluation of a trained run (`eval --oneshot-runs`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metazoo.algorithms.base import Algorithm
from metazoo.data.oneshot import error_rates, read_runs
from metazoo.engine.run import (
    image_size,
    input_transform,
    load_run,
    resolve_device,
    write_json,
)


def evaluate_oneshot(alg: Algorithm, runs_dir: Path, image_size: int,
                     device: torch.device | str = "cpu",
                     prepare: Callable[[Tensor], Tensor] = lambda x: x) -> dict[str, Any]:
    """Classify every test item of every run against its 20 training images; print and return
    the error rate per run and overall. `prepare` is the run's input transform (normalisation)."""
    runs = read_runs(runs_dir, image_size)
    ways = int(runs[0].support_x.shape[0])
    alg.check_ways(ways)
    alg.eval()

    def predict(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        grad = torch.enable_grad() if alg.adapts_with_gradients else contextlib.nullcontext()
        with grad:
            out = alg.adapt(prepare(support_x.to(device)), support_y.to(device), ways=ways)(
                prepare(query_x.to(device)))
        return out.detach().cpu()

    rates = error_rates(predict, runs)
    for name, rate in rates.items():
        if name != "mean":
            print(f"{name}\terror {100 * rate:.1f}%")
    print(f"overall error {100 * rates['mean']:.2f}% over {len(runs)} runs "
          f"({ways}-way one-shot)")
    return {"error_rate": rates["mean"], "runs": {k: v for k, v in rates.items() if k != "mean"},
            "ways": ways}


def evaluate_oneshot_run(run_dir: str | Path, runs_dir: str | Path, *,
                         data_root: str | None = None, options: Sequence[str] | None = None
                         ) -> tuple[dict[str, Any], Path]:
    """`evaluate_oneshot` on a run folder's weights (`metazoo eval RUN_DIR --oneshot-runs DIR`);
    returns the results and the JSON file written (`oneshot_results.json` in the run folder)."""
    run = Path(run_dir)
    cfg, alg = load_run(run, data_root=data_root, algorithm_options=list(options or []))
    device = resolve_device(cfg.train.device)
    alg.to(device)
    result = evaluate_oneshot(alg, Path(runs_dir), image_size(cfg), device, input_transform(cfg))
    path = run / "oneshot_results.json"
    write_json(path, result)
    return result, path
