"""What a config section offers: each field, its type, its default and the comment beside it.

The comment is the one written after the field in the dataclass's source (`inner_lr: float =
0.4  # MAML alpha`), so `metazoo list options maml` says what the code says, with nothing to
keep in step by hand. A section is a `RunConfig` section (`data`, `train`, ...) or an algorithm
(its config class, with the fields of the classes it extends).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any

from metazoo.errors import ConfigError

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?#\s*(.*)$")


@dataclass(frozen=True)
class Option:
    """One field of a config section."""

    key: str  # `section.field`, as `--set` takes it
    type: str
    default: Any
    comment: str

    def line(self, width: int) -> str:
        return f"  {self.key:<{width}} {self.default!r:<14} {self.type:<22} {self.comment}"


def comments(cls: type) -> dict[str, str]:
    """Field name -> the comment after it in the source of `cls` and its bases."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # defined where no source is kept (a REPL)
            continue
        for line in source.splitlines():
            m = _FIELD.match(line)
            if m:
                found[m.group(1)] = m.group(2).strip()
    return found


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def options_of(section: str, cls: type, values: Any = None) -> list[Option]:
    """Every field of the dataclass `cls`, under the `--set` prefix `section`; defaults read
    from the instance `values` where given (an algorithm's registered defaults)."""
    notes = comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if values is not None:
            default: Any = getattr(values, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if dataclasses.is_dataclass(default):  # a nested section: listed on its own
            continue
        out.append(Option(f"{section}.{f.name}", _type_name(f.type), default,
                          notes.get(f.name, "")))
    return out


def section_options(name: str) -> list[Option]:
    """The options of a `RunConfig` section (`train`) or of an algorithm (`maml`), whose keys
    are `algorithm.*`; `ConfigError` naming the choices for anything else."""
    from metazoo import algorithms
    from metazoo.config import SECTIONS
    from metazoo.fields import did_you_mean

    if name in SECTIONS:
        return options_of(name, SECTIONS[name])
    if name in algorithms.names():
        spec = algorithms.get(name)
        return options_of("algorithm", spec.config, spec.make_config())
    from metazoo.rl import base as rl

    if rl.is_algorithm(name):  # a meta-RL learner (rl2, maml_rl)
        rl_spec = rl.algorithm_spec(name)
        return options_of("algorithm", rl_spec.config, rl_spec.make_config())
    choices = [*SECTIONS, *algorithms.names()]
    raise ConfigError(f"no config section or algorithm '{name}'{did_you_mean(name, choices)}; "
                      f"sections: {', '.join(SECTIONS)}; algorithms: `metazoo list algorithms`")
