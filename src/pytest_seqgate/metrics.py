"""Confusion matrix -> every count-based metric, in a few tensor ops.

The confusion matrix is the sufficient statistic: it comes from one counting
pass over the predictions, and everything else is derived from the C x C
counts. Shards of an evaluation therefore merge by adding matrices, and the
cost beyond the count does not grow with the data.

Semantics follow scikit-learn with ``zero_division=np.nan``: a ratio whose
denominator is zero is NaN ("undefined"), averages skip NaN, and plain float
division already produces exactly those NaNs (0/0), so there are no masks.
"""

from __future__ import annotations

import math
import struct
import threading
from dataclasses import dataclass
from operator import add, mul, truediv
from typing import overload

import torch
from torch import Tensor

# Re-exported: the names are the report's, defined where no torch is imported.
from pytest_seqgate import PER_CLASS_METRICS as PER_CLASS_METRICS
from pytest_seqgate import SUMMARY_METRICS as SUMMARY_METRICS

_CHUNK = 1 << 18
_scratch = threading.local()


def _chunk_buffers(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """This thread's ones (``dtype``) and int64 key buffers of ``_CHUNK`` elements."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    if dtype not in buffers:
        buffers[dtype] = (torch.ones(_CHUNK, dtype=dtype), torch.empty(_CHUNK, dtype=torch.int64))
    return buffers[dtype]


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """Rows are true classes, columns predicted; int64.

    The cell key ``y_true * C + y_pred`` is formed by one fused ``add`` (with
    ``alpha``) and counted with ``scatter_add_`` of ones, 256k keys at a time
    into a buffer kept per thread: one pass over the keys, where
    ``torch.bincount`` makes three (a min and a max to size its output, then
    the count), and no fresh allocation, whose page faults cost as much as
    the count itself at 1e5 keys. The scatter checks every index, which is
    the validation. Counts are int32 while they cannot overflow.
    """
    cells = num_classes * num_classes
    y_true, y_pred = y_true.reshape(-1), y_pred.reshape(-1)
    n = y_true.numel()
    dtype = torch.int32 if n < 2**31 else torch.int64
    ones, keys = _chunk_buffers(dtype)
    counts = torch.zeros(cells, dtype=dtype)
    # One set of views where the keys fit in one chunk: slicing costs a few us a
    # call, a tenth of the whole at 1e3 keys.
    chunks = (
        ((y_pred, y_true),)
        if n <= _CHUNK
        else ((y_pred[s : s + _CHUNK], y_true[s : s + _CHUNK]) for s in range(0, n, _CHUNK))
    )
    try:
        for pred, true in chunks:
            m = len(pred)
            keys_m = torch.add(pred, true, alpha=num_classes, out=keys[:m])
            counts.scatter_add_(0, keys_m, ones[:m])
    except (RuntimeError, IndexError) as exc:
        every = y_pred.add(y_true, alpha=num_classes)
        low, high = int(every.min()), int(every.max())
        raise ValueError(
            f"labels or predictions outside [0, {num_classes}): cell keys span "
            f"[{low}, {high}], the confusion matrix has {cells} cells; pass a "
            f"num_classes that covers every class index"
        ) from exc
    return counts.to(torch.int64).reshape(num_classes, num_classes)


class _Summary:
    """A summary metric read as an attribute: ``metrics.accuracy`` is
    ``metrics.value("accuracy")``, named by the attribute it is assigned to."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, metrics: None, owner: type | None = None) -> _Summary: ...
    @overload
    def __get__(self, metrics: Metrics, owner: type | None = None) -> float: ...
    def __get__(self, metrics: Metrics | None, owner: type | None = None) -> _Summary | float:
        # On the class itself (help(), documentation tools), the descriptor.
        return self if metrics is None else metrics.value(self.name)


@dataclass(frozen=True)
class Metrics:
    """Every count-based metric of one confusion matrix.

    ``per_class`` is float64 ``[3, C]`` (precision, recall, F1; NaN =
    undefined); ``values`` is float64 ``[len(SUMMARY_METRICS)]``. Keeping them
    stacked keeps the derivation to a couple of dozen tensor ops, which is
    what keeps the whole computation close to the cost of the count itself.
    """

    confusion_matrix: Tensor
    per_class: Tensor
    support: Tensor
    values: Tensor

    @property
    def precision(self) -> Tensor:
        return self.per_class[0]

    @property
    def recall(self) -> Tensor:
        return self.per_class[1]

    @property
    def f1(self) -> Tensor:
        return self.per_class[2]

    # The summary metrics as Python floats, by the names a gate and the report use:
    # an assert in a test reaches for ``ev.metrics.accuracy`` before ``value()``.
    accuracy = _Summary()
    balanced_accuracy = _Summary()
    macro_precision = _Summary()
    macro_recall = _Summary()
    macro_f1 = _Summary()
    weighted_f1 = _Summary()
    micro_f1 = _Summary()
    mcc = _Summary()
    kappa = _Summary()
    no_information_rate = _Summary()

    def __repr__(self) -> str:
        """One line, as an Evaluation's: the dataclass's printed four tensors, the
        summary ones unnamed."""
        named = ", ".join(
            f"{name} {'n/a' if math.isnan(value) else format(value, '.3f')}"
            for name, value in zip(SUMMARY_METRICS, self.values.tolist())
        )
        return (
            f"<Metrics of {self.n_samples} samples in {self.num_classes} classes: {named}; "
            f".precision, .recall, .f1 and .support per class>"
        )

    @property
    def summary(self) -> dict[str, Tensor]:
        return dict(zip(SUMMARY_METRICS, self.values.unbind()))

    @property
    def num_classes(self) -> int:
        return int(self.confusion_matrix.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.support.sum())

    def value(self, metric: str, class_index: int | None = None) -> float:
        """One number as a Python float; per-class metrics need ``class_index``."""
        if class_index is None:
            return float(self.values[SUMMARY_METRICS.index(metric)])
        if metric == "support":
            return float(self.support[class_index])
        return float(self.per_class[PER_CLASS_METRICS.index(metric), class_index])


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _divide(num: list[int], den: list[int], undefined: int) -> list[float]:
    """``num / den`` element by element, NaN where ``den`` is 0; ``undefined``
    counts those zeros, so the common case takes ``map`` (a third faster)."""
    if not undefined:
        return list(map(truediv, num, den))
    return [x / d if d else math.nan for x, d in zip(num, den)]


def _nansum(values: list[float], undefined: int) -> float:
    return sum(values) if not undefined else sum(v for v in values if v == v)


def compute_metrics(cm: Tensor) -> Metrics:
    """Derive all metrics from a confusion matrix (any integer dtype).

    The three margins are read back once as Python ints, everything else is
    Python arithmetic on C-long lists, and one packed buffer of floats becomes
    the per-class and summary tensors (``struct.pack`` then
    ``torch.frombuffer``: 4 us for 310 floats, where ``torch.tensor`` takes 24
    and an ``array`` built from them 27). At 1e5 predictions this fixed cost
    is a third of the count's, so each op counts: a tensor op costs 2 to 10
    us, a Python pass over 10 classes well under one. Per-class values in
    tensors (the code before this one: a small product, then the scalars in
    Python) took 83 to 84 against 31 to 32 us with 2 classes, 86 to 90
    against 36 to 37 with 10, 126 to 129 against 92 to 97 with 100. The margins' sums are exact
    ints; the macro averages skip undefined (NaN) classes, as nanmean does.
    """
    c = cm.shape[0]
    support = cm.sum(1)
    true, pred, tp = support.tolist(), cm.sum(0).tolist(), cm.diagonal().tolist()
    both = list(map(add, true, pred))
    undefined = pred.count(0), true.count(0), both.count(0)
    precision = _divide(tp, pred, undefined[0])
    recall = _divide(tp, true, undefined[1])
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (true + pred).
    f1 = _divide(list(map(add, tp, tp)), both, undefined[2])
    n, correct = sum(true), sum(tp)
    accuracy = _ratio(correct, n)
    macro_p = _ratio(_nansum(precision, undefined[0]), c - undefined[0])
    macro_r = _ratio(_nansum(recall, undefined[1]), c - undefined[1])
    macro_f1 = _ratio(_nansum(f1, undefined[2]), c - undefined[2])
    # Weighted F1 as scikit-learn's _nanaverage: F1 is NaN only where a class has
    # no samples (weight 0, left out), so the weights sum to n; when n is 0
    # sklearn falls back to the plain mean of what is defined, the macro F1.
    if not n:
        weighted = macro_f1
    elif undefined[2]:
        weighted = sum(s * f for s, f in zip(true, f1) if s) / n
    else:
        weighted = sum(map(mul, true, f1)) / n
    # MCC, multiclass (Gorodkin): zero when either marginal is degenerate, as sklearn.
    t_p = sum(map(mul, true, pred))
    cov = (n * n - sum(map(mul, true, true))) * (n * n - sum(map(mul, pred, pred)))
    mcc = (correct * n - t_p) / math.sqrt(cov) if cov > 0 else 0.0
    expected = _ratio(t_p, n * n)
    kappa = _ratio(accuracy - expected, 1 - expected)
    packed = struct.pack(
        f"{3 * c + len(SUMMARY_METRICS)}d",
        *precision,
        *recall,
        *f1,
        accuracy,
        macro_r,
        macro_p,
        macro_r,
        macro_f1,
        weighted,
        accuracy,
        mcc,
        kappa,
        _ratio(max(true) if c else 0, n),
    )
    # A bytearray: frombuffer's tensor would be read-only over bytes.
    values = torch.frombuffer(bytearray(packed), dtype=torch.float64)
    return Metrics(cm, values[: 3 * c].view(3, c), support, values[3 * c :])


def _guarded(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, NaN where ``den`` is 0: :func:`_ratio` for tensors."""
    return torch.where(den != 0, num / den, torch.nan)


def margin_metrics(tp: Tensor, true: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
    """Every count-based metric of S confusion matrices given by their margins
    (``[S, C]`` each: the diagonal, row sums, column sums): ``per_class`` float64
    ``[S, 3, C]`` and ``values`` ``[S, len(SUMMARY_METRICS)]``, as
    :func:`compute_metrics` gives them for one matrix.

    :func:`compute_metrics` reads one matrix's scalars back as Python floats,
    the cheapest for one; here they stay columns of S, so that a key of 50,000
    values (slices) or 1,000 bootstrap resamples costs a few dozen tensor ops,
    not a derivation each.
    """
    tp, true, pred = (t.to(torch.float64) for t in (tp, true, pred))
    both = true + pred
    per_class = torch.stack([tp / pred, tp / true, 2 * tp / both], 1)
    # The macro averages skip the undefined classes, as nanmean does.
    defined = torch.stack([pred, true, both], 1).clamp(max=1).sum(2)
    macro = _guarded(per_class.nan_to_num().sum(2), defined)
    n, correct = true.sum(1), tp.sum(1)
    accuracy = _guarded(correct, n)
    weighted = torch.where(n != 0, (true * per_class[:, 2].nan_to_num()).sum(1) / n, macro[:, 2])
    agree = (true * pred).sum(1)
    cov = (n * n - (true * true).sum(1)) * (n * n - (pred * pred).sum(1))
    # Where cov is 0 the division's inf or NaN is discarded (torch.where reads both sides).
    mcc = torch.where(cov > 0, (correct * n - agree) / cov.sqrt(), 0.0)
    expected = _guarded(agree, n * n)
    kappa = _guarded(accuracy - expected, 1 - expected)
    largest = true.amax(1) if true.shape[1] else torch.zeros_like(n)
    values = torch.stack(
        [
            accuracy,
            macro[:, 1],
            macro[:, 0],
            macro[:, 1],
            macro[:, 2],
            weighted,
            accuracy,
            mcc,
            kappa,
            _guarded(largest, n),
        ],
        1,
    )
    return per_class, values


def compute_metrics_each(cms: Tensor) -> list[Metrics]:
    """:func:`compute_metrics` of each of ``cms`` (``[S, C, C]``), derived together."""
    support = cms.sum(2)
    per_class, values = margin_metrics(cms.diagonal(dim1=1, dim2=2), support, cms.sum(1))
    return [
        Metrics(*parts)
        for parts in zip(cms.unbind(0), per_class.unbind(0), support.unbind(0), values.unbind(0))
    ]


def metrics_from_predictions(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Metrics:
    return compute_metrics(confusion_matrix(y_true, y_pred, num_classes))
