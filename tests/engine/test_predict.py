"""`metazoo predict` and `metazoo eval --oneshot-runs` on files the test writes itself."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from metazoo.cli import main
from metazoo.engine.predict import predict_folders
from metazoo.engine.run import load_run
from tests.conftest import make_dataset

FAST = ["data.name=synthetic", "model.hidden=8", "train.progress=false", "train.meta_steps=20",
        "train.tensorboard=false", "eval.every=0", "eval.episodes=4", "data.queries=3",
        "eval.queries=3",
        "train.outer_lr=0.003"]


def _save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.numpy()).save(path)


def test_predict_classifies_query_images_of_support_classes(tmp_path, capsys, synthetic_data):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    capsys.readouterr()
    ds = make_dataset(classes=12, per_class=8, name="synthetic/test", seed=2)
    truth = {}
    for c in range(4):
        rows = ds.images[ds.labels == c][:, 0]  # [8, 28, 28]
        for i in range(2):
            _save(rows[i], tmp_path / "support" / f"class{c}" / f"{i}.png")
        for i in range(2, 5):
            _save(rows[i], tmp_path / "query" / f"c{c}_{i}.png")
            truth[f"c{c}_{i}.png"] = f"class{c}"
    out = predict_folders(run, tmp_path / "support", tmp_path / "query")
    assert len(out) == 12 and all(0.0 < p <= 1.0 for _, _, p in out)
    correct = sum(truth[f.name] == label for f, label, _ in out)
    assert correct >= 9, out  # chance is 3 of 12
    assert main(["predict", str(run), "--support", str(tmp_path / "support"), "--query",
                 str(tmp_path / "query")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file\tclass\tprobability" and len(lines) == 13
    one, folder = tmp_path / "query" / "c1_2.png", tmp_path / "query"
    assert main(["predict", str(run), "--support", str(tmp_path / "support"), "--query",
                 str(one), str(folder), "--format", "json"]) == 0  # a file and a folder
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 13 and rows[0]["file"] == str(one)
    assert {"file", "class", "probability"} == rows[0].keys()
    assert rows[0]["class"] == next(r["class"] for r in rows[1:] if r["file"] == str(one))
    assert main(["predict", str(run), "--support", str(tmp_path / "support"), "--query",
                 str(tmp_path / "nothing.png")]) == 2
    err = capsys.readouterr().err
    assert "nothing.png does not exist" in err and "--data-root" not in err
    assert main(["predict", str(run), "--support", str(tmp_path / "none"), "--query",
                 str(tmp_path / "query")]) == 2


def test_eval_oneshot_runs(tmp_path, capsys, synthetic_data):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--set", *FAST]) == 0
    capsys.readouterr()
    ds = make_dataset(classes=20, per_class=4, name="synthetic/test", seed=2)
    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for r in (1, 2):
        lines = []
        order = rng.permutation(20)
        for c in range(20):
            rows = ds.images[ds.labels == c][:, 0]
            # the challenge's drawings are black ink on white: invert the ink-high images
            _save(255 - rows[0], runs / f"run{r:02d}" / "training" / f"class{c + 1:02d}.png")
            item = int(order[c]) + 1
            _save(255 - rows[1], runs / f"run{r:02d}" / "test" / f"item{item:02d}.png")
            lines.append(f"run{r:02d}/test/item{item:02d}.png "
                         f"run{r:02d}/training/class{c + 1:02d}.png")
        (runs / f"run{r:02d}" / "class_labels.txt").write_text("\n".join(lines) + "\n")
    assert main(["eval", str(run), "--oneshot-runs", str(runs)]) == 0
    printed = capsys.readouterr().out
    assert "run01" in printed and "overall error" in printed
    result = json.loads((run / "oneshot_results.json").read_text())
    assert set(result["runs"]) == {"run01", "run02"} and result["ways"] == 20
    # the same numbers as adapting the run's model to the original tensors directly
    _, alg = load_run(run)
    sx = ds.images[torch.arange(20) * 4].float() / 255  # [20, 1, 28, 28] first drawing
    qx = ds.images[torch.arange(20) * 4 + 1].float() / 255  # second drawing of each class
    with torch.no_grad():
        pred = alg.adapt(sx, torch.arange(20), ways=20)(qx).argmax(-1)
    expected = float((pred != torch.arange(20)).float().mean())
    assert result["error_rate"] == pytest.approx(expected, abs=1e-6), (result, expected)
    assert result["error_rate"] < 0.9  # chance error is 0.95
