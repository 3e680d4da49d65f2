"""Backbones: plain `nn.Module` feature extractors with a `feature_dim` attribute and no head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metazoo.errors import ConfigError
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP

BACKBONES: dict[str, Callable[..., nn.Module]] = {"conv4": Conv4, "mlp": MLP}


def names() -> list[str]:
    """Registered backbone names."""
    return sorted(BACKBONES)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build backbone `name` (e.g. `build("conv4", input_shape=(1, 28, 28), hidden=64)`)."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; choose one of {', '.join(names())}")
    try:
        return BACKBONES[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"backbone '{name}': {e}") from None


__all__ = ["MLP", "Conv4", "build", "names"]
