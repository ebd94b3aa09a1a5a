"""Loaders as plain Python: formats, and the errors that name file and line."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import logging
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from torch import nn

from pytest_seqgate.config import Settings, data_suffix
from pytest_seqgate.data import SequenceData
from pytest_seqgate.exceptions import ConfigError, DataError, ModelError
from pytest_seqgate.loading import (
    from_dataset,
    from_table,
    iter_json_array,
    load_dataset,
    load_model,
    read_csv,
    read_json,
    read_jsonl,
    read_pt,
    read_table,
    stream_records,
)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture(params=["orjson", "json"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the optional orjson parser and with the standard library alone."""
    if request.param == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr("pytest_seqgate.loading.fast_loads", lambda: None)
    return str(request.param)


def test_jsonl_tokens_names_and_metadata(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.jsonl",
        jsonl(
            {"tokens": [1, 2, 3], "label": "spam", "source": "sms"},
            {"tokens": [4], "label": "ham"},
        ),
    )
    data = read_jsonl(path)
    assert data.label_names == ("ham", "spam")
    assert data.labels.tolist() == [1, 0]
    assert data.lengths.tolist() == [3, 1]
    assert data.metadata == {"source": ["sms", None]}
    assert data.record(1) == f"{path}:2"


def test_jsonl_label_index_and_configured_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.jsonl", jsonl({"tokens": [1], "label": 1}, {"tokens": [2], "label": "neg"})
    )
    data = read_jsonl(path, labels=("neg", "pos"))
    assert data.labels.tolist() == [1, 0] and data.label_names == ("neg", "pos")


def test_jsonl_features(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.jsonl",
        jsonl(
            {"features": [[0.5, 1.0], [2.0, -1.0]], "label": 0},
            {"features": [[1.0, 1.0]], "label": 1},
        ),
    )
    data = read_jsonl(path)
    assert data.kind == "features" and data.values.shape == (3, 2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            jsonl({"tokens": [1], "label": 0}) + '{"tokens": [2], "lab',
            "e.jsonl:2: invalid JSON (the last line: is the file truncated?)",
        ),
        (
            jsonl({"tokens": [1], "features": [[1.0]], "label": 0}),
            "e.jsonl:1: a record needs exactly one of 'tokens', 'features' or 'text', but has "
            "'tokens' and 'features'",
        ),
        (
            jsonl({"tokens": [1], "label": 0}, {"features": [[1.0]], "label": 0}),
            "e.jsonl:2: record has 'features' but earlier records have tokens/text",
        ),
        (jsonl({"tokens": [], "label": 0}), "e.jsonl:1: empty sequence (length 0)"),
        (jsonl({"tokens": [1, "a"], "label": 0}), "e.jsonl:1: 'tokens' must be a list of integers"),
        # An int64 tensor would take these as 2 and 1 without a word.
        (
            jsonl({"tokens": [1], "label": 0}, {"tokens": [1, 2.5], "label": 0}),
            "e.jsonl:2: 'tokens' must be a list of integers, but holds 2.5",
        ),
        (jsonl({"tokens": [1, True], "label": 0}), "but holds True"),
        (
            jsonl({"tokens": [1], "label": None}),
            "e.jsonl:1: label null is neither a class name nor a class index",
        ),
        (
            jsonl({"tokens": [1], "label": True}),
            "e.jsonl:1: label true is neither a class name nor a class index (an integer); a "
            "true/false label says yes or no, not which class: write the class's name "
            '("spam") or its index in the model\'s outputs (1)',
        ),
        (
            jsonl({"tokens": [1], "label": 1}, {"tokens": [1], "label": 0.5}),
            "e.jsonl:2: label 0.5 is neither a class name nor a class index",
        ),
        # A list: a one-hot row names one class; several labels are multi-label.
        (
            jsonl({"tokens": [1], "label": [0, 1, 0]}),
            "e.jsonl:1: label [0, 1, 0] is neither a class name nor a class index (an "
            "integer); it is one-hot: write the index of its 1 (1)",
        ),
        (
            jsonl({"tokens": [1], "label": ["spam", "urgent"]}),
            "e.jsonl:1: label ['spam', 'urgent'] is neither a class name nor a class index (an "
            "integer); several labels are multi-label classification, which seqgate does not "
            "gate: give each record the one class of its sequence",
        ),
        # Past int64 (found by the fuzz tests): an error at its line, not an OverflowError.
        (
            jsonl({"tokens": [1], "label": 0}, {"tokens": [1], "label": 10**20}),
            "e.jsonl:2: label 100000000000000000000 is not a class index",
        ),
        (
            jsonl({"tokens": [1], "lable": 0}),
            "e.jsonl:1: record has no 'label' (its keys: 'tokens', 'lable'); every record "
            "needs its class, as a name or an index: rename 'lable' to 'label'",
        ),
        (
            jsonl({"sentence": "hi", "category": "spam"}),
            "e.jsonl:1: a record needs one of 'tokens', 'features' or 'text', but has none "
            "(its keys: 'sentence', 'category'); read it with seqgate_columns = text=sentence "
            "(or rename the columns)",
        ),
        (
            jsonl({"input_ids": [1, 2], "label": 0}),
            "read it with seqgate_columns = tokens=input_ids (or rename the columns)",
        ),
        (jsonl([1, 2]), "e.jsonl:1: expected an object"),
        ("", "e.jsonl: the dataset is empty"),
        (jsonl({"text": "hi", "label": 0}), "e.jsonl:1: record has 'text' but no tokenizer"),
        (
            jsonl({"tokens": [1], "label": 0}, {"tokens": [-3], "label": 0}),
            "e.jsonl:2: this sequence (offset 1, length 1, label 0) is malformed: token ids are "
            "indices, from 0",
        ),
        # Python's json reads NaN and Infinity: they came out as NaN logits, blamed on
        # the model, or (an Infinity a GRU saturates on) not at all.
        (
            jsonl(
                {"features": [[0.5, 1.0]], "label": 0},
                {"features": [[0.5, 1.0], [float("nan"), 2.0]], "label": 1},
            ),
            "e.jsonl:2: this sequence (offset 1, length 2, label 1) is malformed: its feature "
            "vectors hold NaN or infinite values",
        ),
        (
            jsonl({"features": [[float("inf"), 1.0]], "label": 0}),
            "e.jsonl:1: this sequence (offset 0, length 1, label 0) is malformed: its feature",
        ),
    ],
)
def test_jsonl_errors(tmp_path: Path, content: str, message: str, parser: str) -> None:
    path = write(tmp_path / "e.jsonl", content)
    with pytest.raises(DataError) as info:
        read_jsonl(path, display="e.jsonl")
    assert message in str(info.value)


@pytest.mark.parametrize("bad", [2.5, True, 10**20, -3, "7"])
def test_ids_packed_as_read_name_a_bad_id_as_a_short_file_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: object
) -> None:
    """Token ids are packed into an array a few thousand at a time as they are
    read (a list of Python ints took 3.6x the memory). A bad id after the first
    packing is named at its line with the message it gets unpacked; a set of
    good ids, with segments that start late, reads the same either way."""
    from pytest_seqgate import loading

    records = [{"tokens": [1, 2, 3], "label": 0}] * 39 + [{"tokens": [1, bad], "label": 0}]
    path = write(tmp_path / "e.jsonl", jsonl(*records, {"tokens": [5], "label": 1}))
    said = []
    for packed in (4, 10**9):
        monkeypatch.setattr(loading, "_PACKED", packed)
        with pytest.raises(DataError) as info:
            read_jsonl(path, display="e.jsonl")
        said.append(str(info.value))
    assert said[0] == said[1] and said[0].startswith("e.jsonl:40: "), said
    good = [*records[:39], {"tokens": [1, 2], "token_type_ids": [0, 1], "label": 1}]
    path = write(tmp_path / "g.jsonl", jsonl(*good, {"tokens": [5], "label": 1}))
    read = []
    for packed in (4, 10**9):
        monkeypatch.setattr(loading, "_PACKED", packed)
        read.append(read_jsonl(path, display="g.jsonl"))
    for name in ("values", "lengths", "labels", "line_numbers", "token_type_ids"):
        assert torch.equal(getattr(read[0], name), getattr(read[1], name)), name
    assert read[0].token_type_ids.tolist()[-3:] == [0, 1, 0]


def test_jsonl_label_not_in_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.jsonl",
        jsonl({"tokens": [1], "label": "ham"}, {"tokens": [1], "label": "eggs"}),
    )
    with pytest.raises(DataError, match=r"e.jsonl:2: label 'eggs' is not one of seqgate_labels"):
        read_jsonl(path, labels=("ham", "spam"), display="e.jsonl")
    # A name that differs only in case says so.
    path = write(tmp_path / "c.jsonl", jsonl({"tokens": [1], "label": "Spam"}))
    with pytest.raises(DataError) as info:
        read_jsonl(path, labels=("ham", "spam"), display="c.jsonl")
    assert str(info.value) == (
        "c.jsonl:1: label 'Spam' is not one of seqgate_labels ['ham', 'spam'] (nor an index "
        "below 2): it differs from 'spam' only in case; fix the record or add the class to "
        "seqgate_labels"
    )
    path = write(tmp_path / "w.jsonl", jsonl({"tokens": [1], "label": " ham "}))
    with pytest.raises(DataError, match="it differs from 'ham' only in the spaces around it;"):
        read_jsonl(path, labels=("ham", "spam"), display="w.jsonl")


def test_labels_that_are_numbers_written_as_strings(tmp_path: Path) -> None:
    """A .jsonl exported from a table often writes indices as strings ("0", "1"), as a
    CSV field always does; and numeric class names sort as numbers."""
    path = write(tmp_path / "s.jsonl", jsonl(*({"tokens": [1], "label": v} for v in "0110")))
    data = read_jsonl(path, labels=("ham", "spam"))
    assert data.labels.tolist() == [0, 1, 1, 0] and data.label_names == ("ham", "spam")
    with pytest.raises(DataError, match=r"s2.jsonl:1: label '2' is not one of seqgate_labels"):
        read_jsonl(
            write(tmp_path / "s2.jsonl", jsonl({"tokens": [1], "label": "2"})),
            labels=("ham", "spam"),
            display="s2.jsonl",
        )
    # A class named "1" is the class named "1", not index 1.
    data = read_jsonl(path, labels=("1", "0"))
    assert data.labels.tolist() == [1, 0, 0, 1]
    # Star ratings "1" to "12" without seqgate_labels: 2 before 10.
    stars = [str(k) for k in range(1, 13)]
    path = write(tmp_path / "r.jsonl", jsonl(*({"tokens": [1], "label": v} for v in stars)))
    assert read_jsonl(path).label_names == tuple(stars)


def test_plain_records_among_richer_ones_keep_the_columns_aligned(tmp_path: Path) -> None:
    """A record of tokens and a label alone is added by a shorter path: it still
    takes None in the metadata columns of the records before it and segment 0 for
    its steps beside records with token_type_ids, and a features record after it
    is refused as one after any tokens record is."""
    path = write(
        tmp_path / "mixed.jsonl",
        jsonl(
            {"tokens": [1, 2], "label": "ham", "id": 7},
            {"tokens": [3], "label": "spam"},
            {"tokens": [4, 5], "label": "ham", "token_type_ids": [0, 1]},
            {"tokens": [6], "label": "spam"},
        ),
    )
    data = read_jsonl(path, labels=("ham", "spam"))
    assert data.values.tolist() == [1, 2, 3, 4, 5, 6]
    assert data.lengths.tolist() == [2, 1, 2, 1]
    assert data.labels.tolist() == [0, 1, 0, 1]
    assert data.metadata == {"id": [7, None, None, None]}
    assert data.token_type_ids is not None
    assert data.token_type_ids.tolist() == [0, 0, 0, 0, 1, 0]
    bad = write(
        tmp_path / "kinds.jsonl",
        jsonl({"tokens": [3], "label": "spam"}, {"features": [[0.5]], "label": "ham"}),
    )
    with pytest.raises(DataError, match=r"kinds\.jsonl:2: record has 'features' but earlier"):
        read_jsonl(bad, labels=("ham", "spam"))
    bad = write(
        tmp_path / "kinds2.jsonl",
        jsonl({"features": [[0.5]], "label": "ham"}, {"tokens": [3], "label": "spam"}),
    )
    with pytest.raises(DataError, match=r"kinds2\.jsonl:2: record has 'tokens' but earlier"):
        read_jsonl(bad, labels=("ham", "spam"))


