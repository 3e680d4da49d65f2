"""Reptile: the outer step against a hand-written Algorithm 2, the inner Adam against
torch.optim.Adam, mini-batch orders, batch-norm modes, errors, and learning sinusoids."""

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.inner_loop import mini_batch_orders
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from tests.algorithms.learning import float64_noise_image_batch, float64_sine_batch

DT = torch.float64


_regression_batch = partial(float64_sine_batch, tasks=3, shots=4, queries=5)


_image_batch = partial(float64_noise_image_batch, tasks=1, ways=3, shots=2, queries=2)


def _f(w, x):
    """MLP (1 -> 6 -> 5) + linear head, written out by hand."""
    h = torch.relu(x @ w[0].T + w[1])
    h = torch.relu(h @ w[2].T + w[3])
    return h @ w[4].T + w[5]


def _hand_reptile(theta, batch, orders, optimizer, lr, betas=(0.0, 0.999), carry=True):
    """Adapted weights W_i (explicit inner loop, no metazoo code) and the mean query MSE.
    With `carry`, Adam's moments and step count pass from task to task (reference code)."""
    b1, b2 = betas
    phis, losses = [], []
    m = [torch.zeros_like(t) for t in theta]
    v = [torch.zeros_like(t) for t in theta]
    t = 0
    for i in range(len(batch)):
        w = list(theta)
        if not carry:
            m = [torch.zeros_like(a) for a in theta]
            v = [torch.zeros_like(a) for a in theta]
            t = 0
        for idx in orders[i]:
            t += 1
            w = [a.detach().requires_grad_() for a in w]
            x, y = batch.support_x[i][idx], batch.support_y[i][idx]
            g = torch.autograd.grad(((_f(w, x) - y) ** 2).mean(), w)
            if optimizer == "sgd":
                w = [a - lr * b for a, b in zip(w, g, strict=True)]
                continue
            m = [b1 * a + (1 - b1) * b for a, b in zip(m, g, strict=True)]
            v = [b2 * a + (1 - b2) * b * b for a, b in zip(v, g, strict=True)]
            w = [a - lr * (mm / (1 - b1**t)) / ((vv / (1 - b2**t)).sqrt() + 1e-8)
                 for a, mm, vv in zip(w, m, v, strict=True)]
        phis.append([a.detach() for a in w])
        losses.append(((_f(w, batch.query_x[i]) - batch.query_y[i]) ** 2).mean().detach())
    return phis, torch.stack(losses).mean()


@pytest.mark.parametrize("tasks", [1, 3])  # 1: serial Algorithm 1; 3: batched Algorithm 2
@pytest.mark.parametrize(("optimizer", "adam_state"),
                         [("sgd", "carry"), ("adam", "carry"), ("adam", "reset")])
def test_sgd_outer_step_is_algorithm_2_and_loss_is_mean_query_loss(optimizer, adam_state,
                                                                   tasks):
    torch.manual_seed(0)
    lr = 0.05 if optimizer == "sgd" else 0.01
    model = build("reptile", MLP((1,), (6, 5)), ways=1, inner_optimizer=optimizer,
                  inner_lr=lr, inner_steps=4, inner_batch_size=3,
                  inner_adam_state=adam_state).to(DT)
    batch = _regression_batch(tasks=tasks)
    model.begin_step(7, 10)  # the trainer's call: the shuffles depend on the step
    orders = model._orders(4, tasks)  # [tasks, 4 steps, 3 examples]: 3 passes over 4
    theta = [p.detach().clone() for p in model.parameters()]
    phis, query_loss = _hand_reptile(theta, batch, orders, optimizer, lr,
                                     carry=adam_state == "carry")
    eps = 0.7
    opt = torch.optim.SGD(model.parameters(), lr=eps)
    loss, metrics = model.meta_loss(batch)
    loss.backward()
    opt.step()
    torch.testing.assert_close(loss.detach(), query_loss)
    torch.testing.assert_close(metrics["mse"], query_loss)
    for j, p in enumerate(model.parameters()):
        mean_phi = torch.stack([phi[j] for phi in phis]).mean(0)
        assert (mean_phi - theta[j]).abs().max() > 1e-4  # the step moves: a check that can fail
        torch.testing.assert_close(p.detach(), theta[j] + eps * (mean_phi - theta[j]))


