"""ANIL: head-only inner loop, meta-gradient by hand, features computed once, learning, config."""

import pytest
import torch
import torch.nn.functional as F

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.functional import call, params_of
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from tests.algorithms.learning import assert_strategy_equals_loop, float64_vector_batch

DT = torch.float64



def _hand_unrolled(model, batch, steps, lr, first_order):
    """ANIL's meta-gradient with plain tensors: body features once, head SGD, query loss."""
    p = [t.detach().clone().requires_grad_() for t in params_of(model).values()]

    def body(x):  # MLP (4 -> 6 -> 5) written by hand
        return torch.relu(torch.relu(x @ p[0].T + p[1]) @ p[2].T + p[3])

    total = 0.0
    for i in range(len(batch)):
        fs, fq = body(batch.support_x[i]), body(batch.query_x[i])
        w, b = p[4], p[5]
        for _ in range(steps):
            loss = F.cross_entropy(fs @ w.T + b, batch.support_y[i])
            gw, gb = torch.autograd.grad(loss, [w, b], create_graph=not first_order)
            if first_order:
                gw, gb = gw.detach(), gb.detach()
            w, b = w - lr * gw, b - lr * gb
        total = total + F.cross_entropy(fq @ w.T + b, batch.query_y[i])
    return torch.autograd.grad(total / len(batch), p)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_hand_unrolled(first_order, strategy):
    torch.manual_seed(0)
    model = build("anil", MLP((4,), (6, 5)), ways=3, inner_lr=0.5, inner_steps=3,
                  first_order=first_order).to(DT)
    batch = float64_vector_batch()
    model.zero_grad(set_to_none=True)
    batching.meta_loss(model, batch, strategy)[0].backward()
    ref = _hand_unrolled(model, batch, 3, 0.5, first_order)
    for (k, p), g in zip(model.named_parameters(), ref, strict=True):
        assert g.abs().max() > 1e-6, k  # a check that can fail
        torch.testing.assert_close(p.grad, g, msg=k)


def test_body_gets_no_inner_update_and_head_does():
    torch.manual_seed(0)
    model = build("anil", Conv4((1, 16, 16), hidden=4), ways=3, inner_steps=2).to(DT)
    sx = torch.randn(6, 1, 16, 16, dtype=DT)
    sy = torch.arange(3).repeat_interleave(2)
    theta = params_of(model)
    adapted = model.inner_loop(theta, sx, sy, 2)
    assert adapted.keys() == theta.keys()
    for k, v in theta.items():
        if k.startswith("backbone."):
            assert adapted[k] is v, k
        else:
            assert (adapted[k] - v).abs().max() > 1e-4, k


def test_body_runs_once_per_task_whatever_the_inner_steps():
    torch.manual_seed(0)
    model = build("anil", Conv4((1, 16, 16), hidden=4), ways=3, inner_steps=4)
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    sx = torch.randn(6, 1, 16, 16)
    predictor = model.adapt(sx, torch.arange(3).repeat_interleave(2))
    assert calls == [sx.shape]  # the support features, once for 4 head steps
    predictor(torch.randn(9, 1, 16, 16))
    assert len(calls) == 2  # and the query features once


def test_predictor_is_the_adapted_head_on_features_with_support_statistics():
    torch.manual_seed(0)
    model = build("anil", Conv4((1, 16, 16), hidden=4), ways=3,
                  bn_mode="non_transductive").to(DT)
    sx, qx = torch.randn(6, 1, 16, 16, dtype=DT), torch.randn(4, 1, 16, 16, dtype=DT)
    sy = torch.arange(3).repeat_interleave(2)
    with torch.no_grad():
        out = model.adapt(sx, sy)(qx)
        head = model.inner_loop(params_of(model), sx, sy, 1)
        features = call(model.backbone, {}, torch.cat([sx, qx]), stats_rows=6)[6:]  # [4, D]
        unadapted = model(qx)
    torch.testing.assert_close(out, features @ head["head.weight"].T + head["head.bias"])
    assert (out - unadapted).abs().max() > 1e-4  # adaptation changed the answer


@pytest.mark.slow
def test_learns_glyphs_5way_1shot():
    from tests.algorithms.learning import glyph_episodes, meta_train, query_accuracy

    torch.manual_seed(0)
    # more head steps than MAML can afford: they run on features computed once
    model = build("anil", Conv4((1, 28, 28), hidden=16), ways=5, inner_steps=5,
                  eval_inner_steps=10)
    train, test = glyph_episodes()
    before = query_accuracy(model, test)
    meta_train(model, train, 60, 3e-3)
    after = query_accuracy(model, test)
    print(f"glyphs 5-way 1-shot accuracy before {before:.3f}, after {after:.3f}")
    assert after > 0.6 and after > before + 0.2


@pytest.mark.parametrize("options", [{"inner_lr": 0.0}, {"inner_lr": -0.4},
                                     {"inner_steps": 0}, {"eval_inner_steps": 0},
                                     {"bn_mode": "running"}])
def test_bad_config_raises(options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        get("anil").make_config(**options)


def test_first_step_strategy_equals_the_loop():
    """The batched first step adapts the head only, as the loop does."""
    torch.manual_seed(0)
    model = build("anil", MLP((4,), (6,)), ways=3, inner_steps=2).to(DT)
    assert_strategy_equals_loop(model, float64_vector_batch(), "first_step")
