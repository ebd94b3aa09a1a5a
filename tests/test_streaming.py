"""Streaming evaluation: the same report as in memory, in bounded windows."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_seqgate import minhash
from pytest_seqgate.config import Settings
from pytest_seqgate.evaluation import evaluate
from pytest_seqgate.exceptions import ConfigError
from pytest_seqgate.gates import NO_SCORES, check, parse_gates
from pytest_seqgate.loading import load_dataset, stream_records, stream_table
from pytest_seqgate.report import render_json

from conftest import assert_lines, rule_records

TESTS = """
import pytest

@pytest.mark.seqgate(min_recall={"spam": 0.5}, fail_on_padding_sensitivity=False)
def test_gate():
    pass
"""


def gated_project(project, eval_data: str) -> None:
    """The first-token model gated on ``eval_data`` by TESTS, the report in r.json,
    batches of 4 (a 1,001-record set spans many streamed chunks)."""
    project.ini(
        model="models:first_token",
        eval_data=eval_data,
        labels=["ham", "spam"],
        report="r.json",
        batch_size="4",
    )
    project.test(TESTS)


def test_a_streamed_parquet_file_reports_as_in_memory_and_names_rows(project):
    """A .parquet eval set (or a pattern of shards, an .arrow file, a save_to_disk
    folder) streams a batch of rows at a time: the report equals the one read whole
    (records named by row, ``eval.parquet[57]``, in both), and a bad row in a later
    chunk is named by its row in the file, not in the chunk."""
    pytest.importorskip("pyarrow")
    records = rule_records(1001, missed={1: 70})
    project.python(
        f"""
        import json, os
        import pyarrow as pa, pyarrow.parquet as pq
        records = {records!r}
        columns = {{k: [r[k] for r in records] for k in records[0]}}
        pq.write_table(pa.table(columns), "eval.parquet", row_group_size=300)
        for k, (start, stop) in enumerate([(0, 400), (400, 401), (401, 1001)]):
            shard = {{key: value[start:stop] for key, value in columns.items()}}
            pq.write_table(pa.table(shard), f"shard-{{k}}.parquet", row_group_size=300)
        # An Arrow file (the IPC file format), and a save_to_disk folder of two
        # Arrow streams, as a datasets cache and save_to_disk keep them.
        table = pa.table(columns)
        with pa.OSFile("eval.arrow", "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=250)
        os.mkdir("saved_set")
        files = []
        for k, (start, stop) in enumerate([(0, 600), (600, 1001)]):
            files.append({{"filename": f"data-0000{{k}}-of-00002.arrow"}})
            with pa.OSFile(os.path.join("saved_set", files[-1]["filename"]), "wb") as sink:
                with pa.ipc.new_stream(sink, table.schema) as w:
                    w.write_table(table.slice(start, stop - start))
        with open(os.path.join("saved_set", "state.json"), "w") as f:
            json.dump({{"_data_files": files}}, f)
        with open(os.path.join("saved_set", "dataset_info.json"), "w") as f:
            json.dump({{"features": {{}}}}, f)
        columns["tokens"][700] = [-3]
        pq.write_table(pa.table(columns), "bad.parquet", row_group_size=300)
        """
    )
    gated_project(project, "eval.parquet")
    project.run().assert_outcomes(passed=1)
    in_memory = json.loads((project.path / "r.json").read_text())
    project.run("--seqgate-streaming").assert_outcomes(passed=1)
    assert json.loads((project.path / "r.json").read_text()) == in_memory
    # The same rows in three shards, named by a pattern: streamed across the files'
    # ends (one of a single row), the same report but for the set's name.
    project.run("--seqgate-streaming", "--seqgate-eval-data=shard-*.parquet").assert_outcomes(
        passed=1
    )
    text = (project.path / "r.json").read_text().replace("shard-*.parquet", "eval.parquet")
    assert json.loads(text) == in_memory
    # The same rows in an Arrow file, and in a save_to_disk folder's two files:
    # streamed in batches of the memory-mapped table, the same report again.
    for spec in ("eval.arrow", "saved_set"):
        result = project.run("--seqgate-streaming", f"--seqgate-eval-data={spec}")
        result.assert_outcomes(passed=1)
        text = (project.path / "r.json").read_text().replace(spec, "eval.parquet")
        assert json.loads(text) == in_memory, spec
    failed = project.run("--seqgate-streaming", "--seqgate-gates=recall[spam] >= 0.9")
    assert failed.ret == 1
    assert_lines(failed.stdout.str(), "  eval.parquet[*]  predicted ham, P(spam) *")
    result = project.run("--seqgate-streaming", "--seqgate-eval-data=bad.parquet")
    assert "bad.parquet[700]: this sequence (offset" in result.stdout.str() + result.stderr.str()


def test_jsonl_shards_report_as_the_whole_file_and_name_records_by_shard(project):
    """``--seqgate-eval-data=part-*.jsonl``, in memory and streamed: the report of
    the one file the shards were cut from, but that every record is named by its
    shard and its line there (a failed gate's examples, the findings), across
    the shards' ends, one of a single line among them."""
    records = rule_records(1001, missed={1: 70})[::-1]  # the missed ones in the last shard
    lines = [json.dumps(r) + "\n" for r in records]
    (project.path / "eval.jsonl").write_text("".join(lines))
    cuts = [(0, 400), (400, 401), (401, 1001)]
    for k, (start, stop) in enumerate(cuts):
        for suffix in ("jsonl", "json"):  # JSON lines under a .json name, as Spark writes
            (project.path / f"part-{k}.{suffix}").write_text("".join(lines[start:stop]))
    gated_project(project, "eval.jsonl")
    failing = "--seqgate-gates=recall[spam] >= 0.9"
    project.run(failing).assert_outcomes(passed=1, failed=1)
    whole = json.loads((project.path / "r.json").read_text())
    assert "eval.jsonl:" in json.dumps(whole["evaluations"][0]["gates"])  # examples are named

    def as_whole(match: re.Match[str]) -> str:
        return f"eval.jsonl:{cuts[int(match[1])][0] + int(match[2])}"

    for suffix in ("jsonl", "json"):
        for mode in ("--seqgate-no-streaming", "--seqgate-streaming"):
            result = project.run(mode, failing, f"--seqgate-eval-data=part-*.{suffix}")
            result.assert_outcomes(passed=1, failed=1)
            assert_lines(result.stdout.str(), f"  part-2.{suffix}:*  predicted ham, P(spam) *")
            text = (project.path / "r.json").read_text()
            assert "eval.jsonl" not in text
            text = re.sub(
                rf"part-(\d)\.{suffix}:(\d+)",
                as_whole,
                text.replace(f"part-*.{suffix}", "eval.jsonl"),
            )
            assert json.loads(text) == whole, (suffix, mode)


def test_a_streamed_json_array_reports_as_in_memory_and_names_records_by_index(project):
    """A .json eval set that is one JSON array (``json.dump(records, f)``) was
    refused under streaming ("write one record a line"); it now streams an element
    at a time: the report of the file read whole, records named by index
    (``eval.json[57]``) in both, gzipped too; a bad record in a later chunk and
    bad JSON deep in the file are named as the whole file's read names them."""
    records = rule_records(1001, missed={1: 70})
    text = json.dumps(records, indent=1)
    (project.path / "eval.json").write_text(text)
    (project.path / "eval.json.gz").write_bytes(gzip.compress(json.dumps(records).encode()))
    bad = [dict(r) for r in records]
    bad[700]["tokens"] = [-3]
    (project.path / "bad.json").write_text(json.dumps(bad, indent=1))
    # A comma after record 900's label: bad JSON at the '}' that follows.
    at = [m.start() for m in re.finditer('"ham"', text)][450]
    broken = text[:at] + '"ham",' + text[at + 5 :]
    (project.path / "broken.json").write_text(broken)
    fault = broken.index("}", at)
    line, column = broken.count("\n", 0, fault) + 1, fault - broken.rindex("\n", 0, fault)
    gated_project(project, "eval.json")
    failing = "--seqgate-gates=recall[spam] >= 0.9"
    project.run(failing).assert_outcomes(passed=1, failed=1)
    in_memory = json.loads((project.path / "r.json").read_text())
    for data in ("eval.json", "eval.json.gz"):
        result = project.run("--seqgate-streaming", failing, f"--seqgate-eval-data={data}")
        result.assert_outcomes(passed=1, failed=1)
        text = (project.path / "r.json").read_text().replace(data, "eval.json")
        assert json.loads(text) == in_memory, data
        assert_lines(result.stdout.str(), f"  {data}[*]  predicted ham, P(spam) *")
    for data, said in (
        ("bad.json", "bad.json[700]: this sequence (offset"),
        ("broken.json", f"broken.json:{line}:{column}: invalid JSON: Expecting property name"),
    ):
        whole = project.run(f"--seqgate-eval-data={data}")
        streamed = project.run("--seqgate-streaming", f"--seqgate-eval-data={data}")
        for result in (whole, streamed):
            assert said in result.stdout.str() + result.stderr.str(), data


def test_a_streamed_csv_reports_as_in_memory(project):
    """A .csv eval set (and .tsv shards) streams a window at a time: the report of
    the file read whole, records named by the line they start on, a quoted field
    with a line break among them, and a bad row in a later chunk named by its line."""
    records = rule_records(1001, missed={1: 70})[::-1]
    notes = ["x"] * len(records)
    notes[600] = '"two\nlines"'
    rows = [
        f"{' '.join(map(str, r['tokens']))},{r['label']},{note}\n"
        for r, note in zip(records, notes, strict=True)
    ]
    (project.path / "eval.csv").write_text("tokens,label,note\n" + "".join(rows))
    bad = rows[:]
    bad[800] = "1 x,spam,x\n"
    (project.path / "bad.csv").write_text("tokens,label,note\n" + "".join(bad))
    for k, (start, stop) in enumerate([(0, 500), (500, 1001)]):
        tsv = "".join(row.replace(",", "\t") for row in rows[start:stop])
        (project.path / f"part-{k}.tsv").write_text("tokens\tlabel\tnote\n" + tsv)
    gated_project(project, "eval.csv")
    failing = "--seqgate-gates=recall[spam] >= 0.9"
    for data in ("eval.csv", "part-*.tsv"):
        project.run(failing, f"--seqgate-eval-data={data}").assert_outcomes(passed=1, failed=1)
        in_memory = json.loads((project.path / "r.json").read_text())
        result = project.run("--seqgate-streaming", failing, f"--seqgate-eval-data={data}")
        result.assert_outcomes(passed=1, failed=1)
        assert json.loads((project.path / "r.json").read_text()) == in_memory, data
    # The line after the two-line record (record 601 starts on line 603).
    assert_lines(result.stdout.str(), "  part-1.tsv:*  predicted ham, P(spam) *")
    result = project.run("--seqgate-streaming", "--seqgate-eval-data=bad.csv")
    assert "bad.csv:803: 'tokens' (and 'attention_mask', 'token_type_ids') must be" in (
        result.stdout.str() + result.stderr.str()
    )


@pytest.mark.parametrize("train", [False, True], ids=["eval-only", "with-train"])
def test_streaming_report_equals_in_memory(project, train):
    project.data(rule_records(1001, missed={1: 70}))
    options = {
        "model": "models:first_token",
        "eval_data": "eval.jsonl",
        "labels": ["ham", "spam"],
        "report": "r.json",
        "batch_size": "4",
    }
    if train:
        project.data(rule_records(300, seed=4), name="train.jsonl")
        # A sample of the training set: the streamed one draws the same records.
        options.update(train_data="train.jsonl", near_duplicate_threshold="0", train_sample="100")
    project.ini(**options)
    project.test(TESTS)
    project.run().assert_outcomes(passed=1)
    in_memory = json.loads((project.path / "r.json").read_text())
    project.run("--seqgate-streaming").assert_outcomes(passed=1)
    assert json.loads((project.path / "r.json").read_text()) == in_memory
    # The same set gzipped, streamed: the same report but for the file's name.
    gzipped = project.path / "eval.jsonl.gz"
    gzipped.write_bytes(gzip.compress((project.path / "eval.jsonl").read_bytes()))
    project.run("--seqgate-streaming", "--seqgate-eval-data=eval.jsonl.gz").assert_outcomes(
        passed=1
    )
    text = (project.path / "r.json").read_text().replace("eval.jsonl.gz", "eval.jsonl")
    assert json.loads(text) == in_memory


def test_a_set_that_cannot_be_streamed_is_a_usage_error(project):
    """A .pt (or import-path) eval set, or one without seqgate_labels, with
    streaming on failed every test at its setup (untested); it is known from the
    settings alone, so the run stops at collection with one line, exit 4. A .json
    array in a pattern of shards (read as JSON lines), known only once read, is named
    with what to do."""
    records = rule_records(40)
    project.data(records)
    project.python(
        f"""
        import torch
        records = {records!r}
        sequences = [torch.tensor(r["tokens"]) for r in records]
        torch.save({{"sequences": sequences, "labels": [r["label"] for r in records]}}, "eval.pt")
        """
    )
    (project.path / "eval-0.json").write_text(json.dumps(records, indent=1))
    project.ini(model="models:first_token", eval_data="eval.pt", labels=["ham", "spam"])
    project.test(TESTS)
    result = project.run("--seqgate-streaming")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.str().splitlines() if "seqgate" in line]
    assert errors == [
        "ERROR: seqgate: --seqgate-streaming: streaming reads a .jsonl, .json, .csv or .tsv "
        "(gzipped too), .parquet or .arrow eval set (or a save_to_disk folder) a "
        "window at a time, but seqgate_eval_data in pytest.ini is 'eval.pt'; convert it to "
        ".jsonl or .parquet, or evaluate it in memory (--seqgate-no-streaming for one run)"
    ]
    for streaming in ("--seqgate-streaming", "--seqgate-no-streaming"):
        result = project.run(streaming, "--seqgate-eval-data=eval-*.json")
        said = "eval-0.json: holds a JSON array; a pattern of .json files reads JSON lines "
        assert said in result.stdout.str() + result.stderr.str(), streaming
    project.run("--seqgate-eval-data=eval-0.json").assert_outcomes(passed=1)  # read whole
    project.run().assert_outcomes(passed=1)  # in memory, the same set is fine
    for spec, said in (
        ("models:records", "but eval_data is 'models:records'"),
        ("eval.jsonl", "class names must be known before it is: set seqgate_labels"),
    ):
        with pytest.raises(ConfigError, match=said):
            Settings.from_dict(project.path, streaming=True, eval_data=spec)
    # A conftest.py's eval set clears eval_data and is evaluated in memory: no error.
    Settings(streaming=True, eval_data=None)
    # No eval set at all: each gated test's setup says which setting to give.
    project.ini(model="models:first_token", labels=["ham", "spam"], streaming="true")
    result = project.run()
    result.assert_outcomes(errors=1)
    assert (
        "seqgate: seqgate_streaming in pytest.ini: no eval set to stream: set seqgate_eval_data "
        "to a .jsonl, .json, .csv, .tsv, .parquet or .arrow file"
    ) in result.stdout.str()


def test_stream_chunks_cover_the_file(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rule_records(103)))
    chunks = list(stream_records(path, ("ham", "spam"), None, "e.jsonl", 25))
    assert [len(c) for c in chunks] == [25, 25, 25, 25, 3]
    assert int(chunks[-1].line_numbers[-1]) == 103
    # The same records as a .parquet file, a batch of rows at a time: the same
    # chunks, named by row in the file (records 50 and 102: rows 50 and 102).
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    records = rule_records(103)
    pq.write_table(
        pa.table({k: [r[k] for r in records] for k in records[0]}), tmp_path / "e.parquet"
    )
    rows = list(stream_table(tmp_path / "e.parquet", ("ham", "spam"), None, "e.parquet", 25))
    assert [len(c) for c in rows] == [25, 25, 25, 25, 3]
    for chunk, same in zip(chunks, rows, strict=True):
        assert torch.equal(chunk.values, same.values)
        assert torch.equal(chunk.labels, same.labels)
    assert rows[2].record(0) == "e.parquet[50]" and rows[-1].record(2) == "e.parquet[102]"
    assert rows[0].record(3) == "e.parquet[3]"
    # seqgate_columns applies to each streamed record as to the file read whole.
    renamed = tmp_path / "r.jsonl"
    renamed.write_text(
        "".join(
            json.dumps({"ids": r["tokens"], "category": r["label"]}) + "\n"
            for r in rule_records(103)
        )
    )
    column_of = {"tokens": "ids", "label": "category"}
    again = list(stream_records(renamed, ("ham", "spam"), None, "r.jsonl", 25, column_of))
    for chunk, same in zip(chunks, again, strict=True):
        assert torch.equal(chunk.values, same.values)
        assert torch.equal(chunk.labels, same.labels)


