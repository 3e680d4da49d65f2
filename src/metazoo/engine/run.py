"""From a `RunConfig` to the objects a run needs, and back from a run folder.

A run folder holds `config.json` (the resolved config, written once when the run starts),
`checkpoint.safetensors` (latest state, for `--resume`), `best.safetensors` (weights with the
best validation score), `metrics.csv`, `results.json`, `resumes.json` (what each resume changed,
if one did), `error.txt` (when and why a started run stopped on an error) and, while a run
trains in it, `.lock` (see `engine.lock`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metazoo import algorithms, atomic, models
from metazoo.algorithms.base import Algorithm
from metazoo.config import RunConfig
from metazoo.config_files import apply_overrides, from_dict
from metazoo.data import get_spec
from metazoo.engine import checkpoint, lock
from metazoo.errors import CheckpointError, ConfigError
from metazoo.plugins import discovered
from metazoo.tasks import TaskSource, make_task_source
from metazoo.tasks.augment import AugmentedEpisodes, normalize

CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"
RESULTS = "results.json"


def resolve_device(name: str) -> torch.device:
    """`"auto"` is CUDA when available, else CPU; anything else is passed to `torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device '{name}' is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device asks for cuda but no CUDA device is available; "
                          "use train.device=cpu")
    return device


def image_size(cfg: RunConfig) -> int:
    """The run's image side: `data.image_size`, else the dataset's protocol size (28 Omniglot,
    84 miniImageNet and CUB, 32 CIFAR-FS and FC100)."""
    return cfg.data.image_size or get_spec(cfg.data.name).image_size


def resolved(cfg: RunConfig) -> RunConfig:
    """`cfg` with what it leaves to the dataset filled in, and the modules of the user's own
    registered parts it uses (`plugins.discovered`), as `config.json` records it."""
    return replace(cfg, data=replace(cfg.data, image_size=image_size(cfg)),
                   plugins=discovered(cfg))


def input_shape(cfg: RunConfig) -> tuple[int, ...]:
    """Shape of one input of the run's dataset (the train split decides an image's channels).

    For a run folder whose checkpoint does not record it; `train` takes it from its training
    task source, so the split is loaded once.
    """
    return task_source(cfg, "train", training=True).input_shape


def build_algorithm(cfg: RunConfig, shape: tuple[int, ...]) -> Algorithm:
    """Backbone and algorithm of `cfg`, with initial weights drawn from `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    backbone = models.build_from_config(cfg.model, shape)
    regression = get_spec(cfg.data.name).kind == "regression"
    spec = algorithms.get(cfg.algorithm.name)
    task = "regression" if regression else "classification"
    if task not in spec.tasks:
        raise ConfigError(f"algorithm '{spec.name}' does not do {task}; choose another dataset "
                          "or algorithm")
    alg = algorithms.build_with(cfg.algorithm.name, backbone,
                                ways=1 if regression else cfg.data.ways,
                                config=cfg.algorithm.config)
    if alg.fixed_ways and not regression and cfg.eval.ways != cfg.data.ways:
        raise ConfigError(f"{spec.display} meta-learns a {cfg.data.ways}-way head; set "
                          f"eval.ways={cfg.data.ways} or train with data.ways={cfg.eval.ways}")
    return alg


def task_source(cfg: RunConfig, split: str, *, training: bool) -> TaskSource:
    """Training episodes (`data.ways/shots/queries`) or evaluation ones (`eval.*`) of `split`;
    its `input_shape` is what the backbone is built for."""
    shape = cfg.data if training else cfg.eval
    d = cfg.data
    source = make_task_source(d.name, split, ways=shape.ways, shots=shape.shots,
                              queries=shape.queries, seed=cfg.seed, root=d.root,
                              download=d.download, image_size=image_size(cfg), order=d.order)
    augment = cfg.augment if training else cfg.augment.test_time()
    if get_spec(d.name).kind != "images" or (not augment.random and augment.statistics is None):
        return source
    return AugmentedEpisodes(source, augment)


