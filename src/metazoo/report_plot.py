"""The figure of `metazoo report --plot FILE`: each row's accuracy (or MSE) with its 95% CI,
the paper's value beside it (with the paper's CI where it gives one). One panel per metric;
matplotlib with the Agg backend, written atomically (`metazoo.figure_file.save`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from metazoo.report import Row
from metazoo.report_table import setting


def _label(row: Row) -> str:
    return f"{row.method}\n{row.data}, {setting(row).split(',')[0]} ({Path(row.run).name})"


def plot(rows: Sequence[Row], path: Path) -> Path:
    """Draw `rows` to the PNG `path`; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metazoo.figure_file import save

    panels = [m for m in ("accuracy", "mse") if any(r.metric == m for r in rows)]
    tall = max(sum(r.metric == m for r in rows) for m in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 1.5 + 0.6 * tall),
                             squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if r.metric == metric]
        y = list(range(len(mine)))[::-1]  # the first row on top
        ci = [r.ci95 if math.isfinite(r.ci95) else 0.0 for r in mine]
        ax.errorbar([r.mean for r in mine], y, xerr=ci, fmt="o", capsize=4, label="ours")
        marked = [(r.paper[metric], r.paper.get("ci95") or 0.0, yy)
                  for r, yy in zip(mine, y, strict=True) if r.paper and metric in r.paper]
        if marked:
            ax.errorbar([m[0] for m in marked], [m[2] + 0.2 for m in marked],
                        xerr=[m[1] for m in marked], fmt="D", color="tab:red", capsize=3,
                        label="paper")
        ax.set_yticks(y, [_label(r) for r in mine], fontsize=8)
        ax.set_ylim(-0.7, len(mine) - 0.3)
        ax.set_xlabel("test accuracy (%) with 95% CI" if metric == "accuracy" else
                      "test MSE with 95% CI")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return save(fig, Path(path))
