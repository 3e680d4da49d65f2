"""The table of `metazoo report` (`metazoo.report`): Markdown for reading and for
`docs/results.md`, CSV with every number at full precision for other tools."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from metazoo.report import Row


def _decimals(ci: float) -> int:
    """Decimals that show a CI half-width to one significant digit, at least two."""
    return max(2, -math.floor(math.log10(ci))) if math.isfinite(ci) and ci > 0 else 4


def result(row: Row) -> str:
    """`98.53 ± 0.43` (accuracy, percent) or `0.0017 ± 0.0002` (MSE)."""
    d = 2 if row.metric == "accuracy" else _decimals(row.ci95)
    return f"{row.mean:.{d}f} ± {row.ci95:.{d}f}"


def _as_written(v: float | int) -> str:
    """A paper's number with the decimals it was written with (YAML keeps `98.70` as 98.7)."""
    return str(v) if "e" not in str(v) else f"{v:g}"


def paper_cell(row: Row) -> str:
    """`98.7 ± 0.4` (the paper's own precision), `98.8` without a CI, `-` without a number."""
    if row.paper is None:
        return "-"
    value = row.paper.get(row.metric)
    if value is None:
        return "-"
    ci = row.paper.get("ci95")
    return _as_written(value) + ("" if ci is None else f" ± {_as_written(ci)}")


def setting(row: Row) -> str:
    """`5-way 1-shot 15-query, 600 episodes` (regression: `10-shot 100-query, 600 tasks`)."""
    if row.metric == "mse" and row.ways == 1:
        text = f"{row.shots}-shot {row.queries}-query, {row.episodes} tasks"
    else:
        text = f"{row.ways}-way {row.shots}-shot {row.queries}-query, {row.episodes} episodes"
    return text if row.split == "test" else f"{text}, {row.split} split"


def _optional(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(rows: Sequence[Row]) -> str:
    """One Markdown table of `rows`; NLL and ECE columns only when some row has them."""
    metrics = {r.metric for r in rows}
    head = "accuracy" if metrics == {"accuracy"} else "MSE" if metrics == {"mse"} else \
        "accuracy or MSE"
    calibration = any(r.nll is not None or r.ece is not None for r in rows)
    header = ["run", "method", "data", "setting", f"{head} (ours)", "paper",
              *(["NLL", "ECE"] if calibration else []), "iterations", "wall time", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        own = r.results == "results.json"
        cells = [r.run, r.method, r.data, setting(r),
                 ("MSE " if r.metric == "mse" and len(metrics) > 1 else "") + result(r),
                 paper_cell(r), *([_optional(r.nll), _optional(r.ece)] if calibration else []),
                 f"{r.steps} of {r.meta_steps}" if r.meta_steps else str(r.steps),
                 f"{r.wall_s:.0f} s (incl. {r.test_s:.1f} s test)" if own else
                 f"{r.wall_s:.0f} s",
                 "-" if r.commit is None else r.commit[:7]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


COLUMNS = [f.name for f in fields(Row) if f.name != "paper"] + ["paper", "paper_ci95",
                                                                 "paper_source"]


def _plain(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def csv_text(rows: Sequence[Row]) -> str:
    """`rows` as CSV (header first): every field of `Row`, the paper's entry in three
    columns; accuracy and its CI in percent, as the paper's."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        d = asdict(r)
        entry = d.pop("paper") or {}
        w.writerow([_plain(d[c]) for c in COLUMNS[:-3]] + [
            _plain(entry.get(r.metric)), _plain(entry.get("ci95")), entry.get("source", "")])
    return out.getvalue()
