"""A backbone pre-trained once per test session on 64 glyph training classes by `metazoo
pretrain`'s engine, for the learns tests of the methods that start from pre-trained weights
(Baseline, Baseline++, SimpleShot, RFS), and their few-shot accuracy on glyph test episodes."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from metazoo import algorithms, models
from metazoo.config import ModelConfig
from metazoo.config_files import load_config
from metazoo.data import DATASETS, DatasetSpec, glyphs
from metazoo.engine.pretrain import pretrain
from metazoo.tasks import EpisodeSampler
from tests.algorithms.learning import query_accuracy

HIDDEN = 32  # conv4 filters: a small backbone keeps the pre-training to seconds
CLASSES = 64  # glyph training classes pre-trained on (of 1600)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread for the block: small kernels (a head fitted in 200 SGD steps) run
    faster, and times stay predictable on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def glyph_pretraining(head: str = "linear") -> Path:
    """The run folder of 150 Adam steps (batch 64, 7.5 epochs) of classification over 64 glyph
    training classes with a `head` head, made once per session."""

    def load(split: str, *, root, download, image_size, seed):  # type: ignore[no-untyped-def]
        ds = glyphs.load(split, root=root, download=download, image_size=image_size, seed=seed)
        return ds.select_classes(list(range(CLASSES)), "glyphs64/train") if split == "train" \
            else ds

    folder = Path(tempfile.mkdtemp(prefix="metazoo-pretrain-"))
    atexit.register(shutil.rmtree, folder, True)
    cfg = load_config(overrides=[
        "data.name=glyphs64", f"model.hidden={HIDDEN}", "pretrain.steps=150",
        "pretrain.batch_size=64", f"pretrain.head={head}", "eval.val_episodes=0",
        "train.progress=false", "train.tensorboard=false", "train.device=cpu"])
    spec = DatasetSpec("glyphs64", load, "images", ("train", "val", "test"), "64 glyph classes",
                       False, ink_high=True)
    with DATASETS.temporarily(spec), one_thread():
        pretrain(cfg, folder / "run")
    return folder / "run"


def few_shot_accuracy(name: str, run: Path | None, episodes: int = 40, **options: object
                      ) -> float:
    """Query accuracy of algorithm `name` on glyph test episodes (5-way 1-shot, 5 queries) on
    the backbone of pre-training `run` (None: the same backbone at its random initialisation)."""
    torch.manual_seed(0)
    model = ModelConfig(hidden=HIDDEN, pretrained=None if run is None else str(run))
    alg = algorithms.build(name, models.build_from_config(model, (1, 28, 28)), ways=5, **options)
    test = EpisodeSampler(glyphs.load("test"), 5, 1, 5, seed=1).batch(0, episodes)
    with one_thread():
        return query_accuracy(alg, test)
