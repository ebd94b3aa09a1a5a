"""Intervals and tests, in torch and math only (scipy is not a dependency).

A gate that compares a point value flips on noise when the class is small;
these give the report the uncertainty that goes with each number.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (via erfinv), exact to float64 precision."""
    return math.sqrt(2.0) * float(torch.special.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64)))


def wilson_interval(successes: Tensor, trials: Tensor, confidence: float = 0.95) -> Tensor:
    """Wilson score interval, ``[..., 2]`` (low, high); NaN where trials == 0."""
    z = normal_quantile(0.5 + confidence / 2)
    k = successes.to(torch.float64)
    n = trials.to(torch.float64)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * torch.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = (centre - half).clamp(0.0, 1.0)
    high = (centre + half).clamp(0.0, 1.0)
    return torch.stack([low, high], dim=-1)


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the exact one-sided p-value of k successes.

    Summed in log space over the upper tail with torch.lgamma, so it is exact
    to float64 for any n a CI evaluation set has.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    i = torch.arange(k, n + 1, dtype=torch.float64)
    nn = torch.tensor(float(n), dtype=torch.float64)
    log_terms = (
        torch.lgamma(nn + 1) - torch.lgamma(i + 1) - torch.lgamma(nn - i + 1)
        + i * math.log(p) + (nn - i) * math.log1p(-p)
    )
    return float(torch.logsumexp(log_terms, 0).exp().clamp(0.0, 1.0))
