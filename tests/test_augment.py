"""Batched episode augmentation (`metazoo.tasks.augment`): each op against a hand-built reference,
determinism from the generator, and the episode wrapper."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from metazoo.data.base import ClassDataset
from metazoo.errors import ConfigError, ShapeError
from metazoo.tasks import EpisodeSampler
from metazoo.tasks.augment import (
    NORMALIZE_PRESETS,
    AugmentConfig,
    AugmentedEpisodes,
    augment,
    color_jitter,
    draw_params,
    hflip,
    normalize,
    pad_crop,
    resized_crop,
)

METAOPTNET = AugmentConfig(crop="pad", padding=8, jitter=0.4, flip=True, normalize="miniimagenet")
CHEN = AugmentConfig(crop="resized", jitter=0.4, flip=True, normalize="imagenet")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed))


@pytest.mark.parametrize("config", [
    METAOPTNET, CHEN, AugmentConfig(crop="pad", padding=4), AugmentConfig(jitter=0.4),
    AugmentConfig(flip=True), AugmentConfig(normalize="cifar"), AugmentConfig()])
def test_shape_and_dtype_kept(config):
    x = images(2, 7, 3, 20, 24)
    out = augment(x, config, gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("config", [METAOPTNET, CHEN])
def test_same_seed_same_output_other_seed_other_output(config):
    x = images(2, 10, 3, 32, 32)
    a, b, c = augment(x, config, gen(1)), augment(x, config, gen(1)), augment(x, config, gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, normalize(x, *config.statistics))  # it did something


def test_flip_mirrors_exactly_the_images_it_flips_about_half_of_them():
    x = images(4000, 1, 3, 5)
    out = augment(x, AugmentConfig(flip=True), gen())
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((mirrored ^ kept).all())  # each image is exactly one of the two
    assert abs(mirrored.float().mean().item() - 0.5) < 0.04  # binomial sd 0.008
    flips = torch.tensor([True, False, True])
    y = images(3, 2, 4, 6)
    torch.testing.assert_close(hflip(y, flips), torch.stack([y[0].flip(-1), y[1], y[2].flip(-1)]),
                               rtol=0, atol=0)


def shifted_reference(img: torch.Tensor, padding: int, top: int, left: int,
                      mirror: bool = False) -> torch.Tensor:
    """RandomCrop by hand: pixel (y, x) of the window of the zero-padded image, loops."""
    _c, h, w = img.shape
    out = torch.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sy, sx = y + top - padding, x + left - padding
            if 0 <= sy < h and 0 <= sx < w:
                out[:, y, w - 1 - x if mirror else x] = img[:, sy, sx]
    return out


def test_pad_crop_equals_a_shifted_copy_with_zeros_from_the_border():
    x = images(5, 3, 7, 6) + 0.1  # no zeros of its own
    p = 3
    offsets = torch.tensor([[0, 0], [6, 6], [3, 3], [1, 5], [6, 0]])
    out = pad_crop(x, p, offsets)
    for m, (top, left) in enumerate(offsets.tolist()):
        torch.testing.assert_close(out[m], shifted_reference(x[m], p, top, left), rtol=0, atol=0)
    torch.testing.assert_close(out[2], x[2], rtol=0, atol=0)  # offset p: no shift
    assert (out[0, :, :p, :] == 0).all() and (out[0, :, :, :p] == 0).all()  # zeros entered
    assert (out[0, :, p:, p:] == x[0, :, :-p, :-p]).all()  # shifted down-right by p
    flips = torch.tensor([True, False, True, True, False])
    for m, (top, left) in enumerate(offsets.tolist()):  # the flip folded into the indexing
        ref = shifted_reference(x[m], p, top, left, mirror=bool(flips[m]))
        torch.testing.assert_close(pad_crop(x, p, offsets, flips)[m], ref, rtol=0, atol=0)


def test_pad_crop_offsets_cover_0_to_2p_uniformly():
    params = draw_params(AugmentConfig(crop="pad", padding=4), 9000, (32, 32), gen())
    counts = torch.bincount(params.offsets.flatten(), minlength=9)
    assert counts.numel() == 9  # never beyond 2p
    assert counts.min() > 0.8 * 2000 and counts.max() < 1.2 * 2000


def test_resized_crop_with_unit_scale_and_ratio_is_the_identity():
    x = images(3, 4, 3, 21, 21)
    config = AugmentConfig(crop="resized", scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(augment(x, config, gen()), x, rtol=0, atol=1e-5)


def test_resized_crop_equals_crop_then_bilinear_interpolate():
    x = images(4, 3, 30, 40)
    boxes = torch.tensor([[0.0, 0, 30, 40], [5, 7, 12, 20], [10, 0, 20, 13], [29, 39, 1, 1]])
    out = resized_crop(x, boxes)
    flipped = resized_crop(x, boxes, torch.tensor([True, True, False, False]))
    for m, (t, left, h, w) in enumerate(boxes.long().tolist()):
        ref = F.interpolate(x[m: m + 1, :, t: t + h, left: left + w], size=(30, 40),
                            mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(out[m], ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(flipped[m], ref.flip(-1) if m < 2 else ref, rtol=0, atol=1e-5)


def test_resized_crop_boxes_follow_scale_and_ratio():
    h, w = 84, 84
    config = AugmentConfig(crop="resized", scale=(0.25, 0.5), ratio=(0.5, 2.0))
    top, left, bh, bw = draw_params(config, 2000, (h, w), gen()).boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + bh <= h).all() and (left + bw <= w).all()
    area = bh * bw / (h * w)
    assert area.min() > 0.23 and area.max() < 0.52  # rounding to whole pixels
    aspect = bw / bh
    assert aspect.min() > 0.45 and aspect.max() < 2.2
    assert top.float().std() > 5 and left.float().std() > 5  # positions vary


def test_resized_crop_falls_back_to_the_central_crop():
    # a 2:1 box of the whole area never fits a square: torchvision takes the central crop with
    # the ratio clamped, width 16 and height round(16 / 2) = 8, at (4, 0)
    config = AugmentConfig(crop="resized", scale=(1.0, 1.0), ratio=(2.0, 2.0))
    boxes = draw_params(config, 3, (16, 16), gen()).boxes
    torch.testing.assert_close(boxes, torch.tensor([[4.0, 0, 8, 16]] * 3))


def test_jitter_zero_and_unit_factors_are_the_identity():
    x = images(2, 5, 3, 9, 9)
    assert augment(x, AugmentConfig(jitter=0.0), gen()) is x
    m = 10
    order = torch.rand(m, 3, generator=gen()).argsort(1)
    torch.testing.assert_close(color_jitter(x.flatten(0, 1), torch.ones(m, 3), order),
                               x.flatten(0, 1), rtol=0, atol=1e-6)


def test_jitter_ops_follow_torchvision_formulas():
    def grey(img):  # torchvision's rgb_to_grayscale of one image, [H, W]
        return 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]

    def brightness(img, f):
        return (f * img).clamp(0, 1)

    def contrast(img, f):
        return (f * img + (1 - f) * grey(img).mean()).clamp(0, 1)

    def saturation(img, f):
        return (f * img + (1 - f) * grey(img)).clamp(0, 1)

    x = images(3, 3, 6, 5)
    f = torch.tensor([[1.3, 0.7, 0.2]]).expand(3, 3)
    order = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    out = color_jitter(x, f, order)
    ops = (brightness, contrast, saturation)
    for m in range(3):
        ref = x[m]
        for k in order[m].tolist():
            ref = ops[k](ref, float(f[m, k]))
        torch.testing.assert_close(out[m], ref, rtol=0, atol=1e-6)
    flat = color_jitter(x, torch.tensor([[1.0, 1.0, 0.0]]).expand(3, 3), order)
    torch.testing.assert_close(flat, grey(x.transpose(0, 1))[:, None].expand(3, 3, 6, 5),
                               rtol=0, atol=1e-6)  # saturation 0: the grey image


def test_jitter_factors_in_range_and_orders_are_permutations():
    p = draw_params(AugmentConfig(jitter=0.4), 3000, (8, 8), gen())
    assert p.factors.min() >= 0.6 and p.factors.max() <= 1.4
    assert p.factors.min() < 0.62 and p.factors.max() > 1.38
    assert (p.order.sort(1).values == torch.arange(3)).all()
    assert len({tuple(o) for o in p.order.tolist()}) == 6  # every order occurs


def test_normalize_inverts_and_standardises_each_channel():
    x = images(50, 3, 8, 8)
    mean, std = NORMALIZE_PRESETS["imagenet"]
    y = normalize(x, mean, std)
    back = y * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-6)
    own_mean = x.mean(dim=(0, 2, 3)).tolist()
    own_std = x.std(dim=(0, 2, 3)).tolist()
    z = normalize(x, tuple(own_mean), tuple(own_std))
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(3), rtol=0, atol=1e-5)
    c = torch.full((2, 3, 4, 4), 0.5)  # constant image: (0.5 - mean_c) / std_c per channel
    expected = (0.5 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(augment(c, AugmentConfig(normalize="imagenet"), gen())[:, :, 0, 0],
                               expected.expand(2, 3))
    with pytest.raises(ShapeError):
        normalize(images(2, 1, 4, 4), mean, std)


def test_config_checks_and_test_time():
    for bad in ({"crop": "pad"}, {"scale": (0.5, 0.2)}, {"ratio": (0.0, 1.0)}, {"jitter": -1.0},
                {"normalize": "custom"}, {"mean": (0.5,), "std": (0.2,)},
                {"normalize": "custom", "mean": (0.5,), "std": (0.0,)}):
        with pytest.raises(ConfigError):
            AugmentConfig(**bad)
    assert AugmentConfig(normalize="custom", mean=(0.5,), std=(0.25,)).statistics == ((0.5,),
                                                                                       (0.25,))
    t = METAOPTNET.test_time()
    assert not t.random and t.statistics == METAOPTNET.statistics
    assert not AugmentConfig().random and AugmentConfig().statistics is None


def rgb_dataset(classes: int = 8, per_class: int = 6, size: int = 16) -> ClassDataset:
    g = gen(3)
    imgs = torch.randint(0, 256, (classes * per_class, 3, size, size), generator=g,
                         dtype=torch.uint8)
    return ClassDataset(imgs, torch.arange(classes).repeat_interleave(per_class),
                        tuple(f"c{i}" for i in range(classes)), "rgb/train")


def test_wrapper_augments_train_batches_and_keeps_labels():
    sampler = EpisodeSampler(rgb_dataset(), 3, 2, 2, seed=5)
    wrapped = AugmentedEpisodes(sampler, METAOPTNET)
    assert wrapped.input_shape == sampler.input_shape == (3, 16, 16)
    assert (wrapped.ways, wrapped.shots, wrapped.queries) == (3, 2, 2)
    plain, aug = sampler.batch(4, 3), wrapped.batch(4, 3)
    assert torch.equal(aug.support_y, plain.support_y) and torch.equal(aug.query_y, plain.query_y)
    assert aug.support_x.shape == plain.support_x.shape
    assert aug.query_x.shape == plain.query_x.shape
    stats = METAOPTNET.statistics
    for got, src in ((aug.support_x, plain.support_x), (aug.query_x, plain.query_x)):
        differs = ~torch.isclose(got, normalize(src, *stats)).flatten(2).all(2)
        assert differs.float().mean() > 0.9  # (almost) every image changed beyond normalising
    again = wrapped.batch(4, 3)
    assert torch.equal(again.support_x, aug.support_x) and torch.equal(again.query_x, aug.query_x)
    assert not torch.equal(wrapped.batch(5, 3).support_x, aug.support_x)


def test_wrapper_episode_is_the_same_in_any_meta_batch():
    wrapped = AugmentedEpisodes(EpisodeSampler(rgb_dataset(), 3, 2, 2, seed=5), CHEN)
    batch = wrapped.batch(2, 4)  # episodes 8..11
    for b in range(4):
        one = wrapped.episode(8 + b)
        torch.testing.assert_close(batch.task(b).support_x, one.support_x, rtol=0, atol=1e-6)
        torch.testing.assert_close(batch.task(b).query_x, one.query_x, rtol=0, atol=1e-6)


def test_wrapper_seed_and_split_change_the_augmentation():
    sampler = EpisodeSampler(rgb_dataset(), 3, 2, 2, seed=5)
    a = AugmentedEpisodes(sampler, METAOPTNET).batch(0, 1)
    b = AugmentedEpisodes(sampler, METAOPTNET, seed=6).batch(0, 1)
    c = AugmentedEpisodes(sampler, METAOPTNET, split="rgb/other").batch(0, 1)
    assert not torch.equal(a.support_x, b.support_x) and not torch.equal(a.support_x, c.support_x)


def test_wrapper_at_test_time_only_normalises():
    sampler = EpisodeSampler(rgb_dataset(), 3, 2, 2, seed=5)
    got = AugmentedEpisodes(sampler, METAOPTNET.test_time()).batch(1, 2)
    plain = sampler.batch(1, 2)
    stats = METAOPTNET.statistics
    torch.testing.assert_close(got.support_x, normalize(plain.support_x, *stats))
    torch.testing.assert_close(got.query_x, normalize(plain.query_x, *stats))
    untouched = AugmentedEpisodes(sampler, AugmentConfig()).batch(1, 2)
    assert torch.equal(untouched.support_x, plain.support_x)


def test_wrapper_needs_a_seed_and_split_for_other_sources():
    class Bare:
        ways, shots, queries, input_shape = 2, 1, 1, (3, 4, 4)

    with pytest.raises(ConfigError):
        AugmentedEpisodes(Bare(), METAOPTNET)  # type: ignore[arg-type]
    assert AugmentedEpisodes(Bare(), METAOPTNET, seed=0, split="x").split == "x"  # type: ignore


def test_params_concatenate_in_order():
    a = draw_params(METAOPTNET, 3, (16, 16), gen(1))
    b = draw_params(METAOPTNET, 2, (16, 16), gen(2))
    both = type(a).cat([a, b])
    assert both.boxes is None  # resized crop is off
    for f in dataclasses.fields(both):
        v = getattr(both, f.name)
        if f.name != "boxes":
            assert v.shape[0] == 5
            assert torch.equal(v[:3], getattr(a, f.name))
            assert torch.equal(v[3:], getattr(b, f.name))
