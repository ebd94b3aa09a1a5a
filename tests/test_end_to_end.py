"""The plugin through pytest itself: small projects, real models, real exit codes."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import textwrap

import pytest

from pytest_seqgate.gates import REASON_WIDTH

from conftest import assert_lines, rule_records

GATED = """
import pytest

@pytest.mark.seqgate(min_accuracy=0.9, min_recall={"spam": 0.9})
def test_quality():
    pass
"""


def test_rule_model_passing_gates_exit_0(project):
    project.data(rule_records(200))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report="report.json",
    )
    project.test(GATED)
    result = project.run("-v")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*seqgate report*", "*gates 2/2 passed*", "*spam*1.000*", "*PASS*"]
    )
    report = json.loads((project.path / "report.json").read_text())
    assert report["schema"] == "seqgate-report/1"
    ev = report["evaluations"][0]
    assert ev["n_samples"] == 200
    assert ev["confusion_matrix"] == [[100, 0], [0, 100]]
    assert ev["gates"][0]["passed"] is True


def test_failing_gate_exit_1_with_table(project):
    # 30 of 100 spam predicted as ham: spam recall 0.7.
    project.data(rule_records(200, missed={1: 30}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(GATED)
    result = project.run()
    assert result.ret == 1
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*seqgate: * of * failed for test_gates.py::test_quality*",
            "*metric*class*threshold*value*reason*",
            "*recall*spam*>= 0.9*0.700*",
            # The records behind it: the first missed spam (rule_records' lines 2, 4, ...).
            "recall[spam] missed, most confident first:",
            "  eval.jsonl:2  predicted ham, P(spam) 0.02",
            "  eval.jsonl:4  predicted ham, P(spam) 0.02",
            "  eval.jsonl:6  predicted ham, P(spam) 0.02",
            "*What to do*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_a_failed_body_keeps_its_failure_and_its_gates_are_still_reported(project):
    """The marker's gates were judged only after a body that passed: a body
    assertion that failed hid a gate that failed too, from every report."""
    project.data(rule_records(200, missed={1: 30}))
    project.ini(
        model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json"
    )
    project.test(
        "import pytest\n\n"
        "@pytest.mark.seqgate(min_recall={'spam': 0.9})\n"
        "def test_body_fails(seqgate_evaluation):\n"
        "    assert seqgate_evaluation.n_samples == 1\n\n"
        "@pytest.mark.seqgate(min_recall={'spam': 0.9})\n"
        "def test_skipped():\n"
        "    pytest.skip('not today')\n"
    )
    result = project.run()
    result.assert_outcomes(failed=1, skipped=1)
    out = result.stdout.str()
    assert "assert 200 == 1" in out and " failed for test_" not in out  # its own failure
    assert_lines(out, "*test_gates.py::test_body_fails*recall[spam]*>= 0.9*0.700*FAIL*")
    gates = json.loads((project.path / "r.json").read_text())["evaluations"][0]["gates"]
    assert [(g["test"], g["metric"], g["passed"]) for g in gates] == [
        ("test_gates.py::test_body_fails", "recall", False)
    ]


def test_a_test_reads_numbers_by_name_and_a_misnamed_class_fails_at_its_line(project):
    """``seqgate_evaluation.value(...)`` in a test body: the numbers a gate reads;
    a misspelt class fails at the test's own line, and the fixture's value prints
    as its headline, not a screenful of tensors."""
    project.data(rule_records(200, missed={1: 30}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(
        "def test_numbers(seqgate_evaluation):\n"
        "    assert seqgate_evaluation.value('recall', 'spam') == 0.7\n"
        "    assert seqgate_evaluation.value('recall', 'ham') == 1.0\n\n"
        "def test_typo(seqgate_evaluation):\n"
        "    seqgate_evaluation.value('recall', 'spma')\n\n"
        "def test_check(seqgate):\n"
        "    seqgate.check(min_recall={'spam': 0.9})\n"
    )
    result = project.run()
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert_lines(
        out,
        "seqgate_evaluation = <Evaluation models:first_token on eval.jsonl: 200 samples, *>",
        ">       seqgate_evaluation.value('recall', 'spma')",
        "E       *ConfigError: no class 'spma' (did you mean `spam`?); the classes are *",
        "test_gates.py:6: ConfigError",
        "seqgate = <seqgate helper of <Evaluation models:first_token on eval.jsonl: 200 *>>",
    )
    assert "tensor(" not in out and "evaluation.py" not in out


def test_markers_of_module_class_and_test_combine(project):
    """A module's `pytestmark` floor holds for a test that adds a gate of its own
    (it was dropped: only the closest marker counted, a silent pass); a key set
    closer replaces it, and per-class mappings combine class by class."""
    # Spam recall 0.7, ham recall 1.0, accuracy 0.85.
    project.data(rule_records(200, missed={1: 30}))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report="report.json",
    )
    project.test(
        "import pytest\n\n"
        "pytestmark = pytest.mark.seqgate(min_accuracy=0.9)\n\n"
        "class TestFilter:\n"
        "    pytestmark = pytest.mark.seqgate(min_recall={'ham': 0.95})\n\n"
        "    @pytest.mark.seqgate(min_recall={'spam': 0.5})\n"
        "    def test_inherits(self):\n        pass\n\n"
        "    @pytest.mark.seqgate(min_accuracy=0.8)\n"
        "    def test_overrides(self):\n        pass\n"
    )
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    gates = json.loads((project.path / "report.json").read_text())["evaluations"][0]["gates"]
    by_test: dict[str, list[tuple]] = {}
    for gate in gates:
        key = (gate["metric"], gate["class"], gate["threshold"], gate["passed"])
        by_test.setdefault(gate["test"].rsplit("::", 1)[1], []).append(key)
    assert sorted(by_test["test_inherits"]) == [
        ("accuracy", None, 0.9, False),
        ("recall", "ham", 0.95, True),
        ("recall", "spam", 0.5, True),
    ]
    assert sorted(by_test["test_overrides"]) == [
        ("accuracy", None, 0.8, True),
        ("recall", "ham", 0.95, True),
    ]


def test_a_params_marker_is_closer_than_its_functions(project):
    """pytest lists a pytest.param's marks after the function's decorators: read as
    pytest orders them, the function's min_accuracy hid the param's stricter one."""
    project.data(rule_records(200, missed={1: 30}))  # accuracy 0.85
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(
        "import pytest\n\n"
        "@pytest.mark.seqgate(min_accuracy=0.8)\n"
        "@pytest.mark.parametrize('x', [1, pytest.param(2, marks=pytest.mark.seqgate("
        "min_accuracy=0.9))])\n"
        "def test_p(x):\n    pass\n"
    )
    result = project.run("-v")
    result.assert_outcomes(passed=1, failed=1)
    assert_lines(result.stdout.str(), "*test_p[1] PASSED*", "*test_p[2] FAILED*")


def test_a_bad_module_marker_is_reported_once_at_its_module(project):
    project.data(rule_records(40))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(
        "import pytest\n\n"
        "pytestmark = pytest.mark.seqgate(min_acuracy=0.9)\n\n"
        "class TestFilter:\n"
        "    pytestmark = pytest.mark.seqgate(min_f1=1.3)\n\n"
        "    def test_a(self):\n        pass\n\n"
        "    def test_b(self):\n        pass\n\n"
        "def test_c():\n    pass\n",
        name="test_marks.py",
    )
    result = project.run()
    assert result.ret == 4
    err = result.stderr.str()
    assert err.count("min_acuracy") == 1, err
    assert err.count("but got 1.3") == 1, err
    assert_lines(
        err,
        "ERROR: test_marks.py:5: seqgate: Expected `min_f1` to be in [0, 1], but got 1.3",
        "test_marks.py:3 (pytestmark): seqgate: unknown gate `min_acuracy`*",
    )


def test_failure_message_says_where_the_full_report_is(project):
    """Under -q the terminal summary is one line: the failure message must not send
    the reader there for tables, and it names the report files that were written."""
    project.data(rule_records(200, missed={1: 30}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(GATED)
    quiet = project.run("-q")
    assert quiet.ret == 1
    quiet.stdout.fnmatch_lines(
        ["Under -q the terminal summary is one line: run without -q for the full report *"]
    )
    assert "The full report is in the terminal summary" not in quiet.stdout.str()
    files = ("--seqgate-report", "out/r.json", "--seqgate-report", "out/r.html")
    loud = project.run(*files)
    loud.stdout.fnmatch_lines(
        ["The full report is in the terminal summary, and in out/r.json, out/r.html."]
    )
    assert (project.path / "out" / "r.html").exists()
    project.run("-q", *files).stdout.fnmatch_lines(
        [
            "The full report is in out/r.json, out/r.html (under -q the terminal summary is "
            "one line: run without -q for its tables)."
        ]
    )


def test_torchscript_gru(project):
    project.script_model("build_gru")
    records = rule_records(120)
    project.data(records)
    project.ini(
        model="model.pt", eval_data="eval.jsonl", labels=["ham", "spam"], report="out/report.json"
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.0, fail_on_paradox=False)
        def test_runs():
            pass

        @pytest.mark.seqgate(min_accuracy=0.999, fail_on_paradox=False)
        def test_too_strict():
            pass
    """)
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    report = json.loads((project.path / "out" / "report.json").read_text())
    assert sum(map(sum, report["evaluations"][0]["confusion_matrix"])) == 120


