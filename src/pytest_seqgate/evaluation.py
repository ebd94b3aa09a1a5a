"""One evaluation: predict, count, judge. The core's entry point for scripts.

``evaluate()`` is what the pytest fixture calls, and what a plain script can
call too: it takes objects (a model, datasets, settings) and returns an
:class:`Evaluation` that the gates and the report read.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pytest_seqgate.baseline import Baseline, Comparison, compare
from pytest_seqgate.batching import padded_sample
from pytest_seqgate.cache import PredictionSource
from pytest_seqgate.config import Settings
from pytest_seqgate.curves import Ranking, expected_calibration_error, ranking
from pytest_seqgate.data import RecordNames, SequenceData
from pytest_seqgate.diagnostics import (
    Finding,
    SliceResult,
    SliceSpec,
    accuracy_paradox,
    duplicates,
    leakage,
    length_slices,
    metadata_slices,
    missing_classes,
    near_duplicate_leakage,
    nondeterministic,
    padding_remedy,
    padding_sensitivity,
    padding_tolerance,
    require_key,
    traded_labels,
    train_test_gap,
)
from pytest_seqgate.distributed import local_device, sharded
from pytest_seqgate.exceptions import (
    ConfigError,
    GateFailure,
    ModelError,
    did_you_mean,
    label_list,
)
from pytest_seqgate.gates import (
    GAP_METRICS,
    GateResult,
    check_regression_metric,
    failure_message,
    judge,
)
from pytest_seqgate.inference import (
    ForwardHook,
    Predictions,
    Progress,
    calling_convention,
    model_class,
    model_labels,
    predict,
    require_module,
    resolve_device,
    scores_alone,
    weights_precision,
)
from pytest_seqgate.metrics import PER_CLASS_METRICS, Metrics, compute_metrics, confusion_matrix
from pytest_seqgate.stats import (
    batched_metrics,
    bootstrap_margins,
    clopper_pearson_interval,
    percentile_interval,
    wilson_interval,
)

CustomMetrics = Callable[["Evaluation"], Mapping[str, float]]


RATE_METRICS = ("accuracy", "precision", "recall")


@dataclass
class Uncertainty:
    """Intervals for the metrics of one confusion matrix, at any confidence level.

    Rates (accuracy, per-class precision and recall) get a closed-form or exact
    binomial interval; F1 and the other averaged metrics get percentile
    intervals from bootstrap resamples, kept so that a gate asking for another
    confidence level needs no new resampling.
    """

    cm: Tensor
    method: str = "wilson"
    confidence: float = 0.95
    resamples: int = 0
    seed: int = 0
    samples: dict[str, Tensor] = field(default_factory=dict)
    _levels: dict[float, dict[str, Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __repr__(self) -> str:
        """One line: the dataclass's printed every bootstrap sample, thousands of
        numbers."""
        rates = "Clopper-Pearson" if self.method == "clopper_pearson" else "Wilson"
        resampled = (
            f"; {', '.join(self.samples)} from {self.resamples} bootstrap resamples "
            f"(seed {self.seed})"
            if self.samples
            else "; no bootstrap"
        )
        return (
            f"<Uncertainty of {int(self.cm.sum())} samples at {self.confidence * 100:g}%: "
            f"{rates} intervals for the rates{resampled}>"
        )

    @classmethod
    def of(cls, cm: Tensor, settings: Settings) -> Uncertainty:
        samples = {}
        if settings.bootstrap > 0 and int(cm.sum()) > 0:
            samples = batched_metrics(bootstrap_margins(cm, settings.bootstrap, settings.seed))
        return cls(
            cm, settings.interval, settings.confidence, settings.bootstrap, settings.seed, samples
        )

    def _rate(self, successes: Tensor, trials: Tensor, confidence: float) -> Tensor:
        if self.method == "clopper_pearson":
            return clopper_pearson_interval(successes, trials, confidence)
        return wilson_interval(successes, trials, confidence)

    def _table(self, level: float) -> dict[str, Tensor]:
        """Every interval at one confidence level, computed once and kept: the
        terminal, JSON, Markdown and HTML reports and the gates read the same
        intervals, so each level costs one vectorized pass (one quantile over
        the stacked bootstrap samples) however many times it is read."""
        table = self._levels.get(level)
        if table is None:
            tp = self.cm.diagonal()
            table = {
                "accuracy": self._rate(tp.sum(), self.cm.sum(), level),
                "precision": self._rate(tp, self.cm.sum(0), level),
                "recall": self._rate(tp, self.cm.sum(1), level),
            }
            scalars = [k for k, v in self.samples.items() if v.dim() == 1]
            if scalars:
                stacked = torch.stack([self.samples[k] for k in scalars], 1)
                table.update(zip(scalars, _not_a_point(percentile_interval(stacked, level))))
            if "f1" in self.samples:
                table["f1"] = _not_a_point(percentile_interval(self.samples["f1"], level))
            self._levels[level] = table
        return table

    def interval(
        self, metric: str, class_index: int | None = None, confidence: float | None = None
    ) -> Tensor | None:
        """``[low, high]`` (float64), or None when the metric has no interval."""
        table = self._table(self.confidence if confidence is None else confidence)
        found = None
        if metric == "accuracy":
            found = table["accuracy"]
        elif metric in ("precision", "recall", "f1") and class_index is not None:
            found = table[metric][class_index] if metric in table else None
        elif class_index is None and metric in self.samples:
            found = table[metric]
        return None if found is None or bool(found.isnan().any()) else found

    def bootstrapped(self, metric: str) -> bool:
        """Whether ``metric`` was resampled (its interval, if None, is a point the
        bootstrap collapsed to, not one that was never computed)."""
        return metric in self.samples

    def per_class(self, labels: tuple[str, ...]) -> dict[str, dict[str, Tensor]]:
        table = self._table(self.confidence)
        out: dict[str, dict[str, Tensor]] = {}
        for i, name in enumerate(labels):
            out[name] = {"precision": table["precision"][i], "recall": table["recall"][i]}
            if "f1" in table:
                out[name]["f1"] = table["f1"][i]
        return out


def _not_a_point(intervals: Tensor) -> Tensor:
    """Bootstrap intervals ``[..., 2]`` with those of zero width made NaN (no
    interval). Every resample gives the same value when the eval set holds no error
    of the kind the metric counts (a class found perfectly: F1 1.0 in each of
    them): the percentile bootstrap then says [1.000, 1.000] on 40 samples as on
    40,000, a certainty the sample cannot give."""
    return intervals.masked_fill((intervals[..., :1] == intervals[..., 1:]), float("nan"))


# Errors a failed per-class gate lists (in its message and the reports).
EXAMPLES = 3
#: Why near copies were not looked for in a set of feature vectors.
NOT_TOKENS = "they are measured on token ids, not feature vectors"


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
    uncertainty: Uncertainty
    ranking: Ranking | None = None
    ece: float = float("nan")
    gate_on: str = "point"
    min_support: int = 0
    train_metrics: Metrics | None = None
    # The contract gives train_metrics the shape of metrics, intervals included.
    train_uncertainty: Uncertainty | None = None
    train_gaps: dict[str, float] = field(default_factory=dict)
    train_sample: dict[str, Any] = field(default_factory=dict)
    #: Why near copies of training sequences were not looked for ("" when they were).
    near_unchecked: str = ""
    findings: list[Finding] = field(default_factory=list)
    custom_metrics: dict[str, float] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    seconds: float = 0.0
    confidence: float = 0.95
    device_note: str = ""
    # Set when the predictions came from an earlier run's cache (--seqgate-cache):
    # the headline says so, since nothing ran on the model this time.
    cache_note: str = ""
    precision: str = "fp32"
    #: seqgate_threshold, where it decided the classes (binary): None for argmax.
    threshold: float | None = None
    lengths: Tensor | None = None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    slices: list[SliceResult] = field(default_factory=list)
    comparison: Comparison | None = None
    # Where each sample came from, for the examples a failed gate shows.
    record_names: RecordNames = field(default_factory=RecordNames)

    def __repr__(self) -> str:
        # pytest prints a failing test's arguments: the fields' tensors made the
        # seqgate_evaluation fixture's value a screenful of numbers.
        from pytest_seqgate.report import headline

        return f"<Evaluation {headline(self)}>"

    @property
    def n_samples(self) -> int:
        return int(self.targets.numel())

    def error_examples(self, index: int, kind: str, limit: int = EXAMPLES) -> list[dict[str, Any]]:
        """The model's most confident errors on class ``index``: ``missed``, samples
        of the class predicted as another, lowest P(class) first, or
        ``false_alarms``, samples of other classes predicted as it, highest
        P(class) first (without scores, the first in dataset order). They answer
        the question a failed recall or precision gate raises: which records."""
        predicted = self.predictions.predictions
        wrong = (
            (self.targets == index) & (predicted != index)
            if kind == "missed"
            else (predicted == index) & (self.targets != index)
        )
        rows = torch.nonzero(wrong).squeeze(1)
        scores = self.predictions.scores
        if kind == "missed":
            rows = self.least_sure_of_the_truth(rows)
        elif scores.shape[1] and rows.numel():
            rows = rows[torch.argsort(scores[rows, index], descending=True, stable=True)]
        return self.describe(rows[:limit])

    def describe(self, rows: Tensor) -> list[dict[str, Any]]:
        """Each sample of ``rows``: where it came from, its true and predicted class,
        and (with scores) the probability of each."""
        predicted, scores = self.predictions.predictions, self.predictions.scores
        examples = []
        for i in rows.tolist():
            true, guess = int(self.targets[i]), int(predicted[i])
            example: dict[str, Any] = {
                "record": self.record_names(i),
                "true": self.labels[true],
                "predicted": self.labels[guess],
            }
            if scores.shape[1]:
                example["p_true"] = float(scores[i, true])
                example["p_predicted"] = float(scores[i, guess])
            examples.append(example)
        return examples

    def least_sure_of_the_truth(self, rows: Tensor) -> Tensor:
        """``rows`` with the lowest probability of their true class first (as they
        are without scores): the most confident errors lead."""
        scores = self.predictions.scores
        if not scores.shape[1] or not rows.numel():
            return rows
        p = scores[rows, self.targets[rows]]
        return rows[torch.argsort(p, stable=True)]

    def findings_of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def leaked(self) -> float | None:
        """The share of eval sequences that are exact or near copies of training
        ones (None without a training set): what ``max_leakage`` compares."""
        if self.train_metrics is None:
            return None
        # Exact and near copies are disjoint sets of eval sequences, so shares add.
        return sum(float(f.data["fraction"]) for f in self.findings_of("leakage"))

    def for_slice(self, spec: SliceSpec) -> Evaluation:
        """The same evaluation restricted to a slice (metrics only, no findings)."""
        assert self.lengths is not None
        mask = spec.mask(self.lengths, self.metadata)
        targets = self.targets[mask]
        p = self.predictions
        sliced = Predictions(
            p.predictions[mask], p.scores[mask], p.device, p.batch_size, p.hashes[mask]
        )
        cm = confusion_matrix(targets, sliced.predictions, len(self.labels))
        u = self.uncertainty
        return Evaluation(
            name=f"{self.name}[{spec.name}]",
            model=self.model,
            eval_data=self.eval_data,
            device=self.device,
            labels=self.labels,
            targets=targets,
            predictions=sliced,
            metrics=compute_metrics(cm),
            uncertainty=Uncertainty(cm, u.method, u.confidence, 0, u.seed),
            ranking=ranking(sliced.scores, targets)
            if targets.numel() and sliced.scores.shape[1]
            else None,
            ece=expected_calibration_error(sliced.scores, targets)
            if sliced.scores.shape[1]
            else float("nan"),
            custom_metrics=self.custom_metrics,
            confidence=self.confidence,
            gate_on=self.gate_on,
            min_support=self.min_support,
        )

    def check(self, **gates: Any) -> list[GateResult]:
        """Assert gates outside pytest (a training script's last step, a notebook):
        the marker's keys, its verdicts and its failure message, raised as
        :class:`GateFailure`. The results stay on the evaluation, so a report
        written afterwards lists them, the failed ones too."""
        __tracebackhide__ = True
        results = judge(self, gates, "check()", "check()")
        self.gates.extend(results)
        if not all(r.passed for r in results):
            raise GateFailure(failure_message(results, f"{self.name} on {self.eval_data}"))
        return results

    def value(self, metric: str, class_name: str | None = None) -> float | None:
        """One number by the names a gate uses: ``ev.value("recall", "spam")`` (or
        ``"recall[spam]"``, as a gate line writes it), ``ev.value("macro_f1")``,
        ``ev.value("train_test_gap.accuracy")``, ``"leakage"``, a custom metric's
        name. None where it is undefined (no baseline, no training set, no scores
        kept). A test that asserts on numbers reads what a gate reads."""
        __tracebackhide__ = True  # a misnamed metric: pytest shows the test's line
        found = self._value(metric, class_name)
        # NaN is how the counts say "undefined" (ECE without scores, a custom
        # metric's NaN); an `is None` assert must read it as the others are read.
        return None if found is None or found != found else found

    def _value(self, metric: str, class_name: str | None) -> float | None:
        __tracebackhide__ = True
        if not isinstance(class_name, (str, type(None))):
            named = str(class_name) in self.labels and not isinstance(class_name, bool)
            raise ConfigError(
                f"value({metric!r}, {class_name!r}): a class is given by its name"
                + (f" (did you mean {str(class_name)!r}?)" if named else "")
                + f"; the classes are {label_list(self.labels)}"
            )
        bracketed = CLASS_IN_BRACKETS.match(metric)
        if (
            class_name is None
            and bracketed
            and not metric.startswith(("regression.", "train_test_gap."))
        ):
            # A gate line's and the report's spelling: value("recall[spam]").
            metric, class_name = bracketed.group(1), bracketed.group(2)
        if metric == "leakage" and class_name is None:
            return self.leaked
        if class_name is None and metric in PER_CLASS_NUMBERS:
            raise ConfigError(
                f"{metric} is per class: name one of {label_list(self.labels)}, as in "
                f"value({metric!r}, {self.labels[-1]!r})"
            )
        if class_name is not None and metric in self.metrics.summary:
            raise ConfigError(f"{metric} is not per class: value({metric!r}) takes no class")
        if class_name is not None and class_name not in self.labels:
            raise ConfigError(
                f"no class {class_name!r}{did_you_mean(class_name, self.labels)}; the classes "
                f"are {label_list(self.labels)}"
            )
        if metric.startswith("train_test_gap."):
            key = metric.split(".", 1)[1]
            if key not in GAP_METRICS and key not in self.train_gaps:
                # A misspelt name read as "undefined" (None) would pass an `is None`.
                raise ConfigError(
                    f"unknown metric {metric!r}{did_you_mean(key, GAP_METRICS)}; "
                    f"train_test_gap. takes {', '.join(GAP_METRICS)}"
                )
            if key == "recall":
                # The worst class gap, so "recall" gates every class at once.
                values = [v for k, v in self.train_gaps.items() if k.startswith("recall[")]
                defined = [v for v in values if v == v]
                return max(defined) if defined else None
            return self.train_gaps.get(key)
        if metric in ("average_precision", "roc_auc"):
            if self.ranking is None:
                return None
            values = getattr(self.ranking, metric)
            return float(values[self.labels.index(class_name)])
        if metric.startswith("regression."):
            key = metric.split(".", 1)[1] + (f"[{class_name}]" if class_name else "")
            try:
                check_regression_metric(key, self.labels)
            except ConfigError as exc:
                raise ConfigError(f"{metric!r}: {exc}") from None
            if self.comparison is None:
                return None
            if key in PER_CLASS_METRICS:
                # Every class's, as a gate reads it: the largest drop.
                drops = [self.comparison.drop(f"{key}[{name}]") for name in self.labels]
                defined = [d for d in drops if d is not None]
                return max(defined) if defined else None
            return self.comparison.drop(key)
        if metric in ("macro_average_precision", "macro_roc_auc"):
            return getattr(self.ranking, metric) if self.ranking is not None else None
        if metric == "ece":
            return self.ece
        if class_name is not None and metric in (*PER_CLASS_METRICS, "support"):
            return self.metrics.value(metric, self.labels.index(class_name))
        if metric in self.metrics.summary:
            return self.metrics.value(metric)
        if metric in self.custom_metrics:
            return float(self.custom_metrics[metric])
        known = [
            *self.metrics.summary,
            *PER_CLASS_NUMBERS,
            *SCORE_SUMMARY,
            "leakage",
            *self.custom_metrics,
        ]
        raise ConfigError(
            f"unknown metric {metric!r}{did_you_mean(metric, known)}; built-in: "
            f"{', '.join(self.metrics.summary)}, {', '.join(SCORE_SUMMARY)}, leakage; per class: "
            f"{', '.join(PER_CLASS_NUMBERS)}"
            + (
                f"; from pytest_seqgate_metrics: {', '.join(self.custom_metrics)}"
                if self.custom_metrics
                else ""
            )
        )


CLASS_IN_BRACKETS = re.compile(r"^(\w+)\[(.+)\]$")

# The summary numbers of the scores, beside the counts' ``Metrics.summary``, and
# the numbers read per class.
SCORE_SUMMARY = ("macro_average_precision", "macro_roc_auc", "ece")
PER_CLASS_NUMBERS = (*PER_CLASS_METRICS, "support", "average_precision", "roc_auc")


def resolve_labels(
    settings: Settings, data: SequenceData, num_classes: int | None
) -> tuple[str, ...]:
    """Class names: seqgate_labels, else names in the data, else indices as names."""
    if settings.labels is not None:
        return settings.labels
    if data.label_names is not None:
        return data.label_names
    top = int(data.labels.max()) + 1 if len(data) else 0
    return tuple(str(i) for i in range(max(top, num_classes or 0, 2)))


def _in_label_order(data: SequenceData, labels: tuple[str, ...]) -> SequenceData:
    """``data`` with its labels as indices into ``labels`` (the eval set's classes).

    Without seqgate_labels each file's class names are its own, sorted: a
    training set that lacks one of the eval set's classes would number the
    others differently, and its metrics would compare the wrong classes.
    """
    names = data.label_names
    if names is None or tuple(names) == tuple(labels):
        return data
    missing = [name for name in names if name not in labels]
    if missing:
        raise ConfigError(
            f"{data.source}: the training set has {'a class' if len(missing) == 1 else 'classes'} "
            f"{label_list(missing)} that the eval set's "
            f"labels {label_list(labels)} lack; set seqgate_labels to every class, in the model's "
            f"order"
        )
    lookup = torch.tensor([labels.index(name) for name in names], dtype=torch.int64)
    return dataclasses.replace(
        data, labels=lookup.take(data.labels), label_names=tuple(labels), names_inferred=False
    )


def _sample(data: SequenceData, limit: int, seed: int) -> tuple[SequenceData, dict[str, Any]]:
    if len(data) <= limit:
        return data, {"train_size": len(data), "train_sampled": len(data), "seed": seed}
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data), generator=gen)[:limit].sort().values
    return data.subset(index), {"train_size": len(data), "train_sampled": limit, "seed": seed}


def _home_device(model: Any) -> torch.device | None:
    """Where a module's weights are (its first parameter's or buffer's device);
    None for anything else, or a module with no tensors."""
    if not isinstance(model, nn.Module):
        return None
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return None


def _as_data(data: Any, source: str, settings: Settings | None) -> SequenceData | None:
    """A list or Dataset read as a conftest.py's fixture is read: a notebook's
    ``evaluate(model, pairs)`` takes what the plugin takes."""
    if data is None or isinstance(data, SequenceData):
        return data
    from pytest_seqgate.loading import configured_tokenizer, from_dataset

    settings = settings or Settings()
    return from_dataset(
        data,
        source,
        settings.labels,
        configured_tokenizer(settings),
        column_of=settings.column_of,
    )


def evaluate(
    model: nn.Module,
    eval_data: SequenceData | Sequence[Any] | Dataset[Any] | None,
    settings: Settings | None = None,
    train_data: SequenceData | Sequence[Any] | Dataset[Any] | None = None,
    forward: ForwardHook | None = None,
    custom_metrics: CustomMetrics | None = None,
    name: str | None = None,
    cache: PredictionSource | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Predict, count and diagnose: one pass over the eval set, one over the train sample.

    With a ``cache``, each inference (eval set, train sample, padding check) is
    read from disk when present, so xdist workers and unchanged re-runs share one.

    The model goes back to the device it came on, as it goes back to its
    train/eval modes: a session's model that the evaluation moved to the GPU
    would otherwise break the user's next test that feeds it CPU tensors.

    ``eval_data`` and ``train_data`` may be any form the fixtures take: a
    SequenceData, or a map-style Dataset or list of ``(sequence, label)`` pairs
    or of records.
    """
    eval_data = _as_data(eval_data, "eval_data", settings)
    train_data = _as_data(train_data, "train_data", settings)
    home = _home_device(model)
    try:
        return _evaluate(
            model, eval_data, settings, train_data, forward, custom_metrics, name, cache, progress
        )
    finally:
        if home is not None and _home_device(model) != home:
            model.to(home)


def _evaluate(
    model: nn.Module,
    eval_data: SequenceData | None,
    settings: Settings | None,
    train_data: SequenceData | None,
    forward: ForwardHook | None,
    custom_metrics: CustomMetrics | None,
    name: str | None,
    cache: PredictionSource | None,
    progress: Progress | None,
) -> Evaluation:
    settings = settings or Settings()
    started = time.perf_counter()
    require_module(model, "evaluate(): the model argument")
    spec = settings.device
    if spec == "auto":
        spec = local_device() or spec  # cuda:LOCAL_RANK under torchrun with GPUs
    device = resolve_device(spec, settings.source("device"))
    if eval_data is None:
        if not settings.streaming:
            # Only a caller of the core gets here: the plugin loads the set first.
            named = (
                f": load_dataset(settings, 'eval_data') reads the {settings.eval_data!r} "
                f"the settings name"
                if settings.eval_data
                else ""
            )
            raise ConfigError(
                f"evaluate(): no eval set; give one, a SequenceData or a list or Dataset of "
                f"(sequence, label) pairs or records{named}"
            )
        from pytest_seqgate.streaming import stream_eval

        eval_data, cache = stream_eval(model, settings, device, forward, shared=cache)
    carried = model_labels(model)
    # The sorted names were a guess at the model's order; its config says it. Names
    # the data declares (a dataset's ClassLabel, a SequenceData built in code) say
    # what its label indices mean, the config what the outputs mean: the labels
    # follow the outputs by name.
    if (
        carried is not None
        and settings.labels is None
        and set(eval_data.label_names or ("",)) <= set(carried)
    ):
        eval_data = _in_label_order(eval_data, carried)
    streamed = eval_data.values.numel() == 0
    # A model told the lengths, or given a mask, would be told wrong ones by data
    # padded before it came; one that takes the padded batch alone sees what it
    # would see in use, and the padding check judges that.
    told = None if forward is not None else calling_convention(model)
    if told not in (None, "plain"):
        for given in (eval_data, train_data):
            if given is not None:
                given.refuse_padded(told)
    num_classes = len(settings.labels) if settings.labels is not None else None
    if eval_data.label_names is not None and settings.labels is None:
        num_classes = len(eval_data.label_names)
    settings.require_binary(num_classes)  # before any inference, when known

    def cached(part: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        return compute() if cache is None else cache.get_or_compute(part, compute)

    def predict_part(
        data: SequenceData, index: Tensor, classes: int | None, outputs: str
    ) -> Predictions:
        return predict(
            model,
            data,
            device,
            settings.batch_size,
            classes,
            forward,
            progress,
            settings.precision,
            rows=None if index.numel() == len(data) else index,
            outputs=outputs,
            threshold=settings.threshold,
        )

    def run_eval(index: Tensor) -> dict[str, Tensor]:
        p = predict_part(eval_data, index, num_classes, settings.outputs)
        return {
            "predictions": p.predictions,
            "scores": p.scores,
            "hashes": p.hashes,
            "batch_size": torch.tensor(p.batch_size),
            # Per sample, so that torchrun's shards gather it like the rest.
            "probabilities": torch.full_like(p.predictions, p.outputs == "probabilities"),
        }

    # Under torchrun each rank predicts its shard; every rank gets the whole set back.
    stored = cached("eval", lambda: sharded(len(eval_data), run_eval))
    preds = Predictions(
        stored["predictions"],
        stored["scores"],
        str(device),
        int(stored["batch_size"]),
        stored["hashes"],
        _outputs_read(stored.get("probabilities")),
    )
    scored = preds.scores.shape[1]  # 0 when a streamed run keeps no scores
    labels = resolve_labels(settings, eval_data, scored or None)
    if scored and len(labels) != scored:
        raise ModelError(
            f"the model scores {preds.scores.shape[1]} classes but the labels are "
            f"{label_list(labels)}; set seqgate_labels to the model's classes in index order"
        )
    # (predict applied the threshold to the passes of a binary model.)
    settings.require_binary(len(labels))
    # The padding check compares a sample's scores in its batch with its scores
    # alone, so it keeps them when the rest are dropped.
    batched_scores = preds.scores
    if not settings.keep_scores:
        # As a streamed run without scores: nothing to rank (AP, ROC AUC) or
        # calibrate, the leanest evaluation, for a CI job that gates on counts.
        preds.scores = preds.scores[:, :0]
    cm = confusion_matrix(eval_data.labels, preds.predictions, len(labels))
    metrics = compute_metrics(cm)
    evaluation = Evaluation(
        name=name or _model_name(settings, model),
        model=settings.model or model_class(model),
        eval_data=settings.eval_data or eval_data.source,
        device=preds.device,
        labels=labels,
        targets=eval_data.labels,
        predictions=preds,
        metrics=metrics,
        uncertainty=Uncertainty.of(cm, settings),
        ranking=ranking(preds.scores, eval_data.labels) if preds.scores.shape[1] else None,
        ece=expected_calibration_error(preds.scores, eval_data.labels)
        if preds.scores.shape[1]
        else float("nan"),
        confidence=settings.confidence,
        gate_on=settings.gate_on,
        min_support=settings.min_support,
    )
    evaluation.precision = settings.precision
    if len(labels) == 2:
        evaluation.threshold = settings.threshold
    if settings.device == "auto" and device.type == "cpu":
        evaluation.device_note = "auto: no CUDA device, ran on the CPU"
    evaluation.lengths = eval_data.lengths
    evaluation.metadata = eval_data.metadata
    evaluation.record_names = eval_data.names
    # Labels in the wrong order make every other number wrong: said first.
    evaluation.findings.extend(traded_labels(metrics, labels))
    evaluation.findings.extend(accuracy_paradox(metrics, labels, settings.recall_floor))
    evaluation.findings.extend(missing_classes(metrics, labels))
    if settings.labels is None and eval_data.names_inferred:
        evaluation.findings.append(
            Finding(
                "label_order",
                "warning",
                f"seqgate_labels is not set: the classes are the eval set's label names in "
                f"sorted order, {label_list(labels)}, read as the model's outputs 0 to "
                f"{len(labels) - 1}; if the model orders its classes otherwise every per-class "
                f"number is wrong: set seqgate_labels to its order"
                + (
                    f" (its config.id2label names {label_list(carried)}, which the eval set's "
                    f"labels do not match)"
                    if carried is not None
                    else ""
                ),
                {"labels": list(labels)},
            )
        )
    elif (
        carried is not None
        and carried != labels
        and set(carried) == set(labels)
        and not any(f.kind == "label_order" for f in evaluation.findings)
    ):
        # The same names in another order: one of the two is wrong about the outputs,
        # and the model's own config is the likelier to be right. (Where the
        # predictions show the classes traded, that finding says it already.)
        evaluation.findings.append(
            Finding(
                "label_order",
                "error",
                f"{settings.source('labels')} orders the classes {label_list(labels)}, but the "
                f"model's config.id2label orders its outputs {label_list(carried)}: every "
                f"per-class number may be read against the wrong class; set seqgate_labels to "
                f"the config's order, or remove it to take the config's",
                {"labels": list(labels), "model_order": list(carried)},
            )
        )
    if settings.outputs == "auto" and preds.outputs == "probabilities":
        evaluation.findings.append(outputs_read_as_probabilities(batched_scores))
    evaluation.findings.extend(duplicates(eval_data, preds.hashes, labels))
    if settings.padding_check > 0 and len(eval_data) > 1 and (batched_scores.shape[1] or streamed):

        def run_alone() -> dict[str, Tensor]:
            gen = torch.Generator().manual_seed(settings.seed)
            sample = padded_sample(
                eval_data.lengths, settings.batch_size, settings.padding_check, gen
            )
            scores = sharded(
                sample.numel(),
                lambda i: {
                    "scores": scores_alone(
                        model,
                        eval_data,
                        sample[i],
                        device,
                        forward,
                        settings.precision,
                        settings.batch_size,
                        preds.outputs,
                    )
                },
            )["scores"]
            return {"index": sample, "scores": scores}

        # The sample travels with its scores: a streamed run draws it chunk by chunk.
        alone = cached("alone_padded", run_alone)
        if alone["index"].numel():
            tolerance = padding_tolerance(settings.precision, weights_precision(model))
            # A streamed run kept the sample's batched scores beside the rest.
            batched = alone["batched"] if "batched" in alone else batched_scores[alone["index"]]
            found = padding_sensitivity(
                batched,
                alone["scores"],
                alone["index"],
                eval_data,
                labels,
                tolerance=tolerance,
                remedy=padding_remedy(model, told),
            )
            if found and not streamed:
                # Padding, or a model that answers differently every run? The rows
                # that changed most, run alone once more, tell them apart.
                moved = (batched - alone["scores"]).abs().amax(1).argsort(descending=True)[:8]
                index = alone["index"][moved]
                again = scores_alone(
                    model,
                    eval_data,
                    index,
                    device,
                    forward,
                    settings.precision,
                    settings.batch_size,
                    preds.outputs,
                )
                found = (
                    nondeterministic(
                        alone["scores"][moved], again, index, eval_data, labels, tolerance
                    )
                    or found
                )
            evaluation.findings.extend(found)
    evaluation.slices = length_slices(
        eval_data.lengths, eval_data.labels, preds.predictions, len(labels)
    )
    for key in settings.slice_by or ():
        require_key(key, eval_data.metadata, settings.source("slice_by"))
        evaluation.slices.extend(
            metadata_slices(
                key, eval_data.metadata[key], eval_data.labels, preds.predictions, len(labels)
            )
        )
    streamed_train = train_data is None and settings.streams("train_data")
    if train_data is not None or streamed_train:
        threshold = settings.near_duplicate_threshold
        if threshold <= 0:
            evaluation.near_unchecked = f"{settings.source('near_duplicate_threshold')} is 0"
        elif eval_data.kind != "tokens" or (train_data is not None and train_data.kind != "tokens"):
            evaluation.near_unchecked = NOT_TOKENS
        near_wanted = not evaluation.near_unchecked
        # A streamed eval set keeps no sequences: its near copies are searched
        # by reading its file again, in a streamed training set's pass or below.
        near_here = near_wanted and (not streamed or streamed_train)
        # The data's own, not the model's, and the costliest check on a large
        # training set (MinHash: half a second per 100,000 sequences): its parts
        # (named by cache.DATA_PARTS' prefixes, which only parts the data alone
        # decides may use) are kept under a key of the data, which xdist workers,
        # re-runs and other models on the same sets share. The part's name says
        # what it holds.
        part = f"leakage_{threshold:g}" if near_here else "leakage_exact"
        if train_data is None:
            from pytest_seqgate.streaming import stream_train, train_sample

            # One pass over the file: the sample and the leaks (and the pass is shared).
            leaks = cached(
                f"train_stream_{part}",
                lambda: stream_train(
                    settings, None if streamed else eval_data, preds.hashes, near_here
                ),
            )
            train_set = _in_label_order(train_sample(leaks, settings), labels)
            if told not in (None, "plain"):
                train_set.refuse_padded(told)
            info = {
                "train_size": int(leaks["size"]),
                "train_sampled": len(train_set),
                "seed": settings.seed,
            }
            if near_here and not leaks["near"]:
                evaluation.near_unchecked = NOT_TOKENS
            train_record: Callable[[int], str] = dict(
                zip(leaks["match"].tolist(), leaks["names"])
            ).__getitem__
        else:
            train_data = _in_label_order(train_data, labels)
            train_set, info = _sample(train_data, settings.train_sample, settings.seed)
            train_record = train_data.names
            whole = train_data

            def find_leaks() -> dict[str, Tensor]:
                exact = torch.isin(preds.hashes, whole.content_hashes())
                found = {"exact": exact}
                if near_here:
                    from pytest_seqgate.minhash import near_copies

                    near = near_copies(whole, eval_data, threshold, settings.seed, exact)
                    found.update(zip(("index", "match", "similarity"), near))
                return found

            leaks = cached(part, find_leaks)
        if near_wanted and streamed and train_data is not None:
            from pytest_seqgate.streaming import stream_near_copies

            exact_leaks = leaks["exact"]
            near = cached(
                f"eval_stream_near_{threshold:g}",
                lambda: stream_near_copies(settings, exact_leaks, train_data),
            )
            if not near["near"]:
                evaluation.near_unchecked = NOT_TOKENS
            else:
                leaks = {**leaks, **near}
        train_preds = cached(
            "train",
            lambda: sharded(
                len(train_set),
                lambda i: {
                    "predictions": predict_part(
                        train_set, i, len(labels), preds.outputs
                    ).predictions
                },
            ),
        )
        train_cm = confusion_matrix(train_set.labels, train_preds["predictions"], len(labels))
        evaluation.train_metrics = compute_metrics(train_cm)
        # Closed-form intervals only: the bootstrap's cost (a second second at 100
        # classes) buys nothing the train/test gap reads.
        evaluation.train_uncertainty = Uncertainty.of(
            train_cm, dataclasses.replace(settings, bootstrap=0)
        )
        evaluation.train_sample = info
        evaluation.train_gaps, gap_findings = train_test_gap(
            evaluation.train_metrics, metrics, labels, info
        )
        evaluation.findings.extend(gap_findings)
        evaluation.findings.extend(leakage(leaks["exact"], eval_data))
        if "index" in leaks:
            index, match, similarity = leaks["index"], leaks["match"], leaks["similarity"]
            near_finding = near_duplicate_leakage(
                train_record, eval_data, threshold, index, match, similarity
            )
            if near_finding is not None:
                evaluation.findings.append(near_finding)
    if settings.trust_checkpoints and settings.model_factory is not None:
        evaluation.findings.append(
            Finding(
                "trusted_checkpoint",
                "warning",
                f"{settings.source('trust_checkpoints')} is set: a checkpoint that needs full "
                f"unpickling (which can run code from the file) was allowed to load",
                {"model": settings.model},
            )
        )
    if settings.baseline is not None:
        path = settings.existing("baseline")
        base = Baseline.load(
            path,
            settings.source("baseline"),
            evaluation.name,
            evaluation.eval_data,
            settings.display(path),
        )
        evaluation.comparison, base_findings = compare(evaluation, base, settings.display(path))
        evaluation.findings.extend(base_findings)
    if custom_metrics is not None:
        evaluation.custom_metrics = custom_numbers(custom_metrics(evaluation))
    evaluation.seconds = time.perf_counter() - started
    return evaluation


def custom_numbers(values: Any) -> dict[str, float]:
    """What a ``pytest_seqgate_metrics`` hook returned, as numbers, or a clear error."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"pytest_seqgate_metrics returned {type(values).__name__}; expected a dict of "
            f"metric names to numbers, e.g. {{'cost': 0.3}}"
        )
    from pytest_seqgate.gates import PER_CLASS_GATES, SCORE_METRICS
    from pytest_seqgate.metrics import SUMMARY_METRICS

    built_in = {*SUMMARY_METRICS, *SCORE_METRICS, *PER_CLASS_GATES.values(), "leakage"}
    out = {}
    for name, value in values.items():
        if str(name) in built_in or str(name).startswith(("train_test_gap", "regression")):
            # A gate on it would read the built-in number: the hook's would go unseen.
            raise ConfigError(
                f"pytest_seqgate_metrics returned {name!r}, the name of a built-in metric; "
                f"give yours another name (e.g. 'my_{name}')"
            )
        try:
            if isinstance(value, (bool, str, bytes)):
                raise TypeError
            # None, as value() gives for an undefined metric: undefined here too.
            out[str(name)] = float("nan") if value is None else float(value)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(
                f"pytest_seqgate_metrics returned {value!r} for {name!r}; a metric must be a "
                f"number (a float, an int or a one-element tensor), or None where it is "
                f"undefined"
            ) from None
    return out


def outputs_read_as_probabilities(scores: Tensor) -> Finding:
    """The warning that ``seqgate_outputs = auto`` read the outputs as probabilities.

    Rows that do not sum to 1 come from a sigmoid per class: each column is then
    its class's own probability (the scores its AP and ROC AUC are defined on),
    and the top one is the confidence calibration reads, not a share of 1. The
    range of the sums says which kind of head it was (a streamed run without
    scores has none to give)."""
    details: dict[str, Any] = {"outputs": "probabilities"}
    how = "as a final sigmoid or softmax gives"
    if scores.shape[1] > 1 and scores.shape[0]:
        low, high = torch.aminmax(scores.sum(1, dtype=torch.float64))
        if float(high) - float(low) > 1e-2 or abs(float(high) - 1) > 1e-2:
            details["row_sums"] = [float(low), float(high)]
            how = (
                f"and the rows sum to {float(low):.3g} to {float(high):.3g}, as a sigmoid "
                f"per class gives (a one-vs-rest head): each column is read as its class's "
                f"own probability"
            )
    return Finding(
        "outputs",
        "warning",
        f"the model's outputs were read as probabilities, not logits: every one lies in "
        f"[0, 1], {how}; set seqgate_outputs = probabilities to say so, or = logits if "
        f"they are logits",
        details,
    )


def _outputs_read(flags: Tensor | None) -> str:
    """How the eval pass read the model's outputs, from its per-sample flags."""
    if flags is None or flags.numel() == 0 or not bool(flags.any()):
        return "logits"
    if not bool(flags.all()):
        raise ModelError(
            "the ranks of this run read the model's outputs differently (some shards look "
            "like probabilities, some like logits); set seqgate_outputs = logits or "
            "probabilities"
        )
    return "probabilities"


def _model_name(settings: Settings, model: nn.Module) -> str:
    if settings.model:
        return settings.model.rsplit("/", 1)[-1]
    return model_class(model)
