"""Confusion matrix -> every count-based metric, in a few tensor ops.

The confusion matrix is the sufficient statistic: it comes from one
``torch.bincount`` pass over the predictions, and everything else is derived
from the C x C counts. Shards of an evaluation therefore merge by adding
matrices, and the cost beyond the bincount does not grow with the data.

Semantics follow scikit-learn with ``zero_division=np.nan``: a ratio whose
denominator is zero is NaN ("undefined"), averages skip NaN, and plain float
division already produces exactly those NaNs (0/0), so there are no masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SUMMARY_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_f1",
    "micro_f1",
    "mcc",
    "kappa",
    "no_information_rate",
)
PER_CLASS_METRICS = ("precision", "recall", "f1")


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """Rows are true classes, columns predicted; one bincount, int64.

    Out-of-range labels are detected from the bincount's length (it grows to
    fit the largest key), so validation costs no extra pass over the data.
    """
    flat = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    if flat.numel() != num_classes * num_classes:
        raise ValueError(
            f"labels or predictions outside [0, {num_classes}): the confusion matrix "
            f"would need {flat.numel()} cells"
        )
    return flat.reshape(num_classes, num_classes)


@dataclass(frozen=True)
class Metrics:
    """Every count-based metric of one confusion matrix.

    Per-class values are float64 tensors ``[C]`` (NaN = undefined); summary
    values are 0-d float64 tensors, in :data:`SUMMARY_METRICS`.
    """

    confusion_matrix: Tensor
    precision: Tensor
    recall: Tensor
    f1: Tensor
    support: Tensor
    summary: dict[str, Tensor]

    @property
    def num_classes(self) -> int:
        return int(self.confusion_matrix.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.support.sum())

    def value(self, metric: str, class_index: int | None = None) -> float:
        """One number as a Python float; per-class metrics need ``class_index``."""
        if class_index is None:
            return float(self.summary[metric])
        if metric == "support":
            return float(self.support[class_index])
        tensor: Tensor = getattr(self, metric)
        return float(tensor[class_index])


def _nanmean(values: Tensor) -> Tensor:
    return values.nanmean()


def _nan_weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """scikit-learn's ``_nanaverage``: drop NaN values, fall back to a plain mean
    when the remaining weights sum to zero."""
    keep = ~values.isnan()
    w = torch.where(keep, weights, torch.zeros_like(weights))
    total = w.sum()
    weighted = (torch.where(keep, values, torch.zeros_like(values)) * w).sum() / total
    return torch.where(total > 0, weighted, values.nanmean())


def compute_metrics(cm: Tensor) -> Metrics:
    """Derive all metrics from a confusion matrix (any integer dtype)."""
    c = cm.to(torch.float64)
    tp = c.diagonal()
    true = c.sum(1)
    pred = c.sum(0)
    n = true.sum()
    correct = tp.sum()
    precision = tp / pred
    recall = tp / true
    f1 = 2 * tp / (true + pred)  # 2TP / (2TP + FP + FN)
    accuracy = correct / n
    # MCC, multiclass (Gorodkin): zero when either marginal is degenerate, as sklearn.
    cov_tp = correct * n - (true * pred).sum()
    cov_pp = n * n - (pred * pred).sum()
    cov_tt = n * n - (true * true).sum()
    denom = cov_tt * cov_pp
    mcc = torch.where(denom > 0, cov_tp / denom.clamp_min(1e-300).sqrt(), torch.zeros_like(denom))
    expected = (true * pred).sum() / (n * n)
    kappa = (accuracy - expected) / (1 - expected)
    summary = {
        "accuracy": accuracy,
        "balanced_accuracy": _nanmean(recall),
        "macro_precision": _nanmean(precision),
        "macro_recall": _nanmean(recall),
        "macro_f1": _nanmean(f1),
        "weighted_f1": _nan_weighted_mean(f1, true),
        "micro_f1": accuracy,
        "mcc": mcc,
        "kappa": kappa,
        "no_information_rate": true.max() / n,
    }
    return Metrics(cm, precision, recall, f1, cm.sum(1), summary)


def metrics_from_predictions(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Metrics:
    return compute_metrics(confusion_matrix(y_true, y_pred, num_classes))
