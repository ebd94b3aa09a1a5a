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
# Above one tied position in 8, ranking sums over the run ends instead of
# correcting the untied sums run by run: on 4 x 50,000 scores the corrections
# win at one in 20 tied (6.1 vs 7.2 ms) and lose at one in 3 (11.6 vs 8.8 ms).
TIED_SHARE = 8
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
    """Integers, contiguous in ``scores``' shape, that sort ascending exactly as
    ``scores`` sort descending.

    IEEE floats order like their bit patterns once the magnitude bits of the
    negative ones are flipped (an xor with the sign bit smeared over them); a
    bitwise not then reverses the order. PyTorch's CPU sort is three to four
    times faster on these integers than on the floats, and equal keys are
    exactly equal scores (adding 0.0 first turns -0.0 into 0.0). The add writes
    a fresh contiguous tensor from any layout (a transposed score matrix
    included) in one pass, which is four times faster than ``contiguous()``.
    """
    floats = scores if scores.dtype in _SIGN_FREE else scores.to(torch.float32)
    int_type, magnitude = _SIGN_FREE[floats.dtype]
    bits = torch.add(floats, 0.0, out=torch.empty(floats.shape, dtype=floats.dtype))
    keys = bits.view(int_type)
    keys ^= (keys >> (8 * keys.element_size() - 1)) & magnitude
    return keys.bitwise_not_()


def ranking(scores: Tensor, targets: Tensor) -> Ranking:
    """AP and ROC AUC one-vs-rest per class, equal to scikit-learn's.

    Each class's scores are sorted as integer keys, one contiguous row per
    class. As if no two scores tied, AP times the positives is the sum of the
    precision at each positive, and AUC times positives times negatives counts,
    for each negative, the positives ranked above it (Mann-Whitney): two
    reductions over the sorted rows. Runs of tied scores are usually rare, so
    they are put right afterwards, run by run, over just the tied positions;
    when they are not, the sums run over the run ends instead.
    """
    n, c = scores.shape
    ap = torch.full((c,), float("nan"), dtype=torch.float64)
    auc = torch.full((c,), float("nan"), dtype=torch.float64)
    if n == 0:
        return Ranking(ap, auc)
    keys = descending_keys(scores.T)
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
        p = tps[:, -1]
        ends = torch.ones(k, n, dtype=torch.bool)
        torch.ne(sorted_keys[:, :-1], sorted_keys[:, 1:], out=ends[:, :-1])
        tied = k * n - int(ends.sum())
        if tied * TIED_SHARE > k * n:
            # Mostly ties (quantized or saturated scores): few thresholds, so
            # summing over the run ends is the cheaper way.
            ap_sum, area = _run_end_sums(tps, ends, steps)
        else:
            ap_sum = (tps / steps).mul_(positive).sum(1)
            # Each negative counts the positives above it: all of tps, less the
            # positives' own counts 1 + 2 + ... + p.
            area = tps.sum(1) - p * (p + 1) / 2
            if tied:
                ap_fix, area_fix = _tie_corrections(positive, tps, ends)
                ap_sum += ap_fix
                area += area_fix
        neg = n - p
        ap[start:stop] = torch.where(p > 0, ap_sum / p, float("nan"))
        auc[start:stop] = torch.where((p > 0) & (neg > 0), area / (p * neg), float("nan"))
    return Ranking(ap, auc)


def _run_end_sums(tps: Tensor, ends: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
    """AP times positives and AUC times positives times negatives, per row, summed
    over the thresholds (the ends of runs of tied scores), compacted by one
    ``nonzero``."""
    counts = ends.sum(1)
    flat = ends.view(-1).nonzero().squeeze(1)
    tp = tps.view(-1).take(flat)
    fp = (steps - tps).view(-1).take(flat)
    last = torch.cumsum(counts, 0) - 1
    first = last - counts + 1
    tp_prev = tp.roll(1).index_fill_(0, first, 0.0)
    fp_prev = fp.roll(1).index_fill_(0, first, 0.0)
    # AP: recall steps times precision; AUC: trapezoids under the ROC curve. Per
    # row sums are differences of one running sum at the row ends: the AUC terms
    # are integers (exact in float64), the AP terms at most one each.
    ap_sum = _segment_sums((tp - tp_prev) * tp / (tp + fp), last)
    area = _segment_sums((fp - fp_prev) * (tp + tp_prev), last) / 2
    return ap_sum, area


def _segment_sums(values: Tensor, last: Tensor) -> Tensor:
    """Sums of consecutive segments of ``values`` ending at the positions ``last``
    (``segment_reduce`` is several times slower on CPU)."""
    running = values.cumsum(0).take(last)
    return torch.diff(running, prepend=running.new_zeros(1))


def _tie_corrections(positive: Tensor, tps: Tensor, ends: Tensor) -> tuple[Tensor, Tensor]:
    """What runs of tied scores change in the sums of :func:`ranking` (per row).

    A run of tied scores is one threshold: AP takes the precision at its end
    for every positive in it (where the untied sum took each positive's own),
    and each negative in it counts half of the run's positives (where the
    untied count took those sorted before it).
    """
    k, n = ends.shape
    starts = torch.ones_like(ends)
    starts[:, 1:] = ends[:, :-1]
    flat = (~(starts & ends)).view(-1).nonzero().squeeze(1)  # positions in runs of 2+
    pos = positive.view(-1).take(flat).to(torch.float64)
    tp = tps.view(-1).take(flat)
    row = flat.div(n, rounding_mode="floor")
    rank = (flat - row * n + 1).to(torch.float64)  # 1-based position in the row
    first = starts.view(-1).take(flat)
    run = first.cumsum(0).sub_(1)
    runs = int(run[-1]) + 1
    heads = first.nonzero().squeeze(1)
    size = torch.bincount(run, minlength=runs).to(torch.float64)
    dtp = torch.bincount(run, weights=pos, minlength=runs)
    tp_before = (tp - pos).take(heads)  # positives above the run
    seen = rank.take(heads) - 1 + size  # scores at or above the run
    exact_ap = dtp * (tp_before + dtp) / seen
    exact_area = (size - dtp) * (tp_before + dtp / 2)
    untied_ap = torch.bincount(run, weights=pos * tp / rank, minlength=runs)
    untied_area = torch.bincount(run, weights=(1 - pos) * tp, minlength=runs)
    owner = row.take(heads)
    return (
        torch.bincount(owner, weights=exact_ap - untied_ap, minlength=k),
        torch.bincount(owner, weights=exact_area - untied_area, minlength=k),
    )


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