def eval_file(tmp_path, records: list[dict]) -> None:
    """``e.jsonl`` in ``tmp_path``: the eval set the settings below name."""
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def memory_and_streamed(tmp_path, batch_size: int, **streamed: object) -> tuple[Settings, Settings]:
    """Settings that read e.jsonl whole, and settings that stream it (plus ``streamed``)."""
    common = {"eval_data": "e.jsonl", "labels": "ham,spam", "batch_size": batch_size}
    return (
        Settings.from_dict(tmp_path, **common),
        Settings.from_dict(tmp_path, **common, streaming=True, **streamed),
    )


def model_class(tmp_path, monkeypatch, module: str, source: str) -> type:
    """Class ``M`` of a module written to ``tmp_path``: streaming settings name
    files, so the model lives in an importable module like a user's."""
    import importlib

    (tmp_path / f"{module}.py").write_text("import torch\nfrom torch import nn\n" + source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(module).M


def first_token_model(tmp_path, monkeypatch, module: str) -> type:
    """:func:`model_class` of the rule the records follow: the first token's parity."""
    return model_class(
        tmp_path,
        monkeypatch,
        module,
        "class M(nn.Module):\n"
        "    def forward(self, tokens):\n"
        "        return torch.nn.functional.one_hot(tokens[:, 0] % 2, 2).float()\n",
    )


def test_streaming_without_scores_keeps_count_metrics(tmp_path, monkeypatch):
    eval_file(tmp_path, rule_records(300, missed={0: 9}))
    M = first_token_model(tmp_path, monkeypatch, "rule")

    full, lean = memory_and_streamed(tmp_path, 8, keep_scores=False)
    a = evaluate(M(), load_dataset(full, "eval_data"), full)
    b = evaluate(M(), None, lean)
    assert torch.equal(a.metrics.confusion_matrix, b.metrics.confusion_matrix)
    assert b.ranking is None and b.predictions.scores.shape == (300, 0)
    # Not computed is null, under the same keys as a run that kept the scores.
    metrics = json.loads(render_json([b]))["evaluations"][0]["metrics"]
    assert metrics["macro_roc_auc"] is None and metrics["ece"] is None
    assert all(c["average_precision"] is None for c in metrics["per_class"].values())
    # The same option in memory: counts only, no ranking, calibration or padding check.
    c = evaluate(M(), load_dataset(full, "eval_data"), dataclasses.replace(full, keep_scores=False))
    assert torch.equal(a.metrics.confusion_matrix, c.metrics.confusion_matrix)
    assert c.ranking is None and c.predictions.scores.shape == (300, 0)
    assert render_json([c]) == render_json([b]).replace(b.eval_data, c.eval_data)
    # A gate on what the scores give fails and says why (a trade-off gate crashed).
    gates = {"min_roc_auc": 0.5, "max_ece": 0.2, "min_recall_at_precision": {"ham": (0.5, 0.9)}}
    for ev in (b, c):
        results = check(ev, parse_gates(gates, ev.labels, {}), "t")
        assert {r.label for r in results if not r.passed} >= {
            "roc_auc[ham]",
            "roc_auc[spam]",
            "ece",
            "recall_at_precision[ham]",
        }
        assert all(r.reason == NO_SCORES for r in results if r.metric != "accuracy_paradox")


def test_a_streamed_slice_key_is_read_from_every_chunk_and_a_missing_one_named(
    tmp_path, monkeypatch
):
    """A key only the later records carry slices as in memory; a key no record has is
    the in-memory run's error (it was a silent slice of the whole set, `lnag=null`)."""
    records = rule_records(300)
    for i, record in enumerate(records[200:]):
        record["lang"] = ["en", "fr"][i % 2]
    eval_file(tmp_path, records)
    M = first_token_model(tmp_path, monkeypatch, "rule_lang")
    full, streamed = memory_and_streamed(tmp_path, 2, slice_by=("lang",))
    full = dataclasses.replace(full, slice_by=("lang",))
    a = evaluate(M(), load_dataset(full, "eval_data"), full)
    b = evaluate(M(), None, streamed)
    named = {s.name: s.n for s in b.slices if s.group == "lang"}
    assert named == {"lang=null": 200, "lang=en": 50, "lang=fr": 50}
    assert named == {s.name: s.n for s in a.slices if s.group == "lang"}
    with pytest.raises(ConfigError, match=r"no key 'lnag' \(did you mean `lang`\?\); its extra"):
        evaluate(M(), None, dataclasses.replace(streamed, slice_by=("lnag",)))


def test_streaming_padding_check_samples_padded_sequences_per_chunk(tmp_path, monkeypatch):
    """A model that averages the padding in is caught when streamed too: each chunk's
    share of the sample is drawn among the sequences that chunk's pass padded."""
    eval_file(tmp_path, rule_records(1000, seed=3))
    M = model_class(
        tmp_path,
        monkeypatch,
        "meanpad",
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.bag = nn.EmbeddingBag(60, 8, mode='mean')\n"
        "        self.head = nn.Linear(8, 2)\n"
        "    def forward(self, tokens):\n"
        "        return self.head(self.bag(tokens))\n",
    )

    # batch 4: chunks of 256 records, four of them; 40 sampled, 10 from each.
    settings = Settings.from_dict(
        tmp_path,
        eval_data="e.jsonl",
        labels="ham,spam",
        batch_size=4,
        streaming=True,
        padding_check=40,
    )
    ev = evaluate(M(), None, settings)
    [finding] = ev.findings_of("padding_sensitivity")
    assert finding.data["sampled"] == 40 and finding.data["count"] > 30
    # Without the per-sample scores (streamed or in memory) the check still runs:
    # it keeps the sample's own, and finds what it finds with them.
    lean = dataclasses.replace(settings, keep_scores=False)
    [same] = evaluate(M(), None, lean).findings_of("padding_sensitivity")
    assert same.data == finding.data
    memory = dataclasses.replace(settings, streaming=False)
    data = load_dataset(memory, "eval_data")
    [whole] = evaluate(M(), data, memory).findings_of("padding_sensitivity")
    lean = dataclasses.replace(memory, keep_scores=False)
    [same] = evaluate(M(), data, lean).findings_of("padding_sensitivity")
    assert same.data == whole.data


def test_a_sigmoid_model_streamed_reads_like_in_memory(tmp_path, monkeypatch):
    """A model that returns sigmoid probabilities is read as such in every chunk
    (the first one decides), and the streamed report equals the in-memory one."""
    eval_file(tmp_path, rule_records(600, missed={1: 40}))
    M = model_class(
        tmp_path,
        monkeypatch,
        "sigmoid",
        "class M(nn.Module):\n"
        "    def forward(self, tokens):\n"
        "        return torch.sigmoid((tokens[:, :1] % 2).float() * 6 - 3)\n",
    )
    memory, streamed = memory_and_streamed(tmp_path, 4)
    a = evaluate(M(), load_dataset(memory, "eval_data"), memory)
    b = evaluate(M(), None, streamed)
    assert a.predictions.outputs == b.predictions.outputs == "probabilities"
    assert torch.equal(a.metrics.confusion_matrix, b.metrics.confusion_matrix)
    assert a.metrics.value("accuracy") == pytest.approx(1 - 40 / 600)
    assert torch.allclose(a.predictions.scores, b.predictions.scores)
    assert [f.kind for f in b.findings_of("outputs")] == ["outputs"]


def train_file(tmp_path, fmt: str, train: list[dict]) -> str:
    """``train`` as a training set in ``fmt`` (jsonl, parquet in row groups of 50,
    csv, or two shards of jsonl); its name in the settings."""
    lines = [json.dumps(r) + "\n" for r in train]
    name = {"shards": "t-*.jsonl"}.get(fmt, f"t.{fmt}")
    if fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        columns = {k: [r[k] for r in train] for k in train[0]}
        pq.write_table(pa.table(columns), tmp_path / name, row_group_size=50)
    elif fmt == "csv":
        rows = "".join(f"{' '.join(map(str, r['tokens']))},{r['label']}\n" for r in train)
        (tmp_path / name).write_text("tokens,label\n" + rows)
    elif fmt == "shards":
        (tmp_path / "t-0.jsonl").write_text("".join(lines[:500]))
        (tmp_path / "t-1.jsonl").write_text("".join(lines[500:]))
    else:
        (tmp_path / name).write_text("".join(lines))
    return name


def leak_settings(tmp_path, train: str, **more: object) -> Settings:
    """e.jsonl read whole beside the training set ``train``, near copies at 0.9."""
    return Settings.from_dict(
        tmp_path,
        eval_data="e.jsonl",
        train_data=train,
        labels="ham,spam",
        batch_size=8,
        near_duplicate_threshold=0.9,
        **more,
    )


def _copies(eval_records: list[dict], train: list[dict]) -> None:
    """An exact copy of eval record 5 at train line 101, and a near copy (one token
    of forty changed: 2-gram Jaccard 38/40) of eval record 7 at train line 701."""
    long = [3, *range(1, 40)]
    eval_records[7] = {"tokens": long, "label": "spam"}
    train[100] = dict(eval_records[5])
    train[700] = {"tokens": [*long[:-1], 48], "label": "spam"}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "shards"])
