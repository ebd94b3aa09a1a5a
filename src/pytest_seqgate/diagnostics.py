"""Findings: what makes a model look better than it is.

Each detector takes numbers that already exist (a confusion matrix, content
hashes) and returns :class:`Finding` objects with a message a person
understands at once and the figures behind it, so the terminal, the JSON
report and the gates all tell the same story.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pytest_seqgate.data import SequenceData, int64s
from pytest_seqgate.exceptions import counted
from pytest_seqgate.metrics import Metrics
from pytest_seqgate.stats import binomial_sf, p_value_text

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
        """Undefined numbers in the data (NaN, a class without samples) are ``null``,
        as everywhere in the JSON report: strict JSON has no NaN."""
        data = {"kind": self.kind, "severity": self.severity, "message": self.message}
        return data | {key: _defined(value) for key, value in self.data.items()}


def _defined(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _defined(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_defined(v) for v in value]
    return value


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def accuracy_paradox(
    metrics: Metrics, labels: tuple[str, ...], recall_floor: float = 0.5
) -> list[Finding]:
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
    # "Hides" only where accuracy is high or well above balanced accuracy: when the
    # binomial test alone fires, accuracy is near what always answering the
    # majority class scores, and that (with the lowest recall) is the whole story.
    if reason_b:
        # Always answering the majority class illustrates it only where that
        # scores near the accuracy; among many classes (a majority of 1.4% beside
        # an accuracy of 98%) where the class's samples went says it plainly.
        if accuracy - nir > PARADOX_BALANCE_GAP:
            row = metrics.confusion_matrix[worst].clone()
            row[worst] = -1
            taken = int(torch.argmax(row))
            data["predicted_as"] = labels[taken]
            baseline = (
                f"{int(row[taken])} of its {int(support[worst])} samples were predicted as "
                f"{labels[taken]!r}"
            )
        message = (
            f"accuracy {_pct(accuracy)} hides recall {_pct(worst_recall)} on "
            f"{labels[worst]!r} ({_pct(share)} of samples): {baseline}"
        )
    else:
        message = (
            f"accuracy {_pct(accuracy)} on {counted(n, 'sample')} is not significantly "
            f"above the no-information rate: {baseline} (binomial {p_value_text(p_value)})"
        )
        if worst_recall >= recall_floor:
            # Every class is found well enough: the sample is what cannot tell.
            message += (
                f"; the model finds every class (lowest recall {_pct(worst_recall)}), so the "
                f"eval set may be too small to tell: add samples, or set "
                f"fail_on_paradox=False for it"
            )
        else:
            message += f"; lowest recall {_pct(worst_recall)} on {labels[worst]!r}"
    return [Finding("accuracy_paradox", "error", message, data)]


def missing_classes(metrics: Metrics, labels: tuple[str, ...]) -> list[Finding]:
    """Classes the eval set has no samples of: their recall is undefined, so the
    macro averages and balanced accuracy quietly average over the other classes,
    and a recall gate on them can only fail. (A small eval set of a many-class
    model often lacks its rare classes.)"""
    if metrics.n_samples == 0:
        return []
    absent = [labels[i] for i in torch.nonzero(metrics.support == 0).flatten().tolist()]
    if not absent:
        return []
    shown = ", ".join(map(repr, absent[:10])) + (", ..." if len(absent) > 10 else "")
    one = len(absent) == 1
    has, its, it = ("has", "its", "it") if one else ("have", "their", "them")
    # Predicted though absent: precision and F1 are 0, and the macro averages count them.
    alarmed = [
        labels[i]
        for i in torch.nonzero((metrics.support == 0) & (metrics.f1 == 0)).flatten().tolist()
    ]
    zeros = (
        f"; predicted all the same, {', '.join(map(repr, alarmed[:10]))} "
        f"{'has' if len(alarmed) == 1 else 'have'} precision and F1 0, which macro precision "
        f"and macro F1 average in"
        if alarmed
        else ""
    )
    return [
        Finding(
            "missing_classes",
            "warning",
            f"{len(absent)} of {len(labels)} classes {has} no samples in the eval set "
            f"({shown}): {its} recall is undefined, so macro recall and balanced accuracy "
            f"leave {it} out, and a recall gate on {it} fails{zeros}; add samples of {it} "
            f"to the eval set",
            {"classes": absent},
        )
    ]


# A predicted class counts as traded when at least this many of its predictions
# are of one other true class, and they are the majority of them.
TRADED_MIN_PREDICTIONS = 5


def traded_labels(metrics: Metrics, labels: tuple[str, ...]) -> list[Finding]:
    """Flag labels that fit the model's outputs better in another order.

    A model trained with ``['ham', 'spam']`` and gated with ``seqgate_labels =
    spam, ham`` (or with a data set's indices in another order) gets every
    per-class number wrong, and the report looks like a terrible model rather
    than a configuration error. The sign is in the confusion matrix: some
    predicted classes are mostly samples of one other class, and those classes
    trade places among themselves (a permutation). Read column by column, it
    costs one argmax over the matrix.
    """
    cm = metrics.confusion_matrix
    c = cm.shape[0]
    if c < 2 or metrics.n_samples == 0:
        return []
    predicted = cm.sum(0)
    best = cm.argmax(0)  # the true class most of each predicted class's samples have
    top = cm.gather(0, best.unsqueeze(0)).squeeze(0)
    moved = (best != torch.arange(c)) & (2 * top > predicted) & (top >= TRADED_MIN_PREDICTIONS)
    columns = torch.nonzero(moved).flatten().tolist()
    if not columns or sorted(best[columns].tolist()) != columns:
        return []  # nothing moved, or not a permutation of the moved classes
    order = list(labels)
    for j in columns:
        order[j] = labels[int(best[j])]
    correct = int(cm.diagonal().sum())
    traded = correct + sum(int(top[j]) - int(cm[j, j]) for j in columns)
    n = metrics.n_samples
    pairs = ", ".join(
        f"{int(top[j])} of the {int(predicted[j])} predicted {labels[j]!r} are "
        f"{labels[int(best[j])]!r}"
        for j in columns[:4]
    ) + (", ..." if len(columns) > 4 else "")
    return [
        Finding(
            "label_order",
            "error",
            f"the labels fit the model's outputs better in another order: {pairs}; in the "
            f"order {order if c <= 12 else 'the JSON gives (fitting_order)'} accuracy would "
            f"be {_pct(traded / n)}, not {_pct(correct / n)}. If seqgate_labels (or the data's "
            f"label indices) do not follow the model's output order, every per-class number "
            f"is wrong: set seqgate_labels to the model's order",
            {"labels": list(labels), "fitting_order": order, "accuracy_in_that_order": traded / n},
        )
    ]


def train_test_gap(
    train: Metrics, test: Metrics, labels: tuple[str, ...], sample: dict[str, Any]
) -> tuple[dict[str, float], list[Finding]]:
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
            cause = "the model may be overfitting"
            # A class the eval set has no sample of (a spam-only regression set) has
            # F1 0 there from its false alarms alone, and pulls macro F1 down
            # however well the model generalises.
            zero = (test.support == 0) & (train.support > 0) & (test.f1 == 0)
            absent = [labels[i] for i in torch.nonzero(zero).flatten().tolist()]
            if metric == "macro_f1" and absent:
                cause = (
                    f"the eval set has no samples of {', '.join(map(repr, absent))}, whose F1 "
                    f"there is 0 (false alarms, and nothing to find), which lowers its macro "
                    f"F1: compare sets of the same classes, or gate accuracy and recall"
                )
            # A gap measured on a sample says so: its train figure is an estimate.
            sampled = ""
            if sample.get("train_sampled", 0) < sample.get("train_size", 0):
                sampled = (
                    f" (a seeded sample of {sample['train_sampled']:,} of its "
                    f"{sample['train_size']:,} sequences)"
                )
            findings.append(
                Finding(
                    "train_test_gap",
                    "warning",
                    f"{metric} is {worst:.3f} higher on the training set{sampled} than on the "
                    f"eval set "
                    f"(train {worst + _value(test, metric, labels):.3f}, eval "
                    f"{_value(test, metric, labels):.3f}): {cause}",
                    {"metric": metric, "gap": worst, "gaps": gaps, **sample},
                )
            )
    return gaps, findings


def _value(metrics: Metrics, key: str, labels: tuple[str, ...]) -> float:
    if key.startswith("recall["):
        return metrics.value("recall", labels.index(key[7:-1]))
    return metrics.value(key)


def _examples(data: SequenceData, mask: Tensor, limit: int = 5) -> list[str]:
    return [data.record(int(i)) for i in torch.nonzero(mask).reshape(-1)[:limit]]


def leakage(leaked: Tensor, test: SequenceData) -> list[Finding]:
    """Eval sequences (``leaked``, a mask) whose exact content is in the training set."""
    count = int(leaked.sum())
    if count == 0:
        return []
    fraction = count / len(test)
    examples = _examples(test, leaked)
    return [
        Finding(
            "leakage",
            "warning",
            f"{count} of {len(test)} eval sequences ({_pct(fraction)}) also appear in the training "
            f"set, e.g. {', '.join(examples)}: their predictions measure memory, not "
            f"generalisation; remove them from one of the sets",
            {"match": "exact", "count": count, "fraction": fraction, "examples": examples},
        )
    ]


def duplicates(
    data: SequenceData, hashes: Tensor | None = None, labels: Sequence[str] | None = None
) -> list[Finding]:
    """Sequences repeated inside one set: each copy after the first is counted;
    and copies whose labels disagree (see :func:`_conflicting_labels`)."""
    if hashes is None:
        hashes = data.content_hashes()
    if hashes.numel() == 0:
        return []
    repeat = torch.zeros_like(hashes, dtype=torch.bool)
    # Copies share all 64 bits of their hash, so they share the top 32: one sort
    # of those (half the radix passes of PyTorch's CPU sort of int64, 1.5 against
    # 2.9 ms at 50,000, 44 against 86 at 1,000,000) finds every candidate. Most
    # eval sets have none; otherwise the few candidates are settled on all 64.
    top, order = torch.sort((hashes >> 32).to(torch.int32))
    same = top[1:] == top[:-1]
    if not bool(same.any()):
        return []
    shared = torch.zeros_like(repeat)
    shared[1:] = same
    shared[:-1] |= same
    candidates = order[shared].sort().values  # dataset order: the first copy stays
    exact = torch.sort(hashes.take(candidates), stable=True)
    repeat[candidates.take(exact.indices[1:])] = exact.values[1:] == exact.values[:-1]
    count = int(repeat.sum())
    if count == 0:
        return []
    examples = _examples(data, repeat)
    found = [
        Finding(
            "duplicates",
            "warning",
            f"{count} of {len(data)} eval sequences repeat an earlier one, e.g. "
            f"{', '.join(examples)}: they weigh those samples more than once",
            {"count": count, "fraction": count / len(data), "examples": examples},
        )
    ]
    conflict = _conflicting_labels(data, candidates.take(exact.indices), exact.values, labels)
    return found + ([conflict] if conflict is not None else [])


def _conflicting_labels(
    data: SequenceData, members: Tensor, member_hashes: Tensor, labels: Sequence[str] | None
) -> Finding | None:
    """Copies of one sequence that carry different labels: no model can be right on
    all of them, so a gate may ask for more than any model can score.

    ``members``: dataset indices grouped by content hash (``member_hashes``,
    sorted), dataset order inside a group. A group holds two labels or more
    exactly when two neighbours in it differ. The best any model can do on a
    group is its most frequent label: the rest bounds accuracy.
    """
    first = torch.ones_like(members, dtype=torch.bool)
    first[1:] = member_hashes[1:] != member_hashes[:-1]
    targets = data.labels.take(members)
    differs = torch.zeros_like(first)
    differs[1:] = ~first[1:] & (targets[1:] != targets[:-1])
    if not bool(differs.any()):
        return None
    group = first.cumsum(0) - 1
    groups = int(group[-1]) + 1
    conflicted = torch.zeros(groups, dtype=torch.bool)
    conflicted[group[differs]] = True
    inside = conflicted.take(group)
    classes = int(targets.max()) + 1
    counts = torch.bincount(
        group[inside] * classes + targets[inside], minlength=groups * classes
    ).view(groups, classes)
    samples = int(inside.sum())
    ceiling = 1 - (samples - int(counts.max(1).values.sum())) / len(data)
    names = labels or data.label_names
    # The first disagreeing pairs in dataset order, each as `file:line 'label'`.
    at = torch.nonzero(differs).reshape(-1)
    pairs = torch.stack([members.take(at - 1), members.take(at)], 1)
    pairs = pairs[torch.argsort(pairs[:, 0], stable=True)][:3]

    def shown(i: int) -> str:
        label = int(data.labels[i])
        return f"{data.record(i)} {repr(names[label]) if names else label}"

    examples = [f"{shown(int(a))} = {shown(int(b))}" for a, b in pairs.tolist()]
    sequences = int(conflicted.sum())
    return Finding(
        "conflicting_labels",
        "warning",
        f"{counted(sequences, 'sequence')} {'appears' if sequences == 1 else 'appear'} in "
        f"the eval set with different labels ({samples} samples), e.g. {examples[0]}: no "
        f"model can be right on every copy, so accuracy cannot exceed {_pct(ceiling)}; "
        f"correct the labels or keep one copy",
        {
            "sequences": sequences,
            "samples": samples,
            "max_accuracy": ceiling,
            "examples": examples,
        },
    )


def near_duplicate_leakage(
    train_record: Callable[[int], str],
    test: SequenceData,
    threshold: float,
    index: Tensor,
    match: Tensor,
    similarity: Tensor,
) -> Finding | None:
    """Eval sequences ``index`` that nearly copy training sequences ``match``, as
    :func:`pytest_seqgate.minhash.near_duplicates` found them; ``train_record``
    names a training record by its index (a streamed training set keeps the
    names of its matches, not its sequences)."""
    from pytest_seqgate.minhash import NGRAM

    if index.numel() == 0:
        return None
    count = int(index.numel())
    examples = [
        f"{test.record(int(i))} ~ {train_record(int(j))} (Jaccard {float(s):.2f})"
        for i, j, s in zip(index[:5], match[:5], similarity[:5])
    ]
    return Finding(
        "leakage",
        "warning",
        f"{count} of {len(test)} eval sequences ({_pct(count / len(test))}) nearly copy a "
        f"training sequence ({NGRAM}-gram Jaccard >= {threshold:g}), e.g. {examples[0]}",
        {
            "match": "near",
            "count": count,
            "fraction": count / len(test),
            "threshold": threshold,
            "examples": examples,
        },
    )


PADDING_REMEDY = (
    "Pack the input (pack_padded_sequence with the lengths) or apply the attention mask"
)


def padding_remedy(model: nn.Module, told: str | None = "plain") -> str:
    """The fix for a padding-sensitive model, from the layers it has and what its
    forward is told (``told``, the calling convention; None when a
    ``pytest_seqgate_forward`` hook calls it): a pooled embedding without
    ``padding_idx`` averages the padding in, a recurrent layer steps through it
    unless packed, attention attends to it unless masked; and a model already
    given the mask that still reads the padding pools over it (a mean over every
    position), which no mask for attention can mend. A forward that takes the
    lengths or a mask under another name (``seq_lengths``, ``mask``) was given
    none: its own code may be right, and renaming the parameter is the fix."""
    from pytest_seqgate.inference import PADDING_MASKS, unfilled_inputs

    layers = list(model.modules())
    unset = unfilled_inputs(model) if told == "plain" else []
    told = told or "plain"
    masked = told not in ("plain", "lengths")
    if unset:
        names = " and ".join(unset)
        return (
            f"The forward's {names} {'was' if len(unset) == 1 else 'were'} left unset: "
            f"seqgate fills a parameter named lengths (the lengths), attention_mask (1 on "
            f"the tokens) or {', '.join(PADDING_MASKS)} (True on the padding), and no "
            f"other; rename it so, or call the model in a pytest_seqgate_forward hook"
        )
    advice = []
    if any(isinstance(m, nn.EmbeddingBag) and m.padding_idx is None for m in layers):
        advice.append(
            "give the nn.EmbeddingBag padding_idx=0 (seqgate pads with 0), so that it pools "
            "the real tokens only"
        )
    if any(isinstance(m, nn.RNNBase) for m in layers):
        advice.append(
            "pack the RNN's input (pack_padded_sequence with the lengths) and read each "
            "sequence at its last real step (h_n, or the output at lengths - 1), not at the "
            "padded end"
            if told == "lengths"
            else "pack the RNN's input (pack_padded_sequence with the lengths: a forward "
            "parameter named lengths gets them)"
        )
    if any(isinstance(m, nn.Conv1d) for m in layers):
        # Each window over the padding gives the bias (and what the padding's
        # embedding adds): a max over time picks it up unless those steps are masked.
        advice.append(
            "set the convolution's outputs at the padded steps to -inf before the max over "
            "time (or leave them out of a mean)"
            + (
                ""
                if told in ("lengths", "attention_mask")
                else ": a forward parameter named lengths gets the real lengths"
            )
        )
    if any(isinstance(m, nn.MultiheadAttention) for m in layers):
        advice.append(
            f"pool the attention's outputs over the real steps only (the {told} the "
            f"forward is given marks them): a mean or sum over every position reads the "
            f"padding"
            if masked
            else "pass the padding to attention (take a forward parameter "
            "src_key_padding_mask, which seqgate fills, or turn its attention_mask into one: "
            "attention_mask == 0)"
        )
    if not advice:
        return f"{PADDING_REMEDY}, and pool over the real steps only (divide by the lengths)"
    text = "; ".join(advice)
    return text[0].upper() + text[1:]


# How far a sample's probabilities may move between its padded batch and a run
# alone before the model is called padding-sensitive: float rounding in fp32;
# under autocast, matrix products of other shapes round differently (a GPU's
# BLAS picks its kernels by the batch's size), by up to about 2^-8 of each
# logit in bf16 and 2^-11 in fp16; a quantized model (int8) scales its
# activations by each batch's range, which moved the probabilities of a packed
# GRU by 0.003 between its batch and a run alone. A model that reads its
# padding moves them by tenths.
PADDING_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-3, "bf16": 2e-2, "int8": 2e-2}


def padding_tolerance(precision: str, weights: str) -> float:
    """The tolerance for a run under ``precision`` (autocast) of a model whose
    weights compute in ``weights`` (``fp32``, or ``bf16`` for a model cast for
    serving, ``int8`` for a quantized one): the coarser of the two decides."""
    return max(PADDING_TOLERANCE[precision], PADDING_TOLERANCE[weights])


def padding_sensitivity(
    batched: Tensor,
    alone: Tensor,
    index: Tensor,
    data: SequenceData,
    labels: tuple[str, ...],
    tolerance: float = 1e-3,
    remedy: str = PADDING_REMEDY,
) -> list[Finding]:
    """Sequences whose probabilities change between their padded batch and running alone.

    A model that neither packs nor masks reads the padding as input; its answer
    then depends on what else was in the batch. ``remedy`` is the fix for the
    model at hand (:func:`padding_remedy`).
    """
    change = _largest_change(batched, alone, index, data, labels, tolerance)
    if change is None:
        return []
    count, first, record, fmt = change
    flipped = int((batched.argmax(1) != alone.argmax(1)).sum())
    return [
        Finding(
            "padding_sensitivity",
            "error",
            f"padding changes the model's output for {count} of {index.numel()} sampled sequences "
            f"({flipped} change class): e.g. {record} gives {fmt[0]} in its padded "
            f"batch but {fmt[1]} alone. {remedy}",
            {
                "tolerance": tolerance,
                "count": count,
                "sampled": int(index.numel()),
                "changed_class": flipped,
                "example": record,
                "batched": batched[first].tolist(),
                "alone": alone[first].tolist(),
            },
        )
    ]


def _largest_change(
    first: Tensor,
    second: Tensor,
    index: Tensor,
    data: SequenceData,
    labels: Sequence[str],
    tolerance: float,
) -> tuple[int, int, str, tuple[str, str]] | None:
    """How many rows of two runs' probabilities differ by more than ``tolerance``,
    and the plainest example: the row of the largest change, its record and its
    two rows as a message shows them. None when no row differs."""
    diff = (first - second).abs().amax(1)
    count = int((diff > tolerance).sum())
    if count == 0:
        return None
    row = int(diff.argmax())
    record = data.record(int(index[row]))
    return count, row, record, _probability_pair(first[row], second[row], labels)


def _probability_pair(
    first: Tensor, second: Tensor, labels: Sequence[str], most: int = 4
) -> tuple[str, str]:
    """Two rows of class probabilities as ``{ham: 0.120, spam: 0.880}``: every class
    up to ``most``, else the classes each row predicts and those that moved most
    (150 classes made a paragraph of each row, with the change lost in it)."""
    if first.numel() <= most:
        shown = list(range(first.numel()))
    else:
        change = (first - second).abs()
        order = torch.sort(change, descending=True, stable=True).indices
        keep = [int(first.argmax()), int(second.argmax())]
        keep += [int(k) for k in order if float(change[k]) > 0]
        shown = sorted(list(dict.fromkeys(keep))[:most])

    def fmt(row: Tensor) -> str:
        body = ", ".join(f"{labels[k]}: {float(row[k]):.3f}" for k in shown)
        rest = row.numel() - len(shown)
        return "{" + body + (f", {rest} other classes" if rest else "") + "}"

    return fmt(first), fmt(second)


def nondeterministic(
    alone: Tensor,
    again: Tensor,
    index: Tensor,
    data: SequenceData,
    labels: Sequence[str],
    tolerance: float,
) -> list[Finding]:
    """Sequences whose probabilities change between two runs of the same input alone.

    A model that samples at inference (dropout called with ``training=True``,
    noise from ``torch.rand``, Monte Carlo dropout) gives another answer each
    run: the padding check would blame its padding, with a fix for layers that
    are not at fault, and every metric is one draw. Checked only once the
    padding check has found a change, on the rows it ran alone.
    """
    change = _largest_change(alone, again, index, data, labels, tolerance)
    if change is None:
        return []
    count, first, record, fmt = change
    return [
        Finding(
            "nondeterministic",
            "error",
            f"the model's output changes between two runs of the same sequence, for {count} "
            f"of {index.numel()} run twice: e.g. {record} gives {fmt[0]}, then {fmt[1]}. It "
            f"samples at inference (dropout called with training=True, torch.rand, Monte "
            f"Carlo dropout), so every metric is one draw and padding cannot be judged: make "
            f"its forward deterministic in eval mode (nn.Dropout, or "
            f"F.dropout(x, training=self.training))",
            {
                "tolerance": tolerance,
                "count": count,
                "run_twice": int(index.numel()),
                "example": record,
                "first": alone[first].tolist(),
                "second": again[first].tolist(),
            },
        )
    ]


# ---------------------------------------------------------------- slices

SLICE_OPS = (">=", "<=", "!=", "==", ">", "<", "=")
ORDERINGS = (">=", "<=", ">", "<")


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


JSON_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def spelt(value: Any) -> str:
    """A metadata value as the .jsonl spells it (``null``, ``true``), which is how
    a slice names it and a gate's ``slice`` selects it."""
    for word, literal in JSON_LITERALS.items():
        if value is literal:
            return word
    return str(value)


@dataclass(frozen=True)
class SliceSpec:
    """``length>=128`` or ``lang=fr``: a key (``length`` or a metadata key), an op, a value."""

    key: str
    op: str
    value: str

    @property
    def name(self) -> str:
        return f"{self.key}{'=' if self.op == '==' else self.op}{self.value}"

    @classmethod
    def parse(cls, text: str) -> SliceSpec:
        from pytest_seqgate.exceptions import ConfigError

        for op in SLICE_OPS:
            key, found, value = text.partition(op)
            if found and key.strip() and value.strip():
                key, value = key.strip(), value.strip()
                if key == "length" and not value.isdigit():
                    raise ConfigError(f"slice {text!r}: a length slice compares with an integer")
                if key != "length" and op not in ("=", "==", "!=") and not _is_float(value):
                    raise ConfigError(
                        f"slice {text!r}: a metadata slice compares with <, <=, > or >= a "
                        f"number only (= and != take any value)"
                    )
                return cls(key, "==" if op == "=" else op, value)
        raise ConfigError(
            f"slice {text!r}: expected KEY OP VALUE, e.g. 'length>=128' or "
            f"'lang=fr' (ops: {', '.join(SLICE_OPS)})"
        )

    def mask(self, lengths: Tensor, metadata: dict[str, list[Any]]) -> Tensor:
        if self.key == "length":
            v = int(self.value)
            ops = {
                ">=": lengths >= v,
                "<=": lengths <= v,
                ">": lengths > v,
                "<": lengths < v,
                "==": lengths == v,
                "!=": lengths != v,
            }
            return ops[self.op]
        require_key(self.key, metadata, f"slice {self.name!r}")
        if self.op in ORDERINGS:
            return self._compare(metadata[self.key])
        # A record's JSON `true`, `false` or `null` is Python's True, False or None:
        # `flag=true`, as the .jsonl spells it, matches as `flag=True` does.
        literal = JSON_LITERALS.get(self.value, self)  # (self: a value no record holds)
        equal = torch.tensor(
            [x is literal or str(x) == self.value for x in metadata[self.key]], dtype=torch.bool
        )
        return equal if self.op == "==" else ~equal

    def _compare(self, values: list[Any]) -> Tensor:
        """``score>=0.5`` on a numeric key (as its quartile slices cut it): a record
        whose value is null does not match; a value that is no number is an error
        naming it, since no order puts it above or below the bound."""
        from pytest_seqgate.exceptions import ConfigError

        numbers = _numbers(values)
        if numbers is None:
            odd = next(v for v in values if v not in (None, "") and _number(v) is None)
            raise ConfigError(
                f"slice {self.name!r}: {self.key} holds {spelt(odd)!r}, not a number: compare "
                f"it with = or != instead"
            )
        bound = float(self.value)
        ops = {">=": numbers >= bound, "<=": numbers <= bound, ">": numbers > bound}
        return ops.get(self.op, numbers < bound)  # NaN (a null) compares False

    def values_seen(self, metadata: dict[str, list[Any]], limit: int = 10) -> str:
        """The values a metadata key takes, for the message of a slice that matched
        nothing (``lang=de`` on a set of 'en' and 'fr'); empty for length slices."""
        if self.key == "length" or self.key not in metadata:
            return ""
        seen = sorted({spelt(x) for x in metadata[self.key]})
        listing = ", ".join(repr(v) for v in seen[:limit]) + (", ..." if len(seen) > limit else "")
        return f"; {self.key} takes {listing}"


def require_key(key: str, metadata: Collection[str], where: str) -> None:
    """Raise, naming the near key and the keys there are, unless the records have ``key``
    (``metadata``: the records' metadata, or its keys)."""
    from pytest_seqgate.exceptions import ConfigError, did_you_mean

    if key not in metadata:
        there = (
            f"its extra keys are {sorted(metadata)}"
            if metadata
            else "its records have no key beside the sequence and the label: add it to them "
            "(a .jsonl field, a .csv column)"
        )
        raise ConfigError(
            f"{where}: the eval set has no key {key!r}{did_you_mean(key, metadata)}; {there}"
        )


@dataclass
class SliceResult:
    group: str  # "length" or the metadata key
    name: str
    n: int
    metrics: Metrics


def slice_metrics(
    targets: Tensor,
    predictions: Tensor,
    ids: Tensor,
    names: list[str],
    group: str,
    num_classes: int,
) -> list[SliceResult]:
    """Per-slice confusion matrices from one bincount over (slice, true, predicted),
    their metrics derived together: a key of a value per record (an ``id``)
    makes as many slices as records."""
    from pytest_seqgate.metrics import compute_metrics_each

    c2 = num_classes * num_classes
    keys = ids * c2 + targets * num_classes + predictions
    cms = torch.bincount(keys, minlength=len(names) * c2).reshape(
        len(names), num_classes, num_classes
    )
    sizes = cms.sum((1, 2))
    present = sizes.nonzero().reshape(-1)
    metrics = compute_metrics_each(cms[present])
    return [
        SliceResult(group, names[k], n, m)
        for k, n, m in zip(present.tolist(), sizes[present].tolist(), metrics)
    ]


def integer_quartiles(values: Tensor) -> Tensor:
    """``torch.quantile(values, [0.25, 0.5, 0.75])`` (linear interpolation) for
    non-negative integers, from a histogram instead of a sort: the order
    statistics come from a search in the cumulative counts."""
    n = values.numel()
    position = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64) * (n - 1)
    below = position.floor()
    ranks = torch.stack([below, position.ceil()]).to(torch.int64)
    cumulative = torch.cumsum(torch.bincount(values), 0)
    order_stats = torch.searchsorted(cumulative, ranks, right=True).to(torch.float64)
    return torch.lerp(order_stats[0], order_stats[1], position - below)


