"""K-FAC factors, log-determinants and posterior draws against explicit matrices built with
torch.autograd.functional (Hessians, Jacobians) on tiny models where K-FAC is exact."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian, jacobian

from metazoo import curvature
from metazoo.errors import ConfigError

DT = torch.float64
TAU = 0.3


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _flat_hessian(loss_of_wb, w, b):
    """Hessian of loss(W, b) over vec of [W | b] `[out, in + 1]`, column-major."""
    def f(v):  # v: column-major vec of [W | b]
        wb = v.view(w.shape[1] + 1, w.shape[0]).T
        return loss_of_wb(wb[:, :-1], wb[:, -1])
    return hessian(f, torch.cat([w, b[:, None]], 1).T.reshape(-1))


def _factors(model, x, classification):
    return curvature.kfac_factors(model, _params(model), x, classification=classification,
                                  create_graph=False)[1]


def test_linear_softmax_one_example_log_dets_equal_the_explicit_hessian():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).to(DT)
    x, y = torch.randn(1, 4, dtype=DT), torch.tensor([2])
    h = _flat_hessian(lambda w, b: F.cross_entropy(F.linear(x, w, b), y), model.weight,
                      model.bias)
    f = _factors(model, x, True)[""]
    assert f.positions == 1 and f.a.shape == (5, 5) and f.g.shape == (3, 3)
    torch.testing.assert_close(curvature.log_det(f, TAU),
                               torch.logdet(h + TAU * torch.eye(15, dtype=DT)))
    torch.testing.assert_close(curvature.log_det(f, TAU, diagonal=True),
                               torch.log(h.diagonal() + TAU).sum())
    # the Hessian has off-diagonal mass: the two log-determinants differ
    assert (curvature.log_det(f, TAU) - curvature.log_det(f, TAU, True)).abs() > 1e-3


def test_linear_regression_many_examples_log_det_equals_the_explicit_hessian():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(DT)
    x, y = torch.randn(6, 3, dtype=DT), torch.randn(6, 2, dtype=DT)
    h = _flat_hessian(lambda w, b: F.mse_loss(F.linear(x, w, b), y), model.weight, model.bias)
    f = _factors(model, x, False)[""]
    torch.testing.assert_close(curvature.log_det(f, TAU),
                               torch.logdet(h + TAU * torch.eye(8, dtype=DT)))
    torch.testing.assert_close(curvature.log_det(f, TAU, diagonal=True),
                               torch.log(h.diagonal() + TAU).sum())


def test_one_hidden_layer_blocks_equal_the_explicit_gauss_newton_blocks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    x = torch.randn(1, 3, dtype=DT)
    factors = _factors(model, x, True)
    p = model(x).softmax(-1)[0]
    lam = torch.diag(p) - torch.outer(p, p)  # Hessian of cross-entropy w.r.t. the logits
    for name, layer in (("0", model[0]), ("2", model[2])):
        def logits(w, b, name=name):
            return torch.func.functional_call(model, {f"{name}.weight": w, f"{name}.bias": b},
                                              (x,))[0]
        jw, jb = jacobian(logits, (layer.weight, layer.bias))  # [C, out, in], [C, out]
        j = torch.cat([jw, jb[..., None]], -1).transpose(1, 2).reshape(3, -1)  # column-major
        f = factors[name]
        torch.testing.assert_close(f.positions * torch.kron(f.a, f.g), j.T @ lam @ j)


def test_conv_factors_equal_patches_and_output_gradients_by_hand():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).to(DT)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(3 * 16, 4)).to(DT)
    x = torch.randn(2, 2, 4, 4, dtype=DT)
    f = _factors(model, x, True)["0"]
    padded = F.pad(x, (1, 1, 1, 1))
    cols = torch.stack([torch.cat([padded[n, :, i:i + 3, j:j + 3].reshape(-1), torch.ones(1)])
                        for n in range(2) for i in range(4) for j in range(4)])  # [M T, 19]
    assert f.positions == 16
    torch.testing.assert_close(f.a, cols.T @ cols / 32)
    s = conv(x).detach().requires_grad_()
    out = model[1:](s)
    p = out.softmax(-1).detach()
    g = torch.zeros(3, 3, dtype=DT)
    for c in range(4):  # G = mean over (n, t) of sum_c p_c g_c g_c^T, g_c by hand
        r = torch.eye(4, dtype=DT)[c] - p
        (gs,) = torch.autograd.grad(out, s, r, retain_graph=True)
        rows = gs.permute(0, 2, 3, 1).reshape(2, 16, 3)  # [M, T, out]
        g += torch.einsum("n,nti,ntj->ij", p[:, c], rows, rows)
    torch.testing.assert_close(f.g, g / 32)
    explicit = 16 * torch.kron(f.a, f.g) + TAU * torch.eye(57, dtype=DT)  # F ~= T A (x) G
    torch.testing.assert_close(curvature.log_det(f, TAU), torch.logdet(explicit))


@pytest.mark.parametrize("diagonal", [False, True])
def test_posterior_draws_have_the_inverse_curvature_as_covariance(diagonal):
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(DT)
    f = _factors(model, torch.randn(5, 3, dtype=DT), True)[""]
    n = 2 * 4
    basis = torch.eye(n, dtype=DT).view(n, 4, 2).transpose(1, 2)  # eps = column-major e_i
    cols = curvature.posterior_draw(f, TAU, basis, diagonal).transpose(1, 2).reshape(n, n)
    prec = f.positions * torch.kron(f.a, f.g)  # draws are linear in eps: cov = S S^T
    prec = torch.diag(prec.diagonal()) if diagonal else prec
    torch.testing.assert_close(cols.T @ cols, torch.linalg.inv(prec + TAU * torch.eye(n, dtype=DT)))


def test_log_det_gradient_is_finite_with_repeated_zero_eigenvalues():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    _, factors = curvature.kfac_factors(model, params, torch.randn(1, 6, dtype=DT),
                                        classification=True, create_graph=True)
    total = sum(curvature.log_det(f, TAU) for f in factors.values())  # A has rank 1 of 7
    grads = torch.autograd.grad(total, list(params.values()))
    assert all(torch.isfinite(g).all() for g in grads) and grads[0].abs().max() > 0


def test_layers_the_plain_forward_skips_or_repeats_raise():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(self.used(x)) if self.unused.bias is None else self.used(x)

    model = Skips()
    with pytest.raises(ConfigError, match=r"does not call layers \['unused'\]"):
        _factors(model, torch.randn(3, 2), True)
    model.unused.bias = None
    with pytest.raises(ConfigError, match="ran twice"):
        _factors(model, torch.randn(3, 2), True)
