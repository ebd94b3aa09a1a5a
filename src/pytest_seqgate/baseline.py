"""Save a run as a baseline, and compare a run against one: the pre-merge workflow.

A baseline is the JSON report plus, per sample, a content hash, the true class
and the prediction (base64 of little-endian int64/int16 arrays: about 13 bytes
a sample, 1.3 MB for 100,000). Matching samples by content hash lets the
comparison survive a reordered eval set and tell what was added or removed.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pytest_seqgate import REPORT_SCHEMA
from pytest_seqgate.diagnostics import Finding
from pytest_seqgate.exceptions import ConfigError, counted
from pytest_seqgate.metrics import SUMMARY_METRICS
from pytest_seqgate.stats import binomial_sf, p_value_text

SIGNIFICANCE = 0.05


def _encode(t: Tensor, dtype: torch.dtype) -> str:
    return base64.b64encode(t.to(dtype).contiguous().numpy().tobytes()).decode("ascii")


def _decode(text: str, dtype: torch.dtype) -> Tensor:
    raw = bytearray(base64.b64decode(text))
    return (
        torch.frombuffer(raw, dtype=dtype).to(torch.int64)
        if raw
        else torch.zeros(0, dtype=torch.int64)
    )


def baseline_json(report: dict[str, Any], evaluations: list[Any]) -> dict[str, Any]:
    """The report with per-sample predictions added to each evaluation."""
    out = json.loads(json.dumps(report))
    for entry, ev in zip(out["evaluations"], evaluations):
        entry["samples"] = {
            "encoding": "base64 little-endian; hashes int64, targets and predictions int16",
            "hashes": _encode(ev.predictions.hashes, torch.int64),
            "targets": _encode(ev.targets, torch.int16),
            "predictions": _encode(ev.predictions.predictions, torch.int16),
        }
    return out


def read_report(
    path: Path, setting: str = "seqgate_baseline", shown: str | None = None
) -> dict[str, Any]:
    """The JSON report at ``path``, or an error saying why it is none. Read at
    collection too, where a missing or foreign file is one usage error rather
    than an error in every gated test (a 100,000-sample baseline, 1.6 MB,
    parses in about 1 ms)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{setting}: cannot read {shown or path} as a JSON report: {exc}"
        ) from None
    if (
        not isinstance(report, dict)
        or report.get("schema") != REPORT_SCHEMA
        or not report.get("evaluations")
    ):
        raise ConfigError(
            f"{setting}: {shown or path} is not a seqgate report (schema "
            f"'{REPORT_SCHEMA}' with at least one evaluation)"
        )
    return report


@dataclass
class Baseline:
    path: Path
    labels: list[str]
    metrics: dict[str, Any]
    hashes: Tensor | None = None
    targets: Tensor | None = None
    predictions: Tensor | None = None

    @classmethod
    def load(
        cls,
        path: Path,
        setting: str = "seqgate_baseline",
        name: str | None = None,
        eval_data: str | None = None,
        shown: str | None = None,
    ) -> Baseline:
        """The baseline of evaluation ``name`` on ``eval_data``: a report of several
        evaluations (a folder's conftest.py model beside the configured one) holds
        one for each, and each is compared with its own. Messages name the file
        as ``shown`` (as the user wrote it), else by its path."""
        where = shown or str(path)
        report = read_report(path, setting, where)
        entry = _entry_for(report["evaluations"], name, eval_data, setting, where)

        def damaged(what: str) -> ConfigError:
            # A hand edit, a merge tool's conflict markers resolved by hand, an older
            # file: a traceback from deep in the comparison would name none of it.
            return ConfigError(
                f"{setting}: {where} is damaged: {what}; save it again with "
                f"--seqgate-save-baseline from the branch it stands for"
            )

        if not isinstance(entry, dict):
            raise damaged("an evaluation is not a JSON object")
        labels, metrics = entry.get("labels"), entry.get("metrics")
        if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise damaged("'labels' is not a list of class names")
        if not isinstance(metrics, dict) or not isinstance(metrics.get("per_class", {}), dict):
            raise damaged("'metrics' is not an object of numbers")
        numbers = [(k, metrics.get(k)) for k in SUMMARY_METRICS] + [
            (f"{k}[{c}]", v.get(k) if isinstance(v, dict) else v)
            for c, v in metrics.get("per_class", {}).items()
            for k in ("precision", "recall", "f1")
        ]
        for key, value in numbers:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise damaged(f"metric {key} is {value!r}, not a number or null")
        out = cls(path, labels, metrics)
        samples = entry.get("samples")
        if samples:
            decoded = []
            for field_name, dtype in (
                ("hashes", torch.int64),
                ("targets", torch.int16),
                ("predictions", torch.int16),
            ):
                text = samples.get(field_name) if isinstance(samples, dict) else None
                try:
                    if not isinstance(text, str):
                        raise ValueError("missing")
                    decoded.append(_decode(text, dtype))
                except ValueError as exc:  # binascii.Error and a length off the item size
                    raise damaged(f"samples.{field_name} is not base64 of {dtype}: {exc}") from None
            hashes, targets, predictions = decoded
            if not len(hashes) == len(targets) == len(predictions):
                raise damaged(
                    f"samples hold {len(hashes)} hashes, {len(targets)} targets and "
                    f"{len(predictions)} predictions"
                )
            for field_name, values in (("targets", targets), ("predictions", predictions)):
                if len(values) and not 0 <= int(values.min()) <= int(values.max()) < len(labels):
                    raise damaged(f"samples.{field_name} hold class indices outside its labels")
            out.hashes, out.targets, out.predictions = hashes, targets, predictions
        return out


