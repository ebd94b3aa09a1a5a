"""One evaluation: predict, count, judge. The core's entry point for scripts.

``evaluate()`` is what the pytest fixture calls, and what a plain script can
call too: it takes objects (a model, datasets, settings) and returns an
:class:`Evaluation` that the gates and the report read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pytest_seqgate.config import Settings
from pytest_seqgate.data import SequenceData
from pytest_seqgate.diagnostics import (
    Finding,
    SliceResult,
    SliceSpec,
    accuracy_paradox,
    duplicates,
    leakage,
    length_slices,
    metadata_slices,
    near_duplicate_leakage,
    padding_sensitivity,
    train_test_gap,
)
from pytest_seqgate.exceptions import ConfigError, ModelError
from pytest_seqgate.gates import GateResult
from pytest_seqgate.inference import (
    ForwardHook,
    Predictions,
    predict,
    resolve_device,
    scores_alone,
)
from pytest_seqgate.metrics import Metrics, confusion_matrix, compute_metrics
from pytest_seqgate.stats import wilson_interval

CustomMetrics = Callable[["Evaluation"], Mapping[str, float]]


@dataclass
class Evaluation:
    """The result of one model on one eval set: everything the gates and report read."""

    name: str
    model: str
    eval_data: str
    device: str
    labels: tuple[str, ...]
    targets: Tensor
    predictions: Predictions
    metrics: Metrics
    intervals: dict[str, Any]
    train_metrics: Metrics | None = None
    train_gaps: dict[str, float] = field(default_factory=dict)
    train_sample: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    custom_metrics: dict[str, float] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    seconds: float = 0.0
    confidence: float = 0.95
    lengths: Tensor | None = None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    slices: list[SliceResult] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.targets.numel())

    def findings_of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def for_slice(self, spec: SliceSpec) -> Evaluation:
        """The same evaluation restricted to a slice (metrics only, no findings)."""
        assert self.lengths is not None
        mask = spec.mask(self.lengths, self.metadata)
        targets = self.targets[mask]
        preds = self.predictions.predictions[mask]
        metrics = compute_metrics(confusion_matrix(targets, preds, len(self.labels)))
        return Evaluation(
            name=f"{self.name}[{spec.name}]", model=self.model, eval_data=self.eval_data,
            device=self.device, labels=self.labels, targets=targets,
            predictions=self.predictions, metrics=metrics,
            intervals=_intervals(metrics, self.labels, self.confidence),
            custom_metrics=self.custom_metrics, confidence=self.confidence,
        )

    def gate_value(self, metric: str, class_name: str | None) -> float | None:
        """The number a gate compares: built-in, train/test gap, or custom."""
        if metric.startswith("train_test_gap."):
            key = metric.split(".", 1)[1]
            if key == "recall":
                # The worst class gap, so "recall" gates every class at once.
                values = [v for k, v in self.train_gaps.items() if k.startswith("recall[")]
                defined = [v for v in values if v == v]
                return max(defined) if defined else None
            return self.train_gaps.get(key)
        if class_name is not None:
            return self.metrics.value(metric, self.labels.index(class_name))
        if metric in self.metrics.summary:
            return self.metrics.value(metric)
        if metric in self.custom_metrics:
            return float(self.custom_metrics[metric])
        raise ConfigError(
            f"unknown metric {metric!r} in a gate; built-in: {', '.join(self.metrics.summary)}"
            + (f"; from pytest_seqgate_metrics: {', '.join(self.custom_metrics)}"
               if self.custom_metrics else "")
        )


def resolve_labels(settings: Settings, data: SequenceData, num_classes: int | None) \
        -> tuple[str, ...]:
    """Class names: seqgate_labels, else names in the data, else indices as names."""
    if settings.labels is not None:
        return settings.labels
    if data.label_names is not None:
        return data.label_names
    top = int(data.labels.max()) + 1 if len(data) else 0
    return tuple(str(i) for i in range(max(top, num_classes or 0, 2)))


def _intervals(metrics: Metrics, labels: tuple[str, ...], confidence: float) -> dict[str, Any]:
    cm = metrics.confusion_matrix
    tp = cm.diagonal()
    acc = wilson_interval(tp.sum(), cm.sum(), confidence)
    precision = wilson_interval(tp, cm.sum(0), confidence)
    recall = wilson_interval(tp, cm.sum(1), confidence)
    return {
        "method": "wilson",
        "confidence": confidence,
        "accuracy": acc,
        "per_class": {name: {"precision": precision[i], "recall": recall[i]}
                      for i, name in enumerate(labels)},
    }


def _sample(data: SequenceData, limit: int, seed: int) -> tuple[SequenceData, dict[str, Any]]:
    if len(data) <= limit:
        return data, {"train_size": len(data), "train_sampled": len(data), "seed": seed}
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data), generator=gen)[:limit].sort().values
    return data.subset(index), {"train_size": len(data), "train_sampled": limit, "seed": seed}


def evaluate(
    model: nn.Module,
    eval_data: SequenceData,
    settings: Settings | None = None,
    train_data: SequenceData | None = None,
    forward: ForwardHook | None = None,
    custom_metrics: CustomMetrics | None = None,
    name: str | None = None,
) -> Evaluation:
    """Predict, count and diagnose: one pass over the eval set, one over the train sample."""
    settings = settings or Settings()
    started = time.perf_counter()
    device = resolve_device(settings.device, settings.source("device"))
    num_classes = len(settings.labels) if settings.labels is not None else None
    if eval_data.label_names is not None and settings.labels is None:
        num_classes = len(eval_data.label_names)
    preds = predict(model, eval_data, device, settings.batch_size, num_classes, forward)
    labels = resolve_labels(settings, eval_data, preds.scores.shape[1])
    if len(labels) != preds.scores.shape[1]:
        raise ModelError(
            f"the model scores {preds.scores.shape[1]} classes but the labels are "
            f"{list(labels)}; set seqgate_labels to the model's classes in index order"
        )
    metrics = compute_metrics(confusion_matrix(eval_data.labels, preds.predictions, len(labels)))
    evaluation = Evaluation(
        name=name or _model_name(settings, model),
        model=settings.model or type(model).__name__,
        eval_data=settings.eval_data or eval_data.source,
        device=preds.device,
        labels=labels,
        targets=eval_data.labels,
        predictions=preds,
        metrics=metrics,
        intervals=_intervals(metrics, labels, settings.confidence),
        confidence=settings.confidence,
    )
    evaluation.lengths = eval_data.lengths
    evaluation.metadata = eval_data.metadata
    evaluation.findings.extend(accuracy_paradox(metrics, labels, settings.recall_floor))
    evaluation.findings.extend(duplicates(eval_data, preds.hashes))
    if settings.padding_check > 0 and len(eval_data) > 1:
        gen = torch.Generator().manual_seed(settings.seed)
        sample = torch.randperm(len(eval_data), generator=gen)[: settings.padding_check]
        sample = sample.sort().values
        alone = scores_alone(model, eval_data, sample, device, forward)
        evaluation.findings.extend(padding_sensitivity(
            preds.scores[sample], alone, sample, eval_data, labels))
    evaluation.slices = length_slices(eval_data.lengths, eval_data.labels, preds.predictions,
                                      len(labels))
    for key in settings.slice_by or ():
        if key not in eval_data.metadata:
            raise ConfigError(f"{settings.source('slice_by')}: the eval set has no key {key!r}; "
                              f"its extra keys are {sorted(eval_data.metadata)}")
        evaluation.slices.extend(metadata_slices(key, eval_data.metadata[key], eval_data.labels,
                                                 preds.predictions, len(labels)))
    if train_data is not None:
        sample, info = _sample(train_data, settings.train_sample, settings.seed)
        train_preds = predict(model, sample, device, settings.batch_size, len(labels), forward)
        evaluation.train_metrics = compute_metrics(
            confusion_matrix(sample.labels, train_preds.predictions, len(labels)))
        evaluation.train_sample = info
        evaluation.train_gaps, gap_findings = train_test_gap(
            evaluation.train_metrics, metrics, labels, info)
        evaluation.findings.extend(gap_findings)
        exact = torch.isin(preds.hashes, train_data.content_hashes())
        evaluation.findings.extend(leakage(exact, eval_data))
        if settings.near_duplicate_threshold > 0 and eval_data.kind == "tokens" \
                and train_data.kind == "tokens":
            near = near_duplicate_leakage(train_data, eval_data,
                                          settings.near_duplicate_threshold, settings.seed, exact)
            if near is not None:
                evaluation.findings.append(near)
    if custom_metrics is not None:
        evaluation.custom_metrics = {k: float(v) for k, v in custom_metrics(evaluation).items()}
    evaluation.seconds = time.perf_counter() - started
    return evaluation


def _model_name(settings: Settings, model: nn.Module) -> str:
    if settings.model:
        return settings.model.rsplit("/", 1)[-1]
    return type(model).__name__
