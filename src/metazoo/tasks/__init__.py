"""Tasks: what the algorithms consume (`TaskBatch`) and the task distributions that make them.

The layer above `metazoo.data`: datasets hand out classes and examples, this package turns them
into tasks. `EpisodeSampler` draws N-way K-shot episodes from a `ClassDataset`, `SinusoidTasks`
draws sine-wave regression tasks, `SinusoidLineTasks` sine-or-line ones, and
`make_task_source(name, split, ...)` picks the one a dataset needs. Every task is a pure function
of (seed, split, index): see `episode_seed`.
"""

from __future__ import annotations

from metazoo.tasks.augment import AugmentConfig, AugmentedEpisodes
from metazoo.tasks.batch import TaskBatch, TaskSource
from metazoo.tasks.episodes import EpisodeSampler, episode_seed
from metazoo.tasks.sinusoid import SinusoidTasks
from metazoo.tasks.sinusoid_line import SinusoidLineTasks
from metazoo.tasks.sources import FAMILIES, make_task_source

__all__ = ["FAMILIES", "AugmentConfig", "AugmentedEpisodes", "EpisodeSampler",
           "SinusoidLineTasks", "SinusoidTasks", "TaskBatch", "TaskSource", "episode_seed",
           "make_task_source"]
