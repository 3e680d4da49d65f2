"""MTL: frozen backbone, scaling and shifting against a hand-written network, HT meta-batch,
learning from a briefly pre-trained backbone, config."""

import copy

import pytest
import torch
import torch.nn.functional as F

from metazoo import batching
from metazoo.algorithms import build, get
from metazoo.errors import ConfigError
from metazoo.models.conv4 import Conv4
from metazoo.models.resnet12 import ResNet12
from metazoo.tasks import TaskBatch
from metazoo.tasks.hard import hard_task_batch, hardest_pairs

DT = torch.float64


def _batch(tasks=2, ways=3, shots=2, queries=2, channels=1, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = [torch.arange(ways).repeat_interleave(n).expand(tasks, -1).contiguous()
              for n in (shots, queries)]
    return TaskBatch(torch.randn(tasks, ways * shots, channels, size, size, generator=g, dtype=DT),
                     labels[0],
                     torch.randn(tasks, ways * queries, channels, size, size, generator=g,
                                 dtype=DT),
                     labels[1], ways, shots, queries)


def _model(channels=1, **options):
    torch.manual_seed(0)
    backbone = Conv4((channels, 16, 16), hidden=4)
    options = {"inner_lr": 0.5, "inner_steps": 3, "hard_tasks": 0, **options}
    return build("mtl", backbone, ways=3, **options).to(DT)


def _perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("ss_"):
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("make", [lambda: Conv4((3, 16, 16), hidden=4),
                                  lambda: ResNet12((3, 16, 16), widths=(4, 6), drop_rate=0.1)])
def test_unit_scale_and_zero_shift_give_the_frozen_backbones_features(make):
    torch.manual_seed(0)
    backbone = make().to(DT)
    reference = copy.deepcopy(backbone).eval()  # what was pre-trained, as it was
    model = build("mtl", backbone, ways=3).to(DT)
    x = _batch(channels=3).support_x[0]
    torch.testing.assert_close(model.features(x), reference(x), rtol=1e-12, atol=1e-12)
    # Theta is frozen: buffers under their own names, nothing of it in the meta-parameters
    assert all(not n.startswith("backbone.") for n, _ in model.named_parameters())
    assert set(reference.state_dict()) == {k.removeprefix("backbone.") for k in
                                           model.state_dict() if k.startswith("backbone.")}
    _perturb(model)
    assert (model.features(x) - reference(x)).abs().max() > 1e-3


def _hand_network(model, x):
    """conv(W * Phi_S1) -> batch norm(beta + Phi_S2) -> ReLU -> pool, four times, by hand."""
    h = x
    for i, block in enumerate(model.backbone.features):
        conv, bn = block[0], block[1]
        key = f"features_{i}_0"
        scale = model.ss_scale.get(key, 1.0)  # no Phi_S1 on a 1-channel input
        h = F.conv2d(h, conv.weight * scale, conv.bias, padding=1)
        h = F.batch_norm(h, None, None, bn.weight, bn.bias + model.ss_shift[key], training=True,
                         eps=bn.eps)
        h = F.max_pool2d(torch.relu(h), 2)
    return h.flatten(1)


def _hand_meta_gradient(model, batch, steps, lr, first_order):
    params = list(model.parameters())
    total = 0.0
    for i in range(len(batch)):
        fs = _hand_network(model, batch.support_x[i])
        w, b = model.head.weight, model.head.bias
        for _ in range(steps):  # Eq. 2: SGD on the head alone, features fixed
            loss = F.cross_entropy(fs @ w.T + b, batch.support_y[i])
            gw, gb = torch.autograd.grad(loss, (w, b), create_graph=not first_order)
            w, b = w - lr * gw, b - lr * gb
        fq = _hand_network(model, batch.query_x[i])
        total = total + F.cross_entropy(fq @ w.T + b, batch.query_y[i])
    return torch.autograd.grad(total / len(batch), params)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_to_scale_shift_and_head_equals_a_hand_written_network(first_order,
                                                                            channels):
    model = _model(channels, first_order=first_order)
    _perturb(model)
    batch = _batch(channels=channels)
    batching.meta_loss(model, batch, "loop")[0].backward()
    ref = _hand_meta_gradient(model, batch, 3, 0.5, first_order)
    names = [n for n, _ in model.named_parameters()]
    assert ("ss_scale.features_0_0" in names) == (channels > 1)  # BN cancels a 1-channel scale
    for (name, p), r in zip(model.named_parameters(), ref, strict=True):
        assert r.abs().max() > 1e-6, name
        torch.testing.assert_close(p.grad, r, rtol=1e-7, atol=1e-10, msg=name)
    other = _hand_meta_gradient(model, batch, 3, 0.5, not first_order)
    assert max((o - r).abs().max() for o, r in zip(other, ref, strict=True)) > 1e-6


def test_hardest_pairs_put_each_tasks_failure_class_first():
    acc = torch.tensor([[1.0, 0.5, 0.5], [0.0, 1.0, 0.25]])
    loss = torch.tensor([[0.1, 0.9, 1.2], [2.0, 0.2, 1.0]])
    # ranks: task 0: class 2 (acc .5, loss 1.2), 1, 0; task 1: class 0, 2, 1
    # rank 0: (1, 0) acc 0, (0, 2) .5; rank 1: (1, 2) .25, (0, 1) .5; rank 2: loss .2, .1
    expected = [[1, 0], [0, 2], [1, 2], [0, 1], [1, 1], [0, 0]]
    assert hardest_pairs(loss, acc).tolist() == expected


def test_hard_task_batch_reuses_the_chosen_classes_samples():
    tasks, ways, shots, queries = 2, 3, 2, 3
    tag = torch.arange(tasks)[:, None] * 100 + torch.arange(ways)[None, :] * 10  # [B, N]

    def images(per):  # every image filled with 100 * task + 10 * class + row within class
        rows = tag[:, :, None] + torch.arange(per)
        return rows.flatten(1)[..., None, None, None].expand(-1, -1, 1, 2, 2).double()

    labels = [torch.arange(ways).repeat_interleave(n).expand(tasks, -1).contiguous()
              for n in (shots, queries)]
    batch = TaskBatch(images(shots), labels[0], images(queries), labels[1], ways, shots,
                      queries)
    acc = torch.tensor([[1.0, 0.5, 1.0], [0.0, 1.0, 1.0]])
    hard = hard_task_batch(batch, torch.zeros(tasks, ways), acc, 1)
    # classes (1, 0), (0, 1), then rank 1: (0, 0) before (1, 1) (equal acc and loss: order kept)
    assert hard.ways == ways and hard.shots == shots and hard.queries == queries
    assert hard.support_x[0, :, 0, 0, 0].tolist() == [100, 101, 10, 11, 0, 1]
    assert hard.query_x[0, :, 0, 0, 0].tolist() == [100, 101, 102, 10, 11, 12, 0, 1, 2]
    assert hard.support_y[0].tolist() == [0, 0, 1, 1, 2, 2]


def test_ht_meta_batch_adds_the_hard_tasks_loss():
    model = _model(hard_tasks=1)
    _perturb(model)
    batch = _batch(tasks=2, queries=4)
    loss, metrics = model.meta_loss(batch)
    out = model.predict(batch.support_x, batch.support_y, batch.query_x)
    right = (out.argmax(-1) == batch.query_y).double()
    acc = (right.view(2, 3, 4).mean(2))  # [task, class]: class-major query rows
    losses = F.cross_entropy(out.flatten(0, 1), batch.query_y.flatten(),
                             reduction="none").view(2, 3, 4).mean(2)
    hard = hard_task_batch(batch, losses, acc, 1)
    hard_loss = F.cross_entropy(model.predict(hard.support_x, hard.support_y, hard.query_x)[0],
                                hard.query_y[0])
    expected = (F.cross_entropy(out[0], batch.query_y[0]) + F.cross_entropy(out[1],
                batch.query_y[1]) + hard_loss) / 3
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["acc"], right.mean())
    assert set(metrics) == {"acc"}
    with pytest.raises(ConfigError, match="hard_tasks=3"):
        _model(hard_tasks=3).meta_loss(batch)


