"""Rendering: pure functions from evaluations to strings, and atomic file writes.

Nothing here prints; the pytest glue decides where lines go. Every table is
built with tabulate, so the terminal, Markdown and HTML reports agree.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch import Tensor

from pytest_seqgate import REPORT_SCHEMA
from pytest_seqgate.baseline import baseline_json
from pytest_seqgate.config import unwritable_report
from pytest_seqgate.curves import Ranking
from pytest_seqgate.diagnostics import Finding, SliceResult
from pytest_seqgate.evaluation import Evaluation, Uncertainty
from pytest_seqgate.exceptions import counted
from pytest_seqgate.gates import (
    GateResult,
    distinct_examples,
    example_class,
    example_score,
    failed_gates,
    format_change,
    format_margin,
    format_number,
    format_threshold,
    format_value,
)
from pytest_seqgate.metrics import SUMMARY_METRICS, Metrics
from pytest_seqgate.stats import p_value_text


def _num(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _pair(t: Tensor) -> list[float] | None:
    low, high = (float(x) for x in t.tolist())
    if math.isnan(low) or math.isnan(high):
        return None
    return [low, high]


def metrics_json(
    metrics: Metrics,
    labels: Sequence[str],
    uncertainty: Uncertainty | None = None,
    scores: tuple[Ranking | None, float] | None = None,
) -> dict[str, Any]:
    """``scores``, for the eval set's own metrics: its ranking (None when the run kept
    no scores) and ECE."""
    out: dict[str, Any] = {
        name: _num(value) for name, value in zip(SUMMARY_METRICS, metrics.values.tolist())
    }
    precision, recall, f1 = metrics.precision.tolist(), metrics.recall.tolist(), metrics.f1.tolist()
    support = metrics.support.tolist()
    out["per_class"] = {
        name: {
            "precision": _num(precision[i]),
            "recall": _num(recall[i]),
            "f1": _num(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    if scores is not None:
        # The score metrics keep their keys when the run kept no scores
        # (seqgate_keep_scores = false), null as any undefined number, so that a
        # reader of the JSON finds the same keys in every run.
        ranks, ece = scores
        nothing = [float("nan")] * len(labels)
        ap = ranks.average_precision.tolist() if ranks is not None else nothing
        auc = ranks.roc_auc.tolist() if ranks is not None else nothing
        out["macro_average_precision"] = _num(
            ranks.macro_average_precision if ranks is not None else float("nan")
        )
        out["macro_roc_auc"] = _num(ranks.macro_roc_auc if ranks is not None else float("nan"))
        for i, name in enumerate(labels):
            out["per_class"][name]["average_precision"] = _num(ap[i])
            out["per_class"][name]["roc_auc"] = _num(auc[i])
        out["ece"] = _num(ece)
    if uncertainty is not None:
        intervals: dict[str, Any] = {
            "method": {
                "rates": uncertainty.method,
                "others": "bootstrap percentile" if uncertainty.samples else None,
            },
            "confidence": uncertainty.confidence,
            "resamples": uncertainty.resamples if uncertainty.samples else 0,
            "seed": uncertainty.seed,
        }
        for name in SUMMARY_METRICS:
            interval = uncertainty.interval(name)
            if interval is not None:
                intervals[name] = _pair(interval)
        intervals["per_class"] = {
            name: {k: _pair(v) for k, v in per.items()}
            for name, per in uncertainty.per_class(tuple(labels)).items()
        }
        out["intervals"] = intervals
    return out


def evaluation_json(ev: Evaluation) -> dict[str, Any]:
    return {
        "name": ev.name,
        "model": ev.model,
        "eval_data": ev.eval_data,
        "device": ev.device,
        "device_note": ev.device_note or None,
        "precision": ev.precision,
        "decision_threshold": ev.threshold,
        "outputs": ev.predictions.outputs,
        "labels": list(ev.labels),
        "n_samples": ev.n_samples,
        "metrics": metrics_json(ev.metrics, ev.labels, ev.uncertainty, (ev.ranking, ev.ece)),
        "custom_metrics": {k: _num(v) for k, v in ev.custom_metrics.items()},
        "confusion_matrix": ev.metrics.confusion_matrix.tolist(),
        "train_metrics": (
            metrics_json(ev.train_metrics, ev.labels, ev.train_uncertainty)
            if ev.train_metrics is not None
            else None
        ),
        "train_test_gap": {k: _num(v) for k, v in ev.train_gaps.items()} or None,
        "train_sample": ev.train_sample or None,
        "slices": [
            {
                "group": s.group,
                "name": s.name,
                "n_samples": s.n,
                "metrics": metrics_json(s.metrics, ev.labels),
            }
            for s in ev.slices
        ],
        "baseline": ev.comparison.to_json() if ev.comparison is not None else None,
        "findings": [f.to_json() for f in ev.findings],
        "gates": [g.to_json() for g in ev.gates],
    }


def report_json(evaluations: Sequence[Evaluation], errors: Sequence[str] = ()) -> dict[str, Any]:
    """``errors``: why an evaluation the session wanted did not run (a model that
    would not load, a usage error); empty when every one ran."""
    return {
        "schema": REPORT_SCHEMA,
        "evaluations": [evaluation_json(ev) for ev in evaluations],
        "errors": list(errors),
    }


# A list of numbers that json.dumps spread over lines (a matrix row, an interval):
# only a structural list can hold a newline, as strings escape theirs.
_NUMBER = r"(?:-?[0-9][0-9.eE+-]*|null)"
_NUMBER_LIST = re.compile(rf"\[\n\s+({_NUMBER}(?:,\n\s+{_NUMBER})*)\n\s*\]")
_ITEM_BREAK = re.compile(r",\n\s+")


def render_json(evaluations: Sequence[Evaluation], errors: Sequence[str] = ()) -> str:
    """Indented, with each list of numbers on one line: a confusion-matrix row or an
    interval reads as ``[784, 7]``, not one number a line (at 1,000 classes that
    made the file 13.8 MB rather than 3)."""
    text = json.dumps(report_json(evaluations, errors), indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: f"[{_ITEM_BREAK.sub(', ', m.group(1))}]", text) + "\n"


# ---------------------------------------------------------------- tables


def _with_interval(value: float, interval: Tensor | None) -> str:
    text = format_number(value)
    if interval is not None and text != "n/a":
        pair = _pair(interval)
        if pair is not None:
            text += f" [{format_number(pair[0])}, {format_number(pair[1])}]"
    return text


# Past this many classes a C x C matrix or a chart per class is no longer read
# at a glance (at 1,000 classes the HTML page was 87 MB and the Markdown 9 MB):
# the terminal and the charts show the weakest classes, the matrix becomes the
# most frequent confusions, and the JSON keeps everything.
GLANCE_CLASSES = 25
# Precision-recall curves: more lines than this are a tangle.
CURVE_CLASSES = 8


def weakest_classes(ev: Evaluation, k: int = GLANCE_CLASSES) -> list[int]:
    """Every class in label order when there are at most ``k``; else the ``k`` of
    lowest F1, undefined first, weakest first."""
    if len(ev.labels) <= k:
        return list(range(len(ev.labels)))
    f1 = ev.metrics.f1.double().nan_to_num(nan=-1.0)
    return torch.argsort(f1, stable=True)[:k].tolist()


def fewer_classes(ev: Evaluation, classes: Sequence[int]) -> str:
    """What a table of :func:`weakest_classes` shows, said under it."""
    return f"the {len(classes)} classes of lowest F1 of {len(ev.labels)}, lowest first"


def confusion_pairs(ev: Evaluation, k: int = GLANCE_CLASSES) -> list[list[str]]:
    """The ``k`` most frequent confusions: true class, predicted class, count, and
    the share of the true class's samples that went there."""
    cm = ev.metrics.confusion_matrix.clone()
    totals = cm.sum(1).tolist()
    cm.fill_diagonal_(0)
    counts, cells = torch.sort(cm.reshape(-1), descending=True, stable=True)
    c = len(ev.labels)
    rows = []
    for count, cell in zip(counts[:k].tolist(), cells[:k].tolist()):
        if count == 0:
            break
        true, pred = divmod(cell, c)
        rows.append(
            [ev.labels[true], ev.labels[pred], str(count), f"{100 * count / totals[true]:.1f}%"]
        )
    return rows


