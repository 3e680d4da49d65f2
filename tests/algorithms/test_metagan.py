"""MetaGAN on MAML and on Relation Net: N+1 outputs, the base method with the generator off,
gradients split between classifier and generator, the GAN losses, learning on glyphs."""

import pytest
import torch

from metazoo import algorithms, models
from metazoo.algorithms.metagan_parts import TaskGenerator, feature_matching, real_fake_loss
from metazoo.errors import ConfigError
from metazoo.functional import call, strip_prefix
from metazoo.models.mlp import MLP
from tests.algorithms.learning import accuracy_before_after, glyph_episodes
from tests.conftest import tiny_batch

DT = torch.float64
WAYS = 3


def _build(name, seed=0, **overrides):
    torch.manual_seed(seed)
    pools = {"pools": 2} if "relation" in name else {}
    backbone = models.build("conv4", input_shape=(1, 28, 28), hidden=6, **pools)
    return algorithms.build(name, backbone, ways=WAYS, **overrides).to(DT)


def _batch():
    return tiny_batch(WAYS).to("cpu", DT)


def _grads(alg, batch):
    loss, metrics = alg.meta_loss(batch)
    names, params = zip(*alg.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss, metrics, dict(zip(names, grads, strict=True))


def test_maml_classifier_has_n_plus_1_outputs_and_predicts_the_n_real_ones():
    alg, batch = _build("metagan_maml"), _batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    params = alg.inner_loop(alg.start_params(), sx, sy, 1)
    full = alg.logits_with_fake(params, sx)(qx)
    assert alg.head.out_features == WAYS + 1 and full.shape == (qx.shape[0], WAYS + 1)
    torch.testing.assert_close(alg.predictor(params, sx)(qx), full[:, :WAYS])
    assert not any(k.startswith("generator.") for k in alg.start_params())


def test_relation_classifier_has_n_plus_1_outputs_the_fake_logit_zero():
    alg, batch = _build("metagan_relation"), _batch()
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    full = alg.logits_with_fake(sx, sy, qx, WAYS)
    assert full.shape == (qx.shape[0], WAYS + 1) and (full[:, WAYS] == 0).all()
    torch.testing.assert_close(torch.sigmoid(full[:, :WAYS]), alg.adapt(sx, sy)(qx))


def test_generator_off_is_maml_exactly():
    maml = _build("maml", inner_steps=2)
    gan = _build("metagan_maml", seed=1, inner_steps=2, fake_weight=0.0)
    assert not any(k.startswith("generator") for k in gan.state_dict())
    ref = maml.state_dict()
    with torch.no_grad():  # MAML's weights; the head's extra (fake) row stays as it was
        for k, p in gan.named_parameters():
            p[: ref[k].shape[0]] = ref[k]
    batch = _batch()
    la, ma, ga = _grads(maml, batch)
    lb, mb, gb = _grads(gan, batch)
    torch.testing.assert_close(lb, la, rtol=1e-12, atol=1e-12)
    assert ma.keys() == mb.keys()
    for k, g in ga.items():
        torch.testing.assert_close(gb[k][: g.shape[0]], g, rtol=1e-10, atol=1e-12, msg=k)
    assert (gb["head.weight"][WAYS] == 0).all()  # the fake class enters no loss
    gan.eval(), maml.eval()
    args = (batch.support_x, batch.support_y, batch.query_x)
    torch.testing.assert_close(gan.predict(*args), maml.predict(*args), rtol=1e-10, atol=1e-12)


def test_generator_off_is_relation_net_exactly():
    rel, gan = _build("relation"), _build("metagan_relation", seed=1, fake_weight=0.0)
    gan.load_state_dict(rel.state_dict())  # the same names: no generator
    batch = _batch()
    la, _, ga = _grads(rel, batch)
    lb, _, gb = _grads(gan, batch)
    assert la.item() == lb.item()
    for k, g in ga.items():
        torch.testing.assert_close(gb[k], g, rtol=0, atol=0, msg=k)


def test_maml_generator_gradient_is_feature_matchings_alone():
    """G's gradient is that of L_G at the adapted, fixed network: L_D adds nothing to it."""
    alg, batch = _build("metagan_maml"), _batch()
    _, _, grads = _grads(alg, batch)
    gen = dict(alg.generator.named_parameters(prefix="generator"))
    total = 0.0
    for i in range(len(batch)):
        sx, sy, qx = batch.support_x[i], batch.support_y[i], batch.query_x[i]
        adapted = alg.inner_loop(alg.start_params(), sx, sy, 1)
        body = {k: v.detach() for k, v in strip_prefix(adapted, "backbone.").items()}
        feats = call(alg.backbone, body, torch.cat([qx, alg.fakes(sx, qx.shape[0], "query")]))
        total = total + feature_matching(feats[: qx.shape[0]], feats[qx.shape[0]:]) / len(batch)
    ref = torch.autograd.grad(total, list(gen.values()))
    assert max(r.abs().max() for r in ref) > 0  # a check that can fail
    for k, r in zip(gen, ref, strict=True):
        torch.testing.assert_close(grads[k], r, rtol=1e-10, atol=1e-14, msg=k)


def test_relation_generator_gradient_ignores_the_fake_terms_weight():
    """Relation Net has no inner loop: scaling L_D's fake terms changes the classifier's
    gradient, not G's (feature matching's alone)."""
    batch = _batch()
    l1, m1, g1 = _grads(_build("metagan_relation", fake_weight=1.0), batch)
    l2, m2, g2 = _grads(_build("metagan_relation", fake_weight=0.25), batch)
    assert m1 == m2 and l1 > l2  # the same scores, a larger weight on the fake terms
    gen = [k for k in g1 if k.startswith("generator.")]
    assert gen and all(g1[k].abs().max() > 0 for k in gen)
    for k in gen:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-12, atol=1e-14, msg=k)
    diff = g1["backbone.features.0.0.weight"] - g2["backbone.features.0.0.weight"]
    assert diff.abs().max() > 1e-8


