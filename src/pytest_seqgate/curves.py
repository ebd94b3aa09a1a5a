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


def _previous(values_at_ends: Tensor) -> Tensor:
    """For nondecreasing cumulative counts masked to group ends (0 elsewhere): the
    value at the previous group end, via a shifted running maximum."""
    shifted = torch.zeros_like(values_at_ends)
    shifted[1:] = values_at_ends[:-1]
    return torch.cummax(shifted, dim=0).values


def ranking(scores: Tensor, targets: Tensor) -> Ranking:
    """AP and ROC AUC one-vs-rest per class, equal to scikit-learn's."""
    n, c = scores.shape
    ap = torch.full((c,), float("nan"), dtype=torch.float64)
    auc = torch.full((c,), float("nan"), dtype=torch.float64)
    for start in range(0, c, COLUMNS_PER_CHUNK):
        cols = torch.arange(start, min(c, start + COLUMNS_PER_CHUNK))
        sorted_scores, order = torch.sort(scores[:, cols], dim=0, descending=True, stable=True)
        positive = (targets[order] == cols).to(torch.float64)
        tps = torch.cumsum(positive, 0)
        fps = torch.arange(1, n + 1, dtype=torch.float64).unsqueeze(1) - tps
        ends = _group_ends(sorted_scores)
        tps_end = torch.where(ends, tps, 0.0)
        fps_end = torch.where(ends, fps, 0.0)
        tps_prev = _previous(tps_end)
        fps_prev = _previous(fps_end)
        p = tps[-1]
        neg = fps[-1]
        precision = tps / (tps + fps)
        ap_chunk = (torch.where(ends, (tps - tps_prev) * precision, 0.0)).sum(0) / p
        area = torch.where(ends, (fps - fps_prev) * (tps + tps_prev) / 2, 0.0).sum(0)
        auc_chunk = area / (p * neg)
        ap[cols] = torch.where(p > 0, ap_chunk, float("nan"))
        auc[cols] = torch.where((p > 0) & (neg > 0), auc_chunk, float("nan"))
    return Ranking(ap, auc)


@dataclass(frozen=True)
class Curve:
    """Precision-recall points at each distinct threshold, highest threshold first."""

    thresholds: Tensor
    precision: Tensor
    recall: Tensor


def pr_curve(scores: Tensor, positive: Tensor) -> Curve:
    """The precision-recall curve of one class's scores (``positive``: bool targets)."""
    sorted_scores, order = torch.sort(scores, descending=True, stable=True)
    tps = torch.cumsum(positive[order].to(torch.float64), 0)
    fps = torch.arange(1, scores.numel() + 1, dtype=torch.float64) - tps
    ends = _group_ends(sorted_scores.unsqueeze(1)).squeeze(1)
    tps, fps = tps[ends], fps[ends]
    return Curve(sorted_scores[ends], tps / (tps + fps), tps / tps[-1].clamp_min(1))


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
