"""LLAMA: MAML at eta = 0, the curvature term against explicit Hessians and a hand-written
meta-gradient, the Laplace-sampled predictive, bad configs, learning."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import hessian, jacobian

from metazoo import batching, curvature
from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.functional import call
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from metazoo.seeding import episode_generator
from tests.algorithms.learning import (
    float64_noise_image_batch,
    float64_sine_batch,
    sinusoid_mse_before_after,
)

DT = torch.float64


def _pair(backbone, ways, **options):
    """LLAMA and MAML with the same initial parameters."""
    out = []
    for name in ("llama", "maml"):
        torch.manual_seed(0)
        extra = options if name == "llama" else {}
        common = {k: v for k, v in options.items() if k in ("inner_lr", "inner_steps")}
        out.append(build(name, backbone(), ways=ways, **{**common, **extra}).to(DT))
    return out


def _loss_and_grads(model, batch):
    loss = batching.meta_loss(model, batch, "loop")[0]
    return loss, torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("case", ["conv4", "mlp"])
def test_eta_zero_loss_and_meta_gradient_equal_maml(case):
    if case == "conv4":
        backbone, ways, batch = (lambda: Conv4((1, 16, 16), hidden=4)), 3, \
            float64_noise_image_batch(tasks=2, ways=3, shots=2, queries=2)
    else:
        backbone, ways, batch = (lambda: MLP((1,), (6, 5))), 1, float64_sine_batch()
    llama, maml = _pair(backbone, ways, eta=0.0, adapt_bn=True, inner_lr=0.1, inner_steps=2)
    (a, ga), (b, gb) = _loss_and_grads(llama, batch), _loss_and_grads(maml, batch)
    torch.testing.assert_close(a, b)
    assert max(g.abs().max() for g in gb) > 1e-3
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y)
    other = build("llama", backbone(), ways=ways, eta=1e-2).to(DT)
    other.load_state_dict(llama.state_dict())  # a check that can fail: eta > 0 differs
    assert (batching.meta_loss(other, batch, "loop")[0] - a).abs() > 1e-4


def test_batch_norm_scale_and_shift_take_no_inner_steps_by_default():
    torch.manual_seed(0)
    model = build("llama", Conv4((1, 16, 16), hidden=4), ways=3, inner_lr=0.5).to(DT)
    batch = float64_noise_image_batch(tasks=1)
    start = model.start_params()
    adapted = model.inner_loop(start, batch.support_x[0], batch.support_y[0], 2)
    for k, v in adapted.items():
        moved = not torch.equal(v, start[k])
        norm = re.fullmatch(r"backbone\.features\.\d\.1\.(weight|bias)", k)  # batch norm
        assert moved == (norm is None), k


def _head_only(**options):
    """A linear softmax classifier (the MLP with no hidden layer is the identity)."""
    torch.manual_seed(0)
    return build("llama", MLP((4,), ()), ways=3, inner_lr=0.5, inner_steps=2, **options).to(DT)


@pytest.mark.parametrize("kind", ["kfac", "diagonal"])
def test_curvature_term_equals_the_explicit_hessian_of_one_query(kind):
    eta = 0.01
    model = _head_only(eta=eta, curvature=kind)
    g = torch.Generator().manual_seed(0)
    sx, sy = torch.randn(6, 4, generator=g, dtype=DT), torch.arange(3).repeat(2)
    qx, qy = torch.randn(1, 4, generator=g, dtype=DT), torch.tensor([1])
    loss, _ = model.task_loss(sx, sy, qx, qy, 3)
    phi = model.inner_loop(model.start_params(), sx, sy, 2)
    w, b = phi["head.weight"].detach(), phi["head.bias"].detach()

    def ce(v):  # the query's cross-entropy over vec([W | b]), column-major
        wb = v.view(5, 3).T
        return F.cross_entropy(F.linear(qx, wb[:, :4], wb[:, 4]), qy)

    h = hessian(ce, torch.cat([w, b[:, None]], 1).T.reshape(-1))
    tau = 1 / (0.5 * 2)  # the default prior precision: 1 / (inner_lr * steps)
    h = h + tau * torch.eye(15, dtype=DT)
    log_det = torch.log(h.diagonal()).sum() if kind == "diagonal" else torch.logdet(h)
    torch.testing.assert_close(loss, F.cross_entropy(F.linear(qx, w, b), qy) + eta * log_det)


def _hand_meta_gradient(model, batch, steps, lr, eta, tau):
    """Outer loss and meta-gradient with plain tensors: a tanh MLP 1-3-1, SGD by hand, the
    Gauss-Newton block of each layer J^T (2) J from autograd's jacobian at phi (one query)."""
    theta = [t.detach().clone().requires_grad_() for t in model.parameters()]

    def f(w, x):
        return torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3]

    total = 0.0
    for i in range(len(batch)):
        w = theta
        for _ in range(steps):
            loss = ((f(w, batch.support_x[i]) - batch.support_y[i]) ** 2).mean()
            w = [a - lr * g for a, g in zip(w, torch.autograd.grad(loss, w, create_graph=True),
                                            strict=True)]
        qx, qy = batch.query_x[i], batch.query_y[i]
        log_det = 0.0
        for layer in (0, 2):
            def out(wl, bl, layer=layer, w=w, qx=qx):
                return f([*w[:layer], wl, bl, *w[layer + 2:]], qx)[0]
            jw, jb = jacobian(out, (w[layer], w[layer + 1]), create_graph=True)
            j = torch.cat([jw, jb[..., None]], -1).reshape(1, -1)
            n = j.shape[1]
            log_det = log_det + torch.logdet(2 * j.T @ j + tau * torch.eye(n, dtype=DT))
        total = total + ((f(w, qx) - qy) ** 2).mean() + eta * log_det
    total = total / len(batch)
    return total, torch.autograd.grad(total, theta)


