"""Backbone weights written by `metazoo pretrain` and read back through `model.pretrained`.

One safetensors file, `backbone.safetensors` in the pre-training run folder (written atomically):
the backbone's state under `backbone.<name>`, the mean feature of the training split under
`base_mean` (SimpleShot's centring, Wang et al. 2019), and as JSON in its metadata the `model`
section and the input shape it was trained with. `model.pretrained` names the run folder or the
file; `models.build_from_config` loads it into the freshly built backbone and keeps the mean on it
as `backbone.pretrained_mean` (a plain attribute, not state: a run's checkpoint holds what an
algorithm copied of it). Every mismatch is one `ConfigError` line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from metazoo import atomic
from metazoo.errors import ConfigError

FILE = "backbone.safetensors"
PREFIX = "backbone."
MEAN = "base_mean"
_META = "metazoo"


@dataclass(frozen=True)
class PretrainedWeights:
    """What a weights file holds: the backbone's state, the training split's mean feature `[D]`
    and the metadata (`model`: the model section, `input_shape`, `dataset`, ...)."""

    state: dict[str, Tensor]
    base_mean: Tensor | None
    meta: dict[str, Any]
    path: Path


def save(path: Path, state: dict[str, Tensor], base_mean: Tensor | None,
         meta: dict[str, Any]) -> None:
    """Write a backbone's `state` (and `base_mean`, `meta`) to `path` atomically."""
    tensors = {PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}
    if base_mean is not None:
        tensors[MEAN] = base_mean.detach().contiguous().cpu()
    with atomic.replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META: json.dumps(meta)})


def load(where: str | Path) -> PretrainedWeights:
    """The weights file `where` names (a pre-training run folder or the file itself)."""
    given = Path(where).expanduser()
    path = given / FILE if given.is_dir() else given
    if not given.exists():
        raise ConfigError(f"model.pretrained '{where}' does not exist; pre-train first "
                          f"(metazoo pretrain --preset ... --out {where})")
    if not path.exists():
        raise ConfigError(f"model.pretrained '{where}' holds no {FILE}: it is not the folder "
                          "of a finished `metazoo pretrain` run")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META, "{}"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.pretrained '{where}' is not a readable weights file "
                          f"({first})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise ConfigError(f"model.pretrained '{where}' is not a weights file of `metazoo "
                          "pretrain` (no model section in its metadata)")
    state = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    return PretrainedWeights(state, tensors.get(MEAN), meta, path)


def _mismatch(module: nn.Module, state: dict[str, Tensor]) -> str:
    """How `state` differs from `module.state_dict()`, in a few words ("" when it fits)."""
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [f"{k} {list(state[k].shape)} vs {list(want[k].shape)}" for k in want
              if k in state and state[k].shape != want[k].shape]
    parts = [f"{len(v)} {what} (first: {v[0]})" for what, v in
             (("missing", missing), ("unexpected", extra), ("of another shape", shapes)) if v]
    return "; ".join(parts)


def apply(backbone: nn.Module, name: str, input_shape: tuple[int, ...], where: str) -> None:
    """Load the weights `where` names into `backbone` (model `name`, inputs `input_shape`), and
    keep their mean feature as `backbone.pretrained_mean`; `ConfigError` when they do not fit."""
    weights = load(where)
    model = weights.meta["model"]
    if model.get("name") != name:
        raise ConfigError(f"model.pretrained '{where}' holds {model.get('name')} weights but "
                          f"model.name is {name}; pre-train this backbone or change model.name")
    shape = tuple(weights.meta.get("input_shape") or ())
    if shape != tuple(input_shape):
        raise ConfigError(f"model.pretrained '{where}' was trained on inputs of shape {shape} "
                          f"but this run's are {tuple(input_shape)}; pre-train on the same "
                          "dataset and data.image_size")
    problem = _mismatch(backbone, weights.state)
    if problem:
        raise ConfigError(f"model.pretrained '{where}' does not fit this backbone ({problem}); "
                          "pre-train with the same model.* settings")
    bad = [k for k, v in weights.state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ConfigError(f"model.pretrained '{where}' holds non-finite weights ({bad[0]}): "
                          "the pre-training diverged")
    backbone.load_state_dict(weights.state)
    if weights.base_mean is not None:
        backbone.pretrained_mean = weights.base_mean.to(torch.get_default_dtype())
