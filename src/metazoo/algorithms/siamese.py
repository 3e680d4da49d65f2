"""Siamese Networks: a learned verification score between two images, reused for one-shot.

Koch, Zemel, Salakhutdinov. "Siamese Neural Networks for One-shot Image Recognition". ICML Deep
Learning Workshop 2015 (no arXiv id; www.cs.cmu.edu/~rsalakhu/papers/oneshot1.pdf).

Twin copies of one embedding h (shared weights) are joined by a weighted L1 distance fed to a
sigmoid (Sec. 3.1):
    p(x1, x2) = sigmoid( sum_j alpha_j |h1_j - h2_j| + b ),   alpha, b learned
trained as a same/different verifier with the regularised cross-entropy of Sec. 3.2:
    L = -[ y log p + (1 - y) log(1 - p) ] + lambda^T |w|^2,   y = 1 iff same class,
with alpha ~ N(0, 0.2), b ~ N(0.5, 0.01), the paper's fully connected initialisation (Sec. 3.2).
One-shot prediction (Sec. 4.3): the query's class is that of the most similar support image;
the predictor returns per class the max pre-sigmoid logit over its support. "acc" is this rule.
Affine distortions (Sec. 3.3), with `distort=True` and only while training: each component of
T = (theta, rho_x, rho_y, s_x, s_y, t_x, t_y), theta in [-10, 10] degrees, rho in [-0.3, 0.3],
s in [0.8, 1.2], t in [-2, 2] pixels, is drawn uniformly and kept with probability 0.5 (else
identity), from a generator seeded by (`distort_seed`, meta-iteration, episode).

Deviations: conv4 (batch statistics of the episode) replaces the paper's 105x105 network; the
pairs are every (query, support) pair of an episode, positives and negatives weighted one half
each, not sampled balanced pairs; each image is distorted once per episode, not per pair;
`train.weight_decay` (one value) replaces the per-layer lambda_j; Adam replaces Koch's SGD with
per-layer learning rates and momentum. Details: docs/algorithms.md.
Presets: siamese-omniglot-5w1s, siamese-omniglot-20w1s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError
from metazoo.metrics import accuracy
from metazoo.seeding import episode_generator
from metazoo.types import Predictor


@dataclass(frozen=True)
class SiameseConfig(AlgorithmConfig):
    distort: bool = False  # affine distortions of training inputs (Sec. 3.3); presets turn it on
    rotation: float = 10.0  # theta ~ U[-rotation, rotation] degrees (Sec. 3.3: 10)
    shear: float = 0.3  # rho_x, rho_y ~ U[-shear, shear] (Sec. 3.3: 0.3)
    scale: float = 0.2  # s_x, s_y ~ U[1 - scale, 1 + scale] (Sec. 3.3: [0.8, 1.2])
    translation: float = 2.0  # t_x, t_y ~ U[-translation, translation] pixels (Sec. 3.3: 2)
    distort_prob: float = 0.5  # each component is applied with this probability (Sec. 3.3: .5)
    distort_seed: int = 0  # with the meta-iteration and the episode, fixes every distortion

    def validate(self) -> None:
        if min(self.rotation, self.translation) < 0:
            raise ConfigError(f"siamese rotation and translation must be >= 0, got "
                              f"{self.rotation} and {self.translation}")
        if not (0 <= self.shear < 1 and 0 <= self.scale < 1):
            raise ConfigError(f"siamese shear and scale must be in [0, 1) (the map must stay "
                              f"invertible), got {self.shear} and {self.scale}")
        if not 0 <= self.distort_prob <= 1:
            raise ConfigError(f"siamese distort_prob must be in [0, 1], got {self.distort_prob}")


def pair_logits(zq: Tensor, zs: Tensor, alpha: Tensor, bias: Tensor) -> Tensor:
    """sum_j alpha_j |zq_j - zs_j| + b for every pair: `[M, D]`, `[S, D]` -> `[M, S]` (Sec. 3.1)."""
    return (zq[:, None, :] - zs[None, :, :]).abs() @ alpha + bias  # [M, S, D] @ [D]


def class_logits(logits: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """Max pair logit over each class's support: `[M, S]` -> `[M, N]` (one-shot rule, Sec. 4.3)."""
    member = support_y[None, :] == torch.arange(ways, device=support_y.device)[:, None]  # [N, S]
    masked = torch.where(member[None], logits[:, None, :], torch.finfo(logits.dtype).min)
    return masked.amax(-1)  # [M, N, S] -> [M, N]


