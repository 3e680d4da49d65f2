"""Backbones: plain `nn.Module` feature extractors with a `feature_dim` attribute and no head.

Each backbone is one `BackboneSpec` in `BACKBONES`, registered below (the list is the
registration list): `cls` is the module class (`build(name, **kwargs)` calls it) and `build`
makes it from a run's `model` config and the input shape (what `metazoo train` does). The
contract tests (`tests/models/test_contract.py`) run over every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from metazoo.errors import ConfigError
from metazoo.models import pretrained
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from metazoo.models.r2d2_conv import R2D2Conv
from metazoo.models.resnet12 import ResNet12
from metazoo.registry import Registry

if TYPE_CHECKING:
    from metazoo.config import ModelConfig

InputKind = Literal["image", "vector"]  # (C, H, W) or (D,)


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone the library knows.

    Attributes:
        name: the `model.name` of a config.
        cls: the module class; `models.build(name, **kwargs)` calls it.
        build: `build(model_config, input_shape)`, the module a run's `model` section describes.
        description: one line.
        inputs: the input kinds it takes.
    """

    name: str
    cls: Callable[..., nn.Module]
    build: Callable[[ModelConfig, tuple[int, ...]], nn.Module]
    description: str
    inputs: tuple[InputKind, ...]


def _conv4(m: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    return Conv4(input_shape=input_shape, hidden=m.hidden, blocks=m.blocks, pools=m.pools)


def _mlp(m: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    return MLP(input_shape=input_shape, hidden=m.widths, activation=m.activation)


def _given(m: ModelConfig, **names: str) -> dict[str, Any]:
    """The options of `m` that are set (not None), under the constructor's argument names."""
    return {arg: getattr(m, field) for arg, field in names.items()
            if getattr(m, field) is not None}


def _resnet12(m: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    return ResNet12(input_shape=input_shape,
                    **_given(m, widths="channels", drop_rate="dropout"))


def _r2d2_conv(m: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    options = _given(m, widths="channels")
    if m.dropout is not None:  # the paper's dropout sits in the last two blocks
        options["dropout"] = (0.0, 0.0, m.dropout, m.dropout)
    return R2D2Conv(input_shape=input_shape, **options)


BACKBONES: Registry[BackboneSpec] = Registry("backbone", "metazoo.models.names()")
BACKBONES.add(BackboneSpec("conv4", Conv4, _conv4, "Vinyals et al. 2016: 4 x (conv 3x3, batch "
                           "norm, ReLU, 2x2 max-pool); model.hidden, blocks, pools", ("image",)))
BACKBONES.add(BackboneSpec("mlp", MLP, _mlp, "Linear+ReLU layers of model.widths (MAML's 40-40 "
                           "sinusoid regressor); inputs flattened", ("vector", "image")))
BACKBONES.add(BackboneSpec("resnet12", ResNet12, _resnet12, "MetaOptNet/TADAM ResNet-12 "
                           "(64-160-320-640, DropBlock); model.channels, dropout", ("image",)))
BACKBONES.add(BackboneSpec("r2d2_conv", R2D2Conv, _r2d2_conv, "R2-D2's 4 conv blocks "
                           "(96-192-384-512), features of the last two; model.channels, dropout",
                           ("image",)))


def names() -> list[str]:
    """Registered backbone names."""
    return BACKBONES.names()


def get(name: str) -> BackboneSpec:
    """The spec of backbone `name`; an unknown name is a `ConfigError`."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; choose one of {', '.join(names())}")
    return BACKBONES.get(name)


def _checked(name: str, make: Callable[[], nn.Module]) -> nn.Module:
    try:
        return make()
    except (TypeError, ValueError, RuntimeError) as e:  # a constructor's probe pass included
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"backbone '{name}' cannot be built with these settings ({first}); "
                          "check model.* and data.image_size") from None


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build backbone `name` (e.g. `build("conv4", input_shape=(1, 28, 28), hidden=64)`)."""
    spec = get(name)
    return _checked(name, lambda: spec.cls(**kwargs))


def build_from_config(model: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """The backbone of a run's `model` config for inputs of `input_shape`, with the weights of
    `model.pretrained` when it names a pre-training (`metazoo.models.pretrained`)."""
    spec = get(model.name)
    kind = "image" if len(input_shape) == 3 else "vector"
    if kind not in spec.inputs:
        fits = [s.name for s in BACKBONES if kind in s.inputs]
        raise ConfigError(f"backbone '{model.name}' takes {' or '.join(spec.inputs)} inputs but "
                          f"the dataset gives {kind}s of shape {tuple(input_shape)}; choose "
                          f"model.name={' or '.join(fits)}")
    backbone = _checked(model.name, lambda: spec.build(model, tuple(input_shape)))
    if model.pretrained is not None:  # weights of `metazoo pretrain` (metazoo.models.pretrained)
        pretrained.apply(backbone, model.name, tuple(input_shape), model.pretrained)
    dry_run(model.name, backbone, tuple(input_shape))
    return backbone


def modulated_widths(backbone: nn.Module, algorithm: str) -> tuple[int, ...]:
    """The channels of each block a FiLM `modulation` scales (`block_widths`); `ConfigError`
    naming `algorithm` for a backbone without that extension point."""
    widths: tuple[int, ...] | None = getattr(backbone, "block_widths", None)
    if widths is None:
        raise ConfigError(f"{algorithm} needs a backbone with a modulation extension point "
                          f"(block_widths and forward_with(modulation=)): one of "
                          f"{', '.join(names())}; got {type(backbone).__name__}")
    return tuple(widths)


def dry_run(name: str, backbone: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Run `backbone` once on two zero inputs, so settings it cannot run with (too many pooling
    blocks for the image size, a zero width) are a one-line `ConfigError` before training."""
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(2, *input_shape))
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"backbone '{name}' cannot run on inputs of shape {input_shape} with "
                          f"these model settings ({first}); check model.* and "
                          "data.image_size") from None
    if out.numel() == 0:
        raise ConfigError(f"backbone '{name}' gives empty features for inputs of shape "
                          f"{input_shape}; check model.* and data.image_size")


__all__ = ["BACKBONES", "MLP", "BackboneSpec", "Conv4", "R2D2Conv", "ResNet12", "build",
           "build_from_config", "get", "modulated_widths", "names"]
