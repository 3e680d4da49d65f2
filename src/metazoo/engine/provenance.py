"""Where a run came from: `provenance.json` in its folder, written once when the run starts.

It holds the preset and config file the run's config was layered from, the paper's number for
that setting (their `paper:` entry, `metazoo.paper`) and the commit of the code that trained
it. A resume keeps it; `metazoo report` reads it, so a table shows what the run was trained
against even after the presets change. Runs trained before it existed have none.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metazoo import paper
from metazoo.config import RunConfig
from metazoo.config_files import from_dict, layered
from metazoo.errors import CheckpointError

FILE = "provenance.json"


@dataclass(frozen=True)
class Origin:
    """What a run was made from (all None: a config built in Python)."""

    preset: str | None = None
    config_file: str | None = None
    paper: dict[str, Any] | None = None  # the published number for this setting


Setting = tuple[str, str, int, int, str | None, str]


def setting(cfg: RunConfig) -> Setting:
    """What a paper's number is for: method, data, the test episodes' ways and shots, and a
    meta-RL run's task family and its options."""
    return (cfg.algorithm.name, cfg.data.name, cfg.eval.ways, cfg.eval.shots, cfg.rl.family,
            json.dumps(cfg.rl.options, sort_keys=True))


def origin(preset: str | None, config_file: str | Path | None,
           overrides: Sequence[str] = ()) -> Origin:
    """The origin of `metazoo train --preset P --config F --set ...`: the paper entry of the
    preset and file holds only while `--set` keeps their setting (another method, dataset, or
    test ways or shots, and the paper's number is for something else)."""
    base = layered(preset, config_file)
    full = layered(preset, config_file, list(overrides))
    entry = full.get(paper.KEY)
    if entry is not None and setting(from_dict(base)) != setting(from_dict(full)):
        entry = None
    return Origin(preset, None if config_file is None else str(config_file),
                  None if entry is None else paper.check(entry))


def commit() -> str:
    """`git rev-parse HEAD` of the repository metazoo is imported from (`src/metazoo` in it),
    else "unknown" (an installed package, no git). Read-only: no index refresh, no lock."""
    package = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=20, check=True,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if len(out) != 2 or Path(out[0]).resolve() / "src" / "metazoo" != package:
        return "unknown"
    return out[1]


def record(src: Origin | None) -> dict[str, Any]:
    """The content of `provenance.json` for a run made from `src`."""
    from metazoo import __version__

    src = src or Origin()
    return {"preset": src.preset, "config_file": src.config_file, "paper": src.paper,
            "commit": commit(), "metazoo": __version__}


def read(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's `provenance.json`, or None when the run predates it."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"'{path}' is damaged ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' is damaged (not a JSON object)")
    return data
