"""LEO: Latent Embedding Optimization, gradient steps in a latent space of classifier weights.

Rusu, Rao, Sygnowski, Vinyals, Pascanu, Osindero, Hadsell. "Meta-Learning with Latent Embedding
Optimization". ICLR 2019. arXiv:1807.05960. Reference code: github.com/deepmind/leo (model.py).

Sec. 3, Algorithm 1. Features x (L2-normalised, as the code's data pipeline) are encoded,
e = g_phi_e(dropout(x)); the relation net g_phi_r on every support pair (e_i, e_j), averaged over
pairs and over a class's K shots, gives (mu_n, u_n); z_n ~ N(mu_n, sigma_n^2) with
sigma = max(exp(u) - 1, 1e-10), one draw per (class, shot) copy as the code tiles them. The decoder
gives w_n ~ N(mu^d_n, sigma^d_n^2), sigma^d = max(exp(u) - 1 + sqrt(2 / (N + D)), 1e-10); logits
are x . w_n averaged over a class's copies. Adaptation: `inner_steps` latent steps
z <- z - alpha * grad_z L_tr(decode(z)) (L_tr summed over the support, fresh draws per step),
then `finetune_steps` steps w <- w - eta * grad_w L_tr on the decoded weights; alpha (per latent
dimension) and eta (per feature) are meta-learned from 1.0 and 0.001. Outer objective: query
cross-entropy + beta KL(q(z | D_tr) || N(0, I)) + gamma ||stopgrad(z') - z||^2 + lambda_1/2 sum of
squared encoder, relation and decoder weights + lambda_2 mean((C_d - I)^2), C_d the correlation
of the decoder's rows (one per latent dimension). As the code: a single-sample KL estimate
(`kl: analytic`: closed form), element means, second-order meta-gradients; in evaluation the
means, no dropout. Draws come from a generator of (sample_seed, meta-iteration, episode).
Backbone: frozen by default (the paper's pre-computed WRN-28-10 features): its parameters become
buffers (`metazoo.freezing`), it always runs in eval mode, features detached; `train_backbone`
trains it through the whole objective. Deviations: any registered backbone, with per-episode
batch statistics; u capped at 10 (`stochastic.U_MAX`) where the code falls back to a weight-decay
step on NaN; the trainer clips the global gradient norm (code: per tensor, by value then norm).
Presets: leo-miniimagenet-5w1s, leo-miniimagenet-5w5s, leo-omniglot-5w1s, leo-glyphs-5w1s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metazoo import stochastic
from metazoo.adaptation import detached_unless_grad, first_order_now, loss_and_metrics
from metazoo.algorithms.base import Algorithm, AlgorithmConfig
from metazoo.algorithms.registry import register
from metazoo.errors import ConfigError, ShapeError
from metazoo.freezing import freeze
from metazoo.inner_loop import grads
from metazoo.seeding import episode_generator
from metazoo.types import Params, Predictor

Generator = torch.Generator | None


@dataclass(frozen=True)
class LEOConfig(AlgorithmConfig):
    latent_dim: int = 64  # |z_n|: num_latents = 64 (reference config.py)
    inner_lr: float = 1.0  # alpha's start, one per latent dimension: inner_lr_init = 1.0
    inner_steps: int = 5  # latent steps: inner_unroll_length = 5
    finetune_lr: float = 0.001  # eta's start, one per feature: finetuning_lr_init = 0.001
    finetune_steps: int = 5  # steps on the decoded w: finetuning_unroll_length = 5
    learn_lrs: bool = True  # alpha and eta are meta-learned (code: trainable variables)
    dropout: float = 0.5  # on the features, training only: dropout_rate (config.py 0.5)
    kl_weight: float = 0.001  # beta: kl_weight (config.py 1e-3)
    encoder_penalty_weight: float = 1e-9  # gamma: encoder_penalty_weight (config.py 1e-9)
    l2_penalty_weight: float = 1e-8  # lambda_1: l2_penalty_weight (config.py 1e-8)
    orthogonality_penalty_weight: float = 0.001  # lambda_2 (config.py 1e-3)
    kl: Literal["sample", "analytic"] = "sample"  # single-sample estimate (code) or closed form
    normalize_features: bool = True  # L2-normalise features (code: data.py l2_normalize)
    train_backbone: bool = False  # False: frozen, pre-computed features as the paper
    sample_seed: int = 0  # with the meta-iteration and the episode, fixes every training draw

    def validate(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"leo latent_dim must be >= 1, got {self.latent_dim}")
        if self.inner_steps < 1 or self.finetune_steps < 0:
            raise ConfigError(f"leo inner_steps must be >= 1 and finetune_steps >= 0, got "
                              f"{self.inner_steps} and {self.finetune_steps}")
        if not (self.inner_lr > 0 and self.finetune_lr >= 0):
            raise ConfigError(f"leo inner_lr must be > 0 and finetune_lr >= 0, got "
                              f"{self.inner_lr} and {self.finetune_lr}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"leo dropout must be in [0, 1), got {self.dropout}")
        weights = (self.kl_weight, self.encoder_penalty_weight, self.l2_penalty_weight,
                   self.orthogonality_penalty_weight)
        if min(weights) < 0:
            raise ConfigError(f"leo kl_weight, encoder_penalty_weight, l2_penalty_weight and "
                              f"orthogonality_penalty_weight must be >= 0, got {list(weights)}")


def orthogonality_penalty(w: Tensor) -> Tensor:
    """mean((C - I)^2), C the cosine correlation between the rows of `w` `[R, C]` (code)."""
    norms = w.norm(dim=1, keepdim=True) + 1e-32
    corr = (w @ w.T) / (norms @ norms.T)  # [R, R]
    return (corr - torch.eye(w.shape[0], dtype=w.dtype, device=w.device)).square().mean()


def class_logits(x: Tensor, w: Tensor) -> Tensor:
    """x . w_{n,k} averaged over a class's copies k: `[M, D]`, `[N, K, D]` -> `[M, N]`."""
    return torch.einsum("md,nkd->mnk", x, w).mean(-1)


