"""Baselines: save a run, degrade the model, compare: deltas, McNemar, max_regression."""

from __future__ import annotations

import json
import re

import pytest

from pytest_seqgate.baseline import mcnemar_exact

from conftest import assert_lines, rule_records

DEGRADED = '''
import torch
from models import FirstToken

class Degraded(FirstToken):
    """Gets wrong every sequence whose first token is 2 or 3."""

    def forward(self, tokens):
        out = super().forward(tokens)
        flip = (tokens[:, :1] == 2) | (tokens[:, :1] == 3)
        return torch.where(flip, out.flip(1), out)

def build():
    return Degraded(2)
'''

GATED = """
import pytest

@pytest.mark.seqgate(max_regression=0.02, fail_on_paradox=False)
def test_no_regression():
    pass

@pytest.mark.seqgate(fail_on_significant_regression=True, fail_on_paradox=False)
def test_not_significantly_worse():
    pass
"""


def test_mcnemar_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b, c in ((41, 12), (5, 5), (0, 7), (30, 0), (92, 7), (0, 300), (6, 7)):
        expected = stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_baseline_round_trip(project):
    records = rule_records(600)
    project.data(records)
    (project.path / "degraded.py").write_text(DEGRADED)
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report=["r.json", "r.html"],
    )
    project.test(GATED)
    saved = project.run("--seqgate-save-baseline", "base/baseline.json")
    saved.assert_outcomes(passed=2)
    baseline = project.path / "base" / "baseline.json"
    document = json.loads(baseline.read_text())
    assert set(document["evaluations"][0]["samples"]) >= {"hashes", "targets", "predictions"}
    assert baseline.stat().st_size < 20_000  # 600 samples: hashes dominate, ~13 bytes each

    wrong = sum(r["tokens"][0] in (2, 3) for r in records)
    assert wrong >= 30
    result = project.run(
        "--seqgate-baseline", "base/baseline.json", "--seqgate-model", "degraded:build"
    )
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    assert_lines(
        text,
        f"*significantly worse than baseline (p = *, {wrong} samples newly "
        f"wrong, 0 newly right; McNemar's exact test)*",
    )
    assert_lines(
        text,
        "*regression.accuracy*<= 0.02*",
        "against baseline base/baseline.json",
        "metric*baseline*current*change",
        f"accuracy*1.000*{1 - wrong / 600:.3f}*",
    )
    # The page shows the comparison too, as the Markdown report does.
    page = (project.path / "r.html").read_text()
    section = re.sub(r"\s+(?=<)|(?<=>)\s+", "", page[page.index("<h3>Against baseline <code>") :])
    assert section.index("base/baseline.json</code></h3>") < section.index("<table>")
    now = 1 - wrong / 600
    # A drop in red, a gain in green; no change stays plain. Numbers flush right.
    right = '<td style="text-align: right;">'
    assert (
        f"<td>accuracy</td>{right}1.000</td>{right}{now:.3f}</td>"
        f"{right}<span class='fail'>{now - 1:+.3f}</span></td>"
    ) in section
    from pytest_seqgate.report import _delta_row_html

    assert _delta_row_html(["mcc", "0.500", "0.600", "+0.100"])[-1] == (
        "<span class='pass'>+0.100</span>"
    )
    assert _delta_row_html(["recall[<b>]", "0.5", "0.5", "+0.000"]) == [
        "recall[&lt;b&gt;]",
        "0.5",
        "0.5",
        "+0.000",
    ]
    assert _delta_row_html(["recall[x]", "n/a", "0.5", "n/a"])[-1] == "n/a"
    evaluation = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    # The finding names samples the baseline got right and this model does not.
    [regression] = [f for f in evaluation["findings"] if f["kind"] == "significant_regression"]
    assert len(regression["examples"]) == 3
    for example in regression["examples"]:
        line = int(example["record"].rsplit(":", 1)[1])
        assert records[line - 1]["tokens"][0] in (2, 3)
        assert example["true"] == records[line - 1]["label"] != example["predicted"]
        assert (
            f"{example['record']} ({example['true']}, now {example['predicted']})"
            in (regression["message"])
        )
    # Under -q the headline is the whole summary: it carries the comparison.
    quiet = project.run(
        "-q", "--seqgate-baseline", "base/baseline.json", "--seqgate-model", "degraded:build"
    )
    assert_lines(
        quiet.stdout.str(),
        f"* gates 0/5 passed; against the baseline: accuracy {now - 1:+.3f}, macro F1 -0.*, "
        f"recall[*] -0.*, significantly worse (p = *)",
    )
    same = project.run("-q", "--seqgate-baseline", "base/baseline.json").stdout.str()
    # Equal scores: +0.000, not a float's -0.000, and no recall line.
    assert_lines(same, "* gates 4/4 passed; against the baseline: accuracy +0.000, macro F1 +0.000")
    report = evaluation["baseline"]
    # Named as the data are, from the rootdir: a runner's absolute path is noise.
    assert report["baseline"] == "base/baseline.json"
    assert report["mcnemar"]["newly_wrong"] == wrong
    assert report["samples"] == {
        "shared": len({json.dumps(r["tokens"]) for r in records}),
        "added": 0,
        "removed": 0,
        "label_changed": 0,
    }


