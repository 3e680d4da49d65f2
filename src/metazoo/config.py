"""Typed run configuration: dataclasses, YAML presets and `--set key=value` overrides.

A run is described by one `RunConfig`. Presets (`presets/*.yaml`) set only what differs from the
defaults; `--set train.outer_lr=0.0005` overrides single values. Every key and value is checked
against the dataclass field types (and, for `algorithm.*`, against the algorithm's own config), so
a typo is a one-line `ConfigError` with a suggestion rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from metazoo.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    name: str = "glyphs"  # a dataset of `metazoo list datasets`
    root: str | None = None  # data folder; else $METAZOO_DATA, else ~/.cache/metazoo
    download: bool = False  # fetch missing archives from their official source
    image_size: int = 28  # images are resized to image_size x image_size
    ways: int = 20  # N of the meta-training episodes (more than at test: Snell et al. Sec. 3.1)
    shots: int = 1  # K of the meta-training episodes
    queries: int = 15  # Q (per class) of the meta-training episodes


@dataclass(frozen=True)
class ModelConfig:
    name: str = "conv4"  # a backbone of metazoo.models
    hidden: int = 64  # conv4: filters per block
    blocks: int = 4  # conv4: number of conv blocks
    pools: int | None = None  # conv4: leading blocks that max-pool (None: all; Relation Net: 2)
    widths: tuple[int, ...] = (40, 40)  # mlp: hidden layer widths


@dataclass(frozen=True)
class TrainConfig:
    meta_steps: int = 500  # outer-loop updates
    meta_batch_size: int = 1  # tasks per outer update
    outer_lr: float = 1e-3  # learning rate of the meta-optimiser
    optimizer: Literal["adam", "sgd"] = "adam"  # meta-optimiser; Reptile's outer step is SGD
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "step", "linear"] = "constant"  # linear: to 0
    lr_step_every: int = 2000  # "step": multiply the lr by lr_gamma every this many steps
    lr_gamma: float = 0.5
    grad_clip: float | None = None  # clip the meta-gradient's global norm
    log_every: int = 50  # steps between CSV rows of training metrics
    time_limit_min: float | None = None  # stop (checkpoint, validate, test) after this long
    checkpoint_every: int = 500  # steps between checkpoints (also written at each validation)
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1" ...
    tensorboard: bool = True  # also write TensorBoard events when tensorboard is installed
    progress: bool = True  # progress bar


@dataclass(frozen=True)
class EvalConfig:
    ways: int = 5  # N of validation and test episodes
    shots: int = 1
    queries: int = 15
    episodes: int = 600  # fixed test episodes at the end of training (the papers use 600-1000)
    every: int = 250  # validate every this many steps (0: never; the last weights are kept)
    val_episodes: int = 200  # fixed validation episodes
    split: str = "test"  # split of the final evaluation
    batch_size: int = 16  # episodes evaluated together


@dataclass(frozen=True)
class AlgorithmChoice:
    name: str = "protonet"
    options: dict[str, Any] = field(default_factory=dict)  # fields of the algorithm's config


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # seeds initial weights and every episode
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    algorithm: AlgorithmChoice = AlgorithmChoice()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, with the algorithm's options flattened next to its name."""
        d = dataclasses.asdict(self)
        algo = d.pop("algorithm")
        d["algorithm"] = {"name": algo["name"], **algo["options"]}
        for section in ("data", "model", "train", "eval"):
            d[section] = {k: list(v) if isinstance(v, tuple) else v
                          for k, v in d[section].items()}
        return d


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