@register("leo", display="LEO", family="hybrid", config=LEOConfig,
          paper="Rusu, Rao, Sygnowski, Vinyals, Pascanu, Osindero, Hadsell. Meta-Learning with "
                "Latent Embedding Optimization. ICLR 2019", tasks={"classification"})
class LEO(Algorithm):
    """LEO: encode the support into per-class latent codes, adapt them, decode classifiers."""

    config: LEOConfig
    adapts_with_gradients = True
    inner_lr: Tensor  # alpha `[latent]`, a parameter when learned (else a buffer)
    finetune_lr: Tensor  # eta `[D]`

    def __init__(self, backbone: nn.Module, config: AlgorithmConfig, *, ways: int) -> None:
        super().__init__(backbone, config, ways=ways)
        cfg, d = self.config, int(backbone.feature_dim)  # type: ignore[arg-type]
        if not cfg.train_backbone:
            freeze(self.backbone).eval()
        self.feature_dim, latent = d, cfg.latent_dim
        self.encoder = nn.Linear(d, latent, bias=False)  # g_phi_e
        self.relation = nn.Sequential(  # g_phi_r: 3 layers of 2 * latent, ReLU between (code)
            nn.Linear(2 * latent, 2 * latent, bias=False), nn.ReLU(),
            nn.Linear(2 * latent, 2 * latent, bias=False), nn.ReLU(),
            nn.Linear(2 * latent, 2 * latent, bias=False))
        self.decoder = nn.Linear(latent, 2 * d, bias=False)  # g_phi_d
        for m in self.weight_layers():
            nn.init.xavier_uniform_(m.weight)  # glorot_uniform (code)
        lrs = {"inner_lr": torch.full((latent,), cfg.inner_lr),
               "finetune_lr": torch.full((d,), cfg.finetune_lr)}
        for name, value in lrs.items():
            if cfg.learn_lrs:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.step = 0  # meta-iteration, set by begin_step: seeds the training draws

    def weight_layers(self) -> list[nn.Linear]:
        """The layers lambda_1 regularises: encoder, relation network, decoder."""
        return [self.encoder, *(m for m in self.relation if isinstance(m, nn.Linear)),
                self.decoder]

    def train(self, mode: bool = True) -> LEO:
        super().train(mode)
        if not self.config.train_backbone:  # pre-computed features: the backbone only infers
            self.backbone.eval()
        return self

    def begin_step(self, step: int, total: int) -> None:
        self.step = step

    def can_vmap(self) -> bool:
        """Not in training: the draws come from a per-episode generator (its bytes seed it)."""
        return not self.training

    def generator(self, support_x: Tensor) -> Generator:
        """The task's source of draws in training; None in evaluation (means, no dropout)."""
        if not self.training:
            return None
        return episode_generator("leo", self.config.sample_seed, self.step, support_x)

    def features(self, x: Tensor) -> Tensor:
        """Backbone features `[M, D]`, detached when frozen, L2-normalised (code)."""
        f = self.backbone(x)
        f = f if self.config.train_backbone else f.detach()
        return F.normalize(f, dim=-1) if self.config.normalize_features else f

    def latent_params(self, feats: Tensor, support_y: Tensor, ways: int) -> Tensor:
        """Encoder, relation net on all pairs, class means: `[S, D]` -> `[N, 2 * latent]`."""
        codes = self.encoder(feats)  # [S, L]
        s = codes.shape[0]
        pairs = torch.cat([codes[:, None].expand(s, s, -1), codes[None].expand(s, s, -1)], -1)
        relations = self.relation(pairs).mean(1)  # [S, S, 2L] -> [S, 2L]
        member = (support_y[None, :] == torch.arange(ways, device=support_y.device)[:, None])
        member = member.to(relations.dtype)  # [N, S]
        return (member @ relations) / member.sum(1, keepdim=True)

    def decode(self, z: Tensor, eps: Tensor | None) -> Tensor:
        """Classifier weights `[N, K, D]` of codes `z` `[N, K, L]`: the draw of N(0, 1) noise
        `eps` `[N, K, D]`, or the mean when it is None; offset sqrt(2 / (N + D)) (code)."""
        mean, scale = stochastic.gaussian(
            self.decoder(z), math.sqrt(2.0 / (z.shape[0] + self.feature_dim)))
        return stochastic.sample(mean, scale, eps)

    def weight_noise(self, z: Tensor, g: Generator) -> Tensor | None:
        """N(0, 1) draws for one decoding of codes `z` `[N, K, L]` (None in evaluation)."""
        return stochastic.standard_normal((*z.shape[:2], self.feature_dim), z, g)

    def adapted_weights(self, support_x: Tensor, support_y: Tensor, ways: int, g: Generator
                        ) -> tuple[Tensor, Tensor, Tensor]:
        """Algorithm 1 on one task: adapted weights `[N, K, D]`, the KL and the encoder penalty."""
        cfg, s = self.config, support_x.shape[0]
        if s % ways:
            raise ShapeError(f"leo needs the same number of shots per class: {s} support "
                             f"examples are not a multiple of {ways} ways")
        feats = self.features(support_x)  # [S, D]
        params = self.latent_params(stochastic.dropout(feats, cfg.dropout, g), support_y, ways)
        mean, scale = stochastic.gaussian(params[:, None].expand(ways, s // ways, -1))
        eps = stochastic.standard_normal(mean.shape, mean, g)  # [N, K, L]
        z = start = stochastic.sample(mean, scale, eps)
        kl = stochastic.kl_to_standard_normal(mean, scale, eps, estimate=cfg.kl == "sample")
        first_order = first_order_now(self, False)

        def support_loss(x: Tensor, eps: Tensor | None = None) -> Callable[[Params], Tensor]:
            """L_tr summed over the support, of codes p["z"] decoded with draws
            `eps`, or of weights p["w"]."""
            def loss(p: Params) -> Tensor:
                w = self.decode(p["z"], eps) if "z" in p else p["w"]
                return F.cross_entropy(class_logits(x, w), support_y, reduction="sum")
            return loss

        for _ in range(cfg.inner_steps):  # a fresh dropout and weight draw per step (code)
            x, w_eps = stochastic.dropout(feats, cfg.dropout, g), self.weight_noise(z, g)
            grad = grads(support_loss(x, w_eps), {"z": z}, first_order)["z"]
            z = z - self.inner_lr * grad  # z' = z - alpha * grad_z L_tr
        w = self.decode(z, self.weight_noise(z, g))
        for _ in range(cfg.finetune_steps):  # fine-tuning w in parameter space
            x = stochastic.dropout(feats, cfg.dropout, g)
            w = w - self.finetune_lr * grads(support_loss(x), {"w": w}, first_order)["w"]
        penalty = (z.detach() - start).square().mean() if g is not None else kl.new_zeros(())
        return w, kl, penalty

    def regulariser(self) -> Tensor:
        """lambda_1/2 sum ||W||^2 (tf l2_regularizer) + lambda_2 orthogonality of the decoder."""
        cfg = self.config
        l2 = sum(m.weight.square().sum() for m in self.weight_layers()) / 2
        return (cfg.l2_penalty_weight * l2
                + cfg.orthogonality_penalty_weight * orthogonality_penalty(self.decoder.weight.T))

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int | None = None
              ) -> Predictor:
        n, g = self.check_ways(ways or self.ways), self.generator(support_x)
        w = detached_unless_grad({"w": self.adapted_weights(support_x, support_y, n, g)[0]})["w"]
        return lambda query_x: class_logits(
            stochastic.dropout(self.features(query_x), self.config.dropout, g), w)

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Query cross-entropy + beta KL + gamma encoder penalty + regulariser."""
        cfg, g = self.config, self.generator(support_x)
        w, kl, penalty = self.adapted_weights(support_x, support_y, ways, g)
        out = class_logits(stochastic.dropout(self.features(query_x), cfg.dropout, g), w)
        loss, metrics = loss_and_metrics(out, query_y)
        total = (loss + cfg.kl_weight * kl + cfg.encoder_penalty_weight * penalty
                 + self.regulariser())
        return total, metrics
