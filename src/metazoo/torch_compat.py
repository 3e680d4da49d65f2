"""The private PyTorch details metazoo relies on, each behind one small function.

`tests/test_torch_compat.py` pins what each returns, so a PyTorch upgrade that changes them
fails there, in one place, instead of silently changing behaviour elsewhere.
"""

from __future__ import annotations

from torch import nn
from torch._C._functorch import maybe_current_level


def in_functorch_transform() -> bool:
    """Whether the caller runs inside a `torch.func` transform (`vmap`, `grad`, ...).

    Inside one, `torch.autograd.grad` cannot see the transformed tensors and tensor layouts
    cannot be chosen, so the inner loop and conv4 take other paths there.
    """
    return maybe_current_level() is not None


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether `module` itself has forward or forward-pre hooks (global hooks not counted)."""
    return bool(module._forward_hooks or module._forward_pre_hooks)