def input_transform(cfg: RunConfig) -> Callable[[Tensor], Tensor]:
    """What the run does to every evaluation image before the network (its normalisation, if
    any): for images that do not come from its episodes (`predict`, Lake's one-shot runs)."""
    stats = cfg.augment.statistics
    return (lambda x: x) if stats is None else (lambda x: normalize(x, *stats))


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON, written atomically."""
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


def read_config(run_dir: Path) -> RunConfig:
    """The resolved config saved in a run folder."""
    path = run_dir / CONFIG
    if not path.exists():
        raise CheckpointError(f"'{run_dir}' is not a run folder (no {CONFIG}); "
                              "pass the --out folder of `metazoo train`")
    try:
        return from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"'{path}' is damaged: {e}") from None


MAX_INPUT_ELEMENTS = 3 * 1024 * 1024  # one input of a run: a 1024x1024 colour image at most


def checked_shape(value: Any, path: Path) -> tuple[int, ...] | None:
    """A checkpoint's recorded `input_shape`, checked before anything is allocated for it."""
    if value is None:
        return None
    ok = (isinstance(value, list) and 1 <= len(value) <= 3
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
          and math.prod(value) <= MAX_INPUT_ELEMENTS)
    if not ok:
        raise CheckpointError(f"checkpoint '{path}' records input_shape {str(value)[:60]}, not "
                              f"1-3 positive integers of at most {MAX_INPUT_ELEMENTS:,} elements "
                              "in all; the file is damaged: retrain")
    return tuple(value)


def with_test_options(cfg: RunConfig, options: list[str] | None) -> RunConfig:
    """`cfg` with `options` (`algorithm.KEY=VALUE`: how trained weights are used, such as the
    number or step size of test-time inner steps) laid over it; any other key is refused."""
    if not options:
        return cfg
    for item in options:
        if not item.startswith("algorithm.") or item.startswith("algorithm.name="):
            raise ConfigError(f"eval --set changes test-time algorithm options only "
                              f"(algorithm.KEY=VALUE), got '{item}'")
    return from_dict(apply_overrides(cfg.to_dict(), options))


def load_run(run_dir: Path, *, data_root: str | None = None,
             algorithm_options: list[str] | None = None,
             writes: bool = True) -> tuple[RunConfig, Algorithm]:
    """Config and trained algorithm of a run folder (best weights, else the latest).

    `algorithm_options` (`algorithm.KEY=VALUE`) change how the trained weights are used, such
    as Reptile's `bn_mode` or the number of test-time inner steps; nothing else may change.
    With `writes` (the caller will write results into the folder: `metazoo eval`) a folder that
    a training run holds is refused rather than written into under it.
    """
    if writes and (busy := lock.holder(Path(run_dir))) is not None:
        raise lock.RunFolderBusy(f"'{run_dir}' is being trained by {lock.describe(busy)}; "
                                 "evaluate it once that run has ended")
    cfg = read_config(run_dir)
    if data_root is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=data_root))
    cfg = with_test_options(cfg, algorithm_options)
    weights = run_dir / BEST if (run_dir / BEST).exists() else run_dir / CHECKPOINT
    tensors, meta = checkpoint.load(weights)
    shape = checked_shape(meta.get("input_shape"), weights) or input_shape(cfg)
    broken = [k for k, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if broken:
        raise CheckpointError(f"weights in '{weights}' are not finite ({broken[0]} holds NaN or "
                              "inf): the run diverged; retrain with a lower train.outer_lr or "
                              "train.grad_clip")
    # every weight is in the checkpoint: model.pretrained's file is not needed again
    alg = build_algorithm(replace(cfg, model=replace(cfg.model, pretrained=None)), shape)
    checkpoint.load_into(alg, checkpoint.model_state(tensors), str(weights))
    return cfg, alg
