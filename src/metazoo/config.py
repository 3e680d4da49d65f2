"""The typed configuration of a run: the dataclasses the engine reads, and their range checks.

A run is described by one `RunConfig`: sections `data`, `model`, `train`, `eval`, `augment`
(`metazoo.tasks.augment.AugmentConfig`), and `algorithm`, which holds the algorithm's own config
instance (`AlgorithmChoice`). Field types (`Literal` choices included) are checked where plain
data becomes a config, once, by `metazoo.fields`; `RunConfig.validate` adds the range checks.
Reading YAML, presets and `--set key=value` is the CLI side: `metazoo.config_files`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from metazoo.errors import ConfigError
from metazoo.tasks.augment import AugmentConfig

if TYPE_CHECKING:
    from metazoo.algorithms.base import AlgorithmConfig

DEFAULT_ALGORITHM = "protonet"


@dataclass(frozen=True)
class DataConfig:
    name: str = "glyphs"  # a dataset of `metazoo list datasets`
    root: str | None = None  # data folder; else $METAZOO_DATA, else ~/.cache/metazoo
    download: bool = False  # fetch missing archives from their official source
    image_size: int | None = None  # resize to this square side (None: the dataset's protocol)
    ways: int = 20  # N of the meta-training episodes (more than at test: Snell et al. Sec. 3.1)
    shots: int = 1  # K of the meta-training episodes
    queries: int = 15  # Q (per class) of the meta-training episodes
    # rows inside every episode (training and evaluation): class-major, or shuffled per episode
    # (sequence learners that read the support in order: SNAIL, MANN, the LSTM learner)
    order: Literal["class_major", "shuffled"] = "class_major"


@dataclass(frozen=True)
class ModelConfig:
    name: str = "conv4"  # a backbone of metazoo.models
    hidden: int = 64  # conv4: filters per block
    blocks: int = 4  # conv4: number of conv blocks
    pools: int | None = None  # conv4: leading blocks that max-pool (None: all; Relation Net: 2)
    widths: tuple[int, ...] = (40, 40)  # mlp: hidden layer widths
    activation: Literal["relu", "tanh"] = "relu"  # mlp: ReLU (MAML), tanh (ALPaCA)
    channels: tuple[int, ...] | None = None  # resnet12, r2d2_conv: block widths (None: paper's)
    dropout: float | None = None  # resnet12 drop rate, r2d2_conv last blocks' (None: paper's)
    # start from the backbone weights of `metazoo pretrain`: its run folder or weights file
    pretrained: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    meta_steps: int = 500  # outer-loop updates
    meta_batch_size: int = 1  # tasks per outer update
    outer_lr: float = 1e-3  # learning rate of the meta-optimiser
    optimizer: Literal["adam", "sgd"] = "adam"  # meta-optimiser; Reptile's outer step is SGD
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd: momentum (MetaOptNet: 0.9)
    nesterov: bool = False  # sgd: Nesterov momentum (MetaOptNet)
    schedule: Literal["constant", "cosine", "step", "linear"] = "constant"  # linear: to 0
    lr_step_every: int = 2000  # "step": multiply the lr by lr_gamma every this many steps
    lr_gamma: float = 0.5
    grad_clip: float | None = None  # clip the meta-gradient's global norm
    log_every: int = 50  # steps between CSV rows of training metrics
    time_limit_min: float | None = None  # stop (checkpoint, validate, test) after this long
    time_clock: Literal["wall", "cpu"] = "wall"  # what time_limit_min counts: wall-clock time,
    # or this process's CPU time (all its threads: one core's time under OMP_NUM_THREADS=1,
    # the same budget however loaded the machine is)
    checkpoint_every: int = 500  # steps between checkpoints (also written at each validation)
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1" ...
    precision: Literal["float32", "bf16", "fp16"] = "float32"  # autocast: bf16, fp16 (cuda)
    tensorboard: bool = True  # also write TensorBoard events when tensorboard is installed
    progress: bool = True  # a progress bar on a terminal; piped, a line per log_every steps


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
class PretrainConfig:
    """`metazoo pretrain` (`metazoo.engine.pretrain`): plain classification over every class of
    the train split; `metazoo train` ignores it. Defaults: Chen et al. 2019's Baseline."""

    epochs: float = 5.0  # passes over the train split (Chen et al.'s code: 5 Omniglot, 400 mini)
    steps: int | None = None  # mini-batches in all, instead of epochs
    batch_size: int = 16  # images per mini-batch (Chen et al. 16; RFS 64)
    optimizer: Literal["adam", "sgd"] = "adam"  # Chen et al.: Adam; RFS, SimpleShot: SGD
    lr: float = 1e-3  # Chen et al.: Adam's default 1e-3; RFS 0.05
    momentum: float = 0.9  # sgd only (RFS 0.9)
    weight_decay: float = 0.0  # RFS 5e-4
    lr_milestones: tuple[float, ...] = ()  # epochs after which lr *= lr_gamma (RFS: 60, 80)
    lr_gamma: float = 0.1
    head: Literal["linear", "cosine"] = "linear"  # Baseline's, or Baseline++'s cosine classifier
    scale: float | None = None  # cosine head's scale (None: Chen et al.'s 2 <= 200 classes, or 10)
    learn_scale: bool = False  # cosine head: learn the scale (Chen et al.: fixed)
    class_norm: bool = True  # cosine head: learned norm per class (Chen et al.'s code, WeightNorm)

    def validate(self) -> None:
        """Range checks (`ConfigError` naming the `pretrain.` key)."""
        positive = {"pretrain.epochs": self.epochs, "pretrain.lr": self.lr,
                    "pretrain.lr_gamma": self.lr_gamma, "pretrain.batch_size": self.batch_size,
                    "pretrain.steps": 1 if self.steps is None else self.steps,
                    "pretrain.scale": 1.0 if self.scale is None else self.scale}
        for key, v in positive.items():
            if v <= 0:
                raise ConfigError(f"{key} must be > 0, got {v}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError("pretrain.momentum must be in [0, 1) and pretrain.weight_decay "
                              f">= 0; got {self.momentum} and {self.weight_decay}")
        if any(m < 0 for m in self.lr_milestones):
            raise ConfigError("pretrain.lr_milestones must be >= 0, got "
                              f"{list(self.lr_milestones)}")


