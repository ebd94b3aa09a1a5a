"""Word-level tokenizer with a vocabulary built from the training split."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PAD, UNK = 0, 1
WORD = re.compile(r"[a-z0-9£$]+|[!?]")
VOCAB_FILE = Path(__file__).resolve().parent.parent / "checkpoints" / "vocab.json"
MAX_TOKENS = 80


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())[:MAX_TOKENS] or ["<empty>"]


def build_vocab(texts: Iterable[str], min_count: int = 2, size: int = 4000) -> list[str]:
    """Most frequent words first; ids 0 and 1 are padding and unknown."""
    counts = Counter(word for text in texts for word in words(text))
    common = [w for w, c in counts.most_common(size - 2) if c >= min_count]
    return ["<pad>", "<unk>", *common]


def save_vocab(vocab: list[str], path: Path = VOCAB_FILE) -> None:
    path.write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")


@lru_cache(maxsize=1)
def _index(path: str = str(VOCAB_FILE)) -> dict[str, int]:
    vocab = json.loads(Path(path).read_text(encoding="utf-8"))
    return {word: i for i, word in enumerate(vocab)}


def encode(text: str) -> list[int]:
    """The seqgate_tokenizer: text -> token ids with the committed vocabulary."""
    index = _index()
    return [index.get(word, UNK) for word in words(text)]
