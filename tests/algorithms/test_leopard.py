"""LEOPARD: generated softmax by hand, meta-gradient (per-layer rates included) by hand, which
parameters the inner loop adapts, backbone blocks, learning, config."""

import pytest
import torch
import torch.nn.functional as F

from metazoo import batching, models
from metazoo.algorithms import build, get
from metazoo.algorithms.leopard import backbone_blocks
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from tests.algorithms.learning import float64_vector_batch

DT = torch.float64
SMALL = {"label_dim": 3, "mlp_hidden": 4}  # g, h: 5 -> 4 -> 3 (+1)



def _body(p, x):  # the MLP backbone 4 -> 6 -> 5 by hand
    return torch.relu(torch.relu(x @ p["l0w"].T + p["l0b"]) @ p["l2w"].T + p["l2b"])


def _mlp(w0, b0, w1, b1, z):  # g_psi or h_phi by hand: linear, tanh, linear
    return torch.tanh(z @ w0.T + b0) @ w1.T + b1


def _named(model):
    short = {"backbone.layers.0.weight": "l0w", "backbone.layers.0.bias": "l0b",
             "backbone.layers.2.weight": "l2w", "backbone.layers.2.bias": "l2b"}
    return {short.get(k, k): v for k, v in params_of(model).items()}


@pytest.mark.parametrize("ways", [3, 2])
def test_generated_softmax_equals_hand_computation(ways):
    torch.manual_seed(0)
    model = build("leopard", MLP((4,), (6, 5)), ways=3, **SMALL).to(DT)
    batch = float64_vector_batch(ways=ways, shots=3)
    sx, sy = batch.support_x[0], batch.support_y[0]
    p = _named(model)
    out = _mlp(p["g.0.weight"], p["g.0.bias"], p["g.1.weight"], p["g.1.bias"], _body(p, sx))
    expected = torch.stack([out[sy == n].mean(0) for n in range(ways)])  # [N, label_dim + 1]
    w, b = model.generate_softmax(model.backbone(sx), sy, ways)
    assert w.shape == (ways, 3) and b.shape == (ways,)
    torch.testing.assert_close(w, expected[:, :3])
    torch.testing.assert_close(b, expected[:, 3])


def _hand_meta_gradient(model, batch, steps, clip):
    """First-order LEOPARD with plain tensors: generate W, b; `steps` clipped steps on Phi =
    {layers.2, h, W, b} with rates alpha[layer]; the query loss; its gradient."""
    p = {k: v.detach().clone().requires_grad_() for k, v in _named(model).items()}
    names = ["l2w", "l2b", "h.0.weight", "h.0.bias", "h.1.weight", "h.1.bias", "W", "b"]
    layer = [0, 0, 1, 1, 2, 2, 3, 3]  # backbone block, h's two layers, the softmax
    g = [p["g.0.weight"], p["g.0.bias"], p["g.1.weight"], p["g.1.bias"]]
    total = 0.0
    for i in range(len(batch)):
        sx, sy = batch.support_x[i], batch.support_y[i]
        out = _mlp(*g, _body(p, sx))
        wb = torch.stack([out[sy == n].mean(0) for n in range(batch.ways)])
        phi = [p["l2w"], p["l2b"], *(p[k] for k in names[2:6]), wb[:, :-1], wb[:, -1]]
        for _ in range(steps):
            at = [v.detach().requires_grad_() for v in phi]  # first order: constant gradients
            q = {**p, **dict(zip(names, at, strict=True))}
            loss = F.cross_entropy(_mlp(*at[2:6], _body(q, sx)) @ at[6].T + at[7], sy)
            gs = torch.autograd.grad(loss, at)
            norm = torch.sqrt(sum((v * v).sum() for v in gs))
            gs = [v * clip / max(norm, clip) for v in gs] if clip else gs
            phi = [v - p["inner_lrs"][j] * d for v, d, j in zip(phi, gs, layer, strict=True)]
        q = {**p, **dict(zip(names, phi, strict=True))}
        logits = _mlp(*phi[2:6], _body(q, batch.query_x[i])) @ phi[6].T + phi[7]
        total = total + F.cross_entropy(logits, batch.query_y[i])
    return torch.autograd.grad(total / len(batch), list(p.values()))


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_meta_gradient_and_rate_gradients_equal_hand_computation(clip, strategy):
    torch.manual_seed(0)
    model = build("leopard", MLP((4,), (6, 5)), ways=3, inner_steps=2, adapt_blocks=1,
                  inner_grad_clip=clip, **SMALL).to(DT)
    with torch.no_grad():  # weights larger than the N(0, 0.02) start, so gradients are too
        for p in model.parameters():
            p.normal_(0, 0.5)
        model.inner_lrs.copy_(torch.tensor([0.3, 0.5, 0.7, 0.9]))  # one per layer of Phi
    batch = float64_vector_batch()
    model.zero_grad(set_to_none=True)
    batching.meta_loss(model, batch, strategy)[0].backward()
    ref = _hand_meta_gradient(model, batch, 2, clip)
    for (k, p), g in zip(model.named_parameters(), ref, strict=True):
        # g's last bias shifts every class's [w; b] alike, which no softmax sees: gradient 0
        assert (g.abs().max() > 1e-4) != (k == "g.1.bias"), k  # a check that can fail
        torch.testing.assert_close(p.grad, g, msg=k)
    assert (model.inner_lrs.grad.abs() > 1e-4).all()  # every per-layer rate is learned


