"""Gate specs parsed from marker keywords, and their verdicts.

Parsing happens at collection, before any inference, so a typo in a gate is
a usage error in seconds rather than a failure after a long evaluation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from pytest_seqgate import PER_CLASS_METRICS, SUMMARY_METRICS
from pytest_seqgate.exceptions import ConfigError, as_share, counted, did_you_mean, label_list

if TYPE_CHECKING:
    from pytest_seqgate.diagnostics import SliceSpec
    from pytest_seqgate.evaluation import Evaluation

SUMMARY_GATES = {
    "min_accuracy": "accuracy",
    "min_balanced_accuracy": "balanced_accuracy",
    "min_macro_f1": "macro_f1",
    "min_weighted_f1": "weighted_f1",
    "min_mcc": "mcc",
    "min_kappa": "kappa",
    "min_macro_average_precision": "macro_average_precision",
    "min_macro_roc_auc": "macro_roc_auc",
}
MAX_GATES = {"max_ece": "ece"}
PER_CLASS_GATES = {
    "min_precision": "precision",
    "min_recall": "recall",
    "min_f1": "f1",
    "min_average_precision": "average_precision",
    "min_roc_auc": "roc_auc",
}
TRADE_OFF_GATES = {
    "min_recall_at_precision": "recall_at_precision",
    "min_precision_at_recall": "precision_at_recall",
}
GAP_METRICS = ("accuracy", "macro_f1", "recall")
FINDING_GATES = {
    "fail_on_paradox": "accuracy_paradox",
    "fail_on_padding_sensitivity": "padding_sensitivity",
    "fail_on_nondeterminism": "nondeterministic",
    "fail_on_significant_regression": "significant_regression",
}
FINDING_DEFAULTS = {
    "accuracy_paradox": True,
    "padding_sensitivity": True,
    "nondeterministic": True,
    "significant_regression": False,
}
OTHER_KEYS = (
    "max_regression",
    "max_train_test_gap",
    *FINDING_GATES,
    "max_leakage",
    "slice",
    "confidence",
    "min_support",
)
KNOWN_KEYS = (*SUMMARY_GATES, *MAX_GATES, *PER_CLASS_GATES, *TRADE_OFF_GATES, *OTHER_KEYS)
UNDERPOWERED_WIDTH = 0.1
# The errors behind a failed per-class gate: recall misses samples of the
# class, precision takes others for it, F1 does both; an accuracy paradox hides
# the misses of its class.
ERROR_KINDS = {
    "recall": ("missed",),
    "precision": ("false_alarms",),
    "f1": ("missed", "false_alarms"),
    "accuracy_paradox": ("missed",),
}
# Summary gates read from the counts: their examples are the misses of the
# class of lowest recall.
COUNT_SUMMARIES = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mcc", "kappa")
# Metrics read from the per-sample class probabilities, which a run with
# seqgate_keep_scores = false does not keep.
SCORE_METRICS = (
    "average_precision",
    "roc_auc",
    "macro_average_precision",
    "macro_roc_auc",
    "ece",
    *TRADE_OFF_GATES.values(),
)
NO_SCORES = (
    "needs the per-sample probabilities, which seqgate_keep_scores = false does not keep: "
    "set it to true (the default) to gate on it"
)
WHOLE_SET_METRICS = ("regression.", "train_test_gap.")

ADVICE = (
    "What to do: if the model got worse, fix it before merging; if a threshold is wrong, "
    "change it in the gate."
)
# Gates that failed for want of a number say nothing of the model.
UNDEFINED_ADVICE = (
    "What to do: no failed gate had a number to compare; its reason says what it needs "
    "(a training set, samples or predictions of the class, the scores)."
)
# Reasons can run to 300 characters (an accuracy paradox names the class, its
# share and the majority answer): wrapped, the table stays within a CI log's width.
REASON_WIDTH = 60


def where_the_report_is(quiet: bool, files: Sequence[str]) -> str:
    """The failure message's pointer to the full report, true for this run: under
    ``-q`` the terminal summary is one line, and report files exist only when set."""
    written = ", ".join(files)
    if quiet and files:
        return (
            f"The full report is in {written} (under -q the terminal summary is one line: "
            f"run without -q for its tables)."
        )
    if quiet:
        return (
            "Under -q the terminal summary is one line: run without -q for the full report "
            "(--seqgate-report writes it to .json, .md or .html files too)."
        )
    if files:
        return f"The full report is in the terminal summary, and in {written}."
    return (
        "The full report is in the terminal summary (--seqgate-report writes it to .json, "
        ".md or .html files too)."
    )


@dataclass(frozen=True)
class Gate:
    """One comparison: ``metric[class] op threshold``; ``class_name`` None for summaries.
    ``param`` is the fixed side of a trade-off gate (the precision of recall@precision)."""

    key: str
    metric: str
    class_name: str | None
    op: str  # ">=" | "<="
    threshold: float
    param: float | None = None

    def result(
        self,
        test: str,
        value: float | None,
        passed: bool,
        reason: str = "",
        bound: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> GateResult:
        return GateResult(
            test,
            self.metric,
            self.class_name,
            self.op,
            self.threshold,
            value,
            passed,
            reason,
            bound,
            extra or {},
        )


@dataclass(frozen=True)
class GateSpec:
    """Everything one marker or ``check()`` call asks for."""

    gates: tuple[Gate, ...] = ()
    fail_on: tuple[str, ...] = tuple(kind for kind, on in FINDING_DEFAULTS.items() if on)
    max_leakage: float | None = None
    slice: SliceSpec | None = None
    confidence: float | None = None  # set: gate on the interval's lower bound
    min_support: int | None = None


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
    bound: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``recall[spam]``, and ``recall[spam] on lang=fr`` for a slice's gate: a
        table row must not read as the whole set's number."""
        base = f"{self.metric}[{self.class_name}]" if self.class_name else self.metric
        return base + self.on

    @property
    def on(self) -> str:
        """`` on SLICE`` when the gate read a slice (JSON ``slice``), else ``""``."""
        where = self.extra.get("slice")
        return f" on {where}" if where else ""

    @property
    def xfail(self) -> str | None:
        """The reason of the test's xfail when the gate failed in a test expected to
        fail (``extra["xfail"]``, set once pytest has judged the test): a known
        weak class, which does not fail the run and must not read as if it did."""
        reason = self.extra.get("xfail")
        return None if reason is None else str(reason)

    @property
    def margin(self) -> float | None:
        """How far the number compared (the lower bound, when the gate reads it)
        clears the threshold; negative, by how much it misses: what the reader of
        a failed gate asks first. None for a finding's gate or an undefined value."""
        compared = self.bound if self.bound is not None else self.value
        if compared is None or self.op not in (">=", "<=") or math.isnan(compared):
            return None
        return compared - self.threshold if self.op == ">=" else self.threshold - compared

    @property
    def outcome(self) -> str:
        """PASS, FAIL or XFAIL, as the tables show it."""
        return "PASS" if self.passed else "XFAIL" if self.xfail is not None else "FAIL"

    def to_json(self) -> dict[str, Any]:
        out = {
            "test": self.test,
            "metric": self.metric,
            "class": self.class_name,
            "op": self.op,
            "threshold": self.threshold,
            "value": self.value,
            "margin": self.margin,
            "passed": self.passed,
            "reason": self.reason,
        }
        if self.bound is not None:
            out["lower_bound"] = self.bound
        out.update(self.extra)
        return out


