"""Random draws from an explicit generator, and diagonal Gaussian codes drawn with them.

Algorithms that sample inside a task (LEO's latent codes and weights, its dropout) take every
draw from a `torch.Generator` made by `metazoo.seeding.episode_generator`, or from none at all
in evaluation (`generator=None`: the mean, no dropout), never from torch's global generator.
The draws are made on the CPU (where such generators live) and moved to the tensor's device.

A Gaussian's parameters are the two halves `[mean; u]` of a last dimension, the scale
`sigma = max(exp(u) - (1 - offset), 1e-10)`: the parametrisation of LEO's reference code
(deepmind/leo, model.py `possibly_sample`), with `u` capped at `U_MAX`.
"""

from __future__ import annotations

import torch
from torch import Tensor

U_MAX = 10.0
"""Cap on `u` (scale at most e^10), not in the reference code: a draw's gradient grows like
exp(u), so gradient steps through draws can feed back until exp overflows (LEO's latent steps
on 8 features did so for 13 of 30 initialisations); capped, the scale stays finite. The code
instead falls back to a weight-decay-only step when the loss is NaN."""

def standard_normal(shape: tuple[int, ...], like: Tensor,
                    generator: torch.Generator | None) -> Tensor | None:
    """Draws of N(0, 1) of `shape`, in `like`'s dtype and device; None without a generator."""
    if generator is None:
        return None
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def dropout(x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout with rate `p` drawn from `generator`; `x` itself without one."""
    if generator is None or p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


def gaussian(params: Tensor, offset: float = 0.0, max_u: float = U_MAX
             ) -> tuple[Tensor, Tensor]:
    """`[..., 2d]` -> mean `[..., d]` and scale `max(exp(min(u, max_u)) - (1 - offset), 1e-10)`."""
    mean, u = params.chunk(2, dim=-1)
    return mean, (torch.exp(u.clamp_max(max_u)) - (1.0 - offset)).clamp_min(1e-10)


def sample(mean: Tensor, scale: Tensor, eps: Tensor | None) -> Tensor:
    """Reparameterised draw `mean + scale * eps`; the mean when `eps` is None."""
    return mean if eps is None else mean + scale * eps


def kl_to_standard_normal(mean: Tensor, scale: Tensor, eps: Tensor | None, *,
                          estimate: bool) -> Tensor:
    """Mean over elements of KL(N(mean, scale^2) || N(0, 1)).

    `estimate`: the single-sample estimate `log q(z) - log p(z)` at `z = mean + scale * eps`,
    as the reference code; written with `eps` (`(z - mean) / scale = eps` exactly), so a scale
    near its floor does not turn rounding in `z - mean` into a huge value. Otherwise the
    closed form `(scale^2 + mean^2 - 1) / 2 - log(scale)`. 0 without `eps` (evaluation).
    """
    if eps is None:
        return mean.new_zeros(())
    if estimate:
        z = mean + scale * eps
        return (-torch.log(scale) - eps.square() / 2 + z.square() / 2).mean()
    return ((scale.square() + mean.square() - 1) / 2 - torch.log(scale)).mean()
