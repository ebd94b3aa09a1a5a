"""Determinism, interrupts and report-file safety, through real pytest runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import assert_lines, rule_records


def test_two_runs_give_byte_identical_json(project):
    project.data(rule_records(300, missed={1: 20}))
    project.data(rule_records(600, seed=1), name="train.jsonl")
    project.ini(
        model="models:build_gru",
        eval_data="eval.jsonl",
        train_data="train.jsonl",
        labels=["ham", "spam"],
        report="r.json",
        train_sample="200",
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.0, fail_on_paradox=False,
                             fail_on_padding_sensitivity=False)
        def test_runs():
            pass
    """)
    project.run().assert_outcomes(passed=1)
    first = (project.path / "r.json").read_bytes()
    project.run().assert_outcomes(passed=1)
    assert (project.path / "r.json").read_bytes() == first
    assert b'"train_sampled": 200' in first and b'"resamples": 1000' in first


SLOW_MODEL = """
import os, time, torch
from models import FirstToken

class Slow(FirstToken):
    def forward(self, tokens):
        open(os.environ["STARTED"], "w").close()
        time.sleep(30)
        return super().forward(tokens)

def build():
    return Slow(2)
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_during_inference_keeps_the_old_report(project):
    project.data(rule_records(50))
    (project.path / "slow.py").write_text(SLOW_MODEL)
    project.ini(model="slow:build", eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json")
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.5)
        def test_gate():
            pass
    """)
    old = b'{"schema": "seqgate-report/1", "evaluations": []}\n'
    (project.path / "r.json").write_bytes(old)
    started = project.path / "started"
    env = {**os.environ, "STARTED": str(started)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=project.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # A child inherits an ignored SIGINT, and Python then raises no
        # KeyboardInterrupt: a test process that ignores it (as one xdist worker
        # did after a full run on torch 2.6) must not pass that on.
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "inference never started"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out.decode()
    assert b"KeyboardInterrupt" in out
    assert (project.path / "r.json").read_bytes() == old
    assert not [p for p in project.path.iterdir() if p.name.endswith(".tmp")]


def test_report_folder_is_created_and_unwritable_path_is_usage_error(project):
    project.data(rule_records(20))
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.5, fail_on_paradox=False)
        def test_gate():
            pass
    """)
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report="deep/er/r.md",
    )
    project.run().assert_outcomes(passed=1)
    assert (project.path / "deep/er/r.md").read_text().startswith("# seqgate report")
    (project.path / "taken").write_text("a file where a folder should be")
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        report="taken/r.json",
    )
    result = project.run()
    assert result.ret == 4
    assert_lines(
        result.stderr.str(),
        "ERROR: seqgate: seqgate_report in pytest.ini: cannot write */taken/r.json: "
        "*/taken is a file, not a folder; choose another path",
    )