def test_int64s_equals_torch_tensor_and_refuses_what_it_refuses() -> None:
    """Parsed ids, lengths and labels become tensors through an array.array (3.6x
    faster than torch.tensor of a list): the same values, and the same refusals for
    what int64 cannot hold or what is no integer (the loader then names the record)."""
    from pytest_seqgate.data import int64s

    values = [0, 1, -1, 2**63 - 1, -(2**63), 29_999]
    assert torch.equal(int64s(values), torch.tensor(values, dtype=torch.int64))
    empty = int64s([])
    assert empty.shape == (0,) and empty.dtype == torch.int64
    with pytest.raises(OverflowError):
        int64s([1, 2**63])
    with pytest.raises(TypeError):
        int64s([1, 1.5])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "names", [("ham", "spam"), ("0", "1"), ("1", "2", "3"), ("neg", "pos", "2")]
)
def test_labels_of_one_type_read_in_bulk_as_one_by_one(names: tuple[str, ...]) -> None:
    """Labels that are all names, or all integers, are read by one lookup each (the
    loop that reads a label at a time, with its branches, took 0.25 s of a 300,000
    record parse): a label of the other type, among them, sends the chunk through
    the loop, and the two readings agree on the labels they share."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pytest_seqgate.loading import _Builder

    def read(raw: list[object]) -> list[int]:
        builder = _Builder("t.jsonl", names, None)
        builder.raw_labels = list(raw)
        builder.lines = list(range(1, len(raw) + 1))
        labels, _ = builder.label_index()
        return labels.tolist()

    ints = st.lists(st.integers(0, len(names) - 1), min_size=1, max_size=30)
    if names == ("1", "2", "3"):  # a 3 among them: the integers are names, not indexes
        ints = st.lists(st.integers(1, 3), max_size=30).map(lambda xs: [3, *xs])

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.sampled_from(names), min_size=1, max_size=30), ints)
    def agree(by_name: list[str], by_number: list[int]) -> None:
        assert read(by_name) == read([*by_name, by_number[0]])[:-1]
        assert read(by_number) == read([*by_number, by_name[0]])[:-1]

    agree()


def test_number_labels_of_classes_named_by_numbers(tmp_path: Path) -> None:
    """Star ratings as integers (``"label": 5``) with seqgate_labels "1" to "5": 5 is
    no index among 5 classes, so the integers are the classes' names, and 1 is "1"
    (read as indexes, 1 to 4 were silently "2" to "5"). Integers that fit only the
    indexes stay indexes, as a training set's targets; a mix, or labels that fit
    both readings where the two differ, is an error naming a record."""

    def labels_of(values: list[int], name: str) -> list[int]:
        path = write(tmp_path / name, jsonl(*({"tokens": [1], "label": v} for v in values)))
        return read_jsonl(path, labels=("1", "2", "3", "4", "5"), display=name).labels.tolist()

    assert labels_of([5, 1, 3, 1], "names.jsonl") == [4, 0, 2, 0]
    assert labels_of([0, 4, 2], "indexes.jsonl") == [0, 4, 2]
    with pytest.raises(DataError) as info:
        labels_of([1, 4], "both.jsonl")
    assert str(info.value) == (
        "both.jsonl:1: label 1 is the class '1' by name or the class '2' by index, and no "
        "label of both.jsonl tells which: the classes are named by numbers. Write the labels "
        'as strings ("1") to mean the names, or name the classes otherwise in seqgate_labels '
        "to mean indexes"
    )
    # Where the names are the indexes ("0" to "4"), the readings agree.
    path = write(tmp_path / "agree.jsonl", jsonl(*({"tokens": [1], "label": v} for v in (1, 4))))
    assert read_jsonl(path, labels=("0", "1", "2", "3", "4")).labels.tolist() == [1, 4]
    # A CSV's fields are text: "5" names "5", and a "0" beside it is no class.
    path = write(tmp_path / "stars.csv", "label,tokens\n5,1 2\n1,3\n")
    assert read_csv(path, labels=("1", "2", "3", "4", "5")).labels.tolist() == [4, 0]
    path = write(tmp_path / "zero.csv", "label,tokens\n5,1 2\n0,3\n")
    with pytest.raises(DataError, match=r"zero.csv:3: label '0' is not one of seqgate_labels"):
        read_csv(path, labels=("1", "2", "3", "4", "5"), display="zero.csv")
    with pytest.raises(DataError) as info:
        labels_of([1, 0, 5], "mixed.jsonl")
    assert str(info.value) == (
        "mixed.jsonl:3: label 5 names the class '5' but is no index below 5, and "
        "mixed.jsonl:2 has label 0, which names no class: the classes are named by numbers, "
        "so write every label as a class name (1 to 5) or every one as an index (0 to 4)"
    )
    # Streamed a chunk at a time: the reading the first labels settle holds for
    # the chunks after, whose own labels (1 and 2) fit both.
    stars = ("1", "2", "3", "4", "5")
    for values, read in (([5, 1, 1, 2], [4, 0, 0, 1]), ([0, 1, 1, 2], [0, 1, 1, 2])):
        path = write(tmp_path / "s.jsonl", jsonl(*({"tokens": [1], "label": v} for v in values)))
        chunks = stream_records(path, stars, None, "s.jsonl", 2)
        assert [x for c in chunks for x in c.labels.tolist()] == read, values
    # The same in a set built in code (a fixture's pairs of sequence and rating).
    data = from_dataset([([1, 2], 5), ([3], 2)], "ratings", ("1", "2", "3", "4", "5"))
    assert data.labels.tolist() == [4, 1]


def test_jsonl_bom_and_non_utf8(tmp_path: Path, parser: str) -> None:
    path = write(
        tmp_path / "b.jsonl", b"\xef\xbb\xbf" + jsonl({"tokens": [1], "label": 0}).encode()
    )
    assert len(read_jsonl(path)) == 1
    bad = write(
        tmp_path / "n.jsonl",
        jsonl({"tokens": [1], "label": 0}).encode() + b'{"text": "caf\xe9", "label": 0}\n',
    )
    with pytest.raises(DataError, match=r"n.jsonl:2: bytes that are not UTF-8"):
        read_jsonl(bad, display="n.jsonl")


def test_jsonl_same_records_with_and_without_orjson(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines orjson rejects but json accepts (NaN, integers past 64 bits) read the same."""
    pytest.importorskip("orjson")
    text = (
        jsonl({"tokens": [1, 2, 3], "label": "ham", "lang": "fr", "note": "caf\u00e9"})
        + '{"tokens": [4], "label": "spam", "score": NaN, "id": 123456789012345678901234}\n'
        + "\n"
        + jsonl({"tokens": [5, 6], "label": "ham", "score": 0.1})
    )
    path = write(tmp_path / "m.jsonl", text)
    fast = read_jsonl(path)
    monkeypatch.setattr("pytest_seqgate.loading.fast_loads", lambda: None)
    slow = read_jsonl(path)
    for field in ("values", "offsets", "lengths", "labels", "line_numbers"):
        assert torch.equal(getattr(fast, field), getattr(slow, field))
    assert fast.label_names == slow.label_names == ("ham", "spam")
    assert repr(fast.metadata) == repr(slow.metadata)
    assert fast.metadata["id"][1] == 123456789012345678901234


def test_truncated_last_line_names_it_with_either_parser(tmp_path: Path, parser: str) -> None:
    path = write(tmp_path / "t.jsonl", jsonl({"tokens": [1], "label": 0}) + '{"tokens": [1')
    with pytest.raises(DataError, match=r"t.jsonl:2: invalid JSON \(the last line: is the file"):
        read_jsonl(path, display="t.jsonl")


def csv_error(tmp_path: Path, name: str, content: str) -> str:
    """The message of the DataError that reading ``content`` as ``name`` raises."""
    with pytest.raises(DataError) as info:
        read_csv(write(tmp_path / name, content), display=name)
    return str(info.value)


def test_csv_tokens_and_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "label,tokens,lang\nspam,1 2 3,en\nham,4,fr\n")
    data = read_csv(path)
    assert data.lengths.tolist() == [3, 1] and data.metadata["lang"] == ["en", "fr"]
    assert csv_error(tmp_path, "bad.csv", "label,body\nspam,hello\n").startswith(
        "bad.csv:1: the columns must include 'label'"
    )
    # The column is there, this row's field is empty: that, not a missing column.
    assert csv_error(tmp_path, "blank.csv", "label,tokens\nspam,1 2\nham,\n") == (
        "blank.csv:3: empty sequence (length 0): the 'tokens' field is empty; drop the "
        "record or give it at least one step"
    )
    # A Kaggle-style header: both columns mapped, in the order of the contract's fields.
    assert csv_error(tmp_path, "other.csv", "Category,Message\nspam,hello\n") == (
        "other.csv:1: the columns must include 'label' and one of 'tokens', 'features' "
        "or 'text', but are ['Category', 'Message']; read them with seqgate_columns = "
        "label=Category, text=Message (or rename the columns)"
    )


def test_csv_tokens_as_a_list_column_as_pandas_writes_it(tmp_path: Path) -> None:
    """pandas' to_csv writes a list column as "[1, 2, 3]": that was refused as not
    space-separated integers."""
    path = write(tmp_path / "l.csv", 'label,tokens\nspam,"[1, 2, 3]"\nham,[4]\nham,7 8\n')
    data = read_csv(path)
    assert data.values.tolist() == [1, 2, 3, 4, 7, 8] and data.lengths.tolist() == [3, 1, 2]
    assert csv_error(tmp_path, "x.csv", 'label,tokens\nspam,"[1, x]"\n') == (
        "x.csv:2: 'tokens' (and 'attention_mask', 'token_type_ids') must be space-separated "
        "integers or a JSON list of them, and 'features' a JSON list of vectors"
    )
    assert csv_error(tmp_path, "f.csv", 'label,tokens\nspam,"[1, 2.5]"\n').startswith(
        "f.csv:2: 'tokens' must be a list of integers, but holds 2.5"
    )


def test_gzipped_jsonl_and_csv_read_as_the_plain_files(tmp_path: Path) -> None:
    """An eval set committed gzipped (test.jsonl.gz) was refused for its suffix; it
    reads as the plain file, in memory and streamed, and a damaged archive is an
    error naming the file."""
    import gzip

    jsonl = '{"tokens": [1, 2], "label": "a"}\n\n{"tokens": [3], "label": "b", "k": 1}\n'
    csv = "label,tokens\na,1 2\nb,3\n"
    for name, text in (("e.jsonl", jsonl), ("e.csv", csv)):
        write(tmp_path / name, text)
        write(tmp_path / f"{name}.gz", gzip.compress(text.encode()))
        plain, packed = (
            load_dataset(Settings.from_dict(tmp_path, eval_data=file), "eval_data")
            for file in (name, f"{name}.gz")
        )
        assert torch.equal(plain.values, packed.values) and torch.equal(plain.labels, packed.labels)
        assert torch.equal(plain.line_numbers, packed.line_numbers)  # errors name the same lines
    from pytest_seqgate.streaming import count_records

    assert count_records(tmp_path / "e.jsonl.gz", "e.jsonl.gz") == 2
    write(tmp_path / "cut.jsonl.gz", gzip.compress(jsonl.encode())[:-12])
    write(tmp_path / "not.jsonl.gz", jsonl)
    for name, reason in (("cut", "EOFError"), ("not", "BadGzipFile")):
        with pytest.raises(DataError) as info:
            load_dataset(Settings.from_dict(tmp_path, eval_data=f"{name}.jsonl.gz"), "eval_data")
        assert str(info.value).startswith(f"{name}.jsonl.gz: cannot decompress it ({reason}")
    write(tmp_path / "m.pt.gz", b"")
    with pytest.raises(
        ConfigError, match=r"the suffix must be .jsonl, .json, .csv, .tsv \(each gzipped too"
    ):
        load_dataset(Settings.from_dict(tmp_path, eval_data="m.pt.gz"), "eval_data")


def test_json_files_read_in_the_layouts_tools_write(tmp_path: Path) -> None:
    """A .json eval set was refused ("rename it .jsonl"), though a JSON array of
    records is what ``json.dump`` and ``df.to_json(orient="records")`` write, and
    ``load_dataset("json")`` reads it. Each layout a tool writes reads as the same
    records: an array (named by index), JSON lines under a .json or .ndjson name
    (named by line), gzipped, and pandas' orients, its default included."""
    pd = pytest.importorskip("pandas")
    records = [
        {"text": "win money now", "label": "spam", "lang": "en"},
        {"text": "see you at noon", "label": "ham", "lang": "en"},
        {"text": "free prize", "label": "spam", "lang": "fr"},
    ]
    vocab: dict[str, int] = {}

    def tokenizer(text: str) -> list[int]:
        return [vocab.setdefault(word, len(vocab) + 1) for word in text.split()]

    lines = "".join(json.dumps(r) + "\n" for r in records)
    expected = read_jsonl(write(tmp_path / "e.jsonl", lines), tokenizer=tokenizer)
    frame = pd.DataFrame(records)
    layouts = {
        "array.json": json.dumps(records, indent=2),
        "lines.json": lines,
        "lines.ndjson": lines,
        "columns.json": json.dumps({k: [r[k] for r in records] for k in records[0]}),
        "pandas.json": frame.to_json(),  # {"text": {"0": ...}, ...}
        "index.json": frame.to_json(orient="index"),
        "split.json": frame.to_json(orient="split"),
        "table.json": frame.to_json(orient="table"),
        "records.json": frame.to_json(orient="records", force_ascii=False),
    }
    for name, text in layouts.items():
        write(tmp_path / name, text)
    write(tmp_path / "array.json.gz", gzip.compress(layouts["array.json"].encode()))
    for name in [*layouts, "array.json.gz"]:
        data = _read_with(tmp_path, name, tokenizer)
        assert torch.equal(data.values, expected.values), name
        assert torch.equal(data.labels, expected.labels) and data.label_names == ("ham", "spam")
        assert data.metadata["lang"] == ["en", "en", "fr"], name
        assert data.record(2) == (f"{name}:3" if "lines" in name else f"{name}[2]"), name
    one = _read_with(tmp_path, "one.json", tokenizer, json.dumps(records[0]))
    assert len(one) == 1 and one.record(0) == "one.json:1"


def _read_with(
    folder: Path, name: str, tokenizer: Callable[[str], list[int]], text: str | None = None
) -> SequenceData:
    from pytest_seqgate.loading import read_json

    path = folder / name
    if text is not None:
        write(path, text)
    if data_suffix(path) == ".jsonl":
        return read_jsonl(path, tokenizer=tokenizer, display=name)
    return read_json(path, tokenizer=tokenizer, display=name)


def test_json_errors_name_the_file_and_what_it_holds(tmp_path: Path) -> None:
    def error(text: str) -> str:
        write(tmp_path / "e.json", text)
        with pytest.raises(DataError) as info:
            load_dataset(Settings.from_dict(tmp_path, eval_data="e.json"), "eval_data")
        return str(info.value)

    assert error('[{"tokens": [1], "label": "a"},\n {"tokens": [2] "label": "b"}]') == (
        "e.json:2:17: invalid JSON: Expecting ',' delimiter; a .json eval set is a JSON array "
        "of records, or one record a line"
    )
    assert error('{"tokens": [1], "label": "a"}\n{"tokens": [2], "label": }\n') == (
        "e.json:2: invalid JSON (the last line: is the file truncated?): Expecting value"
    )
    assert error('[{"tokens": [1], "label": "a"}, [2, "b"]]') == (
        "e.json[1]: expected an object with 'label' and one of 'tokens', 'features' or "
        "'text', but got list"
    )
    assert error("42") == (
        "e.json: holds a JSON int, not records: a .json eval set is a JSON array of records, "
        "or one record a line"
    )
    assert error('{"version": 2, "examples": {"n": 3}}') == (
        "e.json: holds one JSON object (its keys: 'version', 'examples'), not records: a .json "
        "eval set is a JSON array of records, one record a line, or an object of columns; "
        "write the records themselves (json.dump(records, f)), or give a 'pkg.module:callable' "
        "returning them"
    )
    assert error("[]") == "e.json: the dataset is empty: it holds no records"


def test_a_json_array_parsed_an_element_at_a_time_reads_as_json_loads(tmp_path: Path) -> None:
    """A streamed .json array is parsed a block at a time: whatever the block size
    (a block may end inside a number, an escape or a character of several bytes),
    the same records as ``json.loads`` of the file, and on bad JSON the same
    message at the same line and column (the file read whole names it so too)."""
    import random

    rng = random.Random(0)
    records = [
        {
            "text": 'é€😀 \\u0041 "q" ' * rng.randrange(3),
            "x": rng.random() * 10 ** rng.randrange(-5, 20),
            "n": -rng.randrange(10**6),
            "flags": [True, None, False],
        }
        for _ in range(40)
    ]
    path = tmp_path / "a.json"

    def parsed(text: str, block: int) -> object:
        write(path, text)
        try:
            return [record for _, record in iter_json_array(path, "a.json", block)]
        except DataError as exc:
            return str(exc).removeprefix("a.json:").split(";")[0]

    def loaded(text: str) -> object:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            return f"{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"

    for indent in (None, 1, "\t"):
        text = json.dumps(records, indent=indent, ensure_ascii=False)
        for block in (1, 2, 3, 5, 64, 1 << 20):
            assert parsed("\ufeff" + text + "\n\n", block) == records, (indent, block)
    for text in ("[]", " [ ] ", "[1,]", "[1 2]", "[", '[{"a": 1', "[1] x", "[1]]", '["a\nb"]'):
        for block in (1, 3, 100):
            assert parsed(text, block) == loaded(text), (text, block)
    # A character inserted at random into an array of records, 300 times.
    good = [{"tokens": list(range(rng.randrange(1, 9))), "label": "x" * rng.randrange(4)}] * 30
    for _ in range(300):
        text = json.dumps(good, indent=rng.choice([None, 2]))
        at = rng.randrange(1, len(text) - 1)
        text = text[:at] + rng.choice(["x", ",", "]", "}", '"', " 1", ":", "[", "\\"]) + text[at:]
        block = rng.choice([1, 7, 64, 1 << 20])
        assert parsed(text, block) == loaded(text), (text, block)
    # Bytes that are not UTF-8 name their line; a gzipped array reads the same.
    write(path, b'[\n{"text": "a"},\n{"text": "\xff"}]')
    with pytest.raises(
        DataError, match=r"^a.json:3: bytes that are not UTF-8 \(invalid start byte"
    ):
        list(iter_json_array(path, "a.json"))
    gz = write(tmp_path / "a.json.gz", gzip.compress(json.dumps(records).encode()))
    assert [r for _, r in iter_json_array(gz, "a.json.gz", 7)] == records


