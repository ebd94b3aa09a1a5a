"""MinHash signatures over token n-grams, and LSH banding to find near duplicates.

Comparing every eval sequence with every training sequence is quadratic; a
MinHash signature estimates the Jaccard similarity of two n-gram sets from
the fraction of equal slots, and banding the signatures turns "similar" into
"share a band key", found with a sort and a binary search per band. The
candidates whose estimate comes near the threshold are then measured exactly
(their n-gram sets compared), so what is reported is never an estimate.
All of it is tensor ops; the training set is searched a window of sequences
at a time (:class:`NearCopies`), so that memory does not grow with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pytest_seqgate.data import SequenceData, _fold_steps, _weights, step_owners

SLOTS = 128
NGRAM = 2
# n-grams hashed at a time (a group's, padded): 2**13 x 128 slots x 4 bytes = 4 MiB,
# two buffers. Every op over them is a pass of tensor code over memory; 2**10 grams
# a call spent more in calls than in work, and chunks of 2**18 (int64 temporaries
# of 256 MiB, four per chunk) made the signatures of 20,000 sequences of 50 tokens
# 4.6x slower: every op paid for fresh pages and main memory.
CHUNK = 1 << 13
# Sequences whose n-gram counts lie within this ratio are hashed as one padded
# block: the padding (a sequence's last gram repeated, which leaves its minima as
# they are) costs at most this share beyond the real grams.
WIDTH_RATIO = 1.25
# Training sequences signed and searched at a time (and read at a time when the
# set is streamed): 65,536 sequences' signatures are 32 MiB.
WINDOW = 1 << 16
STEPS_PER_RUN = 1 << 18
# The most memory kept for training windows signed once and searched by several
# eval windows (SignedWindows): scikit-learn's working_memory default. 1 GiB holds
# the signed windows of about 1.5 million training sequences at 16 bands.
SIGNED_BUDGET = 1 << 30


# The chance that a pair at exactly the threshold shares a band, at least.
BAND_RECALL = 0.99
# Candidates whose estimated Jaccard is this close below the threshold are
# measured exactly: three to five standard errors of a 128-slot estimate.
ESTIMATE_MARGIN = 0.15


def _bands(threshold: float) -> tuple[int, int]:
    """(bands, rows) splitting the slots so that a pair of Jaccard ``threshold``
    shares at least one band with probability BAND_RECALL: 1 - (1 - J**rows) **
    bands. The most rows that reach it: each extra row halves or more the
    chance that unrelated sequences share a band. At 0.9 that is 16 bands of 8
    rows; at 0.75 it is 32 of 4 (16 of 8 found 82% of the pairs at 0.75), at
    0.5, 64 of 2 (32 of 4 found 87%).
    """
    for rows in (16, 8, 4, 2):
        bands = SLOTS // rows
        if 1 - (1 - threshold**rows) ** bands >= BAND_RECALL:
            return bands, rows
    return SLOTS, 1


def ngram_hashes(steps: Tensor, lengths: Tensor, n: int = NGRAM) -> tuple[Tensor, Tensor]:
    """A hash per n-gram of the sequences laid end to end in ``steps`` (one int64
    per step), and the sequence it belongs to; a sequence shorter than n
    contributes one gram of all its steps, so it still has a signature."""
    total = steps.shape[0]
    seq_id, position = step_owners(lengths)
    weights = _weights(n, salt=23)
    gram = steps * weights[0]
    for k in range(1, n):
        shifted = torch.zeros_like(steps)
        shifted[: total - k] = steps[k:] * weights[k]
        gram = gram + shifted
    starts = position <= (lengths[seq_id] - n).clamp_min(0)
    # A short sequence's single gram must not include the next sequence's steps.
    short = lengths[seq_id] < n
    if bool(short.any()):
        gram = torch.where(short, steps * weights[0], gram)
        starts = torch.where(short, position == 0, starts)
    return gram[starts], seq_id[starts]


def signatures(data: SequenceData, seed: int = 0) -> Tensor:
    """``[N, SLOTS]`` MinHash signatures (int32), deterministic for a seed.

    Each slot hashes the n-grams with its own multiply-add mod 2**32, the high
    bits folded down (the order of the minimum is set by the high bits of a
    product, which are the well-mixed ones). 32 bits, as datasketch's, are as
    exact as 64 for the estimate: over 300 pairs of 2-gram Jaccard 0.05 to
    0.98, a root mean square error of 0.036 against 0.039 (128 slots allow
    about 0.04); and the products take four times fewer cycles per slot than
    int64 ones (signatures of 20,000 sequences of 50 tokens: 0.42-0.43 s
    against 0.60-0.72 s).

    The n-grams are formed a run of whole sequences at a time, so that memory
    beyond the signatures does not grow with the set (the whole check on
    300,000 training sequences of 50 tokens peaked at 1,290 MiB beyond the data
    with every n-gram at once, 250 to 300 MiB so).
    """
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randint(0, 2**30, (SLOTS,), generator=gen) * 2 + 1).to(torch.int32)
    b = torch.randint(-(2**31), 2**31 - 1, (SLOTS,), generator=gen).to(torch.int32)
    out = torch.empty((len(data), SLOTS), dtype=torch.int32)
    buffers = [torch.empty(0, dtype=torch.int32)] * 2

    def minima(grams: Tensor) -> Tensor:
        """``[rows, SLOTS]``: each slot's least hash over a row of ``grams`` ``[rows, k]``."""
        size = grams.numel() * SLOTS
        if size > buffers[0].numel():
            buffers[:] = [torch.empty(size, dtype=torch.int32) for _ in range(2)]
        hashed = torch.mul(grams.reshape(-1, 1), a, out=buffers[0][:size].view(-1, SLOTS))
        hashed.add_(b)
        hashed ^= torch.bitwise_right_shift(hashed, 15, out=buffers[1][:size].view(-1, SLOTS))
        return hashed.view(grams.shape[0], -1, SLOTS).amin(1)

    for rows, values, lengths in data.step_chunks(STEPS_PER_RUN):
        grams, owner = ngram_hashes(_fold_steps(values), lengths)
        grams = (grams ^ (grams >> 32)).to(torch.int32)  # the low bits wrap, as a cast does
        counts = torch.bincount(owner, minlength=lengths.numel())  # every sequence has one
        starts = torch.cumsum(counts, 0) - counts
        # Sorted by their number of grams, the sequences fall in groups of about
        # CHUNK grams whose counts lie within WIDTH_RATIO: each group is one
        # [rows, width] block, its minima one dense reduction (a scatter of each
        # gram's hashes into its sequence's row took three times the hashing).
        width_of, order = torch.sort(counts, stable=True)
        level = (width_of.to(torch.float64).log() / math.log(WIDTH_RATIO)).to(torch.int64)
        block = (torch.cumsum(width_of, 0) - width_of) // CHUNK
        _, sizes = torch.unique_consecutive(level * len(grams) + block, return_counts=True)
        run = out[rows]
        first = 0
        for size in sizes.tolist():
            members = order[first : first + size]
            first += size
            width = int(width_of[first - 1])
            last = (counts[members] - 1).unsqueeze(1)
            base = starts[members].unsqueeze(1)
            # A sequence of more than CHUNK grams (alone in its group) a CHUNK at a time.
            found = minima(grams[base + torch.minimum(torch.arange(min(width, CHUNK)), last)])
            for step in range(CHUNK, width, CHUNK):
                steps = torch.arange(step, min(step + CHUNK, width))
                found = torch.minimum(found, minima(grams[base + torch.minimum(steps, last)]))
            run[members] = found
    return out


