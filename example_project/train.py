"""Train the spam GRU, seeded, in well under a minute on 2 CPU cores.

    python train.py                      # checkpoints/gru.pt (the good model)
    python train.py --undertrained       # checkpoints/undertrained.pt (the paradox story)

Both use the same seed, data and vocabulary; the under-trained one simply stops
after UNDERTRAINED_STEPS optimiser steps, when the model has learnt that most
messages are ham and little else.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from spam.model import SpamGRU
from spam.tokenizer import VOCAB_FILE, build_vocab, encode, save_vocab

HERE = Path(__file__).resolve().parent
SEED = 7
EPOCHS = 6
UNDERTRAINED_STEPS = 40
BATCH = 32


def load(name: str) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for line in (HERE / "data" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        texts.append(record["text"])
        labels.append(1 if record["label"] == "spam" else 0)
    return texts, labels


def batches(ids: list[list[int]], labels: list[int], order: torch.Tensor):
    for start in range(0, len(order), BATCH):
        index = order[start : start + BATCH].tolist()
        seqs = [torch.tensor(ids[i]) for i in index]
        lengths = torch.tensor([len(s) for s in seqs])
        padded = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        yield padded, lengths, torch.tensor([labels[i] for i in index])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--undertrained", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    texts, labels = load("train")
    if not args.undertrained or not VOCAB_FILE.exists():
        save_vocab(build_vocab(texts))
    encode.__globals__["_index"].cache_clear()
    ids = [encode(t) for t in texts]
    vocab_size = len(json.loads(VOCAB_FILE.read_text(encoding="utf-8")))
    model = SpamGRU(vocab_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()
    steps = 0
    epochs = 1 if args.undertrained else EPOCHS
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(ids), generator=generator)
        epoch_start = steps
        total = 0.0
        for padded, lengths, target in batches(ids, labels, order):
            optimiser.zero_grad()
            loss = loss_fn(model(padded, lengths), target)
            loss.backward()
            optimiser.step()
            total += loss.item()
            steps += 1
            if args.undertrained and steps == UNDERTRAINED_STEPS:
                break
        print(f"epoch {epoch + 1}: mean loss {total / max(1, steps - epoch_start):.4f}")
    name = "undertrained.pt" if args.undertrained else "gru.pt"
    out = HERE / "checkpoints" / name
    torch.save(model.state_dict(), out)
    print(
        f"saved {out.relative_to(HERE)} after {steps} steps in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()
