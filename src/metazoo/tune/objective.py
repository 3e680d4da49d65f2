"""A trial of a tuning study: one short meta-training run, scored on the validation episodes.

Trial `n` trains in `OUT/trials/nnnn` with the base config and its sampled values
(`engine.train.train(test=False)`: the test split is never built), reports every validation to
Optuna and stops as soon as the pruner says so (`optuna.TrialPruned`, state PRUNED). Its value
is the best validation score of the run (the weights `best.safetensors` keeps).

What counts toward a study's N trials (`finished`): complete and pruned trials, and failed ones
whose values could not run (the config refused the combination, or training diverged: the
reason is the trial's `error` attribute). A trial stopped by Ctrl-C, `kill` or a dead machine
(running no more: Optuna's heartbeat marks it failed) does not count, so the next command runs
another in its place. A trial that finds N others already taken when it starts (two processes
starting the last trial together) is closed at once, unrun (`surplus`), so N is exact.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metazoo.config_files import from_dict
from metazoo.engine.evaluate import EvalResult
from metazoo.engine.train import train
from metazoo.errors import CheckpointError, ConfigError, TrainingError
from metazoo.tune.space import Param, apply

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


class Surplus(Exception):
    """A trial that started when the study already held its N trials; closed unrun."""


class Unrunnable(Exception):
    """The trial's values cannot run (the config refuses them, training diverged): the trial
    fails and counts; any other error stops the study."""


def trial_dir(out: Path, number: int) -> Path:
    """The run folder of trial `number`."""
    return out / "trials" / f"{number:04d}"


def finished(trial: FrozenTrial) -> bool:
    """Whether `trial` counts toward the study's N trials (see the module docstring)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def taken(trials: Sequence[FrozenTrial], before: int | None = None) -> int:
    """Trials that count or are running (of those numbered below `before`, if given)."""
    from optuna.trial import TrialState

    return sum(1 for t in trials if (before is None or t.number < before)
               and (finished(t) or t.state == TrialState.RUNNING))


def objective(base: Mapping[str, Any], space: Sequence[Param], out: Path, n: int
              ) -> Callable[[optuna.Trial], float]:
    """The function Optuna calls per trial: `base` (nested config dicts) with the trial's values
    laid over it, trained in `trial_dir(out, number)`; N = `n` trials in the study."""
    import optuna

    def run(trial: optuna.Trial) -> float:
        if taken(trial.study.get_trials(deepcopy=False), before=trial.number) >= n:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"the study already holds {n} trials")
        values = {p.key: p.suggest(trial) for p in space}
        run_dir = trial_dir(out, trial.number)
        if run_dir.exists():
            raise CheckpointError(f"'{run_dir}' is there already, from another study: give this "
                                  "study its own --out")
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

        def report(step: int, result: EvalResult) -> None:
            trial.report(result.mean, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val {result.metric} {result.mean:.4f} at step {step}")

        try:
            cfg = from_dict(apply(base, values))  # cross-field checks of the combination
        except ConfigError as e:
            trial.set_user_attr("error", str(e))
            raise Unrunnable(str(e)) from None
        try:
            return float(train(cfg, run_dir, test=False, on_validation=report)["best_val"])
        except TrainingError as e:
            trial.set_user_attr("error", str(e))
            raise Unrunnable(str(e)) from None

    return run
