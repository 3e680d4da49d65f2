import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metazoo import algorithms, batching, models
from metazoo.algorithms.matching import context_query, context_support
from metazoo.errors import ConfigError
from tests.algorithms.learning import accuracy_before_after, glyph_episodes, separable_episodes


class Flatten(nn.Module):
    feature_dim = 4

    def forward(self, x):
        return x.flatten(1)


def test_output_equals_hand_computed_cosine_attention():
    alg = algorithms.build("matching", Flatten(), ways=2, normalize="both")
    sx = torch.tensor([[2.0, 0, 0, 0], [0, 3, 0, 0], [1, 1, 0, 0]])
    sy = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0, 0, 0], [0, 0, 5, 0], [0, 2, 0, 0]])
    r = 1 / math.sqrt(2)
    # cosines to the support: q0 -> (1, 0, r); q1 -> (0, 0, 0); q2 -> (0, 1, r)
    e = [[math.exp(v) for v in row] for row in ([1, 0, r], [0, 0, 0], [0, 1, r])]
    probs = [[row[0] / sum(row), (row[1] + row[2]) / sum(row)] for row in e]  # class 1 adds up
    expected = torch.tensor(probs).log()
    out = alg.adapt(sx, sy)(q)
    torch.testing.assert_close(out, expected)
    # cross-entropy on the output is the paper's negative log-likelihood
    y = torch.tensor([0, 1, 1])
    torch.testing.assert_close(F.cross_entropy(out, y), -expected[torch.arange(3), y].mean())


def test_scale_of_either_embedding_does_not_matter_for_the_cosine():
    alg = algorithms.build("matching", Flatten(), ways=2, normalize="both")
    sx, sy, q = torch.randn(4, 4), torch.tensor([0, 1, 0, 1]), torch.randn(3, 4)
    out = alg.adapt(sx, sy)(q)
    torch.testing.assert_close(alg.adapt(3 * sx, sy)(0.5 * q), out)


def test_default_normalises_the_support_only_so_the_query_norm_sharpens():
    alg = algorithms.build("matching", Flatten(), ways=2)
    sx = torch.tensor([[2.0, 0, 0, 0], [0, 3, 0, 0], [1, 1, 0, 0]])
    sy = torch.tensor([0, 1, 1])
    q = torch.tensor([[4.0, 0, 0, 0]])
    r = 1 / math.sqrt(2)
    e = [math.exp(4 * v) for v in (1, 0, r)]  # q . g_i / |g_i|: the query keeps its norm 4
    expected = torch.tensor([[e[0] / sum(e), (e[1] + e[2]) / sum(e)]]).log()
    torch.testing.assert_close(alg.adapt(sx, sy)(q), expected)
    torch.testing.assert_close(alg.adapt(3 * sx, sy)(q), expected)  # the support's scale: no
    assert alg.adapt(sx, sy)(10 * q)[0, 0] > expected[0, 0]  # a longer query: sharper
    probs = alg.adapt(sx, sy)(q).exp()
    assert probs[0, 0] > 0.65  # the cosine gives at most e / (e + 1 + e^r) = 0.47 here


def _fce(backbone: nn.Module, seed: int = 0, steps: int = 3):
    torch.manual_seed(seed)
    return algorithms.build("matching", backbone, ways=2, fce=True, fce_steps=steps)


def test_fce_support_embedding_equals_torch_bidirectional_lstm():
    alg, zs = _fce(Flatten()), torch.randn(5, 4)
    lstm = nn.LSTM(4, 4, bidirectional=True)
    with torch.no_grad():
        for suffix, lin in (("", alg.g_fwd), ("_reverse", alg.g_bwd)):
            getattr(lstm, f"weight_ih_l0{suffix}").copy_(lin.weight[:, :4])
            getattr(lstm, f"weight_hh_l0{suffix}").copy_(lin.weight[:, 4:])
            getattr(lstm, f"bias_ih_l0{suffix}").copy_(lin.bias)
            getattr(lstm, f"bias_hh_l0{suffix}").zero_()
    out, _ = lstm(zs)  # [S, 2D]: forward states then backward states
    expected = out[:, :4] + out[:, 4:] + zs  # A.2 with the skip connection
    torch.testing.assert_close(context_support(alg.g_fwd, alg.g_bwd, zs), expected)