def test_a_json_object_of_columns_is_not_streamed_and_says_what_to_write(tmp_path: Path) -> None:
    """An object of columns (``Dataset.to_dict()``, pandas' orients), read whole in
    memory, was streamed as JSON lines: its first line was read as one record
    ("label ['ham', 'spam'] is neither a class name...", or invalid JSON where it
    was indented). It is named with what to write; JSON lines and arrays stream."""
    columns = {"tokens": [[1, 2], [3]], "label": ["ham", "spam"]}
    by_index = {"tokens": {"0": [1, 2], "1": [3]}, "label": {"0": "ham", "1": "spam"}}
    for document in (json.dumps(columns), json.dumps(columns, indent=1), json.dumps(by_index)):
        path = write(tmp_path / "c.json", document)
        assert read_json(path).lengths.tolist() == [2, 1]  # in memory
        with pytest.raises(DataError) as info:
            list(stream_records(path, ("ham", "spam"), None, "c.json", 10))
        assert str(info.value) == (
            "c.json: holds one JSON object of records (columns, or pandas' orients), which "
            "cannot be streamed a window at a time: write one record a line (.jsonl: "
            "Dataset.to_json, df.to_json(orient='records', lines=True)) or an array of records "
            "(json.dump(records, f)), or evaluate it in memory (--seqgate-no-streaming)"
        )
    records = [{"tokens": [1, 2], "label": "ham"}, {"tokens": [3], "label": "spam"}]
    for text in (jsonl(*records), json.dumps(records, indent=2)):
        path = write(tmp_path / "c.json", text)
        chunks = list(stream_records(path, ("ham", "spam"), None, "c.json", 1))
        assert [c.labels.tolist() for c in chunks] == [[0], [1]]
        assert [c.record(0) for c in chunks] == (
            ["c.json[0]", "c.json[1]"] if text.startswith("[") else ["c.json:1", "c.json:2"]
        )
    # A first record without a label is the record's error, not the layout's.
    path = write(tmp_path / "c.json", jsonl({"tokens": [1], "lbl": "ham"}))
    with pytest.raises(DataError, match=r"^c.json:1: record has no 'label'"):
        list(stream_records(path, ("ham", "spam"), None, "c.json", 10))


def test_csv_separated_by_semicolons_or_tabs_is_read_by_its_header(tmp_path: Path) -> None:
    """A spreadsheet saved in a locale whose decimal mark is the comma writes ';',
    and a .tsv is often named .csv: the header says which, when it holds no comma
    and names the columns split on it. A comma inside a field is then text."""
    for mark in (";", "\t"):
        path = write(tmp_path / "s.csv", f"label{mark}tokens{mark}note\nspam{mark}1 2{mark}a, b\n")
        data = read_csv(path)
        assert data.lengths.tolist() == [2] and data.metadata["note"] == ["a, b"]
    # Its errors speak of its separator.
    assert csv_error(tmp_path, "x.csv", "label;tokens\nspam;1;2\n").startswith(
        "x.csv:2: 3 fields where the header has 2; a field that holds a semicolon must be quoted"
    )
    # A header of one column with a ';' in its name stays one column.
    assert "but are ['label;body']" in csv_error(tmp_path, "y.csv", "label;body\nspam;hi\n")


def test_tsv_files_read_quoted_as_pandas_writes_them_or_unquoted_as_glue(
    tmp_path: Path,
) -> None:
    """A .tsv (GLUE's ``train.tsv``: ``sentence<TAB>label``) was refused for its
    suffix. It is read tab-separated whatever its header holds (a comma in a
    column's name), quoted as pandas' ``to_csv(sep="\\t")`` quotes, or unquoted as
    GLUE writes it, where a quote is text; gzipped and in shards too."""
    pd = pytest.importorskip("pandas")
    texts = ['he said "hi"', "tab\tinside", "plain, with a comma"]
    written = tmp_path / "pandas.tsv"
    pd.DataFrame({"text": texts, "label": ["ham", "spam", "ham"]}).to_csv(
        written, sep="\t", index=False
    )
    seen: list[str] = []

    def tokenizer(text: str) -> list[int]:
        seen.append(text)
        return [len(word) for word in text.split()]

    data = read_csv(written, tokenizer=tokenizer, display="pandas.tsv")
    assert seen == texts and data.labels.tolist() == [0, 1, 0]
    assert data.record(1) == "pandas.tsv:3"
    glue = 'sentence\tlabel\n" the film is good \t1\nit \'s " funny\t1\na dull , lifeless mess\t0\n'
    write(tmp_path / "train.tsv", glue)
    write(tmp_path / "train-0.tsv.gz", gzip.compress(glue.encode()))
    for name in ("train.tsv", "train-0.tsv.gz", "train-*.tsv.gz"):
        seen.clear()
        settings = Settings.from_dict(
            tmp_path, eval_data=name, columns="text=sentence", labels="0,1"
        )
        data = _read_dataset_with(settings, tokenizer)
        assert seen == ['" the film is good ', "it 's \" funny", "a dull , lifeless mess"], name
        assert data.labels.tolist() == [1, 1, 0]
    assert data.record(2) == "train-0.tsv.gz:4"
    # A header of one name holding a comma is still split on its tabs.
    comma = read_csv(write(tmp_path / "c.tsv", "label\ttokens\tnote, free\nspam\t1 2\tx\n"))
    assert comma.metadata["note, free"] == ["x"]


def _read_dataset_with(settings: Settings, tokenizer: Callable[[str], list[int]]) -> SequenceData:
    from pytest_seqgate import loading

    return loading._read_dataset(settings, "eval_data", settings.eval_data or "", tokenizer)


def test_csv_quoting_is_strict(tmp_path: Path) -> None:
    """Quoted commas, quotes and line breaks are read; an unclosed quote or an
    unquoted comma is an error at its line, not a record that swallows the next
    ones or a text cut at the comma (the csv module's lenient default)."""

    def tok(text: str) -> list[int]:
        return [len(w) for w in text.split()]

    good = write(
        tmp_path / "g.csv",
        'label,text,lang\nham,"hello, world",en\nspam,"multi\nline ""quoted""",fr\n'
        'ham,he said "hi",en\n',
    )
    data = read_csv(good, tokenizer=tok)
    assert data.lengths.tolist() == [2, 3, 3] and data.metadata["lang"] == ["en", "fr", "en"]
    # Each record at the line it starts on, a multi-line one included (the csv
    # module counts to the line it ends on), and the records after it too.
    assert data.line_numbers is not None and data.line_numbers.tolist() == [2, 3, 5]
    gaps = read_csv(
        write(tmp_path / "b.csv", "label,text\nham,a b\n\n\nspam,c\nham,d\n"), tokenizer=tok
    )
    assert gaps.line_numbers is not None and gaps.line_numbers.tolist() == [2, 5, 6]
    assert csv_error(tmp_path, "m.csv", 'label,tokens,note\nham,1,x\nspam,,"two\nlines"\n') == (
        "m.csv:3: empty sequence (length 0): the 'tokens' field is empty; drop the "
        "record or give it at least one step"
    )
    for content, message in (
        ('label,text\nham,"hello\nspam,"x"\n', "u.csv:2: not valid CSV (',' expected after '\"')"),
        ("label,text\nham,ok\nham,hello, world\n", "u.csv:3: 3 fields where the header has 2"),
    ):
        path = write(tmp_path / "u.csv", content)
        with pytest.raises(DataError) as info:
            read_csv(path, tokenizer=tok, display="u.csv")
        assert str(info.value).startswith(message)


def parquet(
    path: Path,
    columns: dict[str, list],
    class_names: list[str] | None = None,
    class_column: str = "label",
) -> Path:
    """A Parquet file; with ``class_names``, the ClassLabel metadata a Hugging Face
    dataset's ``to_parquet`` writes for its ``class_column``."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(columns)
    if class_names is not None:
        info = {"features": {class_column: {"names": class_names, "_type": "ClassLabel"}}}
        table = table.replace_schema_metadata({b"huggingface": json.dumps({"info": info})})
    pq.write_table(table, path)
    return path


def test_parquet_reads_as_the_same_records_in_jsonl(tmp_path: Path) -> None:
    """A .parquet eval set holds the columns a .jsonl record has; it reads into the
    same set, its records named by row from 0 (``ds[1]``, ``df.iloc[1]``)."""
    records = [
        {"tokens": [1, 2, 3], "label": "spam", "lang": "en"},
        {"tokens": [4], "label": "ham", "lang": None},
        {"tokens": [5, 6], "label": "ham", "lang": "fr"},
    ]
    from_file = read_table(
        parquet(tmp_path / "e.parquet", {k: [r[k] for r in records] for k in records[0]})
    )
    from_lines = read_jsonl(write(tmp_path / "e.jsonl", jsonl(*records)))
    for name in ("values", "offsets", "lengths", "labels"):
        assert torch.equal(getattr(from_file, name), getattr(from_lines, name))
    assert from_file.label_names == from_lines.label_names == ("ham", "spam")
    assert from_file.names_inferred
    assert from_file.metadata == {"lang": ["en", None, "fr"]}
    assert from_file.record(1) == f"{tmp_path / 'e.parquet'}[1]"
    # Token ids are taken whole from the column's buffers; an attention mask sends
    # the file through the record-by-record reading, which cuts by it: one result.
    masked = read_table(
        parquet(
            tmp_path / "m.parquet",
            {
                "tokens": [[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 0, 0]],
                "attention_mask": [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]],
                "label": ["spam", "ham", "ham"],
                "lang": ["en", None, "fr"],
            },
        )
    )
    for name in ("values", "offsets", "lengths", "labels"):
        assert torch.equal(getattr(masked, name), getattr(from_file, name))
    assert masked.metadata == from_file.metadata
    # Feature vectors, and a text for the tokenizer.
    vectors = read_table(
        parquet(
            tmp_path / "f.parquet",
            {"features": [[[0.5, 1.0]], [[1.0, 2.0], [3.0, 4.0]]], "label": [0, 1]},
        )
    )
    assert vectors.values.shape == (3, 2) and vectors.lengths.tolist() == [1, 2]
    texts = read_table(
        parquet(tmp_path / "t.parquet", {"text": ["a b", "c"], "label": ["x", "y"]}),
        tokenizer=lambda text: [len(w) for w in text.split()],
    )
    assert texts.lengths.tolist() == [2, 1]


def test_parquet_class_label_names_give_the_classes_and_their_order(tmp_path: Path) -> None:
    """A Hugging Face dataset saved as Parquet stores integer labels and, in the
    schema, its ClassLabel names: they name the classes in the dataset's order (not
    sorted, and not the integers as names), and seqgate_labels, which may order
    them otherwise, reads the labels by name."""
    path = parquet(
        tmp_path / "hf.parquet",
        {"tokens": [[1], [2], [3]], "label": [0, 2, 1]},
        class_names=["neg", "pos", "neutral"],
    )
    data = read_table(path)
    assert data.label_names == ("neg", "pos", "neutral")
    assert not data.names_inferred
    assert data.labels.tolist() == [0, 2, 1]
    reordered = read_table(path, labels=("neutral", "neg", "pos"))
    assert reordered.labels.tolist() == [1, 0, 2]
    with pytest.raises(DataError) as info:
        read_table(
            parquet(tmp_path / "o.parquet", {"tokens": [[1]], "label": [3]}, ["a", "b"]),
            display="o.parquet",
        )
    assert str(info.value) == (
        "o.parquet[0]: label 3 is no index of the dataset's 2 classes ['a', 'b'] (its "
        "ClassLabel names)"
    )
    with pytest.raises(DataError) as info:
        read_table(
            parquet(tmp_path / "t.parquet", {"tokens": [[1], [2]], "label": [0, -1]}, ["a", "b"]),
            display="test.parquet",
        )
    assert str(info.value) == (
        "test.parquet[1]: label -1 is no index of the dataset's 2 classes ['a', 'b'] (its "
        "ClassLabel names): -1 marks a row without its label, as a split whose labels are "
        "withheld has (GLUE's test sets): gate on a split that has them, such as the "
        "validation split"
    )
    # A Hugging Face Dataset built in code declares them in its features alike.
    class_label = SimpleNamespace(names=["neg", "pos"])

    class Rows(list):
        """A list of rows with a ``datasets.Dataset``'s ``features``."""

        def __init__(self, rows: list) -> None:
            super().__init__(rows)
            self.features = {"label": class_label}

    built = from_dataset(
        Rows([{"tokens": [1], "label": 1}, {"tokens": [2], "label": 0}]), "ds", None
    )
    assert built.label_names == ("neg", "pos")
    assert built.labels.tolist() == [1, 0]
    assert not built.names_inferred


def test_a_hugging_face_dataset_is_read_by_column(tmp_path: Path) -> None:
    """A ``datasets.Dataset`` a callable returns is read as one Arrow table (its
    selection and order, whatever its format), not a row at a time (38,000 rows a
    second against 600,000), into the set its rows give; a missing column's advice
    is for a set built in code."""
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"tokens": [[1, 2], [4, 5, 6]], "label": [1, 0], "lang": ["en", None]})

    class Dataset:
        """What the datasets library's Dataset offers: features, rows, formats."""

        __module__ = "datasets.arrow_dataset"

        def __init__(self, table: object) -> None:
            self.table = table
            self.features = {"label": SimpleNamespace(names=["neg", "pos"])}

        def __len__(self) -> int:
            return self.table.num_rows

        def __getitem__(self, index: int | slice) -> object:
            """``ds.with_format("arrow")[:]`` is every row as one Table; no row is read
            alone."""
            assert index == slice(None), "read a row at a time"
            return self.table

        def with_format(self, kind: str) -> Dataset:
            assert kind == "arrow"
            return self

    by_column = from_dataset(Dataset(table), "ds", None)
    by_row = from_dataset(table.to_pylist(), "ds", ("neg", "pos"))
    for name in ("values", "offsets", "lengths", "labels"):
        assert torch.equal(getattr(by_column, name), getattr(by_row, name))
    assert by_column.label_names == ("neg", "pos") and not by_column.names_inferred
    assert by_column.metadata == {"lang": ["en", None]}
    with pytest.raises(DataError) as info:
        from_dataset(Dataset(pa.table({"input_ids": [[1]], "label": [0]})), "hf", None)
    assert str(info.value) == (
        "hf: the columns must include 'label' and one of 'tokens', 'features' or 'text', but "
        "are ['input_ids', 'label']; rename 'input_ids' to 'tokens'"
    )