CONFUSION_HEADERS = ["true", "predicted as", "count", "share of true"]


def per_class_rows(ev: Evaluation, classes: Sequence[int] | None = None) -> list[list[str]]:
    per = ev.uncertainty.per_class(ev.labels)
    ap = ev.ranking.average_precision.tolist() if ev.ranking is not None else None
    rows = []
    for i in range(len(ev.labels)) if classes is None else classes:
        name = ev.labels[i]
        m = ev.metrics
        rows.append(
            [
                name,
                _with_interval(float(m.precision[i]), per[name].get("precision")),
                _with_interval(float(m.recall[i]), per[name].get("recall")),
                _with_interval(float(m.f1[i]), per[name].get("f1")),
                format_number(ap[i]) if ap is not None else "n/a",
                str(int(m.support[i])),
            ]
        )
    return rows


PER_CLASS_HEADERS = ["class", "precision", "recall", "f1", "AP", "support"]


def summary_rows(ev: Evaluation) -> list[list[str]]:
    rows = []
    for name in SUMMARY_METRICS:
        value = float(ev.metrics.summary[name])
        row = [name, _with_interval(value, ev.uncertainty.interval(name))]
        if ev.train_metrics is not None:
            row.append(format_number(float(ev.train_metrics.summary[name])))
        rows.append(row)
    extra = dict(ev.custom_metrics)
    if ev.ranking is not None:
        extra["macro_average_precision"] = ev.ranking.macro_average_precision
        extra["macro_roc_auc"] = ev.ranking.macro_roc_auc
    extra["ece"] = ev.ece
    rows.extend(
        [name, format_number(value)] + ([""] if ev.train_metrics is not None else [])
        for name, value in extra.items()
    )
    return rows


def confusion_rows(ev: Evaluation) -> list[list[Any]]:
    cm = ev.metrics.confusion_matrix.tolist()
    return [[name, *row] for name, row in zip(ev.labels, cm)]


