"""pytest-xdist: one inference, one report, the same JSON; --seqgate-cache re-runs."""

from __future__ import annotations

import json

import pytest

from conftest import assert_lines, rule_records

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


def counting_ini(project, **extra: str | list[str]) -> None:
    """The counting model on eval.jsonl in one batch, reporting to r.json."""
    options = {
        "model": "models:counting",
        "eval_data": "eval.jsonl",
        "labels": ["ham", "spam"],
        "batch_size": "1000",
        "report": "r.json",
    }
    project.ini(**{**options, **extra})


@pytest.fixture
def counted(project, monkeypatch):
    project.data(rule_records(100, missed={1: 8}))
    counting_ini(project)
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
    result = _run(project, "--seqgate-cache")
    result.assert_outcomes(passed=3, failed=1)
    assert "earlier run's cache" not in result.stdout.str()
    first = count.read_text()
    assert first
    first_report = (project.path / "r.json").read_text()
    result = _run(project, "--seqgate-cache")
    result.assert_outcomes(passed=3, failed=1)
    assert count.read_text() == first  # no forward call the second time
    assert (project.path / "r.json").read_text() == first_report
    # The headline says nothing ran on the model this time (the JSON stays the same).
    assert_lines(result.stdout.str(), "*s (predictions from an earlier run's cache), gates*")
    # Workers reading the entry one of them wrote in this run are no earlier run.
    project.data(rule_records(100, missed={1: 7}))
    result = _run(project, "--seqgate-cache", "-n", "2")
    result.assert_outcomes(passed=3, failed=1)
    assert "earlier run's cache" not in result.stdout.str()
    result = _run(project, "--seqgate-cache", "-n", "2")
    assert_lines(result.stdout.str(), "*s (predictions from an earlier run's cache), gates*")
    # A changed eval set is a different key: inference runs again.
    project.data(rule_records(100, missed={1: 9}))
    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    assert len(count.read_text()) > len(first)


def test_cache_keys_hooked_data_by_its_bytes_and_keeps_no_hooked_model(counted):
    """A hook's spec ("registry://eval:latest") names no bytes a key could read: a
    data set it returns is keyed by its loaded tensors (a re-run reuses, a change
    evaluates again); a model it returns is not kept across runs, and a warning
    says why."""
    project, count = counted
    (project.path / "conftest.py").write_text(
        "import json\n"
        "import models\n"
        "def pytest_seqgate_load_dataset(spec, role, settings):\n"
        "    if spec.startswith('registry://'):\n"
        "        rows = [json.loads(line) for line in open('eval.jsonl')]\n"
        "        return [(r['tokens'], r['label']) for r in rows]\n"
        "def pytest_seqgate_load_model(spec, settings):\n"
        "    if spec.startswith('registry://'):\n"
        "        return models.counting()\n"
    )
    counting_ini(project, eval_data="registry://eval:latest")

    def passes() -> int:
        return [int(x) for x in count.read_text().split()].count(100)

    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    assert passes() == 1  # the second run reused the first one's predictions
    project.data(rule_records(100, missed={1: 9}))  # what the registry serves changed
    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    assert passes() == 2
    counting_ini(project, eval_data="registry://eval:latest", model="registry://model:latest")
    for _ in range(2):
        result = _run(project, "--seqgate-cache")
        result.assert_outcomes(passed=3, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*seqgate: --seqgate-cache does not keep the predictions of a model a loader "
                "hook returned*"
            ]
        )
    assert passes() == 4  # one pass each run


def test_workers_share_one_inference_without_the_cache_provider_and_leave_nothing(
    counted, monkeypatch
):
    # The run's shared predictions live in a folder of their own under the
    # temporary folder, removed at the end; pytest's cache keeps none of them.
    project, count = counted
    tmp = project.path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    for extra in ([], ["-p", "no:cacheprovider"]):
        count.unlink(missing_ok=True)
        _run(project, "-n", "2", *extra).assert_outcomes(passed=3, failed=1)
        assert [int(x) for x in count.read_text().split()].count(100) == 1
        assert not list(tmp.iterdir())
        assert not (project.path / ".pytest_cache" / "d" / "seqgate").exists()


