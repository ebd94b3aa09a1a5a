"""Property tests: bad input is a SeqgateError or a dataset, never another exception;
metrics are invariant to sample order and merge by adding confusion matrices."""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_seqgate.config import OPTIONS, Settings
from pytest_seqgate.data import SequenceData
from pytest_seqgate.exceptions import SeqgateError
from pytest_seqgate.gates import KNOWN_KEYS, parse_gates
from pytest_seqgate.loading import load_dataset, read_csv, read_json, read_jsonl, read_pt
from pytest_seqgate.metrics import compute_metrics, confusion_matrix

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
records = st.dictionaries(
    st.sampled_from(["label", "tokens", "features", "text", "meta"]), json_values, max_size=4
)


def _load(suffix: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(content)
        readers = {".jsonl": read_jsonl, ".json": read_json, ".csv": read_csv, ".tsv": read_csv}
        reader = {**readers, ".pt": read_pt}[suffix]
        try:
            data = reader(path)
        except SeqgateError:
            return
        assert isinstance(data, SequenceData)
        assert len(data) == data.labels.numel() == data.lengths.numel() > 0
        assert int(data.lengths.sum()) == data.values.shape[0]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".pt"]))
def test_random_bytes_never_crash_loaders(content: bytes, suffix: str) -> None:
    _load(suffix, content)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records | json_values, min_size=0, max_size=6))
def test_random_json_records_never_crash(rows: list[object]) -> None:
    _load(".jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())


@given(st.dictionaries(st.sampled_from([*KNOWN_KEYS, "min_bogus"]), json_values, max_size=4))
def test_gate_parser_accepts_or_raises_config_error(kwargs: dict[str, object]) -> None:
    with contextlib.suppress(SeqgateError):
        parse_gates(kwargs, ("ham", "spam"))


@given(
    st.dictionaries(st.sampled_from([o.name for o in OPTIONS]), st.text(max_size=12), max_size=4)
)
def test_option_parser_accepts_or_raises_config_error(raw: dict[str, str]) -> None:
    with contextlib.suppress(SeqgateError):
        Settings.from_dict(".", **raw)


pairs = st.integers(2, 6).flatmap(
    lambda c: st.tuples(
        st.just(c),
        st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1)), min_size=1, max_size=200),
    )
)


@given(pairs, st.randoms())
def test_metrics_invariant_to_order_and_additive_over_shards(case, rnd) -> None:
    c, rows = case
    y_true = torch.tensor([t for t, _ in rows])
    y_pred = torch.tensor([p for _, p in rows])
    whole = compute_metrics(confusion_matrix(y_true, y_pred, c))
    perm = list(range(len(rows)))
    rnd.shuffle(perm)
    shuffled = compute_metrics(confusion_matrix(y_true[perm], y_pred[perm], c))
    cut = rnd.randint(0, len(rows))
    merged = compute_metrics(
        confusion_matrix(y_true[:cut], y_pred[:cut], c)
        + confusion_matrix(y_true[cut:], y_pred[cut:], c)
    )
    for other in (shuffled, merged):
        assert torch.equal(other.confusion_matrix, whole.confusion_matrix)
        assert torch.allclose(other.values, whole.values, equal_nan=True, atol=1e-12)
        assert torch.allclose(other.per_class, whole.per_class, equal_nan=True, atol=1e-12)


safetensors_headers = st.dictionaries(
    st.text(max_size=4),
    st.fixed_dictionaries(
        {
            "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3"]),
            "shape": st.lists(st.integers(-1, 4), max_size=3),
            "data_offsets": st.lists(st.integers(-2, 40), min_size=0, max_size=3),
        }
    )
    | json_values,
    max_size=3,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(safetensors_headers, st.binary(max_size=64), st.integers(-3, 3))
def test_random_safetensors_never_crash(header: dict, payload: bytes, skew: int) -> None:
    """A header of names, dtypes, shapes and byte ranges (some wrong), its length
    (sometimes off) and bytes: tensors, or a ModelError naming the file."""
    from pytest_seqgate.exceptions import ModelError
    from pytest_seqgate.loading import read_safetensors

    text = json.dumps(header).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        path.write_bytes(max(0, len(text) + skew).to_bytes(8, "little") + text + payload)
        try:
            state = read_safetensors(path, "seqgate_model")
        except ModelError as exc:
            assert "w.safetensors" in str(exc)
            return
        assert all(isinstance(t, torch.Tensor) for t in state.values())


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=6))
def test_random_records_from_code_never_crash(rows: list[dict[str, object]]) -> None:
    """Records handed over from code (dicts, as a Hugging Face dataset's rows)."""
    from pytest_seqgate.loading import from_dataset

    try:
        data = from_dataset(rows, "mine", None)
    except SeqgateError:
        return
    assert len(data) == len(rows)


