"""One registry pattern for algorithms, backbones and datasets.

Each package keeps a `Registry` of frozen spec dataclasses (name, build or load callable, what
`metazoo list` shows) and fills it by explicit imports in its `__init__.py`: the import list is
the registration list, and the registry-driven contract tests run over every entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

from metazoo.errors import ConfigError
from metazoo.fields import did_you_mean


class Named(Protocol):
    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=Named)


class Registry(Generic[S]):
    """Specs by name, in registration order.

    Args:
        kind: what the entries are ("algorithm", "backbone", "dataset"), for messages.
        listing: the command that lists them, for messages.
    """

    def __init__(self, kind: str, listing: str) -> None:
        self.kind, self.listing = kind, listing
        self._specs: dict[str, S] = {}

    def add(self, spec: S) -> S:
        """Register `spec`; a second spec under one name is a programming error."""
        if spec.name in self._specs:
            raise RuntimeError(f"{self.kind} '{spec.name}' is registered twice")
        self._specs[spec.name] = spec
        return spec

    @contextmanager
    def temporarily(self, spec: S) -> Iterator[S]:
        """Register `spec` for the length of a `with` block, then remove it (even on an error).

        For tests that need an entry made in code, such as a small synthetic dataset.
        """
        self.add(spec)
        try:
            yield spec
        finally:
            del self._specs[spec.name]

    def get(self, name: str) -> S:
        """The spec registered as `name`; an unknown name is a `ConfigError` with a suggestion."""
        if name not in self._specs:
            raise ConfigError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._specs)}; "
                              f"`{self.listing}` shows them all")
        return self._specs[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._specs)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._specs.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)
