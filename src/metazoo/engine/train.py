"""The meta-training loop: Adam or SGD on the meta-parameters, validation, best weights, resume.

The loop knows nothing about algorithms beyond `meta_loss`. Step `s` trains on batch `s` of the
training task source, a pure function of (seed, split, s), so `--resume` from a checkpoint at step
`s` continues with the same episodes and reaches the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metazoo import atomic, batching, output
from metazoo.algorithms.base import Algorithm
from metazoo.allocator import tune_allocator
from metazoo.config import RunConfig, TrainConfig
from metazoo.engine import checkpoint, distributed, lock, provenance, sharding
from metazoo.engine.evaluate import EvalResult, batch_norm_mode, evaluate
from metazoo.engine.log import MetricsLog
from metazoo.engine.offset_eval import stream_source, validate_stream
from metazoo.engine.precision import Precision
from metazoo.engine.resume import RESUMES, SavedRun, identity, normal
from metazoo.engine.resume import record as record_resume
from metazoo.engine.run import (
    BEST,
    CHECKPOINT,
    CONFIG,
    RESULTS,
    build_algorithm,
    resolved,
    task_source,
    write_json,
)
from metazoo.engine.stopping import (
    Interrupted,
    deadline,
    signal_name,
    stop_after_step,
    stopped_after,
)
from metazoo.errors import CheckpointError, MetazooError, TrainingError
from metazoo.models.pretrained import FILE as PRETRAINED
from metazoo.tasks import TaskSource

RNG = "rng.torch"  # the CPU generator's state, in a checkpoint


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
                best: float | None, shape: tuple[int, ...],
                extra: dict[str, Any] | None = None) -> None:
    tensors = checkpoint.model_tensors(alg.state_dict())
    opt_tensors, opt_meta = checkpoint.optimizer_to_flat(opt.state_dict())
    tensors.update(opt_tensors)
    tensors[RNG] = torch.get_rng_state()  # what dropout draws next, so a resume draws the same
    checkpoint.save(path, tensors, {"step": step, "best": best, "optimizer": opt_meta,
                                    "input_shape": list(shape), **(extra or {})})


def _save_best(path: Path, alg: Algorithm, step: int, result: EvalResult,
               shape: tuple[int, ...]) -> None:
    tensors = checkpoint.model_tensors(alg.state_dict())
    checkpoint.save(path, tensors, {"step": step, "val": result.to_json(),
                                    "input_shape": list(shape)})


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False,
          origin: provenance.Origin | None = None, test: bool = True,
          on_validation: Callable[[int, EvalResult], None] | None = None,
          algorithm: Algorithm | None = None) -> dict[str, Any]:
    """Meta-train per `cfg` into `run_dir`, then evaluate on `cfg.eval.split`; returns results.

    The run holds `run_dir` for its life (`engine.lock`): another run there is refused. A start
    that fails (bad config, missing data, Ctrl-C) leaves the folder as it was. With
    `resume=True` the run continues from `run_dir/checkpoint.safetensors` with the config it was
    trained with; `cfg` may differ from it only in `train.meta_steps` (to extend the run) and
    evaluation settings (see `engine.resume`). SIGINT and SIGTERM stop after the current step
    with a checkpoint (`engine.stopping`); `Interrupted` says what the folder holds. A new run
    writes `origin` (preset, config file, paper entry) and the code's commit to
    `provenance.json` (`engine.provenance`). `test=False` (a tuner's trial) builds no test
    episodes and skips the final evaluation (no `results.json`): it returns `{"best_val": best
    validation mean}`. `on_validation(step, result)` is called after each validation and its
    checkpoint; what it raises (a pruned trial) ends the run there. `algorithm` (from
    `metazoo.Trainer`) is trained as given instead of one built from `cfg`, which describes it.
    """
    tune_allocator()
    run_dir = Path(run_dir)
    # under torchrun: one process of several (engine.distributed); process 0 holds the folder
    with distributed.session(cfg.train.device) as world, \
            distributed.claim(run_dir, world) as claimed:
        try:
            if cfg.rl.family is not None:  # the `rl` task kind: a meta-RL learner
                from metazoo.engine.rl import train_rl

                world.require_single("meta-RL training")
                return train_rl(cfg, run_dir, resume, claimed, origin)
            return _train(cfg, run_dir, resume, claimed, origin, test, on_validation, world,
                          algorithm)
        except MetazooError as e:  # a run that started says in its folder why it stopped
            if claimed.started and world.writes:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
                atomic.write_text(run_dir / ERROR, f"{stamp}: {e}\n")
            raise
        except KeyboardInterrupt as e:
            if isinstance(e, Interrupted) and e.message:
                raise
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            raise Interrupted(signum, _interrupted(run_dir, signum, claimed.started)) from None


def _interrupted(run_dir: Path, signum: int, started: bool) -> str:
    """What a run stopped by `signum` leaves, in one line."""
    name = signal_name(signum)
    if not started:
        return f"{name} before the run started; '{run_dir}' is as it was"
    try:
        step = checkpoint.read_meta(run_dir / CHECKPOINT)["step"]
    except (CheckpointError, KeyError):
        return (f"{name} before the first checkpoint: nothing to resume in '{run_dir}'; "
                "start the run again (without --resume)")
    return (f"{name}: the checkpoint at step {step} in '{run_dir}' is intact; continue with "
            f"metazoo train --out {run_dir} --resume")


def _finite(alg: Algorithm) -> bool:
    """Whether every meta-parameter is finite (one reduction per tensor, one sync)."""
    sums = [p.detach().sum() for p in alg.parameters()]
    return bool(torch.stack(sums).isfinite().all()) if sums else True


def _diverged(run_dir: Path, step: int, what: str) -> str:
    """The one-line error of a run whose training diverged at `step`."""
    try:
        last = checkpoint.read_meta(run_dir / CHECKPOINT)["step"]
        kept = f"the checkpoint at step {last} is kept"
    except (CheckpointError, KeyError):
        kept = "no checkpoint was written"
    return (f"training diverged at step {step}: {what}; {kept}; lower train.outer_lr or set "
            "train.grad_clip, then start a new run")


ERROR = "error.txt"
"""Written when a started run stops on an error (divergence, a data fault mid-run): when and
why, so a folder without `results.json` explains itself."""


def _remove_debris(run_dir: Path) -> None:
    """Temporary files of writes that a kill -9 cut short: `metazoo.atomic`'s, and those that
    safetensors writes before renaming (`.tmp` and six characters: Rust's `tempfile`)."""
    names = (CONFIG, CHECKPOINT, BEST, RESULTS, RESUMES, "metrics.csv", provenance.FILE)
    for path in run_dir.iterdir():
        n = path.name
        ours = any(n.startswith(f".{name}.") and n.endswith(".tmp") for name in names)
        if (ours or (n.startswith(".tmp") and len(n) == 10)) and path.is_file():
            path.unlink(missing_ok=True)


def _train(cfg: RunConfig, run_dir: Path, resume: bool, claimed: lock.Claim,
           origin: provenance.Origin | None, test: bool = True,
           on_validation: Callable[[int, EvalResult], None] | None = None,
           world: distributed.World = distributed.SINGLE,
           algorithm: Algorithm | None = None) -> dict[str, Any]:
    start_step, best = 0, None
    state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    changed: dict[str, list[Any]] = {}
    cfg = resolved(cfg)
    if resume:
        saved = SavedRun(run_dir)
        changed = saved.check(cfg)
        run_config = saved.run_config
        state = saved.tensors, saved.meta
        start_step, best = saved.step, saved.meta["best"]
    else:
        if (run_dir / CHECKPOINT).exists():
            raise CheckpointError(f"'{run_dir}' already holds a run; pass --resume to continue "
                                  "it or --out NEW_DIR to start another")
        if (run_dir / PRETRAINED).exists():
            raise CheckpointError(f"'{run_dir}' holds a pre-training (metazoo pretrain); use it "
                                  f"with --set model.pretrained={run_dir} and another --out")
        run_config = normal(cfg.to_dict())

    device = world.device  # train.device; under torchrun cuda:LOCAL_RANK
    train_src = task_source(cfg, "train", training=True)  # the train split, loaded once
    shape = tuple(state[1]["input_shape"]) if state else train_src.input_shape
    alg = (build_algorithm(cfg, shape) if algorithm is None else algorithm).to(device)
    opt = make_optimizer(alg, cfg.train)
    amp = Precision(cfg.train.precision, device, opt)  # autocast, float16's loss scale
    replicate = sharding.announce(alg, cfg.train.meta_batch_size, world)  # else split
    window: dict[str, Any] = {}
    if state is not None:
        tensors, meta = state
        checkpoint.load_into(alg, checkpoint.model_state(tensors), str(run_dir / CHECKPOINT))
        try:
            opt.load_state_dict(checkpoint.optimizer_from_flat(tensors, meta["optimizer"]))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint in '{run_dir}' does not fit its config: "
                                  f"{str(e).splitlines()[0]}") from None
        window = meta.get("log_window") or {}
        amp.load(meta)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg.train, s),
                                              last_epoch=start_step - 1)
    if start_step:  # LambdaLR with last_epoch >= 0 needs initial_lr; recompute the current lr
        for group in opt.param_groups:
            group["lr"] = cfg.train.outer_lr * lr_factor(cfg.train, start_step)
    # an offset-label learner validates on streams, by the binding its training teaches
    streams = getattr(alg, "presentation", None) == "offset_labels"
    val_src = None if not (cfg.eval.every and cfg.eval.val_episodes) else (
        stream_source(cfg, "val") if streams else task_source(cfg, "val", training=False))
    test_src = task_source(cfg, cfg.eval.split, training=False) if test else None  # errors now
    t = cfg.train

    # The run starts: from here on it changes the folder.
    claimed.started = True
    if world.writes:  # process 0 alone writes the folder
        _remove_debris(run_dir)
        (run_dir / ERROR).unlink(missing_ok=True)  # of an earlier attempt that stopped
        if resume:
            if changed:
                record_resume(run_dir, start_step, changed)
        else:
            for stale in (BEST, RESULTS, RESUMES):  # of an earlier start without checkpoint
                (run_dir / stale).unlink(missing_ok=True)
            write_json(run_dir / CONFIG, run_config)  # once: a resume never rewrites it
            write_json(run_dir / provenance.FILE, provenance.record(origin))  # preset, commit
    ident = identity(run_config, cfg)
    # The training log's window is aligned to multiples of log_every; a checkpoint carries the
    # open window's sums, so the rows after a resume equal those of a run never stopped.
    sums: dict[str, float] = defaultdict(float, window.get("sums", {}))
    window_steps = int(window.get("steps", 0))
    window_start = time.perf_counter() - float(window.get("seconds", 0.0))
    log = MetricsLog(run_dir, resume_step=start_step if resume else None,
                     drop_partial_row=bool(window_steps) and start_step < t.meta_steps,
                     tensorboard=t.tensorboard) if world.writes else distributed.NullLog()

    def save(step: int) -> None:
        if not world.writes:
            return
        open_window = {"sums": dict(sums), "steps": window_steps,
                       "seconds": time.perf_counter() - window_start}
        _save_state(run_dir / CHECKPOINT, alg, opt, step, best, shape,
                    {**ident, "log_window": open_window, **amp.state()})
        output.debug(f"checkpoint at step {step}: {run_dir / CHECKPOINT}")

    if state is not None and RNG in state[0]:
        torch.set_rng_state(state[0][RNG])
    # the bar on a terminal; piped or redirected, a plain line per logged window instead
    drawn = t.progress and sys.stderr.isatty() and output.progress_on()
    bar = tqdm(range(start_step, t.meta_steps), initial=start_step, total=t.meta_steps,
               disable=not drawn, desc="meta-train", unit="step", dynamic_ncols=True)
    alg.train()
    output.debug(f"{cfg.algorithm.name} on {cfg.data.name}: steps {start_step}..{t.meta_steps} "
                 f"of {t.meta_batch_size} tasks, device {device}, tasks run as "
                 f"'{batching.choose(alg)}', {torch.get_num_threads()} threads, into {run_dir}")
    out_of_time_now = deadline(t.time_limit_min, t.time_clock)
    try:
        with stop_after_step() as stop:
            for step in bar:
                batch = train_src.batch(step, t.meta_batch_size).to(device)
                opt.zero_grad(set_to_none=True)
                alg.begin_step(step, t.meta_steps)  # schedules inside the algorithm (MAML++)
                # the strategy measured fastest, on this process's share of the tasks
                loss, metrics = sharding.meta_backward(alg, batch, world, amp, replicate)
                if not math.isfinite(float(loss.detach())):
                    raise TrainingError(_diverged(run_dir, step + 1, "the meta-loss is "
                                                  f"{float(loss.detach())}"))
                alg.end_step(batch)  # state carried between steps (Reptile's Adam, MAML++'s stats)
                scheduled = t.outer_lr * lr_factor(t, step)
                lr = alg.outer_lr(scheduled)  # the algorithm's own rate (AlphaMAML), else this
                if lr != scheduled:
                    for group in opt.param_groups:
                        group["lr"] = lr
                used_lr = opt.param_groups[0]["lr"]  # the log's: the rate of this update
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(alg.parameters(), t.grad_clip)
                amp.step()  # opt.step(); float16: skipped after an overflow
                sched.step()
                if not _finite(alg):  # checked before any save: a checkpoint is never NaN
                    raise TrainingError(_diverged(run_dir, step + 1, "the meta-parameters are "
                                                  "no longer finite"))
                sums["loss"] += float(loss.detach())
                for k, v in metrics.items():
                    sums[k] += float(v.detach())
                window_steps += 1
                done = step + 1
                out_of_time = bool(world.agree(out_of_time_now()))  # all stop at one step
                last = done == t.meta_steps or out_of_time
                if done % t.log_every == 0 or last:
                    secs = time.perf_counter() - window_start
                    means = {k: v / window_steps for k, v in sums.items()}
                    eps = window_steps * t.meta_batch_size / max(secs, 1e-9)
                    log.write(done, "train", lr=used_lr, episodes_per_s=eps,
                              seconds=secs, **means)
                    bar.set_postfix({**{k: f"{v:.3f}" for k, v in means.items()},
                                     "eps/s": f"{eps:.1f}"})
                    if t.progress and not drawn:
                        output.info(f"step {done}/{t.meta_steps}: " + ", ".join(
                            f"{k} {v:.4f}" for k, v in means.items()) + f", {eps:.1f} episodes/s")
                    if done % t.log_every == 0:  # a last, partial window stays open
                        sums.clear()
                        window_start, window_steps = time.perf_counter(), 0
                checkpointed = True
                if val_src is not None and (done % cfg.eval.every == 0 or last):
                    result = (validate_stream if streams else partial(evaluate, world=world))(
                        alg, val_src, episodes=cfg.eval.val_episodes,
                        batch_size=cfg.eval.batch_size, split="val", device=device)
                    log.write(done, "val", seconds=result.seconds, ci95=result.ci95,
                              **{"acc" if result.metric == "accuracy" else "mse": result.mean})
                    if _better(result, best):
                        best = result.mean
                        if world.writes:
                            _save_best(run_dir / BEST, alg, done, result, shape)
                    line = (f"step {done}: val {result.metric} {result.mean:.4f} ± "
                            f"{result.ci95:.4f} (best {best:.4f})")
                    if drawn:
                        bar.write(line)  # above the bar, which redraws below it
                    else:
                        output.info(line)
                    save(done)
                    if on_validation is not None:
                        on_validation(done, result)
                elif done % t.checkpoint_every == 0 or last:
                    save(done)
                else:
                    checkpointed = False
                stop.signum = world.agree(stop.signum)  # a signal to any process stops all
                if stop.signum:
                    if not checkpointed:
                        save(done)
                    raise stopped_after(stop.signum, done, run_dir)
                if out_of_time:
                    output.info(f"train.time_limit_min={t.time_limit_min} ({t.time_clock} "
                                f"clock) reached after {done} steps")
                    break
    finally:
        bar.close()
        log.close()
    if start_step == t.meta_steps == 0 or not (run_dir / CHECKPOINT).exists():
        save(t.meta_steps)
    if not test:
        return {"best_val": best}
    return final_evaluation(cfg, run_dir, alg, device, test_src, world)


def final_evaluation(cfg: RunConfig, run_dir: Path, alg: Algorithm, device: torch.device,
                     src: TaskSource | None = None,
                     world: distributed.World = distributed.SINGLE) -> dict[str, Any]:
    """Test the best weights (or the last, without validation); write `results.json`
    (`world`: the episodes split over the processes, process 0 writing)."""
    weights = "last"
    if (run_dir / BEST).exists():
        tensors, _ = checkpoint.load(run_dir / BEST)
        alg.load_state_dict(checkpoint.model_state(tensors))
        weights = "best"
    world.broadcast_module(alg)  # process 0's weights: the folder may be its alone
    src = src or task_source(cfg, cfg.eval.split, training=False)
    result = evaluate(alg, src, episodes=cfg.eval.episodes, batch_size=cfg.eval.batch_size,
                      split=cfg.eval.split, device=device,
                      progress=cfg.train.progress and output.progress_on(), world=world)
    out = {**result.to_json(), "weights": weights, "algorithm": cfg.algorithm.name,
           "dataset": cfg.data.name, "batch_norm": batch_norm_mode(alg), "device": str(device)}
    if world.writes:
        write_json(run_dir / RESULTS, out)
    output.result(result.line())
    return out