def band_keys(sig: Tensor, bands: int, rows: int) -> Tensor:
    """``[bands, N]``: one int64 key per band of ``rows`` slots, a band's keys
    contiguous, as the search sorts and looks them up band by band."""
    mix = _weights(rows, salt=31)
    keys = torch.empty(bands, sig.shape[0], dtype=torch.int64)
    # Band by band: the int64 products of all bands at once are twice the
    # signatures' own size (570 MiB for 300,000 sequences).
    for band in range(bands):
        torch.sum(sig[:, band * rows : (band + 1) * rows] * mix, 1, out=keys[band])
    return keys


@dataclass(frozen=True)
class Probe:
    """The eval side of :func:`near_duplicates`, signed once: a training set
    searched a window at a time is searched window by window for the same eval
    sequences, which would otherwise be signed again for every window."""

    signatures: Tensor
    keys: Tensor

    @classmethod
    def of(cls, test: SequenceData, threshold: float, seed: int = 0) -> Probe:
        sig = signatures(test, seed)
        return cls(sig, band_keys(sig, *_bands(threshold)))


@dataclass(frozen=True)
class Signed:
    """The training side of :func:`near_duplicates`: a window's signatures, and
    each band's keys sorted (stably, so that of training sequences sharing a key
    the first is proposed) with their rows.

    Signing is most of a search's cost (a training window of 65,536 sequences,
    profiled: 0.27 s of a search's 0.39), so where several eval windows search
    the same training windows (:class:`SignedWindows`) each is signed once.
    """

    signatures: Tensor
    keys: Tensor
    order: Tensor

    @classmethod
    def of(cls, train: SequenceData, threshold: float, seed: int = 0) -> Signed:
        sig = signatures(train, seed)
        keys, order = torch.sort(band_keys(sig, *_bands(threshold)), dim=1, stable=True)
        return cls(sig, keys, order.to(torch.int32))

    def nbytes(self) -> int:
        return _nbytes(self.signatures, self.keys, self.order)


