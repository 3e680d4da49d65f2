"""Parts defined at module level, so a run trained from them is rebuilt in another process
(`tests/test_trainer.py`): a small backbone, its factory and a factory of dataset splits."""

from __future__ import annotations

import math

import torch
from torch import nn


class Net(nn.Module):
    """Linear + ReLU features of a flattened input (a user's backbone: no metazoo base)."""

    def __init__(self, input_shape: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        self.input_shape, self.feature_dim = tuple(input_shape), width
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width),
                                 nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_net(input_shape: tuple[int, ...]) -> nn.Module:
    return Net(input_shape)


class Clusters(torch.utils.data.Dataset):
    """Vectors in 16 dimensions whose class shows in the first 4 only (a Gaussian cluster
    each), under wider noise in the other 12: an untrained network's features mix the classes
    up (ProtoNet ~0.36 5-way 1-shot), a trained one finds them (~0.88). Labels from `first`."""

    def __init__(self, classes: int, first: int, seed: int, per_class: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        centres = torch.zeros(classes, 16)
        centres[:, :4] = 4 * torch.randn(classes, 4, generator=g)
        noise = torch.randn(classes * per_class, 16, generator=g) * torch.tensor([0.5] * 4
                                                                                + [4.0] * 12)
        self.x = centres.repeat_interleave(per_class, 0) + noise
        self.y = (torch.arange(classes).repeat_interleave(per_class) + first).tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], self.y[i]


def make_splits() -> dict[str, Clusters]:
    return {"train": Clusters(40, 0, 0), "val": Clusters(10, 40, 1), "test": Clusters(10, 50, 2)}