def _suggest(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` (int, float, bool, str, Optional, Literal, tuple[int, ...])."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(str, typing.get_args(tp)))
            raise ConfigError(f"{key} must be one of {choices}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list like [40, 40]; got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(coerce(v, item, key) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return value
    return value


def _section(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}.{key}'{_suggest(key, known)}")
    return cls(**{k: coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()})


def _algorithm(values: dict[str, Any]) -> AlgorithmChoice:
    from metazoo.algorithms import get

    values = dict(values)
    name = values.pop("name", AlgorithmChoice.name)
    spec = get(str(name))
    hints = typing.get_type_hints(spec.config)
    known = [f.name for f in dataclasses.fields(spec.config)]
    options = {}
    for key, v in values.items():
        if key not in known:
            raise ConfigError(f"algorithm '{name}' has no option 'algorithm.{key}'"
                              f"{_suggest(key, known)}")
        options[key] = coerce(v, hints[key], f"algorithm.{key}")
    spec.make_config(**options)  # validates values now, not at training time
    return AlgorithmChoice(str(name), options)


def from_dict(d: dict[str, Any]) -> RunConfig:
    """A validated `RunConfig` from nested dicts (as read from YAML or JSON)."""
    if not isinstance(d, dict):
        raise ConfigError("a config must be a mapping of sections (data, model, train, ...)")
    known = ["seed", "algorithm", *_SECTIONS]
    kwargs: dict[str, Any] = {}
    for key, v in d.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{key}'{_suggest(key, known)}")
        if key == "seed":
            kwargs["seed"] = coerce(v, int, "seed")
        elif not isinstance(v, dict):
            raise ConfigError(f"config section '{key}' must be a mapping, got {v!r}")
        elif key == "algorithm":
            kwargs["algorithm"] = _algorithm(v)
        else:
            kwargs[key] = _section(_SECTIONS[key], v, key)
    cfg = RunConfig(**kwargs)
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: RunConfig) -> None:
    positive = {
        "data.ways": cfg.data.ways, "data.shots": cfg.data.shots,
        "data.image_size": cfg.data.image_size, "train.meta_batch_size": cfg.train.meta_batch_size,
        "eval.ways": cfg.eval.ways, "eval.shots": cfg.eval.shots,
        "eval.episodes": cfg.eval.episodes, "eval.batch_size": cfg.eval.batch_size,
        "train.log_every": cfg.train.log_every, "train.lr_step_every": cfg.train.lr_step_every,
        "train.checkpoint_every": cfg.train.checkpoint_every,
    }
    for key, v in positive.items():
        if v < 1:
            raise ConfigError(f"{key} must be >= 1, got {v}")
    non_negative = {"data.queries": cfg.data.queries, "eval.queries": cfg.eval.queries,
                    "train.meta_steps": cfg.train.meta_steps, "eval.every": cfg.eval.every,
                    "eval.val_episodes": cfg.eval.val_episodes}
    for key, v in non_negative.items():
        if v < 0:
            raise ConfigError(f"{key} must be >= 0, got {v}")
    if cfg.train.outer_lr <= 0:
        raise ConfigError(f"train.outer_lr must be > 0, got {cfg.train.outer_lr}")


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings to nested dict `d` (values parsed as YAML scalars)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        if len(parts) == 1:
            out[parts[0]] = value
        elif len(parts) == 2:
            section = out.setdefault(parts[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"'{parts[0]}' is not a config section")
            section[parts[1]] = value
        else:
            raise ConfigError(f"config keys have at most two parts (section.key), got '{key}'")
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`; missing files and bad YAML are `ConfigError`s."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}"
                          ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections")
    return data


def preset_names() -> list[str]:
    """Names of the bundled presets (`metazoo list presets`)."""
    folder = resources.files("metazoo") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of preset `name`."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset '{name}'{_suggest(name, names)}; "
                          "`metazoo list presets` shows them all")
    path = resources.files("metazoo") / "presets" / f"{name}.yaml"
    return read_yaml(Path(str(path)))


def load_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then a preset or a YAML file, then `--set` overrides; validated."""
    if preset and config_file:
        raise ConfigError("give either --preset or --config, not both")
    base = preset_dict(preset) if preset else read_yaml(Path(config_file)) if config_file else {}
    return from_dict(apply_overrides(base, overrides or []))
