"""Shared fixtures: small synthetic datasets and batches generated in code (no files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from metazoo.data.base import ClassDataset
from metazoo.tasks import EpisodeSampler, TaskBatch

# Learning tests' outcomes depend on the thread count (float rounding); METAZOO_TEST_THREADS
# reproduces another machine's (docs/contributing.md).
torch.set_num_threads(int(os.environ.get("METAZOO_TEST_THREADS", min(2, os.cpu_count() or 1))))

REPO = Path(__file__).resolve().parents[1]


def omniglot_root() -> Path | None:
    """Folder with the real Omniglot archives: $METAZOO_DATA, else ../shared/data/omniglot."""
    for cand in (os.environ.get("METAZOO_DATA"), REPO.parent / "shared" / "data" / "omniglot"):
        if cand and (Path(cand) / "images_background.zip").exists():
            return Path(cand)
        if cand and (Path(cand) / "omniglot" / "images_background.zip").exists():
            return Path(cand) / "omniglot"
    return None


def make_dataset(classes: int = 12, per_class: int = 6, *, name: str = "synthetic/train",
                 size: int = 28, seed: int = 0) -> ClassDataset:
    """Random uint8 images with a class-specific mean pattern, so classes are separable."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, 1, size, size, generator=g)  # [C, 1, H, W]
    noise = 0.3 * torch.rand(classes, per_class, 1, size, size, generator=g)
    imgs = (0.7 * protos[:, None] + noise).clamp(0, 1).mul(255).to(torch.uint8)
    return ClassDataset(imgs.reshape(-1, 1, size, size),
                        torch.arange(classes).repeat_interleave(per_class),
                        tuple(f"class{i}" for i in range(classes)), name)


@pytest.fixture
def two_threads():
    """Two intra-op threads for the test (what task threads split), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def dataset() -> ClassDataset:
    return make_dataset()


def tiny_batch(ways: int = 3, shots: int = 2, queries: int = 2, tasks: int = 2,
               seed: int = 0) -> TaskBatch:
    return EpisodeSampler(make_dataset(classes=8, per_class=6, size=28), ways, shots, queries,
                          seed=seed).batch(0, tasks)


def regression_batch(shots: int = 5, queries: int = 4, tasks: int = 2, seed: int = 0
                     ) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    amp = 1 + torch.rand(tasks, 1, 1, generator=g)
    xs = torch.rand(tasks, shots, 1, generator=g) * 10 - 5
    xq = torch.rand(tasks, queries, 1, generator=g) * 10 - 5
    return TaskBatch(xs, amp * torch.sin(xs), xq, amp * torch.sin(xq), 1, shots, queries)


@pytest.fixture
def synthetic_data():
    """Registers dataset 'synthetic' (12-24 separable random classes per split) for engine tests."""
    from metazoo.data import DATASETS, DatasetSpec

    splits = {"train": 0, "val": 1, "test": 2}

    def load(split, *, root, download, image_size, seed):
        return make_dataset(classes=24 if split == "train" else 12, per_class=8,
                            name=f"synthetic/{split}", size=image_size, seed=splits[split])

    with DATASETS.temporarily(DatasetSpec("synthetic", load, "images", tuple(splits),
                                          "test data", False)):
        yield "synthetic"
