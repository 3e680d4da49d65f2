"""Parts given as Python objects (`metazoo.Trainer`), by name: registered under derived names and
recorded in `config.json: plugins` as `backbone=NAME`, `dataset=NAME` or `tasks=NAME`.

NAME is `module:qualname` for a module-level factory of an importable module (a backbone
factory `(input_shape) -> nn.Module`, a class included; a dataset or task factory
`() -> {split: ...}`): `restore` (called by `plugins.import_plugins`) imports and registers it
again, so `metazoo eval`, `evaluate_run` and `--resume` in another process rebuild the run. Any
other object (an `nn.Module` instance, a lambda, a mapping of datasets, a script's function) gets
a NAME with `@` (`<lambda>@my_module`), which no import can rebuild: only the program that holds
the object can use the run, and any other refuses it in one line.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from metazoo.errors import ConfigError

Kind = Literal["backbone", "dataset", "tasks"]
KINDS: tuple[Kind, ...] = ("backbone", "dataset", "tasks")
IMPORTABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class Part:
    """A part given as an object: `kind`, the registry `name`, and `made` (a backbone factory,
    a backbone instance, a mapping of splits, or a factory of one)."""

    kind: Kind
    name: str
    made: Any

    @property
    def entry(self) -> str:
        """What `config.json: plugins` records: `kind=name`."""
        return f"{self.kind}={self.name}"


def reference(obj: Any) -> str | None:
    """`module:qualname` when importing it gives `obj` back (module-level, not `__main__`, not
    a lambda or a local); else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__" \
            or not IMPORTABLE.fullmatch(f"{module}:{qualname}"):
        return None
    try:
        return f"{module}:{qualname}" if resolve(f"{module}:{qualname}") is obj else None
    except ConfigError:
        return None


def label(obj: Any) -> str:
    """A name for an object no import rebuilds: `<lambda>@tests.nets`, `Net object@tests.nets`,
    `mapping of Clusters@tests.data` (its first value's class)."""
    if isinstance(obj, Mapping) and obj:
        first = type(next(iter(obj.values())))
        return f"mapping of {first.__qualname__}@{first.__module__}"
    if callable(obj) and hasattr(obj, "__qualname__") and not isinstance(obj, nn.Module):
        return f"{obj.__qualname__}@{getattr(obj, '__module__', '?')}"
    return f"{type(obj).__qualname__} object@{type(obj).__module__}"


def part(kind: Kind, obj: Any) -> Part:
    """`obj` as a part: named by its import path when it is an importable factory."""
    factory = callable(obj) and not isinstance(obj, nn.Module | Mapping)
    ref = reference(obj) if factory else None
    return Part(kind, ref or label(obj), obj)


def resolve(ref: str) -> Any:
    """The object `module:qualname` names; `ConfigError` in one line when it cannot be had."""
    module, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except Exception as e:  # any failure of user code at import is reported in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"'{ref}' cannot be imported ({first}); make '{module}' importable "
                          "(PYTHONPATH, pip install)") from None
    for attr in qualname.split("."):
        if not hasattr(obj, attr):
            raise ConfigError(f"'{ref}' cannot be imported: '{module}' has no '{qualname}'")
        obj = getattr(obj, attr)
    return obj


def refusal(kind: str, name: str) -> str:
    """The one-line error of a run whose part cannot be rebuilt in this process."""
    fix = ("a factory `(input_shape) -> nn.Module`" if kind == "backbone"
           else "a factory `() -> {split: ...}`")
    return (f"the run's {kind} '{name}' was given to metazoo.Trainer as an object that no "
            f"import rebuilds; give Trainer {fix} defined at module level in an importable "
            "module (not a lambda, a local function or __main__) and retrain, or use the run "
            "in the program that holds it (Trainer.evaluate, Trainer.fit(resume=True))")


def restore(entry: str) -> None:
    """Register the part a `plugins` entry `kind=NAME` records, unless it is registered (this
    process holds it); `ConfigError` when NAME is not an importable factory."""
    kind, _, name = entry.partition("=")
    if kind not in KINDS or not name:
        raise ConfigError(f"plugins entry '{entry}' is neither a module nor kind=NAME with kind "
                          f"one of {', '.join(KINDS)}")
    if registered(kind, name):
        return
    if not IMPORTABLE.fullmatch(name):
        raise ConfigError(refusal(kind, name))
    add(Part(kind, name, resolve(name)))  # type: ignore[arg-type]


def registered(kind: str, name: str) -> bool:
    from metazoo import models
    from metazoo.data import DATASETS
    from metazoo.tasks import FAMILIES

    if kind == "backbone":
        return name in models.BACKBONES
    return name in DATASETS and (kind == "dataset" or name in FAMILIES)


