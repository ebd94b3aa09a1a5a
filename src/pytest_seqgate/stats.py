"""Intervals and tests, in torch and math only (scipy is not a dependency).

A gate that compares a point value flips on noise when the class is small;
these give the report the uncertainty that goes with each number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pytest_seqgate.metrics import PER_CLASS_METRICS, SUMMARY_METRICS, margin_metrics


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (via erfinv), exact to float64 precision."""
    return math.sqrt(2.0) * float(
        torch.special.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64))
    )


def wilson_interval(successes: Tensor, trials: Tensor, confidence: float = 0.95) -> Tensor:
    """Wilson score interval, ``[..., 2]`` (low, high); NaN where trials == 0."""
    z = normal_quantile(0.5 + confidence / 2)
    k = successes.to(torch.float64)
    n = trials.to(torch.float64)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * torch.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k = 0 (k = n) the bound is 0 (1) exactly; centre - half leaves a
    # rounding residue (8.7e-19 in a JSON report) where the formula cancels.
    low = torch.where((k == 0) & (n > 0), 0.0, (centre - half).clamp(0.0, 1.0))
    high = torch.where((k == n) & (n > 0), 1.0, (centre + half).clamp(0.0, 1.0))
    return torch.stack([low, high], dim=-1)


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the exact one-sided p-value of k successes.

    Summed in log space with torch.lgamma over the part of the upper tail that
    counts: the log-pmf is concave, so terms more than 12 standard deviations
    (plus a margin) from the mode are below e^-60 of the largest and cannot
    move a float64 sum; the window is checked at its edges and widened to the
    whole tail if that ever fails. This keeps the cost at a few hundred terms
    where a 50,000-sample evaluation would otherwise sum tens of thousands.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    mode = math.floor((n + 1) * p)
    reach = math.ceil(12 * math.sqrt(n * p * (1 - p))) + 32
    low, high = max(k, mode - reach), min(n, max(k, mode) + reach)
    log_terms = _binomial_log_pmf(low, high, n, p)
    peak = float(log_terms.max())
    edges_small = (low == k or float(log_terms[0]) < peak - 60) and (
        high == n or float(log_terms[-1]) < peak - 60
    )
    if not edges_small:
        log_terms = _binomial_log_pmf(k, n, n, p)
    return float(torch.logsumexp(log_terms, 0).exp().clamp(0.0, 1.0))


def p_value_text(p: float) -> str:
    """A p-value as a reader takes it in: one that rounds to 1 at three digits reads
    "p > 0.999", since "p = 1" claims a certainty the test never gives."""
    return "p > 0.999" if p >= 0.9995 else f"p = {p:.3g}"


def _binomial_log_pmf(low: int, high: int, n: int, p: float) -> Tensor:
    """log P(X = i) for i in [low, high], X ~ Binomial(n, p)."""
    i = torch.arange(low, high + 1, dtype=torch.float64)
    return (
        math.lgamma(n + 1)
        - torch.lgamma(i + 1)
        - torch.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )


def clopper_pearson_interval(successes: Tensor, trials: Tensor, confidence: float = 0.95) -> Tensor:
    """Exact (Clopper-Pearson) interval ``[..., 2]``, by bisection on the binomial tail.

    Each bound solves P(X >= k | p) = alpha/2 (low) or P(X <= k | p) = alpha/2
    (high); 60 halvings give float64 precision.
    """
    alpha = 1 - confidence
    flat_k = successes.reshape(-1).tolist()
    flat_n = trials.reshape(-1).tolist()
    out = []
    for k, n in zip(flat_k, flat_n):
        k, n = int(k), int(n)
        if n == 0:
            out.append((math.nan, math.nan))
            continue
        low = 0.0 if k == 0 else _bisect(lambda p, k=k, n=n: binomial_sf(k, n, p) - alpha / 2)
        high = (
            1.0
            if k == n
            else _bisect(lambda p, k=k, n=n: alpha / 2 - (1 - binomial_sf(k + 1, n, p)))
        )
        out.append((low, high))
    return torch.tensor(out, dtype=torch.float64).reshape(*successes.shape, 2)


