"""Hyper-parameter search over a config's own keys: `metazoo tune` on Optuna.

`space` reads and checks the YAML search space, `objective` runs one trial (a short
meta-training scored on the validation episodes, pruned early when poor), `study` holds the
study (resumable, shared by several processes) and writes the best trial as a preset. Optuna is
an optional extra (`pip install 'metazoo[tune]'`), imported only when a study runs.
"""

from __future__ import annotations

from metazoo.tune.space import Param, read_space
from metazoo.tune.study import PRUNERS, tune

__all__ = ["PRUNERS", "Param", "read_space", "tune"]