def test_state_dict_with_factory(project):
    project.state_dict("first_token")
    project.data(rule_records(100))
    project.ini(
        model="model.ckpt",
        model_factory="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
    )
    project.test(GATED)
    project.run().assert_outcomes(passed=1)
    # A TorchScript file for one run, where the ini names a state dict and its
    # factory: the factory's ini value gets in the way, and an empty flag clears it.
    project.script_model("first_token", "scripted.pt")
    blocked = project.run("--seqgate-model", "scripted.pt")
    assert blocked.ret == 4
    blocked.stderr.fnmatch_lines(
        ["*scripted.pt is a TorchScript file*(for one run: --seqgate-model-factory=)"]
    )
    cleared = project.run("--seqgate-model", "scripted.pt", "--seqgate-model-factory=")
    cleared.assert_outcomes(passed=1)
    cleared.stdout.fnmatch_lines(["*scripted.pt on eval.jsonl: 100 samples*"])
    # A list setting too: `--seqgate-labels=` parsed to [] and was taken for no flag,
    # so the ini's labels stayed and refused an eval set of other class names; the
    # names now come from the data (and the gate's 'spam' is not one of them).
    project.data([{**r, "label": f"class {r['label']}"} for r in rule_records(100)], "other.jsonl")
    kept = project.run("--seqgate-eval-data=other.jsonl")
    assert "label 'class ham' is not one of seqgate_labels ['ham', 'spam']" in kept.stderr.str()
    relabelled = project.run("--seqgate-eval-data=other.jsonl", "--seqgate-labels=")
    assert relabelled.ret == 4
    assert "names class 'spam', which is not one of the labels ['class ham', 'class spam']" in (
        relabelled.stderr.str()
    )


