"""Figures of a meta-RL run folder (`metazoo plot RUN` for a run with `rl.family` set).

`learning_curves.png`: the learner's training metrics (`metrics.csv`) against the meta-step.
`adaptation.png`: the curve its evaluation reports (`results.json`: `<metric>_after_<i>` with
95% CIs): RL²'s cumulative regret (bandits) or return against the episodes of a trial, beside the
family's baselines on the same tasks (UCB1, Thompson, Gittins, ...); MAML-RL's return against the
inner gradient steps.
"""

from __future__ import annotations

import json
from pathlib import Path

from metazoo.engine.log import read
from metazoo.engine.rl_eval import curves
from metazoo.engine.run import RESULTS
from metazoo.errors import CheckpointError
from metazoo.figure_file import save


def plot_learning_curves(run_dir: Path) -> Path:
    """`learning_curves.png`: each metric of `metrics.csv` against the meta-step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run_dir / "metrics.csv"
    if not path.exists():
        raise CheckpointError(f"no metrics.csv in '{run_dir}'; is it a run folder?")
    rows = [r for r in read(path) if r["split"] == "train"]
    keys = [k for k in (rows[0] if rows else {}) if k not in ("step", "split", "seconds",
                                                                "tasks_per_s")]
    keys = [k for k in keys if any(r.get(k) for r in rows)] or ["(none)"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 20 else None)
        ax.set(xlabel="meta-iteration", title=key)
    fig.tight_layout()
    return save(fig, run_dir / "learning_curves.png")


def plot_adaptation(run_dir: Path) -> Path | None:
    """`adaptation.png` from `results.json`'s curves (None when it has none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run_dir / RESULTS
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    mine = result.get("curves") or {}
    if not mine:
        return None
    fig, axes = plt.subplots(1, len(mine), figsize=(5 * len(mine), 3.8), squeeze=False)
    for ax, (metric, c) in zip(axes[0], mine.items(), strict=True):
        low = [m - h for m, h in zip(c["mean"], c["ci95"], strict=True)]
        high = [m + h for m, h in zip(c["mean"], c["ci95"], strict=True)]
        line, = ax.plot(c["x"], c["mean"], marker="o", label=result.get("algorithm", "run"))
        ax.fill_between(c["x"], low, high, color=line.get_color(), alpha=0.2)
        for name, stats in (result.get("baselines") or {}).items():
            other = curves(stats).get(metric)
            if other:
                ax.plot(other["x"], other["mean"], linestyle="--", label=name)
        ax.set(xlabel=result.get("curve_axis") or "i", ylabel=metric,
               title=f"{metric} on {result.get('tasks')} {result.get('family')} tasks")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, run_dir / "adaptation.png")


def plot_rl_run(run_dir: Path) -> list[Path]:
    """Every figure of a meta-RL run; returns the paths written."""
    paths = [plot_learning_curves(run_dir)]
    curve = plot_adaptation(run_dir)
    return paths + ([curve] if curve is not None else [])