def test_meta_gradient_with_the_curvature_term_equals_a_hand_computation():
    torch.manual_seed(0)
    model = build("llama", MLP((1,), (3,), activation="tanh"), ways=1, inner_lr=0.05,
                  inner_steps=2, eta=0.05, prior_precision=0.7).to(DT)
    batch = float64_sine_batch(tasks=2, shots=4, queries=1)
    ours, grads = _loss_and_grads(model, batch)
    ref, ref_grads = _hand_meta_gradient(model, batch, 2, 0.05, 0.05, 0.7)
    torch.testing.assert_close(ours, ref)
    for (k, _), a, b in zip(model.named_parameters(), grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, msg=k)
    _, without = _hand_meta_gradient(model, batch, 2, 0.05, 0.0, 0.7)
    assert max((a - b).abs().max() for a, b in zip(without, ref_grads, strict=True)) > 1e-4


def _sampled(samples, seed=0, **options):
    torch.manual_seed(0)
    model = build("llama", Conv4((1, 16, 16), hidden=4), ways=3, inner_lr=0.4, inner_steps=1,
                  samples=samples, sample_seed=seed, prior_precision=50.0, **options).to(DT)
    return model.eval()


@pytest.mark.parametrize("kind", ["kfac", "diagonal"])
def test_sampled_predictive_is_the_log_of_averaged_softmax_of_posterior_draws(kind):
    batch = float64_noise_image_batch(tasks=1, ways=3, shots=2, queries=3)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    model = _sampled(4, curvature=kind)
    with torch.no_grad():
        out = model.adapt(sx, sy)(qx)
        phi = model.inner_loop(model.start_params(), sx, sy, model.steps())
    # by hand: the support curvature's blocks, the episode's draws in layer order
    _, factors = curvature.kfac_factors(model, phi, sx, classification=True, create_graph=False)
    g = episode_generator("llama", 0, 0, sx)
    eps = {n: torch.randn(4, f.g.shape[0], f.a.shape[0], generator=g, dtype=DT)
           for n, f in factors.items()}
    probs = []
    for s in range(4):
        params = dict(phi)
        for n, f in factors.items():
            d = curvature.posterior_draw(f, 50.0, eps[n][s:s + 1], kind == "diagonal")[0]
            params[f"{n}.weight"] = phi[f"{n}.weight"] + d[:, :-1].reshape(
                phi[f"{n}.weight"].shape)
            params[f"{n}.bias"] = phi[f"{n}.bias"] + d[:, -1]
        probs.append(call(model, params, qx).softmax(-1))
    torch.testing.assert_close(out, torch.stack(probs).mean(0).log().detach())
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(9, dtype=DT))
    with torch.no_grad():
        again = _sampled(4, curvature=kind).adapt(sx, sy)(qx)
        other = _sampled(4, seed=1, curvature=kind).adapt(sx, sy)(qx)
        map_out = _sampled(0, curvature=kind).adapt(sx, sy)(qx)
    torch.testing.assert_close(again, out, rtol=0, atol=0)  # reproducible
    assert (other - out).abs().max() > 1e-6
    torch.testing.assert_close(map_out, call(model, phi, qx))  # samples 0: the MAP network
    assert (map_out.log_softmax(-1) - out).abs().max() > 1e-6