@pytest.mark.skipif(
    importlib.util.find_spec("torch.export.pt2_archive") is None,
    reason=f"torch {importlib.metadata.version('torch')} cannot export the test model with "
    f"dynamic shapes (one_hot), and pickles the weights of what it exports "
    f"(tests/test_loading.py covers that)",
)
def test_exported_program_gated_through_pytest(project):
    """A .pt2 from torch.export, named by the ini like any model file: loaded at
    collection, run in its own (eval) mode, gated, and its failure names records."""
    project.python("""
        import torch, models
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("steps")}
        example = (torch.randint(1, 40, (4, 6)),)
        program = torch.export.export(models.first_token().eval(), example, dynamic_shapes=(dims,))
        torch.export.save(program, "model.pt2")
    """)
    project.data(rule_records(100, missed={1: 20}))
    project.ini(model="model.pt2", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(GATED)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*recall*spam*>= 0.9*0.600*",
            "recall[spam] missed, most confident first:",
            "  eval.jsonl:2  predicted ham, P(spam) 0.02",
            "*model.pt2 on eval.jsonl: 100 samples, accuracy 0.800*",
        ]
    )


def test_seqgate_fixture_check_in_body(project):
    project.data(rule_records(200, missed={1: 30}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test("""
        def test_body(seqgate):
            seqgate.check(min_recall={"ham": 0.9})
            seqgate.check(min_precision={"ham": 0.99})
    """)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*GateFailure*", "*precision*ham*>= 0.99*0.769*"])


def test_seqgate_fixture_check_with_a_bad_gate_ends_at_the_users_line(project):
    project.data(rule_records(40))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test("""
        def test_body(seqgate):
            seqgate.check(min_recall={"spma": 0.9})
    """)
    result = project.run()
    result.assert_outcomes(failed=1)
    assert_lines(
        result.stdout.str(),
        '>*seqgate.check(min_recall={"spma": 0.9})',
        "E*ConfigError: seqgate.check(): `min_recall` names class 'spma' (did you mean "
        "`spam`?), which is not one "
        "of the labels ['ham', 'spam']",
        "test_gates.py:3: ConfigError",
    )
    assert "gates.py" not in result.stdout.str().replace("test_gates.py", "")


def test_three_gated_tests_one_inference(project):
    project.data(rule_records(100))
    project.ini(
        model="models:counting", eval_data="eval.jsonl", labels=["ham", "spam"], batch_size="1000"
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.5)
        def test_a(): pass

        @pytest.mark.seqgate(min_macro_f1=0.5)
        def test_b(): pass

        def test_c(seqgate):
            seqgate.check(min_mcc=0.5)
    """)
    count = project.path / "count.txt"
    project.pytester._monkeypatch.setenv("COUNT_FILE", str(count))
    project.run().assert_outcomes(passed=3)
    sizes = [int(x) for x in count.read_text().split()]
    # One inference pass: one call with the 100 sequences. The padding check then reruns a
    # seeded sample of 64, grouped by length so nothing is padded.
    assert sizes[0] == 100 and 100 not in sizes[1:]
    assert sum(sizes[1:]) == 64


def code_supplied(project, eval_data: str, samples: int) -> str:
    """A conftest.py whose fixtures build the model (FirstToken: odd first id =
    spam) and the eval set (``eval_data``: the fixture's body) in code, and a
    test that expects ``samples`` samples, every one right. Returns the conftest."""
    body = textwrap.indent(textwrap.dedent(eval_data).strip("\n") + "\n", "    ")
    conftest = (
        "import pytest, torch\n"
        "from models import FirstToken\n"
        "from pytest_seqgate import SequenceData\n"
        "@pytest.fixture(scope='session')\n"
        "def seqgate_model():\n"
        "    return FirstToken(2)\n"
        "@pytest.fixture(scope='session')\n"
        "def seqgate_eval_data():\n" + body
    )
    (project.path / "conftest.py").write_text(conftest)
    project.test(f"""
        def test_code_supplied(seqgate, seqgate_evaluation):
            assert seqgate_evaluation.n_samples == {samples}
            seqgate.check(min_accuracy=1.0)
    """)
    return conftest


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_folders_own_model_is_evaluated_for_its_tests_alone(project, xdist):
    """A conftest.py in sub/ overrides seqgate_model: its tests get its model, the
    others the configured one, whatever the order. With seqgate_evaluation
    session-scoped, pytest kept the first folder's evaluation for every test (a
    pytest rule: pytest-dev/pytest#5203), and the report named it after the ini's
    file."""
    project.data(rule_records(200, missed={1: 30}))  # the configured model: accuracy 0.85
    project.ini(
        model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json"
    )
    sub = project.path / "sub"
    sub.mkdir()
    (sub / "conftest.py").write_text(
        "import pytest, torch\n"
        "from models import FirstToken\n\n"
        "class AlwaysHam(FirstToken):\n"
        "    def forward(self, tokens):\n"
        "        return torch.tensor([[4.0, 0.0]]).expand(tokens.shape[0], 2)\n\n"
        "@pytest.fixture(scope='session')\n"
        "def seqgate_model():\n"
        "    return AlwaysHam(2)\n"
    )
    gated = "import pytest\n\n@pytest.mark.seqgate(min_accuracy=0.1, fail_on_paradox=False)\n"
    (sub / "test_a_sub.py").write_text(gated + "def test_sub():\n    pass\n")
    project.test(gated + "def test_top():\n    pass\n", name="test_z_top.py")
    project.run(*xdist).assert_outcomes(passed=2)
    report = json.loads((project.path / "r.json").read_text())
    found = {
        ev["name"]: (ev["model"], ev["metrics"]["accuracy"], [g["test"] for g in ev["gates"]])
        for ev in report["evaluations"]
    }
    assert found == {
        "AlwaysHam": ("AlwaysHam", 0.5, ["sub/test_a_sub.py::test_sub"]),
        "models:first_token": ("models:first_token", 0.85, ["test_z_top.py::test_top"]),
    }


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_two_folders_models_of_one_class_stay_two_evaluations(project, xdist):
    project.data(rule_records(200))
    project.ini(eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json")
    for folder, logits in (("a", "[4.0, 0.0]"), ("b", "[0.0, 4.0]")):
        sub = project.path / folder
        sub.mkdir()
        (sub / "conftest.py").write_text(
            "import pytest, torch\n\n"
            "class Constant(torch.nn.Module):\n"
            "    def forward(self, tokens):\n"
            f"        return torch.tensor([{logits}]).expand(tokens.shape[0], 2)\n\n"
            "@pytest.fixture(scope='session')\n"
            "def seqgate_model():\n"
            "    return Constant()\n"
        )
        (sub / f"test_{folder}.py").write_text(
            "import pytest\n\n@pytest.mark.seqgate(min_accuracy=0.1, fail_on_paradox=False)\n"
            f"def test_{folder}():\n    pass\n"
        )
    project.run(*xdist).assert_outcomes(passed=2)
    evaluations = json.loads((project.path / "r.json").read_text())["evaluations"]
    gates = sorted((g["test"], ev["confusion_matrix"]) for ev in evaluations for g in ev["gates"])
    assert gates == [
        ("a/test_a.py::test_a", [[100, 0], [100, 0]]),
        ("b/test_b.py::test_b", [[0, 100], [0, 100]]),
    ]
    if not xdist:  # one process sees both: told apart by number
        assert sorted(ev["name"] for ev in evaluations) == ["Constant", "Constant #2"]


PARAMETRIZED_MODEL = """
import pytest, torch

class Constant(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor([logits])

    def forward(self, tokens):
        return self.logits.expand(tokens.shape[0], 2)

@pytest.fixture(scope="session", params=["ham", "spam"])
def seqgate_model(request):
    return Constant([4.0, 0.0] if request.param == "ham" else [0.0, 4.0])
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_parametrized_model_gates_marker_only_tests_once_per_model(project, xdist):
    """A conftest.py's seqgate_model with params=[...] (one model per checkpoint):
    a test with only a marker asks for no fixture, and the evaluation added to it
    after collection was never parametrized, so every such test was an error
    ("The requested fixture has no parameter defined for test")."""
    project.data(rule_records(200))
    project.ini(eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json")
    (project.path / "conftest.py").write_text(PARAMETRIZED_MODEL)
    project.test("""
        import pytest

        pytestmark = pytest.mark.seqgate(fail_on_paradox=False)

        @pytest.mark.seqgate(min_recall={"spam": 0.9})
        def test_function_marker():
            pass

        def test_module_marker_only():
            pass

        @pytest.mark.parametrize("n", [pytest.param(1, marks=pytest.mark.seqgate(min_accuracy=0))])
        def test_param_marker(n):
            pass

        @pytest.mark.parametrize("n", (n for n in range(2)))  # a generator, used up once
        def test_generator_params(n):
            pass

        def test_in_a_body(seqgate):
            seqgate.check(min_recall={"ham": 0.9}, fail_on_paradox=False)

        @pytest.fixture  # in a gated module: pytest refuses marks on fixtures
        def helper():
            return 1

        class TestGrouped:
            def test_in_class(self, helper):
                pass
    """)
    result = project.run("-v", *xdist)
    result.assert_outcomes(passed=12, failed=2)
    out = result.stdout.str()
    assert "has no parameter defined" not in out
    for failed in ("test_function_marker[ham]", "test_in_a_body[spam]"):
        assert f"FAILED test_gates.py::{failed}" in out
    # Gated without a gate to check (the module's marker turns the paradox off), but
    # collected for each model:
    for test in (
        "test_module_marker_only[ham]",
        "test_generator_params[spam-1]",
        "TestGrouped::test_in_class[spam]",
    ):
        assert any(test in line and "PASSED" in line for line in out.splitlines()), test
    report = json.loads((project.path / "r.json").read_text())
    found = {}
    for ev in report["evaluations"]:
        tests = {g["test"].split("::")[1] for g in ev["gates"]}
        param = ev["name"].removeprefix("Constant[").removesuffix("]")
        # Each evaluation's gates are its own model's tests, every one of them.
        assert all(param in t.split("[")[1].rstrip("]").split("-") for t in tests), tests
        found[ev["name"]] = (ev["confusion_matrix"], sorted({t.split("[")[0] for t in tests}))
    every = ["test_function_marker", "test_in_a_body", "test_param_marker"]
    assert found == {
        "Constant[ham]": ([[100, 0], [100, 0]], every),
        "Constant[spam]": ([[0, 100], [0, 100]], every),
    }


def test_a_parametrized_eval_set_is_named_by_its_parameter(project):
    project.ini(model="models:first_token", labels=["ham", "spam"], report="r.json")
    (project.path / "conftest.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture(scope='session', params=['even', 'odd'])\n"
        "def seqgate_eval_data(request):\n"
        "    first = 2 if request.param == 'even' else 3\n"
        "    return [{'tokens': [first, 5], 'label': 'ham'}] * 10\n"
    )
    project.gated("min_accuracy=0.5, fail_on_paradox=False")
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    report = json.loads((project.path / "r.json").read_text())
    found = {ev["eval_data"]: ev["metrics"]["accuracy"] for ev in report["evaluations"]}
    assert found == {"seqgate_eval_data fixture[even]": 1.0, "seqgate_eval_data fixture[odd]": 0.0}


def test_copies_with_different_labels_are_reported_with_the_accuracy_they_allow(project):
    records = [{"tokens": [2 * i + 2, 5], "label": "ham"} for i in range(18)]
    records += [{"tokens": [2, 5], "label": "spam"}, {"tokens": [4, 5], "label": "spam"}]
    project.data(records)
    project.ini(
        model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json"
    )
    project.gated("min_accuracy=0.5, fail_on_paradox=False")
    result = project.run()
    result.assert_outcomes(passed=1)
    assert_lines(
        result.stdout.str(),
        "WARNING [conflicting_labels] 2 sequences appear in the eval set with different labels "
        "(4 samples), e.g. eval.jsonl:1 'ham' = eval.jsonl:19 'spam': no model can be right on "
        "every copy, so accuracy cannot exceed 90.0%; correct the labels or keep one copy",
    )
    (found,) = project.findings("conflicting_labels")
    assert (found["sequences"], found["samples"], found["max_accuracy"]) == (2, 4, 0.9)


def test_an_eval_set_without_one_class_writes_its_reports(project):
    """No spam in the eval set: the training set's recall gap for spam is undefined.
    The JSON report raised on that NaN (strict JSON has none) at the session's end,
    an INTERNALERROR that left no report at all."""
    # 30 of the 50 ham missed: a gap the training set (all right) shows.
    project.data([r for r in rule_records(100, missed={0: 30}) if r["label"] == "ham"])
    project.data(rule_records(100), name="train.jsonl")
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        train_data="train.jsonl",
        labels=["ham", "spam"],
        report=["r.json", "r.md", "r.html"],
    )
    project.gated("max_train_test_gap=1.0, fail_on_paradox=False")
    result = project.run()
    result.assert_outcomes(passed=1)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    findings = {f["kind"]: f for f in project.findings()}
    assert findings["train_test_gap"]["gaps"]["recall[spam]"] is None  # undefined: null
    assert findings["missing_classes"]["classes"] == ["spam"]
    assert findings["missing_classes"]["message"].startswith(
        "1 of 2 classes has no samples in the eval set ('spam'): its recall is undefined, so "
        "macro recall and balanced accuracy leave it out"
    )


def test_a_failed_evaluation_is_not_retried_for_each_test(project):
    """seqgate_evaluation is function-scoped: a model that fails is run once, and each
    test that needs it gets the same error."""
    project.data(rule_records(40))
    project.ini(model="models:counting", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test(
        "import pytest\n\n"
        + "".join(
            f"@pytest.mark.seqgate(min_accuracy=0.5)\ndef test_{i}():\n    pass\n\n"
            for i in range(3)
        )
    )
    count = project.path / "count.txt"
    (project.path / "conftest.py").write_text(
        "import os, pytest\n"
        f"os.environ['COUNT_FILE'] = {str(count)!r}\n\n"
        "@pytest.fixture(scope='session', autouse=True)\n"
        "def broken(seqgate_model):\n"
        "    seqgate_model.bias.data[:] = float('nan')\n"
    )
    result = project.run()
    result.assert_outcomes(errors=3)
    assert result.stdout.str().count("returned NaN or Inf logits") >= 3
    assert count.read_text().split() == ["40"]  # one forward pass, not one per test


def test_fixture_override_in_conftest(project):
    code_supplied(
        project,
        """
        return [(torch.tensor([2 * i + 2, 5, 7]), 0) for i in range(6)] + [
            (torch.tensor([2 * i + 1] * (i + 1)), 1) for i in range(6)]
        """,
        12,
    )
    project.run().assert_outcomes(passed=1)


def test_paradox_fails_a_gate_that_only_asks_for_accuracy(project):
    # 1,950 ham all right; 50 spam of which 6 are found (FirstToken: odd first id = spam).
    records = [{"tokens": [2 * (i % 20) + 2, 5], "label": "ham"} for i in range(1950)]
    records += [{"tokens": [3 if i < 6 else 4, 7, i % 9 + 1], "label": "spam"} for i in range(50)]
    project.data(records)
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.9)
        def test_accuracy_only():
            pass
    """)
    result = project.run()
    result.assert_outcomes(failed=1)
    # The reason wraps in its column (the table stays as wide as a CI log) and
    # reads whole once its lines are joined.
    out = result.stdout.str()
    # After the table, the spam the paradox hides: the 44 missed, first of equal P.
    examples = out.index("accuracy_paradox[spam] missed, most confident first:")
    assert "  eval.jsonl:1957  predicted ham, P(spam) 0.02\n" in out[examples:]
    table = out[out.index("metric ") : examples].splitlines()
    assert max(len(line) for line in table) <= 60 + REASON_WIDTH
    row = next(i for i, line in enumerate(table) if line.startswith("accuracy_paradox"))
    assert table[row].split()[:4] == ["accuracy_paradox", "spam", "absent", "present"]
    column = table[1].rindex(" ") + 1  # where the reason column's dashes start
    reason = " ".join(line[column:].strip() for line in table[row:])
    assert reason == (
        "accuracy 97.8% hides recall 12.0% on 'spam' (2.5% of samples): a model that "
        "always answers 'ham' scores 97.5%"
    )


@pytest.mark.parametrize(
    ("model", "caught"), [("models:Unpacked", True), ("models:build_gru", False)]
)
def test_padding_check_catches_an_unpacked_gru(project, model, caught):
    project.data(rule_records(200))
    project.ini(
        model=model,
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report="r.json",
        batch_size="16",
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.0, fail_on_paradox=False)
        def test_gate():
            pass
    """)
    result = project.run()
    report = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    found = [f for f in report["findings"] if f["kind"] == "padding_sensitivity"]
    assert bool(found) is caught
    if caught:
        result.assert_outcomes(failed=1)
        assert "padding changes the model's output for" in found[0]["message"]
        # The fix for the layer at fault: Unpacked is a GRU whose forward takes no lengths.
        assert found[0]["message"].endswith(
            "Pack the RNN's input (pack_padded_sequence with the lengths: a forward parameter "
            "named lengths gets them)"
        )
        assert found[0]["sampled"] == 64
    else:
        result.assert_outcomes(passed=1)


def test_fixture_built_sequence_data_of_int32_and_a_broken_one(project):
    conftest = code_supplied(
        project,
        """
        lengths = torch.tensor([3] * 10, dtype=torch.int32)
        firsts = [2 * i + 2 + i % 2 for i in range(10)]  # odd first id: spam
        tokens = torch.tensor([[f, 5, 7] for f in firsts], dtype=torch.int32).reshape(-1)
        offsets = torch.arange(10, dtype=torch.int32) * OFFSET
        labels = torch.tensor([i % 2 for i in range(10)], dtype=torch.int32)
        return SequenceData(tokens, offsets, lengths, labels, label_names=('ham', 'spam'))
        """,
        10,
    )
    (project.path / "conftest.py").write_text(conftest.replace("OFFSET", "3"))
    project.run().assert_outcomes(passed=1)
    # Offsets that run past the values: an error at the fixture's line, naming the record.
    (project.path / "conftest.py").write_text(conftest.replace("OFFSET", "4"))
    result = project.run()
    result.assert_outcomes(errors=1)
    assert_lines(
        result.stdout.str(),
        *[
            ">*return SequenceData(tokens, offsets, lengths, labels*",
            "E*DataError: <memory>[7]: this sequence (offset 28, length 3, label 1) is "
            "malformed: each sequence must lie inside values (30 steps)",
            "conftest.py:14: DataError",
        ],
    )
    assert "data.py" not in result.stdout.str()  # the check's own frame is hidden


def test_an_eval_set_padded_before_it_came_is_refused(project):
    """A TensorDataset of input_ids padded to 12, for a model told the lengths:
    they covered the padding, and the numbers were the model's on sequences it
    never sees (the example's GRU: 15.9% accuracy instead of 97.4%), blamed on
    the model. A model given the padded batch alone sees what it sees in use."""
    conftest = code_supplied(
        project,
        """
        ids = torch.zeros(20, 12, dtype=torch.long)
        for i in range(20):
            ids[i, : 2 + i % 5] = torch.arange(2 + i % 5) + 2 + i % 2
        return torch.utils.data.TensorDataset(ids, torch.tensor([i % 2 for i in range(20)]))
        """,
        20,
    )
    told = conftest.replace(
        "    return FirstToken(2)\n",
        "    class Told(FirstToken):\n"
        "        def forward(self, tokens, lengths):\n"
        "            return super().forward(tokens)\n"
        "    return Told(2)\n",
    )
    (project.path / "conftest.py").write_text(told)
    result = project.run()
    result.assert_outcomes(errors=1)
    assert_lines(
        result.stdout.str(),
        "seqgate: seqgate_eval_data fixture: the sequences look padded already: all 20 are 12 "
        "steps long, and 20 (100.0%) end in a run of token 0 (the last 10 of seqgate_eval_data "
        "fixture[0], say). The plugin pads each batch itself and gives the model the lengths, "
        "which would cover that padding as if it were steps: give the sequences unpadded (cut "
        "each at its length, e.g. the sum of its attention mask), or padded with their masks: "
        "an 'attention_mask' beside each record's tokens, or 'lengths' or 'attention_mask' "
        "beside a .pt file's padded tensor",
    )
    (project.path / "conftest.py").write_text(conftest)
    project.run().assert_outcomes(passed=1)


def test_label_names_taken_from_the_data_are_flagged_as_a_guess(project):
    project.data(rule_records(40))
    project.test(GATED.replace('min_recall={"spam": 0.9}', "min_macro_f1=0.9"))
    for labels, flagged in ((None, True), (["ham", "spam"], False)):
        options = {"model": "models:first_token", "eval_data": "eval.jsonl", "report": "r.json"}
        if labels:
            options["labels"] = labels
        project.ini(**options)
        result = project.run()
        result.assert_outcomes(passed=1)
        kinds = [f["kind"] for f in project.findings()]
        assert ("label_order" in kinds) is flagged
        if flagged:
            assert_lines(
                result.stdout.str(),
                "*[label_order] seqgate_labels is not set: the classes are the eval set's label "
                "names in sorted order, ['ham', 'spam'], read as the model's outputs 0 to 1*",
            )


def test_labels_configured_in_the_wrong_order_are_named(project):
    """seqgate_labels = spam, ham for a model whose output 0 is ham: the report must
    say the order is wrong, not only that the model looks hopeless."""
    project.data(rule_records(40))
    project.ini(
        model="models:first_token", eval_data="eval.jsonl", labels=["spam", "ham"], report="r.json"
    )
    project.test(GATED)
    result = project.run()
    result.assert_outcomes(failed=1)
    # The cause before its symptoms (an accuracy paradox at 0% accuracy).
    assert_lines(
        result.stdout.str(),
        "ERROR [label_order] *",
        "ERROR [accuracy_paradox] *",
    )
    assert_lines(
        result.stdout.str(),
        "ERROR [label_order] the labels fit the model's outputs better in another order: 20 of "
        "the 20 predicted 'spam' are 'ham', 20 of the 20 predicted 'ham' are 'spam'; in the "
        "order ['ham', 'spam'] accuracy would be 100.0%, not 0.0%.*",
    )
    (found,) = project.findings("label_order")
    assert found["fitting_order"] == ["ham", "spam"]


def test_a_fixture_dataset_of_texts_uses_the_configured_tokenizer(project):
    # The tokenizer applies to every way records arrive, a fixture's pairs too.
    (project.path / "tok.py").write_text(
        "def encode(text):\n    return [len(w) for w in text.split()]\n"
    )
    code_supplied(
        project,
        """
        # The first token is the first word's length: even for ham, odd for spam.
        return [('a' * (2 + 2 * i) + ' x', 'ham') for i in range(8)] + [
            ('a' * (1 + 2 * i) + ' x', 'spam') for i in range(8)]
        """,
        16,
    )
    project.ini(labels=["ham", "spam"], tokenizer="tok:encode")
    project.run("-p", "no:randomly").assert_outcomes(passed=1)


def test_a_training_set_without_one_of_the_classes_is_numbered_like_the_eval_set(project):
    # Without seqgate_labels each file's names are its own, sorted: the eval set's
    # (eggs, ham, spam) against the training set's (ham, spam). The training labels
    # are read as the eval set's indices, so the train metrics compare the right classes.
    names = ("eggs", "ham", "spam")
    project.data(rule_records(60, classes=3, names=names))
    train = [r for r in rule_records(60, classes=3, names=names, seed=1) if r["label"] != "eggs"]
    project.data(train, name="train.jsonl")
    project.ini(
        model="models:first_token3",
        eval_data="eval.jsonl",
        train_data="train.jsonl",
        report="r.json",
    )
    project.test("""
        def test_it(seqgate):
            seqgate.check(min_accuracy=0.9)
    """)
    project.run().assert_outcomes(passed=1)
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["labels"] == ["eggs", "ham", "spam"]
    assert ev["train_metrics"]["accuracy"] == 1.0
    # The shape of metrics, intervals included (AP, AUC and ECE need scores the
    # train pass does not keep; the train intervals are the closed-form ones).
    train, metrics = ev["train_metrics"], ev["metrics"]
    assert set(metrics) - set(train) == {"macro_average_precision", "macro_roc_auc", "ece"}
    assert train["intervals"]["method"] == {"rates": "wilson", "others": None}
    assert set(train["intervals"]["per_class"]["ham"]) == {"precision", "recall"}
    low, high = train["intervals"]["accuracy"]
    assert low < 1.0 and high == 1.0
    # A training class the eval set lacks cannot be numbered: a clear error.
    project.data(rule_records(40))  # ham and spam, for the two-class model
    project.data(rule_records(60, classes=3, names=names), name="train.jsonl")
    project.ini(model="models:first_token", eval_data="eval.jsonl", train_data="train.jsonl")
    result = project.run()
    result.assert_outcomes(errors=1)
    assert_lines(
        result.stdout.str(),
        "*seqgate: train.jsonl: the training set has a class ['eggs'] that the eval set's "
        "labels ['ham', 'spam'] lack; set seqgate_labels to every class, in the model's order",
    )


def test_a_parquet_eval_set_with_class_label_names_is_gated(project):
    """A Hugging Face dataset saved as Parquet (integer labels, the ClassLabel names
    in the schema) is an eval set: its names are the classes, in its order, with no
    label_order warning (they are declared, not guessed from sorted names); its
    records are named by row, and a metadata column slices."""
    pytest.importorskip("pyarrow")
    records = rule_records(200, missed={1: 30})
    project.python(
        f"""
        import json, pyarrow as pa, pyarrow.parquet as pq
        records = {records!r}
        names = ["ham", "spam"]
        info = {{"features": {{"label": {{"names": names, "_type": "ClassLabel"}}}}}}
        table = pa.table({{
            "tokens": [r["tokens"] for r in records],
            "label": [names.index(r["label"]) for r in records],
            "source": ["sms" if i % 2 else "mail" for i in range(len(records))],
        }}).replace_schema_metadata({{b"huggingface": json.dumps({{"info": info}})}})
        pq.write_table(table, "test.parquet")
        """
    )
    project.ini(
        model="models:first_token", eval_data="test.parquet", slice_by="source", report="r.json"
    )
    project.test(GATED)
    result = project.run()
    assert result.ret == 1
    assert_lines(
        result.stdout.str(),
        "*recall*spam*>= 0.9*0.700*",
        "recall[spam] missed, most confident first:",
        "  test.parquet[*]  predicted ham, P(spam) *",
    )
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["labels"] == ["ham", "spam"]
    assert ev["confusion_matrix"] == [[100, 0], [30, 70]]
    assert not project.findings("label_order")
    assert {s["name"] for s in ev["slices"] if s["name"].startswith("source")} == {
        "source=mail",
        "source=sms",
    }


def test_columns_of_other_names_are_gated_from_the_ini(project):
    """A set named as another library names it (``input_ids``, ``category``) is gated
    with ``seqgate_columns``, no file rewritten; a mapping slip is a usage error that
    names the setting, and a column the mapping names but the file lacks is named
    with the one meant."""
    records = [
        {"input_ids": r["tokens"], "category": r["label"], "id": i}
        for i, r in enumerate(rule_records(200, missed={1: 30}))
    ]
    project.data(records)
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        columns=["tokens = input_ids", "label = category"],
        report="r.json",
    )
    project.test(GATED)
    result = project.run()
    assert result.ret == 1
    assert_lines(result.stdout.str(), "*recall*spam*>= 0.9*0.700*")
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["labels"] == ["ham", "spam"]
    assert ev["confusion_matrix"] == [[100, 0], [30, 70]]

    result = project.run("--seqgate-columns=input_ids=tokens")
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: --seqgate-columns: 'input_ids' in 'input_ids=tokens' is not a field "
        "seqgate reads; the fields are label, text, text_pair, tokens, features, "
        "attention_mask, token_type_ids (the field comes first: tokens=input_ids)",
    )
    result = project.run("--seqgate-columns=tokens=input_id,label=category")
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: eval.jsonl:1: a record needs one of 'tokens', 'features' or 'text', "
        "but has none (its keys: 'input_ids', 'category', 'id'); seqgate_columns reads "
        "'tokens' from 'input_id', which is not among them (did you mean `input_ids`?)",
    )