def length_slices(
    lengths: Tensor, targets: Tensor, predictions: Tensor, num_classes: int
) -> list[SliceResult]:
    """Quartiles of length; each slice is named by its edges, e.g. ``length 13-24``."""
    if lengths.numel() == 0:
        return []
    q = integer_quartiles(lengths)
    edges = torch.unique(q.floor().to(torch.int64))
    low, high = (int(v) for v in torch.aminmax(lengths))
    # Each length's slice, looked up in a table of every length up to the
    # longest (the quartiles' histogram is that long already): five times
    # faster than a binary search per sequence.
    ids = torch.bucketize(torch.arange(high + 1), edges).take(lengths)
    bounds = [low, *[int(e) + 1 for e in edges.tolist()]]
    tops = [int(e) for e in edges.tolist()] + [high]
    names = [f"length {lo}-{hi}" for lo, hi in zip(bounds, tops)]
    return slice_metrics(targets, predictions, ids, names, "length", num_classes)


QUARTILES = (0.25, 0.5, 0.75)

# A numeric key of more distinct values than this is cut at its quartiles, as
# length is: a score or a count per record made one slice per record (50,000
# slices of one sample took 4 s and an 8 MB report, each slice's metrics
# computed on its own), and slices of a sample or two say nothing.
NUMERIC_SLICE_VALUES = 12


