"""MAML / FOMAML: reference meta-gradients, strategies equal, batch-norm modes, learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.batching import STRATEGIES
from metazoo.functional import params_of
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from metazoo.tasks import TaskBatch
from tests.algorithms.learning import sinusoid_mse_before_after

DT = torch.float64


def _regression_batch(tasks=3, shots=4, queries=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    amp = torch.rand(tasks, 1, 1, generator=g, dtype=DT) * 4.9 + 0.1
    phase = torch.rand(tasks, 1, 1, generator=g, dtype=DT) * math.pi
    xs = torch.rand(tasks, shots, 1, generator=g, dtype=DT) * 10 - 5
    xq = torch.rand(tasks, queries, 1, generator=g, dtype=DT) * 10 - 5
    return TaskBatch(xs, amp * torch.sin(xs - phase), xq, amp * torch.sin(xq - phase), 1, shots,
                     queries)


def _image_batch(tasks=3, ways=3, shots=1, queries=2, size=16, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(torch.randn(tasks, ways * shots, 1, size, size, generator=g, dtype=dtype),
                     torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous(),
                     torch.randn(tasks, ways * queries, 1, size, size, generator=g, dtype=dtype),
                     torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous(),
                     ways, shots, queries)


def _grads(model, batch, strategy="auto"):
    model.zero_grad(set_to_none=True)
    batching.meta_loss(model, batch, strategy)[0].backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _hand_unrolled(model, batch, steps, lr, first_order):
    """MAML's meta-gradient written out with plain tensors and autograd.grad, no metazoo code."""
    p = [t.detach().clone().requires_grad_() for t in params_of(model).values()]

    def f(w, x):  # MLP (1 -> 6 -> 5) + head, as Linear/ReLU written by hand
        h = torch.relu(x @ w[0].T + w[1])
        h = torch.relu(h @ w[2].T + w[3])
        return h @ w[4].T + w[5]

    total = 0.0
    for i in range(len(batch)):
        w = p
        for _ in range(steps):
            loss = ((f(w, batch.support_x[i]) - batch.support_y[i]) ** 2).mean()
            if first_order:
                g = torch.autograd.grad(loss, w, retain_graph=True)
                g = [t.detach() for t in g]
            else:
                g = torch.autograd.grad(loss, w, create_graph=True)
            w = [a - lr * b for a, b in zip(w, g, strict=True)]
        total = total + ((f(w, batch.query_x[i]) - batch.query_y[i]) ** 2).mean()
    return torch.autograd.grad(total / len(batch), p)


@pytest.mark.parametrize("name", ["maml", "fomaml"])
def test_meta_gradient_equals_hand_unrolled(name):
    torch.manual_seed(0)
    model = build(name, MLP((1,), (6, 5)), ways=1, inner_lr=0.05, inner_steps=2).to(DT)
    batch = _regression_batch()
    ours = _grads(model, batch)
    ref = _hand_unrolled(model, batch, 2, 0.05, first_order=(name == "fomaml"))
    for (k, a), b in zip(ours.items(), ref, strict=True):
        torch.testing.assert_close(a, b, msg=k)


def test_fomaml_gradient_is_query_gradient_at_adapted_params():
    torch.manual_seed(0)
    model = build("fomaml", MLP((1,), (6,)), ways=1, inner_lr=0.1, inner_steps=3).to(DT)
    batch = _regression_batch(tasks=1)
    ours = _grads(model, batch)
    adapted = model.inner_loop(params_of(model), batch.support_x[0], batch.support_y[0], 3)
    adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    out = torch.func.functional_call(model, adapted, (batch.query_x[0],))
    ref = torch.autograd.grad(F.mse_loss(out, batch.query_y[0]), list(adapted.values()))
    for (k, a), b in zip(ours.items(), ref, strict=True):
        torch.testing.assert_close(a, b, msg=k)