def test_models_gated_in_turn_search_the_training_set_once(project):
    """The leakage checks read the data alone: models gated in turn on the same
    sets (a seqgate_model with params, which no on-disk key describes) share one
    search of the training set, and each report has its findings."""
    records = rule_records(200)
    project.data(records)
    project.data([*rule_records(50, seed=3), records[4]], name="train.jsonl")
    project.ini(
        eval_data="eval.jsonl", train_data="train.jsonl", labels=["ham", "spam"], report="r.json"
    )
    (project.path / "conftest.py").write_text(
        PARAMETRIZED_MODEL + "import pytest_seqgate.minhash as minhash\n"
        "searched = minhash.near_copies\n"
        "def near_copies(*args, **kwargs):\n"
        "    with open('searches.txt', 'a') as handle:\n"
        "        handle.write('search\\n')\n"
        "    return searched(*args, **kwargs)\n"
        "minhash.near_copies = near_copies\n"
    )
    project.gated("min_accuracy=0, fail_on_paradox=False")
    project.run("-p", "no:xdist").assert_outcomes(passed=2)
    assert (project.path / "searches.txt").read_text().split() == ["search"]
    report = json.loads((project.path / "r.json").read_text())
    leaks = [
        [f["message"] for f in ev["findings"] if f["kind"] == "leakage"]
        for ev in report["evaluations"]
    ]
    assert len(leaks) == 2 and leaks[0] == leaks[1]
    assert "eval.jsonl:5" in leaks[0][0]
