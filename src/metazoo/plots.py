"""Figures of a run folder: learning curves, and for regression runs the adaptation figure.

matplotlib with the Agg backend, imported inside the functions so `import metazoo` stays light.
"""

from __future__ import annotations

from pathlib import Path

from metazoo.engine.log import read
from metazoo.errors import CheckpointError


def _series(rows: list[dict[str, str]], split: str, key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows if r["split"] == split and r.get(key)]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_learning_curves(run_dir: Path) -> Path:
    """`learning_curves.png`: training loss, and training/validation accuracy or MSE, by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run_dir / "metrics.csv"
    if not path.exists():
        raise CheckpointError(f"no metrics.csv in '{run_dir}'; is it a run folder?")
    rows = read(path)
    metric = "mse" if any(r.get("mse") for r in rows) else "acc"
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(*_series(rows, "train", "loss"), label="train")
    ax_loss.set(xlabel="meta-step", ylabel="meta-loss", title="meta-training loss")
    for split in ("train", "val"):
        steps, values = _series(rows, split, metric)
        if steps:
            ax_metric.plot(steps, values, marker="o" if split == "val" else None, label=split)
    ax_metric.set(xlabel="meta-step", ylabel="query " + ("MSE" if metric == "mse" else "accuracy"),
                  title="query " + ("MSE" if metric == "mse" else "accuracy"))
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = run_dir / "learning_curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_run(run_dir: Path) -> list[Path]:
    """Every figure that fits the run; returns the paths written."""
    return [plot_learning_curves(run_dir)]
