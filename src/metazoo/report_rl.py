"""The meta-RL rows of `metazoo report` (`metazoo.report`): one per results file of a run with
`rl.family` set, read from what `engine.rl` and `engine.rl_eval` write (`results.json`, each
`results.<what>.json` of `metazoo eval`). A row keeps every metric's mean and 95% CI; the table
shows its headline ones (`headline`). The paper entry is the run's `provenance.json` one, beside
the test split only: meta-RL runs all have that file, and their presets are matched by family
and options, not by the data, ways and shots `report.preset_papers` keys on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metazoo.engine.rl_eval import CURVE
from metazoo.errors import CheckpointError, ConfigError

MOST_POINTS = 5  # a longer curve shows its first and last points only
Stat = tuple[float, float]  # mean, 95% CI half-width


@dataclass(frozen=True)
class RLRow:
    """One results file of a meta-RL run."""

    run: str  # the folder as given
    results: str  # file name
    method: str  # the learner's display name, then what an eval changed: "RL² (episodes=12)"
    algorithm: str  # registry name
    family: str  # rl.family
    options: dict[str, Any]  # rl.options as the results file gives them
    split: str
    tasks: int  # evaluation tasks
    metrics: dict[str, Stat]  # every metric of the file: (mean, ci95)
    steps: int  # meta-iterations reached
    meta_steps: int  # meta-iterations configured (after any resume that extended the run)
    wall_s: float  # training and the final evaluation (an eval row: that evaluation)
    test_s: float
    commit: str | None
    paper: dict[str, Any] | None
    paper_from: str  # "run" or ""


def is_rl(cfg: dict[str, Any]) -> bool:
    """Whether a run's `config.json` content names a meta-RL task family."""
    rl = cfg.get("rl")
    return isinstance(rl, dict) and rl.get("family") is not None


def headline(metrics: dict[str, Stat]) -> list[tuple[str, list[Stat]]]:
    """(label, points) to show: each plain metric (RL²'s `return`, `regret`: a trial's totals),
    then each `<m>_after_<i>` curve without a plain `m` (MAML-RL: `return after 0/1/2/3`)."""
    out = [(k, [v]) for k, v in metrics.items() if not CURVE.match(k)]
    curves: dict[str, list[tuple[int, Stat]]] = {}
    for key, value in metrics.items():
        if (m := CURVE.match(key)) and m.group(1) not in metrics:
            curves.setdefault(m.group(1), []).append((int(m.group(2)), value))
    for name, points in curves.items():
        points.sort(key=lambda p: p[0])
        if len(points) > MOST_POINTS:
            points = [points[0], points[-1]]
        out.append((f"{name} after {'/'.join(str(i) for i, _ in points)}",
                    [v for _, v in points]))
    return out


def _display(name: str) -> str:
    from metazoo.rl.base import algorithm_spec

    try:
        return algorithm_spec(name).display
    except (ImportError, ConfigError):  # no gymnasium here, or a learner since removed
        return name


def _metrics(path: Path, res: dict[str, Any]) -> dict[str, Stat]:
    stats = res.get("metrics") or {}
    try:
        out = {str(k): (float(v["mean"]), float(v["ci95"])) for k, v in stats.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        out = {}
    if not out:
        raise CheckpointError(f"'{path}' is damaged (no meta-RL metrics)")
    return out


def rows_of(run: Path, cfg: dict[str, Any], prov: dict[str, Any] | None,
            files: list[tuple[Path, dict[str, Any]]], steps: int, train_s: float,
            meta_steps: int) -> list[RLRow]:
    """The rows of meta-RL run `run` from what `report.run_rows` read of its folder."""
    name = cfg["algorithm"]["name"]
    display = _display(name)
    baseline = False  # a baseline of the paper's, not its method: no paper number beside it
    if cfg["algorithm"].get("objective") == "pretrained":  # MAML-RL's baseline (a)
        display, baseline = display + ", pretrained", True
    if int(cfg["train"]["meta_steps"]) == 0:
        display, baseline = display + ", initial weights", True
    entry = prov.get("paper") if prov is not None and not baseline else None
    rows = []
    for path, res in files:
        own = path.name == "results.json"
        what = path.name[len("results."):-len(".json")]
        split = str(res.get("split", "test"))
        seconds = float(res.get("seconds", 0.0))
        options = res.get("options", cfg["rl"].get("options") or {})
        rows.append(RLRow(
            run=str(run), results=path.name, method=display if own else f"{display} ({what})",
            algorithm=name, family=str(res.get("family", cfg["rl"]["family"])),
            options=dict(options) if isinstance(options, dict) else {}, split=split,
            tasks=int(res.get("tasks", 0)), metrics=_metrics(path, res), steps=steps,
            meta_steps=meta_steps, wall_s=(train_s if own else 0.0) + seconds, test_s=seconds,
            commit=None if prov is None else str(prov.get("commit")),
            paper=entry if entry and split == "test" else None,
            paper_from="run" if entry and split == "test" else ""))
    return rows