def _pretrained_conv4(ds, classes=200, steps=300):
    """A conv4 trained briefly to classify the first `classes` glyph classes (the Eq. 1 stage)."""
    torch.manual_seed(0)
    backbone = Conv4((1, 28, 28), hidden=32)
    head = torch.nn.Linear(backbone.feature_dim, classes)
    rows = torch.arange(int(ds.class_offsets[classes]))
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        pick = rows[torch.randint(len(rows), (64,), generator=g)]
        loss = F.cross_entropy(head(backbone(ds.as_float(pick))), ds.labels[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return backbone


def test_learns_glyphs_5way_1shot_from_a_briefly_pretrained_backbone():
    from metazoo.data import glyphs
    from tests.algorithms.learning import glyph_episodes, meta_train, query_accuracy

    backbone = _pretrained_conv4(glyphs.load("train"))
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.manual_seed(0)
    model = build("mtl", backbone, ways=5, eval_inner_steps=20)
    train, test = glyph_episodes()
    before = query_accuracy(model, test)
    meta_train(model, train, 40, 1e-2)
    after = query_accuracy(model, test)
    print(f"glyphs 5-way 1-shot accuracy before {before:.3f}, after {after:.3f}")
    assert after > 0.7 and after > before + 0.1  # measured 0.658 -> 0.843 (14 s, 1 thread)
    state = model.backbone.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())  # Theta never moved


@pytest.mark.parametrize(("option", "value"), [
    ("inner_lr", 0.0), ("inner_lr", -0.1), ("inner_steps", 0), ("eval_inner_steps", 0),
    ("hard_tasks", -1), ("bn_mode", "running"),
])
def test_bad_config_raises(option, value):
    with pytest.raises(ConfigError, match=option):
        get("mtl").make_config(**{option: value})


def test_a_backbone_without_convolutions_is_refused():
    from metazoo.models.mlp import MLP

    with pytest.raises(ConfigError, match="conv backbone"):
        build("mtl", MLP((4,), (6,)), ways=3)
