"""What evaluation measures of each batch of test episodes, pooled into the reported numbers.

Classification: accuracy, NLL and Brier score per episode (mean ± 95% CI over episodes), and the
expected calibration error over all pooled query predictions (`metazoo.calibration`), for every
method, from `softmax` of its output. Regression: MSE per episode; for a method with
`predictive(support_x, support_y, query_x) -> (mean, cov)` (ALPaCA, the Bayesian family) also the
Gaussian predictive NLL and the share of noisy query targets inside its 95% interval; for a
method with `function_samples(support_x, support_y, query_x, samples)` and a task family that
knows its noise-free functions (`truth(task)`), the share of true function values inside the
sampled functions' central 95% band.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from metazoo import calibration
from metazoo.metrics import accuracy, mean_and_ci95, mse
from metazoo.tasks import TaskBatch

FUNCTION_SAMPLES = 100
"""Sampled functions per test task for the coverage of the true function."""


class Scores:
    """Per-episode values by name, and the pooled reliability bins of a classifier."""

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor]] = {}
        self.reliability: calibration.Reliability | None = None

    def put(self, name: str, per_task: Tensor) -> None:
        self.values.setdefault(name, []).append(per_task.detach().double().cpu())

    def add(self, algorithm: Any, batch: TaskBatch, out: Tensor,
            truth: Callable[[int], Callable[[Tensor], Tensor]] | None, first_task: int) -> None:
        """Score `out` (the predictions for `batch`, on its device) of tasks `first_task, ...`."""
        if batch.kind != "regression":
            self.put("accuracy", accuracy(out, batch.query_y))
            self.put("nll", calibration.nll(out, batch.query_y))
            self.put("brier", calibration.brier(out, batch.query_y))
            self.reliability = self.reliability or calibration.Reliability()
            self.reliability.add(out, batch.query_y)
            return
        self.put("mse", mse(out, batch.query_y))
        predictive = getattr(algorithm, "predictive", None)
        sampler = getattr(algorithm, "function_samples", None)
        for i in range(len(batch)):
            sx, sy, qx, qy = batch.support_x[i], batch.support_y[i], batch.query_x[i], \
                batch.query_y[i]
            if predictive is not None:
                mean, cov = predictive(sx, sy, qx)
                self.put("predictive_nll", calibration.gaussian_nll(mean, cov, qy)[None])
                self.put("coverage95", calibration.inside_interval(
                    *calibration.gaussian_interval(mean, cov), qy)[None])
            if sampler is not None and truth is not None:
                low, high = calibration.sample_interval(sampler(sx, sy, qx, FUNCTION_SAMPLES))
                true = truth(first_task + i)(qx.cpu()).to(low)
                self.put("coverage95_truth", calibration.inside_interval(low, high, true)[None])

    def summary(self) -> dict[str, Any]:
        """`{name: mean, name_ci95: half-width}` of each per-episode value; `ece` and
        `reliability` for a classifier."""
        out: dict[str, Any] = {}
        for name, parts in self.values.items():
            mean, ci = mean_and_ci95(torch.cat(parts))
            out[name], out[f"{name}_ci95"] = mean, ci
        if self.reliability is not None:
            out["ece"] = self.reliability.ece()
            out["reliability"] = self.reliability.to_json()
        return out