def near_duplicates(
    train: SequenceData,
    test: SequenceData,
    threshold: float,
    seed: int = 0,
    exclude: Tensor | None = None,
    probe: Probe | None = None,
    signed: Signed | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """For each eval sequence, the most similar training sequence among those LSH
    proposes, by the exact Jaccard of their n-gram sets.

    Returns ``(eval index, train index, Jaccard)`` for the eval sequences whose
    Jaccard is at least ``threshold`` (``exclude``: a mask of eval sequences to
    leave out, e.g. exact copies reported already).

    LSH proposes candidates and the signatures' agreement ranks them, but an
    estimate from 128 slots is off by 0.02 to 0.04: on the example's SMS set at
    0.9 it counted two pairs of 0.85 and 0.87 and missed two of 0.91 and 0.94.
    So every candidate whose estimate comes within ESTIMATE_MARGIN of the
    threshold is measured exactly, and the count and the reported Jaccard are
    the exact ones. ``probe`` and ``signed``: the eval side and the training
    side, signed already (with the same threshold and seed).
    """
    probe = probe or Probe.of(test, threshold, seed)
    signed = signed or Signed.of(train, threshold, seed)
    test_sig, test_keys, train_sig = probe.signatures, probe.keys, signed.signatures
    pairs = []
    for band, (sorted_keys, order) in enumerate(zip(signed.keys, signed.order)):
        pos = torch.searchsorted(sorted_keys, test_keys[band]).clamp_max(len(train) - 1)
        hit = sorted_keys[pos] == test_keys[band]
        if exclude is not None:
            hit &= ~exclude
        if not bool(hit.any()):
            continue
        cand_test = torch.nonzero(hit).reshape(-1)
        cand_train = order[pos[cand_test]]
        agree = (test_sig[cand_test] == train_sig[cand_train]).double().mean(1)
        close = agree >= threshold - ESTIMATE_MARGIN
        pairs.append(cand_test[close] * len(train) + cand_train[close])
    empty = torch.zeros(0, dtype=torch.int64)
    if not pairs:
        return empty, empty, torch.zeros(0, dtype=torch.float64)
    pair = torch.unique(torch.cat(pairs))
    pair_test, pair_train = pair.div(len(train), rounding_mode="floor"), pair % len(train)
    jaccard = exact_jaccard(test, pair_test, train, pair_train)
    # The best pair of each eval sequence: sorted by Jaccard, then stably by eval
    # index, the last of each eval index's run.
    ranked = _lexsort(pair_test, jaccard)
    last = torch.ones(ranked.numel(), dtype=torch.bool)
    last[:-1] = pair_test[ranked[1:]] != pair_test[ranked[:-1]]
    best = ranked[last]
    best = best[jaccard[best] >= threshold]
    return pair_test[best], pair_train[best], jaccard[best]


class NearCopies:
    """Each eval sequence's nearest training sequence, the training set searched
    ``WINDOW`` sequences at a time (:func:`near_duplicates` on each window, the
    eval side signed once).

    Windows bound the memory of the search, whatever the training set's size (a
    window's signatures and band keys, not the whole set's: 146 + 37 MiB at
    300,000 sequences), and a training set streamed a window at a time is searched
    by the same windows, so that it finds what the set read whole finds. Each
    eval sequence keeps its best match, later training sequences winning ties,
    as within a window. Where training sequences share a band key each window
    proposes its own candidate of them, one search over the whole set one in
    all: more candidates, each measured exactly.
    """

    def __init__(self, test: SequenceData, threshold: float, seed: int = 0) -> None:
        self.test, self.threshold, self.seed = test, threshold, seed
        self.probe = Probe.of(test, threshold, seed)
        self.similarity = torch.full((len(test),), -1.0, dtype=torch.float64)
        self.match = torch.zeros(len(test), dtype=torch.int64)

    def search(
        self,
        window: SequenceData,
        offset: int,
        exclude: Tensor | None = None,
        signed: Signed | None = None,
    ) -> Tensor:
        """Search ``window``, the training sequences from ``offset`` on (``signed``:
        its side, signed already); return the window's rows that became an eval
        sequence's best match."""
        index, found, similarity = near_duplicates(
            window, self.test, self.threshold, self.seed, exclude, self.probe, signed
        )
        better = similarity >= self.similarity[index]
        index, found = index[better], found[better]
        self.similarity[index] = similarity[better]
        self.match[index] = found + offset
        return found

    def found(self, exclude: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(eval index, train index, Jaccard)``, as :func:`near_duplicates` gives
        them, for the eval sequences not in ``exclude`` (a mask)."""
        keep = self.similarity >= 0
        if exclude is not None:
            keep &= ~exclude
        index = torch.nonzero(keep).reshape(-1)
        return index, self.match[index], self.similarity[index]


def near_copies(
    train: SequenceData,
    test: SequenceData,
    threshold: float,
    seed: int = 0,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`NearCopies` over a training set in memory, a window at a time."""
    copies = NearCopies(test, threshold, seed)
    for start, window in windows(train):
        copies.search(window, start, exclude)
    return copies.found(exclude)


class SignedWindows:
    """A training set's windows, each with its :class:`Signed` side, for several
    eval windows to search in turn: each window is signed once, and kept up to
    ``budget`` bytes (beyond it signed again for each eval window, as memory
    stays bounded).

    ``train``: a set in memory, searched as :func:`windows`. None: a set streamed
    a window at a time (:meth:`side` is given its windows as they are read),
    whose windows are kept with their sequences, so that once all of them are
    (``whole``) later eval windows search them without reading its file again.

    A kept window costs 512 bytes a sequence for its signatures and 12 a band
    for its sorted keys and rows: 704 at the default threshold's 16 bands, 1,280
    at 0.5's 64, where the sequences themselves are 8 bytes a token. A streamed
    window's sequences are kept too, 32 bytes a sequence more: 300,000 of 45
    tokens on average take 312 MiB, and 1 GiB keeps about 980,000 of them.
    """

    def __init__(
        self, train: SequenceData | None, threshold: float, seed: int = 0, budget: int = 0
    ) -> None:
        self.train, self.threshold, self.seed, self.room = train, threshold, seed, budget
        self.kept: dict[int, tuple[SequenceData, Signed]] = {}
        self.whole = True  # no window was left unkept

    def side(self, start: int, window: SequenceData) -> Signed:
        """The side of ``window``, the training sequences from ``start`` on: the
        one kept, or signed now (and kept where the budget has room)."""
        kept = self.kept.get(start)
        if kept is not None:
            return kept[1]
        signed = Signed.of(window, self.threshold, self.seed)
        cost = signed.nbytes()
        if self.train is None:
            cost += _nbytes(
                window.values,
                window.offsets,
                window.lengths,
                window.labels,
                window.line_numbers,
                window.token_type_ids,
            )
        if cost <= self.room:
            if self.train is None:
                # Only what the search and the findings' names read: a streamed
                # window's metadata (Python lists) stays behind.
                window = replace(window, metadata={})
            self.kept[start] = (window, signed)
            self.room -= cost
        else:
            self.whole = False
        return signed

    def __iter__(self) -> Iterator[tuple[int, SequenceData, Signed]]:
        """``(offset, window, side)``: the set's windows in memory, or the streamed
        set's kept windows."""
        if self.train is None:
            for start, (window, signed) in self.kept.items():
                yield start, window, signed
            return
        for start, window in windows(self.train):
            yield start, window, self.side(start, window)


def windows(train: SequenceData) -> Iterator[tuple[int, SequenceData]]:
    """``(offset, window)``: a training set in memory as the windows of WINDOW
    sequences that :class:`NearCopies` searches.

    A window shares the set's values (laid end to end once, where a set built
    by hand is not): a copy of each, as ``subset`` makes, was 6% of the search.
    """
    values = train.packed_values()
    ends = torch.cumsum(train.lengths, 0)
    for start in range(0, len(train), WINDOW):
        stop = min(start + WINDOW, len(train))
        lengths = train.lengths[start:stop]
        yield (
            start,
            SequenceData(
                values[(int(ends[start - 1]) if start else 0) : int(ends[stop - 1])],
                torch.cumsum(lengths, 0) - lengths,
                lengths,
                train.labels[start:stop],
            ),
        )


def exact_jaccard(
    left: SequenceData, left_rows: Tensor, right: SequenceData, right_rows: Tensor
) -> Tensor:
    """The Jaccard similarity of the n-gram sets of ``left[left_rows[i]]`` and
    ``right[right_rows[i]]``, for each i (float64).

    Each gram is replaced by its rank among the distinct grams of both sides (one
    sort), so that a (pair, gram) fits one int64 key: a sort per side makes each
    pair's grams a set, one over both sides counts what they share. Sorting the
    (pair, gram) pairs by two stable sorts each time took 1.6x as long (0.175
    against 0.110 s for 20,000 pairs of up to 60 tokens).
    """
    pairs = left_rows.numel()
    (owner_left, gram_left), (owner_right, gram_right) = (
        _grams(left, left_rows),
        _grams(right, right_rows),
    )
    _, rank = torch.unique(torch.cat([gram_left, gram_right]), return_inverse=True)
    keys_left = torch.unique((owner_left << 32) | rank[: gram_left.numel()])
    keys_right = torch.unique((owner_right << 32) | rank[gram_left.numel() :])
    size_left = torch.bincount(keys_left >> 32, minlength=pairs)
    size_right = torch.bincount(keys_right >> 32, minlength=pairs)
    both = torch.sort(torch.cat([keys_left, keys_right])).values
    shared = both[1:] == both[:-1]
    common = torch.bincount(both[1:][shared] >> 32, minlength=pairs)
    return common / (size_left + size_right - common).to(torch.float64)


def _grams(data: SequenceData, rows: Tensor) -> tuple[Tensor, Tensor]:
    """The n-grams of the sequences ``rows``, as (i, gram) pairs."""
    positions, _ = data.gather_positions(rows)
    gram, owner = ngram_hashes(_fold_steps(data.values[positions]), data.lengths[rows])
    return owner, gram


def _lexsort(major: Tensor, minor: Tensor) -> Tensor:
    """The order that sorts ``(major, minor)`` pairs by major, then minor (stable)."""
    order = torch.argsort(minor, stable=True)
    return order[torch.argsort(major[order], stable=True)]


def _nbytes(*tensors: Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
