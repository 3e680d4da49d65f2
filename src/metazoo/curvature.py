"""Curvature of a network's task loss for Laplace approximations: Kronecker-factored blocks
(K-FAC: Martens & Grosse, ICML 2015; convolutions: Grosse & Martens, ICML 2016), their
log-determinants and draws from the Gaussian they define.

The curvature is the Gauss-Newton matrix of the mean loss L = 1/M sum_n l_n over M inputs, with
the loss's Hessian w.r.t. the outputs written as Lambda_n = sum_c w_nc r_nc r_nc^T: softmax
cross-entropy (then it is the Fisher) has r_nc = e_c - p_n, w_nc = p_nc (diag(p) - p p^T);
squared error l_n = |f_n - y_n|^2 / d has r = e_k, w = 2 / d. It is taken block-diagonal, one
block per `nn.Linear` / `nn.Conv2d` layer, each block a Kronecker product:
    F_l ~= T A (x) G,  A = mean_{n,t} a a^T,  G = mean_{n,t} sum_c w_nc g_c g_c^T
with a the layer's input (a conv's input patch at output position t of T; a trailing 1 for the
bias) and g_c the gradient w.r.t. the layer's output of r_c . f, one backward pass per c, so the
expectation over the model's labels is exact rather than drawn. The block is exact for one
input, and for any number where Lambda_n is the same for all (squared error). Rows of a batch
that batch norm couples add their cross terms to g, as in K-FAC's own per-example gradients.
Layout: a layer's parameters are W = [weight | bias] `[out, in + 1]`, vec() column-major, so
T A (x) G acts as X -> T G X A.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metazoo.errors import ConfigError
from metazoo.types import Params

LAYERS = (nn.Linear, nn.Conv2d)
"""The layers that get a curvature block."""


@dataclass(frozen=True)
class Factors:
    """One layer's block T A (x) G."""

    a: Tensor  # A `[in + 1, in + 1]` (no 1 without a bias)
    g: Tensor  # G `[out, out]`
    positions: int  # T: output positions per input (1 for a linear layer)


def curved_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The `nn.Linear` and `nn.Conv2d` submodules of `model` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LAYERS)}


def loss_roots(out: Tensor, classification: bool) -> tuple[Tensor, Tensor]:
    """r `[K, M, C]` and w `[K, M]` with Lambda_n = sum_k w_kn r_kn r_kn^T (module docstring)."""
    m, c = out.shape
    eye = torch.eye(c, dtype=out.dtype, device=out.device)
    if not classification:
        return eye[:, None, :].expand(c, m, c), out.new_full((c, m), 2.0 / c)
    p = out.softmax(-1)  # [M, C]
    return eye[:, None, :] - p[None], p.T


