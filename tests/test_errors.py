"""Usage errors exit 4 with one clear line; inference errors name the cause."""

from __future__ import annotations

import json

import pytest

from conftest import MODELS, assert_lines, rule_records, write_jsonl


def configured_project(project, gates="min_accuracy=0.5", **ini):
    project.data(rule_records(40))
    options = {"model": "models:first_token", "eval_data": "eval.jsonl", "labels": ["ham", "spam"]}
    options.update(ini)
    project.ini(**options)
    project.gated(gates)


@pytest.mark.parametrize(
    ("gates", "ini", "message"),
    [
        (
            "min_acuracy=0.9",
            {},
            "test_gates.py:4: seqgate: unknown gate `min_acuracy` (did you mean "
            "`min_accuracy`?); known gates: *",
        ),
        (
            'min_recall={"spma": 0.9}',
            {},
            "test_gates.py:4: seqgate: `min_recall` names class 'spma' (did you mean `spam`?), "
            "which is not one of the labels ['ham', 'spam']",
        ),
        (
            'min_f1={"ham": 1.3}',
            {},
            "test_gates.py:4: seqgate: Expected `min_f1['ham']` to be in [0, 1], but got 1.3",
        ),
        (
            "min_accuracy=0.5",
            {"eval_data": "missing.jsonl"},
            "seqgate: seqgate_eval_data in pytest.ini: file not found: missing.jsonl "
            "(read from the rootdir, *)",
        ),
        (
            "min_accuracy=0.5",
            {"device": "gpu0"},
            "seqgate: seqgate_device in pytest.ini: expected auto, cpu, cuda, cuda:N or mps, "
            "but got 'gpu0'",
        ),
        (
            "min_accuracy=0.5",
            {"device": "cuda:99"},
            # Known at collection on any machine: no CUDA here, too few GPUs on a GPU machine.
            "seqgate: seqgate_device in pytest.ini: 'cuda:99' was asked for but *",
        ),
        (
            "min_accuracy=0.5",
            {"labels": ["ham", "eggs"]},
            "seqgate: eval.jsonl:2: label 'spam' is not one of seqgate_labels ['ham', 'eggs']*",
        ),
        (
            "min_accuracy=0.5",
            {"model": "models:nope"},
            "seqgate: seqgate_model in pytest.ini: 'models' has no attribute 'nope' (from "
            "'models:nope'); it defines: *first_token*",
        ),
        (
            "min_accuracy=0.5",
            {"model": "models:first_tokn"},
            "seqgate: seqgate_model in pytest.ini: 'models' has no attribute 'first_tokn' (from "
            "'models:first_tokn') (did you mean `first_token`?); it defines: *",
        ),
        (
            "min_accuracy=0.5",
            {"model": "nomodule:build"},
            "seqgate: seqgate_model in pytest.ini: cannot import module 'nomodule'*",
        ),
        (
            "min_accuracy=0.5",
            {"batch_size": "many"},
            "seqgate: seqgate_batch_size in pytest.ini: expected an integer, but got 'many'",
        ),
        (
            "min_accuracy=0.5",
            {"eval_data": "sub"},
            "seqgate: seqgate_eval_data in pytest.ini: sub is a folder, not a file (read from "
            "the rootdir, *); name the file in it, or load the folder in code: "
            "seqgate_eval_data = 'pkg.module:callable', or a pytest_seqgate_load_dataset hook",
        ),
        (
            "min_accuracy=0.5",
            {"eval_data": "eval.txt"},
            "seqgate: seqgate_eval_data in pytest.ini: cannot read eval.txt: the suffix must "
            "be .jsonl, .json, .csv, .tsv (each gzipped too: .jsonl.gz), .parquet, .arrow or "
            ".pt, or give a 'pkg.module:callable' returning a Dataset",
        ),
        (
            "min_accuracy=0.5",
            {"labels": ["ham", "spam", "ham"]},
            "seqgate: seqgate_labels in pytest.ini: class names must be unique, but 'ham' repeats",
        ),
        (
            "min_accuracy=0.5",
            {"labels": "ham spam"},
            "seqgate: seqgate_labels in pytest.ini: a classifier needs at least two classes, but "
            "got ['ham spam'] (one name with spaces: give one class per line, or separate them "
            "with commas: ham, spam)",
        ),
        (
            "min_accuracy=0.5",
            {"labels": ["ham", "spam", "eggs"], "threshold": "0.3"},
            "seqgate: seqgate_threshold in pytest.ini applies to binary models, but this one has "
            "3 classes; remove it to decide by the most probable class",
        ),
        (
            "min_accuracy=0.5",
            {"slice_by": ["lang"]},
            "seqgate: seqgate_slice_by in pytest.ini: the eval set has no key 'lang'; its records "
            "have no key beside the sequence and the label: add it to them (a .jsonl field, a "
            ".csv column)",
        ),
    ],
)
def test_usage_errors_exit_4(project, gates, ini, message):
    configured_project(project, gates, **ini)
    (project.path / "sub").mkdir()
    (project.path / "eval.txt").write_text((project.path / "eval.jsonl").read_text())
    result = project.run()
    assert result.ret == 4
    assert_lines(result.stderr.str(), f"ERROR: {message}")
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_every_bad_marker_is_reported_in_one_run(project, xdist):
    """Three mistakes in three tests: one run names all three, each at its line, and a
    parametrized test's shared marker once, so a user fixes them in one go. Under
    xdist too, where a usage error raised in a worker's collection was xdist's
    INTERNALERROR traceback (exit 3) with the message nowhere."""
    configured_project(project)
    project.test(
        "import pytest\n\n"
        "@pytest.mark.seqgate(min_acuracy=0.9)\n"
        "def test_a():\n    pass\n\n"
        "@pytest.mark.seqgate(min_recall={'spma': 0.9})\n"
        "def test_b():\n    pass\n\n"
        "@pytest.mark.seqgate(min_f1=1.3)\n"
        "@pytest.mark.parametrize('x', [1, 2])\n"
        "def test_c(x):\n    pass\n",
        name="test_many.py",
    )
    result = project.run("test_many.py", *xdist)
    assert result.ret == 4
    err = result.stderr.str()
    assert "INTERNALERROR" not in err + result.stdout.str()
    assert_lines(
        err,
        "ERROR: test_many.py:3: seqgate: unknown gate `min_acuracy`*",
        "test_many.py:7: seqgate: `min_recall` names class 'spma'*",
        "test_many.py:11: seqgate: Expected `min_f1` to be in [0, 1], but got 1.3",
    )
    assert err.count("but got 1.3") == 1
    assert "Traceback" not in err + result.stdout.str()