@dataclass(frozen=True)
class RLConfig:
    """A meta-RL run (`metazoo.rl`): `algorithm.name` is a meta-RL learner (rl2, maml_rl),
    `train.meta_batch_size` its tasks a meta-iteration, `eval.episodes` its evaluation tasks."""

    family: str | None = None  # meta-RL task family (bandit, tabular_mdp, ...); None: no RL
    options: dict[str, Any] = field(default_factory=dict)  # the family's, e.g. {arms: 5}

    def validate(self, algorithm: str) -> None:
        """The family and the learner go together; `options` is a mapping of names."""
        from metazoo.rl.base import is_algorithm

        if not isinstance(self.options, dict) or not all(isinstance(k, str)
                                                         for k in self.options):
            raise ConfigError(f"rl.options must be a mapping such as {{arms: 5, episodes: 10}}, "
                              f"got {str(self.options)[:40]!r}")
        if self.family == "":
            raise ConfigError("rl.family must name a task family (bandit, tabular_mdp, ...) or "
                              "be null")
        if self.family is None and is_algorithm(algorithm):
            raise ConfigError(f"algorithm '{algorithm}' is a meta-RL learner: set rl.family "
                              "(bandit, tabular_mdp, navigation_2d, ...)")
        if self.family is not None and not is_algorithm(algorithm):
            raise ConfigError(f"rl.family={self.family} needs a meta-RL learner as "
                              f"algorithm.name (rl2, maml_rl), not '{algorithm}'")


@dataclass(frozen=True)
class AlgorithmChoice:
    """An algorithm by name, with its own config (a dataclass of `algorithms.get(name).config`)."""

    name: str
    config: AlgorithmConfig

    @classmethod
    def of(cls, name: str, **options: Any) -> AlgorithmChoice:
        """Algorithm `name` with its registered defaults, then `options` (checked and coerced by
        the algorithm's spec: `metazoo.algorithms.get(name).make_config`)."""
        from metazoo import algorithms
        from metazoo.rl import base as rl

        spec = rl.algorithm_spec(name) if rl.is_algorithm(name) else algorithms.get(name)
        return cls(name, spec.make_config(**options))

    def to_dict(self) -> dict[str, Any]:
        """`{"name": ..., **every field of the config}`, tuples as lists (JSON, YAML)."""
        fields = {f.name: _plain(getattr(self.config, f.name))
                  for f in dataclasses.fields(self.config)}
        return {"name": self.name, **fields}


def _default_algorithm() -> AlgorithmChoice:
    return AlgorithmChoice.of(DEFAULT_ALGORITHM)


