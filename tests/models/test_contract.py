"""Every registered backbone keeps the contract the algorithms and the engine rely on.

Runs over `metazoo.models.BACKBONES`: a new backbone is tested by registering it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from metazoo import models
from metazoo.config import ModelConfig
from metazoo.errors import ConfigError

SHAPES = {"image": [(1, 28, 28), (3, 20, 20)], "vector": [(1,), (5,)]}
CASES = [(spec.name, shape) for spec in models.BACKBONES for kind in spec.inputs
         for shape in SHAPES[kind]]


def _build(name: str, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """In eval mode: random layers (dropout, DropBlock) off, so outputs compare exactly."""
    torch.manual_seed(seed)
    return models.build_from_config(ModelConfig(name=name), shape).eval()


def _input(shape: tuple[int, ...], rows: int = 6) -> torch.Tensor:
    return torch.randn(rows, *shape, generator=torch.Generator().manual_seed(1))


def test_every_backbone_declares_what_it_takes():
    assert models.names() == sorted(s.name for s in models.BACKBONES) and len(models.BACKBONES)
    for spec in models.BACKBONES:
        assert spec.inputs and set(spec.inputs) <= set(SHAPES), spec.name
        assert spec.description, spec.name


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_builds_from_the_default_config_and_gives_features(name, shape):
    net = _build(name, shape)
    assert tuple(net.input_shape) == shape  # `metazoo predict` reads the channels from it
    assert isinstance(net.feature_dim, int) and net.feature_dim > 0
    with torch.no_grad():
        out = net(_input(shape))
    assert out.shape == (6, net.feature_dim) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all()) and float(out.abs().sum()) > 0


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_config_defaults_are_the_module_defaults(name, shape):
    """`models.build(name, input_shape=...)` and a run's default `model` section agree."""
    torch.manual_seed(0)
    direct = models.build(name, input_shape=shape)
    from_config = _build(name, shape)
    a, b = direct.state_dict(), from_config.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_same_seed_same_weights_and_outputs_other_seed_differs(name, shape):
    a, b, c = _build(name, shape), _build(name, shape), _build(name, shape, seed=1)
    x = _input(shape)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))
    assert not torch.equal(a(x), c(x))


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_forward_with_uses_the_given_parameters(name, shape):
    net = _build(name, shape)
    if not hasattr(net, "forward_with"):
        pytest.skip(f"{name} has no forward_with (gradient-based algorithms cannot use it)")
    x = _input(shape)
    torch.testing.assert_close(net.forward_with({}, x), net(x))
    own = dict(net.named_parameters())
    torch.testing.assert_close(net.forward_with(own, x), net(x))
    g = torch.Generator().manual_seed(2)
    moved = {k: (p.detach() + 0.5 * torch.randn(p.shape, generator=g)).requires_grad_()
             for k, p in own.items()}
    out = net.forward_with(moved, x)
    assert not torch.allclose(out.detach(), net(x).detach())
    out.square().sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in moved.values())
    assert all(p.grad is None for p in net.parameters())  # its own weights were not used


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_gradient_reaches_every_parameter(name, shape):
    net = _build(name, shape)
    net(_input(shape)).square().sum().backward()
    for k, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), k


def test_unknown_backbone_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown backbone 'conv5'; choose one of"):
        models.build("conv5")
    with pytest.raises(ConfigError, match="unknown backbone"):
        models.build_from_config(ModelConfig(name="conv5"), (1, 28, 28))

    def broken(model, shape):
        raise ValueError(f"no {shape}")

    spec = models.BackboneSpec("broken", nn.Linear, broken, "test", ("vector",))
    with models.BACKBONES.temporarily(spec):
        with pytest.raises(ConfigError, match=r"backbone 'broken' cannot be built .*\(no \(3,\)\)"):
            models.build_from_config(ModelConfig(name="broken"), (3,))
        with pytest.raises(ConfigError, match="backbone 'broken'"):
            models.build("broken", nope=1)
    assert "broken" not in models.names()
    with pytest.raises(ConfigError, match=r"takes image inputs .* vectors of shape \(1,\); "
                                          "choose model.name=mlp"):
        models.build_from_config(ModelConfig(name="conv4"), (1,))
    with pytest.raises(ConfigError, match=r"cannot be built .*Output size is too small"):
        models.build_from_config(ModelConfig(name="conv4", blocks=9), (1, 28, 28))


def test_model_config_fields_are_used_by_some_backbone():
    """Each `model.*` key changes the module of at least one backbone (no dead config keys):
    its parameters' shapes, or its function (in training mode, from the same seed)."""
    changes = {"hidden": 8, "blocks": 2, "pools": 1, "widths": (7,), "activation": "tanh",
               "channels": (8, 8, 8, 8), "dropout": 0.5}
    # model.pretrained loads weights into any backbone: tests/engine/test_pretrain.py
    assert set(changes) == {f.name for f in dataclasses.fields(ModelConfig)} - {"name",
                                                                               "pretrained"}
    for key, value in changes.items():
        differs = []
        for name, shape in CASES:
            base = _build(name, shape).train()
            torch.manual_seed(0)
            other = models.build_from_config(
                dataclasses.replace(ModelConfig(name=name), **{key: value}), shape).train()
            shapes_differ = (base.state_dict().keys() != other.state_dict().keys() or any(
                a.shape != b.shape for a, b in zip(base.state_dict().values(),
                                                    other.state_dict().values(), strict=True))
                or base.feature_dim != other.feature_dim)
            if not shapes_differ:
                torch.manual_seed(2)
                out_base = base(_input(shape))
                torch.manual_seed(2)
                shapes_differ = not torch.equal(out_base, other(_input(shape)))
            differs.append(shapes_differ)
        assert any(differs), key