def test_inner_loop_adapts_the_task_specific_layers_only():
    torch.manual_seed(0)
    model = build("leopard", Conv4((1, 16, 16), hidden=4), ways=3, adapt_blocks=2,
                  inner_lr=0.1, inner_steps=2).to(DT)
    sx, sy = torch.randn(6, 1, 16, 16, dtype=DT), torch.arange(3).repeat_interleave(2)
    theta = params_of(model)
    adapted = model.inner_loop(sx, sy, 3, 2)
    assert not any(k.startswith(("g.", "inner_lrs")) for k in adapted)
    assert adapted["softmax.weight"].shape == (3, 256) and adapted["softmax.bias"].shape == (3,)
    w0, _ = model.generate_softmax(model.backbone(sx), sy, 3)
    assert (adapted["softmax.weight"] - w0).abs().max() > 1e-6
    for k, v in theta.items():
        if k.startswith(("g.", "inner_lrs")) or k.endswith(".0.bias"):  # conv bias before BN
            continue
        task_specific = k.startswith(("h.", "backbone.features.2.", "backbone.features.3."))
        assert torch.equal(adapted[k], v) != task_specific, k


def test_frozen_backbone_runs_once_per_task_whatever_the_inner_steps():
    torch.manual_seed(0)
    model = build("leopard", Conv4((1, 16, 16), hidden=4), ways=3, adapt_blocks=0,
                  inner_steps=4)
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    predictor = model.adapt(torch.randn(6, 1, 16, 16), torch.arange(3).repeat_interleave(2))
    assert len(calls) == 1  # the support features, once for generation and 4 steps
    assert predictor(torch.randn(9, 1, 16, 16)).shape == (9, 3)


def test_backbone_blocks_and_too_many_adapted_blocks():
    assert [b[0] for b in backbone_blocks(Conv4((1, 28, 28), hidden=4))] == [
        f"features.{i}.0.weight" for i in range(4)]
    assert backbone_blocks(MLP((4,), (6, 5))) == [["layers.0.weight", "layers.0.bias"],
                                                  ["layers.2.weight", "layers.2.bias"]]
    resnet = models.build("resnet12", input_shape=(3, 32, 32))
    assert [b[0].split(".")[1] for b in backbone_blocks(resnet)] == ["0", "1", "2", "3"]
    with pytest.raises(ConfigError, match="adapt_blocks=5 exceeds the backbone's 4 blocks"):
        build("leopard", Conv4((1, 28, 28), hidden=4), ways=5, adapt_blocks=5)


@pytest.mark.slow
def test_learns_glyphs_5way_1shot():
    from tests.algorithms.learning import (
        glyph_episodes,
        meta_train,
        query_accuracy,
    )

    torch.manual_seed(0)
    model = build("leopard", Conv4((1, 28, 28), hidden=16), ways=5, inner_lr=0.1,
                  inner_steps=2, adapt_blocks=1, label_dim=64)
    train, test = glyph_episodes()
    meta_train(model, train, 60, 3e-3)
    after = query_accuracy(model, test)
    print(f"glyphs 5-way 1-shot accuracy after 60 meta-steps {after:.3f}")
    assert after > 0.55  # chance 0.2; at the random start 0.28


@pytest.mark.parametrize("options", [{"inner_lr": 0.0}, {"inner_steps": -1},
                                     {"eval_inner_steps": -2}, {"adapt_blocks": -1},
                                     {"label_dim": 0}, {"mlp_layers": 0}, {"mlp_hidden": 0},
                                     {"inner_grad_clip": 0.0}, {"bn_mode": "running"}])
def test_bad_config_raises(options):
    with pytest.raises(ConfigError, match=f"leopard .*{next(iter(options))}"):
        get("leopard").make_config(**options)