def test_a_streamed_training_set_gives_the_gap_and_leaks_read_whole_gives(
    tmp_path, monkeypatch, fmt
):
    """A training set under seqgate_streaming was read whole (its peak memory the
    in-memory one): it is read a window at a time now. The gap's sample is the one
    read whole draws (records counted first, the same seeded indices), exact and
    near copies of eval sequences are the ones one search over the whole set finds,
    named by their records in the file, and no window holds more than its size."""
    from pytest_seqgate import streaming

    eval_records = rule_records(120, seed=1)
    train = rule_records(900, missed={1: 150}, seed=2)
    _copies(eval_records, train)
    eval_file(tmp_path, eval_records)
    name = train_file(tmp_path, fmt, train)
    # The name of its record 700 (the near copy) in messages.
    near = {
        "jsonl": "t.jsonl:701",
        "parquet": "t.parquet[700]",
        "csv": "t.csv:702",
        "shards": "t-1.jsonl:201",
    }[fmt]
    M = first_token_model(tmp_path, monkeypatch, f"first_{fmt}")
    whole = leak_settings(tmp_path, name, train_sample=300)
    windows: list[int] = []
    chunks = streaming._chunks

    def counted(settings, role, size):
        for chunk in chunks(settings, role, size):
            windows.append(len(chunk))
            yield chunk

    monkeypatch.setattr(minhash, "WINDOW", 64)  # windows of the in-memory search too
    monkeypatch.setattr(streaming, "_chunks", counted)
    eval_set = load_dataset(whole, "eval_data")
    a = evaluate(M(), eval_set, whole, load_dataset(whole, "train_data"))
    b = evaluate(M(), eval_set, dataclasses.replace(whole, streaming=True))
    assert sum(windows) == 900 and max(windows) <= 64
    assert b.train_sample == a.train_sample == {"train_size": 900, "train_sampled": 300, "seed": 0}
    assert torch.equal(a.train_metrics.confusion_matrix, b.train_metrics.confusion_matrix)
    assert a.train_gaps == b.train_gaps and a.train_gaps
    leaks = [f.message for f in b.findings if f.kind == "leakage"]
    assert leaks == [f.message for f in a.findings if f.kind == "leakage"]
    assert any("e.jsonl:6" in m and "also appear in the training set" in m for m in leaks)
    assert any(f"e.jsonl:8 ~ {near} (Jaccard 0.95)" in m for m in leaks), leaks
    assert render_json([a]) == render_json([b])


