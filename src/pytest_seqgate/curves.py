"""Threshold-free metrics from the model's scores: AP, ROC AUC, curves, ECE.

One descending sort per class gives everything: cumulative true and false
positives at the end of each group of tied scores are the points of both the
precision-recall and the ROC curve, which is how scikit-learn treats ties
too. Classes are processed a few columns at a time to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

COLUMNS_PER_CHUNK = 8
ECE_BINS = 15


@dataclass(frozen=True)
class Ranking:
    """Per-class AP and ROC AUC (float64 ``[C]``, NaN where a class has no positives
    or no negatives), and their macro averages over defined classes."""

    average_precision: Tensor
    roc_auc: Tensor

    @property
    def macro_average_precision(self) -> float:
        return float(self.average_precision.nanmean())

    @property
    def macro_roc_auc(self) -> float:
        return float(self.roc_auc.nanmean())


def _group_ends(sorted_scores: Tensor) -> Tensor:
    """True at the last position of each run of equal scores (per column)."""
    ends = torch.ones_like(sorted_scores, dtype=torch.bool)
    ends[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    return ends


_SIGN_FREE = {torch.float32: (torch.int32, 0x7FFFFFFF), torch.float64: (torch.int64, (1 << 63) - 1)}


def descending_keys(scores: Tensor) -> Tensor:
    """Integers that sort ascending exactly as ``scores`` sort descending.

    IEEE floats order like their bit patterns once the magnitude bits of the
    negative ones are flipped; a bitwise not then reverses the order. PyTorch's
    CPU sort is two to three times faster on these integers than on the floats,
    and equal keys are exactly equal scores (-0.0 is first turned into 0.0).
    """
    floats = scores if scores.dtype in _SIGN_FREE else scores.to(torch.float32)
    int_type, magnitude = _SIGN_FREE[floats.dtype]
    bits = (floats + 0.0).view(int_type)
    return torch.where(bits >= 0, bits, bits ^ magnitude).bitwise_not_()


def _segment_sums(values: Tensor, last: Tensor) -> Tensor:
    """Sums of consecutive segments of ``values`` ending at the positions ``last``
    (``segment_reduce`` is several times slower on CPU)."""
    running = values.cumsum(0).take(last)
    return torch.diff(running, prepend=running.new_zeros(1))


def ranking(scores: Tensor, targets: Tensor) -> Ranking:
    """AP and ROC AUC one-vs-rest per class, equal to scikit-learn's.

    Each class's scores are sorted as integer keys, one contiguous row per
    class; the curve points are the ends of runs of tied scores, compacted
    with one ``nonzero``; per-class sums are differences of one running sum.
    """
    n, c = scores.shape
    ap = torch.full((c,), float("nan"), dtype=torch.float64)
    auc = torch.full((c,), float("nan"), dtype=torch.float64)
    if n == 0:
        return Ranking(ap, auc)
    keys = descending_keys(scores.T.contiguous())
    steps = torch.arange(1, n + 1, dtype=torch.float64)
    for start in range(0, c, COLUMNS_PER_CHUNK):
        stop = min(c, start + COLUMNS_PER_CHUNK)
        k = stop - start
        # One 1-D stable sort per class (the fast path of PyTorch's CPU sort),
        # written straight into the rows of the chunk.
        sorted_keys = torch.empty(k, n, dtype=keys.dtype)
        order = torch.empty(k, n, dtype=torch.int64)
        for j in range(k):
            torch.sort(keys[start + j], stable=True, out=(sorted_keys[j], order[j]))
        positive = targets.take(order) == torch.arange(start, stop).unsqueeze(1)
        tps = positive.cumsum(1, dtype=torch.float64)
        ends = torch.ones(k, n, dtype=torch.bool)
        torch.ne(sorted_keys[:, :-1], sorted_keys[:, 1:], out=ends[:, :-1])
        # The thresholds, class by class: flat positions of the run ends, and
        # cumulative true/false positives there and at the threshold before
        # (0 before each class's first threshold).
        counts = ends.sum(1)
        flat = ends.view(-1).nonzero().squeeze(1)
        tp = tps.view(-1).take(flat)
        fp = (steps - tps).view(-1).take(flat)
        last = torch.cumsum(counts, 0) - 1
        first = last - counts + 1
        tp_prev = tp.roll(1).index_fill_(0, first, 0.0)
        fp_prev = fp.roll(1).index_fill_(0, first, 0.0)
        # AP: recall steps times precision; AUC: trapezoids under the ROC curve.
        # Per-class sums are differences of one running sum at the class ends:
        # the AUC terms are integers (exact in float64), the AP terms at most
        # one each, so the subtraction loses nothing that matters.
        ap_sum = _segment_sums((tp - tp_prev) * tp / (tp + fp), last)
        area = _segment_sums((fp - fp_prev) * (tp + tp_prev), last) / 2
        p = tps[:, -1]
        neg = n - p
        ap[start:stop] = torch.where(p > 0, ap_sum / p, float("nan"))
        auc[start:stop] = torch.where((p > 0) & (neg > 0), area / (p * neg), float("nan"))
    return Ranking(ap, auc)


@dataclass(frozen=True)
class Curve:
    """Precision-recall points at each distinct threshold, highest threshold first."""

    thresholds: Tensor
    precision: Tensor
    recall: Tensor


def pr_curve(scores: Tensor, positive: Tensor) -> Curve:
    """The precision-recall curve of one class's scores (``positive``: bool targets)."""
    sorted_keys, order = torch.sort(descending_keys(scores), stable=True)
    tps = torch.cumsum(positive.take(order).to(torch.float64), 0)
    fps = torch.arange(1, scores.numel() + 1, dtype=torch.float64) - tps
    ends = _group_ends(sorted_keys.unsqueeze(1)).squeeze(1)
    tps, fps = tps[ends], fps[ends]
    thresholds = scores.take(order[ends])
    return Curve(thresholds, tps / (tps + fps), tps / tps[-1].clamp_min(1))


def best_recall_at_precision(curve: Curve, min_precision: float) -> tuple[float, float | None]:
    """The highest recall of any threshold whose precision is at least ``min_precision``,
    and that threshold (None when no threshold reaches the precision)."""
    ok = curve.precision >= min_precision
    if not bool(ok.any()):
        return 0.0, None
    recall = torch.where(ok, curve.recall, -1.0)
    best = int(torch.argmax(recall))
    return float(curve.recall[best]), float(curve.thresholds[best])


def best_precision_at_recall(curve: Curve, min_recall: float) -> tuple[float, float | None]:
    ok = curve.recall >= min_recall
    if not bool(ok.any()):
        return 0.0, None
    precision = torch.where(ok, curve.precision, -1.0)
    best = int(torch.argmax(precision))
    return float(curve.precision[best]), float(curve.thresholds[best])


def expected_calibration_error(scores: Tensor, targets: Tensor, bins: int = ECE_BINS) -> float:
    """Top-label ECE over ``bins`` equal-width confidence bins (0, 1/b], ..., (1 - 1/b, 1]:
    the sample-weighted mean of |accuracy - mean confidence| per bin."""
    confidence, predicted = scores.max(1)
    correct = (predicted == targets).to(torch.float64)
    conf = confidence.to(torch.float64)
    index = (conf * bins).ceil().clamp(1, bins).to(torch.int64) - 1
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    conf_sum = torch.bincount(index, weights=conf, minlength=bins)
    n = scores.shape[0]
    return float((acc_sum - conf_sum).abs().sum() / n) if n else float("nan")