@pytest.mark.parametrize("betas", [(0.0, 0.999), (0.9, 0.99)])
def test_inner_adam_equals_torch_adam_step_by_step(betas):
    torch.manual_seed(0)
    model = build("reptile", Conv4((1, 16, 16), hidden=4), ways=3, inner_lr=0.01,
                  adam_beta1=betas[0], adam_beta2=betas[1]).to(DT)
    batch = _image_batch()
    sx, sy = batch.support_x[0], batch.support_y[0]
    orders = mini_batch_orders(6, 5, 4, 1, "any")[0]  # [5 steps, 4 examples]
    ref = copy.deepcopy(model)
    opt = torch.optim.Adam(ref.parameters(), lr=0.01, betas=betas)
    for t in range(1, len(orders) + 1):
        opt.zero_grad()
        F.cross_entropy(ref(sx[orders[t - 1]]), sy[orders[t - 1]]).backward()
        opt.step()
        ours, _ = model._adapted(sx, sy, orders[:t], model._adam_state())
        for k, p in ref.named_parameters():
            torch.testing.assert_close(ours[k], p.detach(), msg=f"step {t} {k}")
    moved = max((ours[k] - p).abs().max() for k, p in params_of(model).items())
    assert moved > 1e-3


def test_adam_state_carries_across_tasks_and_iterations_as_one_torch_adam():
    """The reference code: one Adam optimiser for the whole run; the weights are reset to phi
    before each task, its moments and step count are not. Evaluation starts from that state
    and leaves it alone; the state survives a state_dict round trip."""
    torch.manual_seed(0)
    model = build("reptile", Conv4((1, 16, 16), hidden=4), ways=3, inner_lr=0.01,
                  inner_steps=3, inner_batch_size=4, eval_inner_steps=2,
                  eval_inner_batch_size=3).to(DT)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01, betas=(0.0, 0.999))
    outer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(2):
        batch = float64_noise_image_batch(tasks=2, ways=3, shots=2, queries=1, seed=step)
        model.begin_step(step, 2)
        orders = model._orders(6, 2)
        phi = {k: p.detach().clone() for k, p in ref.named_parameters()}
        adapted = []
        for i in range(2):
            with torch.no_grad():
                for k, p in ref.named_parameters():
                    p.copy_(phi[k])
            for idx in orders[i]:
                ref_opt.zero_grad()
                sx, sy = batch.support_x[i][idx], batch.support_y[i][idx]
                F.cross_entropy(ref(sx), sy).backward()
                ref_opt.step()
            adapted.append({k: p.detach().clone() for k, p in ref.named_parameters()})
        with torch.no_grad():  # the same outer step on the reference
            for k, p in ref.named_parameters():
                mean_w = torch.stack([a[k] for a in adapted]).mean(0)
                p.copy_(phi[k] + 0.5 * (mean_w - phi[k]))
        outer.zero_grad()
        model.meta_loss(batch)[0].backward()
        outer.step()
        model.end_step(batch)  # the trainer's call: stores the new Adam state
        for k, p in ref.named_parameters():
            torch.testing.assert_close(dict(model.named_parameters())[k], p, msg=k)
    assert int(model.adam_steps) == 12  # 2 iterations x 2 tasks x 3 steps
    state = model._adam_state()
    for k, p in ref.named_parameters():
        torch.testing.assert_close(state.v[k], ref_opt.state[p]["exp_avg_sq"], msg=k)
    # evaluation: from the carried state, which it leaves alone
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = float64_noise_image_batch(tasks=1, ways=3, shots=2, queries=2, seed=9)
    query = model.adapt(batch.support_x[0], batch.support_y[0])(batch.query_x[0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    fresh = build("reptile", Conv4((1, 16, 16), hidden=4), ways=3, inner_lr=0.01,
                  eval_inner_steps=2, eval_inner_batch_size=3).to(DT).eval()
    fresh.load_state_dict({k: v for k, v in before.items() if "adam" not in k}, strict=False)
    other = fresh.adapt(batch.support_x[0], batch.support_y[0])(batch.query_x[0])
    assert (query - other).abs().max() > 1e-6  # the carried state changes the adaptation
    fresh.load_state_dict(before)
    torch.testing.assert_close(fresh.adapt(batch.support_x[0], batch.support_y[0])(
        batch.query_x[0]), query)


def test_mini_batch_orders_are_shuffled_passes_fixed_by_seed():
    orders = mini_batch_orders(4, 5, 3, 2, "s")  # 15 indices from 4 passes over 4 examples
    assert orders.shape == (2, 5, 3)
    for stream in orders.reshape(2, -1):
        for start in range(0, 12, 4):
            assert sorted(stream[start:start + 4].tolist()) == [0, 1, 2, 3]
    assert torch.equal(orders, mini_batch_orders(4, 5, 3, 2, "s"))
    assert not torch.equal(orders, mini_batch_orders(4, 5, 3, 2, "t"))
    assert not torch.equal(orders[0], orders[1])  # each task of a meta-batch its own shuffle
    model = build("reptile", MLP((1,), (4,)), ways=1, inner_steps=3, inner_batch_size=2,
                  eval_inner_steps=7, eval_inner_batch_size=4)
    assert model._orders(10, 2).shape == (2, 3, 2)
    model.begin_step(0, 5)
    first = model._orders(10, 1)
    model.begin_step(1, 5)
    assert not torch.equal(first, model._orders(10, 1))
    assert model.eval()._orders(10, 1).shape == (1, 7, 4)


def test_per_query_batch_norm_uses_the_support_plus_that_query():
    """The reference code's non-transductive evaluation: the adapted network run on the
    support set and one query, read at the query's row."""
    batch = _image_batch(queries=2)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    torch.manual_seed(0)
    model = build("reptile", Conv4((1, 16, 16), hidden=4), ways=3, bn_mode="per_query",
                  eval_inner_steps=3).to(DT).eval()
    logits = model.adapt(sx, sy)(qx)
    adapted, _ = model._adapted(sx, sy, model._orders(len(sx), 1)[0], model._adam_state())
    for i, q in enumerate(qx):
        ref = torch.func.functional_call(model.train(), adapted, (torch.cat([sx, q[None]]),))
        torch.testing.assert_close(logits[i], ref[-1])
    support_only = build("reptile", Conv4((1, 16, 16), hidden=4), ways=3,
                         bn_mode="non_transductive", eval_inner_steps=3).to(DT).eval()
    support_only.load_state_dict(model.state_dict())
    assert (support_only.adapt(sx, sy)(qx) - logits).abs().max() > 1e-4  # the query counts


def _query_logits(bn_mode, query_x, support):
    torch.manual_seed(0)
    model = build("reptile", Conv4((1, 16, 16), hidden=4), ways=3, bn_mode=bn_mode,
                  eval_inner_steps=3).to(DT).eval()
    return model.adapt(*support)(query_x)


@pytest.mark.parametrize("bn_mode", ["transductive", "non_transductive", "per_query"])
def test_query_independence_only_without_transduction(bn_mode):
    batch = _image_batch(queries=3)
    support = (batch.support_x[0], batch.support_y[0])
    qx = batch.query_x[0]
    other = qx.clone()
    other[1:] = torch.randn_like(other[1:]) * 3 + 1  # change every query but the first
    a, b = _query_logits(bn_mode, qx, support)[0], _query_logits(bn_mode, other, support)[0]
    assert not a.requires_grad  # the predictor holds no graph
    if bn_mode != "transductive":
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, _query_logits(bn_mode, qx[:1], support)[0])
    else:
        assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("option, value", [
    ("inner_steps", 0), ("eval_inner_steps", 0), ("inner_batch_size", 0),
    ("eval_inner_batch_size", -1), ("inner_lr", 0.0), ("inner_lr", -0.1),
    ("inner_optimizer", "rmsprop"), ("adam_beta1", 1.0), ("bn_mode", "running"),
    ("inner_adam_state", "keep"),
])
def test_bad_config_raises(option, value):
    with pytest.raises(ConfigError, match=option):
        get("reptile").make_config(**{option: value})


def _post_adaptation_mse(model, batch):
    model.eval()
    with torch.no_grad():
        out = model.predict(batch.support_x, batch.support_y, batch.query_x)
    model.train()
    return ((out - batch.query_y) ** 2).mean().item()


@pytest.mark.slow
def test_learns_sinusoid_regression():
    """Inner SGD as the paper's sine demo (lr 0.02, batches of 10, 32 steps at test)."""
    from metazoo.tasks import SinusoidTasks

    def make():
        torch.manual_seed(0)
        return build("reptile", MLP((1,), (40, 40)), ways=1, inner_optimizer="sgd",
                     inner_lr=0.02, inner_steps=5, inner_batch_size=10, eval_inner_steps=32,
                     eval_inner_batch_size=10)

    model, untrained = make(), make()
    tasks = SinusoidTasks(shots=50, queries=10, seed=0, split="train")
    steps, eps = 400, 1.0
    opt = torch.optim.SGD(model.parameters(), lr=eps)
    for step in range(steps):  # about 5 s on one idle core
        for group in opt.param_groups:  # train.schedule: linear
            group["lr"] = eps * (1 - step / steps)
        model.begin_step(step, steps)
        opt.zero_grad()
        model.meta_loss(tasks.batch(step, 3))[0].backward()
        opt.step()
    test = SinusoidTasks(10, 100, seed=0, split="test").batch(0, 40)
    before, after = _post_adaptation_mse(untrained, test), _post_adaptation_mse(model, test)
    assert after * 3 <= before, (before, after)
