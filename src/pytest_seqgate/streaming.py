"""Streaming evaluation of a .jsonl, .json (lines or an array), .csv or .tsv eval set (or
a pattern of their shards), or one kept in Arrow's formats (.parquet, .arrow, a
save_to_disk folder): memory bounded by a window of batches.

Records are parsed a chunk at a time (``STREAM_WINDOW`` batches); each chunk is
length-bucketed and predicted like an in-memory set, then dropped. What stays
per sample is what the report needs, stored compactly:

=================  =======  ==============================================
array              bytes    needed for
=================  =======  ==============================================
prediction         2        metrics, slices, baselines (int16)
true class         2        metrics, slices, baselines (int16)
content hash       8        duplicates, leakage, baselines (int64)
length             4        length slices (int32)
line number        4        naming records in findings (int32)
scores             4 x C    AP, ROC AUC, curves, ECE (float32; off with
                            ``seqgate_keep_scores = false``)
=================  =======  ==============================================

so 20 + 4C bytes a sample (28 for a binary model), whatever the sequence lengths.
The padding check reruns a seeded sample of the sequences each chunk's pass
padded, a share per chunk in proportion to its size, as the chunks pass (an
in-memory run draws from the one pass over the whole set). A model that
ignores padding gets the same report in both modes.

A training set in those formats streams too (:func:`stream_train`), in larger
windows: none of it is predicted but the train/test gap's sample, drawn as a
set read whole draws it, and what stays is that sample and the eval sequences
it was found to hold. Near copies of training sequences among a streamed eval
set's are looked for by reading its file again (:func:`stream_near_copies`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pytest_seqgate.batching import padded_sample
from pytest_seqgate.cache import PredictionSource
from pytest_seqgate.config import Settings, data_shards, data_suffix, shard_name, table_set
from pytest_seqgate.data import SequenceData
from pytest_seqgate.diagnostics import require_key
from pytest_seqgate.exceptions import ConfigError, DataError
from pytest_seqgate.inference import ForwardHook, predict, scores_alone

if TYPE_CHECKING:
    from pytest_seqgate.minhash import Signed, SignedWindows

STREAM_WINDOW = 64  # batches per chunk
# Training windows' worth of records (minhash.WINDOW each) in a window of a
# streamed eval set's near-copy search where the training set is streamed too and
# not kept (SignedWindows): each eval window is a pass over the training file
# (parsing and signing 300,000 records: 3.6 s). 1,000,000 streamed eval records
# beside 300,000 streamed training records, read again for each: 68.6 s and a
# peak of 853 MiB in windows of one, 42.2 s and 1,030 MiB of two, 26.9 s and
# 1,335 MiB of four. (Training windows kept are signed once for all the eval
# windows: there they are of one, 16.9 s against 16.0 s and 878 against 1,350
# MiB of four, for a set in memory. The first window of a streamed set's search
# is read before its pass shows whether all of it is kept: that one is of four.)
EVAL_WINDOWS = 4


@dataclass
class Precomputed:
    """Stands in for the prediction cache: hands evaluate() what streaming computed,
    and passes the other parts (the training sample's) on to the shared cache."""

    parts: dict[str, dict[str, Tensor]]
    shared: PredictionSource | None = None

    def get_or_compute(
        self, part: str, compute: Callable[[], dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        if part in self.parts:
            return self.parts[part]
        return compute() if self.shared is None else self.shared.get_or_compute(part, compute)


def count_records(path: Path, name: str, column_of: Mapping[str, str] | None = None) -> int:
    """The records of a set to stream: a .jsonl (or .json) file's non-blank lines, a
    .json array's elements (a pass of the parser), a CSV file's rows (a pass over
    each file, of a pattern's shards too), the rows of a set kept in Arrow's formats
    (its files' footers say)."""
    from pytest_seqgate.loading import (
        count_csv_records,
        count_rows,
        iter_json_array,
        open_data,
        streamed_json_array,
    )

    if table_set(path):
        return count_rows(path, name, column_of)
    total = 0
    shards = data_shards(path)
    for file in shards or [path]:
        shown = shard_name(path, name, file) if shards else name
        if data_suffix(path) in (".csv", ".tsv"):
            total += count_csv_records(file, shown, column_of)
            continue
        if (
            not shards
            and data_suffix(path) == ".json"
            and streamed_json_array(file, shown, column_of)
        ):
            total += sum(1 for _ in iter_json_array(file, shown))  # a pass of the parser
            continue
        with open_data(file, shown) as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def stream_eval(
    model: nn.Module,
    settings: Settings,
    device: torch.device,
    forward: ForwardHook | None = None,
    shared: PredictionSource | None = None,
) -> tuple[SequenceData, Precomputed]:
    """Predict the eval set chunk by chunk; return a SequenceData without sequence
    values (lengths, labels, line numbers, kept metadata) and the predictions.

    With ``shared`` (the prediction cache of xdist workers, or --seqgate-cache)
    the compact columns are computed once, under its lock, and read back by the
    other workers and by an unchanged re-run, instead of each streaming the file.
    """
    # (Settings.validate refused a streamed set it cannot read by chunks, or with no labels.)
    if settings.eval_data is None:
        raise ConfigError(
            f"{settings.source('streaming')}: no eval set to stream: set seqgate_eval_data "
            f"to a .jsonl, .json, .csv, .tsv, .parquet or .arrow file"
        )

    def compute() -> dict[str, Any]:
        return _stream_columns(model, settings, device, forward)

    stored = compute() if shared is None else shared.get_or_compute("stream", compute)
    data, parts = _from_columns(stored, settings)
    return data, Precomputed(parts, shared)


def _chunks(settings: Settings, name: str, size: int) -> Iterator[SequenceData]:
    """The records of data setting ``name`` as consecutive chunks of ``size``, read
    by lines (an array's elements) or, in Arrow's formats, by rows."""
    from pytest_seqgate.loading import configured_tokenizer, stream_records, stream_table

    assert settings.labels is not None
    path = settings.existing(name)
    stream = stream_table if table_set(path) else stream_records
    return stream(
        path,
        settings.labels,
        configured_tokenizer(settings),
        settings.display(path),
        size,
        settings.column_of,
    )


class _EvalWindows:
    """A streamed eval set's records for its near-copy search, ``joined``
    training windows' worth (minhash.WINDOW records) at a time, read a window's
    worth at a time (a window that is not token ids is given alone, for the
    search to stop at).

    Each eval window costs a search of the training set, and where that set is
    streamed and not kept (:class:`~pytest_seqgate.minhash.SignedWindows`), a
    pass over its file, so there they are EVAL_WINDOWS joined. ``joined`` is
    read as each window is made: a training set found kept by its first pass
    takes the later windows one at a time. Read a window at a time, the
    records' Python objects (about 1.8 KB a record of 50 tokens) are held for
    one window at most.
    """

    def __init__(self, settings: Settings, joined: int = 1) -> None:
        self.joined = joined
        self.windows = self._read(settings)

    def _read(self, settings: Settings) -> Iterator[SequenceData]:
        from pytest_seqgate.minhash import WINDOW

        pieces: list[SequenceData] = []
        for chunk in _chunks(settings, "eval_data", WINDOW):
            if chunk.kind != "tokens":
                yield chunk
                return
            pieces.append(chunk)
            if len(pieces) >= self.joined:
                window, pieces = _joined(pieces) if len(pieces) > 1 else chunk, []
                yield window  # (the pieces freed while it is searched)
        if pieces:
            yield _joined(pieces) if len(pieces) > 1 else pieces[0]


def stream_train(
    settings: Settings, eval_data: SequenceData | None, eval_hashes: Tensor, near: bool
) -> dict[str, Any]:
    """One pass over a streamed training set (seqgate_train_data under
    seqgate_streaming): the sample the train/test gap predicts, and the eval
    sequences the training set holds.

    The sample is the one the set read whole gives (its records counted first,
    then the same seeded draw of indices, kept as their windows pass), so the
    gap is the same in both modes. Exact copies are found by hash, a window at a
    time. Near copies (``near``) by the windowed MinHash search a set in memory
    takes (:class:`NearCopies`), with the same windows, each best match kept with
    its record's name. Memory holds a window, the sample, and the eval side; not
    the training set. A streamed eval set (``eval_data`` None) keeps no
    sequences: this pass searches its first window of records (EVAL_WINDOWS
    training windows' worth), read for it, and :func:`stream_near_copies` the
    others: an eval set of up to 262,144 records costs no pass beyond this one
    (a second one over 2,000,000 training records took 16 s of 44), and for a
    larger one this pass keeps the training windows, signed, up to SIGNED_BUDGET
    (300,000 records of 45 tokens on average: 312 MiB), so that where all of
    them fit the later eval windows are searched without reading the file again.
    """
    from pytest_seqgate.minhash import SIGNED_BUDGET, WINDOW, NearCopies, SignedWindows

    path = settings.existing("train_data")
    display = settings.display(path)
    threshold = settings.near_duplicate_threshold
    size = count_records(path, display, settings.column_of)
    drawn = torch.arange(size)
    if size > settings.train_sample:
        gen = torch.Generator().manual_seed(settings.seed)
        drawn = torch.randperm(size, generator=gen)[: settings.train_sample].sort().values
    exact = torch.zeros(len(eval_hashes), dtype=torch.bool)
    eval_windows = None
    budget = 0
    if near and eval_data is None:
        eval_windows = _EvalWindows(settings, EVAL_WINDOWS)
        eval_data = next(eval_windows.windows, None)
        shown = settings.display(settings.existing("eval_data"))
        if eval_data is None:  # emptied since it was predicted
            unchanged(shown, len(eval_hashes), 0)
        else:  # (its later windows are checked as they are read)
            unchanged(shown, len(eval_hashes), len(eval_data), partial=True)
            budget = SIGNED_BUDGET if len(eval_hashes) > len(eval_data) else 0
    train_windows = SignedWindows(None, threshold, settings.seed, budget)
    copies: NearCopies | None = None
    names: dict[int, str] = {}  # the training records that were a best match
    pieces: list[SequenceData] = []
    offset = 0
    kind = "tokens"
    by_row = False
    parts: tuple[tuple[str, int], ...] = ()
    # Windows of the size an in-memory search takes, so both find the same copies.
    for chunk in _chunks(settings, "train_data", WINDOW):
        kind, by_row, parts = chunk.kind, chunk.by_row, chunk.parts
        n = len(chunk)
        lo, hi = torch.searchsorted(drawn, torch.tensor([offset, offset + n])).tolist()
        if hi > lo:
            pieces.append(chunk.subset(drawn[lo:hi] - offset))
        exact |= torch.isin(eval_hashes, chunk.content_hashes())
        if eval_data is not None and near and kind == "tokens":
            if copies is None:
                copies = NearCopies(eval_data, threshold, settings.seed)
            # (The side not held while the next window is read and signed.)
            best = copies.search(chunk, offset, None, train_windows.side(offset, chunk))
            names.update((j + offset, chunk.record(j)) for j in best.tolist())
        offset += n
    if offset == 0:
        raise ConfigError(f"{display}: the dataset is empty: it holds no records")
    unchanged(display, size, offset)  # else the sample drawn from the count is not the set's
    sample = _joined(pieces)
    none = torch.zeros(0, dtype=torch.int64)
    index, match, similarity = (none, none, torch.zeros(0, dtype=torch.float64))
    matched: list[str] = []
    if copies is not None:
        index, match, similarity = copies.found(exact[: len(copies.test)])
        matched = [names[j] for j in match.tolist()]
        if eval_windows is not None:  # a streamed eval set's later windows
            if train_windows.whole:  # (searched in memory: no pass to share)
                eval_windows.joined = 1
            rest = stream_near_copies(
                settings, exact, train_windows, eval_windows.windows, len(copies.test)
            )
            index, match, similarity = (
                torch.cat([mine, rest[key]])
                for mine, key in zip((index, match, similarity), ("index", "match", "similarity"))
            )
            matched += rest["names"]
    stored: dict[str, Any] = {
        "size": torch.tensor(offset),
        "values": sample.values,
        "lengths": sample.lengths,
        "labels": sample.labels,
        "lines": sample.line_numbers,
        "by_row": by_row,
        "parts": list(parts),
        "exact": exact,
        "near": near and kind == "tokens",
        "index": index,
        "match": match,
        "similarity": similarity,
        "names": matched,
    }
    if sample.token_type_ids is not None:
        stored["types"] = sample.token_type_ids
    return stored


def stream_near_copies(
    settings: Settings,
    exact: Tensor,
    train: SequenceData | SignedWindows,
    eval_windows: Iterator[SequenceData] | None = None,
    start: int = 0,
) -> dict[str, Any]:
    """Near copies of training sequences among a streamed eval set's, which keeps
    no sequences: the eval file read again a window at a time (parsed, not
    predicted), each window searched as a set in memory searches the training
    set (:class:`NearCopies`), the exact copies (``exact``) left out.

    ``train``: the training set in memory, or a streamed one's windows as its
    pass in :func:`stream_train` kept them: all of them, or else its file is
    read again by windows for each eval window (the kept ones' sides reused).
    ``eval_windows``: the eval set's windows from record ``start`` on, where
    :func:`stream_train` searched those before.

    An eval sequence's best match does not depend on the other eval sequences
    (its signature, its band keys and the exact Jaccard of its candidates are
    its own), so window by window finds what one search of the whole set finds.
    The cost: a search of the training set per window of eval sequences (one
    for up to 65,536, its windows signed once for all where they are kept).
    Memory holds an eval window and its signatures, and the kept windows or a
    training window.
    """
    from pytest_seqgate.minhash import SIGNED_BUDGET, WINDOW, NearCopies, SignedWindows

    threshold = settings.near_duplicate_threshold
    none = torch.zeros(0, dtype=torch.int64)
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    names: dict[int, str] = {}  # the training records that are a best match
    if eval_windows is None:
        eval_windows = _EvalWindows(settings).windows
    display = settings.display(settings.existing("eval_data"))
    # A training set in memory searched by more than one eval window keeps its
    # windows signed (a 300,000-sequence set, 201 MiB) rather than signing them
    # again for each.
    train_windows = (
        train
        if isinstance(train, SignedWindows)
        else SignedWindows(
            train, threshold, settings.seed, SIGNED_BUDGET if len(exact) - start > WINDOW else 0
        )
    )
    streamed = train_windows.train is None
    for part in eval_windows:
        unchanged(display, len(exact), start + len(part), partial=True)
        skip = exact[start : start + len(part)]
        if part.kind != "tokens":
            return {"near": False}
        copies = NearCopies(part, threshold, settings.seed)
        searched = (
            _read_windows(settings, train_windows)
            if streamed and not train_windows.whole
            else iter(train_windows)
        )
        for offset, window, side in searched:
            if window.kind != "tokens":  # (a training file rewritten since its pass)
                return {"near": False}
            best = copies.search(window, offset, skip, side)
            del side  # (not held while the next one is signed)
            if streamed:
                names.update((j + offset, window.record(j)) for j in best.tolist())
        index, match, similarity = copies.found(skip)
        found.append((index + start, match, similarity))
        if streamed:  # only the names of the best matches so far
            kept = {int(j) for _, m, _ in found for j in m.tolist()}
            names = {j: name for j, name in names.items() if j in kept}
        start += len(part)
    unchanged(display, len(exact), start)
    index, match, similarity = (
        (torch.cat(column) for column in zip(*found))
        if found
        else (none, none, torch.zeros(0, dtype=torch.float64))
    )
    stored: dict[str, Any] = {
        "near": True,
        "index": index,
        "match": match,
        "similarity": similarity,
    }
    if streamed:
        stored["names"] = [names[j] for j in match.tolist()]
    return stored


def _read_windows(
    settings: Settings, train_windows: SignedWindows
) -> Iterator[tuple[int, SequenceData, Signed | None]]:
    """A streamed training set's windows read from its file again, with their
    sides (the kept ones' reused; none for a window that is not token ids)."""
    from pytest_seqgate.minhash import WINDOW

    offset = 0
    for window in _chunks(settings, "train_data", WINDOW):
        if window.kind != "tokens":
            yield offset, window, None
            return
        yield offset, window, train_windows.side(offset, window)
        offset += len(window)


def unchanged(display: str, before: int, now: int, partial: bool = False) -> None:
    """A streamed file is read more than once (counted, then read; read, then read
    again for near copies): a file rewritten between the readings (a job still
    writing it) would pair the records of one reading with the other's, so it is
    refused, by name. ``partial``: ``now`` records read so far."""
    if now > before or (now != before and not partial):
        raise DataError(
            f"{display} changed while seqgate read it: {before:,} records the first "
            f"time, {'at least ' if partial else ''}{now:,} the next; run again "
            f"once the file is written"
        )


def train_sample(stored: dict[str, Any], settings: Settings) -> SequenceData:
    """The sample :func:`stream_train` kept (read back from the cache too)."""
    lengths = stored["lengths"]
    return SequenceData(
        values=stored["values"],
        offsets=torch.cumsum(lengths, 0) - lengths,
        lengths=lengths,
        labels=stored["labels"],
        label_names=settings.labels,
        source=settings.display(settings.existing("train_data")),
        line_numbers=stored["lines"],
        by_row=bool(stored["by_row"]),
        parts=tuple(tuple(part) for part in stored["parts"]),
        token_type_ids=stored.get("types"),
    )


def _joined(pieces: list[SequenceData]) -> SequenceData:
    """Chunks' samples end to end, as one set (a chunk without token types, among
    chunks with them, gets segment 0 for each token)."""
    typed = any(p.token_type_ids is not None for p in pieces)
    lengths = torch.cat([p.lengths for p in pieces])
    return SequenceData(
        values=torch.cat([p.values for p in pieces]),
        offsets=torch.cumsum(lengths, 0) - lengths,
        lengths=lengths,
        labels=torch.cat([p.labels for p in pieces]),
        # (Sets read by rows name records by row, not line: no line numbers.)
        line_numbers=None
        if any(p.line_numbers is None for p in pieces)
        else torch.cat([torch.as_tensor(p.line_numbers) for p in pieces]),
        token_type_ids=torch.cat(
            [
                p.token_type_ids
                if p.token_type_ids is not None
                else torch.zeros(p.values.shape[0], dtype=torch.int64)
                for p in pieces
            ]
        )
        if typed
        else None,
    )


def _stream_columns(
    model: nn.Module,
    settings: Settings,
    device: torch.device,
    forward: ForwardHook | None,
) -> dict[str, Any]:
    """The compact per-sample columns of the table above, and the padding check's."""
    assert settings.labels is not None
    path = settings.existing("eval_data")
    # The padding check's sample, drawn chunk by chunk among the sequences each
    # chunk's pass padded, a share of it per chunk in proportion to its size (so
    # the records are counted first, a pass that only the check needs).
    gen = torch.Generator().manual_seed(settings.seed)
    quota = settings.padding_check
    total = count_records(path, settings.display(path), settings.column_of) if quota else 1
    sample: list[Tensor] = []
    batched: list[Tensor] = []  # the sample's scores in their batches
    keep = set(settings.slice_by or ())
    columns: dict[str, list[Tensor]] = {
        k: [] for k in ("predictions", "targets", "hashes", "lengths", "lines", "scores")
    }
    metadata: dict[str, list[Any]] = {k: [] for k in keep}
    seen: set[str] = set()  # the metadata keys of any record, for the check below
    alone = torch.empty(0)
    offset = 0
    batch_size = settings.batch_size
    kind = "tokens"
    width = 0
    # The first chunk decides how outputs read (with seqgate_outputs = auto); the
    # rest and the padding check read theirs the same way.
    outputs = settings.outputs
    by_row = False  # records named by row (a table's, a .json array's): the chunks say
    parts: tuple[tuple[str, int], ...] = ()
    for chunk in _chunks(settings, "eval_data", STREAM_WINDOW * settings.batch_size):
        kind = chunk.kind
        by_row = chunk.by_row
        parts = chunk.parts  # the shards read so far (a pattern of line-based files)
        width = chunk.values.shape[1] if chunk.values.dim() == 2 else 0
        p = predict(
            model,
            chunk,
            device,
            settings.batch_size,
            len(settings.labels),
            forward,
            None,
            settings.precision,
            outputs=outputs,
            threshold=settings.threshold,
        )
        outputs = p.outputs
        batch_size = min(batch_size, p.batch_size)
        columns["predictions"].append(p.predictions.to(torch.int16))
        columns["targets"].append(chunk.labels.to(torch.int16))
        columns["hashes"].append(p.hashes)
        columns["lengths"].append(chunk.lengths.to(torch.int32))
        lines = chunk.line_numbers
        if lines is None:  # a table's first chunk: its rows from 0
            lines = torch.arange(offset, offset + len(chunk))
        columns["lines"].append(lines.to(torch.int32))
        if settings.keep_scores:
            columns["scores"].append(p.scores)
        seen.update(chunk.metadata)
        for key in keep:
            metadata[key].extend(chunk.metadata.get(key, [None] * len(chunk)))
        share = (offset + len(chunk)) * quota // total - offset * quota // total
        here = padded_sample(chunk.lengths, settings.batch_size, share, gen)
        if here.numel():
            scores = scores_alone(
                model,
                chunk,
                here,
                device,
                forward,
                settings.precision,
                settings.batch_size,
                outputs,
            )
            alone = scores if alone.numel() == 0 else torch.cat([alone, scores])
            sample.append(here + offset)
            batched.append(p.scores[here])
        offset += len(chunk)
    if offset == 0:
        raise ConfigError(f"{settings.display(path)}: the dataset is empty: it holds no records")
    for key in settings.slice_by or ():
        # Known only once every record was read: a key in no record is a
        # misspelling, not a slice of the whole set named `key=null`.
        require_key(key, seen, settings.source("slice_by"))
    stored: dict[str, Any] = {name: torch.cat(parts) for name, parts in columns.items() if parts}
    stored.update(
        kind=kind,
        width=width,
        metadata=metadata,
        batch_size=batch_size,
        outputs=outputs,
        by_row=by_row,
        parts=list(parts),
    )
    if "scores" not in stored:
        stored["scores"] = torch.zeros(offset, 0)
    if quota:
        stored["alone_index"] = torch.cat(sample) if sample else torch.zeros(0, dtype=torch.int64)
        stored["alone_scores"] = alone
        stored["alone_batched"] = torch.cat(batched) if batched else alone
    return stored


def _from_columns(
    stored: dict[str, Any], settings: Settings
) -> tuple[SequenceData, dict[str, dict[str, Tensor]]]:
    lengths = stored["lengths"].to(torch.int64)
    empty = (
        torch.zeros((0, stored["width"]), dtype=torch.float32)
        if stored["kind"] == "features"
        else torch.zeros(0, dtype=torch.int64)
    )
    data = SequenceData(
        values=empty,
        offsets=torch.zeros_like(lengths),
        lengths=lengths,
        labels=stored["targets"].to(torch.int64),
        label_names=settings.labels,
        source=settings.display(settings.existing("eval_data")),
        line_numbers=stored["lines"].to(torch.int64),
        by_row=bool(stored.get("by_row", False)),
        parts=tuple(tuple(part) for part in stored.get("parts", ())),
        metadata=stored["metadata"],
    )
    parts = {
        "eval": {
            "predictions": stored["predictions"].to(torch.int64),
            "scores": stored["scores"],
            "hashes": stored["hashes"],
            "batch_size": torch.tensor(stored["batch_size"]),
            "probabilities": torch.full_like(
                lengths, stored.get("outputs") == "probabilities", dtype=torch.bool
            ),
        }
    }
    if "alone_index" in stored:
        parts["alone_padded"] = {"index": stored["alone_index"], "scores": stored["alone_scores"]}
        if "alone_batched" in stored:
            parts["alone_padded"]["batched"] = stored["alone_batched"]
    return data, parts