def test_a_missing_file_under_xdist_is_a_usage_error(project):
    """The workers find it at collection; the controller says it as pytest would."""
    configured_project(project, eval_data="missing.jsonl")
    result = project.run("-n", "2")
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: seqgate_eval_data in pytest.ini: file not found: missing.jsonl*",
    )
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()


def test_cli_wins_over_ini_and_names_the_flag(project):
    configured_project(project)
    result = project.run("--seqgate-device", "tpu")
    assert result.ret == 4
    assert_lines(result.stderr.str(), "ERROR: seqgate: --seqgate-device: expected auto, cpu*'tpu'")


def test_a_path_outside_the_project_after_a_space(project):
    """pytest looks for its ini before it knows the plugin's options, so the path in
    ``--seqgate-eval-data /elsewhere/x.jsonl`` moved its search above the project and
    every seqgate_* key went unread: a usage error that gives the '=' form."""
    configured_project(project)
    outside = project.path.parent / f"{project.path.name}-outside.jsonl"
    write_jsonl(outside, rule_records(40))
    result = project.run("--seqgate-eval-data", str(outside))
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        f"ERROR: seqgate: pytest took the value of `--seqgate-eval-data {outside}` for a "
        f"test path*skipped {project.path / 'pytest.ini'}*Write the option with '=': "
        f"--seqgate-eval-data={outside}",
    )
    project.run(f"--seqgate-eval-data={outside}").assert_outcomes(passed=1)
    project.run("--seqgate-eval-data", "eval.jsonl").assert_outcomes(passed=1)


