"""External memory with content reads and Least Recently Used Access writes (MANN).

Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. "Meta-Learning with Memory-Augmented Neural
Networks". ICML 2016. arXiv:1605.06065. Sec. 3.1-3.2, Eq. 2-8.

Pure functions over a `MemoryState`; every tensor may carry leading batch dimensions `...`:
memory `M` `[..., slots, size]`, usage `w^u` `[..., slots]`, read weights `w^r`
`[..., heads, slots]`, read vectors `r` `[..., heads, size]`. One `step` per time step:
    w^lu_{t-1}: head j is one-hot at the j-th least used slot of w^u_{t-1}, so the heads together
        cover the n smallest usages, n = number of heads (Eq. 6);
    w^w_t = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}            (Eq. 7)
    the least used slot set to zero, then M_t(i) = M_{t-1}(i) + sum_heads w^w_t(i) k_t  (Eq. 8)
    K(k, M(i)) = k . M(i) / (|k| |M(i)|),  w^r_t = softmax_i K,  r_t = sum_i w^r_t(i) M_t(i)
                                                                                   (Eq. 2-4)
    w^u_t = gamma w^u_{t-1} + sum_heads w^r_t + sum_heads w^w_t                    (Eq. 5)
The same key k_t reads and writes (Eq. 8 writes the key); `step(..., values=a_t)` writes a
separate add vector instead, as NTM-style re-implementations do (reads still use k_t). The
memory starts at a small constant (1e-6, as the reference re-implementations; cosine similarity
is undefined for zero rows), usage and weights at zero; `initial_state` makes a fresh one,
which a caller does per episode.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

INITIAL_VALUE = 1e-6  # every entry of a fresh memory
EPS = 1e-8  # floor of a vector norm in the cosine similarity


class MemoryState(NamedTuple):
    """The memory and its access history after a time step."""

    memory: Tensor  # [..., slots, size]: M_t
    usage: Tensor  # [..., slots]: w^u_t
    read_weights: Tensor  # [..., heads, slots]: w^r_t
    reads: Tensor  # [..., heads, size]: r_t


def initial_state(batch_shape: tuple[int, ...], slots: int, size: int, heads: int, *,
                  like: Tensor) -> MemoryState:
    """A fresh memory (every entry `INITIAL_VALUE`), zero usage, weights and reads, with the
    dtype and device of `like`."""
    return MemoryState(like.new_full((*batch_shape, slots, size), INITIAL_VALUE),
                       like.new_zeros((*batch_shape, slots)),
                       like.new_zeros((*batch_shape, heads, slots)),
                       like.new_zeros((*batch_shape, heads, size)))


def _norm(x: Tensor) -> Tensor:
    # sqrt of a floored square sum: finite gradients at a zero row (a freshly zeroed slot)
    return (x * x).sum(-1).clamp_min(EPS * EPS).sqrt()


def cosine_similarity(keys: Tensor, memory: Tensor) -> Tensor:
    """Eq. 2: keys `[..., heads, size]` against rows `[..., slots, size]` -> `[..., heads,
    slots]`."""
    dots = keys @ memory.transpose(-1, -2)
    return dots / (_norm(keys)[..., :, None] * _norm(memory)[..., None, :])


def read(keys: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 3-4: read weights `softmax(K)` `[..., heads, slots]` and read vectors
    `[..., heads, size]`."""
    weights = torch.softmax(cosine_similarity(keys, memory), dim=-1)
    return weights, weights @ memory


def least_used(usage: Tensor, n: int) -> Tensor:
    """`[..., slots]` usage -> `[..., n, slots]`: row j one-hot at the j-th least used slot (ties
    go to the lower index). Not differentiable (a selection), as in the paper."""
    order = torch.argsort(usage.detach(), dim=-1, stable=True)[..., :n]  # [..., n]
    slots = torch.arange(usage.shape[-1], device=usage.device)
    return (order[..., None] == slots).to(usage.dtype)


def write(memory: Tensor, keys: Tensor, gates: Tensor, prev_read_weights: Tensor,
          prev_usage: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 6-8: the new memory `[..., slots, size]` and write weights `[..., heads, slots]`.

    `gates` `[..., heads]` are the alpha of Eq. 7 (before the sigmoid); `prev_*` are w^r_{t-1}
    and w^u_{t-1}."""
    lu = least_used(prev_usage, keys.shape[-2])  # w^lu_{t-1}, one slot per head (Eq. 6)
    g = torch.sigmoid(gates)[..., None]
    weights = g * prev_read_weights + (1 - g) * lu  # Eq. 7
    kept = memory * (1 - lu[..., 0, :])[..., None]  # the least used slot set to zero
    return kept + weights.transpose(-1, -2) @ keys, weights  # Eq. 8, summed over the heads


def usage_update(usage: Tensor, read_weights: Tensor, write_weights: Tensor,
                 gamma: float) -> Tensor:
    """Eq. 5: `gamma w^u_{t-1} + w^r_t + w^w_t`, the weights summed over the heads."""
    return gamma * usage + read_weights.sum(-2) + write_weights.sum(-2)


def step(state: MemoryState, keys: Tensor, gates: Tensor, gamma: float,
         values: Tensor | None = None) -> MemoryState:
    """One time step: write `keys` `[..., heads, size]` (or `values` of that shape, when
    given) (Eq. 6-8), read with the keys from the new memory (Eq. 2-4), update the usage
    (Eq. 5)."""
    written = keys if values is None else values
    memory, write_weights = write(state.memory, written, gates, state.read_weights, state.usage)
    read_weights, reads = read(keys, memory)
    return MemoryState(memory, usage_update(state.usage, read_weights, write_weights, gamma),
                       read_weights, reads)