def _patches(layer: nn.Module, a: Tensor) -> Tensor:
    """The layer's inputs as columns `[M, in (+1), T]` (a conv's unfolded patches)."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or isinstance(layer.padding, str):
            raise ConfigError(f"curvature supports convolutions with groups=1 and numeric "
                              f"padding, got groups={layer.groups}, padding={layer.padding}")
        cols = F.unfold(a, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    else:
        cols = a.reshape(a.shape[0], -1, 1)
    if layer.bias is None:
        return cols
    return torch.cat([cols, cols.new_ones(cols.shape[0], 1, cols.shape[2])], 1)


def kfac_factors(model: nn.Module, params: Params, x: Tensor, *, classification: bool,
                 create_graph: bool) -> tuple[Tensor, dict[str, Factors]]:
    """`model(x)` `[M, C]` at `params` and the block of each `curved_layers(model)` there.

    The model runs its plain `forward` through `torch.func.functional_call` (the layers'
    inputs and outputs are read by forward hooks, removed before returning), so any backbone
    whose plain forward calls its linear and conv modules works; `create_graph` keeps the
    factors differentiable (a meta-gradient through them).
    """
    layers = curved_layers(model)
    taps: dict[str, tuple[Tensor, Tensor]] = {}

    def tap(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if name in taps:
                raise ConfigError(f"curvature: layer {name} ran twice in one forward pass "
                                  "(shared weights have no K-FAC block here)")
            taps[name] = (inputs[0], output)
        return hook

    handles = [m.register_forward_hook(tap(n)) for n, m in layers.items()]
    # leaves where none are (evaluation): every layer's output then has a graph to the g's
    params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    with torch.enable_grad():  # evaluation too: the g's are gradients
        try:
            out = functional_call(model, params, (x,), strict=False)
        finally:
            for h in handles:
                h.remove()
        if missing := sorted(set(layers) - set(taps)):
            raise ConfigError(f"curvature: the plain forward of {type(model).__name__} does "
                              f"not call layers {missing}; give it a forward that runs them")
        roots, weights = loss_roots(out, classification)
        outputs = [taps[n][1] for n in layers]
        sums = [out.new_zeros(()) for _ in layers]
        for r, w in zip(roots, weights, strict=True):
            gs = torch.autograd.grad(out, outputs, r, retain_graph=True, create_graph=create_graph)
            for i, g in enumerate(gs):
                g = g.reshape(g.shape[0], g.shape[1], -1)  # [M, out, T]
                sums[i] = sums[i] + torch.einsum("n,nit,njt->ij", w, g, g)
    factors = {}
    for (name, layer), s in zip(layers.items(), sums, strict=True):
        cols = _patches(layer, taps[name][0])  # [M, in (+1), T]
        count = cols.shape[0] * cols.shape[2]  # M T
        factors[name] = Factors(torch.einsum("nit,njt->ij", cols, cols) / count, s / count,
                                cols.shape[2])
    return out, factors


def _eigh(m: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (clamped at 0) and eigenvectors of a factor, computed in float64: float32
    LAPACK returned NaN eigenvalues for a rank-deficient A of a ReLU layer (dead units, values
    near the denormal range) where float64 is exact to rounding."""
    lam, u = torch.linalg.eigh(m.double())
    return lam.clamp_min(0).to(m.dtype), u.to(m.dtype)


def _eigen(f: Factors) -> Tensor:
    """T mu_k lambda_i `[out, in + 1]`: the eigenvalues of T A (x) G (clamped at 0)."""
    lam = torch.linalg.eigvalsh(f.a.double()).clamp_min(0).to(f.a.dtype)  # as `_eigh`
    mu = torch.linalg.eigvalsh(f.g.double()).clamp_min(0).to(f.g.dtype)
    return f.positions * torch.outer(mu, lam)


def _diagonal(f: Factors) -> Tensor:
    """diag(T A (x) G) as `[out, in + 1]`."""
    return f.positions * torch.outer(f.g.diagonal(), f.a.diagonal())


def log_det(f: Factors, tau: float, diagonal: bool = False) -> Tensor:
    """log det(T A (x) G + tau I) from the factors' eigenvalues (`torch.linalg.eigvalsh`, whose
    gradient is stable for repeated eigenvalues), or of its diagonal only."""
    return torch.log((_diagonal(f) if diagonal else _eigen(f)) + tau).sum()


def posterior_draw(f: Factors, tau: float, eps: Tensor, diagonal: bool = False) -> Tensor:
    """Draws `[S, out, in + 1]` of N(0, (T A (x) G + tau I)^-1) (or of its diagonal) from
    standard normal `eps` `[S, out, in + 1]`: U_G (eps / sqrt(T mu lambda + tau)) U_A^T."""
    if diagonal:
        return eps / (_diagonal(f) + tau).sqrt()
    (lam, u_a), (mu, u_g) = _eigh(f.a), _eigh(f.g)
    scale = (f.positions * torch.outer(mu, lam) + tau).rsqrt()
    return u_g @ (eps * scale) @ u_a.T


def perturbed(params: Params, layers: dict[str, nn.Module], deltas: dict[str, Tensor]
              ) -> Params:
    """`params` with each layer's `[out, in + 1]` delta added to its weight (and bias)."""
    out = dict(params)
    for name, d in deltas.items():
        w = out[f"{name}.weight"]
        has_bias = layers[name].bias is not None
        out[f"{name}.weight"] = w + (d[:, :-1] if has_bias else d).reshape(w.shape)
        if has_bias:
            out[f"{name}.bias"] = out[f"{name}.bias"] + d[:, -1]
    return out
