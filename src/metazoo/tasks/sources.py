"""`make_task_source`: a dataset name to what the engine samples from.

An image dataset gives N-way K-shot episodes of a split (`EpisodeSampler`); a dataset with no
examples to load (its spec's `load` is None) is a task family drawn here, listed in `FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from metazoo.data import get_spec, load_split
from metazoo.errors import ConfigError
from metazoo.tasks.batch import TaskSource
from metazoo.tasks.episodes import EpisodeOrder, EpisodeSampler
from metazoo.tasks.sinusoid import SinusoidTasks
from metazoo.tasks.sinusoid_line import SinusoidLineTasks

FAMILIES: dict[str, Callable[..., TaskSource]] = {"sinusoid": SinusoidTasks,
                                                  "sinusoid_line": SinusoidLineTasks}
"""Task families by dataset name: `family(shots=, queries=, seed=, split=)` is a `TaskSource`."""


def make_task_source(name: str, split: str, *, ways: int, shots: int, queries: int, seed: int,
                     root: str | Path | None = None, download: bool = False,
                     image_size: int = 28, order: EpisodeOrder = "class_major") -> TaskSource:
    """Episodes of `split` (image datasets) or the split's task distribution (regression).

    The split is loaded once, here; the source's `input_shape` is what a backbone is built for.
    `order` is the row order inside an image episode (`EpisodeSampler`); a task family's points
    are drawn at random already.
    """
    spec = get_spec(name)
    if spec.load is None:
        if name not in FAMILIES:
            raise ConfigError(f"dataset '{name}' has no loader and no task family in "
                              "metazoo.tasks.FAMILIES")
        return FAMILIES[name](shots=shots, queries=queries, seed=seed, split=split)
    ds = load_split(name, split, root=root, download=download, image_size=image_size, seed=seed)
    return EpisodeSampler(ds, ways, shots, queries, seed=seed, order=order)