@pytest.mark.parametrize(
    ("train_fmt", "budget"),
    [
        ("in memory", None),
        ("jsonl", None),
        ("jsonl", 0),
        ("jsonl", 200_000),  # three or so of its 15 windows kept
        ("parquet", None),
    ],
)
def test_a_streamed_eval_set_finds_the_near_copies_read_whole_finds(
    tmp_path, monkeypatch, train_fmt, budget
):
    """A streamed eval set keeps no sequences, so its near copies of training
    sequences went unchecked (a max_leakage gate read the exact copies alone). Its
    file is read again, a window at a time, each window searched against the
    training set (in memory, or streamed too): the findings and the leaked share
    are the ones a run reading both sets whole gives, eval windows past the first
    included. A streamed training set is read once where its pass keeps all its
    windows (``budget``: SIGNED_BUDGET's), else once more for the later eval
    windows, the kept windows not signed again."""
    from pytest_seqgate import streaming

    eval_records = rule_records(200, seed=1)
    train = rule_records(900, missed={1: 150}, seed=2)
    _copies(eval_records, train)
    # A second near copy, of eval record 150 (in its third window of 64), at train
    # line 301 (39 of 41 grams shared), and a nearer one at line 851 (40 of 41).
    far = [5, *range(60, 100)]
    eval_records[150] = {"tokens": far, "label": "ham"}
    train[300] = {"tokens": [*far[:-1], 7], "label": "ham"}
    train[850] = {"tokens": [*far, *far[:2]], "label": "ham"}
    eval_file(tmp_path, eval_records)
    name = train_file(tmp_path, "jsonl" if train_fmt == "in memory" else train_fmt, train)
    M = first_token_model(tmp_path, monkeypatch, f"near_{train_fmt.replace(' ', '_')}")
    whole = leak_settings(tmp_path, name)
    read: dict[str, list[int]] = {"eval_data": [], "train_data": []}
    chunks = streaming._chunks

    def counted(settings, role, size):
        for chunk in chunks(settings, role, size):
            if size == minhash.WINDOW:
                read[role].append(len(chunk))
            yield chunk

    signed: list[int] = []
    sign = minhash.Signed.of.__func__

    def signing(cls, window, threshold, seed=0):
        signed.append(len(window))
        return sign(cls, window, threshold, seed)

    monkeypatch.setattr(minhash, "WINDOW", 64)
    # Eval windows of 128 records where the training set is streamed: one pass
    # for its sample and the first, then the kept windows, or a pass, for the rest.
    monkeypatch.setattr(streaming, "EVAL_WINDOWS", 2)
    monkeypatch.setattr(streaming, "_chunks", counted)
    if budget is not None:
        monkeypatch.setattr(minhash, "SIGNED_BUDGET", budget)
    train_set = load_dataset(whole, "train_data")
    a = evaluate(M(), load_dataset(whole, "eval_data"), whole, train_set)
    streamed = dataclasses.replace(whole, streaming=True)
    monkeypatch.setattr(minhash.Signed, "of", classmethod(signing))
    b = evaluate(M(), None, streamed, train_set if train_fmt == "in memory" else None)
    assert read["eval_data"] == [64, 64, 64, 8]  # read again, a window at a time
    if budget is None:  # its 15 windows signed once for the eval windows
        assert len(signed) == 15 and sum(signed) == 900
        if train_fmt != "in memory":  # and read once, for the sample and the first
            assert sum(read["train_data"]) == 900 and max(read["train_data"]) == 64
    else:  # the sample's pass searches the first eval window (of 128); the other, a pass
        assert sum(read["train_data"]) == 2 * 900 and max(read["train_data"]) == 64
        assert len(signed) == 30 if budget == 0 else 15 < len(signed) < 30
    leaks = [(f.message, f.data) for f in b.findings if f.kind == "leakage"]
    assert leaks == [(f.message, f.data) for f in a.findings if f.kind == "leakage"]
    near = next(f for f in b.findings if f.kind == "leakage" and f.data["match"] == "near")
    assert near.data["count"] == 2, near.message
    assert near.data["examples"] == [
        f"e.jsonl:8 ~ {name}{':701' if name.endswith('l') else '[700]'} (Jaccard 0.95)",
        f"e.jsonl:151 ~ {name}{':851' if name.endswith('l') else '[850]'} (Jaccard 0.98)",
    ]
    assert b.leaked == a.leaked
    assert b.near_unchecked == ""


