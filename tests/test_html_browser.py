"""The HTML report in a real browser: headless Chromium renders it (skipped when absent)."""

from __future__ import annotations

import re
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


def three_classes_to_html(project) -> None:
    """Three classes, the third missed nine times in 40, reported to r.html."""
    project.data(rule_records(120, classes=3, names=("ham", "spam", "phish"), missed={2: 9}))
    project.ini(
        model="models:first_token3",
        eval_data="eval.jsonl",
        labels=["ham", "spam", "phish"],
        report="r.html",
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: chromium)")
def test_html_report_renders_in_chromium(project, tmp_path):
    three_classes_to_html(project)
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


# A page that loads the report in a frame of a set width and writes, on its own
# body, the right edge of each of the report's tables and of the report's body.
MEASURE = """<html><body style="margin:0">
<iframe id="f" src="{src}" style="width:{width}px;height:800px;border:0"></iframe>
<script>
document.getElementById("f").onload = function () {{
  var doc = this.contentDocument, edges = [];
  doc.querySelectorAll("table").forEach(function (t) {{
    edges.push(Math.round(t.getBoundingClientRect().right));
  }});
  document.body.setAttribute("data-edges", edges.join(" "));
  document.body.setAttribute("data-body", Math.round(doc.body.getBoundingClientRect().right));
}};
</script></body></html>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: chromium)")
def test_html_report_tables_stay_within_the_page(project, tmp_path):
    """The gate table of a failed run (a long reason, a test id, seven columns) fits
    the page's width instead of running off its right edge, cutting the reasons."""
    three_classes_to_html(project)
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_recall={"phish": 0.9, "spam": 0.5}, min_macro_f1=0.95,
                             max_train_test_gap=0.05, min_precision={"ham": 0.5})
        def test_a_gate_with_a_long_name_as_real_projects_have_them():
            pass
    """)
    project.run()
    measure = tmp_path / "measure.html"
    measure.write_text(MEASURE.format(src=(project.path / "r.html").as_uri(), width=1150))
    dom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            "--dump-dom",
            measure.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    edges = [int(x) for x in re.search(r'data-edges="([^"]*)"', dom).group(1).split()]
    body = int(re.search(r'data-body="(\d+)"', dom).group(1))
    assert len(edges) >= 4 and max(edges) <= body, (edges, body)
