"""`metazoo report`: the runs of some run folders as one table, beside the papers' numbers.

One row per results file: the run's own test (`results.json`, written by `metazoo train`) and
each `metazoo eval` of it (`results.<what>.json`, labelled with what differs); Santoro et al.'s
offset-label results (`results.offset_labels.json`) are another protocol and are left out.
A meta-RL run (`rl.family` set) gives `metazoo.report_rl.RLRow`s, a table of their own.
Each row reads the run folder only: the method and data from `config.json`, the steps reached
and the wall time from `metrics.csv` (training windows, the last validation and the test: the
start-up before the first step is not counted), the commit and the paper's number from
`provenance.json` (`metazoo.engine.provenance`). A run trained before `provenance.json`
existed gets the paper entry of the one preset with a `paper:` for its setting (method, data,
test ways and shots), if there is one. A paper number stands beside a row of that setting
only: not beside a validation split, other ways or shots, or other test-time options.
Formatting is `metazoo.report_table`, the figure `metazoo.report_plot`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metazoo import paper
from metazoo.engine import provenance
from metazoo.engine.log import read as read_metrics
from metazoo.errors import CheckpointError
from metazoo.report_rl import RLRow, is_rl, rows_of


@dataclass(frozen=True)
class Row:
    """One results file of a run, as the table shows it (accuracy in percent)."""

    run: str  # the folder as given
    results: str  # file name
    method: str  # the registry's display name, then what an eval changed: "Reptile (bn_mode=...)"
    algorithm: str  # registry name
    data: str
    split: str
    ways: int
    shots: int
    queries: int
    episodes: int
    metric: str  # "accuracy" (percent) or "mse"
    mean: float
    ci95: float
    nll: float | None
    ece: float | None
    steps: int  # meta-training steps reached
    meta_steps: int  # steps the run was configured for (after any resume that extended it)
    wall_s: float  # training loop, last validation and test (an eval row: that evaluation)
    test_s: float
    commit: str | None  # None: the run predates provenance.json
    paper: dict[str, Any] | None
    paper_from: str  # "run" (provenance.json), "preset NAME" (matched by setting) or ""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"'{path}' is damaged ({str(e).splitlines()[0]})") from None


def _config(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise CheckpointError(f"'{run}' is not a run folder (no such folder)")
    if not (run / "config.json").exists():
        raise CheckpointError(f"'{run}' is not a run folder (no config.json); pass the --out "
                              "folder of `metazoo train`")
    cfg = _json(run / "config.json")
    try:
        _ = cfg["algorithm"]["name"], cfg["data"]["name"], cfg["eval"]["ways"]
        _ = cfg["eval"]["shots"], cfg["train"]["meta_steps"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"'{run / 'config.json'}' is damaged (no {e})") from None
    return dict(cfg)


def _setting(cfg: dict[str, Any]) -> provenance.Setting:
    """`provenance.setting` of a run's config.json (older ones have no `rl` section)."""
    rl = cfg.get("rl") or {}
    return (cfg["algorithm"]["name"], cfg["data"]["name"], cfg["eval"]["ways"],
            cfg["eval"]["shots"], rl.get("family"), json.dumps(rl.get("options") or {},
                                                               sort_keys=True))


@functools.cache
def preset_papers() -> dict[provenance.Setting, list[tuple[str, dict[str, Any]]]]:
    """The bundled presets with a `paper:` entry, by the setting it is for."""
    from metazoo.config_files import from_dict, preset_dict, preset_names

    found: dict[provenance.Setting, list[tuple[str, dict[str, Any]]]] = {}
    for name in preset_names():
        raw = preset_dict(name)
        if paper.KEY in raw:
            key = provenance.setting(from_dict(raw))
            found.setdefault(key, []).append((name, paper.check(raw[paper.KEY])))
    return found