def test_changed_eval_set_compares_shared_samples(project):
    records = rule_records(200)
    project.data(records)
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(GATED)
    project.run("--seqgate-save-baseline", "b.json").assert_outcomes(passed=2)
    project.data(records[:150] + rule_records(30, seed=99))
    result = project.run("--seqgate-baseline", "b.json")
    assert_lines(
        result.stdout.str(),
        "*the eval set changed since the baseline: * sample* "
        "added, * removed, 0 relabelled; the per-sample comparison uses the * shared*",
    )


SWAPPED = """
import torch
from models import FirstToken

class Swapped(FirstToken):
    \"\"\"Outputs in the order spam, ham, then 'phish', which it never predicts.\"\"\"

    def forward(self, tokens):
        out = super().forward(tokens).flip(1)
        return torch.cat([out, torch.full((len(out), 1), -10.0)], 1)

def build():
    return Swapped(2)
"""


def test_a_baseline_with_other_labels_is_compared_by_class_name(project):
    """A model that gained a class, its outputs in another order: the per-sample
    comparison was skipped whenever the labels differed at all."""
    records = rule_records(200)
    project.data(records)
    (project.path / "swapped.py").write_text(SWAPPED)
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(GATED)
    project.run("--seqgate-save-baseline", "b.json").assert_outcomes(passed=2)
    project.ini(
        model="swapped:build",
        eval_data="eval.jsonl",
        labels=["spam", "ham", "phish"],
        report="r.json",
    )
    result = project.run("--seqgate-baseline", "b.json")
    result.assert_outcomes(passed=2)
    assert_lines(
        result.stdout.str(),
        "*the baseline's labels ['ham', 'spam'] differ from ['spam', 'ham', 'phish']: "
        "samples are paired by class name",
    )
    evaluation = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    compared = evaluation["baseline"]
    assert compared["samples"]["label_changed"] == 0 and compared["samples"]["added"] == 0
    assert compared["mcnemar"] == {"newly_wrong": 0, "newly_right": 0, "p_value": 1.0}
    # max_regression gates every class's recall: 'phish', which the baseline has no
    # recall of (nor the eval set any sample), has nothing to regress from.
    [phish] = [g for g in evaluation["gates"] if g["metric"] == "regression.recall[phish]"]
    assert phish["passed"] and phish["reason"] == (
        "the baseline has no recall[phish] (undefined there, or new since): not compared"
    )
    # A class the labels no longer name: its samples cannot pair.
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "eggs"])
    project.data([{**r, "label": {"spam": "eggs"}.get(r["label"], r["label"])} for r in records])
    result = project.run("--seqgate-baseline", "b.json")
    assert_lines(
        result.stdout.str(),
        "*samples are paired by class name; those of 'spam', which the labels no longer "
        "name, count as relabelled",
        "*98 relabelled; the per-sample comparison uses the 100 shared ones",
    )
    # A class the baseline has a recall of, and the eval set no sample of now: the
    # gate cannot tell whether it regressed, and fails saying so.
    project.ini(
        model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json"
    )
    project.data([r for r in records if r["label"] == "ham"])
    project.run("--seqgate-baseline", "b.json").assert_outcomes(passed=1, failed=1)
    evaluation = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    [spam] = [g for g in evaluation["gates"] if g["metric"] == "regression.recall[spam]"]
    assert not spam["passed"] and spam["reason"] == (
        "recall[spam] is undefined now (the eval set has no samples of 'spam'): not compared"
    )


def test_bad_baseline_file_is_a_usage_error(project):
    project.data(rule_records(20))
    (project.path / "b.json").write_text('{"schema": "other"}')
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        baseline="b.json",
    )
    project.test(GATED)
    result = project.run()
    assert result.ret == 4  # at collection, before any inference: not an error per test
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: seqgate_baseline in pytest.ini: b.json is not a seqgate report (schema "
        "'seqgate-report/1' with at least one evaluation)",
    )
    (project.path / "b.json").write_text("<<<<<<< HEAD")
    result = project.run()
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: seqgate_baseline in pytest.ini: cannot read b.json as a JSON report: *",
    )
    result = project.run("--seqgate-baseline=gone.json")
    assert result.ret == 4
    assert_lines(
        result.stderr.str(), "ERROR: seqgate: --seqgate-baseline: file not found: gone.json*"
    )


