"""Extension hooks implemented in a conftest.py, and the report files."""

from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import assert_lines, rule_records

HOOKS_CONFTEST = '''
import json
import torch
from models import FirstToken


class TimeMajor(FirstToken):
    """Wants [steps, batch]: only a pytest_seqgate_forward hook can call it."""

    def forward(self, steps_first):
        return super().forward(steps_first.t())


def pytest_seqgate_load_model(spec, settings):
    if spec == "special://time-major":
        return TimeMajor(2)


def pytest_seqgate_load_dataset(spec, role, settings):
    if spec.endswith(".lines"):
        out = []
        for line in settings.resolve(role, spec).read_text().splitlines():
            label, _, ids = line.partition(":")
            out.append((torch.tensor([int(t) for t in ids.split()]), label))
        return out


def pytest_seqgate_forward(model, batch):
    return model(batch.inputs.t())


def pytest_seqgate_metrics(evaluation):
    cm = evaluation.metrics.confusion_matrix
    spam = evaluation.labels.index("spam")
    return {"spam_miss_rate": float((cm[spam].sum() - cm[spam, spam]) / cm[spam].sum())}


def pytest_seqgate_report(evaluations, config):
    with open("sink.json", "w") as handle:
        json.dump({ev.name: ev.custom_metrics for ev in evaluations}, handle)
'''


def test_every_hook_from_a_conftest(project):
    records = rule_records(40, missed={1: 4})
    (project.path / "eval.lines").write_text(
        "".join(f"{r['label']}:{' '.join(map(str, r['tokens']))}\n" for r in records)
    )
    (project.path / "conftest.py").write_text(HOOKS_CONFTEST)
    project.ini(model="special://time-major", eval_data="eval.lines", labels=["ham", "spam"])
    project.test("""
        import pytest

        @pytest.mark.seqgate(max_spam_miss_rate=0.25, min_recall={"spam": 0.8})
        def test_custom_gate_passes():
            pass

        @pytest.mark.seqgate(max_spam_miss_rate=0.05)
        def test_custom_gate_fails():
            pass
    """)
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    assert_lines(result.stdout.str(), "*spam_miss_rate*<= 0.05*0.200*")
    sink = json.loads((project.path / "sink.json").read_text())
    assert sink["time-major"]["spam_miss_rate"] == pytest.approx(0.2)


