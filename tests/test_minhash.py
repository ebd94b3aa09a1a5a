"""Near-duplicate leakage: MinHash signatures, LSH banding, and the finding."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from pytest_seqgate import minhash
from pytest_seqgate.config import Settings
from pytest_seqgate.data import SequenceData, _weights
from pytest_seqgate.evaluation import evaluate
from pytest_seqgate.minhash import (
    CHUNK,
    NGRAM,
    SLOTS,
    exact_jaccard,
    near_duplicates,
    signatures,
)


def _signature_alone(tokens: list[int], seed: int = 0) -> torch.Tensor:
    """One sequence's signature computed on its own, as the module documents it:
    each n-gram is the weighted sum of its steps, each slot the minimum of a
    mixed affine hash of the grams (no flat layout, no chunks, no owners)."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randint(0, 2**30, (SLOTS,), generator=gen) * 2 + 1).to(torch.int32)
    b = torch.randint(-(2**31), 2**31 - 1, (SLOTS,), generator=gen).to(torch.int32)
    steps = torch.tensor(tokens, dtype=torch.int64)
    w = _weights(NGRAM, salt=23)
    if len(tokens) < NGRAM:
        grams = steps[:1] * w[0]
    else:
        windows = steps.unfold(0, NGRAM, 1)
        grams = (windows * w).sum(1)
    grams = (grams ^ (grams >> 32)).to(torch.int32)
    hashed = grams.unsqueeze(1) * a + b
    hashed = hashed ^ (hashed >> 15)
    return hashed.amin(0)


def _random_set(n: int, low: int, high: int, seed: int) -> SequenceData:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=gen).tolist()
    seqs = [torch.randint(1, 50_000, (k,), generator=gen).tolist() for k in lengths]
    return SequenceData.from_sequences(seqs, [0] * n)


def _rows(data: SequenceData) -> list[list[int]]:
    return [data.values[o : o + n].tolist() for o, n in zip(data.offsets, data.lengths)]


def test_signatures_match_each_sequence_hashed_alone_across_chunks() -> None:
    # Lengths 1 to 40 (a sequence shorter than the n-gram included) over enough
    # grams to span several chunks, so owners straddle chunk boundaries.
    data = _random_set(3 * CHUNK // 15, 1, 40, seed=1)
    assert int((data.lengths - NGRAM + 1).clamp_min(1).sum()) > 2 * CHUNK
    sig = signatures(data)
    for i, tokens in enumerate(_rows(data)):
        assert torch.equal(sig[i], _signature_alone(tokens)), i


def test_signatures_of_sequences_longer_than_a_chunk_and_of_mixed_widths() -> None:
    """Sequences are hashed in blocks of like n-gram counts, a long one a CHUNK of
    grams at a time: a sequence of more grams than a chunk (two, and a chunk and
    one), one gram, and widths far apart in one run each get their own minima."""
    gen = torch.Generator().manual_seed(5)
    lengths = [2 * CHUNK + 7, 1, 2, CHUNK + 2, 3, CHUNK, 40, CHUNK + 1, 1, 700]
    lengths += torch.randint(1, 9, (300,), generator=gen).tolist()
    order = torch.randperm(len(lengths), generator=gen).tolist()
    seqs = [torch.randint(1, 50_000, (lengths[i],), generator=gen).tolist() for i in order]
    sig = signatures(SequenceData.from_sequences(seqs, [0] * len(seqs)))
    for i, tokens in enumerate(seqs):
        assert torch.equal(sig[i], _signature_alone(tokens)), (i, len(tokens))


def test_slot_agreement_estimates_the_jaccard_of_bigram_sets() -> None:
    a = list(range(1, 201))  # 199 distinct bigrams
    b = a[:100] + list(range(1001, 1101))  # shares 99 of them: Jaccard 99 / 299
    c = a[:180] + list(range(2001, 2021))  # shares 179: Jaccard 179 / 219
    sig = signatures(SequenceData.from_sequences([a, b, c], [0, 0, 0]))
    for other, jaccard in ((1, 99 / 299), (2, 179 / 219)):
        estimate = float((sig[0] == sig[other]).double().mean())
        # 128 slots: a standard error of at most 0.045.
        assert abs(estimate - jaccard) < 0.15, (other, estimate, jaccard)
    assert torch.equal(sig[0], signatures(SequenceData.from_sequences([a], [0]))[0])


def test_near_duplicates_finds_edited_copies_and_nothing_else() -> None:
    train = _random_set(300, 60, 61, seed=2)
    rows = _rows(train)
    edited = {}
    for k, i in enumerate((5, 77, 250)):
        copy = list(rows[i])
        copy[-1] = 60_000 + k  # one token changed: 58 of 60 distinct bigrams shared
        edited[len(edited)] = (copy, i)
    unrelated = _random_set(50, 60, 61, seed=3)
    test_seqs = [seq for seq, _ in edited.values()] + [rows[123]]  # and one exact copy
    test_seqs += _rows(unrelated)
    test = SequenceData.from_sequences(test_seqs, [0] * len(test_seqs))

    index, match, similarity = near_duplicates(train, test, 0.9)
    assert index.tolist() == [0, 1, 2, 3]
    assert match.tolist() == [5, 77, 250, 123]
    # The Jaccard of the bigram sets, measured, not estimated: 58 of 60 shared.
    assert similarity.tolist() == [58 / 60, 58 / 60, 58 / 60, 1.0]

    exact = torch.zeros(len(test), dtype=torch.bool)
    exact[3] = True
    index, _, _ = near_duplicates(train, test, 0.9, exclude=exact)
    assert index.tolist() == [0, 1, 2]


class _Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.EmbeddingBag(70_000, 4, padding_idx=0)
        self.head = nn.Linear(4, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens))


