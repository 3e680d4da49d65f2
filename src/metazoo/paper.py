"""A paper's published number for a setting: the `paper:` entry of a preset or config file.

Written once, in the preset of that setting, e.g.
`paper: {accuracy: 98.7, ci95: 0.4, source: "Finn et al. 2017, Table 1, MAML 5-way 1-shot"}`:
the accuracy in percent (or `mse` for regression), its 95% CI half-width where the paper gives
one, and where it comes from. A meta-RL setting gives `return` or `regret` (RL²'s trial totals)
or a curve by inner steps, `return_after_0`, `return_after_1`, ... (MAML-RL), named as the
metrics of its results file, so `metazoo report` puts each beside its own. It is not part of
`RunConfig` (it does not change what a run computes): `config_files.from_dict` checks it and
passes over it, a run records it in `provenance.json` (`metazoo.engine.provenance`), and
`metazoo report` prints it beside the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from metazoo.errors import ConfigError

KEY = "paper"
SUPERVISED = ("accuracy", "mse")  # accuracy in percent
RL = ("return", "regret")  # a meta-RL trial's totals (RL²)
NUMBERS = (*SUPERVISED, *RL, "ci95")  # ci95 in the unit of the one number it goes with
KEYS = (*NUMBERS, "source")
RL_CURVE = re.compile(r"(return|regret)_after_\d+$")  # MAML-RL: after 0, 1, ... inner steps


def check(value: Any) -> dict[str, Any]:
    """`value` as a paper entry: a mapping of `KEYS` (and `RL_CURVE` names) with `source` (text)
    and either one of `accuracy` or `mse`, or meta-RL numbers (finite); anything else is a
    one-line `ConfigError`."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"'paper' must be a mapping such as {{accuracy: 98.7, ci95: 0.4, "
                          f"source: \"Finn et al. 2017, Table 1\"}}, got {str(value)[:40]!r}")
    entry = dict(value)
    unknown = sorted(str(k) for k in entry if k not in KEYS and not RL_CURVE.match(str(k)))
    if unknown:
        raise ConfigError(f"unknown key 'paper.{unknown[0]}'; a paper entry has "
                          f"{', '.join(KEYS)} or return_after_<steps>")
    for key in entry:
        v = entry[key]
        if key != "source" and (isinstance(v, bool) or not isinstance(v, int | float)
                                or not math.isfinite(v)):
            raise ConfigError(f"paper.{key} must be a finite number, got {str(v)[:40]!r}")
    supervised = sum(k in entry for k in SUPERVISED)
    rl = sum(k in RL or bool(RL_CURVE.match(str(k))) for k in entry)
    if (supervised, rl > 0) not in ((1, False), (0, True)):
        raise ConfigError("a paper entry gives one published number: paper.accuracy (percent) "
                          "or paper.mse; for meta-RL, paper.return, paper.regret or "
                          "paper.return_after_<steps>")
    if not isinstance(entry.get("source"), str) or not entry["source"].strip():
        raise ConfigError("paper.source must say where the number comes from (authors, year, "
                          "table, row)")
    return entry
