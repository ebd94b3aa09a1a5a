"""torchrun: two CPU ranks (gloo) give exactly the single-process report and verdict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from pytest_seqgate.distributed import shard

from conftest import assert_lines, rule_records

EXIT_HOOK = """
import os

def pytest_sessionfinish(session, exitstatus):
    with open(f"exit-{os.environ.get('RANK', 'single')}", "w") as handle:
        handle.write(str(int(exitstatus)))
"""


def torchrun(project, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in the project under torchrun, two CPU ranks on this machine."""
    return subprocess.run(
        ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "pytest", *args],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_shards_cover_every_sample_once() -> None:
    for n in (0, 1, 7, 1001):
        for size in (1, 2, 3, 8):
            covered = [i for r in range(size) for i in range(*shard(n, r, size))]
            assert covered == list(range(n))


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
@pytest.mark.parametrize(("threshold", "code"), [(0.0, 0), (0.999, 1)], ids=["pass", "fail"])
def test_torchrun_two_ranks_equal_single_process(project, threshold, code):
    project.data(rule_records(1001, missed={1: 60}))
    project.data(rule_records(400, seed=3), name="train.jsonl")
    (project.path / "conftest.py").write_text(EXIT_HOOK)
    project.ini(
        model="models:build_gru",
        eval_data="eval.jsonl",
        train_data="train.jsonl",
        labels=["ham", "spam"],
        report="r.json",
        batch_size="50",
    )
    project.test(f"""
        import pytest

        @pytest.mark.seqgate(min_accuracy={threshold}, fail_on_paradox=False,
                             fail_on_padding_sensitivity=False)
        def test_gate():
            pass
    """)
    single = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == code, single.stdout
    reference = json.loads((project.path / "r.json").read_text())
    (project.path / "r.json").unlink()
    launched = torchrun(project, "-p", "no:cacheprovider")
    assert (project.path / "exit-0").read_text() == str(code), launched.stdout
    assert (project.path / "exit-1").read_text() == str(code), launched.stdout
    assert json.loads((project.path / "r.json").read_text()) == reference
    assert reference["evaluations"][0]["n_samples"] == 1001


def test_more_ranks_than_gpus_take_the_gpus_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pytest_seqgate.distributed import local_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "3")
    devices = []
    for rank in range(3):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        devices.append(local_device())
    assert devices == ["cuda:0", "cuda:1", "cuda:0"]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert local_device() is None


def test_gathers_run_on_gloo_beside_a_users_nccl_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from pytest_seqgate import distributed

    made: list[str] = []
    monkeypatch.setattr(distributed, "_gather_group_made", None)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(dist, "new_group", lambda backend: made.append(backend) or "gloo-group")
    assert distributed._gather_group() == "gloo-group"
    assert distributed._gather_group() == "gloo-group"
    assert made == ["gloo"]  # made once, with gloo
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(distributed, "_gather_group_made", None)
    assert distributed._gather_group() is None  # the default group already is gloo


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_a_rank_whose_shard_raises_fails_every_rank_with_its_message(project):
    """A model that raised on rank 1's shard alone left rank 0 waiting in the gather:
    torchrun killed it (or gloo raised "Connection closed by peer" there, with a
    page of traceback), and rank 0, the one that writes the reports, wrote none.
    Every rank now fails with rank 1's message, and the report says why. The
    cache, which a rank waiting in the gather would hold locked, is not used, and
    a warning says so where it is asked for."""
    records = rule_records(60)
    records[50]["tokens"] = [999, 5, 6]  # in rank 1's half, samples 30 to 59
    project.data(records)
    (project.path / "conftest.py").write_text(EXIT_HOOK)
    (project.path / "picky.py").write_text(
        "from models import FirstToken\n\n"
        "class Picky(FirstToken):\n"
        "    def forward(self, tokens):\n"
        "        if bool((tokens == 999).any()):\n"
        "            raise ValueError('token 999 is out of my vocabulary')\n"
        "        return super().forward(tokens)\n\n"
        "def build():\n"
        "    return Picky(2)\n"
    )
    project.ini(
        model="picky:build", eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json"
    )
    project.gated("min_accuracy=0.5, fail_on_padding_sensitivity=False")
    launched = torchrun(project, "--seqgate-cache")
    assert (project.path / "exit-0").read_text() == "1", launched.stdout
    assert (project.path / "exit-1").read_text() == "1", launched.stdout
    assert "Connection closed by peer" not in launched.stdout
    message = "token 999 is out of my vocabulary (raised at picky.py:6)"
    [error] = json.loads((project.path / "r.json").read_text())["errors"]
    assert error.startswith(
        "seqgate_evaluation: on rank 1 of 2: the model's forward raised ValueError"
    )
    assert error.endswith(message)
    assert launched.stdout.count("--seqgate-cache keeps nothing under torchrun") == 2
    # Rank 1 gives its own error as it is.
    assert_lines(launched.stdout, f"seqgate: the model's forward raised ValueError on *: {message}")
