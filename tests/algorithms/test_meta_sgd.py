"""Meta-SGD: equal to MAML at a constant alpha, alpha's gradient by hand, learning, bad config."""

from functools import partial

import pytest
import torch

from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.functional import params_of
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from tests.algorithms.learning import (
    assert_strategy_equals_loop,
    float64_noise_image_batch,
    float64_sine_batch,
)

DT = torch.float64


_regression_batch = partial(float64_sine_batch, tasks=3, shots=4, queries=5)


_image_batch = partial(float64_noise_image_batch, tasks=2, ways=3, shots=2, queries=2)


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model.meta_loss(batch)[0]
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("kind", ["mlp", "conv4"])
def test_constant_alpha_gives_maml_loss_and_theta_gradient(kind, first_order):
    torch.manual_seed(0)
    if kind == "mlp":
        make, ways, batch = (lambda: MLP((1,), (6, 5))), 1, _regression_batch()
    else:
        make, ways, batch = (lambda: Conv4((1, 16, 16), hidden=4)), 3, _image_batch()
    options = {"inner_steps": 2, "first_order": first_order}
    maml = build("maml", make(), ways=ways, inner_lr=0.05, **options).to(DT)
    ours = build("meta_sgd", make(), ways=ways, **options).to(DT)  # alpha ~ U[0.005, 0.1]
    missing, unexpected = ours.load_state_dict(maml.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("inner_lrs.") for k in missing)
    with torch.no_grad():
        for alpha in ours.inner_lrs.values():
            alpha.fill_(0.05)
    ref_loss, ref = _loss_and_grads(maml, batch)
    loss, grads = _loss_and_grads(ours, batch)
    torch.testing.assert_close(loss, ref_loss)
    assert max(g.abs().max() for g in ref.values()) > 1e-3  # a check that can fail
    for k, g in ref.items():
        torch.testing.assert_close(grads[k], g, msg=k)


def test_alpha_gradient_is_minus_query_grad_times_support_grad():
    """One step, theta' = theta - alpha o g_s: dL_q(theta')/d alpha = -grad L_q(theta') o g_s."""
    torch.manual_seed(0)
    model = build("meta_sgd", MLP((1,), (6, 5)), ways=1).to(DT)  # random alpha per entry
    batch = _regression_batch()
    _, grads = _loss_and_grads(model, batch)
    theta = {k: v.detach() for k, v in params_of(model).items() if not k.startswith("inner_")}
    alpha = {k: v.detach() for k, v in model.learning_rates().items()}
    assert alpha.keys() == theta.keys()
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(len(batch)):
        p = {k: v.clone().requires_grad_() for k, v in theta.items()}
        out = torch.func.functional_call(model, p, (batch.support_x[i],))
        gs = torch.autograd.grad(((out - batch.support_y[i]) ** 2).mean(), list(p.values()))
        adapted = {k: (theta[k] - alpha[k] * g).requires_grad_()  # Eq. 1 by hand
                   for k, g in zip(p, gs, strict=True)}
        out = torch.func.functional_call(model, adapted, (batch.query_x[i],))
        gq = torch.autograd.grad(((out - batch.query_y[i]) ** 2).mean(), list(adapted.values()))
        for k, a, b in zip(p, gq, gs, strict=True):
            expected[k] += -a * b / len(batch)
    for k, e in expected.items():
        assert e.abs().max() > 1e-6, k
        torch.testing.assert_close(grads["inner_lrs." + k.replace(".", ":")], e, msg=k)


def test_inner_loop_adapts_theta_but_not_alpha():
    torch.manual_seed(0)
    model = build("meta_sgd", MLP((1,), (6,)), ways=1).to(DT)
    batch = _regression_batch(tasks=1)
    adapted = model.inner_loop(model.start_params(), batch.support_x[0], batch.support_y[0], 1)
    assert adapted.keys() == model.learning_rates().keys()  # no inner_lrs.* entries
    for k, v in adapted.items():
        assert not torch.equal(v, params_of(model)[k]), k


@pytest.mark.slow
def test_learns_sinusoid_regression():
    from metazoo.tasks import SinusoidTasks

    torch.manual_seed(0)
    model = build("meta_sgd", MLP((1,), (40, 40)), ways=1)
    tasks = SinusoidTasks(shots=10, queries=10, seed=0, split="train")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(600):  # about 6 s on one idle core
        opt.zero_grad()
        model.meta_loss(tasks.batch(i, 10))[0].backward()
        opt.step()
    test = SinusoidTasks(10, 10, seed=0, split="test").batch(0, 100)
    model.eval()
    with torch.no_grad():
        pre = ((torch.vmap(model)(test.query_x) - test.query_y) ** 2).mean()
        post = ((model.predict(test.support_x, test.support_y, test.query_x)
                 - test.query_y) ** 2).mean()
    print(f"sinusoid MSE before adaptation {pre:.3f}, after {post:.3f}")
    assert post * 4 <= pre and post < 1.0, (pre, post)


@pytest.mark.parametrize("options", [{"inner_steps": 0}, {"inner_lr_init": (0.1, 0.01)},
                                     {"inner_lr_init": (-0.1, 0.1)}, {"inner_lr_init": (0.0, 0.0)},
                                     {"inner_lr_init": (0.1,)}, {"bn_mode": "running"},
                                     {"inner_lr": 0.0}])
def test_bad_config_raises(options):
    with pytest.raises(ConfigError, match=f"meta_sgd .*{next(iter(options))}"):
        get("meta_sgd").make_config(**options)


def test_constant_init_and_first_step_equals_the_loop():
    model = build("meta_sgd", MLP((1,), (6,)), ways=1, inner_lr_init=None, inner_lr=0.3)
    assert all(torch.all(a == 0.3) for a in model.learning_rates().values())
    # the batched first step takes alpha, not a scalar
    assert_strategy_equals_loop(model.double(), _regression_batch(), "first_step")
