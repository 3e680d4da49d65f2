"""Meta-LSTM: preprocessing, the SGD special case, the hand-unrolled meta-gradient, learning."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from metazoo.algorithms import build, get
from metazoo.algorithms.meta_lstm import preprocess
from metazoo.errors import ConfigError
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from tests.algorithms.learning import float64_noise_image_batch, float64_sine_batch

DT = torch.float64


_regression_batch = partial(float64_sine_batch, tasks=2, shots=4, queries=5)


_image_batch = partial(float64_noise_image_batch, tasks=1, ways=3, shots=2, queries=3)


def test_preprocess_matches_the_formula_on_both_branches():
    p = 10.0
    xs = [2.5, -0.3, 1e-3, -7e-5, 4e-5, -1e-6, 0.0]  # e^-10 = 4.54e-5 splits them 4 / 3
    expected = []
    for x in xs:
        if abs(x) >= math.exp(-p):
            expected.append([math.log(abs(x)) / p, math.copysign(1.0, x)])
        else:
            expected.append([-1.0, math.exp(p) * x])
    got = preprocess(torch.tensor(xs, dtype=DT), p)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=DT), rtol=1e-12, atol=1e-12)
    assert got[4, 0] == -1.0 and got[3, 0] > -1.0  # 4e-5 < e^-10 < 7e-5: one on each side


def _as_sgd(model, alpha):
    """Gates forced to f = 1 and i = alpha: zero weights, b_F huge, b_I = logit(alpha)."""
    with torch.no_grad():
        model.forget_weight.zero_()
        model.input_weight.zero_()
        model.forget_bias.fill_(50.0)  # sigmoid(50) == 1.0 in float64
        model.input_bias.fill_(math.log(alpha / (1 - alpha)))
    return model


@pytest.mark.parametrize("backbone", ["mlp", "conv4"])
def test_constant_gates_make_each_update_an_sgd_step(backbone):
    """Eq. 2 with f_t = 1, i_t = alpha is Eq. 1 (gradient descent), batch-norm scales included."""
    torch.manual_seed(0)
    if backbone == "mlp":
        net, ways, batch = MLP((1,), (6, 5)), 1, _regression_batch(tasks=1)
    else:
        net, ways, batch = Conv4((1, 16, 16), hidden=4), 3, _image_batch()
    model = _as_sgd(build("meta_lstm", net, ways=ways).to(DT), alpha=0.05)
    sx, sy = batch.support_x[0], batch.support_y[0]
    lossf = F.mse_loss if backbone == "mlp" else F.cross_entropy
    w = {k: v.detach().clone() for k, v in model.learner_params().items()}
    for steps in (1, 2, 3):
        w = {k: v.requires_grad_() for k, v in w.items()}
        g = torch.autograd.grad(lossf(torch.func.functional_call(model, w, (sx,)), sy),
                                list(w.values()))
        w = {k: (v - 0.05 * gk).detach() for (k, v), gk in zip(w.items(), g, strict=True)}
        got = model.adapted_params(sx, sy, steps=steps)
        assert got.keys() == w.keys()
        for k in w:
            torch.testing.assert_close(got[k], w[k], rtol=1e-12, atol=1e-12, msg=f"{steps} {k}")
    moved = sum((w[k] - v).abs().sum() for k, v in model.learner_params().items())
    assert moved > 1e-3  # a check that can fail


def _pre(x):
    big = x.abs() >= math.exp(-10)
    return torch.stack([torch.where(big, x.abs().clamp_min(1e-300).log() / 10, -1.0),
                        torch.where(big, torch.sign(x), math.exp(10) * x)], -1)


def _hand_unrolled(model, batch, steps, detach_inputs):
    """The meta-loss gradient written out with plain tensors (MLP 1 -> 6 -> 5 + head)."""
    P = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    names = [k for k in P if k.startswith(("backbone.", "head."))]
    shapes = [P[k].shape for k in names]
    H = model.config.hidden_size

    def f(w, x):
        h = torch.relu(x @ w[0].T + w[1])
        h = torch.relu(h @ w[2].T + w[3])
        return h @ w[4].T + w[5]

    total = 0.0
    for b in range(len(batch)):
        w = [P[k] for k in names]
        n = sum(t.numel() for t in w)
        h, c, fg, ig = (torch.zeros(n, H, dtype=DT), torch.zeros(n, H, dtype=DT),
                        torch.zeros(n, dtype=DT), torch.zeros(n, dtype=DT))
        for _ in range(steps):
            wl = [t.detach().requires_grad_() for t in w] if detach_inputs else w
            loss = ((f(wl, batch.support_x[b]) - batch.support_y[b]) ** 2).mean()
            g = torch.autograd.grad(loss, wl, create_graph=not detach_inputs)
            if detach_inputs:
                loss = loss.detach()
            theta = torch.cat([t.reshape(-1) for t in w])
            grad = torch.cat([t.reshape(-1) for t in g])
            x = torch.cat([_pre(loss).expand(n, 2), _pre(grad), h], 1)
            z = x @ P["lstm_weight"].T + P["lstm_bias"]
            c = torch.sigmoid(z[:, H:2 * H]) * c + torch.sigmoid(z[:, :H]) * torch.tanh(
                z[:, 2 * H:3 * H])
            h = torch.sigmoid(z[:, 3 * H:]) * torch.tanh(c)
            fg = torch.sigmoid(torch.cat([h, theta[:, None], fg[:, None]], 1)
                               @ P["forget_weight"] + P["forget_bias"])
            ig = torch.sigmoid(torch.cat([h, theta[:, None], ig[:, None]], 1)
                               @ P["input_weight"] + P["input_bias"])
            theta = fg * theta - ig * grad
            w = [t.reshape(s) for t, s in zip(theta.split([math.prod(s) for s in shapes]),
                                               shapes, strict=True)]
        total = total + ((f(w, batch.query_x[b]) - batch.query_y[b]) ** 2).mean()
    return dict(zip(P, torch.autograd.grad(total / len(batch), list(P.values())), strict=True))


def test_meta_gradient_equals_hand_unrolled_without_second_order_terms():
    torch.manual_seed(0)
    model = build("meta_lstm", MLP((1,), (6, 5)), ways=1, inner_steps=3,
                  input_bias_init=(-2.0, -2.0)).to(DT)  # i ~ 0.12: second order terms visible
    batch = _regression_batch()
    model.meta_loss(batch)[0].backward()
    ref = _hand_unrolled(model, batch, 3, detach_inputs=True)
    for k, p in model.named_parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, k
        torch.testing.assert_close(p.grad, ref[k], rtol=1e-9, atol=1e-12, msg=k)
    # the reference can tell: keeping the gradient inputs' graph changes the meta-gradient
    second = _hand_unrolled(model, batch, 3, detach_inputs=False)
    diff = max((second[k] - ref[k]).abs().max() / ref[k].abs().max() for k in ref)
    assert diff > 1e-4


def test_query_is_normalised_with_support_statistics_only_at_evaluation():
    torch.manual_seed(0)
    model = build("meta_lstm", Conv4((1, 16, 16), hidden=4), ways=3, inner_steps=2).to(DT)
    batch = _image_batch(queries=3)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    other = qx.clone()
    other[1:] = torch.randn_like(other[1:]) * 3 + 1  # change every query but the first
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            a, b = model.adapt(sx, sy)(qx)[0], model.adapt(sx, sy)(other)[0]
        if training:  # meta-training: the query batch's own statistics (transductive)
            assert (a - b).abs().max() > 1e-3
        else:
            torch.testing.assert_close(a, b)


def test_bad_config_values_raise():
    spec = get("meta_lstm")
    for bad in ({"inner_steps": 0}, {"hidden_size": 0}, {"preprocess_p": 0.0},
                {"forget_bias_init": (5.0, 4.0)}, {"query_bn": "running"}):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=key):
            spec.make_config(**bad)


@pytest.mark.slow
def test_learns_glyphs_5way_1shot():
    """150 meta-iterations (Adam, clipping 0.25 as the paper) of a conv4 with 8 filters."""
    from tests.algorithms.learning import (
        glyph_episodes,
        query_accuracy,
    )

    # one thread: the many small [N, 20] LSTM ops each end in a parallel barrier, and with two
    # threads on a busy machine a descheduled thread stalls every one (15x slower measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build("meta_lstm", Conv4((1, 28, 28), hidden=8), ways=5, inner_steps=5)
        train, test = glyph_episodes()
        before = query_accuracy(model, test)
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        for step in range(150):
            opt.zero_grad()
            model.meta_loss(train.batch(step, 4))[0].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
        after = query_accuracy(model, test)
    finally:
        torch.set_num_threads(threads)
    assert after > 0.6 and after > before + 0.2, (before, after)
