"""The two-layer graph convolutional network of Kipf & Welling, written on explicit weights.

Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017,
arXiv:1609.02907. The renormalised adjacency Â = D̃^{-1/2} (A + I) D̃^{-1/2}, D̃_ii = Σ_j (A + I)_ij
(their eq. 2 and the renormalisation trick of Sec. 2.2), and the model of eq. 9,
Z = softmax(Â ReLU(Â X W⁽⁰⁾) W⁽¹⁾), trained by cross-entropy on the labeled nodes (eq. 10).
Their settings (Sec. 5.2): 16 hidden units, dropout 0.5, L2 5e-4 on the first layer, Adam at
0.01, 200 epochs, Glorot initialisation. Deviation: no early stopping (there is no validation
set in Metattack's protocol; its authors' evaluation trains 200 fixed iterations, as here).

The weights travel as a dict (`Params`) and `Â` is an argument, so the attack can differentiate
the logits, and a whole unrolled training, with respect to the adjacency matrix. Metattack's
surrogate is the same network without the ReLU and without biases (`relu=False`, `bias=False`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metazoo.types import Params


def normalize_adjacency(adjacency: Tensor) -> Tensor:
    """Â = D̃^{-1/2} (A + I) D̃^{-1/2}, `[N, N]`; differentiable in `adjacency`."""
    a = adjacency + torch.eye(adjacency.shape[0], dtype=adjacency.dtype, device=adjacency.device)
    inv_sqrt = a.sum(dim=1).rsqrt()
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def glorot(rows: int, cols: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Glorot & Bengio uniform initialisation, U(-r, r) with r = sqrt(6 / (rows + cols))."""
    r = math.sqrt(6.0 / (rows + cols))
    return (torch.rand(rows, cols, generator=generator, dtype=dtype) * 2 - 1) * r


def init_gcn(in_dim: int, hidden: int, classes: int, *, generator: torch.Generator,
             dtype: torch.dtype = torch.float32, bias: bool = True) -> Params:
    """Fresh weights `w0 [D, H]`, `w1 [H, K]` (and zero biases `b0`, `b1` when `bias`)."""
    params = {"w0": glorot(in_dim, hidden, generator, dtype),
              "w1": glorot(hidden, classes, generator, dtype)}
    if bias:
        params |= {"b0": torch.zeros(hidden, dtype=dtype), "b1": torch.zeros(classes, dtype=dtype)}
    return params


def gcn_logits(params: Params, a_hat: Tensor, x: Tensor, *, relu: bool = True,
               dropout: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Eq. 9 before the softmax: `[N, K]` logits of every node.

    Args:
        params: `w0`, `w1` and optionally `b0`, `b1`.
        a_hat: the normalised adjacency `[N, N]`.
        x: node features `[N, D]`.
        relu: False gives the linearised surrogate of Metattack.
        dropout: rate on the input and the hidden layer (training only).
        generator: the source of the dropout masks.
    """

    def drop(h: Tensor) -> Tensor:
        if dropout == 0.0:
            return h
        keep = torch.rand(h.shape, generator=generator, dtype=h.dtype).to(h.device) >= dropout
        return h * keep / (1.0 - dropout)

    h = a_hat @ (drop(x) @ params["w0"])
    if "b0" in params:
        h = h + params["b0"]
    if relu:
        h = torch.relu(h)
    out = a_hat @ (drop(h) @ params["w1"])
    return out + params["b1"] if "b1" in params else out


@dataclass(frozen=True)
class TrainSettings:
    """How a GCN is trained on a fixed graph (Kipf & Welling Sec. 5.2)."""

    hidden: int = 16  # hidden units
    lr: float = 0.01  # Adam learning rate
    weight_decay: float = 5e-4  # L2 on the first layer's weights
    dropout: float = 0.5  # on the input features and the hidden layer
    epochs: int = 200  # full-batch Adam steps
    relu: bool = True  # False: the linearised surrogate (self-training labels)


def train_gcn(a_hat: Tensor, x: Tensor, labels: Tensor, idx: Tensor, settings: TrainSettings,
              *, seed: int) -> Params:
    """Train a fresh GCN on the nodes `idx` with `labels[idx]`; returns detached weights."""
    g = torch.Generator().manual_seed(seed)
    params = {k: v.to(x.device).requires_grad_(True)
              for k, v in init_gcn(x.shape[1], settings.hidden, int(labels.max()) + 1,
                                   generator=g, dtype=x.dtype).items()}
    opt = torch.optim.Adam(list(params.values()), lr=settings.lr)
    a_hat = a_hat.detach()
    for _ in range(settings.epochs):
        logits = gcn_logits(params, a_hat, x, relu=settings.relu, dropout=settings.dropout,
                            generator=g)
        loss = F.cross_entropy(logits[idx], labels[idx])
        loss = loss + settings.weight_decay * 0.5 * params["w0"].pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in params.items()}


def predict(params: Params, a_hat: Tensor, x: Tensor, *, relu: bool = True) -> Tensor:
    """`[N]` predicted classes (no dropout)."""
    with torch.no_grad():
        return gcn_logits(params, a_hat, x, relu=relu).argmax(dim=1)