def test_a_dataframe_is_read_as_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pandas DataFrame from a callable (``pd.read_json(..., lines=True)``) was
    read as a Dataset, whose ``df[0]`` is a column: "reading the item raised
    KeyError: 0". Its rows are the records, by column through pyarrow where it is
    installed, else as dicts, to the same set."""
    pd = pytest.importorskip("pandas")
    records = [
        {"tokens": [1, 2, 3], "label": "spam", "lang": "en"},
        {"tokens": [4], "label": "ham", "lang": None},
        {"tokens": [5, 6], "label": "ham", "lang": "fr"},
    ]
    expected = from_dataset(records, "df", None)
    frame = pd.DataFrame(records)
    read = [from_dataset(frame, "df", None)]
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    read.append(from_dataset(frame, "df", None))
    for data in read:
        for name in ("values", "offsets", "lengths", "labels"):
            assert torch.equal(getattr(data, name), getattr(expected, name))
        assert data.label_names == ("ham", "spam")
        assert data.metadata == {"lang": ["en", None, "fr"]}
        assert data.record(1) == "df[1]"
    with pytest.raises(DataError) as info:
        from_dataset(
            pd.DataFrame({"tokens": [[1], [-1, 2]], "label": ["a", "b"]}).iloc[[1]], "d", None
        )
    assert str(info.value).startswith("d[0]: this sequence")
    # A list of records is named by index too, not as a file's line ("d:1").
    with pytest.raises(DataError) as info:
        from_dataset([{"tokens": [1], "label": "a"}, {"tokens": [-1], "label": "b"}], "d", None)
    assert str(info.value) == (
        "d[1]: this sequence (offset 1, length 1, label 1) is malformed: token ids are "
        "indices, from 0"
    )


def real_hf_dataset() -> object:
    """Three rows of a ``datasets.Dataset`` with ClassLabel names (skips without it)."""
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_dict(
        {"tokens": [[1, 2], [3], [4, 5, 6]], "label": [1, 0, 0]},
        features=datasets.Features(
            {
                "tokens": datasets.Sequence(datasets.Value("int64")),
                "label": datasets.ClassLabel(names=["neg", "pos"]),
            }
        ),
    )


def test_a_real_hugging_face_dataset_is_read_by_column_in_its_selection_and_order() -> None:
    real = real_hf_dataset()
    chosen = from_dataset(real.select([2, 0]).with_format("torch"), "real", None)
    assert chosen.values.tolist() == [4, 5, 6, 1, 2]
    assert chosen.labels.tolist() == [0, 1] and chosen.label_names == ("neg", "pos")


def saved_to_disk(
    folder: Path, columns: dict[str, list], class_names: list[str], class_column: str = "label"
) -> Path:
    """The folder ``Dataset.save_to_disk`` writes: an Arrow stream, ``state.json``
    naming it, ``dataset_info.json`` with the features (as datasets 5 writes them)."""
    pa = pytest.importorskip("pyarrow")
    folder.mkdir()
    table = pa.table(columns)
    arrow = str(folder / "data-00000-of-00001.arrow")
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (folder / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": None})
    )
    features = {class_column: {"names": class_names, "_type": "ClassLabel"}}
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    return folder


def test_a_folder_save_to_disk_wrote_is_an_eval_set(tmp_path: Path) -> None:
    """``ds.save_to_disk("data/test")`` then ``seqgate_eval_data = "data/test"``: the
    folder was "a folder, not a file". Its Arrow files are read with pyarrow (the
    datasets package is not needed), its ClassLabel names are the classes, and the
    prediction cache's key reads the folder's files. A DatasetDict's folder names
    its splits."""
    from pytest_seqgate.cache import cache_key

    saved_to_disk(
        tmp_path / "test", {"tokens": [[1, 2], [4, 5, 6], [7]], "label": [1, 1, 0]}, ["neg", "pos"]
    )
    settings = Settings.from_dict(tmp_path, eval_data="test")
    data = load_dataset(settings, "eval_data")
    assert data.values.tolist() == [1, 2, 4, 5, 6, 7] and data.lengths.tolist() == [2, 3, 1]
    assert data.labels.tolist() == [1, 1, 0] and data.label_names == ("neg", "pos")
    assert data.record(2) == "test[2]" and not data.names_inferred
    key = cache_key(settings)
    (tmp_path / "test" / "dataset_info.json").write_text(
        json.dumps({"features": {"label": {"names": ["pos", "neg"], "_type": "ClassLabel"}}})
    )
    assert cache_key(settings) != key
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    with pytest.raises(ConfigError) as info:
        load_dataset(Settings.from_dict(tmp_path, eval_data="splits"), "eval_data")
    assert str(info.value) == (
        "eval_data: splits holds the splits ['train', 'test'] of a Hugging Face DatasetDict "
        "(save_to_disk); name one split's folder: splits/test"
    )
    (tmp_path / "test" / "data-00000-of-00001.arrow").write_bytes(b"cut")
    with pytest.raises(
        DataError, match=r"^test \(data-00000-of-00001\.arrow\): not a readable Arrow file \("
    ):
        load_dataset(settings, "eval_data")


def test_a_real_save_to_disk_folder_reads_as_its_dataset(tmp_path: Path) -> None:
    real = real_hf_dataset()
    real.select([2, 0]).save_to_disk(str(tmp_path / "test"))
    data = load_dataset(Settings.from_dict(tmp_path, eval_data="test"), "eval_data")
    assert data.values.tolist() == [4, 5, 6, 1, 2]
    assert data.labels.tolist() == [0, 1] and data.label_names == ("neg", "pos")


def test_parquet_errors_name_the_file_and_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def error(path: Path) -> str:
        with pytest.raises((DataError, ConfigError)) as info:
            read_table(path, display=path.name)
        return str(info.value)

    assert error(parquet(tmp_path / "h.parquet", {"input_ids": [[1]], "labels": ["a"]})) == (
        "h.parquet: the columns must include 'label' and one of 'tokens', 'features' or "
        "'text', but are ['input_ids', 'labels']; read them with seqgate_columns = "
        "label=labels, tokens=input_ids (or rename the columns)"
    )
    assert error(parquet(tmp_path / "n.parquet", {"tokens": [[1], None], "label": ["a", "b"]})) == (
        "n.parquet[1]: empty sequence: the 'tokens' field is null; drop the record or give it at "
        "least one step"
    )
    assert error(parquet(tmp_path / "e.parquet", {"tokens": [[1], []], "label": ["a", "b"]})) == (
        "e.parquet[1]: empty sequence (length 0); a classifier needs at least one step: drop "
        "the record or give it a token"
    )
    assert error(parquet(tmp_path / "i.parquet", {"tokens": [[1], [-2]], "label": ["a", "b"]})) == (
        "i.parquet[1]: this sequence (offset 1, length 1, label 1) is malformed: token ids are "
        "indices, from 0"
    )
    assert error(write(tmp_path / "x.parquet", "label,tokens\n")).startswith(
        "x.parquet: not a readable Parquet file (ArrowInvalid: "
    )
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert error(tmp_path / "h.parquet") == (
        "h.parquet: reading a .parquet file needs pyarrow, which is not installed: pip install "
        "'pytest-seqgate[parquet]' (or pyarrow), or give the set as .jsonl"
    )


def test_pt_layout(tmp_path: Path) -> None:
    torch.save(
        {"sequences": [torch.tensor([1, 2]), torch.tensor([3])], "labels": torch.tensor([0, 1])},
        tmp_path / "d.pt",
    )
    data = read_pt(tmp_path / "d.pt")
    assert data.lengths.tolist() == [2, 1]
    # Labels saved as a BCE target, float and [N, 1], are the same class indices.
    torch.save(
        {"sequences": [torch.tensor([1, 2]), torch.tensor([3])], "labels": torch.ones(2, 1)},
        tmp_path / "f.pt",
    )
    assert read_pt(tmp_path / "f.pt").labels.tolist() == [1, 1]
    torch.save({"inputs": [torch.tensor([1])]}, tmp_path / "w.pt")
    with pytest.raises(DataError, match=r"wrong layout: expected a dict \{'sequences'"):
        read_pt(tmp_path / "w.pt")
    with pytest.raises(DataError, match=r"^data/w\.pt: wrong layout"):  # named as written
        read_pt(tmp_path / "w.pt", display="data/w.pt")
    # Saved under Hugging Face's names: the renames are said.
    ids = torch.ones(2, 3, dtype=torch.int64)
    torch.save({"input_ids": ids, "attention_mask": ids, "label": ids[:, 0]}, tmp_path / "hf.pt")
    with pytest.raises(DataError) as info:
        read_pt(tmp_path / "hf.pt")
    assert str(info.value).endswith(
        "with keys ['attention_mask', 'input_ids', 'label']; rename 'input_ids' to "
        "'sequences' and 'label' to 'labels'"
    )


def test_pt_file_of_padded_sequences_with_their_lengths_or_mask(tmp_path: Path) -> None:
    """A tokenized set is usually saved as one padded tensor with its lengths or
    attention mask: the 'lengths' key was ignored, and the set refused as padded
    (the mask read as a sequence of its own). Cut by either, it is the set saved
    unpadded; a left-padded mask works too."""
    gen = torch.Generator().manual_seed(0)
    unpadded = [torch.randint(1, 50, (int(n),), generator=gen) for n in (5, 1, 8, 3)]
    labels = torch.tensor([0, 1, 1, 0])
    right = torch.nn.utils.rnn.pad_sequence(unpadded, batch_first=True)
    lengths = torch.tensor([len(s) for s in unpadded])
    left = torch.stack(
        [torch.cat([torch.zeros(8 - len(s), dtype=torch.int64), s]) for s in unpadded]
    )
    layouts = {
        "list": {"sequences": unpadded},
        "lengths": {"sequences": right, "lengths": lengths},
        "mask": {"sequences": right, "attention_mask": (right != 0).to(torch.int64)},
        "left": {"sequences": left, "attention_mask": left != 0},
    }
    read = {}
    for name, layout in layouts.items():
        torch.save({**layout, "labels": labels}, tmp_path / f"{name}.pt")
        read[name] = read_pt(tmp_path / f"{name}.pt")
    for data in read.values():
        assert torch.equal(data.values, read["list"].values)
        assert torch.equal(data.lengths, lengths) and torch.equal(data.labels, labels)
    features = torch.randn(4, 8, 3, generator=gen)
    torch.save({"sequences": features, "lengths": lengths, "labels": labels}, tmp_path / "f.pt")
    data = read_pt(tmp_path / "f.pt")
    assert data.kind == "features" and torch.equal(data[2][0], features[2, :8])
    assert torch.equal(data[1][0], features[1, :1])

    def refused(layout: dict, message: str) -> None:
        torch.save({**layout, "labels": labels}, tmp_path / "bad.pt")
        with pytest.raises(DataError) as info:
            read_pt(tmp_path / "bad.pt", display="data/bad.pt")
        assert str(info.value).startswith(message), str(info.value)

    mask = (right != 0).to(torch.int64)
    refused(
        {"sequences": right, "lengths": lengths, "attention_mask": mask},
        "data/bad.pt: give 'lengths' or 'attention_mask', not both",
    )
    refused(
        {"sequences": unpadded, "lengths": lengths},
        "data/bad.pt: 'lengths' cuts a padded tensor of sequences [N, steps] or [N, steps, "
        "features], but 'sequences' is list; give unpadded sequences without 'lengths'",
    )
    refused(
        {"sequences": right, "lengths": lengths[:3]},
        "data/bad.pt: 'lengths' has shape [3], but 'sequences' holds 4 sequences",
    )
    refused(
        {"sequences": right, "lengths": torch.tensor([5, 0, 8, 3])},
        "data/bad.pt[1]: length 0 is not between 1 and the 8 steps",
    )
    refused(
        {"sequences": right, "lengths": lengths.float()},
        "data/bad.pt: 'lengths' must be an integer or bool tensor, not Tensor of torch.float32",
    )
    refused(
        {"sequences": right, "attention_mask": mask * 2},
        "data/bad.pt[0]: attention_mask holds 2 at step 0: expected 1 on real steps",
    )
    refused(
        {"sequences": right, "attention_mask": mask * torch.tensor([[1], [0], [1], [1]])},
        "data/bad.pt[1]: the attention_mask marks no real step",
    )
    # Padded and nothing to cut it by: refused once evaluated, saying what to add.
    torch.save({"sequences": right.repeat(5, 1), "labels": labels.repeat(5)}, tmp_path / "p.pt")
    with pytest.raises(DataError, match=r"beside a \.pt file's padded tensor"):
        read_pt(tmp_path / "p.pt").refuse_padded()


def test_dataset_callable_and_text(tmp_path: Path) -> None:
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return [(torch.tensor([1, 2]), 'a'), (torch.tensor([3]), 'b')]\n"
        "def tok(text):\n"
        "    return [len(w) for w in text.split()]\n"
    )
    settings = Settings.from_dict(tmp_path, eval_data="mydata:build")
    data = load_dataset(settings, "eval_data")
    assert data.label_names == ("a", "b") and len(data) == 2
    write(tmp_path / "t.jsonl", jsonl({"text": "hello big world", "label": "x"}))
    settings = Settings.from_dict(tmp_path, eval_data="t.jsonl", tokenizer="mydata:tok")
    assert load_dataset(settings, "eval_data")[0][0].tolist() == [5, 3, 5]


def test_tokenizer_outputs_and_failures(tmp_path: Path) -> None:
    """Ids as a list, a tensor, an array or a Hugging Face encoding are taken; a
    tokenizer that raises or returns the words is an error naming the record."""
    import numpy as np

    path = write(tmp_path / "t.jsonl", jsonl({"text": "hello big world", "label": 0}))
    for tokenizer in (
        lambda t: [len(w) for w in t.split()],
        lambda t: torch.tensor([len(w) for w in t.split()]),
        lambda t: np.array([len(w) for w in t.split()]),
        lambda t: {"input_ids": [len(w) for w in t.split()], "attention_mask": [1, 1, 1]},
        lambda t: [np.int64(len(w)) for w in t.split()],  # NumPy integers: made ints
    ):
        assert read_jsonl(path, tokenizer=tokenizer)[0][0].tolist() == [5, 3, 5]

    def broken(text: str) -> list[int]:
        raise ValueError("vocab file missing")

    with pytest.raises(DataError) as info:
        read_jsonl(path, tokenizer=broken, display="t.jsonl")
    # Where it raised, as pytest would show it: the tokenizer's own line.
    message, _, where = str(info.value).partition(" (raised at ")
    assert message == (
        "t.jsonl:1: the tokenizer test_loading:test_tokenizer_outputs_and_failures.<locals>."
        "broken raised ValueError on the text 'hello big world': vocab file missing"
    )
    assert where.endswith(f"test_loading.py:{broken.__code__.co_firstlineno + 1})")
    with pytest.raises(
        DataError,
        match=r"t.jsonl:1: the tokenizer .* returned \['hello', 'big', "
        r"'world'\] for the text 'hello big world'; it must return a list of int",
    ):
        read_jsonl(path, tokenizer=str.split, display="t.jsonl")
    # What it returned instead says what to do: a batch of one (return_tensors="pt"), floats.
    for tokenizer, said in (
        (
            lambda t: torch.tensor([[len(w) for w in t.split()]]),
            "(this is a batch of one sequence, as return_tensors='pt' gives: give each "
            "sequence 1-D, its first row (ids[0], or .squeeze(0)))",
        ),
        (lambda t: [float(len(w)) for w in t.split()], "(whole numbers as int, not float)"),
        (str.split, "(the vocabulary's indices, not the words)"),
    ):
        with pytest.raises(DataError) as info:
            read_jsonl(path, tokenizer=tokenizer, display="t.jsonl")
        assert str(info.value).endswith(said)
    # None for a text it gave up on, on the second record: an INTERNALERROR before.
    two = write(
        tmp_path / "two.jsonl",
        jsonl({"text": "fine", "label": 0}, {"text": "no words", "label": 1}),
    )
    with pytest.raises(DataError) as info:
        read_jsonl(two, tokenizer=lambda t: None if " " in t else [1], display="two.jsonl")
    assert str(info.value).startswith(
        "two.jsonl:2: the tokenizer test_loading:test_tokenizer_outputs_and_failures.<locals>."
        "<lambda> returned None for the text 'no words'; it must return a list of int token ids"
    )


def test_a_tokenizer_object_is_asked_to_encode(tmp_path: Path) -> None:
    """``seqgate_tokenizer = "tok:tokenizer"`` naming a tokenizers-library
    ``Tokenizer`` (or SentencePiece, tiktoken: objects with ``.encode``, not
    callables) failed on every record with "'Tokenizer' object is not callable",
    and an ``Encoding`` (ids under ``.ids``) was "not a list of int token ids"."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.loading import configured_tokenizer, load_dataset

    (tmp_path / "tok_objects.py").write_text(
        "class Encoding:\n"
        "    def __init__(self, ids):\n"
        "        self.ids = ids\n"
        "class Tokenizer:\n"
        "    def encode(self, text):\n"
        "        return Encoding([len(w) for w in text.split()])\n"
        "class Plain:\n"
        "    def encode(self, text):\n"
        "        return [len(w) for w in text.split()]\n"
        "class Vocabulary:\n"
        "    pass\n"
        "tokenizer, plain, vocabulary = Tokenizer(), Plain(), Vocabulary()\n"
    )
    write(tmp_path / "t.jsonl", jsonl({"text": "hello big world", "label": 0}))
    for name in ("tokenizer", "plain"):
        settings = Settings.from_dict(
            tmp_path, eval_data="t.jsonl", tokenizer=f"tok_objects:{name}"
        )
        assert load_dataset(settings, "eval_data")[0][0].tolist() == [5, 3, 5]
    with pytest.raises(ConfigError) as info:
        configured_tokenizer(Settings.from_dict(tmp_path, tokenizer="tok_objects:vocabulary"))
    assert str(info.value) == (
        "tokenizer: 'tok_objects:vocabulary' is a tok_objects.Vocabulary object, which can "
        "neither be called nor .encode() a text; name a function mapping a text to token ids"
    )


