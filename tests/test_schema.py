"""The JSON Schema the package ships for its report: valid, shipped, and strict
enough to catch a report that drifts from it. (Every pytester run of the suite
checks the reports it writes against it: ``Project.run`` in conftest.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pytest_seqgate import REPORT_SCHEMA, REPORT_SCHEMA_FILE

from conftest import check_report, rule_records, schema_errors

ROOT = Path(__file__).resolve().parents[1]


def test_the_schema_is_a_json_schema_of_the_reports_name():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(REPORT_SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"] == {"const": REPORT_SCHEMA}


def test_the_schema_ships_in_the_wheel(tmp_path):
    """An editable install reads the file from src/ whatever the packaging says:
    build a wheel from a copy of the project and look inside it."""
    pytest.importorskip("setuptools", minversion="68")
    source = tmp_path / "project"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert f"pytest_seqgate/{REPORT_SCHEMA_FILE.name}" in zipfile.ZipFile(wheel).namelist()


def test_a_full_run_matches_and_a_drifted_report_does_not(project):
    """Train set, slices, baseline comparison, failed gates with their examples, an
    xfail, a check() in a body: each part of the report, written by a real run."""
    records = rule_records(200, missed={1: 30})
    for i, record in enumerate(records):
        record["lang"] = ["en", "fr"][i % 2]
    project.data(records)
    project.data(rule_records(200, seed=1), name="train.jsonl")
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        train_data="train.jsonl",
        labels=["ham", "spam"],
        slice_by="lang",
        report="r.json",
    )
    project.gated("min_accuracy=0.5")
    project.run("--seqgate-save-baseline=b.json").assert_outcomes(passed=1)
    project.test("""
        import pytest

        @pytest.mark.seqgate(
            min_recall={"spam": 0.95}, min_recall_at_precision={"spam": (0.5, 0.9)}
        )
        def test_recall():
            pass

        @pytest.mark.xfail(reason="spam is known weak")
        @pytest.mark.seqgate(min_f1={"spam": 0.99}, slice="lang=fr")
        def test_known_weak():
            pass

        def test_body(seqgate):
            seqgate.check(min_macro_f1=0.5, max_regression=0.5)
    """)
    result = project.run("--seqgate-baseline=b.json")
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    document = json.loads((project.path / "r.json").read_text())
    (ev,) = document["evaluations"]
    assert ev["baseline"] and ev["slices"] and ev["train_metrics"]
    assert {"examples", "xfail", "at", "slice"} <= {key for gate in ev["gates"] for key in gate}
    assert schema_errors(document) == []
    assert schema_errors(json.loads((project.path / "b.json").read_text())) == []

    # What the schema refuses, named by where it is.
    drifted = json.loads(json.dumps(document))
    del drifted["evaluations"][0]["gates"][0]["passed"]
    drifted["evaluations"][0]["metrics"]["acuracy"] = 0.9
    drifted["evaluations"][0]["metrics"]["per_class"]["spam"]["recall"] = "0.9"
    drifted["evaluations"][0]["confusion_matrix"][0][0] = -1
    errors = schema_errors(drifted)
    assert any(e.startswith("evaluations/0/gates/0:") and "'passed'" in e for e in errors)
    assert any(e.startswith("evaluations/0/metrics:") and "'acuracy'" in e for e in errors)
    assert any(e.startswith("evaluations/0/metrics/per_class/spam/recall:") for e in errors)
    assert any(e.startswith("evaluations/0/confusion_matrix/0/0:") for e in errors)
    (project.path / "drifted.json").write_text(json.dumps(drifted))
    with pytest.raises(AssertionError, match="does not match the report schema"):
        check_report(project.path / "drifted.json")


def test_a_run_without_scores_has_the_same_metric_keys_as_one_with_them(project):
    """A CI job reading ``metrics["macro_roc_auc"]`` must not meet a KeyError in the
    lean run: what it did not compute is null, as every undefined number."""
    project.data(rule_records(100, missed={1: 10}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", report="r.json")
    project.gated("min_accuracy=0.5")
    keys = []
    for args in ((), ("--seqgate-no-keep-scores",)):
        project.run(*args).assert_outcomes(passed=1)
        metrics = json.loads((project.path / "r.json").read_text())["evaluations"][0]["metrics"]
        keys.append((set(metrics), set(metrics["per_class"]["spam"])))
    assert keys[0] == keys[1]
    assert metrics["macro_average_precision"] is None and metrics["ece"] is None
    assert metrics["per_class"]["spam"]["roc_auc"] is None