def test_evaluate_reports_near_copies_apart_from_exact_ones() -> None:
    train = _random_set(200, 60, 61, seed=4)
    rows = _rows(train)
    near = [[*rows[i][:-1], 65_000 + i] for i in (3, 9)]  # 58 of 60 distinct bigrams shared
    test_seqs = [*near, rows[17], *_rows(_random_set(40, 60, 61, seed=5))]
    test = SequenceData.from_sequences(test_seqs, [j % 2 for j in range(len(test_seqs))])

    settings = Settings(device="cpu", padding_check=0, bootstrap=0)
    ev = evaluate(_Bag(), test, settings, train_data=train)
    leaks = {f.data["match"]: f for f in ev.findings if f.kind == "leakage"}
    assert leaks["exact"].data["count"] == 1
    assert leaks["near"].data["count"] == 2
    assert "nearly copy a training sequence (2-gram Jaccard >= 0.9)" in leaks["near"].message

    settings = Settings(device="cpu", padding_check=0, bootstrap=0, near_duplicate_threshold=0)
    off = evaluate(_Bag(), test, settings, train_data=train)
    assert [f.data["match"] for f in off.findings if f.kind == "leakage"] == ["exact"]


def test_a_lower_threshold_bands_differently_and_finds_looser_copies() -> None:
    train = _random_set(100, 80, 81, seed=6)
    rows = _rows(train)
    # The last 12 of 80 tokens replaced: 67 of 79 bigrams kept, 24 new or lost,
    # Jaccard 67 / 91 = 0.74.
    loose = [*rows[42][:68], *range(70_000, 70_012)]
    test = SequenceData.from_sequences([loose, *_rows(_random_set(20, 80, 81, seed=7))], [0] * 21)
    assert near_duplicates(train, test, 0.9)[0].tolist() == []
    index, match, similarity = near_duplicates(train, test, 0.6)
    assert index.tolist() == [0] and match.tolist() == [42]
    assert similarity.tolist() == [67 / 91]