def failed_gates(gates: Iterable[GateResult]) -> list[GateResult]:
    """The gates that failed the run: a failed gate of a test expected to fail
    (xfail) is not one of them."""
    return [g for g in gates if not g.passed and g.xfail is None]


def _threshold(key: str, value: Any, lo: float = 0.0, hi: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"Expected `{key}` to be a number in [{lo:g}, {hi:g}], but got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(
            f"Expected `{key}` to be in [{lo:g}, {hi:g}], but got {value!r}{as_share(value)}"
        )
    return float(value)


def _per_class(
    key: str, value: Any, labels: tuple[str, ...] | None, parse: Any = None
) -> list[tuple[str | None, Any]]:
    """A value for every class, or ``{class name: value}``."""
    parse = parse or _threshold
    if isinstance(value, Mapping):
        out: list[tuple[str | None, Any]] = []
        for name, threshold in value.items():
            if labels is not None and name not in labels:
                raise ConfigError(
                    f"`{key}` names class {name!r}{did_you_mean(str(name), labels)}, "
                    f"which is not one of the labels {label_list(labels)}"
                )
            out.append((str(name), parse(f"{key}[{name!r}]", threshold)))
        return out
    return [(None, parse(key, value))]


def _pair(key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(
            f"Expected `{key}` to be a pair (target, at), e.g. (0.9, 0.95), but got {value!r}"
        )
    return _threshold(f"{key}[0]", value[0]), _threshold(f"{key}[1]", value[1])


def _max_gates(
    key: str,
    value: Any,
    prefix: str,
    default: tuple[str, ...],
    allowed: tuple[str, ...] | None = None,
) -> list[Gate]:
    """``key=number`` (for the ``default`` metrics) or ``key={metric: number}``."""
    if not isinstance(value, Mapping):
        threshold = _threshold(key, value)
        return [Gate(key, f"{prefix}.{m}", None, "<=", threshold) for m in default]
    out = []
    for metric, threshold in value.items():
        if allowed is not None and metric not in allowed:
            raise ConfigError(f"`{key}` takes metrics {list(allowed)}, but got {metric!r}")
        out.append(
            Gate(key, f"{prefix}.{metric}", None, "<=", _threshold(f"{key}[{metric!r}]", threshold))
        )
    return out


def check_regression_metric(metric: str, labels: tuple[str, ...] | None) -> None:
    """A ``max_regression`` entry names a metric the baseline comparison has, or
    a class of the labels: a misspelt one was never compared, and its gate
    passed as "the baseline has no recal[spam]"."""
    match = re.fullmatch(r"(\w+)\[(.+)\]", metric)
    name, class_name = match.groups() if match else (metric, None)
    if class_name is None and name in (*SUMMARY_METRICS, *PER_CLASS_METRICS):
        return
    if class_name is not None and name in PER_CLASS_METRICS:
        if labels is not None and class_name not in labels:
            raise ConfigError(
                f"`max_regression` names class {class_name!r}"
                f"{did_you_mean(class_name, labels)}, which is not one of the labels "
                f"{label_list(labels)}"
            )
        return
    known = [*SUMMARY_METRICS, *PER_CLASS_METRICS, *(f"{m}[CLASS]" for m in PER_CLASS_METRICS)]
    near = (
        [f"{m}[{class_name}]" for m in PER_CLASS_METRICS]
        if class_name is not None
        else [*SUMMARY_METRICS, *PER_CLASS_METRICS]
    )
    raise ConfigError(
        f"`max_regression` compares {', '.join(known)}, but got {metric!r}"
        f"{did_you_mean(metric, near)}"
    )


_KEY_PREFIXES = ("fail_on_", "min_", "max_")


def _key_stem(key: str) -> str:
    return next((key[len(p) :] for p in _KEY_PREFIXES if key.startswith(p)), key)


def did_you_mean_key(key: str, keys: Sequence[str]) -> str:
    """did_you_mean for a gate key, reading past the min_/max_/fail_on_ a user
    guessed: `fail_on_padding` is 0.71 alike to `fail_on_padding_sensitivity`,
    below the cutoff that keeps class names from false matches, and
    `fail_on_leakage` shares its stem, not its letters, with `max_leakage`."""
    # `min_acc`, `min_prec`: difflib prefers `min_mcc`, `min_recall`. The
    # shortest key it begins, where the others extend that one.
    longer = sorted((k for k in keys if k.startswith(key) and key != _key_stem(key)), key=len)
    if longer and all(k.startswith(longer[0]) for k in longer):
        return f" (did you mean `{longer[0]}`?)"
    close = did_you_mean(key, keys)
    stem = _key_stem(key)
    if close or len(stem) < 4:
        return close
    same = [k for k in keys if _key_stem(k) == stem]
    near = [k for k in keys if k not in same and stem in _key_stem(k)]
    meant = [*same, *near][:2]
    return f" (did you mean {' or '.join(f'`{k}`' for k in meant)}?)" if meant else ""


def parse_gates(
    kwargs: Mapping[str, Any],
    labels: tuple[str, ...] | None = None,
    custom_metrics: Iterable[str] = (),
    allow_unknown_custom: bool = False,
) -> GateSpec:
    """Validate marker keywords; raise :class:`ConfigError` naming the bad key.

    ``labels`` None defers the class-name check to :func:`bind_classes`, when
    the labels become known from the data. Keys ``min_X``/``max_X`` for metrics
    added by a ``pytest_seqgate_metrics`` hook are accepted when ``X`` is in
    ``custom_metrics`` (or any, with ``allow_unknown_custom``: checked later).
    """
    custom = set(custom_metrics)
    custom_keys = [f"{bound}{name}" for name in sorted(custom) for bound in ("min_", "max_")]
    gates: list[Gate] = []
    fail_on = dict(FINDING_DEFAULTS)
    options: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in SUMMARY_GATES:
            gates.append(Gate(key, SUMMARY_GATES[key], None, ">=", _threshold(key, value)))
        elif key in MAX_GATES:
            gates.append(Gate(key, MAX_GATES[key], None, "<=", _threshold(key, value)))
        elif key in PER_CLASS_GATES:
            for name, threshold in _per_class(key, value, labels):
                gates.append(Gate(key, PER_CLASS_GATES[key], name, ">=", threshold))
        elif key in TRADE_OFF_GATES:
            for name, (target, at) in _per_class(key, value, labels, _pair):
                gates.append(Gate(key, TRADE_OFF_GATES[key], name, ">=", target, at))
        elif key == "max_train_test_gap":
            gates.extend(
                _max_gates(key, value, "train_test_gap", ("accuracy", "macro_f1"), GAP_METRICS)
            )
        elif key == "max_regression":
            gates.extend(_max_gates(key, value, "regression", ("accuracy", "macro_f1", "recall")))
            for metric in value if isinstance(value, Mapping) else ():
                check_regression_metric(str(metric), labels)
        elif key in FINDING_GATES:
            if not isinstance(value, bool):
                raise ConfigError(f"Expected `{key}` to be True or False, but got {value!r}")
            fail_on[FINDING_GATES[key]] = value
        elif key == "slice":
            if not isinstance(value, str):
                raise ConfigError(
                    f"Expected `slice` to be a string like 'length>=128', but got {value!r}"
                )
            from pytest_seqgate.diagnostics import SliceSpec  # imports torch: only for a slice

            options["slice"] = SliceSpec.parse(value)
        elif key == "max_leakage":
            options["max_leakage"] = _threshold(key, value)
        elif key == "confidence":
            level = _threshold(key, value)
            if not 0 < level < 1:
                raise ConfigError(f"Expected `confidence` to be in (0, 1), but got {value!r}")
            options["confidence"] = level
        elif key == "min_support":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"Expected `min_support` to be a non-negative integer, but got {value!r}"
                )
            options["min_support"] = value
        elif key[:4] in ("min_", "max_") and (key[4:] in custom or allow_unknown_custom):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"Expected `{key}` to be a number, but got {value!r}")
            gates.append(
                Gate(key, key[4:], None, ">=" if key[:4] == "min_" else "<=", float(value))
            )
        else:
            raise ConfigError(
                f"unknown gate `{key}`{did_you_mean_key(key, [*KNOWN_KEYS, *custom_keys])}; "
                f"known gates: {', '.join(KNOWN_KEYS)}"
                + (f", and min_/max_ of {', '.join(sorted(custom))}" if custom else "")
            )
    return GateSpec(tuple(gates), tuple(k for k, v in fail_on.items() if v), **options)


