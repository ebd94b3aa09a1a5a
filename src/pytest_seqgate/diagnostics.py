"""Findings: what makes a model look better than it is.

Each detector takes numbers that already exist (a confusion matrix, content
hashes) and returns :class:`Finding` objects with a message a person
understands at once and the figures behind it, so the terminal, the JSON
report and the gates all tell the same story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pytest_seqgate.data import SequenceData
from pytest_seqgate.metrics import Metrics
from pytest_seqgate.stats import binomial_sf

PARADOX_ALPHA = 0.05
PARADOX_MIN_ACCURACY = 0.8
PARADOX_BALANCE_GAP = 0.1
GAP_WARNING = 0.1


@dataclass
class Finding:
    """One diagnosis. ``data`` holds the numbers behind the message, for JSON readers."""

    kind: str
    severity: str  # "error" | "warning"
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "message": self.message,
                **self.data}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def accuracy_paradox(metrics: Metrics, labels: tuple[str, ...],
                     recall_floor: float = 0.5) -> list[Finding]:
    """Flag accuracy that hides a failed class.

    (a) accuracy is not significantly above the no-information rate (exact
    one-sided binomial test at 0.05, as R caret's confusionMatrix), or (b) a
    class with support has recall below ``recall_floor`` while accuracy is at
    least 0.8, or balanced accuracy is 0.1 or more below accuracy.
    """
    n = metrics.n_samples
    if n == 0:
        return []
    support = metrics.support
    accuracy = metrics.value("accuracy")
    balanced = metrics.value("balanced_accuracy")
    nir = metrics.value("no_information_rate")
    majority = int(torch.argmax(support))
    correct = int(metrics.confusion_matrix.diagonal().sum())
    p_value = binomial_sf(correct, n, nir)
    recall = metrics.recall
    has_support = support > 0
    masked = torch.where(has_support, recall, torch.full_like(recall, float("inf")))
    worst = int(torch.argmin(masked))
    worst_recall = float(recall[worst])
    below_floor = bool(has_support[worst]) and worst_recall < recall_floor
    reason_a = p_value >= PARADOX_ALPHA and int(has_support.sum()) > 1
    reason_b = (below_floor and accuracy >= PARADOX_MIN_ACCURACY) or (
        accuracy - balanced >= PARADOX_BALANCE_GAP
    )
    if not (reason_a or reason_b):
        return []
    share = float(support[worst]) / n
    data = {
        "class": labels[worst],
        "recall": worst_recall,
        "class_share": share,
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "no_information_rate": nir,
        "majority_class": labels[majority],
        "p_value": p_value,
    }
    baseline = f"a model that always answers {labels[majority]!r} scores {_pct(nir)}"
    if reason_b or worst != majority:
        message = (f"accuracy {_pct(accuracy)} hides recall {_pct(worst_recall)} on "
                   f"{labels[worst]!r} ({_pct(share)} of samples): {baseline}")
    else:
        message = (f"accuracy {_pct(accuracy)} is not significantly above the no-information "
                   f"rate: {baseline} (binomial p = {p_value:.3g})")
    return [Finding("accuracy_paradox", "error", message, data)]


def train_test_gap(train: Metrics, test: Metrics, labels: tuple[str, ...],
                   sample: dict[str, Any]) -> tuple[dict[str, float], list[Finding]]:
    """Gaps (train minus eval) for accuracy, macro F1 and per-class recall."""
    gaps: dict[str, float] = {
        "accuracy": train.value("accuracy") - test.value("accuracy"),
        "macro_f1": train.value("macro_f1") - test.value("macro_f1"),
    }
    diff = (train.recall - test.recall).tolist()
    for name, value in zip(labels, diff):
        gaps[f"recall[{name}]"] = value
    findings = []
    defined = {k: v for k, v in gaps.items() if v == v}
    if defined:
        metric, worst = max(defined.items(), key=lambda kv: kv[1])
        if worst > GAP_WARNING:
            findings.append(Finding(
                "train_test_gap", "warning",
                f"{metric} is {worst:.3f} higher on the training set than on the eval set "
                f"(train {worst + _value(test, metric, labels):.3f}, eval "
                f"{_value(test, metric, labels):.3f}): the model may be overfitting",
                {"metric": metric, "gap": worst, "gaps": gaps, **sample},
            ))
    return gaps, findings


def _value(metrics: Metrics, key: str, labels: tuple[str, ...]) -> float:
    if key.startswith("recall["):
        return metrics.value("recall", labels.index(key[7:-1]))
    return metrics.value(key)


def _examples(data: SequenceData, mask: Tensor, limit: int = 5) -> list[str]:
    return [data.record(int(i)) for i in torch.nonzero(mask).reshape(-1)[:limit]]


def leakage(train: SequenceData, test: SequenceData, test_hashes: Tensor | None = None) \
        -> list[Finding]:
    """Eval sequences whose exact content also appears in the training set."""
    train_hashes = train.content_hashes()
    if test_hashes is None:
        test_hashes = test.content_hashes()
    leaked = torch.isin(test_hashes, train_hashes)
    count = int(leaked.sum())
    if count == 0:
        return []
    fraction = count / len(test)
    examples = _examples(test, leaked)
    return [Finding(
        "leakage", "warning",
        f"{count} of {len(test)} eval sequences ({_pct(fraction)}) also appear in the training "
        f"set, e.g. {', '.join(examples)}: their predictions measure memory, not "
        f"generalisation; remove them from one of the sets",
        {"count": count, "fraction": fraction, "examples": examples},
    )]


def duplicates(data: SequenceData, hashes: Tensor | None = None) -> list[Finding]:
    """Sequences repeated inside one set: each copy after the first is counted."""
    if hashes is None:
        hashes = data.content_hashes()
    if hashes.numel() == 0:
        return []
    order = torch.sort(hashes, stable=True)
    repeat = torch.zeros_like(hashes, dtype=torch.bool)
    repeat[order.indices[1:]] = order.values[1:] == order.values[:-1]
    count = int(repeat.sum())
    if count == 0:
        return []
    examples = _examples(data, repeat)
    return [Finding(
        "duplicates", "warning",
        f"{count} of {len(data)} eval sequences repeat an earlier one, e.g. "
        f"{', '.join(examples)}: they weigh those samples more than once",
        {"count": count, "fraction": count / len(data), "examples": examples},
    )]