def _number(value: Any) -> float | None:
    """A metadata value as a number: an int or a float, or a number a .csv spells
    as text (``"0.53"``, every .csv value is text); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _numbers(values: list[Any]) -> Tensor | None:
    """The values as float64, NaN for a null (or a .csv's empty cell); None when
    one is neither a number nor null."""
    out = []
    for value in values:
        if value is None or value == "":
            out.append(math.nan)
            continue
        number = _number(value)
        if number is None:
            return None
        out.append(number)
    return torch.tensor(out, dtype=torch.float64)


def numeric_slices(
    key: str, values: list[Any], targets: Tensor, predictions: Tensor, num_classes: int
) -> list[SliceResult] | None:
    """Quartiles of a numeric key (``score 0.0013-0.249``, each named by the least
    and greatest value in it; a null is ``score=null``), or None when the key
    holds anything but numbers and nulls, or a few distinct numbers only (a
    year, a rating: one slice each, ``year=2019``)."""
    numbers = _numbers(values)
    if numbers is None:
        return None
    null = torch.isnan(numbers)
    if torch.unique(numbers[~null]).numel() <= NUMERIC_SLICE_VALUES:
        return None
    # torch.quantile's linear interpolation, from a sort: quantile refuses more
    # than 2**24 values, which a streamed eval set can hold.
    present = numbers[~null].sort().values
    position = torch.tensor(QUARTILES, dtype=torch.float64) * (present.numel() - 1)
    below = position.floor()
    edges = torch.unique(
        torch.lerp(present[below.long()], present[position.ceil().long()], position - below)
    )
    ids = torch.bucketize(numbers, edges)
    bins = edges.numel() + 1
    ids[null] = bins  # the nulls' slice, after the quartiles
    filled = numbers.nan_to_num(0.0)
    low = torch.full((bins + 1,), math.inf, dtype=torch.float64)
    high = torch.full((bins + 1,), -math.inf, dtype=torch.float64)
    low.scatter_reduce_(0, ids, filled, "amin")
    high.scatter_reduce_(0, ids, filled, "amax")
    names = [f"{key} {float(a):.4g}-{float(b):.4g}" for a, b in zip(low[:bins], high[:bins])]
    return slice_metrics(targets, predictions, ids, [*names, f"{key}=null"], key, num_classes)


def metadata_slices(
    key: str, values: list[Any], targets: Tensor, predictions: Tensor, num_classes: int
) -> list[SliceResult]:
    """One slice per value of ``key``, named as a gate's ``slice`` selects it: a
    record's null (or a missing key) is ``lang=null``, not Python's "None". A
    numeric key of many values is cut at its quartiles (:func:`numeric_slices`)."""
    numeric = numeric_slices(key, values, targets, predictions, num_classes)
    if numeric is not None:
        return numeric
    codes: dict[Any, int] = {}
    try:
        coded = [codes.setdefault(v, len(codes)) for v in values]
    except TypeError:  # a list or an object as a value: sliced by its spelling
        coded = None
    if coded is None or not all(type(v) is str for v in codes):
        # Text is its own spelling, and no text equals a number; True equals 1 and
        # None is "null", so any other value is coded by how it is spelt.
        codes = {}
        coded = [codes.setdefault(spelt(v), len(codes)) for v in values]
    ids = int64s(coded)
    return slice_metrics(targets, predictions, ids, [f"{key}={v}" for v in codes], key, num_classes)