def balanced_bce(logits: Tensor, same: Tensor) -> Tensor:
    """Cross-entropy of Sec. 3.2 where positive and negative pairs each weigh one half."""
    y = same.to(logits.dtype)
    w = 0.5 * y / y.sum().clamp_min(1.0) + 0.5 * (1 - y) / (1 - y).sum().clamp_min(1.0)
    return (w * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()


def random_affine(x: Tensor, cfg: SiameseConfig, generator: torch.Generator | None = None
                  ) -> Tensor:
    """One random affine distortion per image (Sec. 3.3): `[M, C, H, W]` -> `[M, C, H, W]`.

    The image is mapped by p' = R(theta) [[1, rho_x], [rho_y, 1]] diag(s_x, s_y) p + t in
    normalised coordinates; sampling uses the inverse map. Background outside is 0 (ink on 0).
    """
    m, _, h, w = x.shape
    u = torch.rand(7, m, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1  # U[-1, 1]
    keep = torch.rand(7, m, generator=generator).to(x.device) < cfg.distort_prob
    v = u * keep  # each component kept with probability distort_prob
    theta = v[0] * math.radians(cfg.rotation)
    cos, sin, one = theta.cos(), theta.sin(), torch.ones_like(theta)
    rot = torch.stack([cos, -sin, sin, cos], -1).view(m, 2, 2)
    shear = torch.stack([one, v[1] * cfg.shear, v[2] * cfg.shear, one], -1).view(m, 2, 2)
    scale = torch.diag_embed(1 + v[3:5].T * cfg.scale)  # [M, 2, 2]
    shift = torch.stack([v[5] * cfg.translation * 2 / w, v[6] * cfg.translation * 2 / h], -1)
    inv = torch.linalg.inv(rot @ shear @ scale)  # [M, 2, 2]: output coords -> input coords
    affine = torch.cat([inv, -(inv @ shift[:, :, None])], -1)  # [M, 2, 3]
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


@register("siamese", display="Siamese Net", family="metric", config=SiameseConfig,
          paper="Koch, Zemel, Salakhutdinov. Siamese Neural Networks for One-shot Image "
                "Recognition. ICML Deep Learning Workshop 2015", tasks={"classification"})
class SiameseNet(Algorithm):
    """Siamese Networks: a meta-learned embedding and weighted-L1 verification score."""

    config: SiameseConfig

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        dim = int(backbone.feature_dim)  # type: ignore[arg-type]
        self.alpha = nn.Parameter(torch.randn(dim) * 0.2)  # Sec. 3.2: FC weights N(0, 0.2)
        self.bias = nn.Parameter(0.5 + 0.01 * torch.randn(()))  # Sec. 3.2: biases N(0.5, 0.01)
        self.step = 0  # meta-iteration, set by begin_step: seeds the distortions

    def _scores(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int
                ) -> tuple[Tensor, Tensor]:
        """Pair logits `[M, N*K]` and class logits `[M, N]`; one backbone pass for both sets."""
        z = self.backbone(torch.cat([support_x, query_x]))  # [N*K + M, D]
        pairs = pair_logits(z[support_x.shape[0]:], z[: support_x.shape[0]], self.alpha,
                            self.bias)
        return pairs, class_logits(pairs, support_y, ways)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n = ways or self.ways

        def predict(query_x: Tensor) -> Tensor:
            return self._scores(support_x, support_y, query_x, n)[1]  # never distorted

        return predict

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Balanced verification BCE over all (query, support) pairs (Sec. 3.2)."""
        if self.training and self.config.distort:  # Sec. 3.3, training inputs only
            g = episode_generator("siamese", self.config.distort_seed, self.step, support_x)
            support_x = random_affine(support_x, self.config, g)
            query_x = random_affine(query_x, self.config, g)
        pairs, scores = self._scores(support_x, support_y, query_x, ways)
        loss = balanced_bce(pairs, query_y[:, None] == support_y[None, :])  # [M, N*K] targets
        return loss, {"acc": accuracy(scores.detach(), query_y)}

    def begin_step(self, step: int, total: int) -> None:
        self.step = step  # seeds the distortions

    def can_vmap(self) -> bool:
        """Not while distorting: random draws under vmap would need randomness="different"."""
        return not (self.training and self.config.distort)
