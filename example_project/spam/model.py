"""A GRU classifier that packs its input, so padding never changes its answer."""

from __future__ import annotations

import json

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from spam.tokenizer import VOCAB_FILE


class SpamGRU(nn.Module):
    def __init__(self, vocab_size: int, embedding: int = 32, hidden: int = 48) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding, padding_idx=0)
        self.gru = nn.GRU(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(
            self.embedding(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, hidden = self.gru(packed)
        return self.head(hidden[-1])


def build() -> SpamGRU:
    """The seqgate_model_factory: the architecture the checkpoints were saved from."""
    vocab = json.loads(VOCAB_FILE.read_text(encoding="utf-8"))
    return SpamGRU(len(vocab))