def test_cli_bad_int_is_argparse_error(project):
    configured_project(project)
    result = project.run("--seqgate-batch-size", "x")
    assert result.ret == 4
    assert_lines(result.stderr.str(), "*expected an integer for --seqgate-batch-size, but got 'x'*")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "models:BadHead",
            "*forward raised RuntimeError on the first batch, inputs int64[40, 12]*the model's "
            "layers may disagree*Linear whose in_features*(raised at models.py:{BAD_HEAD})",
        ),
        ("models:PerToken", "*per-token outputs [40, 12, 2]*sequence labelling*pool*"),
        (
            "models:first_token3",
            "*the model returned 3 logits per sequence, but seqgate_labels names 2 classes; fix "
            "seqgate_labels or the model's output layer*",
        ),
        ("models:NaNOnThree", "*NaN or Inf logits for 2 of 40 samples (first: eval.jsonl:24)*"),
    ],
)
def test_inference_errors(project, model, message):
    configured_project(project, model=model)
    result = project.run()
    assert result.ret == 1
    result.assert_outcomes(errors=1)
    # The line of the user's model that raised (BadHead's head call in models.py).
    lines = MODELS.splitlines()
    bad_head = lines.index(
        "    def forward(self, tokens):", lines.index("class BadHead(nn.Module):")
    )
    assert_lines(result.stdout.str(), message.replace("{BAD_HEAD}", str(bad_head + 3)))
    assert "site-packages" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_help_lists_options(project):
    result = project.run("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "seqgate: gate a sequence classifier's quality:",
            "*--seqgate-model=MODEL*",
            "*--seqgate-report=PATH*",
            "*--seqgate-no-keep-scores*",
            "*seqgate_labels (linelist)*",
        ]
    )


def test_a_misspelt_marker_is_a_usage_error(project):
    """pytest only warns of an unknown marker, and the test passed with its gates
    never checked."""
    configured_project(project)
    project.test(
        """
        import pytest

        pytestmark = pytest.mark.seq_gate(min_accuracy=0.99)

        @pytest.mark.seqgates(min_recall={"spam": 0.99})
        def test_typo():
            pass

        class TestGrouped:
            pytestmark = [pytest.mark.Seqgate(min_accuracy=0.99)]

            def test_method(self):
                pass

        @pytest.mark.slow
        def test_other_marker():
            pass
        """,
        name="test_typos.py",
    )
    result = project.run("-p", "no:warnings")
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: test_typos.py:6: seqgate: unknown marker `seqgates` (did you mean `seqgate`?): "
        "pytest ignores an unknown marker, so these gates would never be checked",
        "test_typos.py:4 (pytestmark): seqgate: unknown marker `seq_gate` (did you mean "
        "`seqgate`?)*",
        "test_typos.py:10: seqgate: unknown marker `Seqgate` (did you mean `seqgate`?)*",
    )
    assert "slow" not in result.stderr.str()
    # A near name registered on purpose is no typo.
    (project.path / "pytest.ini").write_text(
        (project.path / "pytest.ini").read_text()
        + "markers =\n    seqgates: ours\n    seq_gate\n    Seqgate(x): also ours\n"
    )
    project.run().assert_outcomes(passed=4)


def test_a_misspelt_ini_key_is_a_usage_error(project):
    """pytest only warns of an ini key no plugin declared and runs without it: a
    misspelt ``seqgate_min_suport`` left every per-class gate without its support
    floor, and a misspelt model key became "no model configured" at setup. Each is
    a usage error naming the key, the file and the key meant; a key another plugin
    declared is no typo, and ``--help`` still lists the keys."""
    configured_project(project)
    ini = project.path / "pytest.ini"
    original = ini.read_text()
    for typo, message in [
        ("seqgate_min_suport = 10", "did you mean seqgate_min_support?"),
        ("segate_seed = 3", "did you mean seqgate_seed?"),
        ("seqgate_strict = true", "pytest --help lists seqgate's keys"),
    ]:
        ini.write_text(original + typo + "\n")
        result = project.run()
        assert result.ret == 4
        key = typo.split(" ")[0]
        assert_lines(
            result.stderr.str(),
            f"ERROR: seqgate: unknown ini key {key} in pytest.ini: pytest would ignore it and "
            f"run without the setting; {message}",
        )
    assert project.run("--help").ret == 0
    # ``-o`` keys are read the same way, and named as given there, not in the file.
    ini.write_text(original)
    result = project.run("-o", "seqgate_modle=m.pt")
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: unknown ini key seqgate_modle given with -o: pytest would ignore it "
        "and run without the setting; did you mean seqgate_model?",
    )
    (project.path / "conftest.py").write_text(
        "def pytest_addoption(parser):\n    parser.addini('seqgate_strict', 'ours')\n"
    )
    project.run().assert_outcomes(passed=1)