def test_fce_query_embedding_equals_hand_unrolled_attention_lstm():
    alg, zq, gs = _fce(Flatten()), torch.randn(2, 4), torch.randn(5, 4)
    cell = nn.LSTMCell(12, 4)  # input [f'(x), h, r]; its own recurrent weights switched off
    with torch.no_grad():
        cell.weight_ih.copy_(alg.f_lstm.weight)
        cell.bias_ih.copy_(alg.f_lstm.bias)
        cell.weight_hh.zero_()
        cell.bias_hh.zero_()
    for i in range(2):  # one query at a time
        x, h, c = zq[i], torch.zeros(4), torch.zeros(4)
        for _ in range(3):
            att = torch.stack([torch.dot(h, g) for g in gs]).softmax(0)  # Eq. 6
            r = sum(a * g for a, g in zip(att, gs, strict=True))  # Eq. 5
            h_hat, c = cell(torch.cat([x, h, r])[None], (torch.zeros(1, 4), c[None]))  # Eq. 3
            h, c = h_hat[0] + x, c[0]  # Eq. 4
        torch.testing.assert_close(context_query(alg.f_lstm, zq, gs, 3)[i], h)


def test_fce_query_output_does_not_depend_on_other_queries():
    # an MLP backbone has no batch norm, so only FCE could mix queries
    alg = _fce(models.build("mlp", input_shape=(4,), hidden=(8,)))
    sx, sy, q = torch.randn(4, 4), torch.tensor([0, 1, 0, 1]), torch.randn(2, 4)
    predictor = alg.adapt(sx, sy)
    both = predictor(q)
    alone = torch.cat([predictor(q[:1]), predictor(q[1:])])
    torch.testing.assert_close(both, alone)
    # and FCE does change the output
    plain = algorithms.build("matching", alg.backbone, ways=2)
    assert not torch.allclose(plain.adapt(sx, sy)(q), both, atol=1e-3)


def test_fce_support_embedding_depends_on_the_whole_support_set():
    alg, zs = _fce(Flatten()), torch.randn(3, 4)
    other = zs.clone()
    other[2] += 1.0
    g, g_other = (context_support(alg.g_fwd, alg.g_bwd, z) for z in (zs, other))
    assert not torch.allclose(g[0], g_other[0], atol=1e-4)


def test_every_fce_parameter_gets_a_gradient():
    alg = _fce(models.build("mlp", input_shape=(4,), hidden=(8,)))
    sx, sy = torch.randn(4, 4), torch.tensor([0, 1, 0, 1])
    loss, _ = alg.task_loss(sx, sy, torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 1, 0]), 2)
    loss.backward()
    names = {n for n, _ in alg.named_parameters()}
    assert {"g_fwd.weight", "g_bwd.weight", "f_lstm.weight", "f_lstm.bias"} <= names
    for name, p in alg.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fce_vmapped_batch_equals_task_loop():
    alg = _fce(models.build("mlp", input_shape=(4,), hidden=(8,)))
    sx, sy = torch.randn(3, 4, 4), torch.tensor([0, 1, 0, 1]).repeat(3, 1)
    qx = torch.randn(3, 5, 4)
    out_v = batching.predict(alg, sx, sy, qx, strategy="vmap")
    torch.testing.assert_close(out_v, batching.predict(alg, sx, sy, qx, strategy="loop"))


def test_no_fce_parameters_without_fce():
    alg = algorithms.build("matching", models.build("mlp", input_shape=(4,), hidden=(8,)), ways=2)
    assert all(n.startswith("backbone.") for n, _ in alg.named_parameters())


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="fce_steps"):
        algorithms.build("matching", Flatten(), ways=2, fce=True, fce_steps=0)
    with pytest.raises(ConfigError, match="fce must be"):
        algorithms.build("matching", Flatten(), ways=2, fce="yes")
    with pytest.raises(ConfigError, match="did you mean 'fce'"):
        algorithms.build("matching", Flatten(), ways=2, fcee=True)


def _learns(steps: int, **options) -> tuple[float, float]:
    # Many training classes with few examples each, as Omniglot. With only 40 classes the cosine
    # attention memorises sparse, nearly orthogonal class codes that do not transfer (test
    # accuracy falls below its start while training accuracy nears 1); ProtoNet's test uses 40.
    torch.manual_seed(0)
    alg = algorithms.build("matching", models.build("conv4", hidden=16), ways=5, **options)
    return accuracy_before_after(alg, *separable_episodes(1000, 6), steps=steps)


def test_matching_learns_separable_classes():
    before, after = _learns(60)
    assert after >= 0.6 and after > before + 0.05, (before, after)


def test_matching_with_fce_learns_separable_classes():
    before, after = _learns(40, fce=True, fce_steps=2)
    assert after >= 0.6 and after > before + 0.05, (before, after)


@pytest.mark.slow
def test_matching_learns_glyphs_5way_1shot():
    torch.manual_seed(0)
    alg = algorithms.build("matching", models.build("conv4", hidden=32), ways=5)
    before, after = accuracy_before_after(alg, *glyph_episodes(), steps=80)
    assert after >= 0.6 and after > before + 0.1, (before, after)
