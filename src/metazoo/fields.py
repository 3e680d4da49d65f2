"""Typed values from plain data: the one place where config values are coerced and checked.

A config dataclass declares each field's type (`int`, `float`, `bool`, `str`, `X | None`,
`Literal[...]` choices, `tuple[int, ...]`); `from_mapping` turns a plain mapping (read from YAML,
JSON or `--set`) into an instance, checking every key and value against those types. Every
`float` must be finite (no config value means anything as NaN or infinity) and every `int` must
fit in 64 bits. So a dataclass's own `validate()` keeps only range and cross-field checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from metazoo.errors import ConfigError

T = TypeVar("T")
INT_MAX = 2**63 - 1  # configs hold int64 values (torch seeds, counts)
INT_MIN = -(2**63)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`"; did you mean 'x'?"` for the closest of `options`, or `""` when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _short(value: Any, limit: int = 40) -> str:
    """`repr(value)`, cut to `limit` characters (a 300-digit number stays one short line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp`; a `ConfigError` naming `key` when it is not one."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; "
                              f"got {_short(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list like [40, 40]; got {_short(value)}")
        items = typing.get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(coerce(v, items[0], key) for v in value)
        if len(items) != len(value):
            raise ConfigError(f"{key} must be a list of {len(items)} values; got {_short(value)}")
        return tuple(coerce(v, t, key) for v, t in zip(value, items, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {_short(value)}")
        if not INT_MIN <= value <= INT_MAX:
            raise ConfigError(f"{key} must fit in 64 bits (|value| < 2^63); got {_short(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number; got {_short(value)}")
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(f"{key} must be a finite number; got {_short(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number; got {_short(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {_short(value)}")
        return value
    return value


def from_mapping(cls: type[T], values: Mapping[str, Any], prefix: str, *,
                 base: T | None = None) -> T:
    """An instance of dataclass `cls` from `values`, every key known and every value coerced.

    Fields not in `values` keep their value in `base` (default: the field defaults). Unknown
    keys raise `ConfigError` naming `prefix.key` with the closest known key.
    """
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}.{key}'{did_you_mean(key, known)}")
    coerced = {k: coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    if base is not None:
        return dataclasses.replace(base, **coerced)  # type: ignore[type-var]
    return cls(**coerced)