def test_a_bad_value_given_with_dash_o_is_named_as_given_there(project):
    """``-o seqgate_labels=...`` overrides the ini file, which may not hold the key at
    all: the message named the file ("seqgate_labels in pytest.ini"), sending the
    user to a line that is not there."""
    configured_project(project)
    result = project.run("-o", "seqgate_labels=ham spam")
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: -o seqgate_labels: a classifier needs at least two classes, but got "
        "['ham spam'] *",
    )


def test_a_bool_setting_turns_off_from_the_cli(project):
    """A bool's flag can only turn it on: keep_scores (true by default) and an ini's
    `seqgate_cache = true` had no way off for one run."""
    project.data(rule_records(40))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        keep_scores="true",
        report="r.json",
    )
    project.gated("min_accuracy=0.5")
    project.run().assert_outcomes(passed=1)
    metrics = json.loads((project.path / "r.json").read_text())["evaluations"][0]["metrics"]
    assert metrics["macro_roc_auc"] == 1.0
    project.run("--seqgate-no-keep-scores").assert_outcomes(passed=1)
    metrics = json.loads((project.path / "r.json").read_text())["evaluations"][0]["metrics"]
    assert metrics["macro_roc_auc"] is None


def test_plugin_load_does_not_import_torch(project):
    project.test("""
        import sys

        def test_no_torch(request):
            assert "torch" not in sys.modules
            # Nor does it wrap each fixture's set-up in a session with no gated test.
            assert not request.config.pluginmanager.has_plugin("seqgate-gated-session")
    """)
    project.run().assert_outcomes(passed=1)


