"""CAVIA: hand-unrolled meta-gradients, context-only adaptation from zero, FiLM, learning."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from tests.algorithms.learning import (
    float64_noise_image_batch,
    float64_sine_batch,
    sinusoid_mse_before_after,
)

DT = torch.float64


_regression_batch = partial(float64_sine_batch, tasks=3, shots=4, queries=5)


_image_batch = partial(float64_noise_image_batch, tasks=2, ways=3, shots=2, queries=2)


def _mlp_model(**overrides):
    torch.manual_seed(0)
    options = {"context_dim": 3, "inner_lr": 0.5, "inner_steps": 2, **overrides}
    return build("cavia", MLP((1,), (6, 5)), ways=1, **options).to(DT)


def _hand_unrolled(model, batch, steps, lr, first_order):
    """CAVIA's meta-gradient with plain tensors: phi concatenated to x, explicit context SGD."""
    w = {k: t.detach().clone().requires_grad_() for k, t in model.named_parameters()}
    # the first layer on [x; phi]: our two blocks of its weight, concatenated by hand
    w1 = torch.cat([w["backbone.layers.0.weight"], w["context_in.weight"]], dim=1)

    def f(phi, x):
        h = torch.cat([x, phi.expand(x.shape[0], -1)], dim=1)  # [M, 1 + context_dim]
        h = torch.relu(h @ w1.T + w["backbone.layers.0.bias"])
        h = torch.relu(h @ w["backbone.layers.2.weight"].T + w["backbone.layers.2.bias"])
        return h @ w["head.weight"].T + w["head.bias"]

    total = 0.0
    for i in range(len(batch)):
        phi = torch.zeros(w1.shape[1] - 1, dtype=DT, requires_grad=True)  # phi_0 = 0
        for _ in range(steps):
            loss = ((f(phi, batch.support_x[i]) - batch.support_y[i]) ** 2).mean()
            (g,) = torch.autograd.grad(loss, phi, create_graph=not first_order)
            phi = phi - lr * g
        total = total + ((f(phi, batch.query_x[i]) - batch.query_y[i]) ** 2).mean()
    grads = torch.autograd.grad(total / len(batch), list(w.values()))
    return dict(zip(w, grads, strict=True))


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_hand_unrolled(first_order, strategy):
    model = _mlp_model(first_order=first_order)
    batch = _regression_batch()
    batching.meta_loss(model, batch, strategy)[0].backward()
    ref = _hand_unrolled(model, batch, 2, 0.5, first_order)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[k], msg=k)
    # second order differs from first order: the check above sees the difference
    other = _hand_unrolled(model, batch, 2, 0.5, not first_order)
    assert max((other[k] - ref[k]).abs().max() for k in ref) > 1e-6


