"""Metrics logs: a CSV file always, TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

FIELDS = ["step", "split", "loss", "acc", "mse", "ci95", "lr", "episodes_per_s", "seconds"]


class MetricsLog:
    """Appends rows to `metrics.csv` in the run folder (and TensorBoard scalars if wanted).

    On resume, rows logged after the checkpoint's step are dropped, so the file reads as if the
    run had never stopped.
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.csv"
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows(rows)
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is optional: pip install metazoo[tb]
                self._tb = None

    def write(self, step: int, split: str, **values: float | None) -> None:
        row: dict[str, Any] = {"step": step, "split": split}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v)
                    for k, v in values.items() if v is not None})
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read(path: Path) -> list[dict[str, str]]:
    """Rows of a `metrics.csv`."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