def test_a_run_from_a_subfolder_is_told_where_the_report_is_from_there(project, monkeypatch):
    """Report paths are the rootdir's; run from tests/, the lines that name the
    file give it as it opens from there."""
    project.data(rule_records(100, missed={1: 10}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.gated('min_recall={"spam": 0.95}')
    sub = project.path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    result = project.run("--seqgate-report=out/r.json", str(project.path))
    assert result.ret == 1
    assert (project.path / "out/r.json").is_file()
    assert_lines(
        result.stdout.str(),
        "*The full report is in the terminal summary, and in ../out/r.json.",
        "seqgate: report written to ../out/r.json",
    )


def test_reports_json_markdown_html(project):
    project.data(rule_records(100, missed={1: 10}))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report=["out/r.json", "out/r.md", "out/r.html"],
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_recall={"spam": 0.95})
        def test_fails():
            pass

        @pytest.mark.seqgate(min_accuracy=0.5)
        def test_a_pass():
            pass
    """)
    result = project.run()
    assert result.ret == 1
    # Named as the option names it (from the rootdir), not by the machine's absolute path.
    assert_lines(
        result.stdout.str(),
        "seqgate: report written to out/r.json",
        "seqgate: report written to out/r.md",
        "seqgate: report written to out/r.html",
    )
    report = json.loads((project.path / "out/r.json").read_text())
    ev = report["evaluations"][0]
    assert set(ev) >= {
        "name",
        "model",
        "eval_data",
        "device",
        "labels",
        "n_samples",
        "metrics",
        "confusion_matrix",
        "train_metrics",
        "findings",
        "gates",
    }
    spam = ev["metrics"]["per_class"]["spam"]
    assert {k: spam[k] for k in ("precision", "recall", "f1", "support")} == {
        "precision": 1.0,
        "recall": 0.8,
        "f1": 8 / 9,
        "support": 50,
    }
    low, high = ev["metrics"]["intervals"]["per_class"]["spam"]["recall"]
    assert low < 0.8 < high
    examples = ev["gates"][1].pop("examples")["missed"]
    assert [e["record"] for e in examples] == ["eval.jsonl:2", "eval.jsonl:4", "eval.jsonl:6"]
    # By how much it missed, the number read first when a gate fails.
    assert ev["gates"][1].pop("margin") == pytest.approx(0.8 - 0.95)
    assert ev["gates"][1] == {
        "test": "test_gates.py::test_fails",
        "metric": "recall",
        "class": "spam",
        "op": ">=",
        "threshold": 0.95,
        "value": 0.8,
        "passed": False,
        "reason": "",
    }
    assert [g["test"] for g in ev["gates"]] == [
        "test_gates.py::test_a_pass",
        "test_gates.py::test_fails",
    ]
    markdown = (project.path / "out/r.md").read_text()
    assert "1.000 [0.929, 1.000]" in markdown and "❌ gates failed" in markdown
    # Read from the top, as a pull-request comment is: the failed gate comes before
    # the tables, the passed one is folded away below them.
    failed = markdown.index("### Failed gates")
    assert failed < markdown.index("| recall[spam]") < markdown.index("| class ")
    assert markdown.index("| class ") < markdown.index("<summary>Passed gates (1)</summary>")
    assert "| spam    | missed  | eval.jsonl:2 | spam   | ham         |       0.02 |" in markdown
    passed = markdown.index("<summary>Passed gates (1)</summary>")
    assert passed < markdown.index("| test_gates.py::test_a_pass ")
    page = (project.path / "out/r.html").read_text()
    assert page.startswith("<!doctype html>") and "http" not in page.lower()
    assert "<td style='background:rgb(" in page and "spam" in page
    # The page's gate table sits under the headline, the failed gate first.
    assert page.index("<h3>Gates</h3>") < page.index("<h3>Errors behind the failed gates</h3>")
    assert page.index("<h3>Errors behind the failed gates</h3>") < page.index("Confusion matrix")
    # (A gate's name may break before its class.)
    assert (
        page.index("recall<wbr>[spam]") < page.index(">accuracy<") < page.index("Confusion matrix")
    )
    assert not list((project.path / "out").glob(".*.tmp"))


def test_report_shows_undefined_values_as_na(project):
    # 'eggs' is in the labels but never appears: its metrics are undefined.
    records = rule_records(60, classes=3, names=("ham", "spam", "eggs"))
    project.data([r for r in records if r["label"] != "eggs"])
    project.ini(
        model="models:first_token3",
        eval_data="eval.jsonl",
        labels=["ham", "spam", "eggs"],
        report="r.json",
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_recall={"eggs": 0.5}, fail_on_paradox=False)
        def test_zero_support():
            pass
    """)
    result = project.run()
    result.assert_outcomes(failed=1)
    assert_lines(
        result.stdout.str(),
        "*recall*eggs*>= 0.5*n/a*undefined: the eval set has no samples of 'eggs'*",
        # Not "if the model got worse, fix it": no number said anything of the model.
        "What to do: no failed gate had a number to compare; its reason says what it needs*",
    )
    assert "if the model got worse" not in result.stdout.str()
    report = json.loads((project.path / "r.json").read_text())
    per_class = report["evaluations"][0]["metrics"]["per_class"]
    assert per_class["eggs"]["recall"] is None


