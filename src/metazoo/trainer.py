"""`Trainer`: meta-train Python objects (a backbone module or factory, torch Datasets, task
sources, an `Algorithm`) with what `metazoo train` gives a config: validation, checkpoints,
`metrics.csv`, resume, the time budget, the final test, `results.json` and provenance.

The objects are registered under derived names for the length of each call (`metazoo.parts`)
and the run is `engine.train.train`'s, so the folder is an ordinary run folder. `config.json:
plugins` records how each part is rebuilt (`backbone=my_module:make_net`); a part that no import
rebuilds (an instance, a lambda, datasets in memory) is recorded as such, and another program
refuses the run in one line: evaluate it here, with `Trainer.evaluate`.

A class rather than a `fit()` function: evaluation and resume in the same program need the
objects again, and the trainer holds them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metazoo import paper
from metazoo.algorithms.base import Algorithm
from metazoo.config import AlgorithmChoice, RunConfig
from metazoo.config_files import from_dict, layered, merged, preset_dict
from metazoo.engine.evaluate import EvalResult, evaluate_run
from metazoo.engine.provenance import Origin, setting
from metazoo.engine.run import load_run
from metazoo.engine.train import train
from metazoo.errors import ConfigError
from metazoo.parts import Part, checked_backbone, part, registered_for, spec_of, splits_of

Backbone = nn.Module | Callable[[tuple[int, ...]], nn.Module]


def _nested(config: Mapping[str, Any]) -> dict[str, Any]:
    """Sections as YAML has them; a `section.key` key is one value of a section."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        section, dot, name = str(key).partition(".")
        out = merged(out, {section: {name: value}} if dot else {key: value})
    return out


def _algorithm_section(algorithm: Any) -> dict[str, Any]:
    if algorithm is None:
        return {}
    if isinstance(algorithm, str):
        return {"name": algorithm}
    if isinstance(algorithm, Mapping):
        return dict(algorithm)
    if not isinstance(algorithm, Algorithm):
        raise ConfigError(f"algorithm must be a name, a mapping of name and options, or an "
                          f"Algorithm; got {type(algorithm).__name__}")
    spec = getattr(type(algorithm), "spec", None)
    if spec is None or spec.cls is not type(algorithm):
        raise ConfigError(f"algorithm {type(algorithm).__name__} is not registered "
                          "(@metazoo.algorithms.register), so no run could rebuild it")
    return AlgorithmChoice(spec.name, algorithm.config).to_dict()