def checked_backbone(net: Any, name: str) -> nn.Module:
    """`net`, or `ConfigError` when it is not an `nn.Module` with a positive int `feature_dim`."""
    if not isinstance(net, nn.Module):
        raise ConfigError(f"backbone '{name}' gave a {type(net).__name__}, not an nn.Module")
    dim = getattr(net, "feature_dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"backbone '{name}' ({type(net).__name__}) needs a positive int "
                          "`feature_dim` (the width of its output features); set "
                          "self.feature_dim in its __init__")
    return net


def splits_of(p: Part) -> Mapping[str, Any]:
    """The mapping of splits of a dataset or task part (its factory called), checked."""
    splits = p.made() if callable(p.made) and not isinstance(p.made, Mapping) else p.made
    if not isinstance(splits, Mapping) or not all(isinstance(k, str) for k in splits):
        raise ConfigError(f"{p.kind} '{p.name}' must be a mapping of split name -> "
                          f"{'Dataset' if p.kind == 'dataset' else 'task source'} (or a "
                          f"factory of one), got {type(splits).__name__}")
    need = ("__len__", "__getitem__") if p.kind == "dataset" else (
        "batch", "input_shape", "ways", "shots", "queries")
    for split, value in splits.items():
        missing = [a for a in need if not hasattr(value, a)]
        if missing:
            what = "a Dataset of (input, label)" if p.kind == "dataset" else "a TaskSource"
            raise ConfigError(f"{p.kind} '{p.name}': split '{split}' ({type(value).__name__})"
                              f" is not {what}: it has no {missing[0]}")
    return splits


def _backbone_spec(p: Part) -> Any:
    from metazoo.models import BackboneSpec

    given = checked_backbone(p.made, p.name) if isinstance(p.made, nn.Module) else None

    def build(input_shape: tuple[int, ...], **_: Any) -> nn.Module:
        """The given instance (its weights as they are), else the factory's module."""
        return given if given is not None else checked_backbone(p.made(tuple(input_shape)),
                                                                p.name)

    return BackboneSpec(p.name, build, lambda m, shape: build(shape),
                        "a backbone given to metazoo.Trainer", ("image", "vector"))


def _tasks_spec(p: Part) -> tuple[Any, Callable[..., Any]]:
    from metazoo.data import DatasetSpec

    sources = splits_of(p)
    first = sources[next(iter(sources))]
    regression = first.batch(0, 1).kind == "regression"
    kind: Literal["images", "features", "regression"] = "regression" if regression else (
        "images" if len(first.input_shape) == 3 else "features")

    def family(*, shots: int, queries: int, seed: int, split: str) -> Any:
        del seed  # a given source carries its own
        if split not in sources:
            raise ConfigError(f"tasks '{p.name}' have no split '{split}'; they have "
                              f"{', '.join(sources)}")
        src = sources[split]
        if (src.shots, src.queries) != (shots, queries):
            raise ConfigError(f"tasks '{p.name}/{split}' are {src.shots}-shot {src.queries}-"
                              f"query; {shots}-shot {queries}-query ones were asked for")
        return src

    return DatasetSpec(p.name, None, kind, tuple(sources), "tasks given to metazoo.Trainer",
                       False), family


@dataclass(frozen=True)
class Registered:
    """A part's spec, made once (a dataset's splits converted once), and its task family."""

    part: Part
    spec: Any
    family: Callable[..., Any] | None = None


def spec_of(p: Part) -> Registered:
    """The spec that registers `p` (factories of splits called, splits checked)."""
    from metazoo.data.torch_dataset import torch_dataset_spec

    if p.kind == "backbone":
        return Registered(p, _backbone_spec(p))
    if p.kind == "dataset":
        return Registered(p, torch_dataset_spec(p.name, splits_of(p),
                                                "a Dataset given to metazoo.Trainer"))
    return Registered(p, *_tasks_spec(p))


def add(p: Part) -> None:
    """Register `p` for the rest of the process."""
    from metazoo import models
    from metazoo.data import DATASETS
    from metazoo.tasks import FAMILIES

    r = spec_of(p)
    (models.BACKBONES if p.kind == "backbone" else DATASETS).add(r.spec)
    if r.family is not None:
        FAMILIES[p.name] = r.family


@contextmanager
def registered_for(specs: list[Registered]) -> Iterator[None]:
    """The parts registered for the length of a `with` block (a name this process already
    holds is left as it is: an importable factory registered by `restore`)."""
    from metazoo import models
    from metazoo.data import DATASETS
    from metazoo.tasks import FAMILIES

    with ExitStack() as stack:
        for r in specs:
            if registered(r.part.kind, r.part.name):
                continue
            stack.enter_context((models.BACKBONES if r.part.kind == "backbone" else DATASETS)
                                .temporarily(r.spec))
            if r.family is not None:
                FAMILIES[r.part.name] = r.family
                stack.callback(FAMILIES.pop, r.part.name, None)
        yield
