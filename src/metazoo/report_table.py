"""The table of `metazoo report` (`metazoo.report`): Markdown for reading and for
`docs/results.md`, CSV with every number at full precision for other tools. Meta-RL rows get a
Markdown table of their own after the supervised one (their columns mean other things: a task
family and its options, several metrics a cell); in the CSV they are rows of the same columns,
one per metric (`data` holds the family, `rl_options` the options)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from metazoo.report import Row
from metazoo.report_rl import RLRow, headline


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


def markdown(rows: Sequence[Row | RLRow]) -> str:
    """The supervised rows' table, then the meta-RL rows' (`rl_markdown`), each when it has
    rows, a blank line between."""
    supervised = [r for r in rows if isinstance(r, Row)]
    rl = [r for r in rows if isinstance(r, RLRow)]
    return "\n\n".join([*([_markdown(supervised)] if supervised else []),
                         *([rl_markdown(rl)] if rl else [])])


def _markdown(rows: Sequence[Row]) -> str:
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
        lines.append(_line(cells))
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def rl_setting(row: RLRow) -> str:
    """`arms=5 episodes=10, 1000 tasks`: the family's scalar options as given (none: its
    defaults), the evaluation tasks, and the split when not test."""
    shown = [f"{k}={v}" for k, v in row.options.items() if isinstance(v, int | float | str)]
    text = f"{' '.join(shown) or 'default options'}, {row.tasks} tasks"
    return text if row.split == "test" else f"{text}, {row.split} split"


def rl_result(row: RLRow) -> str:
    """`return 6.51 ± 0.12, regret 1.38 ± 0.09` or `return after 0/1/2/3: -45.1 ± 2.0 / ...`
    (one significant digit of each group's smallest CI, at least two decimals)."""
    groups = []
    for label, points in headline(row.metrics):
        d = max(_decimals(ci) for _, ci in points)
        values = " / ".join(f"{m:.{d}f} ± {ci:.{d}f}" for m, ci in points)
        groups.append(f"{label}{':' if len(points) > 1 else ''} {values}")
    return ", ".join(groups)


def rl_paper_cell(row: RLRow) -> str:
    """`return 6.7` or `return after 0/1/2/3: -40 / -12 / -3.3 / -3.2`: the entry's numbers as
    written, grouped as the result cell; its CI when it gives one number."""
    if not row.paper:
        return "-"
    numbers = {k: (v, 0.0) for k, v in row.paper.items() if k not in ("ci95", "source")}
    ci = row.paper.get("ci95")
    cell = ", ".join(f"{label}{':' if len(points) > 1 else ''} "
                     + " / ".join(_as_written(v) for v, _ in points)
                     for label, points in headline(numbers))
    return cell + (f" ± {_as_written(ci)}" if ci is not None and len(numbers) == 1 else "")


def rl_markdown(rows: Sequence[RLRow]) -> str:
    """The Markdown table of meta-RL rows."""
    header = ["run", "method", "family", "setting", "result (ours)", "paper", "iterations",
              "wall time", "commit"]
    lines = [_line(header), "|" + "---|" * len(header)]
    for r in rows:
        lines.append(_line([
            r.run, r.method, r.family, rl_setting(r), rl_result(r), rl_paper_cell(r),
            f"{r.steps} of {r.meta_steps}" if r.meta_steps else str(r.steps),
            f"{r.wall_s:.0f} s (incl. {r.test_s:.1f} s test)" if r.results == "results.json"
            else f"{r.wall_s:.0f} s", "-" if r.commit is None else r.commit[:7]]))
    return "\n".join(lines)


COLUMNS = [f.name for f in fields(Row) if f.name != "paper"] + ["paper", "paper_ci95",
                                                                 "paper_source"]


def _plain(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _rl_csv_rows(r: RLRow) -> list[list[str]]:
    """One CSV row a metric of `r`, in `COLUMNS` and `rl_options`."""
    entry = r.paper or {}
    alone = len([k for k in entry if k not in ("ci95", "source")]) == 1
    out = []
    for metric, (mean, ci) in r.metrics.items():
        d: dict[str, Any] = {**asdict(r), "data": r.family, "episodes": r.tasks,
                             "metric": metric, "mean": mean, "ci95": ci}
        out.append([_plain(d.get(c)) for c in COLUMNS[:-3]] + [
            _plain(entry.get(metric)), _plain(entry.get("ci95") if alone and metric in entry
                                              else None),
            entry.get("source", ""), json.dumps(r.options, sort_keys=True)])
    return out


def csv_text(rows: Sequence[Row | RLRow]) -> str:
    """`rows` as CSV (header first): every field of `Row`, the paper's entry in three
    columns; accuracy and its CI in percent, as the paper's. With meta-RL rows, one row per
    metric of theirs and an `rl_options` column (JSON) last."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    rl = any(isinstance(r, RLRow) for r in rows)
    w.writerow(COLUMNS + (["rl_options"] if rl else []))
    for r in rows:
        if isinstance(r, RLRow):
            w.writerows(_rl_csv_rows(r))
            continue
        d = asdict(r)
        entry = d.pop("paper") or {}
        w.writerow([_plain(d[c]) for c in COLUMNS[:-3]] + [
            _plain(entry.get(r.metric)), _plain(entry.get("ci95")), entry.get("source", ""),
            *([""] if rl else [])])
    return out.getvalue()
