"""Evaluation on fixed episodes: mean accuracy (or MSE) and its 95% confidence interval, with
NLL, Brier score and calibration error (`metazoo.engine.scoring`).

Episode `e` of a split is the same for every method and every batch size (episodes are pure
functions of (seed, split, e)), so numbers from different runs are comparable. `evaluate_run` is
what `metazoo eval RUN_DIR` does, from the Python API.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from metazoo.algorithms.base import Algorithm
from metazoo.engine import distributed
from metazoo.engine.distributed import SINGLE, World, episode_share
from metazoo.engine.run import load_run, resolve_device, task_source, write_json
from metazoo.engine.scoring import Scores
from metazoo.errors import ConfigError
from metazoo.functional import BatchNorm
from metazoo.tasks import TaskBatch, TaskSource


@dataclass(frozen=True)
class EvalResult:
    """Mean of the per-episode metric over `episodes` episodes, with its 95% CI half-width, and
    how far the predictions can be trusted (`metazoo.engine.scoring`): NLL, Brier and ECE for
    classifiers; predictive NLL and interval coverage for probabilistic regression."""

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
    nll: float | None = None  # classifiers: NLL of the query labels; regression: Gaussian NLL
    nll_ci95: float | None = None
    brier: float | None = None  # classifiers
    brier_ci95: float | None = None
    ece: float | None = None  # classifiers: 15 bins over all pooled query predictions
    reliability: dict[str, Any] | None = None  # the ECE's bins, for the reliability diagram
    coverage95_truth: float | None = None  # sampled functions: true values inside the 95% band

    def line(self) -> str:
        """One line for the terminal, e.g. `test accuracy 0.9712 ± 0.0031 (600 episodes, ...)`."""
        extra = [f"NLL {self.nll:.4f}"] if self.nll is not None else []
        if self.ece is not None and self.brier is not None:
            extra += [f"ECE {self.ece:.4f}", f"Brier {self.brier:.4f}"]
        if self.coverage95 is not None:
            extra.append(f"95% interval holds {self.coverage95:.3f} of targets")
        if self.coverage95_truth is not None:
            extra.append(f"sampled 95% band holds {self.coverage95_truth:.3f} of the true function")
        shape = f"{self.shots}-shot" if self.metric == "mse" else \
            f"{self.ways}-way {self.shots}-shot"
        return (f"{self.split} {self.metric} {self.mean:.4f} ± {self.ci95:.4f} "
                f"({self.episodes} {'tasks' if self.metric == 'mse' else 'episodes'}, {shape} "
                f"{self.queries}-query, {self.seconds:.1f} s{''.join(', ' + e for e in extra)})")

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        d[self.metric] = d.pop("mean")
        return d


def episode_batches(source: TaskSource, episodes: int, batch_size: int) -> Iterator[TaskBatch]:
    """Episodes `0..episodes-1` of `source` in order, `batch_size` at a time (the last batches
    smaller)."""
    for index, size in episode_share(episodes, batch_size):
        yield source.batch(index, size)


def evaluate(algorithm: Algorithm, source: TaskSource, *, episodes: int, batch_size: int = 16,
             split: str = "test", device: torch.device | str = "cpu",
             progress: bool = False, world: World = SINGLE) -> EvalResult:
    """Evaluate `algorithm` on episodes `0..episodes-1` of `source` (`progress`: a bar of
    episodes on stderr, when that is a terminal; `world`: each process scores its share of the
    batches, the per-episode values are gathered in episode order)."""
    was_training = algorithm.training
    algorithm.eval()
    scores, share = Scores(), episode_share(episodes, batch_size, world)
    truth = getattr(source, "truth", None)
    start = time.perf_counter()
    grad = contextlib.nullcontext() if algorithm.adapts_with_gradients else torch.no_grad()
    try:
        with grad:
            bar = tqdm(total=sum(n for _, n in share), desc=f"{split} episodes", unit="episode",
                       leave=False, disable=not (progress and sys.stderr.isatty()),
                       dynamic_ncols=True)
            with bar:
                for index, size in share:
                    b = source.batch(index, size).to(device)
                    out = algorithm.predict(b.support_x, b.support_y, b.query_x, ways=b.ways)
                    scores.add(algorithm, b, out.detach(), truth, index * size)
                    bar.update(len(b))
    finally:
        algorithm.train(was_training)
    s = world.gather_scores(scores).summary()
    metric = "mse" if "mse" in s else "accuracy"
    nll = "nll" if "nll" in s else "predictive_nll"
    return EvalResult(metric, s[metric], s[f"{metric}_ci95"], episodes, source.ways,
                      source.shots, source.queries, split, time.perf_counter() - start,
                      coverage95=s.get("coverage95"), nll=s.get(nll),
                      nll_ci95=s.get(f"{nll}_ci95"), brier=s.get("brier"),
                      brier_ci95=s.get("brier_ci95"), ece=s.get("ece"),
                      reliability=s.get("reliability"),
                      coverage95_truth=s.get("coverage95_truth"))


def batch_norm_mode(alg: Algorithm) -> str:
    """How batch norm used statistics when the number was produced (recorded with results);
    "none" for a network without batch norm (an MLP)."""
    if not any(isinstance(m, nn.modules.batchnorm._NormBase | BatchNorm)
               for m in alg.modules()):
        return "none"
    if getattr(alg.config, "eval_bn", "batch") == "running":  # MAML++ with per-step statistics
        return "running"
    return str(getattr(alg.config, "bn_mode", "transductive"))


def results_name(differences: Sequence[str] | None = None) -> str:
    """The file `metazoo eval` writes, named by what differs from the training run's own test
    (`split=val`, `ways=20`, `algorithm.eval_inner_steps=1` ...), e.g.
    `results.ways=20,eval_inner_steps=1.json`; `results.eval.json` when nothing differs. Never
    the training run's `results.json`, which `metazoo train` alone writes."""
    if not differences:
        return "results.eval.json"
    return "results.{}.json".format(",".join(s.removeprefix("algorithm.") for s in differences))