@pytest.mark.parametrize(
    ("hook", "model", "gates", "message"),
    # Loaders run at collection (a usage error, exit 4, on stderr); the metrics hook
    # after inference (the gated test errors, exit 1).
    [
        (
            "def pytest_seqgate_load_model(spec, settings):\n    return 'weights.bin'\n",
            "special://x",
            "min_accuracy=0.5",
            "ERROR: seqgate: pytest_seqgate_load_model for 'special://x' returned str, expected "
            "a torch.nn.Module*",
        ),
        # The hooks' dicts are merged first: a list from one ended the evaluation in
        # "TypeError: cannot convert dictionary update sequence element".
        (
            "def pytest_seqgate_metrics(evaluation):\n    return [('cost', 0.3)]\n",
            "models:first_token",
            "max_cost=0.5",
            "seqgate: pytest_seqgate_metrics returned list; expected a dict of metric names to "
            "numbers, e.g. {'cost': 0.3}",
        ),
        # The error named only the spec, a file the user's hook read: it looked like
        # the file was bad.
        (
            "def pytest_seqgate_load_dataset(spec, role, settings):\n"
            "    return [([1, 2], 0), ([3], 7)] if role == 'eval_data' else None\n",
            "models:first_token",
            "min_accuracy=0.5",
            "ERROR: seqgate: the data pytest_seqgate_load_dataset returned for 'eval.jsonl': "
            "eval.jsonl[1]: label 7 is not one of seqgate_labels ['ham', 'spam']*",
        ),
    ],
    ids=["load-model", "metrics", "load-dataset"],
)
def test_a_hook_that_returns_the_wrong_thing_says_whose_it_was(
    project, hook, model, gates, message
):
    project.data(rule_records(20))
    (project.path / "conftest.py").write_text(hook)
    project.ini(model=model, eval_data="eval.jsonl", labels=["ham", "spam"])
    project.gated(gates)
    result = project.run()
    at_collection = message.startswith("ERROR:")
    assert result.ret == (4 if at_collection else 1)
    assert_lines((result.stderr if at_collection else result.stdout).str(), message)
    assert "TypeError" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        (
            "pytest_seqgate_load_model(spec, settings)",
            "seqgate: pytest_seqgate_load_model raised RuntimeError at conftest.py:3: down",
        ),
        (
            "pytest_seqgate_load_dataset(spec, role, settings)",
            "seqgate: pytest_seqgate_load_dataset raised RuntimeError at conftest.py:3: down",
        ),
    ],
)
def test_a_loader_hook_that_raises_is_a_usage_error_at_the_users_line(project, hook, message):
    project.data(rule_records(20))
    (project.path / "conftest.py").write_text(
        f"def {hook}:\n    # the registry is down\n    raise RuntimeError('down')\n"
    )
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.gated()
    result = project.run()
    assert result.ret == 4
    assert_lines(result.stderr.str(), f"ERROR: {message}")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    ("conftest", "message"),
    [
        (
            "def pytest_seqgate_metrics(evaluation):\n    return {'cost': 1 / 0}\n",
            "seqgate: pytest_seqgate_metrics raised ZeroDivisionError at conftest.py:2: "
            "division by zero",
        ),
        (
            "def pytest_seqgate_forward(model, batch):\n    raise KeyError('segments')\n",
            "seqgate: the model's forward raised KeyError on the first batch, * called through "
            "the pytest_seqgate_forward hook; the hook raised it, or the model it called: "
            "'segments' (raised at conftest.py:2)",
        ),
    ],
    ids=["metrics", "forward"],
)
def test_a_hook_that_raises_is_one_line_at_the_users_line(project, conftest, message):
    """The metrics hook's error came as a traceback through the plugin's frames (and
    the whole Evaluation's repr); the forward hook's named no line."""
    project.data(rule_records(20))
    (project.path / "conftest.py").write_text(conftest)
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.gated()
    result = project.run()
    result.assert_outcomes(errors=1)
    assert_lines(result.stdout.str(), message)
    assert "plugin.py" not in result.stdout.str() and "Evaluation(" not in result.stdout.str()


def test_a_report_that_cannot_be_written_is_named_and_nothing_is_left_behind(tmp_path):
    from pytest_seqgate.report import write_atomic

    (tmp_path / "taken").write_text("a file where a folder should be")
    target = tmp_path / "taken" / "r.json"
    with pytest.raises(OSError, match=r"taken/r\.json: "):
        write_atomic(target, "{}")
    write_atomic(tmp_path / "r.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "taken"]  # no temp file


def test_one_unwritable_target_costs_none_of_the_others(project, monkeypatch):
    """A report folder taken by a file (after collection's check), and a step summary
    that is a folder: each is named, and the other report and the baseline are still
    written (one failure used to end the writing, the step summary's said
    'cannot write report')."""
    project.data(rule_records(40))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report=["blocked/r.json", "ok.md"],
        save_baseline="b.json",
    )
    project.gated()
    (project.path / "conftest.py").write_text(
        "def pytest_collection_finish(session):\n"
        "    (session.config.rootpath / 'blocked').write_text('a file, not a folder')\n"
    )
    (project.path / "summary").mkdir()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "summary"))
    result = project.run()
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert_lines(out, "seqgate: cannot write report: *blocked/r.json: *")
    assert_lines(out, "seqgate: cannot append the report to $GITHUB_STEP_SUMMARY (*summary): *")
    assert (project.path / "ok.md").read_text().startswith("# seqgate report")
    assert json.loads((project.path / "b.json").read_text())["schema"].startswith("seqgate")


