"""MAML++: each fix against a hand computation or MAML, the schedules, batch norm, learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.functional import call, params_of
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from metazoo.tasks import TaskBatch

DT = torch.float64
OFF = dict(multi_step_loss=False, derivative_order_annealing=False, per_step_bn_weights=False,
           per_step_bn_stats=False, learned_step_sizes=False)


def _image_batch(tasks=2, ways=3, shots=1, queries=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(torch.randn(tasks, ways * shots, 1, size, size, generator=g, dtype=DT),
                     torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous(),
                     torch.randn(tasks, ways * queries, 1, size, size, generator=g, dtype=DT),
                     torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous(),
                     ways, shots, queries)


def _regression_batch(tasks=2, shots=4, queries=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    amp = torch.rand(tasks, 1, 1, generator=g, dtype=DT) * 4.9 + 0.1
    xs = torch.rand(tasks, shots, 1, generator=g, dtype=DT) * 10 - 5
    xq = torch.rand(tasks, queries, 1, generator=g, dtype=DT) * 10 - 5
    return TaskBatch(xs, amp * torch.sin(xs), xq, amp * torch.sin(xq), 1, shots, queries)


def _conv(name, steps, **kw):
    torch.manual_seed(0)
    return build(name, Conv4((1, 16, 16), hidden=4), ways=3, inner_steps=steps, **kw).to(DT)


def _loss_and_grads(model, batch, names=None):
    loss = model.meta_loss(batch)[0]
    params = dict(model.named_parameters())
    names = names or list(params)
    return loss, dict(zip(names, torch.autograd.grad(loss, [params[k] for k in names]),
                          strict=True))


def _assert_equal(a, b):
    torch.testing.assert_close(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], msg=k)


@pytest.mark.parametrize("kind", ["conv4", "mlp"])
@pytest.mark.parametrize("steps", [1, 3])
def test_with_every_fix_off_it_is_maml(kind, steps):
    kw = dict(inner_lr=0.1, inner_steps=steps)
    if kind == "conv4":
        maml, batch = _conv("maml", steps, inner_lr=0.1), _image_batch()
        pp = _conv("maml_pp", steps, inner_lr=0.1, **OFF)
    else:
        torch.manual_seed(0)
        maml, batch = build("maml", MLP((1,), (6, 5)), ways=1, **kw).to(DT), _regression_batch()
        pp = build("maml_pp", MLP((1,), (6, 5)), ways=1, **kw, **OFF).to(DT)
    pp.load_state_dict(maml.state_dict())  # the same parameter names: no extra ones
    ref = _loss_and_grads(maml, batch)
    assert max(g.abs().max() for g in ref[1].values()) > 1e-3  # a check that can fail
    _assert_equal(_loss_and_grads(pp, batch), ref)


def test_msl_weights_schedule():
    pp = _conv("maml_pp", 5, msl_iterations=100)
    expected = {0: [0.2] * 5, 50: [0.1] * 4 + [0.6], 99: [0.006] * 4 + [0.976],
                100: [0.006] * 4 + [0.976], 10**6: [0.006] * 4 + [0.976]}
    for step, weights in expected.items():
        pp.begin_step(step, 10**6)
        assert pp.msl_weights() == pytest.approx(weights, abs=1e-12), step
        assert math.isclose(sum(pp.msl_weights()), 1.0)


@pytest.mark.parametrize("meta_step", [0, 50, 100])
def test_msl_loss_is_the_weighted_sum_of_per_step_maml_losses(meta_step):
    """v_i times the query loss after i steps (MAML with i inner steps), i = 1..3; the final
    query loss alone once the annealing period is over."""
    pp = _conv("maml_pp", 3, inner_lr=0.1, **{**OFF, "multi_step_loss": True},
               msl_iterations=100)
    pp.begin_step(meta_step, 1000)
    batch = _image_batch()
    weights = pp.msl_weights() if meta_step < 100 else [0.0, 0.0, 1.0]
    ref_loss, ref_grads = 0.0, {k: 0.0 for k, _ in pp.named_parameters()}
    for steps, w in zip((1, 2, 3), weights, strict=True):
        maml = _conv("maml", steps, inner_lr=0.1)
        maml.load_state_dict(pp.state_dict())
        loss, grads = _loss_and_grads(maml, batch)
        ref_loss = ref_loss + w * loss
        ref_grads = {k: ref_grads[k] + w * grads[k] for k in grads}
    _assert_equal(_loss_and_grads(pp, batch), (ref_loss, ref_grads))


def test_derivative_order_annealing_switches_from_fomaml_to_maml():
    batch = _image_batch()
    pp = _conv("maml_pp", 2, inner_lr=0.1, **{**OFF, "derivative_order_annealing": True},
               first_order_iterations=10)
    refs = {}
    for name in ("fomaml", "maml"):
        m = _conv(name, 2, inner_lr=0.1)
        m.load_state_dict(pp.state_dict())
        refs[name] = _loss_and_grads(m, batch)
    gap = max((refs["fomaml"][1][k] - refs["maml"][1][k]).abs().max() for k in refs["maml"][1])
    assert gap > 1e-4  # the two orders differ, so the check can fail
    for step, name in ((0, "fomaml"), (9, "fomaml"), (10, "maml"), (500, "maml")):
        pp.begin_step(step, 1000)
        _assert_equal(_loss_and_grads(pp, batch), refs[name])


def _hand_lslr(model, batch, lrs):
    """Per-step per-layer learning rates written out: MLP 1 -> 6 -> 5 + head, MSE, 2nd order."""
    p = [t.detach().clone().requires_grad_() for k, t in params_of(model).items()
         if k != "step_sizes"]
    lr = lrs.detach().clone().requires_grad_()  # [steps, 6]

    def f(w, x):
        h = torch.relu(x @ w[0].T + w[1])
        h = torch.relu(h @ w[2].T + w[3])
        return h @ w[4].T + w[5]

    total = 0.0
    for i in range(len(batch)):
        w = p
        for s in range(lr.shape[0]):
            loss = ((f(w, batch.support_x[i]) - batch.support_y[i]) ** 2).mean()
            g = torch.autograd.grad(loss, w, create_graph=True)
            w = [a - lr[s, j] * b for j, (a, b) in enumerate(zip(w, g, strict=True))]
        total = total + ((f(w, batch.query_x[i]) - batch.query_y[i]) ** 2).mean()
    total = total / len(batch)
    return total, torch.autograd.grad(total, [*p, lr])


def test_learned_step_sizes_per_layer_and_step_equal_a_hand_computation():
    torch.manual_seed(0)
    pp = build("maml_pp", MLP((1,), (6, 5)), ways=1, inner_lr=0.05, inner_steps=3,
               **{**OFF, "learned_step_sizes": True}).to(DT)
    batch = _regression_batch()
    assert pp.step_sizes.shape == (3, 6)
    torch.testing.assert_close(pp.step_sizes.detach(), torch.full((3, 6), 0.05, dtype=DT),
                               rtol=1e-7, atol=0)  # initialised to alpha (in float32)
    with torch.no_grad():
        pp.step_sizes.fill_(0.05)
    maml = build("maml", MLP((1,), (6, 5)), ways=1, inner_lr=0.05, inner_steps=3).to(DT)
    maml.load_state_dict({k: v for k, v in pp.state_dict().items() if k != "step_sizes"})
    names = [k for k, _ in maml.named_parameters()]
    # all equal to alpha: MAML
    _assert_equal(_loss_and_grads(pp, batch, names), _loss_and_grads(maml, batch))
    with torch.no_grad():  # distinct rates per step and per layer
        pp.step_sizes.copy_(torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) * 0.1)
    loss, grads = _loss_and_grads(pp, batch)
    ref_loss, ref_grads = _hand_lslr(pp, batch, pp.step_sizes)
    torch.testing.assert_close(loss, ref_loss)
    for k, g in zip([*names, "step_sizes"], ref_grads, strict=True):
        torch.testing.assert_close(grads[k], g, msg=k)
    assert (grads["step_sizes"].abs() > 0).all()  # every rate of every step gets a gradient


def test_per_step_bn_weights_are_separate_and_used_by_their_step():
    pp = _conv("maml_pp", 3, inner_lr=0.1, **{**OFF, "per_step_bn_weights": True})
    bn = [k for k, _ in pp.named_parameters()
          if k.startswith("backbone.") and k.split(".")[-2] == "1"]
    assert len(bn) == 8 and len(pp.bn_steps) == 8  # 4 blocks x (gamma, beta)
    assert all(p.shape == (2, 4) for p in pp.bn_steps.values())  # steps 1 and 2; 0 = backbone
    with torch.no_grad():  # make every set different
        g = torch.Generator().manual_seed(3)
        for p in [*pp.bn_steps.values(), *(dict(pp.named_parameters())[k] for k in bn)]:
            p.add_(torch.randn(p.shape, generator=g, dtype=DT) * 0.3)
    batch = _image_batch()
    loss, grads = _loss_and_grads(pp, batch)
    # by hand: step s (support pass s, and the query pass after the last step with set s=2)
    theta = params_of(pp)
    sets = [{k: theta[k] for k in bn}] + [
        {k: pp.bn_steps[k.replace(".", "_")][s] for k in bn} for s in range(2)]
    inner = [k for k in theta if k not in bn and k.startswith(("backbone.", "head."))]
    total = 0.0
    for i in range(len(batch)):
        p = {k: theta[k] for k in inner}
        for s in range(3):
            out = call(pp, {**p, **sets[s]}, batch.support_x[i])
            g_ = torch.autograd.grad(F.cross_entropy(out, batch.support_y[i]), list(p.values()),
                                     create_graph=True)
            p = {k: v - 0.1 * d for (k, v), d in zip(p.items(), g_, strict=True)}
        total = total + F.cross_entropy(call(pp, {**p, **sets[2]}, batch.query_x[i]),
                                        batch.query_y[i])
    total = total / len(batch)
    names = list(grads)
    ref = torch.autograd.grad(total, [dict(pp.named_parameters())[k] for k in names])
    _assert_equal((loss, grads), (total, dict(zip(names, ref, strict=True))))
    for k in [*bn, *(f"bn_steps.{k}" for k in pp.bn_steps)]:
        assert grads[k].abs().sum() > 0, k  # every set of every step is learned


def _running(**kw):
    return _conv("maml_pp", 2, inner_lr=0.1, **{**OFF, "per_step_bn_stats": True, **kw},
                 eval_bn="running")


def test_running_statistics_are_updated_by_training_passes_per_step():
    pp = _running(bn_momentum=1.0)  # momentum 1: each set holds the last pass that used it
    batch = _image_batch(tasks=1)
    assert pp.running_mean.shape == (2, 4, 4)
    start = pp.running_mean.clone(), pp.running_var.clone()
    expected = pp.meta_loss(batch)[0]
    pp.meta_loss(batch)[0].backward()
    assert torch.equal(pp.running_mean, start[0])  # meta_loss leaves them alone
    grads = {k: p.grad.clone() for k, p in pp.named_parameters()}
    pp.zero_grad(set_to_none=True)
    loss, _ = batching.meta_backward(pp, batch)
    pp.end_step(batch)  # the trainer's call after the meta-gradient
    torch.testing.assert_close(loss, expected.detach())
    for k, p in pp.named_parameters():  # the update does not touch the meta-gradient
        torch.testing.assert_close(p.grad, grads[k], msg=k)
    # set 0, block 0: the support pass of step 0 (the only pass that uses set 0 without MSL)
    conv = pp.backbone.features[0][0]
    maps = conv(batch.support_x[0])
    torch.testing.assert_close(pp.running_mean[0, 0], maps.mean((0, 2, 3)))
    torch.testing.assert_close(pp.running_var[0, 0], maps.var((0, 2, 3), unbiased=True))
    assert (pp.running_mean[1] - pp.running_mean[0]).abs().max() > 1e-3  # one set per step
    shared = _running(per_step_bn_stats=False)
    assert shared.running_mean.shape == (1, 4, 4)


def test_running_statistics_normalise_evaluation_step_by_step():
    pp = _running()
    batch = _image_batch(tasks=3, queries=3)
    for i in range(20):
        train_batch = _image_batch(tasks=2, seed=i + 1)
        batching.meta_backward(pp, train_batch)
        pp.end_step(train_batch)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    pp.eval()
    with torch.no_grad():
        ref = pp.adapt(sx, sy)(qx)
        alone = pp.adapt(sx, sy)(qx[:1])  # non-transductive: a query's answer is its own
        torch.testing.assert_close(alone[0], ref[0])
        for s in (0, 1):  # each step's set is used: changing one changes the predictions
            before = pp.running_var[s].clone()
            pp.running_var[s] *= 2
            assert (pp.adapt(sx, sy)(qx) - ref).abs().max() > 1e-4, s
            pp.running_var[s] = before
        batch_stats = _conv("maml_pp", 2, inner_lr=0.1, **OFF)
        batch_stats.load_state_dict(pp.state_dict(), strict=False)
        batch_stats.eval()
        assert (batch_stats.adapt(sx, sy)(qx)[0] - batch_stats.adapt(sx, sy)(qx[:1])[0]
                ).abs().max() > 1e-4  # with batch statistics the answer depends on the others


def test_bad_config_values_raise():
    spec = get("maml_pp")
    assert spec.display == "MAML++" and spec.family == "gradient"
    for bad in (dict(msl_iterations=0), dict(first_order_iterations=-1), dict(eval_bn="live"),
                dict(bn_momentum=0.0), dict(bn_momentum=1.5), dict(inner_lr=-0.1),
                dict(inner_steps=0), dict(bn_mode="running")):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            spec.make_config(**bad)
    with pytest.raises(ConfigError, match="conv4"):
        build("maml_pp", MLP((1,), (6,)), ways=1, eval_bn="running")


@pytest.mark.slow
def test_learns_glyphs_5way_1shot_with_every_fix_on():
    from tests.algorithms.learning import glyph_episodes, query_accuracy

    torch.manual_seed(0)
    model = build("maml_pp", Conv4((1, 28, 28), hidden=16), ways=5, inner_steps=3,
                  msl_iterations=40, first_order_iterations=40)
    train, test = glyph_episodes()
    before = query_accuracy(model, test)  # 3 steps from a random init already do something
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    steps = 80
    for step in range(steps):  # what the trainer does; second order from step 40
        opt.zero_grad()
        model.begin_step(step, steps)
        batch = train.batch(step, 4)
        batching.meta_backward(model, batch)
        model.end_step(batch)
        opt.step()
    after = query_accuracy(model, test)
    assert after > 0.6 and after > before + 0.1, (before, after)