def _bisect(f: object) -> float:
    """Root of an increasing function on [0, 1]."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < 0:  # type: ignore[operator]
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Margins:
    """Per bootstrap resample and class (``[B, C]`` each): the diagonal, row sums and
    column sums of the resampled confusion matrix, which is all that a
    count-based metric reads of it. Keeping these instead of the ``[B, C, C]``
    matrices is the difference between 24 MB and 8 GB at 1,000 classes."""

    tp: Tensor
    true: Tensor
    pred: Tensor


def bootstrap_margins(cm: Tensor, resamples: int, seed: int) -> Margins:
    """:class:`Margins` of ``resamples`` bootstrap resamples of the samples.

    Resampling N samples with replacement and counting them by (true, predicted)
    cell gives cell counts distributed Multinomial(N, cm / N): every statistic
    that depends on the samples only through their cell (all count-based
    metrics) has exactly the per-sample bootstrap distribution. The counts are
    drawn directly, one conditional binomial per non-empty cell, and each is
    added to its row's and column's sums (and the diagonal): O(resamples x
    cells) time and O(resamples x C) memory, instead of O(resamples x N) and
    O(resamples x C^2).
    """
    c = cm.shape[0]
    flat = cm.reshape(-1).to(torch.float64)
    n = float(flat.sum())
    # Class-major: a cell's draw adds to one contiguous row of each.
    tp, true, pred = (torch.zeros(c, resamples, dtype=torch.float64) for _ in range(3))
    cells = torch.nonzero(flat).reshape(-1).tolist()

    def add(cell: int, draw: Tensor) -> None:
        row, column = divmod(cell, c)
        true[row] += draw
        pred[column] += draw
        if row == column:
            tp[row] += draw

    if cells:
        gen = torch.Generator().manual_seed(seed)
        remaining = torch.full((resamples,), n, dtype=torch.float64)
        rest = n
        for cell in cells[:-1]:
            share = float(flat[cell]) / rest
            draw = torch.binomial(
                remaining, torch.full_like(remaining, min(share, 1.0)), generator=gen
            )
            add(cell, draw)
            remaining -= draw
            rest -= float(flat[cell])
        add(cells[-1], remaining)
    return Margins(tp.T, true.T, pred.T)


BOOTSTRAP_SUMMARY = ("balanced_accuracy", "macro_f1", "weighted_f1", "mcc", "kappa")


def batched_metrics(margins: Margins) -> dict[str, Tensor]:
    """The bootstrap's statistics of resampled confusion matrices, as
    :func:`pytest_seqgate.metrics.compute_metrics` derives them: ``f1`` is
    ``[B, C]``, the rest ``[B]``."""
    per_class, values = margin_metrics(margins.tp, margins.true, margins.pred)
    out = {"f1": per_class[:, PER_CLASS_METRICS.index("f1")]}
    for name in BOOTSTRAP_SUMMARY:
        out[name] = values[:, SUMMARY_METRICS.index(name)]
    return out


def percentile_interval(samples: Tensor, confidence: float) -> Tensor:
    """``[..., 2]`` percentile interval over the first dimension, skipping NaN."""
    alpha = 1 - confidence
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=samples.dtype)
    return torch.nanquantile(samples, q, dim=0).movedim(0, -1)


def support_needed(rate: float, threshold: float, confidence: float) -> int | None:
    """Smallest n whose Wilson lower bound at the observed ``rate`` clears ``threshold``
    (None when the rate itself does not): how many samples would support the claim."""
    if rate <= threshold:
        return None
    lo, hi = 1, 1
    while (
        float(wilson_interval(torch.tensor(rate * hi), torch.tensor(hi), confidence)[0]) < threshold
    ):
        hi *= 2
        if hi > 10**9:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if (
            float(wilson_interval(torch.tensor(rate * mid), torch.tensor(mid), confidence)[0])
            >= threshold
        ):
            hi = mid
        else:
            lo = mid + 1
    return lo
