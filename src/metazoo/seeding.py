"""Random draws inside a task that are a pure function of (seed, meta-iteration, episode).

An algorithm that draws random numbers per task (Siamese's distortions, ALPaCA's context sizes)
takes them from `episode_generator`, not from torch's global generator: the draws then do not
depend on what else ran before, a resumed run repeats them, and `meta_loss` stays a pure
function of the parameters and the batch.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def episode_generator(tag: str, seed: int, step: int, episode: Tensor) -> torch.Generator:
    """A CPU generator seeded by (`tag`, `seed`, meta-iteration `step`, the episode's bytes)."""
    digest = hashlib.sha256(f"{tag}/{seed}/{step}/".encode()
                            + episode.detach().cpu().numpy().tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
