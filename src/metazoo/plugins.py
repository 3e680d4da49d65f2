"""Your own parts by name: modules that register backbones, datasets or algorithms, recorded in
the run folder so that `metazoo eval`, `--resume` and `predict` can rebuild the run.

A user module registers its parts at import (`models.BACKBONES.add(BackboneSpec(...))`,
`data.DATASETS.add(...)`, `@algorithms.register`) and is named in the config's `plugins` list
(or `--plugin MODULE` on the command line). `from_dict` imports the list before it reads the rest,
so `model.name: my_net` is known when it is checked. A run also records the modules of the
registered parts it actually uses (`discovered`), so a folder trained from a Python script
that registered `my_net` in an importable module rebuilds from the command line; a part
registered in the script itself (`__main__`) cannot be imported again, and the run says so.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from metazoo.errors import ConfigError

if TYPE_CHECKING:
    from metazoo.config import RunConfig


def import_plugins(modules: Iterable[str]) -> None:
    """Import each module (it registers its parts); `ConfigError` naming one that fails. The
    current directory is searched last, as `python -m` would (the `metazoo` script alone does
    not put it on the path)."""
    here = os.getcwd()
    if modules and here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    for name in modules:
        if "=" in name:  # `backbone=NAME`: a part given to metazoo.Trainer (metazoo.parts)
            from metazoo.parts import restore

            restore(name)
            continue
        if name == "__main__":
            raise ConfigError("the run uses a part registered in a script (__main__), which "
                              "cannot be imported again; move its registration into a module "
                              "on the Python path and name that module in `plugins`")
        try:
            importlib.import_module(name)
        except Exception as e:  # any failure of user code at import is reported in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ConfigError(f"plugin module '{name}' cannot be imported ({type(e).__name__}"
                              f"{': ' + first if first else ''}); make it importable "
                              "(PYTHONPATH, pip install) or remove it from `plugins`") from None


def _outside(module: str) -> list[str]:
    return [] if module == "metazoo" or module.startswith("metazoo.") else [module]


def discovered(cfg: RunConfig) -> tuple[str, ...]:
    """`cfg.plugins` and the modules outside metazoo that registered the backbone, dataset and
    algorithm `cfg` names (in that order, without repeats)."""
    from metazoo import algorithms, models
    from metazoo.data import get_spec

    found = list(cfg.plugins)
    found += _outside(models.get(cfg.model.name).cls.__module__)
    load = get_spec(cfg.data.name).load
    found += _outside(load.__module__) if load is not None else []
    found += _outside(algorithms.get(cfg.algorithm.name).cls.__module__)
    return tuple(dict.fromkeys(found))