def test_a_tokenizer_json_file_is_a_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``seqgate_tokenizer = "checkpoints/tokenizer.json"``, the file a Hugging Face
    tokenizer's save_pretrained writes, was "expected an import path". It is read
    with the tokenizers library: its ids, special tokens included, and not the
    padding the file was saved with (seqgate pads each batch itself)."""
    tokenizers = pytest.importorskip("tokenizers")
    from pytest_seqgate.config import Settings
    from pytest_seqgate.loading import configured_tokenizer, load_dataset

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "hello": 3, "big": 4, "world": 5}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", 2)]
    )
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=8)
    tok.save(str(tmp_path / "tokenizer.json"))
    write(
        tmp_path / "t.jsonl",
        jsonl({"text": "hello big world", "label": 0}, {"text": "odd", "label": 1}),
    )
    settings = Settings.from_dict(tmp_path, eval_data="t.jsonl", tokenizer="tokenizer.json")
    data = load_dataset(settings, "eval_data")
    assert data[0][0].tolist() == [2, 3, 4, 5]
    assert data[1][0].tolist() == [2, 1]
    write(tmp_path / "vocab.json", '{"hello": 3}')
    for value, message in (
        (
            "vocab.json",
            "tokenizer: vocab.json is not a tokenizer.json the tokenizers library reads (",
        ),
        (
            "tok.txt",
            "tokenizer: expected an import path like 'pkg.module:callable', a "
            "tokenizer.json file or a SentencePiece .model file, but got 'tok.txt'",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            configured_tokenizer(Settings.from_dict(tmp_path, tokenizer=value))
        assert str(info.value).startswith(message)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ConfigError) as info:
        configured_tokenizer(settings)
    assert str(info.value) == (
        "tokenizer: reading tokenizer.json needs the tokenizers package, which is not "
        "installed: pip install tokenizers"
    )


def test_a_sentencepiece_model_file_is_a_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``seqgate_tokenizer = "spm.model"``, the file SentencePiece trains (and that
    T5 and ALBERT keep as ``spiece.model``), was "expected an import path". It is
    read with sentencepiece: the ids ``sp.encode(text)`` gives, no BOS or EOS
    added; a file that is no model, or a missing package, is named."""
    if importlib.util.find_spec("sentencepiece") is None:
        pytest.skip("needs sentencepiece (a test dependency)")
    import io

    import sentencepiece as spm

    from pytest_seqgate.loading import configured_tokenizer

    model = io.BytesIO()
    words = ["win money now", "see you at noon", "free prize inside", "lunch at noon"]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(words * 20),
        model_writer=model,
        vocab_size=30,
        hard_vocab_limit=False,
        minloglevel=2,
        model_type="word",
    )
    (tmp_path / "spm.model").write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))
    write(
        tmp_path / "t.jsonl",
        jsonl({"text": "win money now", "label": 1}, {"text": "lunch at noon", "label": 0}),
    )
    settings = Settings.from_dict(tmp_path, eval_data="t.jsonl", tokenizer="spm.model")
    data = load_dataset(settings, "eval_data")
    assert data[0][0].tolist() == processor.encode("win money now")
    assert data[1][0].tolist() == processor.encode("lunch at noon")
    assert len(data[0][0]) == 3  # one id a word: no BOS or EOS added
    write(tmp_path / "bad.model", "not a model")
    with pytest.raises(ConfigError) as info:
        configured_tokenizer(Settings.from_dict(tmp_path, tokenizer="bad.model"))
    assert str(info.value).startswith(
        "tokenizer: bad.model is not a SentencePiece model sentencepiece reads ("
    )
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(ConfigError) as info:
        configured_tokenizer(settings)
    assert str(info.value) == (
        "tokenizer: reading spm.model needs the sentencepiece package, which is not "
        "installed: pip install sentencepiece"
    )


def test_a_records_attention_mask_cuts_its_padded_tokens(tmp_path: Path) -> None:
    """Rows of a set tokenized with padding (Hugging Face's padding="max_length")
    carry their attention mask: the padded tokens were refused as already padded,
    and the mask kept as metadata. As in a padded .pt, the mask cuts the tokens."""
    plain = [{"tokens": [5, 6, 7], "label": 0}, {"tokens": [8], "label": 1}]
    padded = [
        {"tokens": [5, 6, 7, 0], "attention_mask": [1, 1, 1, 0], "label": 0},
        {"tokens": [0, 0, 0, 8], "attention_mask": [0, 0, 0, 1], "label": 1},  # left padding
    ]
    write(tmp_path / "p.jsonl", "".join(json.dumps(r) + "\n" for r in padded))
    write(
        tmp_path / "p.csv", 'label,tokens,attention_mask\n0,5 6 7 0,1 1 1 0\n1,"[0, 8]","[0, 1]"\n'
    )
    want = from_dataset(plain, "mine", None)
    csv = read_csv(tmp_path / "p.csv")
    for got in (from_dataset(padded, "mine", None), read_jsonl(tmp_path / "p.jsonl"), csv):
        assert torch.equal(got.values, want.values) and torch.equal(got.lengths, want.lengths)
        assert "attention_mask" not in got.metadata
    for mask, message in (
        (
            [1, 1],
            "mine[0]: 'attention_mask' must be a list of 0 and 1 as long as 'tokens' "
            "(4 steps), but got 2 values",
        ),
        ([1, 2, 1, 0], "mine[0]: 'attention_mask' holds 2: expected 1 on real steps"),
        ([0, 0, 0, 0], "mine[0]: empty sequence (length 0)"),
    ):
        with pytest.raises(DataError) as info:
            from_dataset([{**padded[0], "attention_mask": mask}], "mine", None)
        assert str(info.value).startswith(message)


def test_text_without_a_tokenizer_names_the_token_ids_the_record_holds() -> None:
    """A tokenized Hugging Face dataset keeps 'text' beside 'input_ids': the error
    said only to configure a tokenizer, though the ids were there."""
    rows = [{"text": "hi there", "input_ids": [101, 7, 102], "label": 0}]
    with pytest.raises(DataError) as info:
        from_dataset(rows, "mine", None)
    assert str(info.value) == (
        "mine[0]: record has 'text' but no tokenizer is configured; set seqgate_tokenizer to "
        "a 'pkg.module:callable' mapping text to token ids, or, since it holds token ids as "
        "'input_ids', read those: seqgate_columns = tokens=input_ids (the 'text' is then "
        "left aside)"
    )
    with pytest.raises(DataError, match=r"token ids$"):
        from_dataset([{"text": "hi", "label": 0}], "mine", None)
    # As the message says: the ids are read, cut by a mask beside them, the text left
    # aside (a tokenized dataset with padding, as a table and as rows).
    padded = [
        {"text": "hi there", "input_ids": [101, 7, 102, 0], "attention_mask": [1, 1, 1, 0]},
        {"text": "yo", "input_ids": [101, 9, 0, 0], "attention_mask": [1, 1, 0, 0]},
    ]
    rows = [{**row, "label": k} for k, row in enumerate(padded)]
    read = [from_dataset(rows, "mine", None, column_of={"tokens": "input_ids"})]
    pa = pytest.importorskip("pyarrow")
    table = pa.table({key: [row[key] for row in rows] for key in rows[0]})
    read.append(from_table(table, "t", None, column_of={"tokens": "input_ids"}))
    for data in read:
        assert data.values.tolist() == [101, 7, 102, 101, 9] and data.lengths.tolist() == [3, 2]
        assert data.metadata == {}


def test_from_dataset_refuses_token_ids_given_as_a_batch_of_one() -> None:
    """``tokenizer(text, return_tensors="pt")["input_ids"]`` is [1, n]: read as one
    step of n-wide features it was evaluated as such, or refused as features of
    unequal widths, which said nothing of what was wrong."""
    import re

    import numpy as np

    said = "a batch of one sequence, as return_tensors='pt' gives: give each sequence 1-D"
    for ids in (torch.tensor([[5, 6, 7]]), np.array([[5, 6, 7]], dtype=np.int32)):
        with pytest.raises(DataError) as info:
            from_dataset([(ids, 0), (ids[:, :2], 1)], "mine", None)
        assert str(info.value).startswith(
            f"mine[0]: the sequence is a [1, 3] array of integers, {said}"
        )
    with pytest.raises(DataError, match=re.escape(f"holds [5, 6, 7] (a list: {said}")):
        from_dataset([{"tokens": torch.tensor([[5, 6, 7]]), "label": 0}], "mine", None)
    # One step of float features is what it says.
    assert from_dataset([(torch.tensor([[0.5, 0.2]]), 0)], "mine", None).kind == "features"


def test_from_dataset_says_where_an_item_raised() -> None:
    class Broken:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple[list[int], int]:
            if i == 1:
                raise OSError("shard 1 is missing")
            return [1, 2], 0

    with pytest.raises(DataError) as info:
        from_dataset(Broken(), "mine", None)
    message, _, where = str(info.value).partition(" (raised at ")
    assert message == "mine[1]: reading the item raised OSError: shard 1 is missing"
    line = Broken.__getitem__.__code__.co_firstlineno + 2
    assert where.endswith(f"test_loading.py:{line})")


def test_from_dataset_takes_numpy_values() -> None:
    """NumPy arrays and scalars (np.int64 is not an int) read as their numbers."""
    import numpy as np

    pairs = [
        (np.array([1, 2, 3]), np.int64(1)),
        ([np.int64(4), 5], torch.tensor(0)),
        ([np.int32(8)], np.int32(0)),
    ]
    data = from_dataset(pairs, "mine", None)
    assert data.values.tolist() == [1, 2, 3, 4, 5, 8] and data.labels.tolist() == [1, 0, 0]
    # Wherever they sit in a list, NumPy and torch integers are ids; a float is not.
    mixed = from_dataset([([5, np.int64(4), torch.tensor(3)], 0)], "mixed", None)
    assert mixed.values.tolist() == [5, 4, 3]
    with pytest.raises(DataError, match=r"mixed\[0\]: 'tokens' must be a list of integers"):
        from_dataset([([5, torch.tensor(2.5)], 0)], "mixed", None)
    features = from_dataset([(np.ones((3, 2), dtype=np.float32), 0)], "feat", None)
    assert features.values.shape == (3, 2)


def test_from_dataset_rejects_non_pairs() -> None:
    with pytest.raises(DataError, match=r"mine\[0\]: expected a \(sequence, label\) pair"):
        from_dataset([torch.tensor([1])], "mine", None)


def test_from_dataset_takes_records() -> None:
    """Rows of a Hugging Face dataset, or any dicts: the fields of a .jsonl record,
    tensors and NumPy values read as numbers, other keys kept as metadata."""
    import numpy as np

    rows = [
        {"tokens": torch.tensor([1, 2, 3]), "label": "spam", "lang": "en"},
        {"tokens": [np.int64(4), 5], "label": np.int64(0), "lang": "fr"},
        {"text": "7 8", "label": torch.tensor(1), "lang": "en"},
    ]
    data = from_dataset(
        rows, "mine", ("ham", "spam"), tokenizer=lambda t: [int(x) for x in t.split()]
    )
    assert data.values.tolist() == [1, 2, 3, 4, 5, 7, 8]
    assert data.labels.tolist() == [1, 0, 1] and data.metadata["lang"] == ["en", "fr", "en"]
    # A tokenized Hugging Face dataset names its ids input_ids: the rename, and no
    # advice to build in code what already is code.
    with pytest.raises(DataError) as info:
        from_dataset([{"input_ids": [1, 2], "attention_mask": [1, 1], "label": 0}], "hf", None)
    assert str(info.value) == (
        "hf[0]: a record needs one of 'tokens', 'features' or 'text', but has none (its "
        "keys: 'input_ids', 'attention_mask', 'label'); rename 'input_ids' to 'tokens'"
    )


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens).mean(1))


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch pwned",))


