"""Meta-training of a meta-RL learner (`metazoo.rl`): the `rl` task kind of `metazoo train`.

A run with `rl.family` set builds the task family (`rl.options`) and the learner
(`algorithm.name`: rl2, maml_rl), then calls `meta_update` once per step on
`train.meta_batch_size` tasks. Step `s` draws its tasks and its randomness from generators seeded
by (seed, s), and the checkpoint holds the weights and the learner's optimiser, so `--resume`
reaches the numbers of an uninterrupted run. The run folder is the supervised engine's: config
written once, atomic safetensors checkpoints, `metrics.csv` (the learner's metrics averaged over
`train.log_every` steps), `train.time_limit_min`/`time_clock`, SIGINT/SIGTERM checkpointing; at
the end the last weights are evaluated on `eval.episodes` fixed tasks (`engine.rl_eval`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metazoo import output
from metazoo.config import RunConfig
from metazoo.engine import checkpoint, lock, provenance, rl_eval
from metazoo.engine.log import MetricsLog
from metazoo.engine.resume import SavedRun, identity, normal
from metazoo.engine.resume import record as record_resume
from metazoo.engine.run import CHECKPOINT, CONFIG, resolve_device, write_json
from metazoo.engine.stopping import (
    deadline,
    stop_after_step,
    stopped_after,
)
from metazoo.errors import CheckpointError, TrainingError
from metazoo.rl.base import MetaRLAlgorithm

TRAIN_STREAM, ACT_STREAM = 0, 1  # generator streams of a step: its tasks, its other draws


def step_rngs(seed: int, step: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The generators of training step `step`: one for its tasks, one for everything else."""
    return (np.random.default_rng([seed, TRAIN_STREAM, step]),
            np.random.default_rng([seed, ACT_STREAM, step]))


def _save(path: Path, alg: MetaRLAlgorithm, step: int, meta: dict[str, Any]) -> None:
    tensors = checkpoint.model_tensors(alg.state_dict())
    opt_meta = None
    if alg.optimizer is not None:
        opt_tensors, opt_meta = checkpoint.optimizer_to_flat(alg.optimizer.state_dict())
        tensors.update(opt_tensors)
    checkpoint.save(path, tensors, {"step": step, "best": None, "optimizer": opt_meta, **meta})


def _restore(alg: MetaRLAlgorithm, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
             where: Path) -> None:
    checkpoint.load_into(alg, checkpoint.model_state(tensors), str(where))
    if alg.optimizer is not None:
        try:
            alg.optimizer.load_state_dict(checkpoint.optimizer_from_flat(tensors,
                                                                         meta["optimizer"]))
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint in '{where}' does not fit its config: "
                                  f"{str(e).splitlines()[0]}") from None


def train_rl(cfg: RunConfig, run_dir: Path, resume: bool, claimed: lock.Claim,
             origin: provenance.Origin | None = None) -> dict[str, Any]:
    """Meta-train `cfg`'s learner into `run_dir` (held by `claimed`), then evaluate it."""
    start, changed = 0, {}
    state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if resume:
        saved = SavedRun(run_dir)
        changed = saved.check(cfg)
        run_config, state, start = saved.run_config, (saved.tensors, saved.meta), saved.step
    else:
        if (run_dir / CHECKPOINT).exists():
            raise CheckpointError(f"'{run_dir}' already holds a run; pass --resume to continue "
                                  "it or --out NEW_DIR to start another")
        run_config = normal(cfg.to_dict())
    family = rl_eval.family_of(cfg)  # a bad family or option fails here, before any write
    device = resolve_device(cfg.train.device)
    alg = rl_eval.build(cfg, family).to(device)
    window: dict[str, Any] = {}
    if state is not None:
        _restore(alg, state[0], state[1], run_dir / CHECKPOINT)
        window = state[1].get("log_window") or {}
    t = cfg.train

    claimed.started = True  # from here on the run changes the folder
    (run_dir / "error.txt").unlink(missing_ok=True)
    if resume:
        if changed:
            record_resume(run_dir, start, changed)
    else:
        for stale in (rl_eval.RESULTS, "resumes.json"):
            (run_dir / stale).unlink(missing_ok=True)
        write_json(run_dir / CONFIG, run_config)
        write_json(run_dir / provenance.FILE, provenance.record(origin))
    ident = identity(run_config, cfg)
    sums: dict[str, float] = dict(window.get("sums", {}))
    steps_in_window = int(window.get("steps", 0))
    partial = steps_in_window > 0  # the checkpoint's step closed a partial window: redo its row
    window_start = time.perf_counter() - float(window.get("seconds", 0.0))
    log: MetricsLog | None = None

    def write_row(step: int, means: dict[str, float], secs: float) -> None:
        nonlocal log
        if log is None:  # columns: the learner's metrics (a resumed run keeps the file's)
            path = run_dir / "metrics.csv"
            head = path.read_text().splitlines()[:1] if resume and path.exists() else []
            fields = head[0].split(",") if head else [
                "step", "split", *sorted(means), "seconds", "tasks_per_s"]
            log = MetricsLog(run_dir, resume_step=start if resume else None,
                             drop_partial_row=partial and start < t.meta_steps,
                             tensorboard=t.tensorboard, fields=fields)
        values = {**means, "seconds": secs, "tasks_per_s":
                  steps_in_window * t.meta_batch_size / max(secs, 1e-9)}
        log.write(step, "train", **{k: v for k, v in values.items() if k in log.fields})

    def save(step: int) -> None:
        open_window = {"sums": sums, "steps": steps_in_window,
                       "seconds": time.perf_counter() - window_start}
        _save(run_dir / CHECKPOINT, alg, step, {**ident, "log_window": open_window})

    alg.train()
    out_of_time_now = deadline(t.time_limit_min, t.time_clock)
    try:
        with stop_after_step() as stop:
            for step in range(start, t.meta_steps):
                task_rng, rng = step_rngs(cfg.seed, step)
                tasks = family.sample_tasks(t.meta_batch_size, task_rng)
                metrics = alg.meta_update(family, tasks, rng)
                bad = [k for k, v in metrics.items() if not math.isfinite(v)]
                if bad or not all(bool(p.isfinite().all()) for p in alg.parameters()):
                    raise TrainingError(f"training diverged at step {step + 1}: "
                                        f"{bad[0] if bad else 'a weight'} is not finite; "
                                        "lower the learner's step size and start a new run")
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                steps_in_window += 1
                done = step + 1
                out_of_time = out_of_time_now()
                last = done == t.meta_steps or out_of_time
                if done % t.log_every == 0 or last:
                    secs = time.perf_counter() - window_start
                    means = {k: v / steps_in_window for k, v in sums.items()}
                    write_row(done, means, secs)
                    if t.progress:
                        output.info(f"step {done}/{t.meta_steps}: " + ", ".join(
                            f"{k} {v:.4f}" for k, v in means.items()))
                    if done % t.log_every == 0:
                        sums, steps_in_window = {}, 0
                        window_start = time.perf_counter()
                saved_now = done % t.checkpoint_every == 0 or last
                if saved_now or stop.signum:
                    save(done)
                if stop.signum:
                    raise stopped_after(stop.signum, done, run_dir)
                if out_of_time:
                    output.info(f"train.time_limit_min={t.time_limit_min} reached after "
                                f"{done} steps")
                    break
    finally:
        if log is not None:
            log.close()
    if not (run_dir / CHECKPOINT).exists():  # meta_steps 0: the initial weights
        save(start)
    return rl_eval.final_evaluation(cfg, run_dir, alg, family, device)
