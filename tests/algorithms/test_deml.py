"""DEML: its meta-learner on raw features with the generator at identity, the concept
discriminator on the split's classes, the episodes' class indices, learning on glyphs."""

import pytest
import torch
import torch.nn.functional as F

from metazoo import algorithms
from metazoo.errors import ConfigError, ShapeError
from metazoo.models.conv4 import Conv4
from metazoo.models.mlp import MLP
from metazoo.tasks import EpisodeSampler, TaskBatch
from tests.algorithms.learning import accuracy_before_after, glyph_episodes
from tests.conftest import make_dataset

DT = torch.float64
WAYS = 3


def _episodes(order="class_major"):
    ds = make_dataset(classes=8, per_class=6, size=16)
    return ds, EpisodeSampler(ds, WAYS, 2, 2, seed=0, order=order)


def _split_labels(ds, sampler, episodes):
    """Each row's class in the split, from the sampler's row indices (not TaskBatch.classes)."""
    rows = []
    for e in episodes:
        s, q = sampler.indices(e)
        if sampler.order == "shuffled":
            sp, qp = sampler.permutations(e)
            s, q = s[sp], q[qp]
        rows.append(torch.cat([ds.labels[s], ds.labels[q]]))
    return torch.stack(rows)  # [B, N*K + N*Q]


@pytest.mark.parametrize("order", ["class_major", "shuffled"])
def test_episodes_carry_their_classes_split_wide_indices(order):
    ds, sampler = _episodes(order)
    batch = sampler.batch(1, 3)
    assert batch.classes is not None and batch.classes.shape == (3, WAYS)
    got = torch.cat([batch.classes.gather(1, batch.support_y),
                     batch.classes.gather(1, batch.query_y)], dim=1)
    assert torch.equal(got, _split_labels(ds, sampler, range(3, 6)))
    assert torch.equal(batch.task(2).classes, batch.classes[2:3])
    assert torch.equal(batch.to("cpu", DT).classes, batch.classes)


def _identity_deml_and_maml(weight):
    torch.manual_seed(0)
    deml = algorithms.build("deml", Conv4((1, 16, 16), hidden=4), ways=WAYS, inner_steps=2,
                            concept_generator="identity", learner_hidden=(8,),
                            concept_classes=8, concept_weight=weight).to(DT)
    maml = algorithms.build("maml", MLP((1, 16, 16), (8,)), ways=WAYS, inner_steps=2).to(DT)
    maml.load_state_dict(deml.learner.state_dict())  # the same names: backbone.*, head.*
    return deml, maml


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_identity_generator_is_maml_on_raw_features(weight):
    ds, sampler = _episodes()
    batch = sampler.batch(0, 2).to("cpu", DT)
    deml, maml = _identity_deml_and_maml(weight)
    assert not any(k.startswith("backbone.") for k, _ in deml.named_parameters())  # frozen
    loss, metrics = deml.meta_loss(batch)
    ref, _ = maml.meta_loss(batch)
    grads = torch.autograd.grad(loss, list(deml.learner.parameters()), retain_graph=True)
    ref_grads = torch.autograd.grad(ref, list(maml.parameters()))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    # lambda * D's cross-entropy on the raw pixels under the split's labels, written by hand
    x = torch.cat([batch.support_x, batch.query_x], dim=1).flatten(2)  # [B, M, 256]
    logits = x @ deml.discriminator.weight.T + deml.discriminator.bias
    concept = F.cross_entropy(logits.flatten(0, 1), _split_labels(ds, sampler, range(2)).flatten())
    torch.testing.assert_close(loss, ref + weight * concept, rtol=1e-12, atol=1e-12)
    assert metrics.keys() == {"acc"}  # the trainer's log columns


def test_the_discriminator_trains_the_concept_generator():
    torch.manual_seed(0)
    alg = algorithms.build("deml", Conv4((1, 16, 16), hidden=4), ways=WAYS, concept_classes=8)
    batch = _episodes()[1].batch(0, 2)
    alg.concept_loss(batch)[0].backward()
    assert alg.backbone.features[0][0].weight.grad.abs().max() > 0
    assert all(p.grad is None for p in alg.learner.parameters())


@pytest.mark.parametrize("learner", ["meta_sgd", "matching"])
def test_other_meta_learners_run_in_concept_space(learner):
    torch.manual_seed(0)
    alg = algorithms.build("deml", Conv4((1, 16, 16), hidden=4), ways=WAYS, concept_classes=8,
                           meta_learner=learner)
    batch = _episodes()[1].batch(0, 2)
    loss, metrics = alg.meta_loss(batch)
    assert torch.isfinite(loss) and metrics.keys() == {"acc"}
    assert algorithms.get(learner).cls is type(alg.learner)
    out = alg.predict(batch.support_x, batch.support_y, batch.query_x)
    assert out.shape == (2, WAYS * 2, WAYS)


def test_missing_or_out_of_range_classes_and_bad_config_raise():
    torch.manual_seed(0)
    alg = algorithms.build("deml", Conv4((1, 16, 16), hidden=4), ways=WAYS, concept_classes=4)
    b = _episodes()[1].batch(0, 2)
    with pytest.raises(ShapeError, match="concept_classes"):
        alg.meta_loss(b)
    bare = TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y, b.ways, b.shots, b.queries)
    with pytest.raises(ShapeError, match="classes"):
        alg.meta_loss(bare)
    with pytest.raises(ConfigError, match="concept_weight"):
        algorithms.build("deml", Conv4((1, 16, 16), hidden=4), ways=WAYS, concept_weight=-1.0)


@pytest.mark.slow
def test_learns_glyphs_5way_1shot():
    """Well above chance (0.2) after a short run; D's 1600-way loss (about 7.4 at the start,
    lambda 1) takes much of the concept generator's early updates (0.62 reached here)."""
    torch.manual_seed(0)
    alg = algorithms.build("deml", Conv4((1, 28, 28), hidden=32), ways=5, concept_classes=1600,
                           eval_inner_steps=3)
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=150, lr=3e-3)
    assert after >= 0.5 and after > before + 0.2, (before, after)
