"""Lake's one-shot runs: reading the format and scoring a predictor, on runs drawn here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from metazoo.data.oneshot import error_rates, read_runs
from metazoo.errors import DataError

WAYS = 20


def _shape(cls: int, jitter: int) -> Image.Image:
    """Class `cls` as a distinct shape (rectangle of its own place and size), black on white."""
    img = Image.new("L", (105, 105), 255)
    d = ImageDraw.Draw(img)
    x, y = 8 + (cls % 5) * 18, 8 + (cls // 5) * 22
    w, h = 12 + (cls % 3) * 8, 10 + (cls % 4) * 5
    d.rectangle([x + jitter, y, x + w + jitter, y + h], fill=0)
    return img


def make_runs(folder: Path, runs: int = 2, seed: int = 0) -> dict[str, list[int]]:
    """Write runs in the official layout; returns each run's true class (0-based) per test item."""
    g = torch.Generator().manual_seed(seed)
    truth = {}
    for r in range(1, runs + 1):
        run = folder / f"run{r:02d}"
        (run / "training").mkdir(parents=True)
        (run / "test").mkdir()
        perm = torch.randperm(WAYS, generator=g).tolist()  # item i shows class perm[i]
        lines = []
        for c in range(WAYS):
            _shape(c, 0).convert("1").save(run / "training" / f"class{c + 1:02d}.png")
        for i, c in enumerate(perm):
            _shape(c, 2).save(run / "test" / f"item{i + 1:02d}.png")
            item, cls = f"item{i + 1:02d}.png", f"class{c + 1:02d}.png"
            lines.append(f"{run.name}/test/{item} {run.name}/training/{cls}")
        (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
        truth[run.name] = perm
    return truth


def nearest_neighbour(support_x, support_y, query_x):
    """Logits = minus squared pixel distance to each support image."""
    d = torch.cdist(query_x.flatten(1), support_x.flatten(1)) ** 2  # [M, N]
    return -d[:, torch.argsort(support_y)]


def test_read_runs_shapes_and_labels(tmp_path):
    truth = make_runs(tmp_path)
    runs = read_runs(tmp_path, image_size=28)
    assert [r.name for r in runs] == ["run01", "run02"]
    run = runs[0]
    assert run.support_x.shape == (WAYS, 1, 28, 28) and run.query_x.shape == (WAYS, 1, 28, 28)
    assert run.support_x.dtype == torch.float32 and float(run.support_x.max()) <= 1.0
    assert torch.equal(run.support_y, torch.arange(WAYS))
    assert run.query_y.tolist() == truth["run01"]
    assert float(run.support_x[:, :, 0, 0].max()) == 0.0  # inverted: paper is 0, ink is high


def test_perfect_nearest_neighbour_has_zero_error(tmp_path):
    make_runs(tmp_path, runs=3)
    result = error_rates(nearest_neighbour, read_runs(tmp_path))
    assert result == {"run01": 0.0, "run02": 0.0, "run03": 0.0, "mean": 0.0}


def test_shuffled_labels_give_the_computed_error(tmp_path):
    make_runs(tmp_path, runs=2)
    labels = tmp_path / "run01" / "class_labels.txt"
    lines = labels.read_text().splitlines()
    items = [ln.split()[0] for ln in lines]
    classes = [ln.split()[1] for ln in lines]
    moved = 6  # rotate the class column of the first 6 lines: those 6 labels become wrong
    classes[:moved] = classes[1:moved] + classes[:1]
    labels.write_text("\n".join(f"{i} {c}" for i, c in zip(items, classes, strict=True)))
    result = error_rates(nearest_neighbour, read_runs(tmp_path))
    assert result["run01"] == pytest.approx(moved / WAYS)
    assert result["run02"] == 0.0
    assert result["mean"] == pytest.approx(moved / WAYS / 2)


def test_accepts_parent_of_all_runs(tmp_path):
    make_runs(tmp_path / "all_runs", runs=1)
    assert len(read_runs(tmp_path)) == 1


def test_malformed_inputs_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_runs(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no runNN"):
        read_runs(tmp_path / "empty")
    make_runs(tmp_path / "a", runs=1)
    labels = tmp_path / "a" / "run01" / "class_labels.txt"
    labels.write_text("run01/test/item01.png\n")
    with pytest.raises(DataError, match=r"class_labels\.txt:1"):
        read_runs(tmp_path / "a")
    labels.unlink()
    with pytest.raises(DataError, match=r"class_labels\.txt is missing"):
        read_runs(tmp_path / "a")
    make_runs(tmp_path / "b", runs=1)
    bad = tmp_path / "b" / "run01" / "test" / "item03.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"item03\.png"):
        read_runs(tmp_path / "b")
