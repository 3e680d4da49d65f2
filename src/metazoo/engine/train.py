"""The meta-training loop: Adam or SGD on the meta-parameters, validation, best weights, resume.

The loop knows nothing about algorithms beyond `meta_loss`. Step `s` trains on batch `s` of the
training task source, a pure function of (seed, split, s), so `--resume` from a checkpoint at step
`s` continues with the same episodes and reaches the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metazoo import batching
from metazoo.algorithms.base import Algorithm
from metazoo.allocator import tune_allocator
from metazoo.config import RunConfig, TrainConfig
from metazoo.engine import checkpoint
from metazoo.engine.evaluate import EvalResult, batch_norm_mode, evaluate
from metazoo.engine.log import MetricsLog
from metazoo.engine.run import (
    BEST,
    CHECKPOINT,
    CONFIG,
    RESULTS,
    build_algorithm,
    read_config,
    resolve_device,
    resolved,
    task_source,
    write_json,
)
from metazoo.errors import CheckpointError


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of `outer_lr` at `step` for the configured schedule."""
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.meta_steps) / max(cfg.meta_steps, 1)))
    if cfg.schedule == "step":
        return cfg.lr_gamma ** (step // cfg.lr_step_every)
    if cfg.schedule == "linear":  # Reptile's annealing of the meta step size (Nichol et al. 2018)
        return max(0.0, 1.0 - step / max(cfg.meta_steps, 1))
    return 1.0


def make_optimizer(alg: Algorithm, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The meta-optimiser of `cfg.optimizer` over the meta-parameters."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(alg.parameters(), lr=cfg.outer_lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.Adam(alg.parameters(), lr=cfg.outer_lr, weight_decay=cfg.weight_decay)


def _better(result: EvalResult, best: float | None) -> bool:
    if best is None:
        return True
    return result.mean < best if result.metric == "mse" else result.mean > best


def _save_state(path: Path, alg: Algorithm, opt: torch.optim.Optimizer, step: int,
                best: float | None, shape: tuple[int, ...]) -> None:
    tensors = checkpoint.model_tensors(alg.state_dict())
    opt_tensors, opt_meta = checkpoint.optimizer_to_flat(opt.state_dict())
    tensors.update(opt_tensors)
    checkpoint.save(path, tensors, {"step": step, "best": best, "optimizer": opt_meta,
                                    "input_shape": list(shape)})


def _save_best(path: Path, alg: Algorithm, step: int, result: EvalResult,
               shape: tuple[int, ...]) -> None:
    tensors = checkpoint.model_tensors(alg.state_dict())
    checkpoint.save(path, tensors, {"step": step, "val": result.to_json(),
                                    "input_shape": list(shape)})


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Meta-train per `cfg` into `run_dir`, then evaluate on `cfg.eval.split`; returns results.

    With `resume=True` the run continues from `run_dir/checkpoint.safetensors` (its saved config
    is used; `cfg` may only change `train.meta_steps` and evaluation settings).
    """
    tune_allocator()
    run_dir.mkdir(parents=True, exist_ok=True)
    start_step, best = 0, None
    state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if resume:
        saved = read_config(run_dir)
        cfg = replace(saved, train=replace(saved.train, meta_steps=cfg.train.meta_steps),
                      eval=cfg.eval)
        state = checkpoint.load(run_dir / CHECKPOINT)
        start_step, best = int(state[1]["step"]), state[1]["best"]
    cfg = resolved(cfg)
    write_json(run_dir / CONFIG, cfg.to_dict())

    device = resolve_device(cfg.train.device)
    train_src = task_source(cfg, "train", training=True)  # the train split, loaded once
    shape = tuple(state[1]["input_shape"]) if state else train_src.input_shape
    alg = build_algorithm(cfg, shape).to(device)
    opt = make_optimizer(alg, cfg.train)
    if state is not None:
        tensors, meta = state
        try:
            alg.load_state_dict(checkpoint.model_state(tensors))
            opt.load_state_dict(checkpoint.optimizer_from_flat(tensors, meta["optimizer"]))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint in '{run_dir}' does not fit its config: "
                                  f"{str(e).splitlines()[0]}") from None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg.train, s),
                                              last_epoch=start_step - 1)
    if start_step:  # LambdaLR with last_epoch >= 0 needs initial_lr; recompute the current lr
        for group in opt.param_groups:
            group["lr"] = cfg.train.outer_lr * lr_factor(cfg.train, start_step)

    val_src = (task_source(cfg, "val", training=False)
               if cfg.eval.every and cfg.eval.val_episodes else None)
    log = MetricsLog(run_dir, resume_step=start_step if resume else None,
                     tensorboard=cfg.train.tensorboard)
    t = cfg.train
    sums: dict[str, float] = defaultdict(float)
    window_start, window_steps = time.perf_counter(), 0
    bar = tqdm(range(start_step, t.meta_steps), initial=start_step, total=t.meta_steps,
               disable=not t.progress, desc="meta-train", unit="step", dynamic_ncols=True)
    alg.train()
    started = time.perf_counter()
    for step in bar:
        batch = train_src.batch(step, t.meta_batch_size).to(device)
        opt.zero_grad(set_to_none=True)
        alg.begin_step(step, t.meta_steps)  # schedules inside the algorithm (MAML++)
        loss, metrics = batching.meta_backward(alg, batch)  # the strategy measured fastest
        alg.end_step(batch)  # state carried between steps (Reptile's Adam, MAML++'s statistics)
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(alg.parameters(), t.grad_clip)
        opt.step()
        sched.step()
        sums["loss"] += float(loss.detach())
        for k, v in metrics.items():
            sums[k] += float(v.detach())
        window_steps += 1
        done = step + 1
        out_of_time = bool(t.time_limit_min) and (
            time.perf_counter() - started > 60 * (t.time_limit_min or 0))
        last = done == t.meta_steps or out_of_time
        if done % t.log_every == 0 or last:
            secs = time.perf_counter() - window_start
            means = {k: v / window_steps for k, v in sums.items()}
            eps = window_steps * t.meta_batch_size / max(secs, 1e-9)
            log.write(done, "train", lr=opt.param_groups[0]["lr"], episodes_per_s=eps,
                      seconds=secs, **means)
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in means.items()}, "eps/s": f"{eps:.1f}"})
            sums.clear()
            window_start, window_steps = time.perf_counter(), 0
        if val_src is not None and (done % cfg.eval.every == 0 or last):
            result = evaluate(alg, val_src, episodes=cfg.eval.val_episodes,
                              batch_size=cfg.eval.batch_size, split="val", device=device)
            log.write(done, "val", seconds=result.seconds, ci95=result.ci95,
                      **{"acc" if result.metric == "accuracy" else "mse": result.mean})
            if _better(result, best):
                best = result.mean
                _save_best(run_dir / BEST, alg, done, result, shape)
            _save_state(run_dir / CHECKPOINT, alg, opt, done, best, shape)
        elif done % t.checkpoint_every == 0 or last:
            _save_state(run_dir / CHECKPOINT, alg, opt, done, best, shape)
        if out_of_time:
            print(f"train.time_limit_min={t.time_limit_min} reached after {done} steps")
            break
    bar.close()
    log.close()
    if start_step == t.meta_steps == 0 or not (run_dir / CHECKPOINT).exists():
        _save_state(run_dir / CHECKPOINT, alg, opt, t.meta_steps, best, shape)
    return final_evaluation(cfg, run_dir, alg, device)


def final_evaluation(cfg: RunConfig, run_dir: Path, alg: Algorithm,
                     device: torch.device) -> dict[str, Any]:
    """Test the best weights (or the last, without validation); write `results.json`."""
    weights = "last"
    if (run_dir / BEST).exists():
        tensors, _ = checkpoint.load(run_dir / BEST)
        alg.load_state_dict(checkpoint.model_state(tensors))
        weights = "best"
    src = task_source(cfg, cfg.eval.split, training=False)
    result = evaluate(alg, src, episodes=cfg.eval.episodes, batch_size=cfg.eval.batch_size,
                      split=cfg.eval.split, device=device)
    out = {**result.to_json(), "weights": weights, "algorithm": cfg.algorithm.name,
           "dataset": cfg.data.name, "batch_norm": batch_norm_mode(alg), "device": str(device)}
    write_json(run_dir / RESULTS, out)
    print(result.line())
    return out
