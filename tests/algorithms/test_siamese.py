"""Siamese Networks: weighted L1 logits by hand, the balanced pair BCE, distortions, learning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metazoo import algorithms, batching, models
from metazoo.algorithms.siamese import SiameseConfig, random_affine
from metazoo.errors import ConfigError
from tests.algorithms.learning import accuracy_before_after, glyph_episodes, separable_episodes


class Flatten(nn.Module):
    """Identity 'embedding' of 4-pixel inputs, so h is the input itself."""

    feature_dim = 4

    def forward(self, x):
        return x.flatten(1)


class Recorder(nn.Module):
    """Identity embedding of 1x8x8 images that remembers what it was given."""

    feature_dim = 64

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x.flatten(1)


SX = torch.tensor([[0.0, 0, 0, 0], [2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 5]])
QX = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0]])
# sum_j alpha_j |q_j - s_j| + b with alpha = (-1, -2, 0.5, 0), b = 3, worked out by hand:
#   q0: |1,0,0,0| -> 2   |-1,0,0,0| -> 2     |1,-1,0,0| -> 0    |1,0,-2,-5| -> -1+1+3 = 3
#   q1: |0,1,1,0| -> 1.5 |-2,1,1,0| -> -0.5  |0,0,1,0| -> 3.5   |0,1,-1,-5| -> -2+0.5+3 = 1.5
PAIRS = torch.tensor([[2.0, 2, 0, 3], [1.5, -0.5, 3.5, 1.5]])


def _hand_set(alg):
    with torch.no_grad():
        alg.alpha.copy_(torch.tensor([-1.0, -2, 0.5, 0]))
        alg.bias.fill_(3.0)
    return alg


def test_logits_are_weighted_l1_and_class_max_over_support():
    alg = _hand_set(algorithms.build("siamese", Flatten(), ways=2))
    sy = torch.tensor([0, 0, 1, 1])
    pairs, classes = alg._scores(SX, sy, QX, 2)
    torch.testing.assert_close(pairs, PAIRS)
    # max, not mean: q0's class 1 has logits (0, 3) -> 3 beats class 0's (2, 2)
    torch.testing.assert_close(classes, torch.tensor([[2.0, 3], [1.5, 3.5]]))
    torch.testing.assert_close(alg.adapt(SX, sy)(QX), classes)
    # the same rule with the classes' support in another order
    torch.testing.assert_close(alg.adapt(SX, torch.tensor([1, 1, 0, 0]))(QX),
                               torch.tensor([[3.0, 2], [3.5, 1.5]]))


def test_loss_is_balanced_bce_over_all_query_support_pairs():
    alg = _hand_set(algorithms.build("siamese", Flatten(), ways=3))
    sy, qy = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1])
    loss, metrics = alg.task_loss(SX, sy, QX, qy, 3)

    def softplus(v):
        return math.log1p(math.exp(v))

    pos = [2.0, 2.0, 3.5]  # (q0, s0), (q0, s1), (q1, s2): -log sigmoid(l) = softplus(-l)
    neg = [0.0, 3.0, 1.5, -0.5, 1.5]  # the other five pairs: -log(1 - sigmoid(l)) = softplus(l)
    expected = (0.5 * sum(softplus(-v) for v in pos) / 3
                + 0.5 * sum(softplus(v) for v in neg) / 5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    unbalanced = (sum(softplus(-v) for v in pos) + sum(softplus(v) for v in neg)) / 8
    assert abs(expected - unbalanced) > 1e-2  # the weighting matters here
    # class logits: q0 -> (2, 0, 3) predicts 2 (wrong); q1 -> (1.5, 3.5, 1.5) predicts 1
    assert metrics["acc"].item() == pytest.approx(0.5)


def test_random_affine_identity_without_components_and_changes_images_with_them():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(random_affine(x, SiameseConfig(distort_prob=0.0)), x)
    out = random_affine(x, SiameseConfig(distort_prob=1.0))
    assert out.shape == x.shape and not torch.allclose(out, x, atol=1e-2)
    # a pure translation by up to 2 px keeps a blank image blank and a centred blob's mass
    blob = torch.zeros(1, 1, 16, 16)
    blob[..., 6:10, 6:10] = 1.0
    moved = random_affine(blob, SiameseConfig(rotation=0, shear=0, scale=0, distort_prob=1.0))
    assert moved.sum().item() == pytest.approx(16.0, rel=1e-4)


def test_distortion_only_in_training_task_loss_never_in_adapt():
    torch.manual_seed(0)
    sx, sy = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    qx, qy = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = algorithms.build("siamese", Recorder(), ways=3)
    alg = algorithms.build("siamese", Recorder(), ways=3, distort=True)
    alg.load_state_dict(plain.state_dict())
    clean = torch.cat([sx, qx])

    alg.task_loss(sx, sy, qx, qy, 3)  # training mode: inputs are distorted
    assert alg.backbone.seen[-1].shape == clean.shape
    assert not torch.allclose(alg.backbone.seen[-1], clean, atol=1e-3)

    out = alg.adapt(sx, sy)(qx)  # adapt never distorts, whatever the mode
    torch.testing.assert_close(alg.backbone.seen[-1], clean)
    torch.testing.assert_close(alg.adapt(sx, sy)(qx), out)
    torch.testing.assert_close(plain.adapt(sx, sy)(qx), out)

    alg.eval()  # evaluation mode: task_loss does not distort either
    torch.testing.assert_close(alg.task_loss(sx, sy, qx, qy, 3)[0],
                               plain.task_loss(sx, sy, qx, qy, 3)[0])
    torch.testing.assert_close(alg.backbone.seen[-1], clean)


def test_bad_config_raises():
    for bad in ({"rotation": -1.0}, {"translation": -0.5}, {"shear": 1.0}, {"scale": 1.0},
                {"distort_prob": 1.5}):
        with pytest.raises(ConfigError, match="siamese"):
            algorithms.build("siamese", Flatten(), ways=2, **bad)
    with pytest.raises(ConfigError, match="did you mean 'distort'"):
        algorithms.build("siamese", Flatten(), ways=2, distrot=True)


def test_siamese_learns_separable_classes():
    # 400 training classes, not ProtoNet's 40: on 40 random-pattern classes the verification
    # objective memorises the classes (new training episodes ~97%, test classes ~35%).
    torch.manual_seed(0)
    alg = algorithms.build("siamese", models.build("conv4", hidden=16), ways=5)
    before, after = accuracy_before_after(alg, *separable_episodes(400), steps=60, lr=3e-3)
    assert after >= 0.6 and after > before + 0.05, (before, after)


@pytest.mark.slow
def test_learns_glyphs_5way_1shot():
    torch.manual_seed(0)
    alg = algorithms.build("siamese", models.build("conv4", hidden=32), ways=5)
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=100, lr=3e-3)
    assert after >= 0.6 and after > before + 0.05, (before, after)


def test_distorted_meta_loss_runs_with_vmap_strategy_by_looping():
    from tests.conftest import tiny_batch

    torch.manual_seed(0)
    alg = algorithms.build("siamese", models.build("conv4", hidden=8), ways=3, distort=True)
    # random ops cannot run under torch.vmap's default randomness
    loss, metrics = batching.meta_loss(alg, tiny_batch(3), "vmap")
    assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 1


def test_distortions_are_a_function_of_seed_step_and_episode_not_the_global_generator():
    from tests.conftest import tiny_batch

    torch.manual_seed(0)
    alg = algorithms.build("siamese", models.build("conv4", hidden=8), ways=3, distort=True)
    batch = tiny_batch(3)
    alg.begin_step(4, 10)
    torch.manual_seed(1)
    first = alg.meta_loss(batch)[0]
    torch.manual_seed(2)  # another global state: the same distortions
    torch.testing.assert_close(alg.meta_loss(batch)[0], first, rtol=0, atol=0)
    alg.begin_step(5, 10)  # another meta-iteration: other distortions
    assert alg.meta_loss(batch)[0] != first
    alg.eval()  # adapt never distorts: evaluation equals the undistorted network
    plain = algorithms.build("siamese", models.build("conv4", hidden=8), ways=3)
    plain.load_state_dict(alg.state_dict())
    plain.eval()
    torch.testing.assert_close(alg.meta_loss(batch)[0], plain.meta_loss(batch)[0])