def _shorten(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


SLICE_GAP = 0.1


def delta_rows(ev: Evaluation) -> list[list[str]]:
    """Baseline, current and change per metric (summary metrics and per-class recall)."""
    assert ev.comparison is not None
    rows = []
    for name, (before, now) in ev.comparison.deltas.items():
        if name.startswith(("precision[", "f1[")) or name == "no_information_rate":
            continue
        delta = None if before is None or now is None else now - before
        rows.append(
            [
                name,
                format_number(before),
                format_number(now),
                "n/a" if delta is None else format_change(delta),
            ]
        )
    return rows


DELTA_HEADERS = ["metric", "baseline", "current", "change"]


def _delta_row_html(row: list[str]) -> list[str]:
    """A row of the baseline table, its change in colour: a drop of recall[spam]
    among a dozen rows of +0.000 is what a reviewer must not miss (every metric
    compared is better higher)."""
    cells = [html.escape(cell) for cell in row]
    change = row[-1]
    if change[:1] in ("+", "-") and float(change) != 0:
        cells[-1] = f"<span class='{'fail' if change[0] == '-' else 'pass'}'>{cells[-1]}</span>"
    return cells


# A slice of a handful of samples far below the whole set is noise, not news;
# and a key with thousands of values (a user id) would list hundreds of them.
SLICE_MIN_SAMPLES = 20
WEAK_SLICES_TITLE = (
    f"slices of {SLICE_MIN_SAMPLES}+ samples whose macro F1 is more than {SLICE_GAP} "
    f"below the whole set's"
)


WEAK_SLICES_HEADING = WEAK_SLICES_TITLE[0].upper() + WEAK_SLICES_TITLE[1:]


def weak_slices(ev: Evaluation) -> list[SliceResult]:
    """Slices of at least SLICE_MIN_SAMPLES samples whose macro F1 is more than
    SLICE_GAP below the whole set's: the GLANCE_CLASSES weakest, weakest first."""
    overall = ev.metrics.value("macro_f1")
    weak = [
        s
        for s in ev.slices
        if s.n >= SLICE_MIN_SAMPLES and s.metrics.value("macro_f1") < overall - SLICE_GAP
    ]
    return sorted(weak, key=lambda s: s.metrics.value("macro_f1"))[:GLANCE_CLASSES]


def slice_recalls(labels: Sequence[str], confusion: Tensor) -> str:
    """Each class's recall on a slice with the counts behind it (a recall of 0.000
    means little over 2 samples and much over 200). Past SLICE_RECALLS classes, the
    weakest of those the slice has, and the range of the rest: a line per slice
    listing 30 classes was 900 characters wide, and its point, which class the
    slice fails, was lost in it."""
    hits, totals = confusion.diagonal().tolist(), confusion.sum(1).tolist()
    recall = [h / t if t else float("nan") for h, t in zip(hits, totals)]
    shown = list(range(len(labels)))
    rest = ""
    if len(labels) > SLICE_RECALLS:
        present = sorted((i for i in shown if totals[i]), key=lambda i: (recall[i], -totals[i]))
        shown, others = present[:SLICE_RECALLS], present[SLICE_RECALLS:]
        if others:
            low, high = format_number(recall[others[0]]), format_number(recall[others[-1]])
            rest = f"; {len(others)} more, " + (f"all {low}" if low == high else f"{low} to {high}")
    return (
        ", ".join(f"{labels[i]} {format_number(recall[i])} ({hits[i]}/{totals[i]})" for i in shown)
        + rest
    )


# A key of more values than this, most of them on fewer than SLICE_MIN_SAMPLES
# samples, is named as the reason no slice could be judged (an id, a URL).
MANY_VALUES = 100
# Classes whose recall a slice's row lists before it lists only the weakest.
SLICE_RECALLS = 5


def slice_rows(ev: Evaluation, slices: Sequence[SliceResult]) -> list[list[str]]:
    rows = []
    for s in slices:
        recalls = slice_recalls(ev.labels, s.metrics.confusion_matrix)
        rows.append(
            [
                s.name,
                str(s.n),
                format_number(s.metrics.value("accuracy")),
                format_number(s.metrics.value("macro_f1")),
                recalls,
            ]
        )
    return rows


SLICE_HEADERS = ["slice", "samples", "accuracy", "macro_f1", "recall per class (correct/samples)"]


def gate_groups(gates: Sequence[GateResult]) -> list[tuple[GateResult, list[str]]]:
    """The gates, those that say the same of several tests once, with the tests
    (in the order of the first): a finding fails every gated test, and in the
    example's failed run the accuracy paradox's 110-character reason stood in
    four rows of eight. The JSON keeps a gate per test."""
    groups: dict[tuple[str, ...], tuple[GateResult, list[str]]] = {}
    for g in gates:
        key = (g.label, format_threshold(g), format_value(g), format_margin(g), g.outcome, g.reason)
        if key in groups:
            groups[key][1].append(g.test)
        else:
            groups[key] = (g, [g.test])
    return list(groups.values())


def gate_rows(
    gates: Sequence[GateResult], reason_width: int | None = None, every_test: bool = True
) -> list[list[str]]:
    """A row per gate of :func:`gate_groups`, naming up to GROUP_TESTS of a group's
    tests and counting the others; ``reason_width`` keeps terminal lines short (the
    findings below the table carry the whole message), as does naming the first
    test alone (``every_test`` False: pytest's summary lists them)."""
    rows = []
    for g, tests in gate_groups(gates):
        named = tests[:GROUP_TESTS] if every_test else tests[:1]
        test = ", ".join(named) + (
            f" (+{len(tests) - len(named)} more)" if tests[len(named) :] else ""
        )
        rows.append(
            [
                test,
                g.label,
                format_threshold(g),
                format_value(g),
                format_margin(g),
                g.outcome,
                _shorten(g.reason, reason_width),
            ]
        )
    return rows


def failed_first(gates: Sequence[GateResult]) -> list[GateResult]:
    """Failed gates, then expected failures, then passes, each in test order: a
    table answers "why did CI fail" in its first rows (an xfailed gate of
    `seqgate::accuracy` came before the failed `seqgate::recall[spam]`)."""
    return sorted(gates, key=lambda g: _OUTCOME_ORDER[g.outcome])


_OUTCOME_ORDER = {"FAIL": 0, "XFAIL": 1, "PASS": 2}


# How many of its tests a grouped gate's row names before it counts the rest.
GROUP_TESTS = 5
GATE_HEADERS = ["test", "gate", "threshold", "value", "margin", "result", "reason"]
XFAIL_NOTE = "XFAIL: a test marked xfail, expected to fail; it does not fail the run"
_GATE_STYLE = {"PASS": "green", "FAIL": "red", "XFAIL": "yellow"}
EXAMPLE_HEADERS = ["class", "error", "record", "true", "predicted", "P(class)"]


def example_rows(gates: Sequence[GateResult]) -> list[list[str]]:
    """The most confident errors behind failed gates, a row each."""
    return [
        [
            str(example_class(g)),
            "missed" if kind == "missed" else "false alarm",
            e["record"],
            e["true"],
            e["predicted"],
            format_number(example_score(kind, e), 2),
        ]
        for g, kind, examples in distinct_examples(gates)
        for e in examples
    ]


def headline(ev: Evaluation) -> str:
    """The one line every report starts with. It names the device and, when the
    forward ran under autocast, the precision: bf16 numbers are not fp32 numbers."""
    passed = sum(g.passed for g in ev.gates)
    xfailed = sum(g.xfail is not None for g in ev.gates)
    gates = (
        f", gates {passed}/{len(ev.gates)} passed{f' ({xfailed} xfail)' if xfailed else ''}"
        if ev.gates
        else ""
    )
    # Another threshold, other numbers: the line says which decided the classes.
    decided = (
        f", {ev.labels[1]} at P({ev.labels[1]}) >= {ev.threshold:g}"
        if ev.threshold is not None
        else ""
    )
    return (
        f"{ev.name} on {ev.eval_data}: {counted(ev.n_samples, 'sample')}, accuracy "
        f"{format_number(ev.metrics.value('accuracy'))}, macro F1 "
        f"{format_number(ev.metrics.value('macro_f1'))}{decided}, {ev.device}"
        f"{f' {ev.precision} autocast' if ev.precision != 'fp32' else ''}"
        f"{f' ({ev.device_note})' if ev.device_note else ''}, "
        f"{ev.seconds:.2f}s{f' ({ev.cache_note})' if ev.cache_note else ''}{gates}"
        f"{against_baseline(ev)}"
    )


def against_baseline(ev: Evaluation) -> str:
    """The headline's word on the baseline: the changes of accuracy and macro F1,
    the largest drop of a class's recall, and McNemar's verdict when it finds the
    model worse. Under -q the headline is all the terminal shows, and a pull
    request that lost a fifth of the spam it caught must not read as a plain
    line of numbers."""
    cmp = ev.comparison
    if cmp is None:
        return ""
    changes = []
    for metric, shown in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
        drop = cmp.drop(metric)
        if drop is not None:
            changes.append(f"{shown} {format_change(-drop)}")
    recalls = [
        (drop, metric)
        for metric in cmp.deltas
        if metric.startswith("recall[") and (drop := cmp.drop(metric)) is not None and drop > 0
    ]
    if recalls:
        drop, metric = max(recalls)
        changes.append(f"{metric} {format_change(-drop)}")
    worse = next((f for f in ev.findings if f.kind == "significant_regression"), None)
    if worse is not None:
        changes.append(f"significantly worse ({p_value_text(worse.data['p_value'])})")
    return f"; against the baseline: {', '.join(changes)}" if changes else ""


def render_terminal(evaluations: Sequence[Evaluation], verbosity: int = 0) -> list[tuple[str, str]]:
    """Lines with a style tag: '' plain, 'red', 'green', 'yellow', 'bold'.

    ``-q`` (verbosity < 0): one line per evaluation. Default: the per-class and
    summary tables, then failing gates and findings. ``-v``: also the confusion
    matrix, every slice and every gate.
    """
    out: list[tuple[str, str]] = []

    def table(rows: list[list[Any]], headers: list[str]) -> None:
        out.extend(
            (line, "")
            for line in tabulate(
                rows,
                headers=headers,
                tablefmt="simple",
                disable_numparse=True,
                colalign=column_alignment(rows),
            ).splitlines()
        )

    for ev in evaluations:
        failed = failed_gates(ev.gates)
        out.append((headline(ev), "red" if failed else "bold"))
        if verbosity < 0:
            continue
        out.append(("", ""))
        classes = None if verbosity > 0 else weakest_classes(ev)
        table(per_class_rows(ev, classes), PER_CLASS_HEADERS)
        if classes is not None and len(classes) < len(ev.labels):
            out.append(
                (
                    f"({fewer_classes(ev, classes)}; -v shows every class, and the JSON and "
                    f"HTML reports hold them all)",
                    "",
                )
            )
        out.append(("", ""))
        table(
            summary_rows(ev),
            ["metric", "eval"] + (["train"] if ev.train_metrics is not None else []),
        )
        if verbosity > 0:
            out.append(("", ""))
            if len(ev.labels) <= GLANCE_CLASSES:
                out.append(("confusion matrix (rows: true class, columns: predicted)", ""))
                table(confusion_rows(ev), ["true \\ pred", *ev.labels])
            else:
                out.append((f"most frequent confusions ({MATRIX_ELSEWHERE})", ""))
                table(confusion_pairs(ev), CONFUSION_HEADERS)
        if ev.comparison is not None:
            cmp = ev.comparison
            out.append(("", ""))
            out.append((f"against baseline {cmp.baseline}", ""))
            table(delta_rows(ev), DELTA_HEADERS)
            if cmp.p_value is not None:
                out.append(
                    (
                        f"McNemar on {counted(cmp.shared - cmp.changed, 'shared sample')}: "
                        f"{cmp.newly_wrong} newly wrong, {cmp.newly_right} newly right, "
                        f"{p_value_text(cmp.p_value)}",
                        "",
                    )
                )
        slices = ev.slices if verbosity > 0 else weak_slices(ev)
        if slices:
            out.append(("", ""))
            out.append(
                (
                    "slices" if verbosity > 0 else WEAK_SLICES_TITLE,
                    "",
                )
            )
            table(slice_rows(ev, slices), SLICE_HEADERS)
        elif any(s.group != "length" for s in ev.slices):
            # Slices the user asked for (seqgate_slice_by), none of them weak: say
            # they were looked at, or the report reads as if the setting were ignored.
            # A key of a value or two per record (an id) makes slices too small to
            # judge, none of them weak: the count says why nothing was found.
            groups = dict.fromkeys(s.group for s in ev.slices)
            small = sum(s.n < SLICE_MIN_SAMPLES for s in ev.slices)
            thin = (
                f", {small} of them under {SLICE_MIN_SAMPLES} samples (too few to judge"
                if small
                else ""
            )
            for group in groups:
                sizes = [s.n for s in ev.slices if s.group == group]
                too_small = sum(n < SLICE_MIN_SAMPLES for n in sizes)
                if len(sizes) > MANY_VALUES and 2 * too_small > len(sizes):
                    thin += f"; {group} takes {len(sizes)} values: slice by a coarser key"
                    break
            thin += ")" if small else ""
            out.append(("", ""))
            out.append(
                (
                    f"{counted(len(ev.slices), 'slice')} (by {', '.join(groups)}){thin}, none "
                    f"of {SLICE_MIN_SAMPLES}+ samples with a macro F1 more than {SLICE_GAP} "
                    f"below the whole set's; -v lists them",
                    "",
                )
            )
        shown = failed_first(ev.gates if verbosity > 0 else [g for g in ev.gates if not g.passed])
        if shown:
            out.append(("", ""))
            title = "gates" if verbosity > 0 else "failed gates"
            if any(g.xfail is not None for g in shown):
                title += f" ({XFAIL_NOTE})"
            out.append((title, ""))
            lines = tabulate(
                gate_rows(shown, 48, every_test=False),
                headers=GATE_HEADERS,
                tablefmt="simple",
                disable_numparse=True,
            ).splitlines()
            out.extend((line, "") for line in lines[:2])
            for (gate, _), line in zip(gate_groups(shown), lines[2:]):
                out.append((line, _GATE_STYLE[gate.outcome]))
        out.extend(_finding_lines(ev.findings, verbosity))
        out.append(("", ""))
    return out


# Findings of one kind shown in the terminal without -v: a per-class gate on 30
# classes gave 29 underpowered warnings, which buried everything after them.
FINDINGS_PER_KIND = 3


def _finding_lines(findings: Sequence[Finding], verbosity: int) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    shown: dict[tuple[str, str], int] = {}
    for finding in findings:
        key = (finding.severity, finding.kind)
        shown[key] = shown.get(key, 0) + 1
        style = "red" if finding.severity == "error" else "yellow"
        tag = f"{finding.severity.upper()} [{finding.kind}]"
        if verbosity > 0 or shown[key] <= FINDINGS_PER_KIND:
            lines.append((f"{tag} {finding.message}", style))
        elif shown[key] == FINDINGS_PER_KIND + 1:
            more = sum(1 for f in findings if (f.severity, f.kind) == key) - FINDINGS_PER_KIND
            text = f"{tag} ... and {more} more (-v shows each; the report files hold them all)"
            lines.append((text, style))
    return lines


# A cell that reads as a number: 0.912, 1,204, -0.031, 12.5%, n/a.
_NUMERIC_CELL = re.compile(r"n/a|[-+]?[0-9][0-9,]*(\.[0-9]+)?(e[-+]?[0-9]+)?%?")


def column_alignment(rows: Sequence[Sequence[Any]]) -> tuple[str, ...] | None:
    """Right for the columns whose every cell is a number, else left: the
    digits of a column line up, as in a spreadsheet (the tables are built from
    strings, so tabulate cannot tell numbers from names by itself). A column of
    rates with intervals (``0.912 [0.874, 0.941]``) stays left, where its points
    line up with those that have no interval."""
    if not rows:
        return None
    return tuple(
        "right"
        if all(_NUMERIC_CELL.fullmatch(str(row[j])) for row in rows if str(row[j]))
        and any(str(row[j]) for row in rows)
        else "left"
        for j in range(len(rows[0]))
    )


# What GitHub's Markdown would read as markup in a class name, a test id or a
# path: a backslash, a backtick, an asterisk or a "|" anywhere; "<" that opens a
# tag (its sanitizer then drops "<unk>" from the page); "&" that spells an
# entity; "]" that closes a link's text; "_" and "~" that can open or close
# emphasis and strike-through (not inside a word, where "macro_f1" stays as it
# is, nor "~" alone between spaces).
_MARKUP = re.compile(
    r"[\\`*|]|<(?=[A-Za-z/!?])|&(?=#?\w+;)|\](?=[(\[])"
    r"|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])|(?<!\s)~|~(?!\s)"
)
# What would make a line a heading, a quote, a list item or a rule.
_LINE_START = re.compile(r"^([#>+=-])|^(\d+)([.)])(?=\s|$)")


def markdown_text(text: object, line_start: bool = False) -> str:
    """``text`` as it reads, in Markdown: names and messages come from the user's
    data and tests, and a class named "<unk>" or "*" must read as itself in a
    pull-request comment, not vanish or turn the rest of the line italic."""
    out = _MARKUP.sub(lambda m: "\\" + m.group(), str(text))
    if line_start:
        out = _LINE_START.sub(lambda m: "\\" + m[1] if m[1] else m[2] + "\\" + m[3], out, count=1)
    return out


def _markdown_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A GitHub table (its numeric columns marked right-aligned); each cell's text
    is escaped (:func:`markdown_text`), a "|" above all, or it would end the cell."""
    return tabulate(
        [[markdown_text(v) for v in row] for row in rows],
        headers=[markdown_text(h) for h in headers],
        tablefmt="pipe",
        disable_numparse=True,
        colalign=column_alignment(rows),
    )


# What a report says when an evaluation did not run: written over the last run's
# files, which would otherwise be read (or published by CI) as this run's.
NOT_EVALUATED = "The evaluation did not run"


def verdict(ev: Evaluation) -> tuple[str, str]:
    """The evaluation's outcome, for a heading, and its CSS class: what a person
    opening either file reads first. (The Markdown adds an emoji; the HTML page
    its colour, as a browser without an emoji font shows a box.)"""
    if failed_gates(ev.gates):
        return "gates failed", "fail"
    return ("gates passed", "pass") if ev.gates else ("no gates", "")


VERDICT_EMOJI = {"fail": "❌ ", "pass": "✅ ", "": ""}


def render_text(evaluations: Sequence[Evaluation], verbosity: int = 0) -> str:
    """The terminal summary as plain text, for a script or notebook to print: the
    tables a pytest run shows, without pytest's colours."""
    return "\n".join(line for line, _ in render_terminal(evaluations, verbosity))


def render_markdown(evaluations: Sequence[Evaluation], errors: Sequence[str] = ()) -> str:
    parts = ["# seqgate report", ""]
    if errors:
        parts += [f"## ❌ {NOT_EVALUATED}", "", *[f"- {markdown_text(m)}" for m in errors], ""]
    for ev in evaluations:
        failed = failed_gates(ev.gates)
        outcome, css = verdict(ev)
        parts += [
            f"## {markdown_text(ev.name)}: {VERDICT_EMOJI[css]}{outcome}",
            "",
            markdown_text(headline(ev), line_start=True),
            "",
        ]
        # A pull-request comment is read from the top: what failed comes first.
        if failed:
            parts += ["### Failed gates", "", _markdown_table(gate_rows(failed), GATE_HEADERS), ""]
            examples = example_rows(failed)
            if examples:
                parts += [
                    "Errors behind the failed gates, most confident first:",
                    "",
                    _markdown_table(examples, EXAMPLE_HEADERS),
                    "",
                ]
        # A pull-request comment holds 65,536 characters: past GLANCE_CLASSES
        # classes the weakest, as in the terminal (1,000 classes made 100 KB).
        classes = weakest_classes(ev)
        parts += [_markdown_table(per_class_rows(ev, classes), PER_CLASS_HEADERS), ""]
        if len(classes) < len(ev.labels):
            held = "the JSON and HTML reports hold them all"
            parts += [f"({fewer_classes(ev, classes)}; {held})", ""]
        headers = ["metric", "eval"] + (["train"] if ev.train_metrics is not None else [])
        parts += [_markdown_table(summary_rows(ev), headers), ""]
        if len(ev.labels) <= GLANCE_CLASSES:
            summary = "Confusion matrix (rows: true, columns: predicted)"
            matrix = _markdown_table(confusion_rows(ev), ["true \\ pred", *ev.labels])
        else:
            summary = f"Most frequent confusions ({MATRIX_ELSEWHERE})"
            matrix = _markdown_table(confusion_pairs(ev), CONFUSION_HEADERS)
        parts += [f"<details><summary>{summary}</summary>", "", matrix, "", "</details>", ""]
        if ev.comparison is not None:
            parts += [
                f"### Against baseline `{ev.comparison.baseline}`",
                "",
                _markdown_table(delta_rows(ev), DELTA_HEADERS),
                "",
            ]
        weak = weak_slices(ev)
        if weak:
            parts += [
                f"### {WEAK_SLICES_HEADING}",
                "",
                _markdown_table(slice_rows(ev, weak), SLICE_HEADERS),
                "",
            ]
        expected = [g for g in ev.gates if g.xfail is not None]
        if expected:
            parts += [
                "### Expected failures (xfail)",
                "",
                "Gates of tests marked xfail: they failed, as expected, and do not fail the run.",
                "",
                _markdown_table(gate_rows(expected), GATE_HEADERS),
                "",
            ]
        passed = [g for g in ev.gates if g.passed]
        if passed:
            parts += [
                f"<details><summary>Passed gates ({len(passed)})</summary>",
                "",
                _markdown_table(gate_rows(passed), GATE_HEADERS),
                "",
                "</details>",
                "",
            ]
        if ev.findings:
            parts += ["### Findings", ""]
            parts += [
                f"- **{f.severity}** `{f.kind}`: {markdown_text(f.message)}" for f in ev.findings
            ]
            parts.append("")
    return "\n".join(parts) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:left}th{background:#f3f3f3}.cm td{text-align:right;min-width:3em}
.fail{color:#b00020;font-weight:600}.pass{color:#1b7f2a}.warning,.xfail{color:#9a6700}
.error{color:#b00020}.charts{display:flex;gap:2em;flex-wrap:wrap}
.reason{min-width:12em;max-width:32em}
.test{overflow-wrap:anywhere;min-width:16em}
"""


def _heat(value: float) -> str:
    # White to blue by the row-normalised share; text turns white on dark cells.
    v = 0.0 if math.isnan(value) else max(0.0, min(1.0, value))
    r, g, b = (int(255 - v * (255 - c)) for c in (33, 102, 172))
    fg = "#fff" if v > 0.55 else "#222"
    return f"background:rgb({r},{g},{b});color:{fg}"


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def _bars_svg(ev: Evaluation) -> str:
    """Per-class precision, recall and F1 as bars, with their intervals as whiskers."""
    per = ev.uncertainty.per_class(ev.labels)
    metrics = ("precision", "recall", "f1")
    classes = weakest_classes(ev)
    row_h, left, width = 16, 110, 300
    height = len(classes) * (len(metrics) * row_h + 12) + 24
    parts = [
        f"<svg width='{left + width + 60}' "
        f"height='{height}' role='img' aria-label='per-class metrics'>"
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * width
        parts.append(
            f"<line x1='{x:.1f}' y1='0' x2='{x:.1f}' y2='{height - 18}' "
            f"stroke='#ddd'/><text x='{x:.1f}' y='{height - 4}' font-size='10' "
            f"text-anchor='middle'>{tick:g}</text>"
        )
    y = 4
    for i in classes:
        name = ev.labels[i]
        parts.append(
            f"<text x='0' y='{y + 12}' font-size='12' font-weight='600'>{html.escape(name)}</text>"
        )
        for j, metric in enumerate(metrics):
            value = ev.metrics.value(metric, i)
            colour = _COLOURS[j]
            parts.append(
                f"<text x='{left - 6}' y='{y + 12}' font-size='10' "
                f"text-anchor='end'>{metric}</text>"
            )
            if not math.isnan(value):
                parts.append(
                    f"<rect x='{left}' y='{y + 2}' width='{value * width:.1f}' "
                    f"height='{row_h - 5}' fill='{colour}' opacity='0.75'>"
                    f"<title>{metric} {value:.3f}</title></rect>"
                )
                parts.append(
                    f"<text x='{left + width + 6}' y='{y + 12}' font-size='10'>{value:.3f}</text>"
                )
            interval = per[name].get(metric)
            pair = _pair(interval) if interval is not None else None
            if pair is not None:
                lo, hi = (left + v * width for v in pair)
                mid = y + row_h / 2
                parts.append(
                    f"<line x1='{lo:.1f}' y1='{mid}' x2='{hi:.1f}' y2='{mid}' "
                    f"stroke='#222'/><line x1='{lo:.1f}' y1='{mid - 4}' x2='{lo:.1f}' "
                    f"y2='{mid + 4}' stroke='#222'/><line x1='{hi:.1f}' "
                    f"y1='{mid - 4}' x2='{hi:.1f}' y2='{mid + 4}' stroke='#222'/>"
                )
            y += row_h
        y += 12
    parts.append("</svg>")
    return "".join(parts)


def _pr_svg(ev: Evaluation, points: int = 200) -> str:
    """Precision-recall curves, one per class (one-vs-rest), as polylines."""
    from pytest_seqgate.curves import pr_curve

    if ev.predictions.scores.shape[1] == 0:
        return (
            "<p>No curves: this run kept no scores (seqgate_keep_scores = false, or a "
            "streamed run without them).</p>"
        )
    size, pad = 260, 34
    parts = [
        f"<svg width='{size + pad + 150}' "
        f"height='{size + pad + 10}' role='img' aria-label='precision-recall curves'>",
        f"<rect x='{pad}' y='4' width='{size}' height='{size}' fill='none' stroke='#999'/>",
        f"<text x='{pad + size / 2}' y='{size + pad}' font-size='11' "
        f"text-anchor='middle'>recall</text>",
        f"<text x='10' y='{size / 2}' font-size='11' text-anchor='middle' "
        f"transform='rotate(-90 10 {size / 2})'>precision</text>",
    ]
    for tick in (0.0, 0.5, 1.0):
        y = 4 + (1 - tick) * size
        parts.append(
            f"<text x='{pad - 4}' y='{y + 3:.1f}' font-size='10' text-anchor='end'>{tick:g}</text>"
            f"<text x='{pad + tick * size:.1f}' y='{size + 18}' font-size='10' "
            f"text-anchor='middle'>{tick:g}</text>"
        )
    scores, targets = ev.predictions.scores, ev.targets
    for shown, i in enumerate(weakest_classes(ev, CURVE_CLASSES)):
        name = ev.labels[i]
        positive = targets == i
        if not bool(positive.any()):
            continue
        curve = pr_curve(scores[:, i], positive)
        step = max(1, curve.recall.numel() // points)
        recall = [0.0, *curve.recall[::step].tolist(), float(curve.recall[-1])]
        precision = [1.0, *curve.precision[::step].tolist(), float(curve.precision[-1])]
        coords = " ".join(
            f"{pad + r * size:.1f},{4 + (1 - p) * size:.1f}" for r, p in zip(recall, precision)
        )
        colour = _COLOURS[shown % len(_COLOURS)]
        parts.append(
            f"<polyline points='{coords}' fill='none' stroke='{colour}' "
            f"stroke-width='2'><title>{html.escape(name)}</title></polyline>"
        )
        ap = float(ev.ranking.average_precision[i]) if ev.ranking is not None else math.nan
        parts.append(
            f"<text x='{pad + size + 10}' y='{20 + 16 * shown}' font-size='11' "
            f"fill='{colour}'>{html.escape(name)} (AP {ap:.3f})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _breakable(name: str) -> str:
    """A test id, escaped, that breaks after its "::" and "/" rather than mid-name
    (the CSS breaks a name longer than its column where it must)."""
    return html.escape(name).replace("::", "::<wbr>").replace("/", "/<wbr>")


def _gate_row_html(gate: GateResult, tests: Sequence[str], row: list[str]) -> str:
    """A gate as a table row, the tests it speaks for a line each; the (shortened)
    reason keeps its full text as a tooltip."""
    e = html.escape
    cells = []
    for j, cell in enumerate(row):
        if j == 0:
            named = [_breakable(t) for t in tests[:GROUP_TESTS]]
            if len(tests) > GROUP_TESTS:
                named.append(f"(+{len(tests) - GROUP_TESTS} more)")
            cells.append(f"<td class='test'>{'<br>'.join(named)}</td>")
        elif j == 1:  # train_test_gap.macro_f1 breaks after its ".", a class before "["
            cells.append(f"<td>{e(cell).replace('.', '.<wbr>').replace('[', '<wbr>[')}</td>")
        elif j == 5:
            cells.append(f"<td class='{gate.outcome.lower()}'>{e(cell)}</td>")
        elif j == 6:
            cells.append(f"<td class='reason' title='{e(gate.reason)}'>{e(cell)}</td>")
        else:
            cells.append(f"<td>{e(cell)}</td>")
    return "<tr>" + "".join(cells) + "</tr>"


MATRIX_ELSEWHERE = "the full matrix is in the JSON report"


def _matrix_html(ev: Evaluation) -> str:
    """The confusion matrix, each cell shaded by its share of the true class."""
    e = html.escape
    cm = ev.metrics.confusion_matrix
    share = (cm.double() / cm.sum(1).clamp_min(1).unsqueeze(1)).tolist()
    cells = [
        "<table class='cm'><tr><th>true \\ pred</th>"
        + "".join(f"<th>{e(n)}</th>" for n in ev.labels)
        + "</tr>"
    ]
    for name, counts, shares in zip(ev.labels, cm.tolist(), share):
        cells.append(
            f"<tr><th>{e(name)}</th>"
            + "".join(
                f"<td style='{_heat(s)}' title='{100 * s:.1f}% of true {e(name)}'>{c}</td>"
                for c, s in zip(counts, shares)
            )
            + "</tr>"
        )
    cells.append("</table>")
    return "".join(cells)


def _gates_html(gates: Sequence[GateResult]) -> str:
    return (
        "<h3>Gates</h3><table class='gates'><tr>"
        + "".join(f"<th>{h}</th>" for h in GATE_HEADERS)
        + "</tr>"
        + "".join(
            _gate_row_html(g, tests, row)
            for (g, tests), row in zip(gate_groups(gates), gate_rows(gates, 90))
        )
        + "</table>"
    )


def _html_table(
    rows: Sequence[Sequence[Any]], headers: Sequence[str], cells: Sequence[Sequence[Any]] = ()
) -> str:
    """A table aligned as the terminal's: columns of numbers right, text left (class
    names and a slice's recalls read badly flush right). ``cells``, when given, are
    the rows as HTML (already escaped), aligned by the plain ``rows``."""
    return tabulate(
        cells or rows,
        headers=headers,
        tablefmt="unsafehtml" if cells else "html",
        disable_numparse=True,
        colalign=column_alignment(rows),
    )


def render_html(evaluations: Sequence[Evaluation], errors: Sequence[str] = ()) -> str:
    """One self-contained page: inline CSS, no scripts, no network."""
    e = html.escape
    body = ["<h1>seqgate report</h1>"]
    if errors:
        body.append(
            f"<h2 class='fail'>{e(NOT_EVALUATED)}</h2><ul>"
            + "".join(f"<li class='error'>{e(m)}</li>" for m in errors)
            + "</ul>"
        )
    for ev in evaluations:
        outcome, css = verdict(ev)
        body.append(
            f"<h2>{e(ev.name)}: <span class='{css}'>{e(outcome)}</span></h2>"
            f"<p>{e(headline(ev))}</p>"
        )
        failed = failed_gates(ev.gates)
        if failed:
            # Right under the headline, failed first: the page answers "why did CI fail".
            body.append(_gates_html(failed_first(ev.gates)))
            examples = example_rows(failed)
            if examples:
                body.append(
                    "<h3>Errors behind the failed gates</h3>"
                    + _html_table(examples, EXAMPLE_HEADERS)
                )
        body.append(_html_table(per_class_rows(ev), PER_CLASS_HEADERS))
        headers = ["metric", "eval"] + (["train"] if ev.train_metrics is not None else [])
        body.append(_html_table(summary_rows(ev), headers))
        if len(ev.labels) > GLANCE_CLASSES:
            body.append(
                f"<h3>Most frequent confusions</h3><p>{e(MATRIX_ELSEWHERE)}</p>"
                + _html_table(confusion_pairs(ev), CONFUSION_HEADERS)
            )
        else:
            body.append("<h3>Confusion matrix</h3>" + _matrix_html(ev))
        # The same sections as the Markdown report: a person opening either
        # after a regression sees what changed and where the model is weakest.
        if ev.comparison is not None:
            deltas = delta_rows(ev)
            body.append(
                f"<h3>Against baseline <code>{e(ev.comparison.baseline)}</code></h3>"
                + _html_table(deltas, DELTA_HEADERS, [_delta_row_html(row) for row in deltas])
            )
        weak = weak_slices(ev)
        if weak:
            body.append(
                f"<h3>{e(WEAK_SLICES_HEADING)}</h3>"
                + _html_table(slice_rows(ev, weak), SLICE_HEADERS)
            )
        c = len(ev.labels)
        bars = f": the {GLANCE_CLASSES} of lowest F1" if c > GLANCE_CLASSES else ""
        curves = f": the {CURVE_CLASSES} classes of lowest F1" if c > CURVE_CLASSES else ""
        body.append(
            f"<div class='charts'><div><h3>Per class, with intervals{bars}</h3>"
            + _bars_svg(ev)
            + f"</div><div><h3>Precision-recall curves{curves}</h3>"
            + _pr_svg(ev)
            + "</div></div>"
        )
        if ev.gates and not failed:
            body.append(_gates_html(ev.gates))
        if ev.findings:
            body.append(
                "<h3>Findings</h3><ul>"
                + "".join(
                    f"<li class='{e(f.severity)}'><b>{e(f.kind)}</b>: {e(f.message)}</li>"
                    for f in ev.findings
                )
                + "</ul>"
            )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>seqgate report</title><style>"
        + _CSS
        + "</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


RENDERERS = {".json": render_json, ".md": render_markdown, ".html": render_html}


def _mode_of_new(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: an existing file's own,
    else 0o666 less the process's umask (which can only be read by setting it)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over the target.

    A reader (or a crash) never sees half a report: the old file stays whole
    until the new one is complete. The file ends up with the permissions a
    plain ``open(path, "w")`` gives (an existing file's, else 0o666 less the
    umask), not the 0o600 of a temporary file: a CI job that publishes the
    reports, or a colleague on a shared runner, must be able to read them.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_of_new(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        # Name the report, not the temporary file beside it.
        raise OSError(f"{path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(
    paths: Sequence[str | os.PathLike[str]],
    evaluations: Sequence[Evaluation],
    errors: Sequence[str] = (),
) -> tuple[list[Path], list[str]]:
    """Write every report that can be written: the files written, and why each of
    the others could not be (one unwritable path must not cost the rest)."""
    written, failures = [], []
    for given in paths:
        path = Path(given)
        why = unwritable_report(path)
        if why:
            # The plugin checks its settings before a run; a caller of the core
            # learns here, not from a render "bug".
            failures.append(why)
            continue
        try:
            write_atomic(path, RENDERERS[path.suffix](evaluations, errors))
        except OSError as exc:
            failures.append(str(exc))
            continue
        except Exception as exc:  # a bug of ours in one format must not cost the others
            failures.append(f"{path}: {RENDER_BUG}: {type(exc).__name__}: {exc}")
            continue
        written.append(path)
    return written, failures


def save_baseline(path: str | os.PathLike[str], evaluations: Sequence[Evaluation]) -> Path:
    """Write the JSON report plus each sample's content hash, true class and
    prediction: what a later run's ``seqgate_baseline`` pairs its samples with
    (McNemar's test, the records newly wrong). Atomic, as the reports are."""
    target = Path(path)
    document = baseline_json(report_json(evaluations), list(evaluations))
    write_atomic(target, json.dumps(document, indent=1, allow_nan=False) + "\n")
    return target


# How a report that failed to render (not to write) is named: a bug, which the run's
# exit status shows (the plugin makes it pytest's internal-error status).
RENDER_BUG = "rendering failed, a bug in pytest-seqgate (please report it)"