def test_the_leakage_checks_are_cached_with_the_predictions(tmp_path, monkeypatch) -> None:
    """xdist workers and an unchanged --seqgate-cache re-run read the leakage
    found by the first evaluation instead of hashing the train set again."""
    import pytest_seqgate.minhash as minhash
    from pytest_seqgate.cache import PredictionCache

    train = _random_set(200, 60, 61, seed=4)
    rows = _rows(train)
    test_seqs = [[*rows[3][:-1], 65_000], rows[17], *_rows(_random_set(40, 60, 61, seed=5))]
    test = SequenceData.from_sequences(test_seqs, [j % 2 for j in range(len(test_seqs))])
    calls = []
    real = minhash.near_duplicates

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(minhash, "near_duplicates", counted)

    def leaks(threshold: float) -> list[tuple[str, int]]:
        cache = PredictionCache(tmp_path, "key")
        s = Settings(device="cpu", padding_check=0, bootstrap=0, near_duplicate_threshold=threshold)
        ev = evaluate(_Bag(), test, s, train_data=train, cache=cache)
        return [(f.data["match"], f.data["count"]) for f in ev.findings if f.kind == "leakage"]

    assert leaks(0.9) == [("exact", 1), ("near", 1)] and len(calls) == 1
    assert leaks(0.9) == [("exact", 1), ("near", 1)] and len(calls) == 1  # read back
    assert leaks(0.5) == [("exact", 1), ("near", 1)] and len(calls) == 2  # another threshold
    assert leaks(0) == [("exact", 1)] and len(calls) == 2  # off: exact copies only
    assert sorted(p.name for p in tmp_path.glob("key-leakage_*.pt")) == [
        "key-leakage_0.5.pt",
        "key-leakage_0.9.pt",
        "key-leakage_exact.pt",
    ]


