"""What `--resume` may change, and how a run folder proves it is the run its checkpoint trained.

`config.json` is written once, when a run starts, and never rewritten. Every checkpoint stores
that file's content (`run_config`) and a SHA-256 of its canonical JSON (`config_sha256`), next to
the config the run is training with now (`config`: `config.json` plus what resumes changed). A
resume reads the config from the checkpoint, after checking that `config.json` still hashes the
same (a hand edit is refused, naming the keys it changed). It may change only
`train.meta_steps` (to extend the run), evaluation settings (`eval.*`) and what does not change
the numbers (`PLACE`: the data's folder, the device, progress output); each such change is
appended to `resumes.json` (time, step resumed from, changes).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metazoo import atomic
from metazoo.config import RunConfig
from metazoo.config_files import apply_overrides, from_dict
from metazoo.engine import checkpoint
from metazoo.engine.run import CHECKPOINT, CONFIG
from metazoo.errors import CheckpointError, ConfigError

RESUMES = "resumes.json"
# where the data lives and how the run reports: no effect on what it computes
PLACE = ("data.root", "data.download", "train.device", "train.progress", "train.tensorboard",
         "train.time_limit_min", "train.time_clock")  # each start gets its own time budget
RESUMABLE = "train.meta_steps, eval.* and " + ", ".join(PLACE)


def resumable(key: str) -> bool:
    """Whether a resume may change `key` (`section.key`)."""
    return key == "train.meta_steps" or key.startswith("eval.") or key in PLACE


def normal(d: Mapping[str, Any]) -> dict[str, Any]:
    """`d` as it reads back from JSON (tuples as lists, ...)."""
    return dict(json.loads(json.dumps(d)))


def config_hash(d: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a config dict (sorted keys, no spaces)."""
    canonical = json.dumps(normal(d), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def flat(d: Mapping[str, Any]) -> dict[str, Any]:
    """`{"seed": 0, "data.ways": 20, ...}` from nested config dicts."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """`{key: [old, new]}` for every flat key whose value differs (None where absent)."""
    a, b = flat(normal(old)), flat(normal(new))
    return {k: [a.get(k), b.get(k)] for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _show(diff: Mapping[str, list[Any]], limit: int = 4) -> str:
    items = [f"{k}: {json.dumps(o)} -> {json.dumps(n)}" for k, (o, n) in diff.items()]
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def identity(run_config: Mapping[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """The checkpoint metadata that ties it to its run folder's `config.json`."""
    return {"run_config": normal(run_config), "config_sha256": config_hash(run_config),
            "config": normal(cfg.to_dict())}


def check_overrides(overrides: Sequence[str], run_dir: Path) -> None:
    """Refuse `--set` keys that a resume may not change."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not resumable(key):
            raise ConfigError(f"--resume continues the run in '{run_dir}' as it was configured: "
                              f"--set may change only {RESUMABLE}, not '{key}'")


class SavedRun:
    """A run folder's `config.json` and checkpoint, checked against each other."""

    def __init__(self, run_dir: Path, *, tensors: bool = True) -> None:
        path = run_dir / CONFIG
        if not path.exists():
            raise CheckpointError(f"'{run_dir}' is not a run folder (no {CONFIG}); nothing to "
                                  "resume")
        try:
            self.run_config: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"'{path}' is damaged: {e}") from None
        ckpt = run_dir / CHECKPOINT
        if not ckpt.exists():
            raise CheckpointError(f"'{run_dir}' has no checkpoint (the run stopped before its "
                                  "first one): start it again without --resume")
        if tensors:
            self.tensors, self.meta = checkpoint.load(ckpt)
        else:
            self.tensors, self.meta = {}, checkpoint.read_meta(ckpt)
        self.step = int(self.meta["step"])
        if "config_sha256" in self.meta:
            if config_hash(self.run_config) != self.meta["config_sha256"]:
                diff = changes(self.meta.get("run_config", {}), self.run_config)
                raise CheckpointError(
                    f"'{path}' was edited after the run started ({_show(diff) or 'formatting'}); "
                    "a resume continues the run as trained: restore the file, or start a new "
                    "run with another --out")
            self.config: dict[str, Any] = self.meta["config"]
        else:  # a checkpoint written before configs were stored in it
            self.config = self.run_config
        self.run_dir = run_dir

    def config_with(self, overrides: Sequence[str]) -> RunConfig:
        """The run's config, with resumable `--set` overrides applied."""
        check_overrides(overrides, self.run_dir)
        return from_dict(apply_overrides(self.config, list(overrides)))

    def check(self, cfg: RunConfig) -> dict[str, list[Any]]:
        """What `cfg` changes in the saved run's config; `ConfigError` if it may not."""
        diff = changes(from_dict(self.config).to_dict(), cfg.to_dict())
        bad = {k: v for k, v in diff.items() if not resumable(k)}
        if bad:
            raise ConfigError(f"a resume continues the run in '{self.run_dir}' as it was "
                              f"configured: only {RESUMABLE} may change, not {_show(bad)}")
        if cfg.train.meta_steps < self.step:
            raise ConfigError(f"train.meta_steps={cfg.train.meta_steps} is below the "
                              f"checkpoint's step {self.step}: a resume can only extend a run")
        return diff


def record(run_dir: Path, step: int, diff: Mapping[str, list[Any]]) -> None:
    """Append a resume's changes to `resumes.json` (atomically)."""
    path = run_dir / RESUMES
    try:
        entries = json.loads(path.read_text()) if path.exists() else []
    except json.JSONDecodeError:
        entries = []
    if not isinstance(entries, list):
        entries = []
    entries.append({"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "from_step": step, "changes": dict(diff)})
    atomic.write_text(path, json.dumps(entries, indent=2) + "\n")
