"""The HTML report in a real browser: headless Chromium renders it (skipped when absent)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import rule_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: chromium)")
def test_html_report_renders_in_chromium(project, tmp_path):
    project.data(rule_records(120, classes=3, names=("ham", "spam", "phish"), missed={2: 9}))
    project.ini(
        model="models:first_token3",
        eval_data="eval.jsonl",
        labels=["ham", "spam", "phish"],
        report="r.html",
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_recall={"phish": 0.9})
        def test_gate():
            pass
    """)
    project.run()
    page = project.path / "r.html"
    profile = tmp_path / "profile"
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for name in ("ham", "spam", "phish"):
        assert name in dom
    assert dom.count("<svg") == 2 and "<polyline" in dom and "Confusion matrix" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
