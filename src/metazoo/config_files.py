"""Config files and overrides, the CLI side of `metazoo.config`: YAML presets and files,
`--set key=value`, and plain nested dicts (YAML, `config.json`) into a validated `RunConfig`.

Presets (`presets/*.yaml`) set only what differs from the defaults; `--set train.outer_lr=0.0005`
overrides single values. Every key and value is checked against the dataclass field types by
`metazoo.fields` (and, for `algorithm.*`, by the algorithm's spec), so a typo is a one-line
`ConfigError` with a suggestion rather than a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from metazoo import paper
from metazoo.config import DEFAULT_ALGORITHM, SECTIONS, AlgorithmChoice, RunConfig
from metazoo.errors import ConfigError
from metazoo.fields import coerce, did_you_mean, from_mapping
from metazoo.plugins import import_plugins


def algorithm_choice(values: Mapping[str, Any]) -> AlgorithmChoice:
    """The `algorithm` section (`name` plus options) as an `AlgorithmChoice`; options not given
    keep the algorithm's defaults, so an older `config.json` with fewer options still reads."""
    options = dict(values)
    name = str(options.pop("name", DEFAULT_ALGORITHM))
    return AlgorithmChoice.of(name, **options)


def from_dict(d: Mapping[str, Any]) -> RunConfig:
    """A validated `RunConfig` from nested dicts (as read from YAML or JSON)."""
    if not isinstance(d, Mapping):
        raise ConfigError("a config must be a mapping of sections (data, model, train, ...)")
    known = ["seed", "plugins", paper.KEY, "algorithm", *SECTIONS]
    kwargs: dict[str, Any] = {}
    if "plugins" in d:  # first: they register the parts the other sections name
        kwargs["plugins"] = tuple(coerce(d["plugins"], tuple[str, ...], "plugins"))
        import_plugins(kwargs["plugins"])
    if paper.KEY in d:  # checked, not part of the config: a run records it (engine.provenance)
        paper.check(d[paper.KEY])
    for key, v in d.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{key}'{did_you_mean(key, known)}")
        if key in ("plugins", paper.KEY):
            continue
        if key == "seed":
            kwargs["seed"] = coerce(v, int, "seed")
        elif not isinstance(v, Mapping):
            raise ConfigError(f"config section '{key}' must be a mapping, got {v!r}")
        elif key == "algorithm":
            kwargs["algorithm"] = algorithm_choice(v)
        else:
            kwargs[key] = from_mapping(SECTIONS[key], v, key)
    cfg = RunConfig(**kwargs)
    cfg.validate()
    return cfg


def apply_overrides(d: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings to nested dict `d` (values parsed as YAML scalars)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in d.items()}
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`; missing files, folders, non-UTF-8 text, bad YAML and keys
    given twice are `ConfigError`s."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{path}' is a folder; pass a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {e.start}); save it as "
                          "UTF-8") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections")
    return data


def preset_names() -> list[str]:
    """Names of the bundled presets (`metazoo list presets`)."""
    folder = resources.files("metazoo") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def presets_cell(algorithm: str, presets: list[str]) -> str:
    """The README tables' presets cell of `algorithm`: its presets in backticks, or "-"."""
    return ", ".join(f"`{p}`" for p in presets if p.split("-")[0] == algorithm) or "-"


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of preset `name`."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset '{name}'{did_you_mean(name, names)}; "
                          "`metazoo list presets` shows them all")
    path = resources.files("metazoo") / "presets" / f"{name}.yaml"
    return read_yaml(Path(str(path)))


def load_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then a preset, then a YAML file over it, then `--set` overrides; validated."""
    return from_dict(layered(preset, config_file, overrides))


def layered(preset: str | None = None, config_file: str | Path | None = None,
            overrides: list[str] | None = None) -> dict[str, Any]:
    """The plain mapping `load_config` validates: the preset, the file over it, `--set`."""
    base = preset_dict(preset) if preset else {}
    if config_file:
        base = merged(base, read_yaml(Path(config_file)))
    return apply_overrides(base, overrides or [])


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on it, section by section (nested mappings merge, values
    replace). A new `algorithm.name` starts that algorithm's options afresh, and a `paper`
    entry replaces the one below it whole (its numbers belong together)."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping) and key != paper.KEY:
            same = key != "algorithm" or value.get("name", old.get("name")) == old.get("name")
            out[key] = merged(old, value) if same else dict(value)
        else:
            out[key] = value
    return out