def test_a_report_that_fails_to_render_costs_none_of_the_others_and_fails_the_run(project):
    """A bug in one format (the HTML report raised IndexError on a run without
    scores) ended the session in an INTERNALERROR before the other reports were
    written."""
    project.data(rule_records(40))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report=["r.html", "r.json"],
    )
    project.gated()
    (project.path / "conftest.py").write_text(
        "import pytest_seqgate.report as report\n\n"
        "def broken(evaluations, errors=()):\n"
        "    raise IndexError('index 0 is out of bounds')\n\n"
        "report.RENDERERS['.html'] = broken\n"
    )
    result = project.run()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert_lines(
        result.stdout.str(),
        "seqgate: cannot write report: *r.html: rendering failed, a bug in pytest-seqgate "
        "(please report it): IndexError: index 0 is out of bounds",
    )
    assert "INTERNALERROR>" not in result.stdout.str()
    assert json.loads((project.path / "r.json").read_text())["schema"] == "seqgate-report/1"


def test_the_html_report_of_a_run_without_scores(project):
    project.data(rule_records(40))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        keep_scores="false",
        report="r.html",
    )
    project.gated()
    project.run().assert_outcomes(passed=1)
    assert "<p>No curves: this run kept no scores" in (project.path / "r.html").read_text()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_report_gets_the_permissions_of_a_plain_write_not_a_temporary_files(tmp_path):
    from pytest_seqgate.report import write_atomic

    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "new.json", "{}")
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o604)
        write_atomic(kept, "{}")
    finally:
        os.umask(old)
    # A new file: 0o666 less the umask (a temporary file's would be 0o600).
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
    # A file that was there keeps its own bits, as open(path, "w") leaves them.
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    assert kept.read_text() == "{}"


def with_train_set(project, eval_records: list[dict], train_records: list[dict]) -> None:
    """The first-token model on eval.jsonl, with train.jsonl as its training set."""
    project.data(eval_records)
    project.data(train_records, name="train.jsonl")
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        train_data="train.jsonl",
        labels=["ham", "spam"],
        report="r.json",
    )


def test_leakage_gate_counts_the_copies_in_one_short_reason(project):
    """``max_leakage`` compares the share of eval sequences found in the training set;
    its report row says how many, of which kind, and points to the findings."""
    records = rule_records(40)
    with_train_set(project, records, rule_records(60, seed=1) + records[:6])
    project.test(
        """
        import pytest

        @pytest.mark.seqgate(max_leakage=0.05)
        def test_no_leakage():
            pass
        """
    )
    result = project.run()
    result.assert_outcomes(failed=1)
    report = json.loads((project.path / "r.json").read_text())
    (gate,) = report["evaluations"][0]["gates"]
    leaked = [f for f in report["evaluations"][0]["findings"] if f["kind"] == "leakage"]
    copies = sum(f["count"] for f in leaked)
    assert copies >= 6
    assert gate["value"] == pytest.approx(copies / 40)
    assert not gate["passed"]
    kinds = " + ".join(
        f"{f['count']} {f['match']}" for f in sorted(leaked, key=lambda f: f["match"])
    )
    assert gate["reason"] == (
        f"{kinds} of 40 eval sequences in the training set (see the leakage findings)"
    )
    # Exact copies alone (near copies off): the gate read a smaller share, and
    # said nothing of it. A streamed eval set's near copies are looked for too.
    project.run("--seqgate-near-duplicate-threshold=0")
    (unchecked,) = json.loads((project.path / "r.json").read_text())["evaluations"][0]["gates"]
    assert unchecked["reason"].endswith(
        "; near copies not checked: --seqgate-near-duplicate-threshold is 0"
    ), unchecked["reason"]
    project.run("--seqgate-streaming", "--seqgate-labels=ham,spam")
    (streamed,) = json.loads((project.path / "r.json").read_text())["evaluations"][0]["gates"]
    assert (streamed["value"], streamed["reason"]) == (gate["value"], gate["reason"])


def test_exact_copies_of_training_data_are_reported_before_near_ones(project):
    """The example's report listed "12 ... nearly copy" before "5 ... also appear":
    findings were ordered by their message's text."""
    import random

    rng = random.Random(0)
    evals = [[c + 2 * rng.randint(1, 20), *rng.choices(range(1, 50), k=59)] for c in (0, 1) * 6]
    near = [[*evals[2][:-1], 50]]  # 58 of 60 bigrams kept; "1 of" sorts before "2 of"
    others = [[rng.randint(1, 49) for _ in range(60)] for _ in range(20)]

    def record(tokens: list[int]) -> dict:
        return {"tokens": tokens, "label": ("ham", "spam")[tokens[0] % 2]}

    train = [*others, *evals[:2], *near]
    with_train_set(project, [record(t) for t in evals], [record(t) for t in train])
    project.test("def test_nothing(seqgate_evaluation):\n    pass\n")
    result = project.run()
    result.assert_outcomes(passed=1)
    report = json.loads((project.path / "r.json").read_text())
    leaked = [f for f in report["evaluations"][0]["findings"] if f["kind"] == "leakage"]
    assert [(f["match"], f["count"]) for f in leaked] == [("exact", 2), ("near", 1)]
    result.stdout.re_match_lines_random(
        [r"WARNING \[leakage\] 2 of 12 eval sequences .* also appear in the training set.*"]
    )
    lines = result.stdout.lines
    also = next(i for i, line in enumerate(lines) if "also appear in the training set" in line)
    nearly = next(i for i, line in enumerate(lines) if "nearly copy a training sequence" in line)
    assert also < nearly


