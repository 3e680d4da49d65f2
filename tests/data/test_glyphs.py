"""Glyphs: split sizes, disjoint classes, determinism, cache, image format, and difficulty.

The difficulty tests pin the two properties the dataset was tuned for: raw pixels are a poor
metric (1-NN well below 60% on 5-way 1-shot), yet a learned embedding (ProtoNet) does well.
"""

import pytest
import torch

import metazoo.algorithms
import metazoo.models
from metazoo.data import glyphs, load_split
from metazoo.errors import ConfigError
from metazoo.tasks import EpisodeSampler

STEPS = 60  # ProtoNet meta-steps of the learns test


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def splits(root):
    return {s: glyphs.load(s, root=root) for s in ("train", "val", "test")}


def test_split_sizes(splits):
    assert {s: d.num_classes for s, d in splits.items()} == {"train": 1600, "val": 200,
                                                              "test": 600}
    assert sum(d.num_classes for d in splits.values()) >= 2000
    for d in splits.values():
        assert bool((d.class_counts == 20).all())
        assert len(d) == 20 * d.num_classes


def test_splits_are_disjoint(splits):
    names = [set(d.class_names) for d in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    # no image of the test split appears in the training split
    train = {bytes(x.numpy()) for x in splits["train"].images[::7]}
    assert not any(bytes(x.numpy()) in train for x in splits["test"].images)


def test_images_format(splits):
    for name, d in splits.items():
        assert d.name == f"glyphs/{name}"
        assert d.images.dtype == torch.uint8 and d.image_shape == (1, 28, 28)
        assert int(d.images.max()) == 255 and int(d.images.min()) == 0
        ink = (d.images > 127).float().mean(dim=(1, 2, 3))  # [M] fraction of inked pixels
        assert ink.min() > 0.01 and ink.max() < 0.6, "every image has ink on a dark background"
        edge = torch.cat([d.images[:, 0, [0, -1]], d.images[:, 0, :, [0, -1]].mT], 1) > 127
        assert edge.flatten(1).any(1).float().mean() < 0.25, "glyphs stay mostly inside the frame"
        assert bool(((d.images > 0) & (d.images < 255)).any()), "edges are anti-aliased"


def test_examples_of_a_class_vary(splits):
    x = splits["val"].images[:20].float()
    assert (x[1:] - x[:1]).abs().mean(dim=(1, 2, 3)).min() > 1.0


def test_generation_is_deterministic_and_independent_of_range(splits):
    a = glyphs.generate(range(1800, 1810))
    b = glyphs.generate(range(1800, 1810))
    assert torch.equal(a, b)
    assert torch.equal(a, splits["test"].images[:200])
    assert not torch.equal(a, glyphs.generate(range(1800, 1810), seed=glyphs.GENERATION_SEED + 1))


def test_cache_round_trip(root, splits, monkeypatch):
    files = list((root / "cache").glob("*.safetensors"))
    assert len(files) == 3
    fresh = glyphs._build("val", 28)  # rebuilt without the cache

    def no_build(*args):
        raise AssertionError("the cached split should have been read, not generated")

    monkeypatch.setattr(glyphs, "_build", no_build)
    again = glyphs.load("val", root=root)  # from the cache written by the fixture
    assert torch.equal(again.images, splits["val"].images)
    assert torch.equal(again.labels, splits["val"].labels)
    assert again.class_names == splits["val"].class_names
    assert torch.equal(fresh.images, again.images)


def test_seed_argument_does_not_change_the_dataset(root, splits):
    other = load_split("glyphs", "val", root=root, seed=123)
    assert torch.equal(other.images, splits["val"].images)


def test_unwritable_root_falls_back_to_no_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    d = glyphs.load("val", root=blocker)
    assert d.num_classes == 200


def test_image_size():
    d = glyphs._build("val", 20)
    assert d.image_shape == (1, 20, 20)


@pytest.mark.parametrize("kwargs", [dict(split="dev"), dict(split="val", image_size=4)])
def test_bad_arguments(kwargs, tmp_path):
    with pytest.raises(ConfigError):
        glyphs.load(root=tmp_path, **kwargs)


def test_raw_pixel_nearest_neighbour_is_weak(splits):
    batch = EpisodeSampler(splits["test"], 5, 1, 15, seed=0).batch(0, 300)
    d = torch.cdist(batch.query_x.flatten(2), batch.support_x.flatten(2))  # [B, N*Q, N*K]
    acc = (d.argmin(-1) == batch.query_y).float().mean().item()
    assert 0.3 < acc < 0.6, f"1-NN on pixels: {acc:.3f}"


@pytest.mark.slow
def test_protonet_learns_glyphs(splits):
    torch.manual_seed(0)
    backbone = metazoo.models.build("conv4", input_shape=(1, 28, 28))
    alg = metazoo.algorithms.build("protonet", backbone, ways=5)
    opt = torch.optim.Adam(alg.parameters(), lr=1e-3)
    train = EpisodeSampler(splits["train"], 10, 1, 5, seed=0)
    for step in range(STEPS):
        loss, _ = alg.meta_loss(train.batch(step, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = EpisodeSampler(splits["test"], 5, 1, 10, seed=0).batch(0, 100)
    with torch.no_grad():
        logits = alg.predict(test.support_x, test.support_y, test.query_x)  # [B, N*Q, N]
    acc = (logits.argmax(-1) == test.query_y).float().mean().item()
    assert acc > 0.6, f"ProtoNet 5-way 1-shot after {STEPS} steps: {acc:.3f}"