def test_the_cache_option_without_the_cache_provider_says_nothing_is_kept(counted):
    """-p no:cacheprovider (the example's gate.sh runs with it) turns --seqgate-cache
    into a no-op: a warning says so, where it was silent."""
    project, count = counted
    for _ in range(2):
        result = _run(project, "-p", "no:cacheprovider", "--seqgate-cache")
        result.assert_outcomes(passed=3, failed=1)
        assert_lines(
            result.stdout.str(),
            "*seqgate: --seqgate-cache needs pytest's cache folder, which -p no:cacheprovider "
            "turned off: nothing is kept*",
        )
    assert [int(x) for x in count.read_text().split()].count(100) == 2  # both runs evaluated


def test_the_cache_option_says_a_conftest_built_model_is_not_kept(counted):
    """A cache key reads files: a conftest.py's model is evaluated on each run, and
    the option said nothing of it."""
    project, count = counted
    (project.path / "conftest.py").write_text(
        "import pytest\nfrom models import counting\n\n"
        "@pytest.fixture(scope='session')\ndef seqgate_model():\n    return counting()\n"
    )
    for _ in range(2):
        result = _run(project, "--seqgate-cache")
        result.assert_outcomes(passed=3, failed=1)
        assert_lines(
            result.stdout.str(),
            "*seqgate: --seqgate-cache keeps the predictions of the configured files only: a "
            "model or data set a conftest.py fixture built is evaluated again on each run*",
        )
        assert result.stdout.str().count("keeps the predictions of the configured") == 1
    assert [int(x) for x in count.read_text().split()].count(100) == 2  # both runs evaluated


