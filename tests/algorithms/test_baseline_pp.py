"""Baseline++ (Chen et al. 2019, Sec. 3.2): logits are scale x cosine (x the learned class norm
of the authors' code); registered as Baseline with a cosine head; it learns from a backbone
pre-trained with the cosine head."""

import torch
import torch.nn.functional as F

from metazoo import algorithms
from metazoo.algorithms.baseline import Baseline, cosine_logits
from tests.algorithms.pretraining import few_shot_accuracy, glyph_pretraining


def test_logits_are_scale_times_cosine():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, 6, generator=g, dtype=torch.float64)
    cos = F.cosine_similarity(z[:, None, :], w[None, :, :], dim=-1)  # [4, 3], by torch
    torch.testing.assert_close(cosine_logits(z, w, None, 2.0), 2.0 * cos)
    gain = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)  # the code's WeightNorm g_k
    torch.testing.assert_close(cosine_logits(z, w, gain, 10.0), 10.0 * gain * cos)
    # invariant to the norms of the features and of the class vectors
    torch.testing.assert_close(cosine_logits(3 * z, 0.1 * w, None, 2.0), 2.0 * cos)


def test_registered_as_baseline_with_the_cosine_head():
    spec = algorithms.get("baseline_pp")
    assert spec.cls is Baseline and spec.family == "hybrid"
    cfg = spec.make_config()
    assert (cfg.head, cfg.scale, cfg.class_norm) == ("cosine", 2.0, True)
    assert algorithms.get("baseline").make_config().head == "linear"


def test_learns_from_a_backbone_pretrained_with_the_cosine_head():
    run = glyph_pretraining("cosine")
    before, after = few_shot_accuracy("baseline_pp", None), few_shot_accuracy("baseline_pp", run)
    assert after >= 0.45 and after > before + 0.15, (before, after)
