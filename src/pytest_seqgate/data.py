"""Ragged storage of a labelled sequence set.

Sequences are kept as one flat tensor plus offsets and lengths, not as a list
of small tensors: batching, hashing and subsampling then become a few gathers
over the flat tensor instead of a Python loop per sequence.
"""

from __future__ import annotations

import array
import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from pytest_seqgate.exceptions import DataError, counted, did_you_mean, label_list

# What a sequence of token ids given as a batch of one needs.
BATCH_OF_ONE = (
    "a batch of one sequence, as return_tensors='pt' gives: give each sequence 1-D, "
    "its first row (ids[0], or .squeeze(0))"
)


@dataclass
class SequenceData:
    """Labelled sequences: ``values[offsets[i] : offsets[i] + lengths[i]]`` is sequence i.

    ``values`` is int64 ``[total]`` for token ids, float32 ``[total, features]``
    for feature vectors. ``line_numbers`` lets errors and findings point at the
    record in the user's file; ``source`` is that file (or import path).
    """

    values: Tensor
    offsets: Tensor
    lengths: Tensor
    labels: Tensor
    label_names: tuple[str, ...] | None = None
    source: str = "<memory>"
    line_numbers: Tensor | None = None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    #: True when a loader took ``label_names`` from the records, sorted, because
    #: seqgate_labels was not set: the model's index order is then a guess.
    names_inferred: bool = False
    #: True when ``line_numbers`` are rows (``source[16]``), not a file's lines
    #: (``source:16``): a sample or a streamed chunk of a set named by row keeps
    #: the names its records have in the whole set.
    by_row: bool = False
    #: A set read from several files (a pattern of shards): each file's name and
    #: the number its lines were shifted by, so that each record is named by its
    #: file and line there (``data/test-00001.jsonl:12``), not by the pattern.
    parts: tuple[tuple[str, int], ...] = ()
    #: The segment of each token (0 for the first text of a pair, 1 for the
    #: second), aligned with ``values``, where the records carry them: a BERT-style
    #: model of text pairs reads them, and without them scores every pair as one
    #: text. None where the set has none (most sets).
    token_type_ids: Tensor | None = None

    def __post_init__(self) -> None:
        """A set built by hand (a ``seqgate_eval_data`` fixture, a script) takes
        the same paths as a loaded one, so it is brought to the same types here:
        index tensors and token ids int64, feature vectors float32. What would
        otherwise fail deep inside inference, or quietly read the wrong steps,
        is an error that names the set and the first bad record."""
        __tracebackhide__ = True  # pytest shows the user's line that built the set, not this
        for name in ("lengths", "offsets", "labels", "line_numbers"):
            column = getattr(self, name)
            if column is None:
                continue
            column = torch.as_tensor(column)
            if column.dim() != 1 or column.is_floating_point() or column.is_complex():
                raise DataError(
                    f"{self.source}: SequenceData.{name} must be a 1-D integer tensor, "
                    f"but it is {tensor_shape(column)}"
                )
            if column.numel() != self.lengths.numel():
                raise DataError(
                    f"{self.source}: SequenceData.{name} has {column.numel()} "
                    f"{'entry' if column.numel() == 1 else 'entries'} but lengths has "
                    f"{self.lengths.numel()}: one per sequence"
                )
            setattr(self, name, column.to(torch.int64))
        values = torch.as_tensor(self.values)
        if values.dim() == 1 and not values.is_floating_point() and not values.is_complex():
            self.values = values.to(torch.int64)
        elif values.dim() == 2 and values.is_floating_point():
            self.values = values.to(torch.float32)
        else:
            raise DataError(
                f"{self.source}: SequenceData.values must hold integer token ids [total] or "
                f"floating-point feature vectors [total, features], but it is "
                f"{tensor_shape(values)}"
            )
        if self.token_type_ids is not None:
            types = torch.as_tensor(self.token_type_ids)
            if (
                self.values.dim() != 1
                or types.shape != self.values.shape
                or types.is_floating_point()
                or types.is_complex()
            ):
                raise DataError(
                    f"{self.source}: SequenceData.token_type_ids must be integers aligned with "
                    f"the token ids in values ({tensor_shape(self.values)}), but it is "
                    f"{tensor_shape(types)}"
                )
            self.token_type_ids = types.to(torch.int64)
        if self.label_names is not None:
            self.label_names = tuple(str(name) for name in self.label_names)
        for key, column in self.metadata.items():
            if len(column) != self.lengths.numel():
                raise DataError(
                    f"{self.source}: SequenceData.metadata[{key!r}] has {len(column)} entries "
                    f"but lengths has {self.lengths.numel()}: one per sequence"
                )
        if self.lengths.numel() == 0:
            return
        # Reductions on the happy path; a mask only to find the first bad record.
        n_names = len(self.label_names) if self.label_names is not None else None
        checks: list[tuple[bool, Callable[[], Tensor], str]] = [
            (
                int(self.lengths.min()) < 1,
                lambda: self.lengths < 1,
                "a sequence needs at least one step: drop the record or give it a token",
            ),
            (
                int(self.labels.min()) < 0
                or (n_names is not None and int(self.labels.max()) >= n_names),
                lambda: (
                    (self.labels < 0) | (self.labels >= (2**62 if n_names is None else n_names))
                ),
                "labels are class indices, from 0 to one less than the number of label names",
            ),
        ]
        # A streamed set keeps its lengths but none of its values.
        total = self.values.shape[0]
        if total:
            ends = self.offsets + self.lengths
            checks.append(
                (
                    int(self.offsets.min()) < 0 or int(ends.max()) > total,
                    lambda: (self.offsets < 0) | (ends > total),
                    f"each sequence must lie inside values ({total} steps)",
                )
            )
            if self.kind == "tokens":
                low, high = torch.aminmax(self.values)
                self.__dict__["max_value"] = int(high)  # kept for check_embedding_range
                checks.append(
                    (
                        int(low) < 0,
                        lambda: self._sequences_holding(self.values < 0),
                        "token ids are indices, from 0",
                    )
                )
                segments = self.token_type_ids
                if segments is not None:
                    checks.append(
                        (
                            int(segments.min()) < 0,
                            lambda: self._sequences_holding(segments < 0),
                            "token type ids are segment indices, from 0",
                        )
                    )
            else:
                # NaN or Infinity (Python's json reads both) would come out as NaN
                # logits, blamed on the model. The sum is finite unless a value is
                # not (or it overflows, which the exact check then clears).
                checks.append(
                    (
                        not bool(torch.isfinite(self.values.sum())),
                        lambda: self._sequences_holding(~torch.isfinite(self.values).all(1)),
                        "its feature vectors hold NaN or infinite values",
                    )
                )
        for failed, mask, hint in checks:
            bad = mask().nonzero() if failed else None
            # A value out of range between the sequences of a set built by hand is no one's.
            if bad is not None and bad.numel():
                first = int(bad[0])
                raise DataError(
                    f"{self.record(first)}: this sequence (offset {int(self.offsets[first])}, "
                    f"length {int(self.lengths[first])}, label {int(self.labels[first])}) "
                    f"is malformed: {hint}"
                )

    def refuse_padded(self, told: str = "lengths") -> None:
        """Refuse a set whose sequences were padded before they came here (a
        TensorDataset of ``input_ids`` padded to 128, a tokenizer run with
        ``padding="max_length"``), for a model ``told`` the ``lengths`` or given
        an ``attention_mask``: they would cover the padding, and every number
        would be the model's on sequences it never sees in use (the example's GRU
        scored 15.9% instead of 97.4%), blamed on the model. The sign: every
        sequence as long as the others, and most end in a run of one token (or
        of zero vectors)."""
        n = len(self)
        if n < 8 or self.values.numel() == 0 or int(self.lengths.min()) < 2:
            return
        if int(self.lengths.min()) != int(self.lengths.max()):
            return
        ends = self.offsets + self.lengths - 1
        last, before = self.values[ends], self.values[ends - 1]
        pad = 0
        if self.kind == "tokens":
            pad = int(torch.mode(last).values)
            runs = (last == pad) & (before == pad)
            what = f"token {pad}"
        else:
            runs = (last == 0).all(1) & (before == 0).all(1)
            what = "zero vectors"
        count = int(runs.sum())
        if count * 2 < n:
            return
        first = int(torch.nonzero(runs)[0])
        steps, _ = self[first]
        real = steps != pad if self.kind == "tokens" else (steps != 0).any(1)
        kept = int(torch.nonzero(real).max()) + 1 if bool(real.any()) else 0
        length = int(self.lengths[0])
        raise DataError(
            f"{self.source}: the sequences look padded already: all {n} are {length} steps "
            f"long, and {count} ({count / n:.1%}) end in a run of {what} (the last "
            f"{length - kept} of {self.record(first)}, say). The plugin pads each batch "
            f"itself and gives the model {'the lengths' if told == 'lengths' else 'a mask'}, "
            f"which would cover that padding as if it were steps: give the sequences "
            f"unpadded (cut each at its length, e.g. the sum of its attention mask), or "
            f"padded with their masks: an 'attention_mask' beside each record's tokens, or "
            f"'lengths' or 'attention_mask' beside a .pt file's padded tensor"
        )

    def _sequences_holding(self, steps: Tensor) -> Tensor:
        """Which sequences hold one of the marked ``steps`` (bool ``[N]``)."""
        seen = torch.zeros(self.values.shape[0] + 1, dtype=torch.int64)
        torch.cumsum(steps, 0, out=seen[1:])
        return seen.take(self.offsets + self.lengths) > seen.take(self.offsets)

    def __len__(self) -> int:
        return int(self.lengths.numel())

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """A (sequence, label) pair, so the object is a map-style Dataset too."""
        start = int(self.offsets[index])
        return self.values[start : start + int(self.lengths[index])], int(self.labels[index])

    def __repr__(self) -> str:
        """What the set is, in one line: the dataclass's repr printed every token
        id and line number, thousands of them in a notebook or a failed assert."""
        n = len(self)
        what = (
            f"{self.values.shape[1]}-wide feature vectors"
            if self.kind == "features"
            else "token ids"
        )
        steps = ""
        if n:
            low, high = (int(x) for x in self.lengths.aminmax())
            steps = f", {counted(low, 'step')}" if low == high else f", {low} to {high} steps"
        classes = (
            "labels " + ", ".join(self.label_names)
            if self.label_names is not None
            else f"label indexes {self.labels.unique()[:12].tolist()}"
        )
        streamed = " (streamed: no sequences kept)" if n and not self.values.numel() else ""
        return (
            f"<SequenceData {self.source}: {counted(n, 'sequence')} of {what}{steps}; "
            f"{classes}{streamed}>"
        )

    @property
    def kind(self) -> str:
        return "features" if self.values.dim() == 2 else "tokens"

    @cached_property
    def max_value(self) -> int:
        """The largest token id (-1 when empty), kept: every inference pass over
        the set (the main one, the padding check's, a shard's) checks it against
        the model's embedding, and the values do not change after loading."""
        return int(self.values.max()) if self.values.numel() else -1

    def record(self, index: int) -> str:
        """Where sample ``index`` came from, as ``file:line`` (or ``source[index]``)."""
        return self.names(index)

    @property
    def names(self) -> RecordNames:
        """The names of the records, kept without the sequences (for a report)."""
        return RecordNames(self.source, self.line_numbers, self.by_row, self.parts)

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[Tensor | Sequence[Any]],
        labels: Sequence[int] | Sequence[str] | Tensor,
        label_names: Sequence[str] | None = None,
        source: str = "<memory>",
    ) -> SequenceData:
        """Build from a list of 1-D token tensors (or 2-D feature tensors) and their
        labels: class indexes, or class names (placed by ``label_names``, else
        sorted, as a loader sorts the names of a file's records)."""
        tensors = [s if isinstance(s, Tensor) else torch.tensor(s) for s in sequences]
        for i, t in enumerate(tensors):
            if t.dim() == 2 and t.shape[0] == 1 and not t.is_floating_point():
                raise DataError(
                    f"{source}[{i}]: the sequence is a [1, {t.shape[1]}] array of integers, "
                    f"{BATCH_OF_ONE}"
                )
            if t.dim() != tensors[0].dim() or t.dim() not in (1, 2):
                other = f" where {source}[0] is {tensors[0].dim()}-D" if t.dim() in (1, 2) else ""
                raise DataError(
                    f"{source}[{i}]: the sequence is {t.dim()}-D{other}; each is 1-D token "
                    f"ids or 2-D feature vectors [steps, features], one kind for the whole set"
                )
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
        if tensors and tensors[0].dim() == 2:
            values = torch.cat([t.to(torch.float32) for t in tensors])
        elif tensors:
            values = torch.cat([t.to(torch.int64).reshape(-1) for t in tensors])
        else:
            values = torch.zeros(0, dtype=torch.int64)
        offsets = torch.cumsum(lengths, 0) - lengths
        names = tuple(label_names) if label_names is not None else None
        inferred = False
        if not isinstance(labels, Tensor) and any(isinstance(x, str) for x in labels):
            # Class names, as the records of a file give them: indexes into
            # label_names, or into the names found, sorted, as a loader sorts them.
            if not all(isinstance(x, str) for x in labels):
                raise DataError(
                    f"{source}: the labels mix class names and indexes "
                    f"({next(x for x in labels if not isinstance(x, str))!r} among names); "
                    f"give every label one way"
                )
            inferred = names is None
            found = names or tuple(sorted({str(x) for x in labels}))
            unknown = sorted({str(x) for x in labels} - set(found))
            if unknown:
                raise DataError(
                    f"{source}: the labels name {label_list(unknown)}, which label_names "
                    f"{label_list(found)} lack{did_you_mean(unknown[0], found)}"
                )
            position = {name: i for i, name in enumerate(found)}
            labels = [position[str(x)] for x in labels]
            names = found
        label_tensor = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        return cls(values, offsets, lengths, label_tensor, names, source, names_inferred=inferred)

    def gather_positions(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Flat positions of the sequences ``index`` in order, and their new offsets."""
        lengths = self.lengths[index]
        new_offsets = torch.cumsum(lengths, 0) - lengths
        total = int(lengths.sum())
        shift = torch.repeat_interleave(
            self.offsets[index] - new_offsets, lengths, output_size=total
        )
        return torch.arange(total, dtype=torch.int64) + shift, new_offsets

    def subset(self, index: Tensor) -> SequenceData:
        """The sequences ``index`` (in that order), sharing nothing mutable with self."""
        positions, new_offsets = self.gather_positions(index)
        return SequenceData(
            values=self.values[positions],
            offsets=new_offsets,
            lengths=self.lengths[index].clone(),
            labels=self.labels[index].clone(),
            label_names=self.label_names,
            names_inferred=self.names_inferred,
            source=self.source,
            # A set named by row names the sample's records by their rows in it.
            line_numbers=index.clone() if self.line_numbers is None else self.line_numbers[index],
            by_row=self.by_row or self.line_numbers is None,
            parts=self.parts,
            metadata={k: [v[i] for i in index.tolist()] for k, v in self.metadata.items()},
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[positions],
        )

    def content_hashes(self) -> Tensor:
        """A 64-bit content hash per sequence, computed with tensor ops only.

        Each step plus a constant is multiplied by a fixed random odd 64-bit
        weight for its position, and the products are summed per sequence
        (wrapping int64 arithmetic), plus a term for the length. The constant
        and length terms depend only on the length, so they come from one
        table look-up.
        Equal sequences hash equal; different ones collide with probability
        about 2**-64. :func:`hash_padded` gives the same hashes from a padded
        batch, which is how inference gets them for free.

        The steps are hashed about 65,536 at a time: each of the six passes
        over them then stays in the CPU's cache (23 against 50 ms on 50,000
        sequences of 5 to 59 tokens, paired, against one pass over the whole set).
        """
        n = len(self)
        if n == 0:
            return torch.zeros(0, dtype=torch.int64)
        weights, table = hash_tables(int(self.lengths.max()))
        out = torch.zeros(n, dtype=torch.int64)
        for rows, values, lengths in self.step_chunks(HASH_CHUNK):
            seq_id, position = step_owners(lengths)
            out[rows].index_add_(0, seq_id, _fold_steps(values) * weights.take(position))
        return out + table.take(self.lengths)

    def step_chunks(self, size: int) -> Iterator[tuple[slice, Tensor, Tensor]]:
        """Runs of whole sequences, each fewer than ``size`` steps past its first
        sequence, as (rows, their values end to end, their lengths):
        for passes over every step whose temporaries should stay in the CPU's
        cache, and whose memory should not grow with the set."""
        if len(self) == 0:
            return
        values = self.packed_values()
        ends = torch.cumsum(self.lengths, 0)
        total = int(ends[-1])
        marks = torch.arange(1, total // size + 1) * size
        cuts = torch.searchsorted(ends, marks, right=True).unique_consecutive()
        bounds = [0, *cuts[(cuts > 0) & (cuts < len(self))].tolist(), len(self)]
        # The step where each run starts, and where the last one stops.
        edges = [0, *ends.take(torch.tensor(bounds[1:]) - 1).tolist()]
        for k, (i, j) in enumerate(pairwise(bounds)):
            yield slice(i, j), values[edges[k] : edges[k + 1]], self.lengths[i:j]

    def packed_values(self) -> Tensor:
        """The values of every sequence, in order, end to end: the layout that
        flat passes over all the steps (the content hashes, the n-grams) read.
        A set built by hand may lay its sequences out in another order, or
        overlapping, or with gaps; such a layout is copied once into this one.
        """
        packed = torch.cumsum(self.lengths, 0) - self.lengths
        if self.values.shape[0] == int(self.lengths.sum()) and torch.equal(self.offsets, packed):
            return self.values
        positions, _ = self.gather_positions(torch.arange(len(self)))
        return self.values[positions]


def int64s(values: Sequence[int]) -> Tensor:
    """An int64 tensor of Python ints, through an ``array.array``: ``torch.tensor``
    reads a list as Python objects, one at a time, 3.6x slower (0.11 against 0.03
    s for 2,000,000 ids), and parsed records' ids are the bulk of a set's loading.
    Raises OverflowError (or TypeError, for what is not an int), as the caller
    that did not check the values first expects of torch.tensor."""
    if not values:
        return torch.zeros(0, dtype=torch.int64)
    return torch.frombuffer(array.array("q", values), dtype=torch.int64)


def step_owners(lengths: Tensor) -> tuple[Tensor, Tensor]:
    """For each step of sequences laid end to end: its sequence, and its position
    in that sequence."""
    total = int(lengths.sum())
    seq_id = torch.repeat_interleave(torch.arange(lengths.numel()), lengths, output_size=total)
    position = torch.arange(total) - (torch.cumsum(lengths, 0) - lengths).take(seq_id)
    return seq_id, position


def tensor_shape(tensor: Tensor) -> str:
    """``int64[40, 12]``: how errors name a tensor."""
    return f"{str(tensor.dtype).replace('torch.', '')}{list(tensor.shape)}"


_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_LENGTH_MIX = -0x61C8864680B583EB
HASH_CHUNK = 1 << 16  # steps hashed at a time by content_hashes


def _fold_steps(values: Tensor) -> Tensor:
    """One int64 per step: token ids as they are, feature vectors by their bit patterns."""
    if values.is_floating_point():
        bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
        return (bits * _weights(bits.shape[-1], salt=7)).sum(-1)
    return values.to(torch.int64)


def hash_tables(max_length: int) -> tuple[Tensor, Tensor]:
    """Position weights ``[max_length]`` and the per-length term ``[max_length + 1]``."""
    weights = _weights(max(max_length, 1), salt=11)
    table = torch.zeros(weights.numel() + 1, dtype=torch.int64)
    table[1:] = torch.cumsum(weights * _GOLDEN, 0)
    return weights, table + torch.arange(table.numel()) * _LENGTH_MIX


@dataclass(frozen=True)
class RecordNames:
    """Where each sample of a set came from: ``file:line`` where the lines are
    known (``shard:line`` in a set of several files), else ``source[row]``: its
    row (``by_row``), or its index where the set is the whole of its source."""

    source: str = "<memory>"
    line_numbers: Tensor | None = None
    by_row: bool = False
    parts: tuple[tuple[str, int], ...] = ()

    def __call__(self, index: int) -> str:
        if self.line_numbers is None:
            return f"{self.source}[{index}]"
        return locate(self.source, int(self.line_numbers[index]), self.by_row, self.parts)


def locate(
    source: str, number: int, by_row: bool = False, parts: Sequence[tuple[str, int]] = ()
) -> str:
    """A record's name from its line (or row) ``number`` in ``source``; in a set of
    several files (``parts``), lines counted on across them: the file it is in,
    the last whose shift is below it, and its line there."""
    if parts:
        shifts = [shift for _name, shift in parts]
        source, shift = parts[max(bisect.bisect_left(shifts, number) - 1, 0)]
        number -= shift
    return f"{source}[{number}]" if by_row else f"{source}:{number}"


def hash_padded(inputs: Tensor, weights: Tensor, out: Tensor | None = None) -> Tensor:
    """The position-weighted part of :meth:`SequenceData.content_hashes` for
    each row of a right-padded batch; :func:`length_terms` adds the rest.

    Padding is zero, so it adds nothing to the weighted sum. A matrix-vector
    product wraps like the elementwise sum (addition mod 2**64 is
    associative), in one op that can write straight into ``out``.
    """
    steps = _fold_steps(inputs)
    return torch.mv(steps, weights[: steps.shape[1]], out=out)


def length_terms(lengths: Tensor) -> Tensor:
    """The per-length term of :meth:`SequenceData.content_hashes`."""
    _, table = hash_tables(int(lengths.max()) if lengths.numel() else 1)
    return table.take(lengths)


def _srl(x: Tensor, k: int) -> Tensor:
    """Logical right shift on int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


@lru_cache(maxsize=128)
def _weights(n: int, salt: int) -> Tensor:
    """Odd 64-bit multipliers per position from splitmix64: the same for every run and size."""
    x = torch.arange(n, dtype=torch.int64) * -0x61C8864680B583EB + salt
    x = (x ^ _srl(x, 30)) * -0x40A7B892E31B1A47
    x = (x ^ _srl(x, 27)) * -0x6B2FB644ECCEEE15
    return (x ^ _srl(x, 31)) | 1