def _paper(cfg: dict[str, Any], prov: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    if prov is not None:
        return (prov.get("paper"), "run") if prov.get("paper") else (None, "")
    matches = preset_papers().get(_setting(cfg), [])
    return (matches[0][1], f"preset {matches[0][0]}") if len(matches) == 1 else (None, "")


def _meta_steps(run: Path, cfg: dict[str, Any]) -> int:
    """`train.meta_steps`, as the last resume that changed it left it (`resumes.json`)."""
    steps = int(cfg["train"]["meta_steps"])
    path = run / "resumes.json"
    entries = _json(path) if path.exists() else []
    for entry in entries if isinstance(entries, list) else []:
        change = entry.get("changes", {}).get("train.meta_steps") if isinstance(entry, dict) \
            else None
        if isinstance(change, list) and len(change) == 2:
            steps = int(change[1])
    return steps


def _progress(run: Path, cfg: dict[str, Any]) -> tuple[int, float]:
    """Steps reached and seconds of the training loop with its last validation (none for a run
    of `train.meta_steps=0`, which tests its initial weights and logs nothing)."""
    path = run / "metrics.csv"
    if not path.exists() and int(cfg["train"]["meta_steps"]) == 0:
        return 0, 0.0
    if not path.exists():
        raise CheckpointError(f"'{run}' has no metrics.csv (the training log); is it a run "
                              "folder of `metazoo train`?")
    rows = read_metrics(path)
    steps = max((int(r["step"]) for r in rows), default=0)
    seconds = sum(float(r["seconds"] or 0) for r in rows if r["split"] == "train")
    # a validation after the last logged step falls in no training window
    seconds += sum(float(r["seconds"] or 0) for r in rows
                   if r["split"] == "val" and int(r["step"]) == steps)
    return steps, seconds


def _results_files(run: Path) -> list[tuple[Path, dict[str, Any]]]:
    files = [run / "results.json"] if (run / "results.json").exists() else []
    files += sorted(p for p in run.glob("results.*.json") if p.name != "results.json")
    out = [(p, _json(p)) for p in files]
    out = [(p, r) for p, r in out if isinstance(r, dict) and "protocol" not in r]
    if not out:
        why = (f"it stopped on an error: see {run / 'error.txt'}" if (run / "error.txt").exists()
               else f"the run has not finished: metazoo train --out {run} --resume continues it")
        raise CheckpointError(f"'{run}' has no results.json ({why})")
    return out


def run_rows(run: Path) -> list[Row | RLRow]:
    """The rows of one run folder: its test, then each `metazoo eval` of it."""
    from metazoo import algorithms

    run = Path(run)
    cfg = _config(run)
    prov = provenance.read(run)
    files = _results_files(run)
    steps, train_s = _progress(run, cfg)
    if is_rl(cfg):
        return list(rows_of(run, cfg, prov, files, steps, train_s, _meta_steps(run, cfg)))
    name = cfg["algorithm"]["name"]
    display = algorithms.get(name).display if name in algorithms.names() else name
    entry, paper_from = _paper(cfg, prov)
    rows: list[Row | RLRow] = []
    for path, res in files:
        metric = res.get("metric")
        if metric not in ("accuracy", "mse") or not isinstance(res.get(metric), int | float):
            raise CheckpointError(f"'{path}' is damaged (no accuracy or mse)")
        what = path.name[len("results."):-len(".json")]
        scale = 100.0 if metric == "accuracy" else 1.0
        own = path.name == "results.json"
        same = (res.get("split") == "test" and not res.get("options")
                and (res.get("ways"), res.get("shots")) == _setting(cfg)[2:4])
        seconds = float(res.get("seconds", 0.0))
        rows.append(Row(
            run=str(run), results=path.name, method=display if own else f"{display} ({what})",
            algorithm=name, data=str(res.get("dataset", cfg["data"]["name"])),
            split=str(res.get("split", "test")), ways=int(res.get("ways", 0)),
            shots=int(res.get("shots", 0)), queries=int(res.get("queries", 0)),
            episodes=int(res.get("episodes", 0)), metric=metric, mean=scale * res[metric],
            ci95=scale * float(res.get("ci95", math.nan)), nll=res.get("nll"),
            ece=res.get("ece"), steps=steps, meta_steps=_meta_steps(run, cfg),
            wall_s=(train_s if own else 0.0) + seconds, test_s=seconds,
            commit=None if prov is None else str(prov.get("commit")),
            paper=entry if same else None, paper_from=paper_from if same else ""))
    return rows


def rows(runs: Sequence[str | Path]) -> list[Row | RLRow]:
    """The rows of every run folder, in the order given; one bad folder is a one-line
    `CheckpointError` naming it and what it lacks."""
    return [row for run in runs for row in run_rows(Path(run))]