def _plain(value: Any) -> Any:
    """Tuples (also nested) as lists, for JSON and YAML."""
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # seeds initial weights and every episode
    # modules imported first: they register your own backbones, datasets or algorithms
    plugins: tuple[str, ...] = ()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    algorithm: AlgorithmChoice = field(default_factory=_default_algorithm)
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    # image episodes: augmentation in training, normalisation everywhere (off by default)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pretrain: PretrainConfig = PretrainConfig()  # `metazoo pretrain` only
    rl: RLConfig = RLConfig()  # meta-RL runs: the task family (`metazoo.engine.rl`)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (as `config.json` holds them), the algorithm's options flattened
        next to its name."""
        d: dict[str, Any] = {"seed": self.seed, "plugins": list(self.plugins)}
        for name in SECTIONS:
            d[name] = {k: _plain(v) for k, v in dataclasses.asdict(getattr(self, name)).items()}
        d["algorithm"] = self.algorithm.to_dict()
        return d

    def validate(self) -> None:
        """Range checks of the sections (types were checked when the values were read)."""
        d, t, e = self.data, self.train, self.eval
        for name in SECTIONS:  # values set in code (e.g. `eval --episodes`) skip `fields.coerce`
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                if isinstance(value, int) and not isinstance(value, bool) and \
                        not -(2**63) <= value < 2**63:
                    raise ConfigError(f"{name}.{key} must fit in 64 bits (|value| < 2^63); "
                                      f"got a number of {len(str(value))} digits")
        positive = {
            "data.ways": d.ways, "data.shots": d.shots,
            "data.image_size": 1 if d.image_size is None else d.image_size,
            "train.meta_batch_size": t.meta_batch_size, "eval.ways": e.ways,
            "eval.shots": e.shots, "eval.episodes": e.episodes, "eval.batch_size": e.batch_size,
            "train.log_every": t.log_every, "train.lr_step_every": t.lr_step_every,
            "train.checkpoint_every": t.checkpoint_every,
        }
        for key, v in positive.items():
            if v < 1:
                raise ConfigError(f"{key} must be >= 1, got {v}")
        non_negative = {"train.meta_steps": t.meta_steps, "eval.every": e.every,
                        "eval.val_episodes": e.val_episodes}
        for key, v in non_negative.items():
            if v < 0:
                raise ConfigError(f"{key} must be >= 0, got {v}")
        if t.outer_lr <= 0:
            raise ConfigError(f"train.outer_lr must be > 0, got {t.outer_lr}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2^63), got {self.seed}")
        stream = getattr(self.algorithm.config, "presentation", None) == "offset_labels"
        if (d.queries < 1 and not stream) or e.queries < 1:
            key = "eval.queries" if e.queries < 1 else "data.queries"
            raise ConfigError(f"{key} must be >= 1 (the query set is what a task is scored on), "
                              f"got {min(d.queries, e.queries)}")
        if d.queries < 0:
            raise ConfigError(f"data.queries must be >= 0, got {d.queries}")
        if stream and d.order != "shuffled":
            raise ConfigError("algorithm.presentation=offset_labels reads the support as one "
                              "stream, which in class-major order gives each label away; set "
                              "data.order=shuffled")
        if t.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {t.weight_decay}")
        for key, opt in (("train.grad_clip", t.grad_clip),
                         ("train.time_limit_min", t.time_limit_min)):
            if opt is not None and opt <= 0:
                raise ConfigError(f"{key} must be > 0 (or null for none), got {opt}")
        m = self.model
        if m.hidden < 1 or m.blocks < 1 or any(w < 1 for w in (*m.widths, *(m.channels or ()))):
            raise ConfigError("model.hidden, model.blocks, model.widths and model.channels must "
                              f"be >= 1; got hidden={m.hidden}, blocks={m.blocks}, "
                              f"widths={list(m.widths)}, channels={m.channels}")
        if not 0 <= t.momentum < 1:
            raise ConfigError(f"train.momentum must be in [0, 1), got {t.momentum}")
        if t.nesterov and (t.optimizer != "sgd" or t.momentum == 0):
            raise ConfigError("train.nesterov needs train.optimizer=sgd and train.momentum > 0")
        self.pretrain.validate()
        self.rl.validate(self.algorithm.name)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                             "eval": EvalConfig, "augment": AugmentConfig,
                             "pretrain": PretrainConfig, "rl": RLConfig}
"""The plain sections of a `RunConfig`, by key (`algorithm` is the algorithm's own config)."""
