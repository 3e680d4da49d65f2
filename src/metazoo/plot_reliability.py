"""`reliability.png`: the reliability diagram of a classifier's test predictions.

Accuracy against confidence in the 15 bins of `metazoo.calibration` (Guo et al., ICML 2017,
Fig. 1), read from the run's `results.json`: bars at each bin's accuracy, the diagonal of perfect
calibration, the gap to it shaded, the share of predictions per bin below, the ECE in the title.
"""

from __future__ import annotations

import json
from pathlib import Path

from metazoo.engine.run import RESULTS
from metazoo.errors import CheckpointError


def has_reliability(run_dir: Path) -> bool:
    """Whether the run's results carry the reliability bins (a classifier evaluated with them)."""
    try:
        return "reliability" in json.loads((run_dir / RESULTS).read_text())
    except (OSError, ValueError):
        return False


def plot_reliability(run_dir: Path) -> Path:
    """Draw `reliability.png` from `results.json`; `CheckpointError` when it has no bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metazoo.figure_file import save

    path = run_dir / RESULTS
    try:
        data = json.loads(path.read_text())
        table, ece = data["reliability"], float(data["ece"])
        n = int(table["bins"])
        count = [int(c) for c in table["count"]]
        acc = [float(a) if a is not None else 0.0 for a in table["accuracy"]]
        conf = [float(c) if c is not None else 0.0 for c in table["confidence"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"'{path}' holds no reliability bins ({type(e).__name__}: {e}); "
                              "evaluate the run again with `metazoo eval RUN`") from None
    width, total = 1.0 / n, max(sum(count), 1)
    left = [b * width for b in range(n)]
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(left, acc, width=width, align="edge", edgecolor="k", label="accuracy")
    gap = [c - a if k else 0.0 for a, c, k in zip(acc, conf, count, strict=True)]
    ax.bar(left, gap, bottom=acc, width=width, align="edge", color="tab:red", alpha=0.3,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"{data.get('algorithm', 'run')}: ECE {ece:.4f} "
                 f"({data.get('episodes', '?')} {data.get('split', '')} episodes)")
    ax.legend(loc="upper left", fontsize=8)
    ax_count.bar(left, [c / total for c in count], width=width, align="edge", edgecolor="k")
    ax_count.set(xlabel="confidence (max predicted probability)", ylabel="share")
    fig.tight_layout()
    return save(fig, run_dir / "reliability.png")
