"""Evaluation of a meta-RL run on fixed tasks: `results.json` at the end of training and what
`metazoo eval RUN` does for a run with `rl.family` set.

The evaluation tasks of split `s` are drawn by a generator seeded with (seed, crc32(s)), so every
learner of a family meets the same tasks; each metric of the learner's `evaluate` (one value per
task) is reported as mean and 95% CI (`metazoo.metrics.mean_and_ci95`). Keys
`<metric>_after_<i>` also form a curve (`curves`: x, mean, ci95) that `metazoo plot` draws
against `i` (the learner's `spec.curve`). A family with `baselines(tasks, rng)` (bandits: random,
greedy, UCB1, Thompson, Gittins) is scored on the same tasks under `baselines`.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metazoo import output
from metazoo.config import RunConfig
from metazoo.engine import checkpoint, lock
from metazoo.engine.run import (
    CHECKPOINT,
    CONFIG,
    RESULTS,
    read_config,
    resolve_device,
    with_test_options,
    write_json,
)
from metazoo.metrics import mean_and_ci95
from metazoo.rl.base import MetaRLAlgorithm, TaskFamily, algorithm_spec, build_algorithm
from metazoo.rl.base import make_family as _make

CURVE = re.compile(r"^(.+)_after_(\d+)$")
EVAL_STREAM = 2  # the generator stream of the evaluation's own draws (actions, rewards)


def family_of(cfg: RunConfig) -> TaskFamily:
    """The run's task family (`rl.family` with `rl.options`)."""
    assert cfg.rl.family is not None
    return _make(cfg.rl.family, **cfg.rl.options)


def build(cfg: RunConfig, family: TaskFamily) -> MetaRLAlgorithm:
    """The run's learner with initial weights drawn from `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    return build_algorithm(cfg.algorithm.name, family, cfg.algorithm.config)


def eval_rngs(seed: int, split: str) -> tuple[np.random.Generator, np.random.Generator]:
    """The generators of the evaluation on `split`: its tasks, and its other draws."""
    code = zlib.crc32(split.encode())
    return (np.random.default_rng([seed, code]),
            np.random.default_rng([seed, code, EVAL_STREAM]))


def summary(per_task: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """`{metric: {"mean": m, "ci95": h}}` of per-task values."""
    out = {}
    for k, v in per_task.items():
        m, h = mean_and_ci95(v)
        out[k] = {"mean": m, "ci95": h}
    return out


def curves(stats: dict[str, dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """The `<metric>_after_<i>` entries of `stats` as curves `{metric: {x, mean, ci95}}`."""
    found: dict[str, list[tuple[int, float, float]]] = {}
    for key, s in stats.items():
        m = CURVE.match(key)
        if m:
            found.setdefault(m.group(1), []).append((int(m.group(2)), s["mean"], s["ci95"]))
    return {k: {"x": [float(p[0]) for p in sorted(v)], "mean": [p[1] for p in sorted(v)],
                "ci95": [p[2] for p in sorted(v)]} for k, v in found.items()}


def evaluate_tasks(cfg: RunConfig, alg: MetaRLAlgorithm, family: TaskFamily) -> dict[str, Any]:
    """The learner (and the family's baselines) on `eval.episodes` tasks of `eval.split`."""
    task_rng, rng = eval_rngs(cfg.seed, cfg.eval.split)
    tasks = family.sample_tasks(cfg.eval.episodes, task_rng)
    start = time.perf_counter()
    alg.eval()
    stats = summary(alg.evaluate(family, tasks, rng))
    out: dict[str, Any] = {
        "algorithm": cfg.algorithm.name, "family": cfg.rl.family, "options": cfg.rl.options,
        "split": cfg.eval.split, "tasks": cfg.eval.episodes, "metrics": stats,
        "curves": curves(stats), "curve_axis": algorithm_spec(cfg.algorithm.name).curve,
        "seconds": time.perf_counter() - start}
    references = getattr(family, "baselines", None)
    if references is not None:
        out["baselines"] = {name: summary(v) for name, v in
                            references(tasks, eval_rngs(cfg.seed, cfg.eval.split)[1]).items()}
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """The terminal lines of a result: the learner's metrics, then each baseline's."""
    def show(stats: dict[str, dict[str, float]]) -> str:
        points = {m.group(1) for k in stats if (m := CURVE.match(k))}
        long = {p for p in points if sum(bool(CURVE.match(k)) and k.startswith(f"{p}_after_")
                                         for k in stats) > 5}  # shown by `metazoo plot`
        return ", ".join(f"{k} {s['mean']:.4f} ± {s['ci95']:.4f}" for k, s in stats.items()
                         if not ((m := CURVE.match(k)) and m.group(1) in long))

    head = (f"{result['split']} ({result['tasks']} tasks of {result['family']}): "
            f"{show(result['metrics'])}")
    return [head, *(f"  {name}: {show(s)}" for name, s in result.get("baselines", {}).items())]


def final_evaluation(cfg: RunConfig, run_dir: Path, alg: MetaRLAlgorithm, family: TaskFamily,
                     device: torch.device) -> dict[str, Any]:
    """Evaluate the last weights; write `results.json`."""
    out = {**evaluate_tasks(cfg, alg, family), "weights": "last", "device": str(device)}
    write_json(run_dir / RESULTS, out)
    for line in lines(out):
        output.result(line)
    return out


def is_rl_run(run_dir: str | Path) -> bool:
    """Whether a run folder's `config.json` names a meta-RL task family (False where there is
    none to read: the other commands' checks then say what is wrong)."""
    try:
        saved = json.loads((Path(run_dir) / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    rl = saved.get("rl") if isinstance(saved, dict) else None
    return isinstance(rl, dict) and rl.get("family") is not None


def evaluate_rl_run(run_dir: str | Path, *, episodes: int | None = None,
                    split: str | None = None, options: list[str] | None = None
                    ) -> tuple[dict[str, Any], Path]:
    """What `metazoo eval RUN` does for a meta-RL run: its weights on `episodes` tasks of
    `split` (default: the run's `eval` section), with test-time `options` (`algorithm.KEY=VALUE`,
    e.g. MAML-RL's `eval_inner_lr`: the paper tunes its baselines' step size); written to
    `results.eval.json` (or `results.<what differs>.json`)."""
    from metazoo.engine.evaluate import results_name

    run = Path(run_dir)
    if (busy := lock.holder(run)) is not None:
        raise lock.RunFolderBusy(f"'{run}' is being trained by {lock.describe(busy)}; "
                                 "evaluate it once that run has ended")
    cfg = with_test_options(read_config(run), options)
    ev = replace(cfg.eval, episodes=cfg.eval.episodes if episodes is None else episodes,
                 split=cfg.eval.split if split is None else split)
    differs = [f"{k}={getattr(ev, k)}" for k in ("split", "episodes")
               if getattr(ev, k) != getattr(cfg.eval, k)] + list(options or [])
    cfg = replace(cfg, eval=ev)
    cfg.validate()
    family = family_of(cfg)
    device = resolve_device(cfg.train.device)
    alg = build(cfg, family)
    tensors, meta = checkpoint.load(run / CHECKPOINT)
    checkpoint.load_into(alg, checkpoint.model_state(tensors), str(run / CHECKPOINT))
    out = {**evaluate_tasks(cfg, alg.to(device), family), "weights": "last",
           "step": meta.get("step"), "device": str(device)}
    path = run / results_name(differs)
    write_json(path, out)
    return out, path