def test_banding_finds_a_pair_at_the_threshold_with_99_percent_chance() -> None:
    from pytest_seqgate.minhash import _bands

    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99):
        bands, rows = _bands(threshold)
        assert bands * rows == SLOTS
        assert 1 - (1 - threshold**rows) ** bands >= 0.99, threshold
        if rows < 16:  # and no more rows would do: fewer chance matches of unrelated pairs
            assert 1 - (1 - threshold ** (2 * rows)) ** (bands // 2) < 0.99, threshold
    assert _bands(0.9) == (16, 8)  # the default threshold's banding


def _bigrams(seq: list[int]) -> set[tuple[int, ...]]:
    """A sequence's bigrams, or its one token when it has no bigram."""
    return set(pairwise(seq)) or {(seq[0],)}


def _bigram_jaccard(a: list[int], b: list[int]) -> float:
    x, y = _bigrams(a), _bigrams(b)
    return len(x & y) / len(x | y)


def test_exact_jaccard_is_the_jaccard_of_the_bigram_sets() -> None:
    gen = torch.Generator().manual_seed(8)
    left, right = [], []
    for _ in range(200):  # few distinct tokens: repeated bigrams, sets smaller than lists
        a = torch.randint(1, 6, (int(torch.randint(1, 30, (1,), generator=gen)),), generator=gen)
        b = a.clone() if len(left) % 3 else a.flip(0)
        b[torch.randint(0, len(b), (1,), generator=gen)] = 7
        left.append(a.tolist())
        right.append(b.tolist())
    left_set = SequenceData.from_sequences(left, [0] * 200)
    right_set = SequenceData.from_sequences(right, [0] * 200)
    rows = torch.arange(200)
    measured = exact_jaccard(left_set, rows, right_set, rows).tolist()
    assert measured == [_bigram_jaccard(a, b) for a, b in zip(left, right)]


def test_near_duplicates_agrees_with_brute_force_at_every_threshold(monkeypatch) -> None:
    """Every eval sequence against every training one, in Python sets: the LSH search
    finds the same eval sequences, with the same best Jaccard (an estimate from the
    signatures alone counted pairs of 0.85 at 0.9 and missed some of 0.91)."""
    gen = torch.Generator().manual_seed(9)
    train = _rows(_random_set(150, 20, 40, seed=10))
    test = []
    for _ in range(80):  # copies of training sequences with 0 to 7 tokens changed
        seq = list(train[int(torch.randint(0, 150, (1,), generator=gen))])
        for _ in range(int(torch.randint(0, 8, (1,), generator=gen))):
            seq[int(torch.randint(0, len(seq), (1,), generator=gen))] = 60_000
        test.append(seq)
    train_set = SequenceData.from_sequences(train, [0] * len(train))
    test_set = SequenceData.from_sequences(test, [0] * len(test))
    best = [max(_bigram_jaccard(e, t) for t in train) for e in test]
    monkeypatch.setattr(minhash, "WINDOW", 32)
    windowed = minhash.near_copies
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        expected = [i for i, b in enumerate(best) if b >= threshold]
        # One search over the whole set, and the plugin's: windows of 32 (150
        # training sequences: five windows, the last of 22).
        for search in (near_duplicates, windowed):
            index, match, similarity = search(train_set, test_set, threshold)
            assert index.tolist() == expected, (search, threshold)
            assert similarity.tolist() == [best[i] for i in expected], (search, threshold)
            # The match named is a training sequence that close, in the whole set's numbering.
            for i, j, s in zip(index.tolist(), match.tolist(), similarity.tolist(), strict=True):
                assert _bigram_jaccard(test[i], train[j]) == s


def test_signed_windows_sign_each_window_once_within_their_budget(monkeypatch):
    """Eval windows that search the same training set in turn (a streamed eval set)
    signed every training window again for each: most of a search's cost. Kept
    up to the budget, a window is signed once; past it, again each time, and the
    matches are the same either way."""
    train = _rows(_random_set(100, 10, 30, seed=3))
    test = [[*seq, 7] for seq in train[5:40:7]]  # near copies: one gram more
    test += _rows(_random_set(20, 10, 30, seed=4))
    train_set = SequenceData.from_sequences(train, [0] * len(train))
    test_set = SequenceData.from_sequences(test, [0] * len(test))
    monkeypatch.setattr(minhash, "WINDOW", 40)  # 100 training sequences: 3 windows
    signed = []
    sign = minhash.Signed.of.__func__

    def counted(cls, window, threshold, seed=0):
        signed.append(len(window))
        return sign(cls, window, threshold, seed)

    monkeypatch.setattr(minhash.Signed, "of", classmethod(counted))
    one = minhash.Signed.of(SequenceData.from_sequences(train[:40], [0] * 40), 0.9)
    signed.clear()
    want = minhash.near_copies(train_set, test_set, 0.9)
    assert signed == [40, 40, 20]
    for budget, signings in ((0, 9), (2 * one.nbytes(), 5), (minhash.SIGNED_BUDGET, 3)):
        signed.clear()
        windows = minhash.SignedWindows(train_set, 0.9, budget=budget)
        for _ in range(3):  # three eval windows, the same sequences each time
            copies = minhash.NearCopies(test_set, 0.9)
            for offset, window, side in windows:
                copies.search(window, offset, signed=side)
            for got, expected in zip(copies.found(), want, strict=True):
                assert torch.equal(got, expected)
        assert len(signed) == signings, budget
        assert want[0].tolist() == [0, 1, 2, 3, 4]


def test_a_streamed_training_set_is_searched_from_its_kept_windows_once_all_fit():
    """A streamed training set's windows, given to SignedWindows as its file's pass
    reads them, are kept with their sequences (not their metadata) within the
    budget: where all fit (``whole``), later eval windows search them without
    reading the file again and find what the set in memory finds; where one does
    not, ``whole`` says the file must be read again."""
    train = _rows(_random_set(100, 10, 30, seed=3))
    test = [[*seq, 7] for seq in train[5:40:7]]
    train_set = SequenceData.from_sequences(train, [0] * len(train))
    test_set = SequenceData.from_sequences(test, [0] * len(test))
    want = minhash.near_copies(train_set, test_set, 0.9)
    first_window = train_set.subset(torch.arange(60))
    first_window.metadata = {"id": list(range(60))}
    read = [(0, first_window), (60, train_set.subset(torch.arange(60, 100)))]
    for budget, whole in ((minhash.SIGNED_BUDGET, True), (1, False)):
        windows = minhash.SignedWindows(None, 0.9, budget=budget)
        first = minhash.NearCopies(test_set, 0.9)
        for start, window in read:  # the pass over the file
            first.search(window, start, signed=windows.side(start, window))
        assert windows.whole is whole
        if not whole:
            assert list(windows) == []
            continue
        kept = list(windows)
        assert [start for start, _, _ in kept] == [0, 60]
        assert all(window.metadata == {} for _, window, _ in kept)
        again = minhash.NearCopies(test_set, 0.9)  # a later eval window
        for start, window, side in kept:
            again.search(window, start, signed=side)
        for copies in (first, again):
            for got, expected in zip(copies.found(), want, strict=True):
                assert torch.equal(got, expected)