def test_regression_predictive_moments_of_the_function_samples():
    torch.manual_seed(0)
    model = build("llama", MLP((1,), (8,)), ways=1, samples=6, noise_var=0.2).to(DT).eval()
    batch = float64_sine_batch(tasks=1, shots=5, queries=4)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        fs = model.function_samples(sx, sy, qx, 6)
        mean, cov = model.predictive(sx, sy, qx)
        point = model.adapt(sx, sy)(qx)
    assert fs.shape == (6, 4, 1) and mean.shape == (4, 1) and cov.shape == (4, 1, 1)
    assert fs.std(0).min() > 1e-4  # distinct functions
    torch.testing.assert_close(mean, fs.mean(0))
    torch.testing.assert_close(point, fs.mean(0))
    torch.testing.assert_close(cov[:, 0, 0], fs.var(0, unbiased=False)[:, 0] + 0.2)
    model.config = get("llama").make_config(samples=0, noise_var=0.2)
    with torch.no_grad():
        mean0, cov0 = model.predictive(sx, sy, qx)
    torch.testing.assert_close(cov0, torch.full((4, 1, 1), 0.2, dtype=DT))
    assert (mean0 - mean).abs().max() > 1e-6


def test_vmap_only_without_curvature_or_draws():
    torch.manual_seed(0)
    assert not build("llama", MLP((1,), (6,)), ways=1).can_vmap()
    assert not build("llama", MLP((1,), (6,)), ways=1, eta=0.0, samples=3).can_vmap()
    model = build("llama", MLP((1,), (6,)), ways=1, eta=0.0).to(DT)
    assert model.can_vmap()
    batch = float64_sine_batch()
    a, ga = _loss_and_grads(model, batch)
    b = batching.meta_loss(model, batch, "vmap")[0]
    gb = torch.autograd.grad(b, list(model.parameters()))
    torch.testing.assert_close(a, b)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize(("option", "value"), [
    ("eta", -1.0), ("prior_precision", 0.0), ("samples", -1), ("noise_var", 0.0),
    ("inner_lr", 0.0), ("inner_steps", 0), ("curvature", "full"),
    ("bn_mode", "non_transductive"),
])
def test_bad_config_raises(option, value):
    with pytest.raises(ConfigError, match=option):
        get("llama").make_config(**{option: value})


def test_non_transductive_batch_norm_is_allowed_without_the_curvature_term():
    assert get("llama").make_config(bn_mode="non_transductive", eta=0.0).eta == 0.0


@pytest.mark.slow
def test_learns_sinusoid_regression():

    torch.manual_seed(0)
    model = build("llama", MLP((1,), (40, 40)), ways=1, inner_lr=0.01, inner_steps=1,
                  eval_inner_steps=10, eta=1e-3)
    pre, post = sinusoid_mse_before_after(model, steps=400, lr=1e-2, tasks_per_batch=10)
    assert post * 4 <= pre, (pre, post)  # measured 2.44 -> 0.41
