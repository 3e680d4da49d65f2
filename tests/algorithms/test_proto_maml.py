"""Proto-MAML: ProtoNet at zero steps, meta-gradient by hand, inner-loop scope, learning, config."""

import pytest
import torch
import torch.nn.functional as F

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from tests.algorithms.learning import float64_vector_batch

DT = torch.float64



@pytest.mark.parametrize("bn_mode", ["transductive", "non_transductive"])
def test_zero_steps_equal_protonet_up_to_a_per_query_constant(bn_mode):
    """-||z - c||^2 = (2c.z - ||c||^2) - ||z||^2: same argmax and softmax as ProtoNet.

    An MLP backbone (no batch norm): ProtoNet embeds [support; query] in one pass, so with
    batch norm the two would see different statistics."""
    torch.manual_seed(0)
    ours = build("proto_maml", MLP((4,), (6, 5)), ways=3, eval_inner_steps=0,
                 bn_mode=bn_mode).to(DT)
    proto = build("protonet", MLP((4,), (6, 5)), ways=3).to(DT)
    proto.load_state_dict(ours.state_dict())
    batch = float64_vector_batch()
    ours.eval()
    with torch.no_grad():
        a = ours.predict(batch.support_x, batch.support_y, batch.query_x)
        b = proto.predict(batch.support_x, batch.support_y, batch.query_x)
        zq = torch.vmap(ours.backbone)(batch.query_x)  # [B, M, D]
    assert (a - b).std() > 1e-3  # the logits differ ...
    torch.testing.assert_close(a - b, (zq * zq).sum(-1, keepdim=True).expand_as(a))  # by ||z||^2
    torch.testing.assert_close(a.softmax(-1), b.softmax(-1))
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    ours.train()  # and steps change the answer
    with torch.no_grad():
        c = ours.predict(batch.support_x, batch.support_y, batch.query_x)
    assert (c.softmax(-1) - b.softmax(-1)).abs().max() > 1e-4


def _hand_unrolled(model, batch, steps, lr, first_order, detach_head=False):
    """The meta-gradient with plain tensors: MLP 4 -> 6 -> 5 by hand, the prototype head,
    SGD on all parameters, the query loss (`detach_head`: the head's start a constant)."""
    p = [t.detach().clone().requires_grad_() for t in params_of(model).values()]

    def body(q, x):
        return torch.relu(torch.relu(x @ q[0].T + q[1]) @ q[2].T + q[3])

    total = 0.0
    for i in range(len(batch)):
        sx, sy = batch.support_x[i], batch.support_y[i]
        z = body(p, sx)
        c = torch.stack([z[sy == k].mean(0) for k in range(batch.ways)])  # prototypes
        c = c.detach() if detach_head else c
        # theta as inner variables of their own (partial inner gradients), W_0, b_0
        q = [*(v.clone() for v in p), 2 * c, -(c * c).sum(-1)]
        for _ in range(steps):  # first order: the gradient at a detached copy, a constant
            at = [v.detach().requires_grad_() for v in q] if first_order else q
            loss = F.cross_entropy(body(at, sx) @ at[4].T + at[5], sy)
            gs = torch.autograd.grad(loss, at, create_graph=not first_order)
            q = [v - lr * g for v, g in zip(q, gs, strict=True)]
        total = total + F.cross_entropy(body(q, batch.query_x[i]) @ q[4].T + q[5],
                                        batch.query_y[i])
    return torch.autograd.grad(total / len(batch), p)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("first_order", [True, False])
def test_meta_gradient_equals_hand_unrolled(first_order, strategy):
    torch.manual_seed(0)
    model = build("proto_maml", MLP((4,), (6, 5)), ways=3, inner_lr=0.3, inner_steps=2,
                  first_order=first_order).to(DT)
    batch = float64_vector_batch()
    model.zero_grad(set_to_none=True)
    batching.meta_loss(model, batch, strategy)[0].backward()
    ref = _hand_unrolled(model, batch, 2, 0.3, first_order)
    for (k, p), g in zip(model.named_parameters(), ref, strict=True):
        assert g.abs().max() > 1e-6, k  # a check that can fail
        torch.testing.assert_close(p.grad, g, msg=k)


def test_first_order_gradient_flows_through_the_prototype_head():
    """The first-order meta-gradient includes the path through W_0(theta), b_0(theta)."""
    torch.manual_seed(0)
    model = build("proto_maml", MLP((4,), (6, 5)), ways=3, inner_steps=1).to(DT)
    batch = float64_vector_batch(tasks=1)
    model.meta_loss(batch)[0].backward()
    ref = _hand_unrolled(model, batch, 1, 0.01, True)
    cut = _hand_unrolled(model, batch, 1, 0.01, True, detach_head=True)
    for p, g, h in zip(model.parameters(), ref, cut, strict=True):
        torch.testing.assert_close(p.grad, g)
        assert (g - h).abs().max() > 1e-4  # the head's path carries gradient


@pytest.mark.parametrize("adapt_bn", [False, True])
def test_inner_loop_adapts_body_and_head_and_batch_norm_only_if_asked(adapt_bn):
    torch.manual_seed(0)
    model = build("proto_maml", Conv4((1, 16, 16), hidden=4), ways=3, adapt_bn=adapt_bn).to(DT)
    sx, sy = torch.randn(6, 1, 16, 16, dtype=DT), torch.arange(3).repeat_interleave(2)
    start = model.start_params(sx, sy, 3)
    adapted = model.inner_loop(start, sx, sy, 2)
    assert adapted.keys() == start.keys() and {"head.weight", "head.bias"} <= start.keys()
    for k, v in start.items():
        if k.endswith(".0.bias"):  # a conv bias before batch norm has no gradient
            continue
        is_bn = k.split(".")[-2] == "1"  # a conv4 block: conv (0), batch norm (1)
        assert torch.equal(adapted[k], v) == (is_bn and not adapt_bn), k


def test_serves_other_ways_than_built_for():
    torch.manual_seed(0)
    model = build("proto_maml", Conv4((1, 16, 16), hidden=4), ways=5, inner_steps=1)
    out = model.adapt(torch.randn(6, 1, 16, 16), torch.arange(3).repeat_interleave(2), ways=3)
    assert out(torch.randn(4, 1, 16, 16)).shape == (4, 3)


@pytest.mark.slow
def test_learns_glyphs_5way_1shot():
    from tests.algorithms.learning import (
        glyph_episodes,
        meta_train,
        query_accuracy,
    )

    torch.manual_seed(0)
    model = build("proto_maml", Conv4((1, 28, 28), hidden=16), ways=5, inner_lr=0.05,
                  inner_steps=1, eval_inner_steps=3)
    train, test = glyph_episodes()
    meta_train(model, train, 60, 3e-3)
    after = query_accuracy(model, test)
    print(f"glyphs 5-way 1-shot accuracy after 60 meta-steps {after:.3f}")
    assert after > 0.6  # chance 0.2; at the random start (ProtoNet on random features) 0.40


@pytest.mark.parametrize("options", [{"inner_lr": 0.0}, {"inner_lr": -0.1},
                                     {"inner_steps": -1}, {"eval_inner_steps": -1},
                                     {"bn_mode": "running"}])
def test_bad_config_raises(options):
    with pytest.raises(ConfigError, match=f"proto_maml .*{next(iter(options))}"):
        get("proto_maml").make_config(**options)
