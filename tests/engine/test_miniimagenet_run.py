"""End to end on a generated tree in miniImageNet's published layout: `metazoo train` (84x84 RGB,
MetaOptNet's augmentation) to `results.json`, then `eval` and `predict` with the same
normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metazoo.cli import main

SPLITS = {"train": 8, "val": 5, "test": 5}  # classes per split
PER_CLASS = 12


def make_tree(root: Path) -> Path:
    """`root/miniimagenet/{train,val,test}.csv` and `images/<wnid><8 digits>.jpg`, 84x84 RGB.

    Each class is a colour with noise, so a working pipeline classifies far above chance."""
    rng = np.random.default_rng(0)
    base = root / "miniimagenet"
    (base / "images").mkdir(parents=True)
    cls = 0
    for split, n in SPLITS.items():
        lines = ["filename,label"]
        for _ in range(n):
            wnid = f"n{1000000 + cls:08d}"
            colour = rng.uniform(0, 255, 3)
            for i in range(PER_CLASS):
                pixels = np.clip(colour + rng.normal(0, 25, (84, 84, 3)), 0, 255).astype(np.uint8)
                name = f"{wnid}{i + 1:08d}.jpg"
                Image.fromarray(pixels).save(base / "images" / name, quality=90)
                lines.append(f"{name},{wnid}")
            cls += 1
        (base / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_train_eval_predict_on_a_miniimagenet_layout(tmp_path, capsys):
    root = make_tree(tmp_path / "data")
    run = tmp_path / "run"
    status = main(["train", "--out", str(run), "--set", "data.name=miniimagenet",
                   f"data.root={root}", "data.ways=5", "data.shots=1", "data.queries=4",
                   "algorithm.name=protonet", "model.hidden=16", "train.meta_steps=20",
                   "eval.ways=5", "eval.shots=1", "eval.queries=5", "eval.episodes=40",
                   "eval.every=10", "eval.val_episodes=10", "augment.crop=pad",
                   "augment.padding=8", "augment.jitter=0.4", "augment.flip=true",
                   "augment.normalize=miniimagenet", "train.progress=false",
                   "train.tensorboard=false"])
    assert status == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["image_size"] == 84 and config["augment"]["crop"] == "pad"
    results = json.loads((run / "results.json").read_text())
    assert results["episodes"] == 40 and results["accuracy"] > 0.6  # chance: 0.2
    capsys.readouterr()

    assert main(["eval", str(run), "--episodes", "20"]) == 0
    assert "20 episodes" in capsys.readouterr().out

    support, query = tmp_path / "support", tmp_path / "query"
    images = root / "miniimagenet" / "images"
    test_wnids = [line.split(",")[1] for line in
                  (root / "miniimagenet" / "test.csv").read_text().splitlines()[1::PER_CLASS]]
    for wnid in test_wnids:
        (support / wnid).mkdir(parents=True)
        (support / wnid / "a.jpg").write_bytes((images / f"{wnid}00000001.jpg").read_bytes())
        query.mkdir(exist_ok=True)
        (query / f"{wnid}.jpg").write_bytes((images / f"{wnid}00000002.jpg").read_bytes())
    assert main(["predict", str(run), "--support", str(support), "--query", str(query)]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == "file\tclass\tprobability"
    rows = [line.split("\t") for line in lines]
    right = sum(Path(path).stem == label for path, label, _ in rows)
    assert len(rows) == 5 and right >= 4


def test_training_episodes_are_augmented_and_evaluation_ones_only_normalised():
    import torch

    from metazoo.config_files import load_config
    from metazoo.engine.run import input_transform, task_source
    from metazoo.tasks import AugmentedEpisodes, EpisodeSampler

    cfg = load_config(None, overrides=[
        "data.ways=5", "augment.crop=pad", "augment.padding=2", "augment.flip=true",
        "augment.normalize=custom", "augment.mean=[0.5]", "augment.std=[0.25]"])
    train = task_source(cfg, "train", training=True)
    test = task_source(cfg, "test", training=False)
    assert isinstance(train, AugmentedEpisodes) and isinstance(test, AugmentedEpisodes)
    plain_cfg = load_config(None, overrides=["data.ways=5"])
    plain = task_source(plain_cfg, "test", training=False)
    assert isinstance(plain, EpisodeSampler)  # nothing to do: no wrapper
    a, b = test.batch(3, 2), plain.batch(3, 2)
    assert torch.allclose(a.support_x, (b.support_x - 0.5) / 0.25)
    assert torch.allclose(input_transform(cfg)(b.query_x), a.query_x)
    t, p = train.batch(3, 2), task_source(plain_cfg, "train", training=True).batch(3, 2)
    assert torch.equal(t.support_y, p.support_y)
    assert not torch.allclose(t.support_x, (p.support_x - 0.5) / 0.25)  # cropped and flipped
    assert torch.equal(t.support_x, train.batch(3, 2).support_x)  # a function of the index