def _cut_predictions(entry):
    entry["samples"]["predictions"] = entry["samples"]["predictions"][:8]


@pytest.mark.parametrize(
    "damage, said",
    [
        (lambda e: e["samples"].pop("hashes"), "samples.hashes is not base64 of torch.int64"),
        (
            lambda e: e["samples"].update(targets="!!!x"),
            "samples.targets is not base64 of torch.int16: Invalid base64",
        ),
        (_cut_predictions, "samples hold 20 hashes, 20 targets and 3 predictions"),
        (lambda e: e.pop("labels"), "'labels' is not a list of class names"),
        (lambda e: e.update(metrics=[]), "'metrics' is not an object of numbers"),
        (
            lambda e: e["metrics"]["per_class"]["spam"].update(recall="0.9"),
            "metric recall[spam] is '0.9', not a number or null",
        ),
        (lambda e: e.update(labels=["ham"]), "samples.targets hold class indices outside"),
    ],
    ids=["no-hashes", "bad-base64", "short", "no-labels", "metrics", "string", "labels"],
)
def test_a_damaged_baseline_says_what_is_wrong(project, damage, said):
    """A hand-edited or cut baseline ended every gated test in a KeyError or an
    IndexError from deep in the comparison."""
    project.data(rule_records(20))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(GATED)
    project.run("--seqgate-save-baseline", "b.json").assert_outcomes(passed=2)
    document = json.loads((project.path / "b.json").read_text())
    damage(document["evaluations"][0])
    (project.path / "b.json").write_text(json.dumps(document))
    result = project.run("--seqgate-baseline", "b.json")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert_lines(
        out,
        f"seqgate: --seqgate-baseline: b.json is damaged: {said}*; save it again with "
        "--seqgate-save-baseline from the branch it stands for",
    )
    assert "Traceback" not in out and "baseline.py:" not in out


def test_each_evaluation_is_compared_with_its_own_baseline(project):
    """A folder's conftest.py model beside the configured one: the baseline file
    holds both, and each is compared with its own (every evaluation was compared
    with the file's first)."""
    project.data(rule_records(200, missed={1: 30}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    sub = project.path / "sub"
    sub.mkdir()
    (sub / "conftest.py").write_text(
        "import pytest, torch\n\n"
        "class AlwaysHam(torch.nn.Module):\n"
        "    def forward(self, tokens):\n"
        "        return torch.tensor([[4.0, 0.0]]).expand(tokens.shape[0], 2)\n\n"
        "@pytest.fixture(scope='session')\n"
        "def seqgate_model():\n"
        "    return AlwaysHam()\n"
    )
    gated = (
        "import pytest\n\n"
        "@pytest.mark.seqgate(max_regression=0.0, fail_on_paradox=False)\n"
        "def test_it():\n    pass\n"
    )
    (sub / "test_sub.py").write_text(gated)
    project.test(gated, name="test_top.py")
    project.run("--seqgate-save-baseline", "b.json").assert_outcomes(passed=2)
    assert [
        e["name"] for e in json.loads((project.path / "b.json").read_text())["evaluations"]
    ] == [
        "AlwaysHam",
        "models:first_token",
    ]
    result = project.run("--seqgate-baseline", "b.json", "--seqgate-report", "r.json")
    result.assert_outcomes(passed=2)
    for ev in json.loads((project.path / "r.json").read_text())["evaluations"]:
        assert ev["baseline"]["mcnemar"]["newly_wrong"] == 0, ev["name"]
        assert ev["baseline"]["mcnemar"]["newly_right"] == 0, ev["name"]


def test_a_baseline_of_other_evaluations_is_a_clear_error(tmp_path):
    from pytest_seqgate.baseline import Baseline
    from pytest_seqgate.exceptions import ConfigError

    entries = [
        {"name": name, "eval_data": "e.jsonl", "labels": ["a", "b"], "metrics": {"accuracy": acc}}
        for name, acc in (("big.pt", 0.9), ("small.pt", 0.8))
    ]
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema": "seqgate-report/1", "evaluations": entries}))
    assert Baseline.load(path, name="small.pt", eval_data="e.jsonl").metrics["accuracy"] == 0.8
    assert Baseline.load(path, name="small.pt", eval_data="other.jsonl").metrics["accuracy"] == 0.8
    with pytest.raises(
        ConfigError,
        match=r"holds the baselines of big\.pt on e\.jsonl, small\.pt on e\.jsonl, none of them "
        r"tiny\.pt on e\.jsonl; save a baseline from a run that evaluates it",
    ):
        Baseline.load(path, name="tiny.pt", eval_data="e.jsonl")
