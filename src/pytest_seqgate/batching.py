"""Length-bucketed batch order and padding collation.

Sorting by length before cutting batches means each batch is padded only to
its own longest member, which is most of the speed of batched inference on
sequences whose lengths are skewed (see bench/).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

import torch
from torch import Tensor

from pytest_seqgate.data import SequenceData


@dataclass
class Batch:
    """Right-padded inputs ``[B, T]`` (or ``[B, T, F]``), lengths ``[B]`` on the CPU
    (pack_padded_sequence wants them there), ``index``: the dataset positions of
    the rows, and ``padding``: True on padded steps. The int64 ``attention_mask``
    (1 on real steps) is derived on first use: most models never ask for it.
    ``token_type_ids``: the steps' segments, padded with 0, where the set has them.
    """

    inputs: Tensor
    lengths: Tensor
    index: Tensor
    padding: Tensor
    token_type_ids: Tensor | None = None

    @cached_property
    def attention_mask(self) -> Tensor:
        return self.padding.logical_not().to(torch.int64)

    def to(
        self, device: torch.device, non_blocking: bool = False, dtype: torch.dtype | None = None
    ) -> Batch:
        """On ``device``, and feature inputs cast to ``dtype`` when given."""
        return Batch(
            self.inputs.to(device, dtype=dtype, non_blocking=non_blocking),
            self.lengths,
            self.index,
            self.padding.to(device, non_blocking=non_blocking),
            None
            if self.token_type_ids is None
            else self.token_type_ids.to(device, non_blocking=non_blocking),
        )


def length_order(lengths: Tensor) -> Tensor:
    """Dataset indices longest first; ties keep dataset order (stable).

    An ascending stable sort of the negated int32 lengths: the same order as a
    descending int64 sort, and four times faster on the CPU. (``neg``, not
    ``neg_``: on int32 lengths ``.to(torch.int32)`` is the caller's tensor.)
    """
    return torch.sort(torch.neg(lengths.to(torch.int32)), stable=True).indices


def padded_per_length(lengths: Tensor, batch_size: int) -> Tensor:
    """How many sequences of each length the length-sorted pass pads (``[max + 1]``).

    That pass is the stable descending sort, so the sequences of length ``l``
    hold the positions ``[s, s + count)``, where ``s`` counts the longer ones,
    and each batch is as wide as its first sequence. Those of them in the
    batch that starts before ``s`` are padded, the ones after it are not: the
    first ``ceil(s / b) * b - s`` of them, in dataset order. Counting lengths
    answers it without sorting the sequences.
    """
    counts = torch.bincount(lengths)
    longer = counts.flip(0).cumsum(0).flip(0) - counts
    size = max(1, batch_size)
    ends = longer.add(size - 1).div_(size, rounding_mode="floor").mul_(size)
    return torch.minimum(ends.sub_(longer), counts)


def _rank_within_length(lengths: Tensor) -> Tensor:
    """Each sequence's place among those of its length, in dataset order."""
    ascending = torch.sort(lengths.to(torch.int32), stable=True)
    first = torch.searchsorted(ascending.values, ascending.values)
    rank = torch.arange(lengths.numel()) - first
    return torch.empty_like(rank).index_copy_(0, ascending.indices, rank)


def padded_rows(lengths: Tensor, batch_size: int) -> Tensor:
    """Which sequences the length-sorted pass pads, in dataset order (bool ``[N]``).

    A batch of that pass is as wide as its first, longest sequence, so a
    sequence is padded when it is shorter than that one. This is exactly what
    :func:`~pytest_seqgate.inference.predict` does unless an out-of-memory
    split or sharding runs smaller batches, which only pad less.
    """
    if lengths.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    padded = padded_per_length(lengths, batch_size)
    return _rank_within_length(lengths) < padded.take(lengths)


SAMPLE_LENGTHS = 8


def padded_sample(
    lengths: Tensor, batch_size: int, limit: int, generator: torch.Generator
) -> Tensor:
    """Up to ``limit`` of the sequences the length-sorted pass pads, drawn at
    random with ``generator``, in dataset order: the sample of the padding
    check. (Drawn from every sequence, the sample would mostly hold sequences
    as long as their batch, which no padding could have changed.)

    The sample keeps to a few lengths: run alone, unpadded, the sequences of
    one length share a forward call, so a sample spread over every length
    cost one call per sequence (45 calls for 64 sequences of 5 to 59 tokens,
    more than the rest of the analyses together on a small model). The
    ``SAMPLE_LENGTHS`` lengths are drawn with weights their padded counts
    (so common ones are likelier), and further ones, drawn the same way,
    join only while the drawn lengths hold fewer than ``limit`` padded
    sequences. Only the sequences of the drawn lengths are ranked, so the
    draw costs a few passes over the lengths and no sort of the whole set.
    """
    if lengths.numel() == 0 or limit <= 0:
        return torch.zeros(0, dtype=torch.int64)
    padded = padded_per_length(lengths, batch_size)
    found = int(padded.count_nonzero())
    if found == 0:
        return torch.zeros(0, dtype=torch.int64)
    drawn = torch.multinomial(padded.double(), found, replacement=False, generator=generator)
    reach = padded.take(drawn).cumsum(0)
    keep = max(SAMPLE_LENGTHS, int(torch.searchsorted(reach, limit)) + 1)
    chosen = torch.zeros(padded.numel(), dtype=torch.bool)
    chosen[drawn[:keep]] = True
    rows = torch.nonzero(chosen.take(lengths)).squeeze(1)
    of_rows = lengths.index_select(0, rows)
    rows = rows[_rank_within_length(of_rows) < padded.take(of_rows)]
    pick = torch.randperm(rows.numel(), generator=generator)[:limit]
    return rows.index_select(0, pick).sort().values


def length_bucketed(lengths: Tensor, batch_size: int) -> list[Tensor]:
    """Dataset indices in batches of :func:`length_order`."""
    return list(length_order(lengths).split(batch_size))


def collate(data: SequenceData, index: Tensor, pin_memory: bool = False) -> Batch:
    """Pad the sequences ``index`` to their own longest length, with one gather."""
    lengths = data.lengths.index_select(0, index)
    width = int(lengths.max()) if index.numel() else 0
    offsets = data.offsets.index_select(0, index)
    return _pad(data, index, lengths, offsets, torch.arange(width), pin_memory)


def row_ranges(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into consecutive ``(start, stop)`` runs of ``size`` rows
    (the last may be shorter): the batches of the sorted pass, and the halves of
    a batch split after an out-of-memory error."""
    return [(a, min(stop, a + size)) for a in range(start, stop, size)]


class BucketedBatches:
    """The length-sorted pass of inference: batch ``k`` is a run of rows of one
    permutation, so its lengths and offsets are slices (views) of arrays
    gathered once, and its width is its first length. That leaves a handful
    of tensor ops per batch, which is the whole per-batch cost of a small model.

    ``rows`` restricts the pass to those dataset positions. ``run`` is the
    permutation of the pass's own rows (``order`` of the same, as dataset
    positions): outputs in run order go back to row order through it.
    """

    def __init__(self, data: SequenceData, rows: Tensor | None = None) -> None:
        self.data = data
        lengths = data.lengths if rows is None else data.lengths.index_select(0, rows)
        self.run = length_order(lengths)
        self.order = self.run if rows is None else rows.index_select(0, self.run)
        self.lengths = lengths.index_select(0, self.run)
        self.offsets = data.offsets.index_select(0, self.order)
        self.widths = self.lengths.tolist()
        self.steps = torch.arange(self.widths[0] if self.widths else 0)

    def __len__(self) -> int:
        return len(self.widths)

    def ranges(self, batch_size: int, unpadded: bool = False) -> list[tuple[int, int]]:
        """Batches of ``batch_size`` rows in run order; with ``unpadded``, also cut
        wherever the length changes, so that no batch pads anything."""
        n = len(self.widths)
        if not unpadded:
            return row_ranges(0, n, batch_size)
        cuts = torch.nonzero(self.lengths[1:] != self.lengths[:-1]).squeeze(1).add_(1).tolist()
        bounds = [0, *cuts, n]
        return [r for a, b in pairwise(bounds) for r in row_ranges(a, b, batch_size)]

    def batch(self, start: int, stop: int, pin_memory: bool = False) -> Batch:
        return _pad(
            self.data,
            self.order[start:stop],
            self.lengths[start:stop],
            self.offsets[start:stop],
            self.steps[: self.widths[start]],
            pin_memory,
        )

    def group_stop(self, start: int, stop: int, steps: int) -> int:
        """Where a group of padded rows that starts with the batch ``[start, stop)``
        ends: whole batches of its size while they fit in ``steps`` padded steps
        at its width (at least the batch itself; ``steps = 0``: just the batch).

        Padding and hashing cost a dozen or so tensor ops per call, whatever
        the batch's size: with batches of a few dozen short sequences that is a
        large share of a small model's pass (padding each of bench's tiny
        model's batches of 32 made the pass 1.2x as long). Padded as one group
        and cut into batches, the rows cost those ops once per group and one
        copy per batch; the group stays small enough for the CPU's cache.
        Lengths fall along the run, so the group pads each batch's rows only to
        the group's first width, and :meth:`cut` trims each batch back to its
        own.
        """
        size = stop - start
        rows = max(1, steps // max(1, self.widths[start] * size)) * size
        return max(stop, min(len(self.widths), start + rows))

    def cut(self, group: Batch, first: int, start: int, stop: int) -> Batch:
        """Rows ``[start, stop)`` of the run from ``group``, padded rows whose first
        is row ``first``: the same batch as :meth:`batch` gives, its inputs
        contiguous (its padding mask is a view of the group's)."""
        width = self.widths[start]
        rows = slice(start - first, stop - first)
        return Batch(
            group.inputs[rows, :width].contiguous(),
            self.lengths[start:stop],
            self.order[start:stop],
            group.padding[rows, :width],
            None if group.token_type_ids is None else group.token_type_ids[rows, :width],
        )


def _pad(
    data: SequenceData,
    index: Tensor,
    lengths: Tensor,
    offsets: Tensor,
    steps: Tensor,
    pin_memory: bool,
) -> Batch:
    """Right-pad the sequences starting at ``offsets`` to ``steps.numel()`` steps.

    ``index_select`` rather than tensor indexing, and in-place clamps and
    fills: with small batches the cost of a batch is its count of tensor ops
    more than its size.
    """
    padding = steps >= lengths.unsqueeze(1)
    positions = offsets.unsqueeze(1) + steps
    positions.clamp_max_(max(data.values.shape[0] - 1, 0))
    inputs = data.values.index_select(0, positions.view(-1))
    inputs = inputs.view(*positions.shape, *data.values.shape[1:])
    # A fill, not a product: a negative feature times 0 is -0.0, which is not zero bits.
    inputs.masked_fill_(padding.unsqueeze(-1) if inputs.dim() == 3 else padding, 0)
    types = None
    if data.token_type_ids is not None:
        types = data.token_type_ids.index_select(0, positions.view(-1)).view(positions.shape)
        types.masked_fill_(padding, 0)
    if pin_memory:
        inputs = inputs.pin_memory()
        types = None if types is None else types.pin_memory()
    return Batch(inputs, lengths, index, padding, types)