def _reported_run(project, model: str, *args: str, conftest: str = ""):
    """The first-token project with JSON and Markdown reports, run with ``model``."""
    if conftest:
        (project.path / "conftest.py").write_text(conftest)
    project.ini(
        model=model,
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report=["r.json", "r.md", "r.html"],
    )
    return project.run(*args)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["none", "n2"])
def test_a_failed_evaluation_replaces_the_last_runs_reports_with_why(project, xdist):
    project.data(rule_records(40))
    project.gated()
    _reported_run(project, "models:first_token").assert_outcomes(passed=1)
    assert json.loads((project.path / "r.json").read_text())["evaluations"]
    # Next run: a model that returns NaN. Its error stops the test; the reports of
    # the run before (gates passed) must not stand as this run's.
    result = _reported_run(project, "models:NaNOnThree", *xdist)
    result.assert_outcomes(errors=1)
    document = json.loads((project.path / "r.json").read_text())
    assert document["evaluations"] == []
    (error,) = document["errors"]
    assert error.startswith("seqgate_evaluation: the model returned NaN or Inf logits")
    markdown = (project.path / "r.md").read_text()
    assert "## ❌ The evaluation did not run" in markdown and "NaN or Inf logits" in markdown
    assert "The evaluation did not run" in (project.path / "r.html").read_text()
    assert_lines(result.stdout.str(), "seqgate: the evaluation did not run; the report says why: *")
    # Fixed again: the reports are the evaluation's, with no error.
    _reported_run(project, "models:first_token").assert_outcomes(passed=1)
    assert json.loads((project.path / "r.json").read_text())["errors"] == []


def test_a_conftest_fixture_that_raises_is_named_in_the_reports(project):
    project.data(rule_records(20))
    project.gated()
    conftest = (
        "import pytest\n\n@pytest.fixture(scope='session')\n"
        "def seqgate_model():\n    raise RuntimeError('the registry is down')\n"
    )
    result = _reported_run(project, "models:first_token", conftest=conftest)
    result.assert_outcomes(errors=1)
    document = json.loads((project.path / "r.json").read_text())
    assert document["errors"] == ["seqgate_model: RuntimeError('the registry is down')"]


def test_a_usage_error_replaces_the_reports_and_a_deselected_run_keeps_them(project):
    project.data(rule_records(20))
    project.gated()
    project.test("def test_other():\n    pass\n", name="test_other.py")
    _reported_run(project, "models:first_token").assert_outcomes(passed=2)
    before = (project.path / "r.json").read_text()
    # A run of the other tests alone evaluates nothing and leaves the reports be.
    _reported_run(project, "models:first_token", "-k", "other").assert_outcomes(passed=1)
    assert (project.path / "r.json").read_text() == before
    project.test(
        "import pytest\n\n@pytest.mark.seqgate(min_recall={'spma': 0.9})\ndef test_a():\n"
        "    pass\n\n@pytest.mark.seqgate(min_acuracy=0.9)\ndef test_b():\n    pass\n"
    )
    result = _reported_run(project, "models:first_token")
    assert result.ret == 4
    # Each bad marker is one entry, as the terminal gives each its line.
    first, second = json.loads((project.path / "r.json").read_text())["errors"]
    assert first.startswith("test_gates.py:3: seqgate: ") and "spma" in first
    assert second.startswith("test_gates.py:7: seqgate: ") and "min_acuracy" in second
    assert first in result.stderr.str() and second in result.stderr.str()


def test_the_step_summary_says_the_evaluation_did_not_run(project, monkeypatch):
    project.data(rule_records(40))
    project.gated()
    summary = project.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    _reported_run(project, "models:NaNOnThree").assert_outcomes(errors=1)
    text = summary.read_text()
    assert "## ❌ The evaluation did not run" in text and "NaN or Inf logits" in text
