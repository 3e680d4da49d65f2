"""Checkpoints: one safetensors file holding the tensors, with the rest as JSON in its metadata.

One file per checkpoint keeps a save atomic (`metazoo.atomic`): a run killed at any moment leaves
either the previous checkpoint or the new one, never a broken one. Nothing is unpickled on load.
The algorithm's weights are stored under `model.<name>` (`model_tensors`, `model_state`), next to
the optimiser's `optim.<param>.<key>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from metazoo import atomic
from metazoo.errors import CheckpointError

_META_KEY = "metazoo"
MODEL_PREFIX = "model."


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` and JSON-serialisable `meta` to `path` atomically."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic.replacing(path) as tmp:
        save_file(flat, str(tmp), metadata={_META_KEY: json.dumps(meta)})


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata written by `save`; `CheckpointError` when missing or damaged."""
    meta = read_meta(path)
    try:
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{path}' is damaged ({e}); delete it or retrain"
                              ) from None


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata of a checkpoint, without reading its tensors."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at '{path}'; train first or check the run folder")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META_KEY, "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{path}' is damaged ({e}); delete it or retrain"
                              ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint '{path}' is damaged (metadata is not a mapping); "
                              "delete it or retrain")
    return meta


def model_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An algorithm's `state_dict()` as checkpoint tensors (`model.<name>`)."""
    return {MODEL_PREFIX + k: v for k, v in state.items()}


def model_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The algorithm's `state_dict` in checkpoint tensors (`model.<name>`, prefix removed)."""
    return {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}


def optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser `state_dict()` into tensors (`optim.<param>.<key>`) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, v in entry.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = v
            else:
                scalars.setdefault(str(pid), {})[key] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def mismatch(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """One line on how `state` differs from `module.state_dict()`: missing and unexpected keys
    and shapes that differ (a few of each named), or "" when it fits."""
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [f"{k} {list(state[k].shape)} vs {list(want[k].shape)}" for k in want
              if k in state and state[k].shape != want[k].shape]

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    parts = [f"{len(v)} {what} ({few(v)})" for what, v in
             (("missing", missing), ("unexpected", extra), ("of another shape", shapes)) if v]
    return "; ".join(parts)


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """`module.load_state_dict(state)`, or a one-line `CheckpointError` saying what differs."""
    problem = mismatch(module, state)
    if problem:
        raise CheckpointError(f"weights in '{where}' do not fit the run's config: {problem}")
    module.load_state_dict(state)

