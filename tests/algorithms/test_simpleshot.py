"""SimpleShot: nearest centroid on CL2N features equals a hand computation; it learns from a
pre-trained backbone."""

import pytest
import torch

from metazoo import algorithms, models
from metazoo.errors import ConfigError
from tests.algorithms.learning import float64_noise_image_batch
from tests.algorithms.pretraining import few_shot_accuracy, glyph_pretraining


def _hand_logits(z_support, y, z_query, mean, transform, ways):
    def tf(z):
        if transform == "UN":
            return z
        if transform == "CL2N":
            z = z - mean
        return z / z.pow(2).sum(1, keepdim=True).sqrt()

    s, q = tf(z_support), tf(z_query)
    centroids = torch.stack([s[y == c].mean(0) for c in range(ways)])
    return torch.stack([torch.stack([-((qi - c) ** 2).sum() for c in centroids]) for qi in q])


@pytest.mark.parametrize("transform", ["CL2N", "L2N", "UN"])
def test_logits_are_centring_l2_and_nearest_centroid_by_hand(transform):
    batch = float64_noise_image_batch(tasks=1, ways=3, shots=2, queries=2)
    torch.manual_seed(0)
    backbone = models.build("conv4", input_shape=(1, 16, 16), hidden=8, blocks=2)
    backbone.pretrained_mean = torch.randn(backbone.feature_dim)
    alg = algorithms.build("simpleshot", backbone, ways=3, transform=transform).double()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        out = alg.adapt(sx, sy)(qx)
        z = alg.backbone(torch.cat([sx, qx]))  # one pass over the episode, as adapt
    expected = _hand_logits(z[:6], sy, z[6:], alg.base_mean, transform, 3)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    if transform == "CL2N":  # the centring matters: without the mean the logits differ
        plain = _hand_logits(z[:6], sy, z[6:], torch.zeros_like(alg.base_mean), "CL2N", 3)
        assert (plain - out).abs().max() > 1e-3


def test_base_mean_comes_from_the_pretrained_backbone_else_zero():
    backbone = models.build("conv4", input_shape=(1, 28, 28), hidden=8)
    assert torch.equal(algorithms.build("simpleshot", backbone, ways=5).base_mean,
                       torch.zeros(8))
    backbone.pretrained_mean = torch.arange(8.0)
    alg = algorithms.build("simpleshot", backbone, ways=5)
    assert torch.equal(alg.base_mean, torch.arange(8.0)) and "base_mean" in alg.state_dict()
    backbone.pretrained_mean = torch.zeros(5)
    with pytest.raises(ConfigError, match="mean feature has 5 values but the backbone gives 8"):
        algorithms.build("simpleshot", backbone, ways=5)


def test_bad_transform_raises():
    with pytest.raises(ConfigError, match="must be one of CL2N, L2N, UN"):
        algorithms.get("simpleshot").make_config(transform="PCA")


def test_learns_from_a_pretrained_backbone():
    run = glyph_pretraining()
    before, after = few_shot_accuracy("simpleshot", None), few_shot_accuracy("simpleshot", run)
    assert after >= 0.65 and after > before + 0.15, (before, after)
