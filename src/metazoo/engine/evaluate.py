"""Evaluation on fixed episodes: mean accuracy (or MSE) and its 95% confidence interval.

Episode `e` of a split is the same for every method and every batch size (episodes are pure
functions of (seed, split, e)), so numbers from different runs are comparable. `evaluate_run` is
what `metazoo eval RUN_DIR` does, from the Python API.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from metazoo.algorithms.base import Algorithm
from metazoo.engine.run import RESULTS, load_run, resolve_device, task_source, write_json
from metazoo.errors import ConfigError
from metazoo.metrics import accuracy, mean_and_ci95, mse
from metazoo.tasks import TaskBatch, TaskSource


@dataclass(frozen=True)
class EvalResult:
    """Mean of the per-episode metric over `episodes` episodes, with its 95% CI half-width."""

    metric: str  # "accuracy" or "mse"
    mean: float
    ci95: float
    episodes: int
    ways: int
    shots: int
    queries: int
    split: str
    seconds: float
    coverage95: float | None = None  # probabilistic regression: targets inside the 95% interval

    def line(self) -> str:
        """One line for the terminal, e.g. `test accuracy 0.9712 ± 0.0031 (600 episodes, ...)`."""
        coverage = "" if self.coverage95 is None else \
            f", 95% interval holds {self.coverage95:.3f} of targets"
        return (f"{self.split} {self.metric} {self.mean:.4f} ± {self.ci95:.4f} "
                f"({self.episodes} episodes, {self.ways}-way {self.shots}-shot "
                f"{self.queries}-query, {self.seconds:.1f} s{coverage})")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d[self.metric] = d.pop("mean")
        if self.coverage95 is None:
            del d["coverage95"]
        return d


def interval_coverage(predictive: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                      batch: TaskBatch) -> torch.Tensor:
    """Per task of `batch`: the fraction of query targets inside the predictive distribution's
    central 95% interval (mean ± 1.96 sd per output), for methods with `predictive` (ALPaCA).
    Calibrated uncertainty gives about 0.95."""
    out = []
    for i in range(len(batch)):
        mean, cov = predictive(batch.support_x[i], batch.support_y[i], batch.query_x[i])
        sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
        out.append(((batch.query_y[i] - mean).abs() <= 1.96 * sd).float().mean())
    return torch.stack(out)


def episode_batches(source: TaskSource, episodes: int, batch_size: int) -> Iterator[TaskBatch]:
    """Episodes `0..episodes-1` of `source`, `batch_size` at a time (the last batches smaller)."""
    full = episodes // batch_size
    for index in range(full):
        yield source.batch(index, batch_size)
    for e in range(full * batch_size, episodes):
        yield source.batch(e, 1)


def evaluate(algorithm: Algorithm, source: TaskSource, *, episodes: int, batch_size: int = 16,
             split: str = "test", device: torch.device | str = "cpu") -> EvalResult:
    """Evaluate `algorithm` on episodes `0..episodes-1` of `source`."""
    was_training = algorithm.training
    algorithm.eval()
    values: list[torch.Tensor] = []
    coverage: list[torch.Tensor] = []
    predictive = getattr(algorithm, "predictive", None)
    metric = "accuracy"
    start = time.perf_counter()
    grad = contextlib.nullcontext() if algorithm.adapts_with_gradients else torch.no_grad()
    try:
        with grad:
            for batch in episode_batches(source, episodes, batch_size):
                b = batch.to(device)
                out = algorithm.predict(b.support_x, b.support_y, b.query_x, ways=b.ways)
                out = out.detach()
                if b.kind == "regression":
                    metric = "mse"
                    values.append(mse(out, b.query_y).cpu())
                    if predictive is not None:
                        coverage.append(interval_coverage(predictive, b).cpu())
                else:
                    values.append(accuracy(out, b.query_y).cpu())
    finally:
        algorithm.train(was_training)
    mean, ci = mean_and_ci95(torch.cat(values))
    covered = float(torch.cat(coverage).mean()) if coverage else None
    return EvalResult(metric, mean, ci, episodes, source.ways, source.shots, source.queries, split,
                      time.perf_counter() - start, covered)


def batch_norm_mode(alg: Algorithm) -> str:
    """How batch norm used statistics when the number was produced (recorded with results)."""
    if getattr(alg.config, "eval_bn", "batch") == "running":  # MAML++ with per-step statistics
        return "running"
    return str(getattr(alg.config, "bn_mode", "transductive"))


def results_name(options: Sequence[str] | None = None) -> str:
    """`results.json` for the run's own settings; `results.<options>.json` (e.g.
    `results.eval_inner_steps=1.json`) for other test-time algorithm options."""
    if not options:
        return RESULTS
    return "results.{}.json".format(",".join(s.removeprefix("algorithm.") for s in options))


def evaluate_run(run_dir: str | Path, *, episodes: int | None = None, split: str | None = None,
                 ways: int | None = None, shots: int | None = None, queries: int | None = None,
                 data_root: str | None = None, options: Sequence[str] | None = None
                 ) -> tuple[EvalResult, Path]:
    """Evaluate a run folder's weights on fixed episodes: what `metazoo eval RUN_DIR` does.

    Settings left at None keep the run's `eval` section. `options` (`algorithm.KEY=VALUE`)
    change test-time algorithm options only (see `load_run`).

    Returns:
        The result and the JSON file written in the run folder (`results_name(options)`).
    """
    run = Path(run_dir)
    cfg, alg = load_run(run, data_root=data_root, algorithm_options=list(options or []))
    device = resolve_device(cfg.train.device)
    alg.to(device)
    e = cfg.eval
    asked: dict[str, Any] = {"episodes": episodes, "split": split, "ways": ways, "shots": shots,
                             "queries": queries}
    ev = replace(e, **{k: v for k, v in asked.items() if v is not None})
    cfg = replace(cfg, eval=ev)
    cfg.validate()  # --episodes -3 or --ways 0 mean nothing: refused before any work
    alg.check_ways(ev.ways)
    source = task_source(cfg, ev.split, training=False)
    trained = tuple(getattr(alg.backbone, "input_shape", source.input_shape))
    if tuple(source.input_shape) != trained:
        raise ConfigError(f"the run was trained on inputs of shape {trained} but "
                          f"{cfg.data.name}/{ev.split} gives {tuple(source.input_shape)} "
                          "(colour against grey, or another image size); evaluate it on data "
                          "like its training data")
    result = evaluate(alg, source, episodes=ev.episodes, batch_size=ev.batch_size,
                      split=ev.split, device=device)
    path = run / results_name(options)
    write_json(path, {**result.to_json(), "algorithm": cfg.algorithm.name,
                      "options": list(options or []), "dataset": cfg.data.name,
                      "batch_norm": batch_norm_mode(alg), "device": str(device)})
    return result, path