@pytest.mark.parametrize("train_fmt", ["in memory", "jsonl"])
def test_a_streamed_eval_set_read_by_rows_is_searched_in_joined_windows(
    tmp_path, monkeypatch, train_fmt
):
    """Beside a streamed training set, a streamed eval set's near-copy search takes
    several windows of its records joined (a pass over the training file each): a
    set read by rows (.parquet) has no line numbers to join, which stopped the run.
    The findings are the in-memory run's, those of the later window included."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from pytest_seqgate import streaming

    eval_records = rule_records(200, seed=1)
    train = rule_records(900, seed=2)
    _copies(eval_records, train)
    far = [5, *range(60, 100)]  # a near copy in the second eval window (of 128)
    eval_records[150] = {"tokens": far, "label": "ham"}
    train[850] = {"tokens": [*far, *far[:2]], "label": "ham"}
    columns = {k: [r[k] for r in eval_records] for k in eval_records[0]}
    pq.write_table(pa.table(columns), tmp_path / "e.parquet", row_group_size=50)
    name = train_file(tmp_path, "jsonl", train)
    M = first_token_model(tmp_path, monkeypatch, f"rows_{train_fmt.replace(' ', '_')}")
    whole = Settings.from_dict(
        tmp_path,
        eval_data="e.parquet",
        train_data=name,
        labels="ham,spam",
        batch_size=8,
        near_duplicate_threshold=0.9,
    )
    monkeypatch.setattr(minhash, "WINDOW", 64)
    monkeypatch.setattr(streaming, "EVAL_WINDOWS", 2)
    train_set = load_dataset(whole, "train_data")
    a = evaluate(M(), load_dataset(whole, "eval_data"), whole, train_set)
    streamed = dataclasses.replace(whole, streaming=True)
    b = evaluate(M(), None, streamed, train_set if train_fmt == "in memory" else None)
    leaks = [(f.message, f.data) for f in b.findings if f.kind == "leakage"]
    assert leaks == [(f.message, f.data) for f in a.findings if f.kind == "leakage"]
    near = next(f for f in b.findings if f.kind == "leakage" and f.data["match"] == "near")
    assert near.data["examples"] == [
        "e.parquet[7] ~ t.jsonl:701 (Jaccard 0.95)",
        "e.parquet[150] ~ t.jsonl:851 (Jaccard 0.98)",
    ]


@pytest.mark.parametrize(
    ("role", "train_in_memory", "kept"),
    [
        ("eval_data", False, 101),
        ("eval_data", True, 101),
        ("eval_data", False, 60),
        ("eval_data", True, 60),
        ("train_data", False, 301),
    ],
)
def test_a_streamed_file_rewritten_between_its_readings_is_named(
    tmp_path, monkeypatch, role, train_in_memory, kept
):
    """A streamed set is read more than once (a training set counted, then read; an
    eval set read, then read again for near copies). A file that grows between the
    readings (a job still writing it), or shrinks, mismatched the readings'
    records: a shape error deep in the search, or a sample drawn from a stale
    count. It is refused, by name."""
    from pytest_seqgate import streaming
    from pytest_seqgate.exceptions import DataError

    eval_file(tmp_path, rule_records(100, seed=1))
    name = train_file(tmp_path, "jsonl", rule_records(300, seed=2))
    M = first_token_model(tmp_path, monkeypatch, f"changes_{role}_{train_in_memory}_{kept}")
    whole = leak_settings(tmp_path, name)
    train_set = load_dataset(whole, "train_data") if train_in_memory else None
    settings = dataclasses.replace(whole, streaming=True)
    chunks = streaming._chunks
    path = tmp_path / ("e.jsonl" if role == "eval_data" else name)

    def rewritten(settings, which, size):
        if which == role and size == minhash.WINDOW:  # the second reading
            lines = path.read_text().splitlines(keepends=True)
            extra = [json.dumps(rule_records(1, seed=3)[0]) + "\n"]
            path.write_text("".join([*lines, *extra][:kept]))
        return chunks(settings, which, size)

    monkeypatch.setattr(streaming, "_chunks", rewritten)
    with pytest.raises(DataError) as info:
        evaluate(M(), None, settings, train_set)
    shown = path.name
    before = 100 if role == "eval_data" else 300
    more = "at least " if role == "eval_data" and kept > before else ""
    assert str(info.value) == (
        f"{shown} changed while seqgate read it: {before} records the first time, "
        f"{more}{kept} the next; run again once the file is written"
    )


def test_a_streamed_training_set_names_its_bad_record_and_needs_labels(tmp_path, monkeypatch):
    """A bad record in a later window of a streamed training set is named by its line
    in the file; an empty one is said so; and without seqgate_labels the run stops at
    the settings, saying that the training set is streamed. A .pt training set is read
    whole, streaming or not."""
    from pytest_seqgate.exceptions import DataError

    monkeypatch.setattr(minhash, "WINDOW", 16)
    eval_file(tmp_path, rule_records(40))
    train = [json.dumps(r) for r in rule_records(100)]
    train[80] = json.dumps({"tokens": "spam", "label": "spam"})
    (tmp_path / "t.jsonl").write_text("\n".join(train) + "\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    M = first_token_model(tmp_path, monkeypatch, "bad_train")
    settings = Settings.from_dict(
        tmp_path, eval_data="e.jsonl", train_data="t.jsonl", labels="ham,spam", streaming=True
    )
    with pytest.raises(DataError, match=r"^t\.jsonl:81: "):
        evaluate(M(), None, settings)
    with pytest.raises(ConfigError, match=r"^empty\.jsonl: the dataset is empty"):
        evaluate(M(), None, dataclasses.replace(settings, train_data="empty.jsonl"))
    with pytest.raises(
        ConfigError,
        match=r"^streaming: a streamed training set is read a window at a time, so the "
        r"class names must be known before it is: set seqgate_labels",
    ):
        Settings.from_dict(tmp_path, train_data="t.jsonl", streaming=True)
    records = rule_records(30)
    torch.save(
        {
            "sequences": [torch.tensor(r["tokens"]) for r in records],
            "labels": [r["label"] for r in records],
        },
        tmp_path / "t.pt",
    )
    pt = Settings.from_dict(tmp_path, train_data="t.pt", streaming=True)
    assert not pt.streams("train_data") and settings.streams("train_data")


@pytest.mark.parametrize("role", ["eval", "train"])
def test_a_missing_streamed_file_stops_the_run_at_collection(project, role):
    """A streamed set is read during the evaluation; its missing file was found
    there, an error at each gated test's setup. It is a usage error at collection
    now, in one line, as a set read whole is."""
    project.data(rule_records(40))
    gated_project(project, "eval.jsonl" if role == "train" else "gone.jsonl")
    extra = ["--seqgate-train-data=gone.jsonl"] if role == "train" else []
    result = project.run("--seqgate-streaming", *extra)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    flag = "--seqgate-train-data" if role == "train" else "seqgate_eval_data in pytest.ini"
    assert_lines(result.stderr.str(), f"ERROR: seqgate: {flag}: file not found: gone.jsonl*")
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 300),
    window=st.integers(1, 64),
    limit=st.integers(1, 320),
    seed=st.integers(0, 3),
    copies=st.lists(st.integers(0, 299), max_size=8),
)
def test_a_streamed_training_sample_and_its_exact_copies_are_those_read_whole(
    size, window, limit, seed, copies
):
    """At every size, window and sample limit: the streamed training set's sample
    is the seeded sample of the set read whole (same records, in order, same
    names) and its exact copies of eval sequences are the whole set's."""
    from pytest_seqgate import streaming
    from pytest_seqgate.evaluation import _sample

    train = rule_records(size, seed=seed + 7)
    eval_records = rule_records(40, seed=seed)
    for i in copies:
        eval_records[i % 40] = dict(train[i % size])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
        eval_file(folder, eval_records)
        settings = Settings.from_dict(
            folder,
            eval_data="e.jsonl",
            train_data="t.jsonl",
            labels="ham,spam",
            train_sample=limit,
            seed=seed,
            streaming=True,
            near_duplicate_threshold=0,
        )
        whole = load_dataset(settings, "train_data")
        eval_set = load_dataset(settings, "eval_data")
        hashes = eval_set.content_hashes()
        original = minhash.WINDOW
        minhash.WINDOW = window  # (no fixture: hypothesis runs the body many times)
        try:
            stored = streaming.stream_train(settings, eval_set, hashes, near=False)
        finally:
            minhash.WINDOW = original
        sample = streaming.train_sample(stored, settings)
    expected, info = _sample(whole, limit, seed)
    assert int(stored["size"]) == info["train_size"] == size
    assert len(sample) == info["train_sampled"]
    for name in ("values", "lengths", "labels", "line_numbers"):
        assert torch.equal(getattr(sample, name), getattr(expected, name)), name
    assert torch.equal(stored["exact"], torch.isin(hashes, whole.content_hashes()))
