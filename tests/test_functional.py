"""functional.py: batch norm against torch's, its modes, calls with params, and the vmap bug."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from metazoo.functional import BatchNorm, batch_norm, call, params_of, split_params

DT = torch.float64


def test_batch_norm_equals_torch_training_mode():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 5, 5, generator=g, dtype=DT, requires_grad=True)
    w = torch.randn(3, generator=g, dtype=DT, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=DT, requires_grad=True)
    ours = batch_norm(x, w, b)
    ref = F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    torch.testing.assert_close(ours, ref)
    go = torch.autograd.grad((ours**3).sum(), [x, w, b])
    gr = torch.autograd.grad((ref**3).sum(), [x, w, b])
    for a, r in zip(go, gr, strict=True):
        torch.testing.assert_close(a, r)


def test_stats_rows_normalise_with_the_first_rows_only():
    x = torch.randn(7, 2, 3, 3, dtype=DT)
    var, mean = torch.var_mean(x[:3], dim=(0, 2, 3), keepdim=True, correction=0)
    torch.testing.assert_close(batch_norm(x, None, None, stats_rows=3),
                               (x - mean) / torch.sqrt(var + 1e-5))
    bn = BatchNorm(2).to(DT)
    with torch.no_grad():
        out = call(bn, params_of(bn), x, stats_rows=3)
        torch.testing.assert_close(out, batch_norm(x, bn.weight, bn.bias, stats_rows=3))
        torch.testing.assert_close(bn(x), batch_norm(x, bn.weight, bn.bias))  # reset after call


def test_call_uses_given_params_and_leaves_module_alone():
    lin = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    p = {"weight": torch.zeros(2, 3), "bias": torch.ones(2)}
    torch.testing.assert_close(call(lin, p, torch.randn(4, 3)), torch.ones(4, 2))
    for k, v in lin.state_dict().items():
        assert torch.equal(v, before[k])


def test_split_params():
    p = {"backbone.a": torch.zeros(1), "head.weight": torch.ones(1), "head.bias": torch.ones(1)}
    head, body = split_params(p, "head.")
    assert set(head) == {"head.weight", "head.bias"} and set(body) == {"backbone.a"}


def _meta_grads(bn, tasks: int = 3):
    """MAML meta-gradient of a 1x1 conv -> BN -> tanh -> linear model, loop and vmap."""
    g = torch.Generator().manual_seed(0)
    p0 = {"k": torch.randn(2, 2, generator=g, dtype=DT), "w": torch.randn(2, generator=g, dtype=DT),
          "b": torch.randn(2, generator=g, dtype=DT),
          "lin": torch.randn(18, 5, generator=g, dtype=DT)}
    xs, xq = (torch.randn(tasks, 4, 2, 3, 3, generator=g, dtype=DT) for _ in range(2))
    ys, yq = (torch.randint(0, 5, (tasks, 4), generator=g) for _ in range(2))

    def loss(p, x, y):
        z = torch.einsum("nchw,dc->ndhw", x, p["k"])  # the BN input depends on the weights
        return F.cross_entropy(torch.tanh(bn(z, p["w"], p["b"])).flatten(1) @ p["lin"], y)

    def meta_loss(p, sx, sy, qx, qy):
        gr = grad(loss)(p, sx, sy)
        return loss({k: p[k] - 0.4 * gr[k] for k in p}, qx, qy)

    p = {k: v.clone().requires_grad_() for k, v in p0.items()}
    total = 0
    for i in range(tasks):
        gs = torch.autograd.grad(loss(p, xs[i], ys[i]), list(p.values()), create_graph=True)
        total = total + loss({k: p[k] - 0.4 * gi for k, gi in zip(p, gs, strict=True)}, xq[i],
                             yq[i])
    loop = torch.autograd.grad(total, list(p.values()))
    batched = grad(lambda q: vmap(meta_loss, in_dims=(None, 0, 0, 0, 0))(q, xs, ys, xq, yq).sum())
    return torch.cat([t.flatten() for t in loop]), torch.cat([t.flatten()
                                                              for t in batched(p0).values()])


def test_our_batch_norm_is_exact_under_vmap_second_order():
    loop, vmapped = _meta_grads(batch_norm)
    torch.testing.assert_close(vmapped, loop, rtol=1e-10, atol=1e-10)


@pytest.mark.xfail(strict=True, reason="torch 2.13: F.batch_norm's 2nd-order grads are wrong "
                   "under vmap; if this passes, torch fixed it and the workaround can go")
def test_torch_batch_norm_is_wrong_under_vmap_second_order():
    def native(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)

    loop, vmapped = _meta_grads(native)
    torch.testing.assert_close(vmapped, loop, rtol=1e-10, atol=1e-10)


def test_fused_batch_norm_relu_pool_equals_the_block_with_negative_scales():
    from metazoo.functional import batch_norm_relu_pool

    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 6, 6, generator=g, dtype=DT, requires_grad=True)
    w = torch.tensor([1.5, -0.7, 0.3], dtype=DT, requires_grad=True)  # one negative scale
    b = torch.randn(3, generator=g, dtype=DT, requires_grad=True)
    fused = batch_norm_relu_pool(x, w, b)
    ref = F.max_pool2d(torch.relu(batch_norm(x, w, b)), 2)
    torch.testing.assert_close(fused, ref)
    gf = torch.autograd.grad((fused**2).sum(), [x, w, b], create_graph=True)
    gr = torch.autograd.grad((ref**2).sum(), [x, w, b], create_graph=True)
    for a, r in zip(gf, gr, strict=True):
        torch.testing.assert_close(a, r)
    hf = torch.autograd.grad(sum((t**2).sum() for t in gf), [x, w, b])
    hr = torch.autograd.grad(sum((t**2).sum() for t in gr), [x, w, b])
    for a, r in zip(hf, hr, strict=True):
        torch.testing.assert_close(a, r)


def test_native_fast_path_outside_vmap_has_exact_second_order_gradients():
    """Outside vmap the fused block uses F.batch_norm; its 2nd derivatives equal var_mean's."""
    import torch.nn.functional as F

    from metazoo.functional import batch_norm_relu_pool

    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)

    def reference(x, w, b):
        var, mean = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
        y = (x - mean) * torch.rsqrt(var + 1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
        return F.max_pool2d(F.relu(y), 2)

    out = []
    for f in (batch_norm_relu_pool, reference):
        gx, gw = torch.autograd.grad((f(x, w, b) ** 2).sum(), (x, w), create_graph=True)
        out.append(torch.autograd.grad(gx.sum() + (gw**2).sum(), (x, w, b)))
    for got, want in zip(*out, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_call_replaces_a_tied_parameter_under_every_name():
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    net[1].weight = net[0].weight  # one parameter, two names; params_of keeps the first
    w, x = torch.randn(3, 3), torch.randn(2, 3)
    torch.testing.assert_close(call(net, {"0.weight": w}, x), x @ w.T @ w.T)
    plain = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    out = call(plain, {"0.weight": w}, x)  # untied: the second layer keeps its own weight
    torch.testing.assert_close(out, x @ w.T @ plain[1].weight.detach().T)


def _conv4_and_mlp():
    from metazoo.models.conv4 import Conv4
    from metazoo.models.mlp import MLP

    torch.manual_seed(0)
    return [(Conv4((1, 16, 16), hidden=4).double(), torch.randn(3, 1, 16, 16, dtype=DT)),
            (MLP((2,), (5, 4)).double(), torch.randn(3, 2, dtype=DT))]


@pytest.mark.parametrize("which", [0, 1])
def test_forward_with_equals_functional_call_to_second_order(which):
    module, x = _conv4_and_mlp()[which]
    params = {k: v.detach() * 1.1 for k, v in params_of(module).items()}
    params = {k: v.requires_grad_() for k, v in params.items()}

    def second_order(f):
        out = f(params, x)
        g = torch.autograd.grad(out.square().sum(), list(params.values()), create_graph=True)
        return out, torch.autograd.grad(sum(t.square().sum() for t in g), list(params.values()))

    ours = second_order(lambda p, x: call(module, p, x))
    swapped = second_order(lambda p, x: torch.func.functional_call(module, p, (x,)))
    torch.testing.assert_close(ours[0], swapped[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(ours[1], swapped[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    name = next(iter(params))  # a partial dict: the other parameters are the module's own
    partial = call(module, {name: params[name]}, x)
    torch.testing.assert_close(partial, torch.func.functional_call(module, {name: params[name]},
                                                                   (x,)))
    assert not torch.allclose(partial, ours[0])


def test_call_runs_an_overridden_forward_and_forward_hooks():
    from metazoo.models.mlp import MLP

    class Doubled(MLP):
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    plain, doubled, x = MLP((2,), (3,)), Doubled((2,), (3,)), torch.randn(4, 2)
    doubled.load_state_dict(plain.state_dict())
    params = params_of(plain)
    torch.testing.assert_close(call(doubled, params, x), 2 * call(plain, params, x))
    seen = []
    plain.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    call(plain, params, x)
    assert seen == [torch.Size([4, 3])]