def evaluate_run(run_dir: str | Path, *, episodes: int | None = None, split: str | None = None,
                 ways: int | None = None, shots: int | None = None, queries: int | None = None,
                 data_root: str | None = None, options: Sequence[str] | None = None,
                 device: str | None = None) -> tuple[EvalResult, Path]:
    """Evaluate a run folder's weights on fixed episodes: what `metazoo eval RUN_DIR` does.

    Settings left at None keep the run's `eval` section (`device`: its `train.device`).
    `options` (`algorithm.KEY=VALUE`) change test-time algorithm options only (see
    `load_run`). Under torchrun the episodes are split over the processes; process 0 writes.

    Returns:
        The result and the JSON file written in the run folder (`results_name`: the settings
        that differ from the run's `eval` section, then `options`).
    """
    run = Path(run_dir)
    cfg, alg = load_run(run, data_root=data_root, algorithm_options=list(options or []))
    resolve_device(device or cfg.train.device)  # refused before any work
    e = cfg.eval
    asked: dict[str, Any] = {"episodes": episodes, "split": split, "ways": ways, "shots": shots,
                             "queries": queries}
    ev = replace(e, **{k: v for k, v in asked.items() if v is not None})
    differs = [f"{k}={getattr(ev, k)}" for k in ("split", "ways", "shots", "queries", "episodes")
               if getattr(ev, k) != getattr(e, k)]
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
    with distributed.session(device or cfg.train.device) as world:
        result = evaluate(alg.to(world.device), source, episodes=ev.episodes,
                          batch_size=ev.batch_size, split=ev.split, device=world.device,
                          progress=True, world=world)
    path = run / results_name([*differs, *(options or [])])
    if world.writes:
        write_json(path, {**result.to_json(), "algorithm": cfg.algorithm.name,
                          "options": list(options or []), "dataset": cfg.data.name,
                          "batch_norm": batch_norm_mode(alg), "device": str(world.device)})
    return result, path