@given(
    st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=30), min_size=1, max_size=40),
    st.integers(1, 64),
    st.randoms(use_true_random=False),
)
def test_step_chunks_cover_every_sequence_once_whatever_the_layout(seqs, size, rng):
    """The runs that the hashes and the MinHash signatures read: contiguous, in
    order, each of whole sequences, fewer than ``size`` steps past its first
    sequence, and the same for a hand-built layout (shuffled, with gaps) as for the packed one."""
    lengths = torch.tensor([len(s) for s in seqs])
    order = list(range(len(seqs)))
    rng.shuffle(order)
    values, offsets = [], [0] * len(seqs)
    for i in order:  # stored in a shuffled order, a gap of one value after each
        offsets[i] = len(values)
        values += [*seqs[i], 99]
    labels = torch.zeros(len(seqs), dtype=torch.int64)
    by_hand = SequenceData(torch.tensor(values), torch.tensor(offsets), lengths, labels)
    packed = SequenceData.from_sequences(seqs, [0] * len(seqs))
    for data in (packed, by_hand):
        runs = list(data.step_chunks(size))
        assert [r.start for r, _, _ in runs] == [0, *[r.stop for r, _, _ in runs[:-1]]]
        assert runs[-1][0].stop == len(seqs)
        for rows, steps, run_lengths in runs:
            assert run_lengths.tolist() == lengths[rows].tolist()
            assert steps.tolist() == [v for s in seqs[rows] for v in s]
            assert int(run_lengths[1:].sum()) < size  # fewer than size steps past its first
    alone = [SequenceData.from_sequences([s], [0]).content_hashes() for s in seqs]
    assert torch.equal(by_hand.content_hashes(), torch.cat(alone))


mapped_records = st.tuples(
    st.lists(
        st.tuples(st.lists(st.integers(1, 50), min_size=1, max_size=5), st.sampled_from("ab")),
        min_size=1,
        max_size=8,
    ),
    st.permutations(["c0", "c1", "c2", "c3"]),
    st.sets(st.sampled_from(["tokens", "label"])),
    st.booleans(),
)


@given(mapped_records)
def test_columns_read_what_renaming_by_hand_reads(case) -> None:
    """seqgate_columns over columns of other names reads the set that renaming
    them by hand gives, whichever fields are mapped, with a stray column of a
    mapped field's name beside them (left aside) or not."""
    from pytest_seqgate.loading import from_dataset

    pairs, names, mapped, stray = case
    column_of = {field: names[k] for k, field in enumerate(sorted(mapped))}
    plain = [{"tokens": t, "label": y, "meta": i} for i, (t, y) in enumerate(pairs)]
    renamed = []
    for row in plain:
        out = {column_of.get(key, key): value for key, value in row.items()}
        if stray:  # the fields' own names beside the mapped columns, holding other values
            out.update({field: [99] if field == "tokens" else "zz" for field in mapped})
        renamed.append(out)
    expected = from_dataset(plain, "d", None)
    read = from_dataset(renamed, "d", None, column_of=column_of)
    for name in ("values", "offsets", "lengths", "labels"):
        assert torch.equal(getattr(read, name), getattr(expected, name))
    assert read.label_names == expected.label_names and read.metadata == expected.metadata


@given(
    records,
    st.dictionaries(
        st.sampled_from(["label", "tokens", "text"]),
        st.sampled_from(["label", "tokens", "text", "meta", "x"]),
        max_size=3,
    ),
)
def test_random_records_and_mappings_never_crash(record, column_of) -> None:
    from pytest_seqgate.loading import from_dataset

    with contextlib.suppress(SeqgateError):
        from_dataset([record], "d", None, column_of=column_of)


good_lines = st.lists(
    st.one_of(
        st.just(""),  # a blank line, skipped, but counted in the names of those after it
        st.builds(
            lambda tokens, label: json.dumps({"tokens": tokens, "label": label}),
            st.lists(st.integers(0, 50), min_size=1, max_size=4),
            st.sampled_from(["ham", "spam"]),
        ),
    ),
    min_size=1,
    max_size=12,
).filter(lambda lines: any(lines))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(good_lines, st.lists(st.integers(0, 12), max_size=4))
def test_shards_read_as_the_file_they_were_cut_from(lines: list[str], cuts: list[int]) -> None:
    """A .jsonl file cut into shards anywhere (a shard of blank lines only, or
    none, among them) reads as the file: the same sequences and labels, and each
    record named by its shard and its line there, which is its line in the file
    less the lines of the shards before it."""
    bounds = sorted({0, len(lines), *(min(c, len(lines)) for c in cuts)})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "whole.jsonl").write_text("".join(line + "\n" for line in lines))
        for k, (start, stop) in enumerate(itertools.pairwise(bounds)):
            shard = "".join(line + "\n" for line in lines[start:stop])
            (folder / f"part-{k:02d}.jsonl").write_text(shard)
        labels = "ham,spam"
        whole = load_dataset(
            Settings.from_dict(folder, eval_data="whole.jsonl", labels=labels), "eval_data"
        )
        shards = load_dataset(
            Settings.from_dict(folder, eval_data="part-*.jsonl", labels=labels), "eval_data"
        )
    assert torch.equal(whole.values, shards.values) and torch.equal(whole.labels, shards.labels)
    for index in range(len(whole)):
        line = int(whole.line_numbers[index])  # 1-based, in the whole file
        k = max(i for i, start in enumerate(bounds[:-1]) if start < line)
        assert shards.record(index) == f"part-{k:02d}.jsonl:{line - bounds[k]}"
