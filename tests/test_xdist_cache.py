"""pytest-xdist: one inference, one report, the same JSON; --seqgate-cache re-runs."""

from __future__ import annotations

import json

import pytest

from conftest import rule_records

TESTS = """
import pytest

@pytest.mark.seqgate(min_accuracy=0.5)
def test_a(): pass

@pytest.mark.seqgate(min_recall={"spam": 0.9})
def test_b(): pass

@pytest.mark.seqgate(min_macro_f1=0.5, min_recall={"ham": 0.99})
def test_c(): pass

def test_d(seqgate):
    seqgate.check(min_mcc=0.5)
"""


@pytest.fixture
def counted(project, monkeypatch):
    project.data(rule_records(100, missed={1: 8}))
    project.ini(
        model="models:counting",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        batch_size="1000",
        report="r.json",
    )
    project.test(TESTS)
    count = project.path / "count.txt"
    monkeypatch.setenv("COUNT_FILE", str(count))
    return project, count


def _run(project, *args):
    # The pytester runs keep pytest's cache provider here: the prediction cache lives in it.
    return project.pytester.runpytest_subprocess(*args)


@pytest.mark.parametrize("xdist", [[], ["-n", "0"], ["-n", "2"]], ids=["none", "n0", "n2"])
def test_same_json_and_one_inference(counted, xdist):
    project, count = counted
    result = _run(project, "-p", "no:randomly", *xdist)
    result.assert_outcomes(passed=3, failed=1)
    sizes = [int(x) for x in count.read_text().split()]
    assert sizes.count(100) == 1  # one inference pass over the 100 sequences
    report = json.loads((project.path / "r.json").read_text())  # the JSON holds no timings
    reference = project.path / "reference.json"
    if not reference.exists():
        # Build the reference once, without xdist, in a clean copy of the run.
        count.unlink()
        (project.path / "r.json").rename(project.path / "first.json")
        _run(project, "-p", "no:xdist").assert_outcomes(passed=3, failed=1)
        reference.write_text((project.path / "r.json").read_text())
    assert report == json.loads(reference.read_text())
    assert [g["test"] for g in report["evaluations"][0]["gates"]] == sorted(
        g["test"] for g in report["evaluations"][0]["gates"]
    )


def test_cache_makes_an_unchanged_rerun_skip_inference(counted):
    project, count = counted
    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    first = count.read_text()
    assert first
    first_report = (project.path / "r.json").read_text()
    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    assert count.read_text() == first  # no forward call the second time
    assert (project.path / "r.json").read_text() == first_report
    # A changed eval set is a different key: inference runs again.
    project.data(rule_records(100, missed={1: 9}))
    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    assert len(count.read_text()) > len(first)