class Trainer:
    """Meta-train objects of yours into run folder `out`.

    Args:
        backbone: an `nn.Module` with `feature_dim` (trained in place from its weights as
            given), or a factory `(input_shape) -> nn.Module` (built from the run's seed);
            None: `model.*` of the config.
        dataset: split name -> `torch.utils.data.Dataset` of `(input, label)` (train, val and
            test; `metazoo.data.torch_dataset`), a factory `() -> that mapping`, or the name
            of a registered dataset.
        tasks: instead of `dataset`, split name -> task source (`metazoo.tasks.TaskSource`:
            `batch(index, size)` a pure function of the index), or a factory of that mapping;
            it fixes the ways, shots and queries.
        algorithm: a name, `{"name": ..., **options}`, or an `Algorithm` (trained in place; it
            brings its backbone and options).
        config: the other settings, as sections (`{"train": {"meta_steps": 200}}`) or
            `section.key` items (`{"train.meta_steps": 200}`); over `preset`, if given.

    A factory importable as `module:qualname` is recorded in the run folder, so `metazoo eval`
    rebuilds the run elsewhere; any other object only here (`evaluate`, `fit(resume=True)`).
    """

    def __init__(self, out: str | Path, *, backbone: Backbone | None = None,
                 dataset: Any = None, tasks: Any = None, algorithm: Any = None,
                 config: Mapping[str, Any] | RunConfig | None = None,
                 preset: str | None = None) -> None:
        self.out, self.preset = Path(out), preset
        if dataset is not None and tasks is not None:
            raise ConfigError("pass dataset= or tasks=, not both")
        over = _nested(config.to_dict() if isinstance(config, RunConfig) else config or {})
        self.algorithm = algorithm if isinstance(algorithm, Algorithm) else None
        section = _algorithm_section(algorithm)
        given: list[Part] = []
        self._tasks: Mapping[str, Any] | None = None
        fixed: dict[str, Any] = {}  # what the objects decide
        ways: dict[str, Any] = {}  # an object's defaults, under `config`
        if self.algorithm is not None:
            if backbone is not None or "algorithm" in over:
                raise ConfigError("an Algorithm object brings its backbone and options; pass "
                                  "backbone= and algorithm options with an algorithm name")
            backbone = self.algorithm.backbone
            if self.algorithm.fixed_ways:  # its head serves these ways only
                ways = {"data": {"ways": self.algorithm.ways},
                        "eval": {"ways": self.algorithm.ways}}
        if backbone is not None:
            if not callable(backbone):
                raise ConfigError(f"backbone must be an nn.Module or a factory (input_shape) -> "
                                  f"nn.Module; got {type(backbone).__name__}")
            given.append(part("backbone", backbone))
            if isinstance(backbone, nn.Module):
                checked_backbone(backbone, given[-1].name)
            fixed = merged(fixed, {"model": {"name": given[-1].name}})
        if isinstance(dataset, str):
            fixed = merged(fixed, {"data": {"name": dataset}})
        elif dataset is not None or tasks is not None:
            kind = "dataset" if dataset is not None else "tasks"
            made = dataset if dataset is not None else tasks
            if not (isinstance(made, Mapping) or callable(made)):
                raise ConfigError(f"{kind} must be a mapping of split name -> "
                                  f"{'Dataset' if kind == 'dataset' else 'task source'} or a "
                                  f"factory of one; got {type(made).__name__}")
            p = part(kind, made)  # type: ignore[arg-type]
            given.append(Part(p.kind, p.name, splits_of(p)))  # a factory called once
            fixed = merged(fixed, {"data": {"name": p.name}})
            if kind == "tasks":
                self._tasks = given[-1].made
                fixed = merged(fixed, self._task_shapes(self._tasks, over))
        self._specs = [spec_of(p) for p in given]
        base = merged(layered(preset) if preset else {}, {"algorithm": section} if section
                      else {})
        self._dict = merged(merged(merged(base, ways), over), fixed)
        self._dict["plugins"] = [*(p.entry for p in given), *self._dict.get("plugins", [])]
        self._check()

    @staticmethod
    def _task_shapes(sources: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
        split = over.get("eval", {}).get("split", "test")
        if "train" not in sources or split not in sources:
            raise ConfigError(f"tasks need a 'train' and a '{split}' split (eval.split), got "
                              f"{', '.join(sources)}")
        train_src, test_src = sources["train"], sources[split]
        return {"data": {k: getattr(train_src, k) for k in ("ways", "shots", "queries")},
                "eval": {k: getattr(test_src, k) for k in ("ways", "shots", "queries")}}

    def config(self) -> RunConfig:
        """The run's config (the parts registered while it is read)."""
        with registered_for(self._specs):
            return from_dict(self._dict)

    def _check(self) -> None:
        """What the config path checks when it builds the algorithm, for a given object."""
        from metazoo.data import get_spec

        with registered_for(self._specs):
            cfg = from_dict(self._dict)
            regression = get_spec(cfg.data.name).kind == "regression"
        alg = self.algorithm
        if alg is not None:
            task = "regression" if regression else "classification"
            if task not in alg.spec.tasks:
                raise ConfigError(f"algorithm '{alg.spec.name}' does not do {task}")
            if alg.fixed_ways and (cfg.data.ways, cfg.eval.ways) != (alg.ways, alg.ways):
                raise ConfigError(f"the {alg.spec.name} object has a {alg.ways}-way head; set "
                                  f"data.ways and eval.ways to {alg.ways} or build it for "
                                  f"{cfg.data.ways} ways")

    def _origin(self, cfg: RunConfig) -> Origin | None:
        if self.preset is None:
            return None
        entry = preset_dict(self.preset).get(paper.KEY)
        same = setting(from_dict(layered(self.preset))) == setting(cfg)
        return Origin(preset=self.preset, paper=entry if same else None)

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Meta-train, then test (`results.json`); returns the results. `resume=True`
        continues the run in `out` (a longer `train.meta_steps` extends it)."""
        cfg = self.config()
        with registered_for(self._specs):
            if self.algorithm is not None:
                torch.manual_seed(cfg.seed)  # what training draws, as after a build from cfg
            return train(cfg, self.out, resume=resume, origin=self._origin(cfg),
                         algorithm=self.algorithm)

    def evaluate(self, **options: Any) -> EvalResult:
        """`evaluate_run(out, **options)` with the parts registered: the same numbers as
        `metazoo eval`; writes `results.eval.json` (or the name of what differs)."""
        sources = self._tasks
        ways = options.get("ways")
        if sources is not None and ways is not None and ways != sources["train"].ways:
            raise ConfigError(f"the given task sources make {sources['train'].ways}-way tasks; "
                              f"evaluate with ways={sources['train'].ways} or give others")
        with registered_for(self._specs):
            return evaluate_run(self.out, **options)[0]

    def load(self) -> Algorithm:
        """The trained algorithm of `out` (best weights, else the latest)."""
        with registered_for(self._specs):
            return load_run(self.out, writes=False)[1]
