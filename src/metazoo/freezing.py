"""A frozen module: its parameters become buffers of the same names.

A pre-trained backbone that an algorithm does not train (LEO's pre-computed features) must not
be a meta-parameter: buffers are not in `parameters()`, so the optimiser, gradient clipping and
the contract's "every meta-parameter gets a gradient" never see them, while `state_dict()` keeps
every name, so checkpoints and pre-trained weights load into a frozen module as before.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def freeze(module: M) -> M:
    """`module` itself, each of its parameters now a buffer (the same tensor, detached)."""
    for owner in module.modules():
        for name, p in list(owner.named_parameters(recurse=False)):
            delattr(owner, name)
            owner.register_buffer(name, p.detach())
    return module
