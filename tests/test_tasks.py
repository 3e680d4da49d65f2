import pytest
import torch

from metazoo.data.base import ClassDataset
from metazoo.errors import DataError, ShapeError
from metazoo.tasks import EpisodeSampler, TaskBatch
from tests.conftest import make_dataset


def test_batch_shapes_and_labels(dataset):
    b = EpisodeSampler(dataset, 5, 2, 3, seed=1).batch(0, 4)
    assert b.support_x.shape == (4, 10, 1, 28, 28) and b.query_x.shape == (4, 15, 1, 28, 28)
    assert b.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert b.kind == "classification" and len(b) == 4
    assert float(b.support_x.min()) >= 0.0 and float(b.support_x.max()) <= 1.0


def test_episode_is_pure_function_of_seed_split_index(dataset):
    a = EpisodeSampler(dataset, 5, 1, 2, seed=3)
    b = EpisodeSampler(dataset, 5, 1, 2, seed=3)
    assert torch.equal(a.batch(7, 2).query_x, b.batch(7, 2).query_x)
    # episode e is the same whatever the batch size it is drawn in
    assert torch.equal(a.batch(1, 2).support_x[1], b.batch(3, 1).support_x[0])
    assert not torch.equal(a.batch(0, 1).support_x, a.batch(1, 1).support_x)
    other_seed = EpisodeSampler(dataset, 5, 1, 2, seed=4)
    assert not torch.equal(a.indices(0)[0], other_seed.indices(0)[0])


def test_split_name_changes_episodes():
    a = EpisodeSampler(make_dataset(name="x/train"), 5, 1, 2, seed=0)
    b = EpisodeSampler(make_dataset(name="x/test"), 5, 1, 2, seed=0)
    assert not torch.equal(a.indices(0)[0], b.indices(0)[0])


def test_support_and_query_never_overlap_and_stay_in_class(dataset):
    s = EpisodeSampler(dataset, 6, 2, 4, seed=0)
    for e in range(50):
        sup, qry = s.indices(e)
        assert not set(sup.tolist()) & set(qry.tolist())
        sl, ql = dataset.labels[sup].view(6, 2), dataset.labels[qry].view(6, 4)
        assert (sl == sl[:, :1]).all() and (ql == sl[:, :1]).all()  # one class per row
        assert sl[:, 0].unique().numel() == 6  # distinct classes


def test_ragged_classes_sample_only_existing_rows():
    counts = [3, 7, 4, 5]
    imgs = torch.arange(sum(counts), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    ds = ClassDataset(imgs.contiguous(), labels, ("a", "b", "c", "d"), "ragged/train")
    s = EpisodeSampler(ds, 4, 1, 2, seed=0)
    for e in range(30):
        sup, qry = s.indices(e)
        rows = torch.cat([sup.view(4, 1), qry.view(4, 2)], 1)
        assert (ds.labels[rows] == ds.labels[rows[:, :1]]).all()


def test_too_many_ways_or_examples_raise(dataset):
    with pytest.raises(DataError, match="13-way episodes need 13 classes"):
        EpisodeSampler(dataset, 13, 1, 1, seed=0)
    with pytest.raises(DataError, match="only 6"):
        EpisodeSampler(dataset, 5, 3, 4, seed=0)


def test_taskbatch_validates_labels_and_shapes():
    x = torch.zeros(1, 4, 1, 2, 2)
    y = torch.tensor([[0, 0, 1, 1]])
    TaskBatch(x, y, x, y, 2, 2, 2)
    with pytest.raises(ShapeError, match=r"labels 0\.\.2"):
        TaskBatch(x, torch.tensor([[0, 0, 1, 2]]), x, y, 2, 2, 2)
    with pytest.raises(ShapeError, match="expected"):
        TaskBatch(x, y, torch.zeros(1, 3, 1, 2, 2), y, 2, 2, 2)
    with pytest.raises(ShapeError, match="shots >= 1"):
        TaskBatch(x[:, :0], y[:, :0], x, y, 2, 0, 2)
    with pytest.raises(ShapeError, match="differ"):
        TaskBatch(x, y, torch.zeros(1, 4, 1, 3, 3), y, 2, 2, 2)


def test_rotations_make_new_classes(dataset):
    r = dataset.with_rotations("synthetic/rot")
    assert r.num_classes == 4 * dataset.num_classes and len(r) == 4 * len(dataset)
    first = r.images[int(r.class_offsets[dataset.num_classes])]
    assert torch.equal(first, torch.rot90(dataset.images[0], 1, dims=(1, 2)))


def test_make_task_source_gives_episodes_of_a_split_with_its_input_shape(synthetic_data):
    from metazoo.tasks import make_task_source

    src = make_task_source(synthetic_data, "val", ways=4, shots=2, queries=3, seed=5,
                           image_size=16)
    assert isinstance(src, EpisodeSampler) and src.input_shape == (1, 16, 16)
    expected = EpisodeSampler(make_dataset(classes=12, per_class=8, name="synthetic/val",
                                           size=16, seed=1), 4, 2, 3, seed=5).batch(3, 2)
    got = src.batch(3, 2)
    assert torch.equal(got.support_x, expected.support_x)
    assert torch.equal(got.query_y, expected.query_y)


def test_make_task_source_gives_sinusoid_tasks_for_the_regression_dataset():
    from metazoo.tasks import SinusoidTasks, make_task_source

    src = make_task_source("sinusoid", "test", ways=5, shots=4, queries=6, seed=2)
    assert isinstance(src, SinusoidTasks) and src.input_shape == (1,) and src.ways == 1
    ref = SinusoidTasks(shots=4, queries=6, seed=2, split="test").batch(1, 3)
    assert torch.equal(src.batch(1, 3).query_y, ref.query_y)


def test_make_task_source_refuses_unknown_names():
    from metazoo.errors import ConfigError
    from metazoo.tasks import make_task_source

    with pytest.raises(ConfigError, match="unknown dataset 'glyps'; did you mean 'glyphs'"):
        make_task_source("glyps", "train", ways=5, shots=1, queries=1, seed=0)


def test_shuffled_order_permutes_the_same_episode_and_keeps_each_label_with_its_image(dataset):
    plain = EpisodeSampler(dataset, 5, 3, 2, seed=2)
    mixed = EpisodeSampler(dataset, 5, 3, 2, seed=2, order="shuffled")
    a, b = plain.batch(1, 3), mixed.batch(1, 3)
    assert not torch.equal(a.support_y, b.support_y)  # the order changed...

    def pairs(xs, ys):
        return sorted((int(y), x.flatten().tolist()) for x, y in zip(xs, ys, strict=True))

    for e in range(3):  # ...but not the examples, and every image keeps its label
        assert pairs(a.support_x[e], a.support_y[e]) == pairs(b.support_x[e], b.support_y[e])
        assert pairs(a.query_x[e], a.query_y[e]) == pairs(b.query_x[e], b.query_y[e])
    # a pure function of the episode index, whatever the batch size
    assert torch.equal(mixed.batch(1, 3).support_y[2], mixed.batch(5, 1).support_y[0])
    assert not torch.equal(b.support_y[0], b.support_y[1])