def test_generator_is_conditioned_on_the_support_set():
    torch.manual_seed(0)
    gen, batch = TaskGenerator((1, 28, 28), 10, 8), tiny_batch(WAYS)
    z = torch.randn(4, 10)
    a, b = gen(z, batch.support_x[0]), gen(z, batch.support_x[1])
    assert a.shape == (4, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert (a - b).abs().max() > 0  # another support set, other fakes from the same z
    encoder = torch.autograd.grad(a.sum(), gen.encoder[0].weight)[0]
    assert encoder.abs().max() > 0  # through the support set's embedding


def test_losses_are_the_semi_supervised_gan_terms():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, 4, generator=g, dtype=DT), torch.randn(3, 4, generator=g, dtype=DT)
    p, q = real.softmax(-1), fake.softmax(-1)
    ref = -(p[:, :3].sum(-1).log().mean() + q[:, 3].log().mean())
    torch.testing.assert_close(real_fake_loss(real, fake), ref)
    torch.testing.assert_close(feature_matching(real, fake),
                               ((real.mean(0) - fake.mean(0)) ** 2).sum())


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="fake_weight"):
        _build("metagan_maml", fake_weight=-1.0)
    with pytest.raises(ConfigError, match="noise_dim"):
        _build("metagan_relation", noise_dim=0)
    with pytest.raises(ConfigError, match="images"):
        algorithms.build("metagan_maml", MLP((4,), (8,)), ways=WAYS)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "steps", "lr", "options"), [
    ("metagan_maml", 200, 3e-3, {"eval_inner_steps": 3}), ("metagan_relation", 250, 1e-3, {})])
def test_learns_glyphs_5way_1shot(name, steps, lr, options):
    """Well above chance (0.2) after a short run, the fake terms at full weight: they slow the
    start (Relation Net alone reaches 0.81 here, MAML 0.69), so the bar is lower than theirs.
    One thread: MAML 0.51-0.62 after 200 steps, seeds 0-4 (seed 0 at two threads on one core:
    0.57); Relation 0.58-0.66 after 250, seeds 0-3. At lr 3e-3 Relation's sigmoid scores stuck
    at chance in one seed of five (0.2 for 250 steps), and 100 steps of MAML left 0.35-0.48."""
    torch.manual_seed(0)
    pools = {"pools": 2} if name == "metagan_relation" else {}
    backbone = models.build("conv4", input_shape=(1, 28, 28), hidden=16, **pools)
    alg = algorithms.build(name, backbone, ways=5, generator_hidden=8, noise_dim=16, fakes=5,
                           **options)
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=steps, lr=lr)
    assert after >= 0.42 and after > before + 0.15, (before, after)