def merge_gate_kwargs(levels: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One set of marker keywords from the markers of a test's levels, closest
    first (function, class, module): a key takes its closest value, and where
    two levels both give a per-class (or per-metric) mapping, the mappings
    combine entry by entry, the closest winning. So a module's
    ``min_recall={"spam": 0.9}`` and a test's ``min_recall={"ham": 0.95}``
    gate both classes, while a test's ``min_accuracy`` replaces the module's."""
    merged: dict[str, Any] = {}
    for kwargs in reversed(levels):
        for key, value in kwargs.items():
            earlier = merged.get(key)
            if isinstance(earlier, Mapping) and isinstance(value, Mapping):
                merged[key] = {**earlier, **value}
            else:
                merged[key] = value
    return merged


# A class name may hold brackets itself (``recall[spam [promo]] >= 0.8``): it runs
# to the last ``]`` before the comparison.
GATE_LINE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.]*)(?:\[(?P<cls>.+?)\])?\s*(?P<op>>=|<=)\s*"
    r"(?P<value>[-+0-9.eE]+)(?:\s+at\s+(?P<at>[-+0-9.eE]+))?"
    r"\s*(?:;\s*xfail(?:\s*:\s*(?P<reason>.*))?)?\s*$"
)


@dataclass(frozen=True)
class GateLine:
    """One line of ``seqgate_gates``: its item name, its gates and an optional xfail."""

    name: str
    spec: GateSpec
    xfail: str | None


# A gate line nearly right: another comparison, or a percentage.
_NEAR_GATE_LINE = re.compile(
    r"^\s*(?P<head>[A-Za-z_][\w.]*(?:\[.+?\])?)\s*(?P<op>[<>=!]{1,2})\s*"
    r"(?P<value>[-+0-9.eE]+)\s*(?P<pct>%?)(?P<rest>(?:\s+at\s+[-+0-9.eE]+)?\s*(?:;.*)?)$"
)
_NEAR_OPS = {">": ">=", "=>": ">=", "<": "<=", "=<": "<="}


def _line_meant(line: str) -> str:
    """What a gate line nearly right meant, for its error: ``recall[spam] > 0.8``
    (a gate passes at its threshold, so it compares with >= or <=) or ``accuracy
    >= 90%`` (a share). Empty when the line is further off."""
    near = _NEAR_GATE_LINE.match(line)
    op = _NEAR_OPS.get(near["op"], near["op"]) if near else None
    if near is None or op not in (">=", "<="):
        return ""
    try:
        value = float(near["value"]) / (100 if near["pct"] else 1)
    except ValueError:
        return ""
    if op == near["op"] and not near["pct"]:
        return ""
    why = "a share, not a percentage" if near["pct"] else "a gate passes at its threshold"
    return f" ({why}: did you mean '{near['head']} {op} {value:g}{near['rest']}'?)"


# The metrics a seqgate_gates line compares: the marker's min_/max_ keys without
# the prefix (min_support is a setting of the gates, not a metric).
LINE_LOWER_BOUNDED = tuple(k[4:] for k in KNOWN_KEYS if k[:4] == "min_" and k != "min_support")
LINE_UPPER_BOUNDED = tuple(k[4:] for k in KNOWN_KEYS if k[:4] == "max_")


def _unknown_line_metric(metric: str, op: str) -> str:
    """Why a gate line's metric is not one: it takes the other bound (``ece >=``),
    or it is no metric a line reads (with the one meant, if near)."""
    lower, upper = LINE_LOWER_BOUNDED, LINE_UPPER_BOUNDED
    if metric in (upper if op == ">=" else lower):
        return f"{metric} takes only {'an upper bound: <=' if op == '>=' else 'a lower bound: >='}"
    names = sorted({*lower, *upper})
    return (
        f"unknown metric `{metric}`{did_you_mean_key(metric, names)}; a line reads "
        f"{', '.join(names)} (per class: METRIC[CLASS]), or a pytest_seqgate_metrics "
        f"hook's metric"
    )


def parse_gate_line(
    line: str,
    labels: tuple[str, ...] | None,
    allow_unknown_custom: bool = False,
    setting: str = "seqgate_gates",
) -> GateLine:
    """``recall[spam] >= 0.9``, ``macro_f1 >= 0.85; xfail: known weak``, ``ece <= 0.05``.

    ``setting`` is where the line was written (``seqgate_gates in pyproject.toml``),
    for the error."""
    match = GATE_LINE.match(line)
    if match is None:
        raise ConfigError(
            f"{setting}: cannot read {line!r}; expected "
            f"'METRIC[CLASS] >= NUMBER' or 'METRIC <= NUMBER', optionally "
            f"followed by '; xfail: reason'{_line_meant(line)}"
        )
    metric, cls, op = match["metric"], match["cls"], match["op"]

    def number(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{setting}: {text!r} in {line!r} is not a number") from None

    value = number(match["value"])
    at = None if match["at"] is None else number(match["at"])
    trade_off = metric in ("recall_at_precision", "precision_at_recall")
    if (at is not None) != trade_off:
        raise ConfigError(
            f"{setting}: {line!r}: "
            + (
                f"{metric} needs the rate it is read at, as in "
                f"'{metric}[{cls or 'CLASS'}] >= 0.9 at 0.95'"
                if trade_off
                else f"'at {match['at']}' belongs to recall_at_precision and "
                f"precision_at_recall only"
            )
        )
    head, _, sub = metric.partition(".")
    whole_set = head in ("train_test_gap", "regression")
    bounded_above = whole_set or metric == "leakage"
    if (op == ">=" and bounded_above) or (op == "<=" and trade_off):
        # Read the other way round, the gate would check the opposite of what it says.
        raise ConfigError(
            f"{setting}: {line!r}: {metric} takes only "
            f"{'an upper bound: <=' if bounded_above else 'a lower bound: >='}"
        )
    if whole_set:
        # `train_test_gap.macro_f1 <= 0.1`, `regression.recall[spam] <= 0.05`: the
        # marker's {metric: number} form, one entry a line.
        if cls and not sub:
            raise ConfigError(
                f"{setting}: {line!r}: "
                + (
                    f"a class goes with the metric compared: did you mean "
                    f"'regression.recall[{cls}] <= {value:g}'?"
                    if head == "regression"
                    else "train_test_gap takes no class: its recall is the worst class's "
                    "(train_test_gap.recall)"
                )
            )
        sub += f"[{cls}]" if cls else ""
        kwargs: dict[str, Any] = {f"max_{head}": {sub: value} if sub else value}
    elif metric == "leakage":
        kwargs = {"max_leakage": value}
    else:
        key = ("min_" if op == ">=" else "max_") + metric
        target: Any = value if at is None else (value, at)
        kwargs = {key: {cls: target} if cls else target}
    (key,) = kwargs
    known = {f"min_{m}" for m in LINE_LOWER_BOUNDED} | {f"max_{m}" for m in LINE_UPPER_BOUNDED}
    if key not in known and not (allow_unknown_custom and key[:4] in ("min_", "max_")):
        # In a line's words, not a marker's: `recal`, not `min_recal`.
        raise ConfigError(f"{setting}: {line!r}: {_unknown_line_metric(metric, op)}")
    try:
        spec = parse_gates(kwargs, labels, allow_unknown_custom=allow_unknown_custom)
    except ConfigError as exc:
        raise ConfigError(f"{setting}: {line!r}: {exc}") from None
    name = f"{metric}[{cls}]" if cls else metric
    reason = match["reason"]
    xfail = (reason or "known weak (seqgate_gates)") if ";" in line else None
    # A line item judges only its own gate: findings fail the marked tests, not each line.
    return GateLine(name, GateSpec(spec.gates, (), spec.max_leakage), xfail)


def bind_classes(spec: GateSpec, labels: tuple[str, ...]) -> GateSpec:
    """Expand every-class gates and check class names once the labels are known."""
    gates: list[Gate] = []
    per_class = {*PER_CLASS_GATES.values(), *TRADE_OFF_GATES.values()}
    for gate in spec.gates:
        per_class_regression = gate.metric.removeprefix("regression.")
        if gate.metric.startswith("regression.") and per_class_regression in PER_CLASS_METRICS:
            # "recall" means every class's recall.
            gates.extend(
                Gate(gate.key, f"{gate.metric}[{name}]", None, gate.op, gate.threshold)
                for name in labels
            )
            continue
        if gate.metric.startswith("regression."):
            check_regression_metric(per_class_regression, labels)
        if gate.metric in per_class and gate.class_name is None:
            gates.extend(
                Gate(gate.key, gate.metric, name, gate.op, gate.threshold, gate.param)
                for name in labels
            )
            continue
        if gate.class_name is not None and gate.class_name not in labels:
            raise ConfigError(
                f"`{gate.key}` names class {gate.class_name!r}"
                f"{did_you_mean(gate.class_name, labels)}, which is not one "
                f"of the labels {label_list(labels)}"
            )
        gates.append(gate)
    return GateSpec(
        tuple(gates), spec.fail_on, spec.max_leakage, spec.slice, spec.confidence, spec.min_support
    )


# Past this share of eval sequences found in the training set, a train/test gap
# compares mostly the same sequences with themselves.
GAP_OF_COPIES = 0.5


def _gap_of_copies(evaluation: Any) -> str:
    """The word on a train/test gap that cannot show overfitting: most of the eval
    set is in the training set (the same file named twice, say), so the gap is
    near 0 whatever the model learnt, and its gate would pass in silence."""
    share = evaluation.leaked or 0.0  # exact and near copies: what max_leakage reads
    if share < GAP_OF_COPIES:
        return ""
    return (
        f"{share:.0%} of the eval sequences are in the training set: the gap compares them "
        f"with themselves and cannot show overfitting (see the leakage finding)"
    )


def _undefined(evaluation: Any, gate: Gate) -> tuple[bool, str]:
    """Whether a gate on an undefined value passes, and why. Without a baseline
    there is nothing to regress from: the run that saves the baseline on the main
    branch runs the same gates and must not fail them; nor is there for a class
    the baseline has no recall of (one the model gained since)."""
    if gate.metric in evaluation.custom_metrics:
        return False, (
            f"undefined: pytest_seqgate_metrics returned no number (None or NaN) for "
            f"{gate.metric!r}"
        )
    if not gate.metric.startswith("regression."):
        return False, _undefined_reason(gate.metric, gate.class_name)
    if evaluation.comparison is None:
        return True, "no baseline configured (seqgate_baseline): not compared"
    metric = gate.metric.split(".", 1)[1]
    before, _ = evaluation.comparison.deltas.get(metric, (None, None))
    if before is None:
        return True, f"the baseline has no {metric} (undefined there, or new since): not compared"
    match = re.fullmatch(r"(\w+)\[(.+)\]", metric)
    now = _undefined_reason(*match.groups()) if match else "undefined on this eval set"
    return False, f"{metric} is undefined now ({now.removeprefix('undefined: ')}): not compared"


def _undefined_reason(metric: str, name: str | None) -> str:
    if metric == "precision":
        return f"undefined: the model never predicted {name!r} (no predictions of the class)"
    if metric in (
        "recall",
        "average_precision",
        "roc_auc",
        "recall_at_precision",
        "precision_at_recall",
    ):
        return f"undefined: the eval set has no samples of {name!r}" + (
            " (or no samples of other classes)" if metric == "roc_auc" else ""
        )
    if metric == "f1":
        return f"undefined: {name!r} has no samples and no predictions"
    if metric.startswith("train_test_gap"):
        return "undefined: no training set (set seqgate_train_data)"
    return "undefined on this eval set"


def _examples_for(evaluation: Evaluation, gate: Gate, class_index: int | None) -> dict[str, Any]:
    """The records behind a failed gate: for a per-class gate, its class's errors;
    for a count-based summary gate (accuracy, macro F1, ...), the misses of the
    class of lowest recall, which pulls it down most (``examples_of`` names it)."""
    kinds = ERROR_KINDS.get(gate.metric, ())
    extra: dict[str, Any] = {}
    if class_index is None and gate.metric in COUNT_SUMMARIES:
        recall = evaluation.metrics.recall.nan_to_num(nan=2.0)  # no samples: not the weakest
        class_index, kinds = int(recall.argmin()), ("missed",)
        extra["examples_of"] = evaluation.labels[class_index]
    if class_index is None:
        return {}
    examples = {kind: evaluation.error_examples(class_index, kind) for kind in kinds}
    examples = {kind: rows for kind, rows in examples.items() if rows}
    return {**extra, "examples": examples} if examples else {}


def _trade_off(scope: Evaluation, gate: Gate) -> tuple[float | None, str, dict[str, Any]]:
    """recall@precision or precision@recall of one class, and the threshold that gives it."""
    from pytest_seqgate.curves import best_precision_at_recall, best_recall_at_precision, pr_curve

    assert gate.class_name is not None and gate.param is not None
    index = scope.labels.index(gate.class_name)
    positive = scope.targets == index
    if not bool(positive.any()):
        return None, "", {}
    curve = pr_curve(scope.predictions.scores[:, index], positive)
    if gate.metric == "recall_at_precision":
        value, threshold = best_recall_at_precision(curve, gate.param)
        side = f"at precision >= {gate.param:g}"
    else:
        value, threshold = best_precision_at_recall(curve, gate.param)
        side = f"at recall >= {gate.param:g}"
    if threshold is None:
        return value, f"no decision threshold reaches {side.split(' ', 1)[1]}", {"at": gate.param}
    return (
        value,
        f"{side}, with threshold {threshold:.4f} on P({gate.class_name})",
        {"at": gate.param, "decision_threshold": threshold},
    )


def _underpowered(
    evaluation: Evaluation, scope: Evaluation, gate: Gate, interval: Any, where: str
) -> None:
    """A warning finding, once per (metric, class, slice), when a gated interval is
    wide: a summary gate's too (``min_accuracy=0.9`` on 40 samples is a coin toss
    as much as a class's). ``scope`` is the slice the gate reads, or the whole set."""
    width = float(interval[1] - interval[0])
    if not width > UNDERPOWERED_WIDTH:
        return
    key = (gate.metric, gate.class_name, where)
    if any(
        (f.data.get("metric"), f.data.get("class"), f.data.get("where", "")) == key
        for f in evaluation.findings_of("underpowered")
    ):
        return
    from pytest_seqgate.diagnostics import Finding

    label = f"{gate.metric}[{gate.class_name}]" if gate.class_name else gate.metric
    if gate.class_name is None:
        support = scope.n_samples
        basis = counted(support, "sample")
    else:
        index = scope.labels.index(gate.class_name)
        support = int(scope.metrics.support[index])
        basis = f"{counted(support, 'sample')} of {gate.class_name!r}"
    data = {"metric": gate.metric, "class": gate.class_name, "width": width, "support": support}
    if gate.metric == "precision" and gate.class_name is not None:
        # A precision is a rate over the model's predictions of the class, not its samples.
        predictions = int(scope.metrics.confusion_matrix[:, index].sum())
        data["predictions"] = predictions
        basis = f"{counted(predictions, 'prediction')} of {gate.class_name!r}"
    if where:
        data["where"] = where
    evaluation.findings.append(
        Finding(
            "underpowered",
            "warning",
            f"{label}{where} is known only to within {width:.3f} "
            f"([{float(interval[0]):.3f}, {float(interval[1]):.3f}] at "
            f"{evaluation.confidence:.0%}) from {basis}: a gate on it can flip on noise",
            data,
        )
    )


def _out_of_reach(evaluation: Evaluation, threshold: float) -> str:
    """Why no model could pass an accuracy gate: copies of a sequence with
    different labels (the ``conflicting_labels`` finding) cap accuracy below it."""

    for finding in evaluation.findings_of("conflicting_labels"):
        ceiling = float(finding.data["max_accuracy"])
        if ceiling < threshold:
            copies = counted(int(finding.data["sequences"]), "eval sequence")
            return (
                f"out of reach: copies of {copies} carry different labels, which caps any "
                f"model's accuracy at {ceiling:.3f}"
            )
    return ""


def _no_interval(metric: str, spec: GateSpec, uncertainty: Any = None) -> str:
    """Why a gate that compares lower bounds found no interval for ``metric``."""
    from pytest_seqgate.stats import BOOTSTRAP_SUMMARY

    if uncertainty is not None and uncertainty.bootstrapped(metric):
        return (
            "every bootstrap resample gives the same value (no error of the kind it "
            "counts), which says nothing of how few samples there are; see min_support"
        )

    if metric == "f1" or metric in BOOTSTRAP_SUMMARY:
        return (
            "a slice's F1, MCC and the like get no bootstrap interval"
            if spec.slice is not None
            else "no bootstrap interval (seqgate_bootstrap = 0)"
        )
    return f"{metric} has no interval"


def check(evaluation: Evaluation, spec: GateSpec, test: str) -> list[GateResult]:
    """Judge every gate of ``spec``; one result per gate, plus findings-based gates."""
    from pytest_seqgate.stats import support_needed

    spec = bind_classes(spec, evaluation.labels)
    scope = evaluation.for_slice(spec.slice) if spec.slice is not None else evaluation
    where = ""
    if spec.slice is not None:
        where = f" on slice {spec.slice.name} ({scope.n_samples} samples)"
        if scope.n_samples == 0:
            where += spec.slice.values_seen(evaluation.metadata)
    level = spec.confidence
    if level is None and evaluation.gate_on == "lower_bound":
        level = evaluation.confidence
    min_support = spec.min_support if spec.min_support is not None else evaluation.min_support
    results = []
    for gate in spec.gates:
        extra: dict[str, Any] = {}
        if gate.metric in SCORE_METRICS and evaluation.predictions.scores.shape[1] == 0:
            results.append(gate.result(test, None, False, NO_SCORES))
            continue
        # A train/test gap or a regression is a property of the whole eval set, so a
        # slice does not change it.
        whole = gate.metric.startswith(WHOLE_SET_METRICS)
        if gate.metric in TRADE_OFF_GATES.values():
            value, note, extra = _trade_off(scope, gate)
        else:
            value = (evaluation if whole else scope).value(gate.metric, gate.class_name)
            note = ""
        if spec.slice is not None and not whole:
            extra["slice"] = spec.slice.name
        if value is None or math.isnan(value):
            passed, reason = _undefined(evaluation, gate)
            if not gate.metric.startswith("regression."):
                reason += where
            results.append(gate.result(test, None, passed, reason, extra=extra))
            continue
        class_index = scope.labels.index(gate.class_name) if gate.class_name else None
        interval = scope.uncertainty.interval(gate.metric, class_index, level)
        if interval is not None:
            on = f" on slice {spec.slice.name}" if spec.slice is not None else ""
            _underpowered(
                evaluation, scope, gate, scope.uncertainty.interval(gate.metric, class_index), on
            )
        compared, bound = value, None
        if level is not None and gate.op == ">=" and interval is not None:
            bound = float(interval[0])
            compared = bound
        passed = compared >= gate.threshold if gate.op == ">=" else compared <= gate.threshold
        reasons = [note, where.strip()]
        if gate.metric == "accuracy" and spec.slice is None and not passed:
            reasons.append(_out_of_reach(evaluation, gate.threshold))
        if gate.metric.startswith("train_test_gap."):
            reasons.append(_gap_of_copies(evaluation))
        if level is not None and gate.op == ">=" and interval is None:
            # Asked for the lower bound, but there is none: say the point was compared.
            reasons.insert(
                0, f"point value compared: {_no_interval(gate.metric, spec, scope.uncertainty)}"
            )
        if bound is not None and not passed:
            reasons.insert(
                0,
                f"point {value:.3f} clears it but the {level:.0%} lower bound {bound:.3f} does not"
                if value >= gate.threshold
                else f"point {value:.3f}, {level:.0%} lower bound {bound:.3f}",
            )
        if gate.class_name is not None and min_support and class_index is not None:
            support = int(scope.metrics.support[class_index])
            if support < min_support:
                passed = False
                needed = (
                    support_needed(value, gate.threshold, evaluation.confidence)
                    if gate.metric == "recall"
                    else None
                )
                reasons.insert(
                    0,
                    (
                        f"{support} samples of {gate.class_name!r}, fewer than min_support="
                        f"{min_support}: the eval set cannot support the claim"
                        + (
                            f"; at the observed {value:.3f}, about {needed} samples would put the "
                            f"{evaluation.confidence:.0%} lower bound above {gate.threshold:g}"
                            if needed
                            else ""
                        )
                    ),
                )
        if not passed and spec.slice is None:
            extra.update(_examples_for(evaluation, gate, class_index))
        results.append(
            gate.result(test, value, passed, "; ".join(r for r in reasons if r), bound, extra)
        )
    for kind in spec.fail_on:
        for finding in evaluation.findings_of(kind):
            name = finding.data.get("class")
            gate = Gate(kind, kind, name, "absent", 0.0)
            index = evaluation.labels.index(name) if name in evaluation.labels else None
            extra = _examples_for(evaluation, gate, index) if spec.slice is None else {}
            results.append(gate.result(test, None, False, finding.message, extra=extra))
    if spec.max_leakage is not None:
        gate = Gate("max_leakage", "leakage", None, "<=", spec.max_leakage)
        leaked = evaluation.findings_of("leakage")
        fraction = evaluation.leaked
        if fraction is None:
            reason = "undefined: no training set (set seqgate_train_data)"
            results.append(gate.result(test, None, False, reason))
        else:
            # A count per kind of copy: the findings give the examples, and a table
            # row that carried both of their messages would be a paragraph wide.
            matches = sorted(leaked, key=lambda f: f.data.get("match", "exact") != "exact")
            parts = [f"{f.data['count']} {f.data.get('match', 'exact')}" for f in matches]
            reasons = [
                f"{' + '.join(parts)} of {evaluation.n_samples} eval sequences in the "
                f"training set (see the leakage findings)"
                if leaked
                else "",
                # Exact copies alone: the same gate would read more where near ones count.
                f"near copies not checked: {evaluation.near_unchecked}"
                if evaluation.near_unchecked
                else "",
            ]
            reason = "; ".join(r for r in reasons if r)
            results.append(gate.result(test, fraction, fraction <= spec.max_leakage, reason))
    return results


def judge(
    evaluation: Evaluation, gates: Mapping[str, Any], caller: str, test: str
) -> list[GateResult]:
    """The gates of a ``check(**gates)`` call, judged. A bad key is reported as
    the caller's and raised afresh from this hidden frame, so the traceback ends
    at the user's call, not in the parser's internals."""
    __tracebackhide__ = True
    try:
        spec = parse_gates(gates, evaluation.labels, evaluation.custom_metrics)
    except ConfigError as exc:
        raise ConfigError(f"{caller}: {exc}") from None
    return check(evaluation, spec, test)


def format_threshold(result: GateResult) -> str:
    return "absent" if result.op == "absent" else f"{result.op} {result.threshold:g}"


def format_number(value: float | None, digits: int = 3) -> str:
    """``n/a`` for undefined; a value that rounds to zero prints as 0.000, not
    -0.000 (an MCC of -1e-17 from a chance-level model is no negative finding)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value + 0.0 if round(value, digits) != 0 else 0.0:.{digits}f}"


def format_change(value: float, digits: int = 3) -> str:
    """A change, signed; one that rounds to zero is +0.000 (a float's -1e-17
    from equal scores is no drop)."""
    return f"{value + 0.0 if round(value, digits) != 0 else 0.0:+.{digits}f}"


def format_margin(result: GateResult) -> str:
    """The margin as the tables show it: signed, empty where there is none."""
    return "" if result.margin is None else format_change(result.margin)


def format_value(result: GateResult) -> str:
    if result.op == "absent":
        return "present"
    text = format_number(result.value)
    if result.bound is not None:
        text += f" (low {result.bound:.3f})"
    return text


def failure_message(results: list[GateResult], test: str, where: str = "") -> str:
    """Every violated gate as a table, then what to do and where the full report is."""
    failed = [r for r in results if not r.passed]
    rows = [
        [
            r.metric + r.on,
            r.class_name or "",
            format_threshold(r),
            format_value(r),
            format_margin(r),
            r.reason,
        ]
        for r in failed
    ]
    table = tabulate(
        rows,
        headers=["metric", "class", "threshold", "value", "margin", "reason"],
        tablefmt="simple",
        disable_numparse=True,
        maxcolwidths=[None, None, None, None, None, REASON_WIDTH],
    )
    undefined = all(r.value is None and r.op != "absent" for r in failed)
    advice = UNDEFINED_ADVICE if undefined else ADVICE
    advice = f"{advice}\n{where}" if where else advice
    examples = "".join(f"\n{line}" for line in example_lines(failed))
    return (
        f"seqgate: {len(failed)} of {counted(len(results), 'gate')} failed for {test}\n{table}"
        f"{examples}\n{advice}"
    )


def distinct_examples(
    results: Sequence[GateResult],
) -> list[tuple[GateResult, str, list[dict[str, Any]]]]:
    """(gate, kind, rows) for each class and kind of error behind the failed
    gates, once: recall[spam], f1[spam] and a paradox on spam share the misses
    of spam."""
    found, seen = [], set()
    # A per-class gate's own title first: recall[spam] lists the misses of spam,
    # and a macro F1 gate whose weakest class is spam adds nothing to it.
    for result in sorted(results, key=lambda r: "examples_of" in r.extra):
        name = example_class(result)
        for kind, rows in result.extra.get("examples", {}).items():
            if (name, kind) not in seen:
                seen.add((name, kind))
                found.append((result, kind, rows))
    return found


def example_class(result: GateResult) -> str | None:
    """The class whose errors a result lists: its own, or a summary gate's weakest."""
    return result.extra.get("examples_of", result.class_name)


def example_score(kind: str, row: dict[str, Any]) -> float | None:
    """P(class) of an error: of the true class for a miss, of the predicted one
    for a false alarm (None without scores)."""
    return row.get("p_true" if kind == "missed" else "p_predicted")


def example_lines(results: Sequence[GateResult]) -> list[str]:
    """A block per class and kind of error, most confident first: the records to
    open when asking why."""
    lines: list[str] = []
    for result, kind, rows in distinct_examples(results):
        shown = []
        for row in rows:
            what = f"predicted {row['predicted']}" if kind == "missed" else f"true {row['true']}"
            p = example_score(kind, row)
            score = f", P({example_class(result)}) {p:.2f}" if p is not None else ""
            shown.append((row["record"], f"{what}{score}"))
        title = "missed" if kind == "missed" else "false alarms"
        if "examples_of" in result.extra:
            title = f"{title} of {result.extra['examples_of']!r}, its class of lowest recall"
        order = ", most confident first" if any("p_true" in r for r in rows) else ""
        lines.append(f"{result.label} {title}{order}:")
        width = max(len(record) for record, _ in shown)
        lines += [f"  {record:<{width}}  {what}" for record, what in shown]
    return lines