def _entry_for(
    entries: list[Any], name: str | None, eval_data: str | None, setting: str, path: str
) -> Any:
    if len(entries) == 1 or name is None:
        return entries[0]
    named = [e for e in entries if e.get("name") == name]
    on_data = [e for e in named if e.get("eval_data") == eval_data]
    if named:
        return (on_data or named)[0]  # the same model on a renamed eval set still compares
    held = ", ".join(f"{e.get('name')} on {e.get('eval_data')}" for e in entries)
    raise ConfigError(
        f"{setting}: {path} holds the baselines of {held}, none of them {name} on "
        f"{eval_data}; save a baseline from a run that evaluates it"
    )


def mcnemar_exact(newly_wrong: int, newly_right: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against Binomial(b + c, 1/2)."""
    n = newly_wrong + newly_right
    if n == 0:
        return 1.0
    low = min(newly_wrong, newly_right)
    # P(X <= low) = P(X >= n - low) by the symmetry of Binomial(n, 1/2): the upper
    # tail directly, where 1 - P(X >= low + 1) cancels to 0.0 for a clear regression
    # (92 newly wrong and 7 newly right: p = 5.1e-20, not 0).
    return min(1.0, 2 * binomial_sf(n - low, n, 0.5))


@dataclass
class Comparison:
    baseline: str
    deltas: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    shared: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    newly_wrong: int | None = None
    newly_right: int | None = None
    p_value: float | None = None

    def drop(self, metric: str) -> float | None:
        """Baseline minus current (positive: worse now)."""
        before, now = self.deltas.get(metric, (None, None))
        if before is None or now is None:
            return None
        return before - now

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "metrics": {
                k: {"baseline": b, "current": c, "delta": None if b is None or c is None else c - b}
                for k, (b, c) in self.deltas.items()
            },
            "samples": {
                "shared": self.shared,
                "added": self.added,
                "removed": self.removed,
                "label_changed": self.changed,
            },
            "mcnemar": None
            if self.p_value is None
            else {
                "newly_wrong": self.newly_wrong,
                "newly_right": self.newly_right,
                "p_value": self.p_value,
            },
        }


def _num(value: Any) -> float | None:
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    )


NEWLY_WRONG_SHOWN = 3


def compare(
    ev: Any, base: Baseline, shown_as: str | None = None
) -> tuple[Comparison, list[Finding]]:
    """Deltas per metric, and McNemar's exact test on the samples both runs share.
    ``shown_as`` is how reports call the baseline (its path relative to the
    rootdir, as they name the data: a CI runner's absolute paths are noise)."""
    cmp = Comparison(shown_as or str(base.path))
    for name in SUMMARY_METRICS:
        cmp.deltas[name] = (_num(base.metrics.get(name)), _num(ev.metrics.value(name)))
    per_class = base.metrics.get("per_class", {})
    for i, name in enumerate(ev.labels):
        for metric in ("precision", "recall", "f1"):
            before = per_class.get(name, {}).get(metric)
            cmp.deltas[f"{metric}[{name}]"] = (_num(before), _num(ev.metrics.value(metric, i)))
    findings: list[Finding] = []
    if base.hashes is None or base.predictions is None or base.targets is None:
        return cmp, findings
    base_targets = base.targets
    if base.labels != list(ev.labels):
        # A model that gained a class, or whose outputs were reordered, is still
        # compared sample by sample: a class is the same class by its name.
        position = {name: i for i, name in enumerate(ev.labels)}
        by_name = torch.tensor([position.get(name, -1) for name in base.labels])
        base_targets = by_name[base.targets.long()]
        gone = [name for name in base.labels if name not in position]
        findings.append(
            Finding(
                "baseline",
                "warning",
                f"the baseline's labels {base.labels} differ from {list(ev.labels)}: "
                f"samples are paired by class name"
                + (
                    f"; those of {', '.join(map(repr, gone))}, which the labels no longer "
                    f"name, count as relabelled"
                    if gone
                    else ""
                ),
                {"baseline_labels": base.labels},
            )
        )
    now_hashes = ev.predictions.hashes
    # First occurrence of each hash on both sides: duplicates inside a set do not pair twice.
    b_unique, b_first = _first_index(base.hashes)
    n_unique, n_first = _first_index(now_hashes)
    in_base = torch.isin(n_unique, b_unique)
    cmp.shared = int(in_base.sum())
    cmp.added = int((~in_base).sum())
    cmp.removed = int((~torch.isin(b_unique, n_unique)).sum())
    shared_hashes = n_unique[in_base]
    now_idx = n_first[in_base]
    base_idx = b_first[torch.searchsorted(b_unique, shared_hashes)]
    same_label = base_targets[base_idx] == ev.targets[now_idx]
    cmp.changed = int((~same_label).sum())
    now_idx, base_idx = now_idx[same_label], base_idx[same_label]
    was_right = base.predictions[base_idx] == base.targets[base_idx]
    is_right = ev.predictions.predictions[now_idx] == ev.targets[now_idx]
    newly = ev.least_sure_of_the_truth(now_idx[was_right & ~is_right])
    cmp.newly_wrong = int((was_right & ~is_right).sum())
    cmp.newly_right = int((~was_right & is_right).sum())
    cmp.p_value = mcnemar_exact(cmp.newly_wrong, cmp.newly_right)
    if cmp.added or cmp.removed or cmp.changed:
        findings.append(
            Finding(
                "baseline",
                "warning",
                f"the eval set changed since the baseline: {counted(cmp.added, 'sample')} added, "
                f"{cmp.removed} removed, {cmp.changed} relabelled; the per-sample comparison uses "
                f"the {cmp.shared - cmp.changed} shared ones",
                {"added": cmp.added, "removed": cmp.removed, "changed": cmp.changed},
            )
        )
    if cmp.newly_wrong > cmp.newly_right and cmp.p_value < SIGNIFICANCE:
        # The samples the baseline got right and this model gets wrong, most
        # confident first: where to look for what the change broke.
        examples = ev.describe(newly[:NEWLY_WRONG_SHOWN])
        shown = ", ".join(f"{e['record']} ({e['true']}, now {e['predicted']})" for e in examples)
        findings.append(
            Finding(
                "significant_regression",
                "warning",
                f"significantly worse than baseline ({p_value_text(cmp.p_value)}, "
                f"{cmp.newly_wrong} samples newly wrong, {cmp.newly_right} newly right; "
                f"McNemar's exact test), "
                f"e.g. {shown}",
                {
                    "p_value": cmp.p_value,
                    "newly_wrong": cmp.newly_wrong,
                    "newly_right": cmp.newly_right,
                    "examples": examples,
                },
            )
        )
    return cmp, findings


def _first_index(hashes: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique hashes and the first position of each."""
    order = torch.sort(hashes, stable=True)
    values, indices = order.values, order.indices
    keep = torch.ones_like(values, dtype=torch.bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep], indices[keep]
