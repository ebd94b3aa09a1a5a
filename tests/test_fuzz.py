"""Property tests: bad input is a SeqgateError or a dataset, never another exception;
metrics are invariant to sample order and merge by adding confusion matrices."""

from __future__ import annotations

import contextlib
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
from pytest_seqgate.loading import read_csv, read_jsonl, read_pt
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
        reader = {".jsonl": read_jsonl, ".csv": read_csv, ".pt": read_pt}[suffix]
        try:
            data = reader(path)
        except SeqgateError:
            return
        assert isinstance(data, SequenceData)
        assert len(data) == data.labels.numel() == data.lengths.numel() > 0
        assert int(data.lengths.sum()) == data.values.shape[0]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([".jsonl", ".csv", ".pt"]))
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
