"""Pins the private PyTorch behaviour that `metazoo.torch_compat` wraps."""

from __future__ import annotations

import torch
from torch import nn

from metazoo.torch_compat import has_forward_hooks, in_functorch_transform


def test_functorch_level_is_seen_inside_vmap_and_grad_only():
    assert not in_functorch_transform()
    seen: list[bool] = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append(in_functorch_transform())
        return (x * 2).sum()

    torch.vmap(probe)(torch.ones(3, 2))
    torch.func.grad(probe)(torch.ones(2))
    with torch.no_grad(), torch.enable_grad():
        probe(torch.ones(2))
    assert seen == [True, True, False]


def test_forward_hooks_are_seen_and_removed():
    lin = nn.Linear(2, 2)
    assert not has_forward_hooks(lin)
    handle = lin.register_forward_hook(lambda m, i, o: None)
    assert has_forward_hooks(lin)
    handle.remove()
    pre = lin.register_forward_pre_hook(lambda m, i: None)
    assert has_forward_hooks(lin)
    pre.remove()
    assert not has_forward_hooks(lin)