@pytest.fixture
def factory_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "arch.py").write_text(
        "from torch import nn\n"
        "class Small(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.embedding = nn.Embedding(10, 4)\n"
        "        self.head = nn.Linear(4, 2)\n"
        "    def forward(self, tokens):\n"
        "        return self.head(self.embedding(tokens).mean(1))\n"
        "def build():\n"
        "    return Small()\n"
        "def broken():\n"
        "    raise RuntimeError('no GPU here')\n"
        "def sized(vocab_size, hidden, *, heads, dropout=0.1, **options):\n"
        "    return Small()\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_state_dict_loads(factory_project: Path) -> None:
    torch.save(Small().state_dict(), factory_project / "w.ckpt")
    model = load_model(
        Settings.from_dict(factory_project, model="w.ckpt", model_factory="arch:build")
    )
    assert isinstance(model, nn.Module)


def test_a_factory_without_a_checkpoint_says_which_setting_was_meant(
    factory_project: Path,
) -> None:
    """A factory alone read "no model configured", though a setting named a model
    builder: the user who meant the callable to be the model is told to move it
    to seqgate_model, the one who forgot the checkpoint to set it."""
    with pytest.raises(ConfigError) as info:
        load_model(Settings.from_dict(factory_project, model_factory="arch:build"))
    message = str(info.value)
    assert "model_factory names 'arch:build', but seqgate_model is not set" in message
    assert "set seqgate_model to the checkpoint" in message
    assert "set seqgate_model = 'arch:build' instead" in message
    with pytest.raises(ConfigError, match="no model configured: set seqgate_model"):
        load_model(Settings.from_dict(factory_project))


def test_one_letter_module_is_an_import_path(
    factory_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``m:build`` was read as a Windows drive-relative file, "file not found: m:build",
    on every system; only Windows has drives."""
    from pytest_seqgate import config

    (factory_project / "m.py").write_text("from arch import build\n")
    model = load_model(Settings.from_dict(factory_project, model="m:build"))
    assert type(model).__name__ == "Small"
    # Windows as config.py sees it, without making the whole process think so.
    monkeypatch.setattr(config, "os", SimpleNamespace(name="nt"))
    assert not config.is_import_path("C:model.pt")
    assert config.is_import_path("spam.model:build")


def test_file_format_tells_every_model_file_apart(tmp_path: Path) -> None:
    """The loader picks its reader from the first bytes and the archive's names,
    whatever the suffix: an exported program as torch 2.13 writes it and as older
    versions did (a ``serialized_exported_program.json`` and no ``archive_format``),
    TorchScript, safetensors, and everything else for torch.load to judge."""
    from pytest_seqgate.loading import file_format

    model = Small().eval()
    torch.export.save(
        torch.export.export(model, (torch.zeros(2, 3, dtype=torch.int64),)), tmp_path / "new.bin"
    )
    with zipfile.ZipFile(tmp_path / "old.bin", "w") as archive:
        for name in ("serialized_exported_program.json", "serialized_state_dict.pt", "version"):
            archive.writestr(f"old/{name}", b"{}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's
        torch.jit.save(torch.jit.script(model), tmp_path / "script.bin")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    write(tmp_path / "st.bin", len(header).to_bytes(8, "little") + header + bytes(4))
    torch.save(model.state_dict(), tmp_path / "state.bin")
    write(tmp_path / "text.bin", "not a model")
    assert {
        name: file_format(tmp_path / f"{name}.bin")
        for name in ("new", "old", "script", "st", "state", "text")
    } == {
        "new": "exported",
        "old": "exported",
        "script": "torchscript",
        "st": "safetensors",
        "state": "other",
        "text": "other",
    }


def test_state_dict_mismatch_lists_keys(factory_project: Path) -> None:
    state = Small().state_dict()
    state["extra.weight"] = state.pop("head.weight")
    torch.save(state, factory_project / "w.ckpt")
    with pytest.raises(ModelError) as info:
        load_model(Settings.from_dict(factory_project, model="w.ckpt", model_factory="arch:build"))
    assert "missing keys: head.weight; unexpected keys: extra.weight" in str(info.value)
    # Named by its option and as the user wrote it, not by the runner's absolute path.
    assert str(info.value).startswith(
        "model: w.ckpt does not match the module built by seqgate_model_factory"
    )


def test_training_checkpoints_and_wrapper_prefixes_load(factory_project: Path) -> None:
    """The weights are found where training scripts keep them, under the names
    DataParallel, torch.compile and Lightning give them; the loaded model is the
    saved one, weight for weight."""
    source = Small()
    weights = source.state_dict()
    saved = {
        "loop.ckpt": {"epoch": 3, "model_state_dict": weights, "optimizer": {"lr": 0.1}},
        "lightning.ckpt": {"state_dict": {f"model.{k}": v for k, v in weights.items()}},
        "dp.ckpt": {f"module._orig_mod.{k}": v for k, v in weights.items()},
        # A script's own name for the one state dict it holds.
        "own.ckpt": {"epoch": 3, "model_state": weights, "best_f1": 0.9},
    }
    for name, content in saved.items():
        torch.save(content, factory_project / name)
        model = load_model(
            Settings.from_dict(factory_project, model=name, model_factory="arch:build")
        )
        for key, value in model.state_dict().items():
            assert torch.equal(value, weights[key]), (name, key)
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, factory_project / "none.ckpt")
    with pytest.raises(ModelError) as info:
        load_model(
            Settings.from_dict(factory_project, model="none.ckpt", model_factory="arch:build")
        )
    assert "holds a dict with the keys ['epoch', 'optimizer'] and no state dict" in str(info.value)
    assert "'model_state_dict'" in str(info.value)
    # Two state dicts (a model and its EMA): which one is gated is not guessed.
    torch.save({"model_state": weights, "ema": weights}, factory_project / "two.ckpt")
    with pytest.raises(ModelError) as info:
        load_model(
            Settings.from_dict(factory_project, model="two.ckpt", model_factory="arch:build")
        )
    assert str(info.value).endswith(
        "two.ckpt holds a dict with the keys ['ema', 'model_state'] and state dicts under "
        "'model_state', 'ema': seqgate cannot tell which is the model; save the one to gate "
        "with torch.save(checkpoint[KEY], path)"
    )


def test_malicious_pickle_is_not_executed(factory_project: Path) -> None:
    with open(factory_project / "evil.ckpt", "wb") as handle:
        pickle.dump({"head.weight": Evil()}, handle)
    torch.save({"payload": Evil()}, factory_project / "evil2.ckpt")
    for name in ("evil.ckpt", "evil2.ckpt"):
        with pytest.raises(ModelError) as info:
            load_model(Settings.from_dict(factory_project, model=name, model_factory="arch:build"))
        assert not (factory_project / "pwned").exists()
        assert "which can run arbitrary code" in str(info.value) or "cannot read" in str(info.value)
    assert not (factory_project / "pwned").exists()


def test_pickle_refused_until_trusted(factory_project: Path) -> None:
    torch.save({"state_dict": Small().state_dict(), "note": Path("x")}, factory_project / "c.ckpt")
    settings = Settings.from_dict(factory_project, model="c.ckpt", model_factory="arch:build")
    with pytest.raises(
        ModelError,
        match=r"needs full unpickling \(it holds pathlib\.\w*Path, not only tensors\), which "
        r"can run arbitrary code",
    ):
        load_model(settings)
    trusted = Settings.from_dict(
        factory_project, model="c.ckpt", model_factory="arch:build", trust_checkpoints=True
    )
    assert isinstance(load_model(trusted), nn.Module)


def test_a_whole_pickled_model_loads_once_trusted(factory_project: Path) -> None:
    """``torch.save(model, path)``, what many training scripts write: refused,
    naming the model's class and the flag; trusted, it loads as it is (or gives its
    weights to a factory's module). Was: "export it with torch.export"."""
    source = Small()
    torch.save(source, factory_project / "whole.pt")
    with pytest.raises(ModelError) as info:
        load_model(Settings.from_dict(factory_project, model="whole.pt"))
    assert "(it holds test_loading.Small, not only tensors)" in str(info.value)
    assert str(info.value).endswith(
        "or pass --seqgate-trust-checkpoints): a whole pickled model (torch.save(model, "
        "path)) then loads as it is"
    )
    for factory in (None, "arch:build"):
        model = load_model(
            Settings.from_dict(
                factory_project, model="whole.pt", model_factory=factory, trust_checkpoints=True
            )
        )
        for key, value in model.state_dict().items():
            assert torch.equal(value, source.state_dict()[key]), (factory, key)


def test_a_model_pickled_from_a_script_names_its_class_not_a_traceback(
    factory_project: Path,
) -> None:
    """A model class defined in the script that saved it (``__main__.Model``)
    cannot be unpickled elsewhere: trusted, its load was pytest's INTERNALERROR."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from torch import nn\n"
        "class Model(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.head = nn.Linear(2, 2)\n"
        "torch.save(Model(), 'notebook.pt')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=factory_project, check=True)
    with pytest.raises(ModelError) as info:
        load_model(Settings.from_dict(factory_project, model="notebook.pt", trust_checkpoints=True))
    assert str(info.value) == (
        "model: cannot unpickle notebook.pt: it holds Model of __main__, the script or notebook "
        "that saved it, and that class exists only there. Save the state dict "
        "(torch.save(model.state_dict(), path)) and set seqgate_model_factory to a "
        "'pkg.module:callable' that builds the architecture"
    )


def test_torchscript_and_pickle_confusions(factory_project: Path) -> None:
    torch.jit.script(Small()).save(str(factory_project / "ts.pt"))
    assert isinstance(load_model(Settings.from_dict(factory_project, model="ts.pt")), nn.Module)
    with pytest.raises(ModelError, match="is a TorchScript file, not a state-dict checkpoint"):
        load_model(Settings.from_dict(factory_project, model="ts.pt", model_factory="arch:build"))
    torch.save(Small().state_dict(), factory_project / "sd.pt")
    with pytest.raises(
        ModelError,
        match=r"sd\.pt is a state-dict checkpoint: weights without the architecture; set "
        r"seqgate_model_factory",
    ):
        load_model(Settings.from_dict(factory_project, model="sd.pt"))


def test_files_torch_save_did_not_write_are_named_as_such(factory_project: Path) -> None:
    """A JSON file, an empty file, random bytes, a cut-off download: not "refused,
    trust it to unpickle" (torch.load's weights_only error, the wrong advice), but
    what the file is, with or without a factory."""
    torch.save(Small().state_dict(), factory_project / "sd.pt")
    whole = (factory_project / "sd.pt").read_bytes()
    files = {
        "vocab.json": (b'["<pad>", "<unk>", "the"]', 'it starts with b\'["<pad>"'),
        "empty.pt": (b"", "it is empty"),
        "random.pt": (bytes(range(7, 107)), "it starts with b'\\x07"),
        "cut.pt": (whole[: len(whole) // 2], "damaged or cut-off zip archive"),
    }
    for name, (content, what) in files.items():
        (factory_project / name).write_bytes(content)
        for factory in ("arch:build", None):
            settings = Settings.from_dict(factory_project, model=name, model_factory=factory)
            with pytest.raises(ModelError) as info:
                load_model(settings)
            message = str(info.value)
            # The file as the setting names it, not the machine's absolute path.
            assert message.startswith(f"model: {name} is not a file torch.save wrote"), message
            assert what in message, message
            assert "unpickling" not in message


def test_an_onnx_model_is_named_as_one(factory_project: Path) -> None:
    """An ONNX export (by its name, or by the header torch.onnx.export writes: field
    1, the IR version, then "pytorch" as the producer) is not "a file torch.save did
    not write, starting with b'\\x08'": it says what the file is, and the two ways on."""
    header = b"\x08\t\x12\x07pytorch\x1a\x062.13.0:\xdf\x01\n\\"
    for name in ("model.onnx", "exported.bin"):
        (factory_project / name).write_bytes(header + bytes(40))
        with pytest.raises(ModelError) as info:
            load_model(Settings.from_dict(factory_project, model=name))
        assert str(info.value) == (
            f"model: {name} is an ONNX model, and seqgate evaluates PyTorch modules: give the "
            "model it was exported from (a state dict with seqgate_model_factory, a "
            "TorchScript file, or torch.export's .pt2), or, to gate the ONNX model itself, a "
            "'pkg.module:callable' returning an nn.Module whose forward runs it with "
            "onnxruntime and returns the logits as a tensor"
        )


def test_shards_of_jsonl_and_csv_are_one_set_named_by_shard_and_line(tmp_path: Path) -> None:
    """``data/test-*.jsonl`` (a split in shards, as Spark writes its output) was "a
    pattern ... seqgate reads one file", with a pd.concat snippet that lost the
    records' lines. The shards are read in name order as one set (gzipped too),
    each record named by its shard and its line there, in errors and in the
    sample a subset keeps; a CSV shard of another column order reads by its own
    header. A folder of shards names the pattern; a pattern of another format
    still gives the callable."""
    from pytest_seqgate.cache import cache_key

    records = [{"tokens": [k + 1, k + 2], "label": ["ham", "spam"][k % 2]} for k in range(7)]
    whole = read_jsonl(
        write(tmp_path / "whole.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    )
    (tmp_path / "data").mkdir()
    write(
        tmp_path / "data" / "test-00000.jsonl", "".join(json.dumps(r) + "\n" for r in records[:3])
    )
    write(
        tmp_path / "data" / "test-00001.jsonl",
        "\n" + "".join(json.dumps(r) + "\n" for r in records[3:]),
    )
    for k in range(2):  # gzipped shards: the same set
        text = (tmp_path / "data" / f"test-0000{k}.jsonl").read_bytes()
        write(tmp_path / "data" / f"gz-{k}.jsonl.gz", gzip.compress(text))
    packed = load_dataset(Settings.from_dict(tmp_path, eval_data="data/gz-*.jsonl.gz"), "eval_data")
    assert torch.equal(packed.values, whole.values) and packed.record(6) == "data/gz-1.jsonl.gz:5"
    for k in range(2):
        (tmp_path / "data" / f"gz-{k}.jsonl.gz").unlink()
    settings = Settings.from_dict(tmp_path, eval_data="data/test-*.jsonl")
    data = load_dataset(settings, "eval_data")
    assert torch.equal(data.values, whole.values) and torch.equal(data.labels, whole.labels)
    assert [data.record(k) for k in (0, 2, 3, 6)] == [
        "data/test-00000.jsonl:1",
        "data/test-00000.jsonl:3",
        "data/test-00001.jsonl:2",  # after the shard's blank first line
        "data/test-00001.jsonl:5",
    ]
    sample = data.subset(torch.tensor([5, 1]))
    assert [sample.record(0), sample.record(1)] == [
        "data/test-00001.jsonl:4",
        "data/test-00000.jsonl:2",
    ]
    key = cache_key(settings)
    write(tmp_path / "data" / "test-00001.jsonl", json.dumps(records[3]) + "\n")
    assert cache_key(settings) != key  # the key reads every shard
    write(tmp_path / "data" / "test-00001.jsonl", '\n{"tokens": [1], "label": "eggs"}\n')
    with pytest.raises(DataError, match=r"^data/test-00001\.jsonl:2: label 'eggs' is not one of"):
        load_dataset(dataclasses.replace(settings, labels=("ham", "spam")), "eval_data")
    # CSV shards, each read by its own header (the columns in another order).
    write(tmp_path / "data" / "p-0.csv", "label,tokens\nham,1 2\nspam,3\n")
    write(tmp_path / "data" / "p-1.csv", "tokens;label\n4;ham\n5 6;spam\n")
    data = load_dataset(Settings.from_dict(tmp_path, eval_data="data/p-*.csv"), "eval_data")
    assert data.values.tolist() == [1, 2, 3, 4, 5, 6] and data.labels.tolist() == [0, 1, 0, 1]
    assert [data.record(k) for k in range(4)] == [
        "data/p-0.csv:2",
        "data/p-0.csv:3",
        "data/p-1.csv:2",
        "data/p-1.csv:3",
    ]
    write(tmp_path / "data" / "p-1.csv", "tokens,label\n4,ham\nx,spam\n")
    with pytest.raises(
        DataError, match=r"^data/p-1\.csv:3: 'tokens' \(and 'attention_mask', 'token_"
    ):
        load_dataset(Settings.from_dict(tmp_path, eval_data="data/p-*.csv"), "eval_data")

    def error(value: str) -> str:
        with pytest.raises(ConfigError) as info:
            Settings.from_dict(tmp_path, eval_data=value).existing("eval_data")
        return str(info.value)

    assert error("data") == (
        f"eval_data: data is a folder, not a file (read from the rootdir, {tmp_path}); name one "
        f"file in it, or one split's shards with a pattern: data/p-*.csv"
    )
    assert error("data/test-*.pt") == (
        "eval_data: data/test-*.pt is a pattern (0 files match it), and seqgate reads one "
        "file, or a pattern of .jsonl, .json, .csv, .tsv or .parquet files (shards), not of "
        f".pt files (read from the rootdir, {tmp_path}); load the files in code: "
        "seqgate_eval_data = 'pkg.module:callable', or a pytest_seqgate_load_dataset hook"
    )
    assert error("data/tset-*.jsonl") == (
        f"eval_data: no file matches the pattern data/tset-*.jsonl (read from the rootdir, "
        f"{tmp_path})"
    )


def test_git_lfs_pointers_are_named_as_such(factory_project: Path) -> None:
    """A checkout without LFS leaves text pointers where checkpoints and data sets
    should be; each configured file says so, and what to run."""
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n"
    )
    for name in ("model.pt", "eval.jsonl"):
        (factory_project / name).write_text(pointer)
    settings = Settings.from_dict(
        factory_project, model="model.pt", model_factory="arch:build", eval_data="eval.jsonl"
    )
    for role in ("model", "eval_data"):
        with pytest.raises(ConfigError, match="is a Git LFS pointer, not the file it stands for"):
            settings.existing(role)
    with pytest.raises(ConfigError, match=r"git lfs pull.*lfs: true"):
        load_model(settings)


def test_safetensors_state_dict(factory_project: Path) -> None:
    """The Hugging Face weights format, read without its package (the test writes
    it with the package): every dtype it names, the same tensors as saved."""
    from pytest_seqgate.loading import read_safetensors

    save_file = pytest.importorskip("safetensors.torch").save_file

    source = Small()
    save_file(source.state_dict(), str(factory_project / "w.safetensors"))
    settings = Settings.from_dict(
        factory_project, model="w.safetensors", model_factory="arch:build"
    )
    loaded = load_model(settings)
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    gen = torch.Generator().manual_seed(0)
    kinds = {
        "f64": torch.randn(3, 2, dtype=torch.float64, generator=gen),
        "bf16": torch.randn(5, generator=gen).to(torch.bfloat16),
        "f16": torch.randn(2, 2, 2, generator=gen).to(torch.float16),
        "i64": torch.arange(-3, 3),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "flags": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    save_file(kinds, str(factory_project / "kinds.safetensors"), metadata={"format": "pt"})
    read = read_safetensors(factory_project / "kinds.safetensors", "seqgate_model")
    assert set(read) == set(kinds)
    for name, tensor in kinds.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor)
    # Weights without their architecture, and a file cut short, say what they are.
    with pytest.raises(ModelError, match="is a safetensors file, which holds weights only; set"):
        load_model(Settings.from_dict(factory_project, model="w.safetensors"))
    whole = (factory_project / "w.safetensors").read_bytes()
    (factory_project / "cut.safetensors").write_bytes(whole[: len(whole) - 8])
    with pytest.raises(ModelError, match=r"cut.safetensors is not a valid safetensors file: "):
        load_model(
            Settings.from_dict(factory_project, model="cut.safetensors", model_factory="arch:build")
        )


class Summed(nn.Module):
    """Summed token embeddings (the padding id embeds to zeros, so padding changes
    nothing) with dropout: what torch.export captures with dynamic batch and steps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(50, 4, padding_idx=0)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.embedding(tokens).sum(1)))


# A torch without the PT2 archive (2.2.2 and 2.6.0 were checked; 2.13 has it) pickles
# the weights of every program it exports, which the loader refuses unless trusted.
PICKLING_EXPORT = importlib.util.find_spec("torch.export.pt2_archive") is None
DATA = Path(__file__).parent / "data"


def export_to(model: nn.Module, path: Path, dynamic: bool = True, decompose: bool = False) -> None:
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("steps")}
    example = (torch.randint(1, 50, (4, 6)),)
    program = torch.export.export(model, example, dynamic_shapes=(dims,) if dynamic else None)
    torch.export.save(program.run_decompositions() if decompose else program, str(path))


def test_exported_program_is_gated_like_the_module(factory_project: Path) -> None:
    """A torch.export archive (.pt2, TorchScript's successor) loads, runs every
    batch shape of the pass (a last batch of one sequence too), and predicts what
    the module predicts."""
    from pytest_seqgate.evaluation import evaluate

    from conftest import token_set

    model = Summed().eval()
    export_to(model, factory_project / "m.pt2")
    trust = PICKLING_EXPORT
    loaded = load_model(Settings.from_dict(factory_project, model="m.pt2", trust_checkpoints=trust))
    data = token_set(torch.randint(1, 30, (50,), generator=torch.Generator().manual_seed(0)), 0)
    settings = Settings(batch_size=7, bootstrap=0)  # 50 = 7 x 7 + 1
    ours, reference = evaluate(loaded, data, settings), evaluate(model, data, settings)
    assert torch.equal(ours.predictions.predictions, reference.predictions.predictions)
    torch.testing.assert_close(ours.predictions.scores, reference.predictions.scores)
    assert not ours.findings_of("padding_sensitivity")
    # The factory's checkpoint is not this, and a shape-bound export says what it needs.
    with pytest.raises(ModelError, match=r"is an exported program \(torch\.export\), not a state"):
        load_model(Settings.from_dict(factory_project, model="m.pt2", model_factory="arch:build"))
    export_to(model, factory_project / "static.pt2", dynamic=False)
    static = load_model(
        Settings.from_dict(factory_project, model="static.pt2", trust_checkpoints=trust)
    )
    with pytest.raises(ModelError, match="an exported program runs only the shapes it was export"):
        evaluate(static, data, settings)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's own, in run_decompositions
@pytest.mark.parametrize("decompose", [False, True])
def test_exported_program_in_training_mode_is_refused(
    factory_project: Path, decompose: bool
) -> None:
    """Its dropout and batch norm are in its graph (as exported, or decomposed to
    core ATen ops) and no eval() can take them out: refused, not gated."""

    class Normed(Summed):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(4)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.drop(self.embedding(tokens).sum(1))))

    export_to(Normed().train(), factory_project / "train.pt2", decompose=decompose)
    with pytest.raises(ModelError) as info:
        load_model(
            Settings.from_dict(
                factory_project, model="train.pt2", trust_checkpoints=PICKLING_EXPORT
            )
        )
    assert str(info.value).endswith(
        "train.pt2 was exported in training mode: its batch norm, dropout run as in training "
        "(random dropout, batch statistics), and an exported program cannot be put in eval "
        "mode; export model.eval() instead"
    )
    export_to(Normed().eval(), factory_project / "eval.pt2", decompose=decompose)
    settings = Settings.from_dict(
        factory_project, model="eval.pt2", trust_checkpoints=PICKLING_EXPORT
    )
    assert isinstance(load_model(settings), nn.Module)


@pytest.mark.parametrize("saved_by", ["2.2", "2.6"])
def test_exported_program_saved_by_an_older_torch(saved_by: str) -> None:
    """A program as torch 2.2.2 and 2.6.0 saved it (tests/data/make_legacy_export.py:
    every file at the top of the archive, weights pickled). Untrusted, it is refused,
    and the error says an older torch wrote it and that re-exporting is the fix (or,
    on a torch that writes such files itself, that a state dict is). Trusted, it loads
    and gives the logits it gave when it was saved, as 2.13 does for 2.6's; where this
    torch cannot read it at all (2.13 and 2.2's), one line says so and what to do, and
    torch's own traceback, which it logs before trying the older format, stays out
    of the user's terminal."""
    version = torch.__version__.split("+")[0]
    name = f"legacy_export_{saved_by}.pt2"
    reference = json.loads((DATA / name).with_suffix(".json").read_text())
    with pytest.raises(ModelError) as refused:
        load_model(Settings.from_dict(DATA, model=name))
    if PICKLING_EXPORT:
        assert f"torch {version} pickles the weights of every program it exports: save a " in str(
            refused.value
        )
    else:
        assert str(refused.value).startswith(
            f"model: {name} is an exported program saved by an older torch (with "
            f"serialized_exported_program.json at the top of the archive), whose pickled "
            f"weights torch.export.load would unpickle in full"
        )
        assert f"it was refused. Re-export the model with torch {version}" in str(refused.value)
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    logging.getLogger("torch.export").addHandler(handler)
    try:
        model = load_model(Settings.from_dict(DATA, model=name, trust_checkpoints=True))
    except ModelError as exc:
        # A torch reads what it saved itself; a torch with the PT2 archive (2.13 was
        # measured) reads 2.6's older archive but not 2.2's.
        assert not version.startswith(saved_by + ".")
        if not PICKLING_EXPORT:
            assert saved_by == "2.2"
            message = str(exc)
            assert "\n" not in message
            assert message.endswith(
                f"; it was saved by an older torch, in the layout with "
                f"serialized_exported_program.json at the top of the archive, which this torch "
                f"({version}) does not read: re-export the model with torch {version}, or save a "
                f"state dict and set seqgate_model_factory"
            )
            assert not logged
    else:
        with torch.no_grad():
            logits = model(torch.tensor(reference["inputs"]))
        torch.testing.assert_close(logits, torch.tensor(reference["logits"]))
    finally:
        logging.getLogger("torch.export").removeHandler(handler)


@pytest.mark.skipif(
    PICKLING_EXPORT,
    reason=f"torch {torch.__version__} pickles an exported program's weights, which the loader "
    f"refuses first: the check of pickled sample inputs needs a torch with the PT2 archive",
)
def test_exported_program_that_would_unpickle_is_refused(factory_project: Path) -> None:
    """torch.export.load unpickles in full what it cannot read as tensors (here the
    sample inputs): held to the checkpoint rule, nothing in the file runs."""
    import zipfile

    export_to(Summed().eval(), factory_project / "m.pt2")
    with (
        zipfile.ZipFile(factory_project / "m.pt2") as good,
        zipfile.ZipFile(factory_project / "evil.pt2", "w") as evil,
    ):
        for name in good.namelist():
            payload = good.read(name)
            if "/data/sample_inputs/" in name:
                payload = pickle.dumps((Evil(),), protocol=2)
            evil.writestr(name, payload)
    with pytest.raises(ModelError, match=r"whose sample inputs .* would unpickle in full"):
        load_model(Settings.from_dict(factory_project, model="evil.pt2"))
    assert not (factory_project / "pwned").exists()
    # A damaged archive is an error naming it, not a JSONDecodeError from inside.
    with zipfile.ZipFile(factory_project / "bad.pt2", "w") as bad:
        bad.writestr("m/archive_format", "pt2")
        bad.writestr("m/data/weights/model_weights_config.json", "{not json")
    with pytest.raises(ModelError, match=r"cannot read exported program .*bad.pt2: JSONDecode"):
        load_model(Settings.from_dict(factory_project, model="bad.pt2"))


def test_factory_errors(factory_project: Path) -> None:
    torch.save(Small().state_dict(), factory_project / "w.ckpt")
    with pytest.raises(
        ModelError,
        # (Another test of this worker may have imported its own arch.py first.)
        match=r"calling .arch:broken. raised RuntimeError: no GPU here \(raised at \S*arch.py:12\)",
    ):
        load_model(Settings.from_dict(factory_project, model="w.ckpt", model_factory="arch:broken"))
    # A factory of hyperparameters: seqgate calls it bare, and says which it lacks
    # and the wrapper that passes them (it raised a TypeError from the call).
    with pytest.raises(
        ConfigError,
        match=r"^model_factory: 'arch:sized' takes vocab_size, hidden, heads without "
        r"defaults, and seqgate calls it with no arguments: give them defaults, or name a "
        r"function that passes them \(def for_seqgate\(\): return sized\(vocab_size=\.\.\., "
        r"hidden=\.\.\., heads=\.\.\.\)\)$",
    ):
        load_model(Settings.from_dict(factory_project, model="w.ckpt", model_factory="arch:sized"))
    with pytest.raises(ConfigError, match=r"cannot import module 'archx'.*ModuleNotFoundError"):
        load_model(Settings.from_dict(factory_project, model="w.ckpt", model_factory="archx:build"))
    # A src layout the tests' run cannot import: the error says how to make it importable.
    (factory_project / "src" / "srcpkg").mkdir(parents=True)
    (factory_project / "src" / "srcpkg" / "__init__.py").write_text("def build(): pass\n")
    with pytest.raises(ConfigError, match=r"it is under src/: install the project .*pythonpath"):
        load_model(
            Settings.from_dict(factory_project, model="w.ckpt", model_factory="srcpkg:build")
        )
    # A module that is there but does not import says why, and where.
    broken = {
        "needsdep": (
            "import not_installed_pkg\n",
            "needsdep imports 'not_installed_pkg' (at "
            "needsdep.py:1), which is not installed where pytest runs: install it",
        ),
        "typo": ("def build(:\n    pass\n", "fix the syntax at typo.py:1"),
        "raises": (
            "X = 1\nraise RuntimeError('no vocab')\n",
            "(RuntimeError: no vocab); the module raised it as it was imported, at raises.py:2",
        ),
    }
    for name, (source, said) in broken.items():
        (factory_project / f"{name}.py").write_text(source)
        settings = Settings.from_dict(
            factory_project, model="w.ckpt", model_factory=f"{name}:build"
        )
        with pytest.raises(ConfigError) as info:
            load_model(settings)
        assert str(info.value).endswith(said), name


def test_columns_read_the_fields_from_other_names_in_every_format(tmp_path: Path) -> None:
    """``seqgate_columns = tokens=ids, label=category``: a set whose columns have
    other names (a Hugging Face dataset's ``input_ids``, a spreadsheet's
    ``category``) is read where they are, in every format, to the set the
    contract's names give. The file's own ``label`` column, which ``category``
    replaces, is not read (nor kept as metadata); other columns stay metadata."""
    pd = pytest.importorskip("pandas")
    rows = [
        {"ids": [1, 2, 3], "category": "spam", "label": 7, "lang": "en"},
        {"ids": [4], "category": "ham", "label": 8, "lang": "fr"},
        {"ids": [5, 6], "category": "ham", "label": 9, "lang": "en"},
    ]
    expected = from_dataset(
        [{"tokens": r["ids"], "label": r["category"], "lang": r["lang"]} for r in rows], "x", None
    )
    column_of = {"tokens": "ids", "label": "category"}
    frame = pd.DataFrame(rows)
    spaced = frame.assign(ids=[" ".join(map(str, r["ids"])) for r in rows])
    spaced.to_csv(tmp_path / "e.csv", index=False)
    spaced.to_csv(tmp_path / "s.csv", index=False, sep=";")  # found by the mapped header
    write(tmp_path / "e.jsonl", jsonl(*rows))
    parquet(tmp_path / "e.parquet", {k: [r[k] for r in rows] for k in rows[0]})
    read = {
        "jsonl": read_jsonl(tmp_path / "e.jsonl", column_of=column_of),
        "csv": read_csv(tmp_path / "e.csv", column_of=column_of),
        "csv;": read_csv(tmp_path / "s.csv", column_of=column_of),
        "parquet": read_table(tmp_path / "e.parquet", column_of=column_of),
        "records": from_dataset(rows, "r", None, column_of=column_of),
        "frame": from_dataset(frame, "f", None, column_of=column_of),
        # What the plugin does with the setting (an ini's lines, a CLI's commas).
        "settings": load_dataset(
            Settings.from_dict(tmp_path, eval_data="e.jsonl", columns="tokens=ids, label=category"),
            "eval_data",
        ),
    }
    for how, data in read.items():
        for name in ("values", "offsets", "lengths", "labels"):
            assert torch.equal(getattr(data, name), getattr(expected, name)), (how, name)
        assert data.label_names == ("ham", "spam"), how
        assert data.metadata == {"lang": ["en", "fr", "en"]}, how
    # A script's settings may give the mapping as a dict.
    as_dict = Settings(rootdir=tmp_path, eval_data="e.jsonl", columns=column_of)
    assert as_dict.column_of == column_of
    assert torch.equal(load_dataset(as_dict, "eval_data").values, expected.values)
    # The mapping decides what the model sees: the prediction cache keys on it.
    from pytest_seqgate.cache import cache_key

    mapped = Settings.from_dict(tmp_path, eval_data="e.jsonl", columns="tokens=ids")
    assert cache_key(mapped) != cache_key(Settings.from_dict(tmp_path, eval_data="e.jsonl"))
    # A set already named as the contract says (a training set of another layout)
    # is read as it is: the mapping applies where its columns are.
    plain = read_jsonl(
        write(tmp_path / "t.jsonl", jsonl({"tokens": [1], "label": "ham"})), column_of=column_of
    )
    assert plain.values.tolist() == [1] and plain.label_names == ("ham",)


def test_columns_read_a_class_label_under_its_own_name(tmp_path: Path) -> None:
    """A Hugging Face dataset whose ClassLabel column is not ``label`` (TREC's
    ``coarse_label``, a ``labels`` column): mapped, its names are the classes, in the
    dataset's order, from a Parquet file, a save_to_disk folder and a Dataset."""
    columns = {"input_ids": [[1, 2], [3], [4, 5, 6]], "coarse_label": [1, 0, 0]}
    column_of = {"tokens": "input_ids", "label": "coarse_label"}
    sets = [
        read_table(
            parquet(tmp_path / "c.parquet", columns, ["neg", "pos"], "coarse_label"),
            column_of=column_of,
        ),
        read_table(
            saved_to_disk(tmp_path / "saved", columns, ["neg", "pos"], "coarse_label"),
            column_of=column_of,
        ),
    ]
    if importlib.util.find_spec("datasets") is not None:
        datasets = pytest.importorskip("datasets")
        real = datasets.Dataset.from_dict(
            columns,
            features=datasets.Features(
                {
                    "input_ids": datasets.Sequence(datasets.Value("int64")),
                    "coarse_label": datasets.ClassLabel(names=["neg", "pos"]),
                }
            ),
        )
        sets.append(from_dataset(real, "real", None, column_of=column_of))
    for data in sets:
        assert data.values.tolist() == [1, 2, 3, 4, 5, 6]
        assert data.labels.tolist() == [1, 0, 0] and data.label_names == ("neg", "pos")
        assert not data.names_inferred


def test_columns_errors_say_which_column_is_missing(tmp_path: Path) -> None:
    """A mapping that names a column the set lacks is blamed by name, with the one
    meant, before any row is read (a table) or at the record (a .jsonl line)."""
    path = write(tmp_path / "e.jsonl", jsonl({"sentence": "hi", "label": "spam"}))
    with pytest.raises(DataError) as info:
        read_jsonl(path, display="e.jsonl", column_of={"text": "sentense"})
    assert str(info.value) == (
        "e.jsonl:1: a record needs one of 'tokens', 'features' or 'text', but has none (its "
        "keys: 'sentence', 'label'); seqgate_columns reads 'text' from 'sentense', which is "
        "not among them (did you mean `sentence`?)"
    )
    path = write(tmp_path / "e.csv", "category,text\nspam,hi\n")
    with pytest.raises(DataError) as info:
        read_csv(path, display="e.csv", column_of={"label": "class"})
    assert str(info.value) == (
        "e.csv:1: the columns must include 'label' and one of 'tokens', 'features' or "
        "'text', but are ['category', 'text']; seqgate_columns reads 'label' from 'class', "
        "which is not among them"
    )


@pytest.mark.parametrize(
    "value, said",
    [
        ("text", "expected field=column, like text=sentence or label=category, but got 'text'"),
        (
            "sentence=text",
            "'sentence' in 'sentence=text' is not a field seqgate reads; the fields are "
            "label, text, text_pair, tokens, features, attention_mask, token_type_ids (the "
            "field comes first: text=sentence)",
        ),
        (
            "txt=sentence",
            "'txt' in 'txt=sentence' is not a field seqgate reads; the fields are label, "
            "text, text_pair, tokens, features, attention_mask, token_type_ids (did you mean "
            "`text`?)",
        ),
        ("text=a, text=b", "'text' is read from both 'a' and 'b'; give it one column"),
        (
            "text=a, tokens=a",
            "the column 'a' is read as both 'text' and 'tokens'; a column gives one field",
        ),
    ],
)
def test_columns_setting_errors_name_the_entry(value: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_dict(columns=value)
    assert str(info.value) == f"columns: {said}"


def test_a_pattern_of_parquet_shards_is_one_set(tmp_path: Path) -> None:
    """``seqgate_eval_data = "data/test-*.parquet"``, a split the hub keeps in shards:
    its files are read in name order as one set (the ClassLabel names of their
    schema), records named by row across them, as ``load_dataset("parquet",
    data_files=...)`` indexes them; the cache key reads each shard; a folder of
    shards, a pattern matching none and shards of other columns are errors that
    say what to give."""
    from pytest_seqgate.cache import cache_key

    data = tmp_path / "data"
    data.mkdir()
    tokens = [[1, 2], [3], [4, 5, 6], [7], [8, 9], [10]]
    labels = [1, 0, 0, 1, 0, 1]
    for k, (start, stop) in zip((1, 0, 2), [(2, 4), (0, 2), (4, 6)], strict=True):
        name = f"test-0000{k}-of-00003"  # written out of order, read in name order
        parquet(
            data / f"{name}.parquet",
            {"tokens": tokens[start:stop], "label": labels[start:stop]},
            ["neg", "pos"],
        )
    parquet(data / "train-00000-of-00001.parquet", {"tokens": [[1]], "label": [0]}, ["neg", "pos"])
    whole = read_table(
        parquet(tmp_path / "whole.parquet", {"tokens": tokens, "label": labels}, ["neg", "pos"])
    )
    settings = Settings.from_dict(tmp_path, eval_data="data/test-*.parquet")
    shards = load_dataset(settings, "eval_data")
    for name in ("values", "offsets", "lengths", "labels"):
        assert torch.equal(getattr(shards, name), getattr(whole, name)), name
    assert shards.label_names == ("neg", "pos") and not shards.names_inferred
    assert shards.record(5) == "data/test-*.parquet[5]"
    key = cache_key(settings)
    parquet(data / "test-00002-of-00003.parquet", {"tokens": [[4, 5, 7]], "label": [0]})
    assert cache_key(settings) != key

    def error(value: str) -> str:
        with pytest.raises((ConfigError, DataError)) as info:
            load_dataset(Settings.from_dict(tmp_path, eval_data=value), "eval_data")
        return str(info.value)

    assert error("data/tset-*.parquet") == (
        f"eval_data: no file matches the pattern data/tset-*.parquet (read from the "
        f"rootdir, {tmp_path})"
    )
    assert error("data") == (
        f"eval_data: data is a folder, not a file (read from the rootdir, {tmp_path}); name "
        f"one file in it, or one split's shards with a pattern: data/test-*.parquet"
    )
    parquet(data / "test-00009-of-00003.parquet", {"ids": [[1]], "label": [0]})
    assert error("data/test-*.parquet") == (
        "data/test-*.parquet: the shards' columns differ: test-00000-of-00003.parquet has "
        "tokens (list<element: int64>), label (int64), test-00009-of-00003.parquet has ids "
        "(list<element: int64>), label (int64); a pattern names the shards of one split"
    )


def test_a_dict_of_columns_is_read_as_its_rows_and_a_dict_of_splits_names_them() -> None:
    """A callable returning ``Dataset.to_dict()`` or ``df.to_dict("list")`` (columns
    of one length, a label and a sequence among them, under seqgate_columns' names
    too) gets the set its rows give; a dict of splits (``load_dataset(...)``
    returned whole, a DatasetDict) names them and the one to return."""
    rows = [
        {"tokens": [1, 2], "label": "spam", "lang": "en"},
        {"tokens": [3], "label": "ham", "lang": "fr"},
    ]
    expected = from_dataset(rows, "d", None)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    read = from_dataset(columns, "d", None)
    for name in ("values", "offsets", "lengths", "labels"):
        assert torch.equal(getattr(read, name), getattr(expected, name))
    assert read.metadata == {"lang": ["en", "fr"]} and read.record(1) == "d[1]"
    mapped = from_dataset(
        {"ids": torch.tensor([[1, 2], [3, 4]]), "category": torch.tensor([1, 0])},
        "d",
        None,
        column_of={"tokens": "ids", "label": "category"},
    )
    assert mapped.values.tolist() == [1, 2, 3, 4] and mapped.labels.tolist() == [1, 0]
    with pytest.raises(DataError) as info:
        from_dataset({"tokens": [[1]], "label": [0, 1]}, "d", None)
    assert str(info.value) == (
        "d: a dict of columns, read as its rows, needs columns of one length, but they have "
        "{'tokens': 1, 'label': 2}"
    )
    with pytest.raises(DataError) as info:
        from_dataset({"train": rows, "validation": rows, "test": rows}, "spam.data:load", None)
    assert str(info.value).endswith(
        "but got dict: a dict of splits (train, validation, test), as a DatasetDict is; "
        "return one of them, such as dataset['test']"
    )


def saved_pretrained(root: Path) -> Path:
    """``checkpoints/model`` as ``save_pretrained`` leaves it, in outline: a config and
    a weights file (their contents are the stand-in loader's business)."""
    folder = root / "checkpoints" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_a_save_pretrained_folder_is_loaded_with_transformers_from_the_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``seqgate_model = "checkpoints/model"``, the folder a Hugging Face model's
    ``save_pretrained`` wrote, was "a folder, not a file". It is loaded with
    ``AutoModelForSequenceClassification`` from the folder alone (nothing fetched,
    no remote code); a folder whose classifier head would be initialised at random
    (a base model's) is refused, and without transformers the error says what to
    install. (The real library is run in test_model_kinds.py where installed.)"""
    folder = saved_pretrained(tmp_path)
    calls: list[tuple[str, dict[str, object]]] = []
    missing: list[str] = []

    class Auto:
        @staticmethod
        def from_pretrained(path: str, **kwargs: object) -> tuple[nn.Module, dict]:
            calls.append((path, kwargs))
            return nn.Linear(2, 2), {"missing_keys": list(missing)}

    fake = ModuleType("transformers")
    fake.AutoModelForSequenceClassification = Auto  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", fake)
    settings = Settings.from_dict(tmp_path, model="checkpoints/model")
    assert isinstance(load_model(settings), nn.Linear)
    assert calls == [(str(folder), {"local_files_only": True, "output_loading_info": True})]
    missing[:] = ["classifier.bias", "classifier.weight"]
    with pytest.raises(ModelError) as info:
        load_model(settings)
    assert str(info.value) == (
        "model: checkpoints/model has no weights for classifier.bias, classifier.weight, "
        "which transformers would initialise at random: the folder holds a model without "
        "its trained classifier head (a base model's save_pretrained?); save the fine-tuned "
        "sequence classifier"
    )
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError) as info:
        load_model(settings)
    assert str(info.value) == (
        "model: checkpoints/model is a folder save_pretrained wrote, read with the "
        "transformers package, which is not installed: pip install transformers, or load "
        "the model in code (seqgate_model = 'pkg.module:callable')"
    )
    # A folder without a config.json is still no model.
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="other is a folder, not a file"):
        load_model(Settings.from_dict(tmp_path, model="other"))


def test_text_without_a_tokenizer_names_the_one_in_the_models_folder(tmp_path: Path) -> None:
    """A save_pretrained folder as the model keeps its tokenizer.json beside it: a
    set of texts without seqgate_tokenizer is told to name it."""
    folder = saved_pretrained(tmp_path)
    write(tmp_path / "e.jsonl", jsonl({"text": "hi", "label": "ham"}))
    settings = Settings.from_dict(tmp_path, model="checkpoints/model", eval_data="e.jsonl")
    with pytest.raises(DataError, match=r"seqgate_tokenizer to a 'pkg.module:callable'") as info:
        load_dataset(settings, "eval_data")
    assert "model's folder" not in str(info.value)  # no tokenizer.json there yet
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(DataError) as info:
        load_dataset(settings, "eval_data")
    assert str(info.value) == (
        "e.jsonl:1: record has 'text' but no tokenizer is configured; set seqgate_tokenizer "
        "to a 'pkg.module:callable' mapping text to token ids; the model's folder holds its "
        "tokenizer: seqgate_tokenizer = 'checkpoints/model/tokenizer.json'"
    )


def test_an_arrow_file_reads_as_the_same_records_in_parquet(tmp_path: Path) -> None:
    """``.arrow``: the stream a datasets cache or save_to_disk writes (its ClassLabel
    names in the schema), or the IPC file format (``.feather``): read as the same
    records in a .parquet file are, named by row; anything else is named as no
    Arrow file."""
    pa = pytest.importorskip("pyarrow")
    feather = pytest.importorskip("pyarrow.feather")
    columns = {"tokens": [[1, 2], [3], [4, 5, 6]], "label": [1, 0, 0], "lang": ["en", "fr", "en"]}
    expected = read_table(parquet(tmp_path / "e.parquet", columns, ["neg", "pos"]))
    info = {"features": {"label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}
    table = pa.table(columns).replace_schema_metadata({b"huggingface": json.dumps({"info": info})})
    arrow = str(tmp_path / "cache-1.arrow")
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    feather.write_feather(table, tmp_path / "e.feather")
    for name in ("cache-1.arrow", "e.feather"):
        data = load_dataset(Settings.from_dict(tmp_path, eval_data=name), "eval_data")
        for column in ("values", "offsets", "lengths", "labels"):
            assert torch.equal(getattr(data, column), getattr(expected, column)), name
        assert data.label_names == ("neg", "pos") and data.metadata == {"lang": ["en", "fr", "en"]}
        assert data.record(2) == f"{name}[2]"
    write(tmp_path / "bad.arrow", "not arrow")
    with pytest.raises(DataError, match=r"^bad\.arrow: not a readable Arrow file \("):
        load_dataset(Settings.from_dict(tmp_path, eval_data="bad.arrow"), "eval_data")
