"""Length-bucketed batch order and padding collation.

Sorting by length before cutting batches means each batch is padded only to
its own longest member, which is most of the speed of batched inference on
sequences whose lengths are skewed (see bench/).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pytest_seqgate.data import SequenceData


@dataclass
class Batch:
    """Right-padded inputs ``[B, T]`` (or ``[B, T, F]``), lengths ``[B]`` on the CPU
    (pack_padded_sequence wants them there), a mask ``[B, T]`` with 1 on real steps,
    and ``index``: the dataset positions of the rows."""

    inputs: Tensor
    lengths: Tensor
    attention_mask: Tensor
    index: Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            self.inputs.to(device, non_blocking=non_blocking),
            self.lengths,
            self.attention_mask.to(device, non_blocking=non_blocking),
            self.index,
        )


def length_bucketed(lengths: Tensor, batch_size: int) -> list[Tensor]:
    """Dataset indices in batches, longest first; ties keep dataset order (stable)."""
    order = torch.sort(lengths, descending=True, stable=True).indices
    return list(order.split(batch_size))


def collate(data: SequenceData, index: Tensor, pin_memory: bool = False) -> Batch:
    """Pad the sequences ``index`` to their own longest length, with gathers only."""
    lengths = data.lengths[index]
    width = int(lengths.max())
    steps = torch.arange(width, dtype=torch.int64)
    mask = steps.unsqueeze(0) < lengths.unsqueeze(1)
    positions = (data.offsets[index].unsqueeze(1) + steps.unsqueeze(0)).clamp_max(
        max(data.values.shape[0] - 1, 0)
    )
    gathered = data.values[positions]
    # where(), not a product: a negative feature times 0 is -0.0, which is not zero bits.
    keep = mask.unsqueeze(-1) if gathered.dim() == 3 else mask
    inputs = torch.where(keep, gathered, torch.zeros((), dtype=gathered.dtype))
    attention_mask = mask.to(torch.int64)
    if pin_memory:
        inputs = inputs.pin_memory()
        attention_mask = attention_mask.pin_memory()
    return Batch(inputs, lengths, attention_mask, index)