def test_collect_only_loads_no_model_and_no_data(project):
    """An IDE lists tests with --collect-only on every save: no torch, no model, no
    data then (a broken checkpoint is found by the run), but a missing file still is."""
    configured_project(project, model="model.pt")
    (project.path / "model.pt").write_bytes(b"not a checkpoint")
    (project.path / "conftest.py").write_text(
        "import sys\n"
        "def pytest_collection_finish(session):\n"
        "    print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = project.run("--collect-only", "-s")
    assert result.ret == 0
    assert_lines(result.stdout.str(), "*<Function test_quality>", "torch imported: False")
    assert project.run().ret == 4  # a real run loads the model at collection
    missing = project.run("--collect-only", "--seqgate-eval-data=gone.jsonl")
    assert missing.ret == 4
    assert_lines(missing.stderr.str(), "ERROR: seqgate: --seqgate-eval-data: file not found: gone*")


def test_deselected_gates_load_nothing_and_late_markers_fail(project):
    """-k that leaves no gated test loads no model (the broken checkpoint goes
    unread, torch unimported); a marker added after collection's checks is a
    failure that says so, never a pass with nothing checked."""
    configured_project(project, model="model.pt")
    (project.path / "model.pt").write_bytes(b"not a checkpoint")
    project.test(
        """
        import sys

        def test_plain():
            assert "torch" not in sys.modules
        """,
        name="test_plain.py",
    )
    project.run("-k", "plain").assert_outcomes(passed=1, deselected=1)
    (project.path / "model.pt").unlink()
    configured_project(project)
    (project.path / "conftest.py").write_text(
        "import pytest\n"
        "def pytest_collection_finish(session):\n"
        "    for item in session.items:\n"
        "        item.add_marker(pytest.mark.seqgate(min_accuracy=0.5))\n"
    )
    result = project.run("-k", "plain")
    result.assert_outcomes(failed=1, deselected=1)
    assert_lines(
        result.stdout.str(),
        "*seqgate: the gates of test_plain.py::test_plain were not registered at collection*",
    )


def test_what_no_check_foresaw_in_loading_is_a_usage_error_not_internalerror(project):
    """An exception no check of seqgate's expected (a library's own, raised while a
    file loads) ended the run in pytest's INTERNALERROR and its traceback; it is a
    usage error naming the setting, the line it came from and the exception."""
    configured_project(project)
    (project.path / "conftest.py").write_text(
        "import pytest_seqgate.loading as loading\n"
        "def unforeseen(settings, role):\n"
        "    raise RuntimeError('the disk went away')\n"
        "loading.load_dataset = unforeseen\n"
    )
    result = project.run()
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: seqgate_eval_data in pytest.ini: loading 'eval.jsonl' raised "
        "RuntimeError at conftest.py:3: the disk went away",
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (
            "lambda x: x",
            "[(torch.tensor([1, 2]), 0)]",
            "*seqgate: the seqgate_model fixture returned function, expected a torch.nn.Module: "
            "return the module itself*or wrap a plain function in an nn.Module*",
        ),
        ("None", "[(torch.tensor([1, 2]), 0)]", "*seqgate_model fixture returned NoneType*"),
        (
            "FirstToken(2)",
            "{'tokens': [1, 2], 'label': 0}",
            "*seqgate: seqgate_eval_data fixture: expected a SequenceData, or a map-style "
            "Dataset*but got dict*",
        ),
        (
            "FirstToken(2)",
            "Broken()",
            "*seqgate: seqgate_eval_data fixture[0]: reading the item raised KeyError: 0*",
        ),
        (
            "FirstToken(2)",
            "Endless()",
            "*but got Endless: it can only be iterated (an IterableDataset or a generator, "
            "which may never end); return list(itertools.islice(it, n)) of the samples to "
            "evaluate, or a map-style Dataset",
        ),
        (
            "FirstToken(2)",
            "torch.utils.data.DataLoader([(torch.tensor([1, 2]), 0)] * 4, batch_size=2)",
            "*but got DataLoader: seqgate makes its own batches (sorted by length, padded, with "
            "lengths); return the loader's dataset (`loader.dataset`) of (sequence, label) "
            "pairs or records instead",
        ),
    ],
)
def test_fixtures_that_return_the_wrong_thing(project, model, data, message):
    (project.path / "conftest.py").write_text(
        "import pytest, torch\n"
        "from models import FirstToken\n"
        "class Broken:  # a map-style dataset whose items fail to read\n"
        "    def __len__(self):\n"
        "        return 3\n"
        "    def __getitem__(self, index):\n"
        "        raise KeyError(index)\n"
        "class Endless(torch.utils.data.IterableDataset):  # a stream that repeats\n"
        "    def __iter__(self):\n"
        "        while True:\n"
        "            yield torch.tensor([1, 2]), 0\n"
        "@pytest.fixture(scope='session')\n"
        "def seqgate_model():\n"
        f"    return {model}\n"
        "@pytest.fixture(scope='session')\n"
        "def seqgate_eval_data():\n"
        f"    return {data}\n"
    )
    project.gated("min_accuracy=0.0")
    result = project.run()
    result.assert_outcomes(errors=1)
    assert_lines(result.stdout.str(), message)
    assert "Traceback" not in result.stdout.str() and "site-packages" not in result.stdout.str()


def test_every_test_the_error_table_names_exists() -> None:
    """docs/errors.md gives, for each bad input, the test that asserts its message:
    a renamed or removed test would leave the table pointing at nothing."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    table = (root / "docs" / "errors.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", table))
    assert len(named) > 50
    missing = [
        f"{module}::{test}"
        for module, test in sorted(named)
        if not (root / "tests" / module).is_file()
        or not re.search(rf"^def {test}\(", (root / "tests" / module).read_text(), re.MULTILINE)
    ]
    assert missing == []