def test_only_the_context_adapts_and_it_restarts_at_zero_for_every_task():
    model = _mlp_model(inner_steps=1)
    batch = _regression_batch(tasks=2)
    (sa, ya), (sb, yb) = [(batch.support_x[i], batch.support_y[i]) for i in range(2)]
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}
    phi_a = model.adapted_context(sa, ya)
    model.adapted_context(sb, yb)
    again = model.adapted_context(sa, ya)  # after another task: the same phi, so phi_0 is reset
    torch.testing.assert_close(again, phi_a, rtol=0, atol=0)
    assert all(torch.equal(theta[k], v) for k, v in model.named_parameters())  # theta unchanged
    # one step from zero: phi_1 = -alpha * grad_phi L(0), the gradient taken by hand at phi = 0
    zero = torch.zeros(3, dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(F.mse_loss(model.network(zero, sa), ya), zero)
    assert g.abs().max() > 1e-3
    torch.testing.assert_close(phi_a, -0.5 * g)
    # the predictor is the network at (phi, theta): nothing else was adapted
    qx = batch.query_x[0]
    torch.testing.assert_close(model.adapt(sa, ya)(qx), model.network(phi_a, qx))
    assert (model.adapt(sa, ya)(qx) - model(qx)).abs().max() > 1e-4


def test_before_adaptation_the_network_is_backbone_plus_head():
    model = _mlp_model()
    x = _regression_batch().query_x[0]
    with torch.no_grad():  # any theta: the context columns see phi = 0
        model.context_in.weight.normal_()
    torch.testing.assert_close(model(x), model.head(model.backbone(x)))
    torch.manual_seed(0)
    conv = build("cavia", Conv4((1, 16, 16), hidden=4), ways=3, context_dim=5).to(DT)
    x = _image_batch().support_x[0]
    with torch.no_grad():  # FiLM's weights act on phi = 0; its bias starts at gamma 1, beta 0
        conv.film["3"].weight.normal_()
    torch.testing.assert_close(conv(x), conv.head(conv.backbone(x)))


def _film_by_hand(model, phi, x):
    """conv -> batch norm -> pool -> gamma * h + beta -> ReLU in the FiLM block (reference
    code order); conv -> batch norm -> ReLU -> pool elsewhere; written with torch ops only."""
    h = x
    for i, block in enumerate(model.backbone.features):
        conv, bn = block[0], block[1]
        h = F.conv2d(h, conv.weight, conv.bias, padding=1)
        h = F.batch_norm(h, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        if str(i + 1) in model.film:
            gamma, beta = model.film[str(i + 1)](phi).chunk(2)
            h = F.max_pool2d(h, 2)
            h = torch.relu(gamma[None, :, None, None] * h + beta[None, :, None, None])
        else:
            h = F.max_pool2d(torch.relu(h), 2)
    return model.head(h.flatten(1))


@pytest.mark.parametrize("blocks", [(3,), (1, 4)])
def test_conv4_film_equals_a_hand_written_network(blocks):
    torch.manual_seed(0)
    model = build("cavia", Conv4((1, 16, 16), hidden=4), ways=3, context_dim=5,
                  film_blocks=blocks).to(DT)
    x = _image_batch().support_x[0]
    phi = torch.randn(5, dtype=DT) * 3  # large enough to make some gamma negative
    gammas = torch.cat([model.film[str(b)](phi)[:4] for b in blocks])
    assert (gammas < 0).any()  # then pooling before FiLM differs from pooling after ReLU
    torch.testing.assert_close(model.network(phi, x), _film_by_hand(model, phi, x))


def test_conv4_meta_gradient_equals_hand_unrolled_film():
    torch.manual_seed(0)
    model = build("cavia", Conv4((1, 16, 16), hidden=4), ways=3, context_dim=4,
                  inner_steps=2).to(DT)
    batch = _image_batch()
    batching.meta_loss(model, batch, "loop")[0].backward()
    params = list(model.parameters())
    total = 0.0
    for i in range(len(batch)):
        phi = torch.zeros(4, dtype=DT, requires_grad=True)
        for _ in range(2):
            loss = F.cross_entropy(_film_by_hand(model, phi, batch.support_x[i]),
                                   batch.support_y[i])
            (g,) = torch.autograd.grad(loss, phi, create_graph=True)
            phi = phi - 1.0 * g
        total = total + F.cross_entropy(_film_by_hand(model, phi, batch.query_x[i]),
                                        batch.query_y[i])
    ref = torch.autograd.grad(total / len(batch), params)
    assert model.film["3"].weight.grad.abs().max() > 1e-4
    for (k, p), r in zip(model.named_parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, r, rtol=1e-7, atol=1e-10, msg=k)


def test_eval_inner_steps_apply_only_in_eval_mode():
    model = _mlp_model(inner_steps=1, eval_inner_steps=4)
    batch = _regression_batch(tasks=1)
    sx, sy = batch.support_x[0], batch.support_y[0]
    for mode, steps in ((True, 1), (False, 4)):
        model.train(mode)
        with torch.no_grad():
            got = model.adapted_context(sx, sy)
        torch.testing.assert_close(got, model.adapted_context(sx, sy, steps).detach())
    assert (model.adapted_context(sx, sy, 4) - model.adapted_context(sx, sy, 1)).abs().max() > 0


@pytest.mark.parametrize(("option", "value"), [
    ("context_dim", 0), ("inner_lr", 0.0), ("inner_lr", -1.0), ("inner_steps", 0),
    ("eval_inner_steps", 0), ("film_blocks", ()), ("film_blocks", (0,)),
])
def test_bad_config_raises(option, value):
    with pytest.raises(ConfigError, match=option):
        get("cavia").make_config(**{option: value})


def test_backbone_errors_name_the_fix():
    with pytest.raises(ConfigError, match="film_blocks"):
        build("cavia", Conv4((1, 16, 16), hidden=4), ways=3, film_blocks=(5,))
    backbone = torch.nn.Linear(4, 4)
    backbone.feature_dim = 4
    with pytest.raises(ConfigError, match=r"cavia needs a backbone with a modulation.*conv4"):
        build("cavia", backbone, ways=3)


@pytest.mark.slow
def test_learns_sinusoid_regression():

    torch.manual_seed(0)
    model = build("cavia", MLP((1,), (40, 40)), ways=1, context_dim=5, inner_steps=1)
    assert batching.choose(model) == "vmap"
    pre, post = sinusoid_mse_before_after(model, steps=1000, lr=3e-3, tasks_per_batch=25)
    assert post * 5 <= pre, (pre, post)  # measured 2.29 -> 0.25
