"""A search space over a config's own keys, read from YAML and checked against the typed config.

One line per searched key, `section.key: {KIND: ...}`:

    algorithm.inner_lr: {log_float: [0.001, 1]}   # log-uniform in [low, high] (low > 0)
    train.outer_lr: {float: [0.0001, 0.01]}        # uniform in [low, high]
    algorithm.inner_steps: {int: [1, 5]}           # integers low..high, both included
    train.optimizer: {categorical: [adam, sgd]}    # one of the listed values

A key is a field of a `RunConfig` section or of the base config's algorithm (`metazoo list
options maml`); `float` kinds need a float field, `int` an integer one, and each bound or choice
must be a value the config accepts on its own (checked by building the base config with it), so
a space that cannot run is a one-line `ConfigError` before any trial.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metazoo.config import SECTIONS
from metazoo.config_files import from_dict, read_yaml
from metazoo.errors import ConfigError
from metazoo.fields import coerce, did_you_mean

if TYPE_CHECKING:
    import optuna

KINDS = ("log_float", "float", "int", "categorical")
EXAMPLE = "algorithm.inner_lr: {log_float: [0.001, 1]}"


@dataclass(frozen=True)
class Param:
    """One searched key: a range (`low`, `high`) or a list of `choices`."""

    key: str  # `section.field`, as `--set` takes it
    kind: str  # one of KINDS
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """This key's value for `trial` (Optuna's name for the parameter is the key)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log_float")

    def to_json(self) -> dict[str, Any]:
        """`{"algorithm.inner_lr": {"log_float": [0.001, 1.0]}}`-style plain data."""
        return {self.kind: list(self.choices) if self.kind == "categorical" else
                [self.low, self.high]}


def _field_type(key: str, base: Mapping[str, Any]) -> Any:
    """The declared type of config key `key` (`X | None` as declared), or a `ConfigError`
    naming the closest key."""
    section, _, name = key.partition(".")
    if not name or "." in name:
        raise ConfigError(f"space key '{key}' must be section.key, e.g. {EXAMPLE}")
    if section == "eval":
        raise ConfigError(f"space key '{key}': evaluation settings define the score that trials "
                          "are compared on; they cannot be searched (set them with --set)")
    if section == "algorithm":
        if name == "name":
            raise ConfigError("space key 'algorithm.name' cannot be searched: a study tunes one "
                              "algorithm (run one study per algorithm)")
        from metazoo import algorithms

        chosen = from_dict(base).algorithm.name
        cls: type = algorithms.get(chosen).config
        owner = f"algorithm '{chosen}'"
    elif section in SECTIONS:
        cls, owner = SECTIONS[section], f"section '{section}'"
    else:
        raise ConfigError(f"space key '{key}': no config section '{section}'"
                          f"{did_you_mean(section, ['algorithm', *SECTIONS])}")
    names = [f.name for f in dataclasses.fields(cls)]
    if name not in names:
        raise ConfigError(f"space key '{key}': {owner} has no option '{name}'"
                          f"{did_you_mean(name, names)}")
    return typing.get_type_hints(cls)[name]


def parse_param(key: str, spec: Any, base: Mapping[str, Any]) -> Param:
    """One space entry, checked against the config that `base` (nested dicts) makes."""
    declared = _field_type(key, base)
    args = [a for a in typing.get_args(declared) if a is not type(None)]
    optional = typing.get_origin(declared) in (typing.Union, types.UnionType)
    tp = args[0] if optional and args else declared  # a range searches X of `X | None`
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"space key '{key}' needs one of {', '.join(KINDS)}, e.g. "
                          f"{{log_float: [0.001, 1]}}; got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind == "categorical":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"space key '{key}': categorical needs a non-empty list of values")
        choices = tuple(coerce(v, declared, key) for v in values)
        if any(not isinstance(c, bool | int | float | str | type(None)) for c in choices):
            raise ConfigError(f"space key '{key}': categorical values must be numbers, strings, "
                              "true/false or null")
        param = Param(key, kind, choices=choices)
    else:
        want = int if kind == "int" else float
        if tp is not want:
            what, hint = {int: ("an integer", "int"), float: ("a number", "float or log_float")
                          }.get(tp, ("not a number", "categorical"))
            raise ConfigError(f"space key '{key}' is {what}: use {hint}, not {kind}")
        if not isinstance(values, list) or len(values) != 2:
            raise ConfigError(f"space key '{key}': {kind} needs [low, high]; got {values!r}")
        low, high = (coerce(v, want, key) for v in values)
        if low >= high:
            raise ConfigError(f"space key '{key}': low must be below high; got [{low}, {high}]")
        if kind == "log_float" and low <= 0:
            raise ConfigError(f"space key '{key}': log_float needs low > 0; got {low}")
        param = Param(key, kind, low, high)
    for value in param.choices or (param.low, param.high):  # each alone, on the base config
        try:
            from_dict(apply(base, {key: value}))
        except ConfigError as e:
            raise ConfigError(f"space key '{key}': the config refuses {value!r}: {e}") from None
    return param


def apply(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested config dicts `base` with `{"section.key": value}` laid over them (a copy)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in values.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def read_space(path: str | Path, base: Mapping[str, Any]) -> list[Param]:
    """The search space in YAML file `path`, checked against the config `base` makes."""
    entries = read_yaml(Path(path))
    if not entries:
        raise ConfigError(f"space file '{path}' is empty; give one key per line, e.g. {EXAMPLE}")
    params = []
    for key, spec in entries.items():
        try:
            params.append(parse_param(str(key), spec, base))
        except ConfigError as e:  # a value's own error (`fields.coerce`) gets the key in front
            if str(e).startswith("space key"):
                raise
            raise ConfigError(f"space key '{key}': {e}") from None
    return params
