"""Santoro et al.'s offset-label evaluation: accuracy by presentation number.

Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. "Meta-Learning with Memory-Augmented Neural
Networks". ICML 2016, Sec. 4.1 and Table 1. An episode is N classes with a fresh label
assignment, each shown M times in random order, presented as one stream whose step t carries
the label of step t-1 (`metazoo.sequence_tasks`); every step is a prediction. The accuracy of
the k-th presentation of a class (k = 1: a guess, k = 2: after one labelled example, ...) is
averaged per episode, then over episodes with a 95% confidence interval. Episodes are the fixed
ones of the split (`EpisodeSampler` with `order="shuffled"`, shots = M, no queries), so
every learner is scored on the same streams. `metazoo eval RUN --protocol offset_labels`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch

from metazoo.algorithms.base import Algorithm
from metazoo.config import RunConfig
from metazoo.engine.evaluate import EvalResult, episode_batches
from metazoo.engine.run import load_run, resolve_device, task_source, write_json
from metazoo.errors import ConfigError
from metazoo.metrics import mean_and_ci95
from metazoo.sequence_tasks import accuracy_by_presentation, presentation_numbers
from metazoo.tasks import TaskSource

RESULTS = "results.offset_labels.json"
PRESENTATIONS = 10  # instances per class in an episode (Table 1 reports the 1st to the 10th)


@dataclass(frozen=True)
class PresentationResult:
    """Accuracy of the k-th presentation of a class, k = 1..presentations, over episodes."""

    accuracy: list[float]  # mean over episodes, by presentation number
    ci95: list[float]  # 95% CI half-widths
    episodes: int
    ways: int
    presentations: int
    split: str
    seconds: float

    def lines(self) -> list[str]:
        """What the terminal shows: a header and one line per presentation number."""
        head = (f"{self.split} accuracy by presentation ({self.episodes} episodes of "
                f"{self.ways} classes x {self.presentations} presentations, offset labels, "
                f"{self.seconds:.1f} s)")
        return [head] + [f"  {k:>2}: {a:.4f} ± {c:.4f}"
                         for k, (a, c) in enumerate(zip(self.accuracy, self.ci95, strict=True),
                                                    start=1)]

    def to_json(self) -> dict[str, Any]:
        by = [{"presentation": k, "accuracy": a, "ci95": c}
              for k, (a, c) in enumerate(zip(self.accuracy, self.ci95, strict=True), start=1)]
        return {"protocol": "offset_labels", "by_presentation": by, "episodes": self.episodes,
                "ways": self.ways, "presentations": self.presentations, "split": self.split,
                "seconds": self.seconds}


def stream_of(algorithm: Algorithm) -> Callable[..., torch.Tensor]:
    """`algorithm.stream_logits`; `ConfigError` for a learner that reads no label stream."""
    stream = getattr(algorithm, "stream_logits", None)
    if stream is None:
        raise ConfigError(f"the offset-label protocol needs a sequence learner (mann, "
                          f"lstm_learner); '{algorithm.spec.name}' does not read a label stream")
    return cast("Callable[..., torch.Tensor]", stream)


def presentation_table(algorithm: Algorithm, source: TaskSource, *, episodes: int,
                       batch_size: int = 16, device: torch.device | str = "cpu") -> torch.Tensor:
    """`[episodes, M]`: each episode's accuracy on the k-th presentation of its classes, of
    `algorithm.stream_logits` on episodes `0..episodes-1` of `source` (shuffled N-way episodes of
    M shots; queries are ignored)."""
    stream = stream_of(algorithm)
    was_training = algorithm.training
    algorithm.eval()
    per_episode = []
    try:
        with torch.no_grad():
            for batch in episode_batches(source, episodes, batch_size):
                b = batch.to(device)
                one = functools.partial(stream, ways=b.ways)
                if algorithm.can_vmap():
                    logits = torch.vmap(one)(b.support_x, b.support_y)
                else:
                    logits = torch.stack([one(x, y) for x, y in zip(b.support_x, b.support_y,
                                                                    strict=True)])
                right = logits.argmax(-1) == b.support_y  # [B, T]
                per_episode.append(accuracy_by_presentation(
                    right, presentation_numbers(b.support_y), source.shots).cpu())
    finally:
        algorithm.train(was_training)
    return torch.cat(per_episode)


def evaluate_offset(algorithm: Algorithm, source: TaskSource, *, episodes: int,
                    batch_size: int = 16, split: str = "test",
                    device: torch.device | str = "cpu") -> PresentationResult:
    """Accuracy by presentation number (mean ± 95% CI over episodes), `presentation_table`."""
    start = time.perf_counter()
    table = presentation_table(algorithm, source, episodes=episodes, batch_size=batch_size,
                               device=device)
    stats = [mean_and_ci95(table[:, k]) for k in range(source.shots)]
    return PresentationResult([s[0] for s in stats], [s[1] for s in stats], episodes,
                              source.ways, source.shots, split, time.perf_counter() - start)


def stream_source(cfg: RunConfig, split: str) -> TaskSource:
    """Fixed shuffled streams of `eval.ways` classes x `data.shots` presentations of `split`:
    what an offset-label run validates on."""
    ev = replace(cfg.eval, shots=cfg.data.shots, queries=0)
    return task_source(replace(cfg, eval=ev, data=replace(cfg.data, order="shuffled")), split,
                       training=False)


def validate_stream(algorithm: Algorithm, source: TaskSource, *, episodes: int,
                    batch_size: int = 16, split: str = "val",
                    device: torch.device | str = "cpu") -> EvalResult:
    """An offset-label run's validation score: accuracy on the 2nd and later presentations
    (the binding Table 1 measures; a 1st presentation is a guess), mean over episodes ± CI."""
    start = time.perf_counter()
    table = presentation_table(algorithm, source, episodes=episodes, batch_size=batch_size,
                               device=device)
    mean, ci = mean_and_ci95(table[:, 1:].mean(1))
    return EvalResult("accuracy", mean, ci, episodes, source.ways, source.shots, 0, split,
                      time.perf_counter() - start)


def evaluate_offset_run(run_dir: str | Path, *, episodes: int | None = None,
                        split: str | None = None, ways: int | None = None,
                        presentations: int | None = None, data_root: str | None = None
                        ) -> tuple[PresentationResult, Path]:
    """`metazoo eval RUN --protocol offset_labels`: the run's weights on `episodes` fixed
    streams of `ways` classes x `presentations` (default: the run's `eval` N and episodes,
    10 presentations); writes `results.offset_labels.json` in the run folder."""
    run = Path(run_dir)
    cfg, alg = load_run(run, data_root=data_root)
    stream_of(alg)
    device = resolve_device(cfg.train.device)
    alg.to(device)
    m = PRESENTATIONS if presentations is None else presentations
    asked: dict[str, Any] = {"episodes": episodes, "split": split, "ways": ways}
    ev = replace(cfg.eval, shots=m, **{k: v for k, v in asked.items() if v is not None})
    cfg = replace(cfg, eval=ev, data=replace(cfg.data, order="shuffled"))
    cfg.validate()  # --episodes 0 or --presentations 0 mean nothing: refused before any work
    alg.check_ways(ev.ways)
    ev = replace(ev, queries=0)  # the stream is the whole episode
    cfg = replace(cfg, eval=ev)
    source = task_source(cfg, ev.split, training=False)
    result = evaluate_offset(alg, source, episodes=ev.episodes, batch_size=ev.batch_size,
                             split=ev.split, device=device)
    path = run / RESULTS
    write_json(path, {**result.to_json(), "algorithm": cfg.algorithm.name,
                      "dataset": cfg.data.name, "device": str(device)})
    return result, path