@pytest.mark.parametrize("first_order", [False, True])
def test_every_strategy_equals_the_loop_on_conv4_with_batch_norm(first_order):
    torch.manual_seed(0)
    model = build("maml", Conv4((1, 16, 16), hidden=4), ways=3, inner_steps=2,
                  first_order=first_order).to(DT)
    batch = _image_batch()
    ref = _grads(model, batch, "loop")
    assert max(g.abs().max() for g in ref.values()) > 1e-3  # a check that can fail
    for strategy in STRATEGIES:
        for k, g in _grads(model, batch, strategy).items():
            torch.testing.assert_close(g, ref[k], rtol=1e-9, atol=1e-11, msg=f"{strategy} {k}")


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_backward_of_every_strategy_equals_the_loop(first_order):
    """`meta_backward` (what training calls) per strategy; "threads" on 2 worker threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = build("maml", Conv4((1, 16, 16), hidden=4), ways=3, inner_steps=2,
                      first_order=first_order).to(DT)
        batch = _image_batch()
        ref = _grads(model, batch, "loop")
        for strategy in STRATEGIES:
            model.zero_grad(set_to_none=True)
            loss, _ = batching.meta_backward(model, batch, strategy)
            torch.testing.assert_close(loss, model.meta_loss(batch)[0].detach())
            for k, p in model.named_parameters():
                torch.testing.assert_close(p.grad, ref[k], rtol=1e-9, atol=1e-11,
                                           msg=f"{strategy} {k}")
    finally:
        torch.set_num_threads(before)


def test_threads_predict_equals_loop_and_keeps_no_graph_in_evaluation():
    torch.manual_seed(0)
    model = build("maml", Conv4((1, 16, 16), hidden=4), ways=3, inner_steps=2).to(DT).eval()
    batch = _image_batch()
    args = (batch.support_x, batch.support_y, batch.query_x)
    with torch.no_grad():
        ref = batching.predict(model, *args, strategy="loop")
    with torch.no_grad():
        out = batching.predict(model, *args, strategy="threads")
    assert not out.requires_grad
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def _query_logits(bn_mode, query_x, support):
    torch.manual_seed(0)
    model = build("maml", Conv4((1, 16, 16), hidden=4), ways=3, bn_mode=bn_mode).to(DT)
    return model.adapt(*support)(query_x)


@pytest.mark.parametrize("bn_mode", ["transductive", "non_transductive"])
def test_query_independence_only_without_transduction(bn_mode):
    batch = _image_batch(tasks=1, queries=3)
    support = (batch.support_x[0], batch.support_y[0])
    qx = batch.query_x[0]
    other = qx.clone()
    other[1:] = torch.randn_like(other[1:]) * 3 + 1  # change every query but the first
    a, b = _query_logits(bn_mode, qx, support)[0], _query_logits(bn_mode, other, support)[0]
    if bn_mode == "non_transductive":
        torch.testing.assert_close(a, b)
        single = _query_logits(bn_mode, qx[:1], support)[0]  # and alone gives the same answer
        torch.testing.assert_close(a, single)
    else:
        assert (a - b).abs().max() > 1e-3


def test_eval_inner_steps_apply_only_in_eval_mode():
    torch.manual_seed(0)
    model = build("maml", MLP((1,), (6,)), ways=1, inner_lr=0.1, inner_steps=1,
                  eval_inner_steps=4).to(DT)
    batch = _regression_batch(tasks=1)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    p = params_of(model)
    for mode, steps in ((True, 1), (False, 4)):
        model.train(mode)
        with torch.no_grad():
            got = model.adapt(sx, sy)(qx)
        ref = torch.func.functional_call(model, model.inner_loop(p, sx, sy, steps), (qx,))
        torch.testing.assert_close(got, ref.detach())


def test_registry_variants_and_errors():
    assert get("fomaml").make_config().first_order is True
    assert get("maml").make_config().first_order is False
    assert get("maml").cls is get("fomaml").cls
    from metazoo.errors import ConfigError, ShapeError

    with pytest.raises(ConfigError):
        get("maml").make_config(bn_mode="running")
    model = build("maml", MLP((1,), (6,)), ways=5)
    with pytest.raises(ShapeError):
        model.predict(torch.zeros(1, 3, 1), torch.zeros(1, 3, dtype=torch.long),
                      torch.zeros(1, 3, 1), ways=3)


@pytest.mark.slow
def test_learns_sinusoid_regression():
    torch.manual_seed(0)
    model = build("maml", MLP((1,), (40, 40)), ways=1, inner_lr=0.01, eval_inner_steps=10)
    assert batching.choose(model) == "vmap"  # auto: the fastest for an MLP
    pre, post = sinusoid_mse_before_after(model, steps=1500, lr=3e-3,  # ~15 s, one core
                                          tasks_per_batch=25)
    assert post * 5 <= pre, (pre, post)


@pytest.mark.slow
def test_learns_glyphs_5way_1shot():
    from tests.algorithms.learning import (
    glyph_episodes,
    meta_train,
    query_accuracy,
)

    torch.manual_seed(0)
    model = build("maml", Conv4((1, 28, 28), hidden=32), ways=5, eval_inner_steps=3)
    train, test = glyph_episodes()
    meta_train(model, train, 150, 3e-3)
    assert query_accuracy(model, test) > 0.6


class UserClassifier(torch.nn.Module):
    """A user's whole classifier (features and its own last layer): no forward_with, so the
    library runs it through torch.func.functional_call."""

    def __init__(self, body: torch.nn.Module, ways: int) -> None:
        super().__init__()
        self.body, self.last = body, torch.nn.Linear(body.feature_dim, ways)
        self.feature_dim = ways  # the logits are its output

    def forward(self, x):
        return self.last(self.body(x))


@pytest.mark.parametrize("name", ["maml", "meta_sgd"])
def test_a_users_classifier_adapts_as_backbone_plus_head(name):
    """head=backbone on (body + the user's last layer) equals the default head on body, with
    the same weights: the same meta-loss and meta-gradients."""
    torch.manual_seed(0)
    options = {"inner_lr_init": None} if name == "meta_sgd" else {}
    ours = build(name, MLP((1, 16, 16), hidden=(6,)).to(DT), ways=3, inner_lr=0.3,
                 inner_steps=2, **options).to(DT)
    user = UserClassifier(MLP((1, 16, 16), hidden=(6,)), 3).to(DT)
    user.body.load_state_dict(ours.backbone.state_dict())
    user.last.load_state_dict(ours.head.state_dict())
    theirs = build(name, user, ways=3, inner_lr=0.3, inner_steps=2, head="backbone",
                   **options).to(DT)
    assert theirs.head is None and not any(k.startswith("head.") for k, _ in
                                           theirs.named_parameters())
    batch = _image_batch()
    ga, gb = _grads(ours, batch, "loop"), _grads(theirs, batch, "loop")
    rename = {"backbone.body.": "backbone.", "backbone.last.": "head.",  # Meta-SGD's rates:
              "backbone:body:": "backbone:", "backbone:last:": "head:"}
    for k, g in gb.items():
        for old, new in rename.items():
            k = k.replace(old, new)
        torch.testing.assert_close(g, ga[k])
    assert len(ga) == len(gb)


def test_a_users_classifier_must_give_the_ways_and_an_algorithm_that_allows_it():
    from metazoo.errors import ConfigError

    user = UserClassifier(MLP((1, 16, 16), hidden=(6,)), 3)
    with pytest.raises(ConfigError, match="feature_dim must be the ways"):
        build("maml", user, ways=5, head="backbone")
    with pytest.raises(ConfigError, match="has no option 'head'"):
        build("platipus", user, ways=3, head="backbone")  # it adds heads of its own