def test_workers_that_each_evaluate_share_the_cores(project, monkeypatch):
    # A conftest-built model has no shared entry: each worker runs its own
    # inference, with torch's threads divided between the workers, and gets
    # them back afterwards.
    project.data(rule_records(60))
    project.ini(eval_data="eval.jsonl", labels=["ham", "spam"])
    threads = project.path / "threads.txt"
    monkeypatch.setenv("THREADS_FILE", str(threads))
    (project.path / "conftest.py").write_text(
        "import os, pytest, torch\n"
        "from models import FirstToken\n"
        "class Recording(FirstToken):\n"
        "    def forward(self, tokens):\n"
        "        with open(os.environ['THREADS_FILE'], 'a') as handle:\n"
        "            handle.write(f'{torch.get_num_threads()}\\n')\n"
        "        return super().forward(tokens)\n"
        "@pytest.fixture(scope='session')\n"
        "def seqgate_model():\n"
        "    return Recording(2)\n"
        "START = torch.get_num_threads()\n"
    )
    project.test("""
        import pytest, torch
        from conftest import START

        @pytest.mark.parametrize("i", range(4))
        def test_gate(i, seqgate):
            seqgate.check(min_accuracy=0.5)
            assert torch.get_num_threads() == START
    """)
    _run(project, "-n", "2", "-p", "no:randomly").assert_outcomes(passed=4)
    seen = {int(x) for x in threads.read_text().split()}
    import torch

    assert seen == {max(1, torch.get_num_threads() // 2)}


def test_a_streamed_eval_set_is_read_once_by_the_workers_and_cached(project, monkeypatch):
    # Streaming under xdist: one worker streams the files (the others read its
    # compact columns back, metadata for slices included, and the training set's
    # sample and leaks); --seqgate-cache makes an unchanged re-run skip both.
    records = rule_records(100, missed={1: 8})
    for i, record in enumerate(records):
        record["lang"] = ["en", "fr", {"variant": "de"}][i % 3]
    project.data(records)
    project.data([*rule_records(60, seed=3), records[4]], name="train.jsonl")
    counting_ini(project, streaming="true", slice_by="lang", train_data="train.jsonl")
    project.test(TESTS)
    count = project.path / "count.txt"
    monkeypatch.setenv("COUNT_FILE", str(count))
    _run(project, "-p", "no:xdist").assert_outcomes(passed=3, failed=1)
    reference = json.loads((project.path / "r.json").read_text())
    slices = {s["name"] for s in reference["evaluations"][0]["slices"]}
    assert {"lang=en", "lang=fr"} <= slices
    assert reference["evaluations"][0]["train_sample"]["train_size"] == 61
    assert "eval.jsonl:5" in json.dumps(reference["evaluations"][0]["findings"])  # the copy
    for args, passes in ((["-n", "2"], 1), (["--seqgate-cache"], 1), (["--seqgate-cache"], 0)):
        count.unlink(missing_ok=True)
        _run(project, "-p", "no:randomly", *args).assert_outcomes(passed=3, failed=1)
        calls = [int(x) for x in count.read_text().split()] if count.exists() else []
        assert (calls.count(100), calls.count(61)) == (passes, passes), args
        assert json.loads((project.path / "r.json").read_text()) == reference, args


def test_the_cache_keeps_the_most_recently_used_keys(tmp_path):
    import os

    import torch

    from pytest_seqgate.cache import KEEP_KEYS, PredictionCache

    def use(key: str, when: float) -> PredictionCache:
        cache = PredictionCache(tmp_path, key)
        cache.get_or_compute("eval", lambda: {"x": torch.tensor([1])})
        os.utime(tmp_path / f"{key}.lock", (when, when))  # a clock we control
        return cache

    for i in range(KEEP_KEYS):
        use(f"k{i}", 1000.0 + i)
    assert use("k0", 2000.0).hits == 1  # reading k0 again marks it as recent
    use("new", 3000.0)  # a miss: the least recently used key, k1, goes
    keys = sorted(p.stem for p in tmp_path.glob("*.lock"))
    assert keys == sorted(["new", "k0", *[f"k{i}" for i in range(2, KEEP_KEYS)]])
    assert not list(tmp_path.glob("k1-*")) and len(list(tmp_path.glob("*.pt"))) == KEEP_KEYS


def test_cache_key_covers_the_whole_project_package(tmp_path):
    """An import path's key reads every file of the project's package it names: a
    change to the model's layers or the tokenizer's vocabulary in a sibling file
    is a new key (the named module alone kept a stale one); bytecode is not."""
    from pytest_seqgate.cache import cache_key
    from pytest_seqgate.config import Settings

    package = tmp_path / "keyedpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("from keyedpkg.layers import build\n")
    (package / "layers.py").write_text("def build():\n    return None\n")
    (package / "vocab.txt").write_text("a b c\n")
    (tmp_path / "elsewhere.py").write_text("x = 1\n")
    settings = Settings.from_dict(tmp_path, model="keyedpkg.model:build", eval_data="e.jsonl")
    first = cache_key(settings)
    assert cache_key(settings) == first
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "layers.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "elsewhere.py").write_text("x = 2\n")
    assert cache_key(settings) == first
    keys = {first}
    for name, text in (("layers.py", "def build():\n    return 1\n"), ("vocab.txt", "a b\n")):
        (package / name).write_text(text)
        keys.add(cache_key(settings))
    assert len(keys) == 3


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
def test_another_model_reads_the_leakage_checks_of_the_same_data(project, monkeypatch, streamed):
    """The leakage checks (the training set hashed and searched; a streamed training
    set's pass) depend on the data alone: a re-run with another model, the usual
    pull request, reads them from --seqgate-cache instead of searching the training
    set again; a changed training set searches it again."""
    records = rule_records(100, missed={1: 8})
    project.data(records)
    project.data([*rule_records(60, seed=3), records[4]], name="train.jsonl")
    counting_ini(project, train_data="train.jsonl", **({"streaming": "true"} if streamed else {}))
    project.test(TESTS)
    monkeypatch.setenv("COUNT_FILE", str(project.path / "count.txt"))
    folder = project.path / ".pytest_cache" / "d" / "seqgate"
    part = "train_stream_leakage_0.9" if streamed else "leakage_0.9"
    _run(project, "--seqgate-cache").assert_outcomes(passed=3, failed=1)
    [kept] = folder.glob(f"*-{part}.pt")
    written = kept.stat().st_mtime_ns
    leaks = project.findings("leakage")
    assert "eval.jsonl:5" in json.dumps(leaks)
    other = ("--seqgate-cache", "--seqgate-model", "models:first_token")
    _run(project, *other).assert_outcomes(passed=3, failed=1)
    report = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert report["model"] == "models:first_token"
    assert list(folder.glob(f"*-{part}.pt")) == [kept]
    assert kept.stat().st_mtime_ns == written  # read, not computed again
    assert project.findings("leakage") == leaks
    project.data([*rule_records(60, seed=3), records[4], records[6]], name="train.jsonl")
    _run(project, *other).assert_outcomes(passed=3, failed=1)
    assert len(list(folder.glob(f"*-{part}.pt"))) == 2
    assert "eval.jsonl:7" in json.dumps(project.findings("leakage"))
