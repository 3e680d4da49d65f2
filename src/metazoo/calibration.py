"""How far to trust a prediction: NLL, Brier score, expected calibration error, interval coverage.

A classifier's output `[..., M, N]` is read as logits of its predictive distribution,
`p = softmax(out)`; a Bayesian method returns `log` of its Monte-Carlo averaged probabilities,
whose softmax is that average, so every method in the registry is scored the same way.

* Negative log-likelihood: `-1/M sum_m log p_m[y_m]`.
* Brier score (Brier 1950, the multi-class form): `1/M sum_m sum_k (p_mk - [y_m = k])^2`.
* Expected calibration error (Naeini et al. 2015; Guo et al., ICML 2017, Eq. 3): predictions
  pooled over all test episodes, split by confidence `max_k p_mk` into 15 equal-width bins
  `B_b = ((b-1)/15, b/15]`; `ECE = sum_b |B_b|/n |acc(B_b) - conf(B_b)|`. The same bins draw the
  reliability diagram.
* Regression with a Gaussian predictive `N(mean, cov)`: its NLL per target point, and the
  fraction of points inside the central 95% interval.

>>> import torch
>>> logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
>>> round(float(nll(logits, torch.tensor([0, 0]))), 4)  # (-log 0.5 - log 0.9) / 2
0.3993
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BINS = 15
"""Confidence bins of the ECE and the reliability diagram (the calibration literature's 15)."""


def nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood of `labels` `[..., M]` under `softmax(logits)` `[..., M, N]`."""
    logp = F.log_softmax(logits.double(), dim=-1)
    return -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(dim=-1)


def brier(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over the `M` rows of `sum_k (p_k - onehot_k)^2`, `p = softmax(logits)`."""
    p = F.softmax(logits.double(), dim=-1)
    onehot = F.one_hot(labels, p.shape[-1]).to(p.dtype)
    return ((p - onehot) ** 2).sum(dim=-1).mean(dim=-1)


@dataclass
class Reliability:
    """Predictions pooled by confidence bin: counts, summed confidence, summed correctness.

    `add` batches of logits and labels; `ece()` and `to_json()` read the pooled bins.
    """

    bins: int = BINS
    count: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"a reliability diagram needs at least one bin, got {self.bins}")
        n = self.bins
        self.count = self.count or [0] * n
        self.confidence = self.confidence or [0.0] * n
        self.correct = self.correct or [0.0] * n

    def add(self, logits: Tensor, labels: Tensor) -> None:
        """Pool the rows of `logits` `[..., N]` with their `labels` `[...]`."""
        p = F.softmax(logits.detach().double().reshape(-1, logits.shape[-1]), dim=-1)
        conf, guess = p.max(dim=-1)
        hit = (guess == labels.reshape(-1).to(guess.device)).double()
        # bin b holds conf in ((b-1)/n, b/n]: ceil(conf * n) - 1, confidences of 0 into bin 0
        index = (torch.ceil(conf * self.bins).long() - 1).clamp(0, self.bins - 1)
        sums = [torch.zeros(self.bins, dtype=torch.float64).index_add_(0, index.cpu(), v.cpu())
                .tolist() for v in (torch.ones_like(conf), conf, hit)]
        self.count = [a + int(b) for a, b in zip(self.count, sums[0], strict=True)]
        self.confidence = [a + b for a, b in zip(self.confidence, sums[1], strict=True)]
        self.correct = [a + b for a, b in zip(self.correct, sums[2], strict=True)]

    def ece(self) -> float:
        """Expected calibration error of everything added (0 for a perfectly calibrated model)."""
        n = sum(self.count)
        if n == 0:
            raise ValueError("no predictions were added to the reliability bins")
        pairs = zip(self.correct, self.confidence, strict=True)
        return sum(abs(hit - conf) for hit, conf in pairs) / n

    def to_json(self) -> dict[str, Any]:
        """Per bin: its upper edge, count, mean confidence and accuracy (None when empty)."""
        mean = [[s / c if c else None for s, c in zip(sums, self.count, strict=True)]
                for sums in (self.confidence, self.correct)]
        return {"bins": self.bins, "upper_edge": [(b + 1) / self.bins for b in range(self.bins)],
                "count": list(self.count), "confidence": mean[0], "accuracy": mean[1]}


def gaussian_nll(mean: Tensor, cov: Tensor, targets: Tensor) -> Tensor:
    """Mean over the `M` points of `-log N(y_m; mean_m, cov_m)`: `mean`, `targets` `[..., M, d]`,
    `cov` `[..., M, d, d]`."""
    dist = torch.distributions.MultivariateNormal(mean.double(), covariance_matrix=cov.double())
    return -dist.log_prob(targets.double()).mean(dim=-1)


def inside_interval(low: Tensor, high: Tensor, values: Tensor) -> Tensor:
    """Fraction of `values` `[..., M, d]` with `low <= value <= high`, per task (`[...]`)."""
    return ((values >= low) & (values <= high)).double().mean(dim=(-2, -1))


def gaussian_interval(mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """The central 95% interval of each output, `mean ± 1.96 sd` (`sd` from `cov`'s diagonal)."""
    half = 1.96 * cov.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
    return mean - half, mean + half


def sample_interval(samples: Tensor) -> tuple[Tensor, Tensor]:
    """The central 95% interval of sampled functions `[S, ..., M, d]`: the 2.5% and 97.5%
    quantiles over the samples."""
    q = torch.tensor([0.025, 0.975], dtype=samples.dtype, device=samples.device)
    low, high = torch.quantile(samples, q, dim=0)
    return low, high


__all__ = ["BINS", "Reliability", "brier", "gaussian_interval", "gaussian_nll",
           "inside_interval", "nll", "sample_interval"]
