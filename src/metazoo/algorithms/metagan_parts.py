"""MetaGAN's shared pieces: the task-conditioned generator, its config, the discriminator losses.

Zhang, Che, Ghahramani, Bengio, Song. "MetaGAN: An Adversarial Approach to Few-Shot Learning".
NeurIPS 2018. The few-shot classifier is the discriminator of a GAN whose generator G(z, T) makes
fakes for task T; the classifier solves N+1-way problems, the last class "fake", with the
semi-supervised GAN objective of Salimans et al. ("Improved Techniques for Training GANs",
NeurIPS 2016, Sec. 5):
    L_D = -E_(x,y) log p(y | x, y <= N) - E_x log p(y <= N | x) - E_{x~G} log p(N+1 | x)
and G is trained by feature matching (Salimans et al. Sec. 3.1) on the classifier's last hidden
features f: L_G = || E_x f(x) - E_z f(G(z, T)) ||^2. `metagan_maml` and `metagan_relation` build on
these; `fake_weight` scales the last two terms of L_D, and 0 removes the generator.

The generator (ours; the paper's layer sizes are not reproduced): a dataset encoder (two stride-2
convs, ReLU) averaged over the support set's examples and pixels gives the task's embedding, as
the paper conditions G on the support set; [z; embedding] -> linear -> two stride-2 transposed
convs -> sigmoid, an image in [0, 1] as the library's inputs (none of `augment`'s normalisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metazoo.algorithms.base import AlgorithmConfig
from metazoo.errors import ConfigError
from metazoo.seeding import episode_generator


@dataclass(frozen=True)
class GANConfig(AlgorithmConfig):
    """The generator's fields, shared by `metagan_maml` and `metagan_relation`."""

    fake_weight: float = 1.0  # weight of L_D's real/fake terms; 0: no generator, the base method
    noise_dim: int = 100  # size of z ~ N(0, I) (DCGAN's 100; the paper's not known here)
    generator_hidden: int = 64  # channels of the generator's encoder and decoder (ours)
    fakes: int | None = None  # fakes per support or query set; None: as many as its real rows
    sample_seed: int = 0  # with the meta-iteration and the episode, fixes every draw of z

    def validate(self) -> None:
        if self.fake_weight < 0 or self.noise_dim < 1 or self.generator_hidden < 1 or (
                self.fakes is not None and self.fakes < 1):
            raise ConfigError(f"fake_weight must be >= 0, noise_dim, generator_hidden and fakes "
                              f">= 1; got {self.fake_weight}, {self.noise_dim}, "
                              f"{self.generator_hidden}, {self.fakes}")


class TaskGenerator(nn.Module):
    """G(z, T): `[M, noise_dim]` noise and a support set `[S, C, H, W]` -> `[M, C, H, W]` fakes."""

    def __init__(self, input_shape: tuple[int, ...], noise_dim: int, hidden: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"MetaGAN's generator draws images (C, H, W); the backbone's input "
                              f"shape is {tuple(input_shape)}")
        c, h, w = input_shape
        self.input_shape, self.noise_dim, self.hidden = (c, h, w), noise_dim, hidden
        self.grid = (math.ceil(h / 4), math.ceil(w / 4))
        self.encoder = nn.Sequential(nn.Conv2d(c, hidden, 3, 2, 1), nn.ReLU(),
                                     nn.Conv2d(hidden, hidden, 3, 2, 1), nn.ReLU())
        self.project = nn.Linear(noise_dim + hidden, 2 * hidden * self.grid[0] * self.grid[1])
        self.decoder = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * hidden, hidden, 4, 2, 1),
                                     nn.ReLU(), nn.ConvTranspose2d(hidden, c, 4, 2, 1))

    def task_embedding(self, support_x: Tensor) -> Tensor:
        """The mean encoding of the support set: `[S, C, H, W]` -> `[hidden]`."""
        return self.encoder(support_x).mean(dim=(0, 2, 3))

    def forward(self, z: Tensor, support_x: Tensor) -> Tensor:
        task = self.task_embedding(support_x).expand(z.shape[0], -1)  # [M, hidden]
        x = self.project(torch.cat([z, task], dim=1))
        x = self.decoder(x.view(z.shape[0], 2 * self.hidden, *self.grid))  # [M, C, 4h', 4w']
        _, h, w = self.input_shape
        return torch.sigmoid(x[:, :, :h, :w])


def generator_for(backbone: nn.Module, config: GANConfig) -> TaskGenerator | None:
    """The task-conditioned generator of a MetaGAN learner on `backbone`; None with
    `fake_weight` 0 (the base method, exactly)."""
    if config.fake_weight == 0:
        return None
    return TaskGenerator(tuple(getattr(backbone, "input_shape", ())), config.noise_dim,
                         config.generator_hidden)


def draw_fakes(generator: TaskGenerator, support_x: Tensor, count: int, *, tag: str, seed: int,
               step: int) -> Tensor:
    """`count` fakes for the task of `support_x`; z from a generator of (tag, seed, step, the
    episode), so a task's draws do not depend on what ran before (`metazoo.seeding`)."""
    g = episode_generator(f"metagan/{tag}", seed, step, support_x)
    z = torch.randn((count, generator.noise_dim), generator=g, dtype=support_x.dtype)
    return generator(z.to(support_x.device), support_x)


def supervised_loss(logits: Tensor, labels: Tensor, ways: int) -> Tensor:
    """-log p(y | x, y <= N): cross-entropy over the first `ways` of `[M, N+1]` logits."""
    return nn.functional.cross_entropy(logits[..., :ways], labels)


def real_fake_loss(real: Tensor, fake: Tensor) -> Tensor:
    """-E_real log p(y <= N | x) - E_fake log p(N+1 | x); the last column is the fake class."""
    real_term = torch.logsumexp(real[:, :-1], dim=-1) - torch.logsumexp(real, dim=-1)
    fake_term = fake[:, -1] - torch.logsumexp(fake, dim=-1)
    return -(real_term.mean() + fake_term.mean())


def feature_matching(real: Tensor, fake: Tensor) -> Tensor:
    """|| mean f(real) - mean f(fake) ||^2 over features `[M, D]`, `[F, D]`."""
    return (real.mean(dim=0) - fake.mean(dim=0)).square().sum()
