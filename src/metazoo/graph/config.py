"""The config of `metazoo attack`: which graph, which attack, how the result is scored.

Its own small dataclasses (not `metazoo.config.RunConfig`, which describes episodic meta-training)
read with the same machinery: `metazoo.fields` types and checks every value, presets are YAML in
`presets/attack/`, a `--config` file and `--set section.key=value` layer over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from metazoo.config_files import apply_overrides, merged, read_yaml
from metazoo.errors import ConfigError
from metazoo.fields import coerce, did_you_mean, from_mapping

Variant = Literal["meta_self", "meta_train", "a_meta_self", "a_meta_train", "a_meta_both"]


@dataclass(frozen=True)
class GraphDataConfig:
    """The graph and its labeled/unlabeled split."""

    name: Literal["csbm", "karate", "cora", "citeseer", "pubmed"] = "csbm"  # graph source
    root: str | None = None  # Planetoid files folder (default $METAZOO_DATA, ~/.cache/metazoo)
    largest_component: bool = True  # Metattack Sec. 5: the largest connected component
    labeled_share: float = 0.1  # Metattack Sec. 5: 10% labeled, stratified; 90% unlabeled
    split_seed: int = 0  # seed of the labeled/unlabeled split
    karate_features: Literal["identity", "degree"] = "identity"  # karate: one-hot or degree
    nodes: int = 300  # csbm: N
    classes: int = 3  # csbm: K
    within_degree: float = 5.0  # csbm: expected neighbours in a node's own class
    between_degree: float = 1.0  # csbm: expected neighbours in all other classes together
    feature_dim: int = 32  # csbm: D
    feature_signal: float = 1.0  # csbm: squared norm of each class mean (noise N(0, I))
    graph_seed: int = 0  # csbm: seed of the generated graph

    def validate(self) -> None:
        """Ranges."""
        if not 0.0 < self.labeled_share < 1.0:
            raise ConfigError(f"data.labeled_share must be in (0, 1), got {self.labeled_share}")
        if self.nodes < 2 * self.classes or self.classes < 2:
            raise ConfigError("data.classes must be >= 2 and data.nodes >= 2 * classes, got "
                              f"{self.classes} classes, {self.nodes} nodes")
        if self.within_degree < 0 or self.between_degree < 0 or self.feature_signal < 0:
            raise ConfigError("data.within_degree, between_degree, feature_signal must be >= 0")
        if self.feature_dim < 1:
            raise ConfigError(f"data.feature_dim must be >= 1, got {self.feature_dim}")


@dataclass(frozen=True)
class MetattackConfig:
    """The attacker (defaults: Zügner & Günnemann 2019 and their code)."""

    variants: tuple[Variant, ...] = ("meta_self",)  # which attacks to run and score
    budget: float = 0.05  # Δ as a share of the clean graph's edges (Sec. 5: 5%)
    train_iters: int = 100  # T, unrolled training steps (Sec. 5)
    lr: float = 0.1  # α of the unrolled momentum SGD (their code)
    momentum: float = 0.9  # μ of the unrolled momentum SGD (their code)
    approx_lr: float = 0.01  # Adam rate of the A-Meta variants (their code)
    hidden: int = 16  # surrogate hidden units (their code)
    ll_constraint: bool = True  # Nettack's degree-distribution test (Sec. 4)
    ll_cutoff: float = 0.004  # τ of that test
    dtype: Literal["float32", "float64"] = "float32"  # precision of the attack
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available

    def validate(self) -> None:
        """Ranges."""
        if not self.variants:
            raise ConfigError("attack.variants must name at least one of meta_self, meta_train, "
                              "a_meta_self, a_meta_train, a_meta_both")
        if not 0.0 < self.budget <= 1.0:
            raise ConfigError(f"attack.budget must be in (0, 1], got {self.budget}")
        if self.train_iters < 1 or self.hidden < 1:
            raise ConfigError("attack.train_iters and attack.hidden must be >= 1")
        if self.lr <= 0 or self.approx_lr <= 0 or not 0.0 <= self.momentum < 1.0:
            raise ConfigError("attack.lr and approx_lr must be > 0 and momentum in [0, 1)")
        if self.ll_cutoff <= 0:
            raise ConfigError(f"attack.ll_cutoff must be > 0, got {self.ll_cutoff}")


@dataclass(frozen=True)
class GraphEvalConfig:
    """The victim: fresh GCNs trained on the (perturbed) graph (Kipf & Welling Sec. 5.2)."""

    retrainings: int = 10  # GCNs per graph (seeds 0..n-1): mean ± 95% CI
    hidden: int = 16  # hidden units
    lr: float = 0.01  # Adam rate
    weight_decay: float = 5e-4  # L2 on the first layer
    dropout: float = 0.5  # input and hidden dropout
    epochs: int = 200  # training steps
    random_baseline: bool = True  # also score random flips of the same budget

    def validate(self) -> None:
        """Ranges."""
        if self.retrainings < 1 or self.hidden < 1 or self.epochs < 1:
            raise ConfigError("eval.retrainings, hidden and epochs must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("eval.lr must be > 0, weight_decay >= 0, dropout in [0, 1)")


@dataclass(frozen=True)
class AttackRunConfig:
    """One `metazoo attack` run."""

    seed: int = 0  # surrogate initialisation, random flips
    data: GraphDataConfig = field(default_factory=GraphDataConfig)
    attack: MetattackConfig = field(default_factory=MetattackConfig)
    eval: GraphEvalConfig = field(default_factory=GraphEvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (JSON/YAML)."""
        d = asdict(self)
        d["attack"]["variants"] = list(self.attack.variants)
        return d


_SECTIONS = {"data": GraphDataConfig, "attack": MetattackConfig, "eval": GraphEvalConfig}


def attack_config_from_dict(d: Mapping[str, Any]) -> AttackRunConfig:
    """A validated `AttackRunConfig` from nested dicts; unknown keys are one-line errors."""
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key == "seed":
            kwargs["seed"] = coerce(value, int, "seed")
        elif key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config section '{key}' must be a mapping, got {value!r}")
            kwargs[key] = from_mapping(_SECTIONS[key], value, key)
        else:
            raise ConfigError(f"unknown attack config key '{key}'"
                              f"{did_you_mean(key, ['seed', *_SECTIONS])}")
    cfg = AttackRunConfig(**kwargs)
    for f in fields(cfg):
        getattr(getattr(cfg, f.name), "validate", lambda: None)()
    return cfg


def attack_preset_names() -> list[str]:
    """The bundled attack presets (`presets/attack/*.yaml`)."""
    folder = resources.files("metazoo") / "presets" / "attack"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_attack_config(preset: str | None = None, config_file: str | Path | None = None,
                       overrides: list[str] | None = None) -> AttackRunConfig:
    """Defaults, then a preset, then a YAML file, then `--set` overrides; validated."""
    base: dict[str, Any] = {}
    if preset:
        names = attack_preset_names()
        if preset not in names:
            raise ConfigError(f"unknown attack preset '{preset}'{did_you_mean(preset, names)}; "
                              f"the presets are {', '.join(names)}")
        base = read_yaml(Path(str(resources.files("metazoo") / "presets" / "attack"
                                  / f"{preset}.yaml")))
    if config_file:
        base = merged(base, read_yaml(Path(config_file)))
    return attack_config_from_dict(apply_overrides(base, overrides or []))
