"""Metrics logs: a CSV file always, TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metazoo import atomic
from metazoo.errors import CheckpointError

FIELDS = ["step", "split", "loss", "acc", "mse", "ci95", "lr", "episodes_per_s", "seconds"]


class MetricsLog:
    """Appends rows to `metrics.csv` in the run folder (and TensorBoard scalars if wanted).

    On resume, rows logged after the checkpoint's step are dropped, so the file reads as if the
    run had never stopped: so is a last row cut short by a kill, and, with `drop_partial_row`,
    the train row at the checkpoint's step that closed a partial window when the run stopped
    there (the resumed run continues that window: its sums are in the checkpoint).
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None = None,
                 drop_partial_row: bool = False, tensorboard: bool = True,
                 fields: Sequence[str] = FIELDS) -> None:
        self.path = run_dir / "metrics.csv"
        self.fields = list(fields)  # the columns (a meta-RL run's: its learner's metrics)
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            rows = [r for r in _complete_rows(self.path) if int(r["step"]) < resume_step or (
                int(r["step"]) == resume_step and not (drop_partial_row and r["split"] == "train"))]
        text = io.StringIO()
        w = csv.DictWriter(text, self.fields)
        w.writeheader()
        w.writerows(rows)
        atomic.write_text(self.path, text.getvalue())
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)
            except ImportError:  # tensorboard is optional: pip install metazoo[tb]
                self._tb = None

    def write(self, step: int, split: str, **values: float | None) -> None:
        row: dict[str, Any] = {"step": step, "split": split}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v)
                    for k, v in values.items() if v is not None})
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _complete_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a `metrics.csv` that a kill did not cut short (the last line without its newline
    is dropped, as is a row whose step does not parse)."""
    with path.open(newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = []
    for r in csv.DictReader(io.StringIO(text, newline="")):
        try:
            int(r["step"])
        except (TypeError, ValueError):
            continue
        rows.append(r)
    return rows


def read(path: Path) -> list[dict[str, str]]:
    """Rows of a `metrics.csv`, each checked: `step` an integer, `split` a name, every other
    value empty or a number; a damaged file is one `CheckpointError` naming the row."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for i, row in enumerate(rows, start=2):  # line 1 is the header
            if None in row or not row.get("split"):
                raise ValueError(f"line {i} has missing or extra columns")
            int(row["step"])
            for key, value in row.items():
                if key not in ("step", "split") and value:
                    float(value)
    except (UnicodeDecodeError, csv.Error, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"'{path}' is damaged ({str(e).splitlines()[0]}); it is the "
                              "training log: restore it or retrain") from None
    return rows
