"""Gate specs parsed from marker keywords, and their verdicts.

Parsing happens at collection, before any inference, so a typo in a gate is
a usage error in seconds rather than a failure after a long evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from pytest_seqgate.diagnostics import SliceSpec
from pytest_seqgate.exceptions import ConfigError

if TYPE_CHECKING:
    from pytest_seqgate.evaluation import Evaluation

SUMMARY_GATES = {
    "min_accuracy": "accuracy",
    "min_balanced_accuracy": "balanced_accuracy",
    "min_macro_f1": "macro_f1",
    "min_weighted_f1": "weighted_f1",
    "min_mcc": "mcc",
    "min_kappa": "kappa",
}
PER_CLASS_GATES = {"min_precision": "precision", "min_recall": "recall", "min_f1": "f1"}
GAP_METRICS = ("accuracy", "macro_f1", "recall")
OTHER_KEYS = ("max_train_test_gap", "fail_on_paradox", "fail_on_padding_sensitivity",
              "max_leakage", "slice")
FINDING_GATES = {"fail_on_paradox": "accuracy_paradox",
                 "fail_on_padding_sensitivity": "padding_sensitivity"}
KNOWN_KEYS = (*SUMMARY_GATES, *PER_CLASS_GATES, *OTHER_KEYS)

HINT = (
    "What to do: if the model got worse, fix it before merging; if a threshold is wrong, "
    "change it in the gate. The full report is in the terminal summary "
    "(and in the --seqgate-report files)."
)


@dataclass(frozen=True)
class Gate:
    """One comparison: ``metric[class] op threshold``; ``class_name`` None for summaries."""

    key: str
    metric: str
    class_name: str | None
    op: str  # ">=" | "<="
    threshold: float

    @property
    def label(self) -> str:
        return f"{self.metric}[{self.class_name}]" if self.class_name else self.metric


@dataclass(frozen=True)
class GateSpec:
    """Everything one marker or ``check()`` call asks for."""

    gates: tuple[Gate, ...] = ()
    fail_on: tuple[str, ...] = tuple(FINDING_GATES.values())
    max_leakage: float | None = None
    slice: SliceSpec | None = None


@dataclass
class GateResult:
    test: str
    metric: str
    class_name: str | None
    op: str
    threshold: float
    value: float | None
    passed: bool
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.metric}[{self.class_name}]" if self.class_name else self.metric

    def to_json(self) -> dict[str, Any]:
        return {"test": self.test, "metric": self.metric, "class": self.class_name,
                "op": self.op, "threshold": self.threshold, "value": self.value,
                "passed": self.passed, "reason": self.reason}


def _threshold(key: str, value: Any, lo: float = 0.0, hi: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"Expected `{key}` to be a number in [{lo:g}, {hi:g}], "
                          f"but got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"Expected `{key}` to be in [{lo:g}, {hi:g}], but got {value!r}")
    return float(value)


def _per_class(key: str, value: Any, labels: tuple[str, ...] | None) -> list[tuple[str | None,
                                                                                   float]]:
    """A number (every class) or ``{class name: number}``."""
    if isinstance(value, Mapping):
        out: list[tuple[str | None, float]] = []
        for name, threshold in value.items():
            if labels is not None and name not in labels:
                raise ConfigError(
                    f"`{key}` names class {name!r}, which is not one of the labels "
                    f"{list(labels)}"
                )
            out.append((str(name), _threshold(f"{key}[{name!r}]", threshold)))
        return out
    return [(None, _threshold(key, value))]


def parse_gates(kwargs: Mapping[str, Any], labels: tuple[str, ...] | None = None,
                custom_metrics: Iterable[str] = (), allow_unknown_custom: bool = False) \
        -> GateSpec:
    """Validate marker keywords; raise :class:`ConfigError` naming the bad key.

    ``labels`` None defers the class-name check to :func:`bind_classes`, when
    the labels become known from the data. Keys ``min_X``/``max_X`` for metrics
    added by a ``pytest_seqgate_metrics`` hook are accepted when ``X`` is in
    ``custom_metrics`` (or any, with ``allow_unknown_custom``: checked later).
    """
    custom = set(custom_metrics)
    gates: list[Gate] = []
    fail_on = dict.fromkeys(FINDING_GATES.values(), True)
    max_leakage = None
    slice_spec = None
    for key, value in kwargs.items():
        if key in SUMMARY_GATES:
            gates.append(Gate(key, SUMMARY_GATES[key], None, ">=", _threshold(key, value)))
        elif key in PER_CLASS_GATES:
            for name, threshold in _per_class(key, value, labels):
                gates.append(Gate(key, PER_CLASS_GATES[key], name, ">=", threshold))
        elif key == "max_train_test_gap":
            if isinstance(value, Mapping):
                for metric, threshold in value.items():
                    if metric not in GAP_METRICS:
                        raise ConfigError(
                            f"`max_train_test_gap` takes metrics {list(GAP_METRICS)}, "
                            f"but got {metric!r}"
                        )
                    gates.append(Gate(key, f"train_test_gap.{metric}", None, "<=",
                                      _threshold(f"max_train_test_gap[{metric!r}]", threshold)))
            else:
                threshold = _threshold(key, value)
                gates.extend(Gate(key, f"train_test_gap.{m}", None, "<=", threshold)
                             for m in ("accuracy", "macro_f1"))
        elif key in FINDING_GATES:
            if not isinstance(value, bool):
                raise ConfigError(f"Expected `{key}` to be True or False, but got {value!r}")
            fail_on[FINDING_GATES[key]] = value
        elif key == "slice":
            if not isinstance(value, str):
                raise ConfigError(f"Expected `slice` to be a string like 'length>=128', "
                                  f"but got {value!r}")
            slice_spec = SliceSpec.parse(value)
        elif key == "max_leakage":
            max_leakage = _threshold(key, value)
        elif key[:4] in ("min_", "max_") and (key[4:] in custom or allow_unknown_custom):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"Expected `{key}` to be a number, but got {value!r}")
            gates.append(Gate(key, key[4:], None, ">=" if key[:4] == "min_" else "<=",
                              float(value)))
        else:
            raise ConfigError(
                f"unknown gate `{key}`; known gates: {', '.join(KNOWN_KEYS)}"
                + (f", and min_/max_ of {', '.join(sorted(custom))}" if custom else "")
            )
    return GateSpec(tuple(gates), tuple(k for k, v in fail_on.items() if v), max_leakage,
                    slice_spec)


def bind_classes(spec: GateSpec, labels: tuple[str, ...]) -> GateSpec:
    """Expand every-class gates and check class names once the labels are known."""
    gates: list[Gate] = []
    for gate in spec.gates:
        if gate.metric in PER_CLASS_GATES.values() and gate.class_name is None:
            gates.extend(Gate(gate.key, gate.metric, name, gate.op, gate.threshold)
                         for name in labels)
            continue
        if gate.class_name is not None and gate.class_name not in labels:
            raise ConfigError(f"`{gate.key}` names class {gate.class_name!r}, which is not one "
                              f"of the labels {list(labels)}")
        gates.append(gate)
    return GateSpec(tuple(gates), spec.fail_on, spec.max_leakage, spec.slice)


def _undefined_reason(metric: str, name: str | None) -> str:
    if metric == "precision":
        return f"undefined: the model never predicted {name!r} (no predictions of the class)"
    if metric == "recall":
        return f"undefined: the eval set has no samples of {name!r}"
    if metric == "f1":
        return f"undefined: {name!r} has no samples and no predictions"
    if metric.startswith("train_test_gap"):
        return "undefined: no training set (set seqgate_train_data)"
    return "undefined on this eval set"


def check(evaluation: Evaluation, spec: GateSpec, test: str) -> list[GateResult]:
    """Judge every gate of ``spec``; one result per gate, plus paradox and leakage."""
    spec = bind_classes(spec, evaluation.labels)
    results = []
    scope = evaluation.for_slice(spec.slice) if spec.slice is not None else evaluation
    where = f" on slice {spec.slice.name} ({scope.n_samples} samples)" if spec.slice else ""
    for gate in spec.gates:
        value = scope.gate_value(gate.metric, gate.class_name)
        if value is None or math.isnan(value):
            results.append(GateResult(test, gate.metric, gate.class_name, gate.op,
                                      gate.threshold, None, False,
                                      _undefined_reason(gate.metric, gate.class_name) + where))
            continue
        passed = value >= gate.threshold if gate.op == ">=" else value <= gate.threshold
        results.append(GateResult(test, gate.metric, gate.class_name, gate.op, gate.threshold,
                                  value, passed, where.strip()))
    for kind in spec.fail_on:
        for finding in evaluation.findings_of(kind):
            results.append(GateResult(test, kind, finding.data.get("class"), "absent", 0.0,
                                      None, False, finding.message))
    if spec.max_leakage is not None:
        leaked = evaluation.findings_of("leakage")
        # Exact and near copies are disjoint sets of eval sequences, so fractions add.
        fraction = sum(float(f.data["fraction"]) for f in leaked)
        if evaluation.train_metrics is None:
            results.append(GateResult(test, "leakage", None, "<=", spec.max_leakage, None,
                                      False, "undefined: no training set (set "
                                      "seqgate_train_data)"))
        else:
            results.append(GateResult(test, "leakage", None, "<=", spec.max_leakage, fraction,
                                      fraction <= spec.max_leakage,
                                      " ".join(f.message for f in leaked)))
    return results


def format_threshold(result: GateResult) -> str:
    return "absent" if result.op == "absent" else f"{result.op} {result.threshold:g}"


def format_number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def failure_message(results: list[GateResult], test: str) -> str:
    """Every violated gate as a table, then what to do."""
    failed = [r for r in results if not r.passed]
    rows = [[r.metric, r.class_name or "", format_threshold(r),
             "present" if r.op == "absent" else format_number(r.value), r.reason] for r in failed]
    table = tabulate(rows, headers=["metric", "class", "threshold", "value", "reason"],
                     tablefmt="simple", disable_numparse=True)
    return (f"seqgate: {len(failed)} of {len(results)} gate(s) failed for {test}\n"
            f"{table}\n{HINT}")
