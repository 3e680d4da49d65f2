"""A paper's published number for a setting: the `paper:` entry of a preset or config file.

Written once, in the preset of that setting, e.g.
`paper: {accuracy: 98.7, ci95: 0.4, source: "Finn et al. 2017, Table 1, MAML 5-way 1-shot"}`:
the accuracy in percent (or `mse` for regression), its 95% CI half-width where the paper gives
one, and where it comes from. It is not part of `RunConfig` (it does not change what a run
computes): `config_files.from_dict` checks it and passes over it, a run records it in
`provenance.json` (`metazoo.engine.provenance`), and `metazoo report` prints it beside the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from metazoo.errors import ConfigError

KEY = "paper"
NUMBERS = ("accuracy", "mse", "ci95")  # accuracy in percent; ci95 in the same unit
KEYS = (*NUMBERS, "source")


def check(value: Any) -> dict[str, Any]:
    """`value` as a paper entry: a mapping of `KEYS` with `source` (text) and one of `accuracy`
    or `mse` (finite numbers); anything else is a one-line `ConfigError`."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"'paper' must be a mapping such as {{accuracy: 98.7, ci95: 0.4, "
                          f"source: \"Finn et al. 2017, Table 1\"}}, got {str(value)[:40]!r}")
    entry = dict(value)
    unknown = sorted(str(k) for k in entry if k not in KEYS)
    if unknown:
        raise ConfigError(f"unknown key 'paper.{unknown[0]}'; a paper entry has "
                          f"{', '.join(KEYS)}")
    for key in NUMBERS:
        v = entry.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v)):
            raise ConfigError(f"paper.{key} must be a finite number, got {str(v)[:40]!r}")
    if ("accuracy" in entry) == ("mse" in entry):
        raise ConfigError("a paper entry gives one published number: paper.accuracy (percent) "
                          "or paper.mse")
    if not isinstance(entry.get("source"), str) or not entry["source"].strip():
        raise ConfigError("paper.source must say where the number comes from (authors, year, "
                          "table, row)")
    return entry
