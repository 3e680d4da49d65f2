"""Baseline (Chen et al. 2019): the fine-tuned head equals torch.optim.SGD run on an autograd
reference with the code's settings; the predictor is that head on the query features; it learns
from a pre-trained backbone."""

import pytest
import torch
import torch.nn.functional as F

from metazoo import algorithms, models
from metazoo.algorithms.baseline import BaselineConfig, fit_head, head_grads, head_logits, init_head
from metazoo.errors import ConfigError
from tests.algorithms.learning import float64_noise_image_batch
from tests.algorithms.pretraining import few_shot_accuracy, glyph_pretraining

HEADS = [("linear", True), ("cosine", True), ("cosine", False)]


def _reference_fit(z, y, ways, cfg):
    """Chen et al.'s fine-tuning loop (baselinefinetune.py) with autograd and torch.optim.SGD,
    from the same initial head and the same shuffles."""
    g = torch.Generator().manual_seed(cfg.seed)
    start = init_head(z.shape[1], ways, cfg.head, cfg.class_norm, g, z.dtype)
    params = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
    opt = torch.optim.SGD(params.values(), lr=cfg.lr, momentum=cfg.momentum,
                          dampening=cfg.dampening, weight_decay=cfg.weight_decay)
    orders = [torch.randperm(z.shape[0], generator=g) for _ in range(cfg.epochs)]
    for order in orders:
        for i in range(0, z.shape[0], cfg.batch_size):
            rows = order[i:i + cfg.batch_size]
            if "bias" in params:
                logits = z[rows] @ params["weight"].T + params["bias"]
            else:
                w = params["weight"] / params["weight"].norm(dim=1, keepdim=True)
                if "gain" in params:
                    w = params["gain"][:, None] * w
                zn = z[rows] / z[rows].norm(dim=1, keepdim=True)
                logits = cfg.scale * zn @ w.T
            opt.zero_grad()
            F.cross_entropy(logits, y[rows]).backward()
            opt.step()
    return {k: v.detach() for k, v in params.items()}


@pytest.mark.parametrize(("head", "class_norm"), HEADS)
def test_fitted_head_equals_torch_sgd_on_an_autograd_reference(head, class_norm):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(10, 7, generator=g, dtype=torch.float64)  # 5-way 2-shot: batches 4, 4, 2
    y = torch.arange(5).repeat_interleave(2)
    cfg = BaselineConfig(head=head, class_norm=class_norm, epochs=20)
    mine, ref = fit_head(z, y, 5, cfg), _reference_fit(z, y, 5, cfg)
    assert mine.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(mine[k], ref[k], rtol=1e-9, atol=1e-11)
    start = init_head(7, 5, head, class_norm, torch.Generator().manual_seed(0), torch.float64)
    assert (mine["weight"] - start["weight"]).abs().max() > 1e-3  # it did train


@pytest.mark.parametrize(("head", "class_norm"), HEADS)
def test_closed_form_gradients_equal_autograd(head, class_norm):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 9, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    params = init_head(9, 3, head, class_norm, g, torch.float64)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = torch.autograd.grad(F.cross_entropy(head_logits(leaves, z, 2.0), y),
                                   list(leaves.values()))
    mine = head_grads(params, z, F.one_hot(y, 3).double(), 2.0)
    for k, e in zip(leaves, expected, strict=True):
        torch.testing.assert_close(mine[k], e, rtol=1e-10, atol=1e-12)


def test_predictor_is_the_fitted_head_on_the_query_features():
    batch = float64_noise_image_batch(tasks=1, ways=3, shots=2, queries=2)
    torch.manual_seed(0)
    backbone = models.build("conv4", input_shape=(1, 16, 16), hidden=8, blocks=2)
    alg = algorithms.build("baseline", backbone, ways=3, epochs=10).double()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        out = alg.adapt(sx, sy)(qx)
        z = alg.backbone(torch.cat([sx, qx]))  # one pass over the episode
        head = fit_head(z[:6], sy, 3, alg.config)
    torch.testing.assert_close(out, z[6:] @ head["weight"].T + head["bias"], rtol=1e-10,
                               atol=1e-10)


def test_defaults_are_the_authors_fine_tuning_settings():
    cfg = algorithms.get("baseline").make_config()
    assert (cfg.head, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.dampening,
            cfg.weight_decay) == ("linear", 100, 4, 0.01, 0.9, 0.9, 1e-3)


@pytest.mark.parametrize(("option", "message"), [
    ({"epochs": 0}, "epochs and batch_size must be >= 1"),
    ({"lr": 0.0}, "lr and scale must be > 0"),
    ({"momentum": 1.0}, "momentum must be in [0, 1)"),
    ({"head": "mlp"}, "must be one of linear, cosine"),
])
def test_bad_config_raises(option, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        algorithms.get("baseline").make_config(**option)


def test_learns_from_a_pretrained_backbone():
    run = glyph_pretraining()
    before, after = few_shot_accuracy("baseline", None), few_shot_accuracy("baseline", run)
    assert after >= 0.6 and after > before + 0.15, (before, after)
