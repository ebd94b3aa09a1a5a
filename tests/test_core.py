"""Core pieces as plain Python: data, batching, stats, diagnostics, gate parsing."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from pytest_seqgate.batching import Batch, BucketedBatches, collate, length_bucketed, length_order
from pytest_seqgate.data import SequenceData
from pytest_seqgate.diagnostics import (
    accuracy_paradox,
    duplicates,
    leakage,
    missing_classes,
    traded_labels,
)
from pytest_seqgate.exceptions import ConfigError, DataError, GateFailure, ModelError
from pytest_seqgate.gates import bind_classes, merge_gate_kwargs, parse_gates
from pytest_seqgate.metrics import compute_metrics
from pytest_seqgate.stats import binomial_sf, p_value_text, wilson_interval

from conftest import token_set


def test_collate_pads_right_with_lengths_and_mask() -> None:
    data = SequenceData.from_sequences([[1, 2, 3], [4], [5, 6]], [0, 1, 0])
    batch = collate(data, torch.tensor([0, 1, 2]))
    assert batch.inputs.tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert batch.lengths.tolist() == [3, 1, 2]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]


def test_collate_features() -> None:
    data = SequenceData.from_sequences([torch.ones(2, 3), torch.full((1, 3), 2.0)], [0, 1])
    batch = collate(data, torch.tensor([1, 0]))
    assert batch.inputs.shape == (2, 2, 3)
    assert batch.inputs[0].tolist() == [[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]


def test_length_bucketed_sorts_longest_first_and_covers_all() -> None:
    lengths = torch.tensor([3, 9, 1, 9, 5])
    batches = length_bucketed(lengths, 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_subset_and_hashes() -> None:
    data = SequenceData.from_sequences([[1, 2, 3], [4, 5], [1, 2, 3], [3, 2, 1]], [0, 1, 0, 1])
    hashes = data.content_hashes()
    assert hashes[0] == hashes[2]
    assert len(set(hashes.tolist())) == 3  # order matters: [3, 2, 1] differs from [1, 2, 3]
    sub = data.subset(torch.tensor([3, 1]))
    assert sub[0][0].tolist() == [3, 2, 1] and sub[1][0].tolist() == [4, 5]
    assert sub.content_hashes().tolist() == hashes[[3, 1]].tolist()
    # A sample names its records as the whole set does (a training set sampled by
    # seqgate_train_sample): by row for a set named by row, by line for a file's.
    named = dataclasses.replace(data, source="train.parquet")
    assert [sub.record(i) for i in (0, 1)] == ["<memory>[3]", "<memory>[1]"]
    assert named.subset(torch.tensor([3, 1])).subset(torch.tensor([1])).record(0) == (
        "train.parquet[1]"
    )
    lined = dataclasses.replace(data, source="t.jsonl", line_numbers=torch.tensor([2, 4, 5, 9]))
    assert lined.subset(torch.tensor([3, 1])).record(0) == "t.jsonl:9"


def test_hashes_are_the_same_across_chunks_and_for_any_layout() -> None:
    from pytest_seqgate.data import HASH_CHUNK
    from pytest_seqgate.minhash import signatures

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 300, (3 * HASH_CHUNK // 150,), generator=gen)
    seqs = [torch.randint(0, 1000, (int(k),), generator=gen) for k in lengths]
    data = SequenceData.from_sequences(seqs, [0] * len(seqs))
    assert int(lengths.sum()) > 2 * HASH_CHUNK  # sequences straddle the chunk cuts
    alone = torch.cat([SequenceData.from_sequences([s], [0]).content_hashes() for s in seqs])
    assert torch.equal(data.content_hashes(), alone)
    # Built by hand: the same sequences laid out backwards, with a gap between.
    n = len(seqs)
    values = torch.cat([torch.cat(seqs[::-1]), torch.full((5,), 7)])
    offsets = torch.cumsum(lengths.flip(0), 0).flip(0) - lengths
    by_hand = SequenceData(values, offsets, lengths, torch.zeros(n, dtype=torch.int64))
    assert by_hand[1][0].tolist() == seqs[1].tolist()
    assert torch.equal(by_hand.content_hashes(), alone)
    assert torch.equal(signatures(by_hand), signatures(data))


def test_a_hand_built_layout_is_judged_by_its_sequences_alone() -> None:
    from torch import nn

    from pytest_seqgate.exceptions import ModelError
    from pytest_seqgate.inference import check_embedding_range

    # Sequence 0 is [3, 12] at offset 4, sequence 1 is [1, 2, 5] at offset 0;
    # position 3 lies between them and belongs to no sequence.
    values = torch.tensor([1, 2, 5, -1, 3, 12])
    data = SequenceData(values, torch.tensor([4, 0]), torch.tensor([2, 3]), torch.tensor([0, 1]))
    model = nn.EmbeddingBag(10, 2)
    with pytest.raises(ModelError, match=r"<memory>\[0\]: token id 12 .*\(1 record affected\)"):
        check_embedding_range(model, data)
    values[5] = 4
    check_embedding_range(model, SequenceData(values, data.offsets, data.lengths, data.labels))
    values[3] = 99  # between the sequences: nothing reads it
    check_embedding_range(model, SequenceData(values, data.offsets, data.lengths, data.labels))


def test_wilson_textbook_value() -> None:
    # 45/50 at 95%: p = 0.9, z = 1.959963984540054.
    z = 1.959963984540054
    n, p = 50, 0.9
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = wilson_interval(torch.tensor(45), torch.tensor(50), 0.95).tolist()
    assert low == pytest.approx(centre - half, abs=1e-9)
    assert high == pytest.approx(centre + half, abs=1e-9)
    assert low == pytest.approx(0.7864, abs=1e-4)
    # At 0 and n successes the bound is 0 and 1 exactly, not a rounding residue
    # (0 of 284 gave a low of 8.7e-19 in the JSON report); none without trials.
    bounds = wilson_interval(torch.tensor([0, 284, 0]), torch.tensor([284, 284, 0])).tolist()
    assert bounds[0][0] == 0.0 and bounds[1][1] == 1.0
    assert all(math.isnan(b) for b in bounds[2])


def test_binomial_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n, p in ((85, 100, 0.55), (10, 10, 0.5), (3, 40, 0.2), (1956, 2000, 0.975)):
        expected = scipy_stats.binomtest(k, n, p, alternative="greater").pvalue
        assert binomial_sf(k, n, p) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        # Large n: the tail is summed over a window around the mode, not every term.
        (12_600, 50_000, 0.25),  # k near the mode
        (13_000, 50_000, 0.25),  # far above it: a tiny p-value
        (10, 50_000, 0.25),  # far below it: a p-value of 1
        (49_990, 50_000, 0.9995),  # skewed, mode near n
        (30, 200_000, 0.0001),  # skewed, mode near 0 (Poisson-like)
        (1, 1_000_000, 1e-7),
        (500_400, 1_000_000, 0.5),
    ],
)
def test_binomial_tail_window_matches_scipy(k: int, n: int, p: float) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    expected = float(scipy_stats.binom.sf(k - 1, n, p))
    assert binomial_sf(k, n, p) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def _cm(rows: list[list[int]]) -> object:
    return compute_metrics(torch.tensor(rows))


def test_paradox_flagged_on_imbalance() -> None:
    # 1,950 ham all right; 50 spam of which 6 found.
    findings = accuracy_paradox(_cm([[1950, 0], [44, 6]]), ("ham", "spam"))
    assert len(findings) == 1
    assert findings[0].data["p_value"] == pytest.approx(0.2178, abs=1e-3)
    assert findings[0].message == (
        "accuracy 97.8% hides recall 12.0% on 'spam' (2.5% of samples): a model that always "
        "answers 'ham' scores 97.5%"
    )


def test_an_unknown_setting_in_code_names_the_one_meant() -> None:
    """Settings.from_dict takes the option names; the ini's spelling (seqgate_model)
    or a slip (modle) is told the name meant."""
    from pytest_seqgate.config import Settings

    with pytest.raises(
        ConfigError,
        match=r"^unknown settings modle \(did you mean `model`\?\), seqgate_eval_data \(did "
        r"you mean `eval_data`\?\), zzz; known: model, model_factory, ",
    ):
        Settings.from_dict(".", modle="m.pt", seqgate_eval_data="e.jsonl", zzz=1)


def test_a_class_hidden_among_many_says_where_its_samples_went() -> None:
    """Among ten classes of 100 (always answering one scores 10%), accuracy 90%
    with a class never found: 'a model that always answers a scores 10.0%'
    explained nothing there. Where the class's samples went does."""
    rows = [[100 if j == i else 0 for j in range(10)] for i in range(10)]
    rows[7] = [0] * 10
    rows[7][2], rows[7][4] = 30, 70
    labels = tuple(f"c{k}" for k in range(10))
    (found,) = accuracy_paradox(_cm(rows), labels)
    assert found.message == (
        "accuracy 90.0% hides recall 0.0% on 'c7' (10.0% of samples): 70 of its 100 "
        "samples were predicted as 'c4'"
    )
    assert found.data["predicted_as"] == "c4"


def test_long_lists_of_class_names_are_cut_in_messages() -> None:
    from pytest_seqgate.exceptions import label_list

    assert label_list(["ham", "spam"]) == "['ham', 'spam']"
    assert label_list([f"c{k}" for k in range(150)]) == (
        "['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8', 'c9', ..., 'c148', 'c149'] "
        "(150 classes)"
    )
    assert label_list(map(str, range(12))) == repr([str(k) for k in range(12)])


def test_an_eval_set_too_small_to_tell_says_so() -> None:
    # 30 samples at 80/20, every class found at 80% or more: 27 right is not
    # significantly above the 80% of always answering ham (p = 0.12).
    (found,) = accuracy_paradox(_cm([[22, 2], [1, 5]]), ("ham", "spam"))
    assert found.message == (
        "accuracy 90.0% on 30 samples is not significantly above the no-information rate: a "
        "model that always answers 'ham' scores 80.0% (binomial p = 0.123); the model finds "
        "every class (lowest recall 83.3%), so the eval set may be too small to tell: add "
        "samples, or set fail_on_paradox=False for it"
    )
    # A class it misses: the sample size is not the story, and the hint is not given.
    (found,) = accuracy_paradox(_cm([[24, 0], [4, 2]]), ("ham", "spam"))
    assert "too small to tell" not in found.message


def test_accuracy_near_chance_on_a_balanced_set_hides_nothing() -> None:
    # Three classes of 100: 34% is chance, and 'b' is no minority to be hidden.
    cm = _cm([[25, 10, 65], [30, 16, 54], [24, 15, 61]])
    (found,) = accuracy_paradox(cm, ("a", "b", "c"))
    assert found.message == (
        "accuracy 34.0% on 300 samples is not significantly above the no-information rate: "
        "a model that always answers 'a' scores 33.3% (binomial p = 0.425); lowest recall "
        "16.0% on 'b'"
    )
    # Nor is a minority class at accuracy 62.0%, balanced accuracy 56.7%: the
    # accuracy is near chance, and hides little.
    (found,) = accuracy_paradox(_cm([[50, 10], [28, 12]]), ("a", "b"))
    assert found.message.startswith("accuracy 62.0% on 100 samples is not significantly")
    assert found.message.endswith("; lowest recall 30.0% on 'b'")


def test_a_p_value_that_rounds_to_one_does_not_read_as_certainty() -> None:
    # 78 of 300 right where always answering 'b' scores 111: p is 0.99997.
    (found,) = accuracy_paradox(_cm([[26, 40, 28], [36, 13, 62], [21, 35, 39]]), "abc")
    assert "(binomial p > 0.999)" in found.message
    assert p_value_text(0.9994) == "p = 0.999"
    assert p_value_text(0.0123) == "p = 0.0123"


def test_no_paradox_for_balanced_good_model() -> None:
    # 90% recall on both classes at 80/20.
    assert accuracy_paradox(_cm([[720, 80], [20, 180]]), ("ham", "spam")) == []


def test_labels_in_the_wrong_order_are_named() -> None:
    # The example's model gated with seqgate_labels = spam, ham.
    (found,) = traded_labels(_cm([[7, 103], [784, 7]]), ("spam", "ham"))
    assert found.kind == "label_order" and found.severity == "error"
    assert found.data["fitting_order"] == ["ham", "spam"]
    assert found.data["accuracy_in_that_order"] == pytest.approx(887 / 901)
    assert "in the order ['ham', 'spam'] accuracy would be 98.4%, not 1.6%" in found.message
    # A cycle of three of four classes: outputs 0, 1, 2 are classes 2, 0, 1.
    cycle = [[2, 40, 1, 0], [1, 0, 50, 2], [30, 1, 2, 0], [0, 3, 0, 60]]
    (found,) = traded_labels(_cm(cycle), ("a", "b", "c", "d"))
    assert found.data["fitting_order"] == ["c", "a", "b", "d"]


@pytest.mark.parametrize(
    "rows",
    [
        [[900, 0], [100, 0]],  # always the majority class
        [[40, 35], [30, 45]],  # poor, but each prediction's majority is its own class
        [[50, 30, 0], [2, 10, 0], [0, 0, 40]],  # predicted b is mostly a, but a stays a
        [[1, 3], [3, 1]],  # too few predictions to tell
        [[0, 0], [0, 0]],
    ],
)
def test_no_label_order_finding_without_a_permutation(rows: list[list[int]]) -> None:
    assert traded_labels(_cm(rows), tuple("abc"[: len(rows)])) == []


def test_a_fitting_order_always_fits_better() -> None:
    gen = torch.Generator().manual_seed(3)
    flagged = 0
    for _ in range(300):
        c = int(torch.randint(2, 6, (1,), generator=gen))
        cm = torch.randint(0, 20, (c, c), generator=gen)
        cm[torch.randperm(c, generator=gen), torch.arange(c)] += torch.randint(0, 200, (c,))
        labels = tuple(f"k{i}" for i in range(c))
        for found in traded_labels(compute_metrics(cm), labels):
            flagged += 1
            order = found.data["fitting_order"]
            assert sorted(order) == sorted(labels)  # a permutation of the labels
            # Reading output j as class order[j] gives the accuracy it reports.
            rows = torch.tensor([labels.index(name) for name in order])
            correct = int(cm[rows, torch.arange(c)].sum())
            assert found.data["accuracy_in_that_order"] == pytest.approx(correct / int(cm.sum()))
            assert correct > int(cm.diagonal().sum())
    assert flagged > 50


def test_leakage_and_duplicates() -> None:
    train = SequenceData.from_sequences([[i, i + 1, i + 2] for i in range(400)], [0] * 400)
    test_seqs = [[i, i + 1, i + 2] for i in range(40)] + [[1000 + i, 7] for i in range(360)]
    test = SequenceData.from_sequences(test_seqs, [0] * 400)
    found = leakage(torch.isin(test.content_hashes(), train.content_hashes()), test)
    assert found[0].data["count"] == 40 and found[0].data["fraction"] == 0.1
    assert len(found[0].data["examples"]) == 5
    dup = SequenceData.from_sequences([[1, 2], [3], [1, 2], [1, 2]], [0, 0, 0, 0])
    assert duplicates(dup)[0].data["count"] == 2


def test_duplicates_are_settled_on_all_64_bits_of_the_hash() -> None:
    """The check sorts the top 32 bits first: hashes that share them but differ
    below are no copies, and copies among them are still each found once."""
    data = SequenceData.from_sequences([[i + 1] for i in range(8)], [0] * 8)
    top = 0x12345678 << 32
    distinct = torch.tensor([top | 1, top | 2, top | 3, 5, 6, 7, 8, 9])
    assert duplicates(data, distinct) == []
    # Copies of row 0 at rows 4 and 6, interleaved with a same-top non-copy (row 2),
    # and a copy of row 3 at row 7 under other top bits (negative hashes too).
    mixed = torch.tensor([top | 1, 4, top | 2, -(2**40), top | 1, 5, top | 1, -(2**40)])
    (finding,) = duplicates(data, mixed)
    assert finding.data["count"] == 3
    assert finding.data["examples"] == [data.record(i) for i in (4, 6, 7)]
    # Against the plain definition on random hashes with many copies.
    gen = torch.Generator().manual_seed(0)
    pool = torch.randint(-(2**62), 2**62, (300,), generator=gen)
    drawn = pool[torch.randint(0, 300, (2_000,), generator=gen)]
    data = SequenceData.from_sequences([[1]] * 2_000, [0] * 2_000)
    first_seen: set[int] = set()
    expected = 0
    for h in drawn.tolist():
        expected += h in first_seen
        first_seen.add(h)
    assert duplicates(data, drawn)[0].data["count"] == expected


def test_an_accuracy_gate_above_what_conflicting_labels_allow_says_so() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check

    # 20 sequences; [2] appears twice, once as each class: at most 19 of 20 right.
    sequences = [[2]] + [[i + 2] for i in range(19)]
    labels = [1] + [i % 2 for i in range(19)]
    data = SequenceData.from_sequences(sequences, labels, ("even", "odd"))
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0))
    gates = parse_gates({"min_accuracy": 0.97, "fail_on_paradox": False}, ev.labels)
    (result,) = check(ev, gates, "t")
    assert not result.passed and result.value == pytest.approx(0.95)
    assert result.reason == (
        "out of reach: copies of 1 eval sequence carry different labels, which caps any "
        "model's accuracy at 0.950"
    )
    # At or below the cap the gate is the model's alone, and says nothing of it.
    gates = parse_gates({"min_accuracy": 0.949, "fail_on_paradox": False}, ev.labels)
    assert check(ev, gates, "t")[0].reason == ""


def test_the_terminal_shows_a_few_findings_of_a_kind_and_counts_the_rest() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.diagnostics import Finding
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import render_terminal

    data = SequenceData.from_sequences([[i % 2 + 2] for i in range(40)], [i % 2 for i in range(40)])
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0))
    ev.findings = [Finding("underpowered", "warning", f"wide {i}") for i in range(5)]
    ev.findings.append(Finding("leakage", "warning", "copied"))
    quiet = [line for line, _ in render_terminal([ev]) if line.startswith("WARNING")]
    assert quiet == [
        "WARNING [underpowered] wide 0",
        "WARNING [underpowered] wide 1",
        "WARNING [underpowered] wide 2",
        "WARNING [underpowered] ... and 2 more (-v shows each; the report files hold them all)",
        "WARNING [leakage] copied",
    ]
    verbose = [line for line, _ in render_terminal([ev], 1) if line.startswith("WARNING")]
    assert len(verbose) == 6


def test_classes_without_samples_are_named() -> None:
    names = ("a", "b", "c", "d", "e")
    # Rows are true classes: b and d have none; the model still predicts d twice.
    cm = torch.tensor(
        [[5, 0, 0, 1, 0], [0] * 5, [0, 0, 4, 1, 0], [0] * 5, [1, 0, 0, 0, 3]], dtype=torch.int64
    )
    (found,) = missing_classes(compute_metrics(cm), names)
    assert found.data == {"classes": ["b", "d"]}
    assert found.message.startswith("2 of 5 classes have no samples in the eval set ('b', 'd'): ")
    # d, predicted twice, has precision and F1 0, which the macro averages count;
    # b, never predicted, has neither, and they skip it.
    assert (
        "; predicted all the same, 'd' has precision and F1 0, which macro precision and "
        "macro F1 average in; add samples" in found.message
    )
    full = torch.eye(5, dtype=torch.int64) * 3
    assert missing_classes(compute_metrics(full), names) == []
    assert missing_classes(compute_metrics(torch.zeros(5, 5, dtype=torch.int64)), names) == []


def test_copies_with_different_labels_bound_accuracy() -> None:
    """Against the plain definition: group the sequences, keep the groups holding
    two labels or more, and count what the best answer per group still gets wrong."""
    from collections import Counter

    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        n, classes = 400, 2 + seed % 3
        pool = torch.randint(1, 9, (60, 2), generator=gen)
        sequences = pool[torch.randint(0, 60, (n,), generator=gen)].tolist()
        labels = torch.randint(0, classes, (n,), generator=gen)
        # Most copies agree: a label per pool entry, with a seeded few flipped.
        labels = torch.where(torch.rand(n, generator=gen) < 0.9, labels[:1].expand(n), labels)
        data = SequenceData.from_sequences(sequences, labels.tolist())
        groups: dict[tuple[int, ...], list[int]] = {}
        for sequence, label in zip(sequences, labels.tolist()):
            groups.setdefault(tuple(sequence), []).append(label)
        conflicted = [g for g in groups.values() if len(set(g)) > 1]
        found = [f for f in duplicates(data) if f.kind == "conflicting_labels"]
        if not conflicted:
            assert found == []
            continue
        (finding,) = found
        wrong = sum(len(g) - max(Counter(g).values()) for g in conflicted)
        assert finding.data["sequences"] == len(conflicted)
        assert finding.data["samples"] == sum(map(len, conflicted))
        assert finding.data["max_accuracy"] == pytest.approx(1 - wrong / n)
    # The examples: the first disagreeing copies in dataset order, with the labels' names.
    data = SequenceData.from_sequences(
        [[1, 2], [3], [1, 2], [3], [1, 2]], [0, 1, 0, 0, 1], label_names=("ham", "spam")
    )
    (_, finding) = duplicates(data, labels=("ham", "spam"))
    assert finding.data["examples"] == [
        "<memory>[1] 'spam' = <memory>[3] 'ham'",
        "<memory>[2] 'ham' = <memory>[4] 'spam'",
    ]
    assert finding.message.startswith(
        "2 sequences appear in the eval set with different labels (5 samples), e.g. "
        "<memory>[1] 'spam' = <memory>[3] 'ham': no model can be right on every copy, "
        "so accuracy cannot exceed 60.0%"
    )
    one = SequenceData.from_sequences([[1], [1], [2]], [0, 1, 0])
    (_, finding) = duplicates(one)
    assert finding.message.startswith(
        "1 sequence appears in the eval set with different labels (2 samples), e.g. "
        "<memory>[0] 0 = <memory>[1] 1: "
    )


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ({"min_acuracy": 0.9}, "unknown gate `min_acuracy` (did you mean `min_accuracy`?)"),
        ({"min_zzz": 0.9}, "unknown gate `min_zzz`; known gates: min_accuracy"),
        # A guessed prefix or a shortened name: read past min_/max_/fail_on_.
        (
            {"fail_on_padding": True},
            "unknown gate `fail_on_padding` (did you mean `fail_on_padding_sensitivity`?)",
        ),
        ({"min_prec": 0.9}, "unknown gate `min_prec` (did you mean `min_precision`?)"),
        ({"fail_on_leakage": True}, "unknown gate `fail_on_leakage` (did you mean `max_leakage`?)"),
        (
            {"min_recall": {"spma": 0.9}},
            "names class 'spma' (did you mean `spam`?), which is not one of the labels",
        ),
        ({"min_recall": {"eggs": 0.9}}, "names class 'eggs', which is not one of the labels"),
        ({"min_f1": {"ham": 1.3}}, "Expected `min_f1['ham']` to be in [0, 1], but got 1.3"),
        ({"min_accuracy": -0.1}, "Expected `min_accuracy` to be in [0, 1], but got -0.1"),
        (
            {"min_recall": {"spam": 90}},
            "`min_recall['spam']` to be in [0, 1], but got 90 (a share, not a percentage: 0.9 "
            "for 90%)",
        ),
        ({"fail_on_paradox": "yes"}, "Expected `fail_on_paradox` to be True or False"),
        ({"max_train_test_gap": {"loss": 0.1}}, "takes metrics"),
    ],
)
def test_gate_parse_errors(gates: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_gates(gates, ("ham", "spam"))
    assert message in str(info.value)


def test_marker_levels_merge_closest_first() -> None:
    test = {"min_recall": {"spam": 0.9}, "max_train_test_gap": 0.05, "slice": "lang=fr"}
    klass = {"min_recall": {"ham": 0.8, "spam": 0.5}, "min_f1": {"ham": 0.7}}
    module = {"min_f1": 0.6, "max_train_test_gap": {"accuracy": 0.1}, "min_accuracy": 0.9}
    assert merge_gate_kwargs([test, klass, module]) == {
        # Mappings combine entry by entry, the closest winning.
        "min_recall": {"ham": 0.8, "spam": 0.9},
        # A mapping and a number: the closer one, whole.
        "min_f1": {"ham": 0.7},
        "max_train_test_gap": 0.05,
        "min_accuracy": 0.9,
        "slice": "lang=fr",
    }
    assert module == {"min_f1": 0.6, "max_train_test_gap": {"accuracy": 0.1}, "min_accuracy": 0.9}


def test_batch_hashes_equal_flat_hashes() -> None:
    gen = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 30, (int(k),), generator=gen) for k in torch.randint(1, 20, (50,))]
    seqs.append(torch.tensor([0, 0]))  # token 0 must not be confused with padding
    seqs.append(torch.tensor([0]))
    data = SequenceData.from_sequences(seqs, [0] * len(seqs))
    index = torch.arange(len(seqs))
    batch = collate(data, index)
    from pytest_seqgate.data import hash_padded, hash_tables, length_terms

    weights, _ = hash_tables(40)

    def batch_hashes(b: Batch) -> list[int]:
        return (hash_padded(b.inputs, weights) + length_terms(b.lengths)).tolist()

    assert batch_hashes(batch) == data.content_hashes().tolist()
    assert data.content_hashes()[-1] != data.content_hashes()[-2]
    feats = SequenceData.from_sequences([torch.randn(3, 4), torch.randn(1, 4)], [0, 1])
    assert batch_hashes(collate(feats, torch.arange(2))) == feats.content_hashes().tolist()
    # The sorted pass of inference pads the same way and hashes the same.
    sorted_pass = BucketedBatches(data)
    parts = [sorted_pass.batch(a, b) for a, b in sorted_pass.ranges(7)]
    run_order = torch.cat([p.index for p in parts])
    assert torch.equal(run_order, sorted_pass.order)
    hashes = [h for p in parts for h in batch_hashes(p)]
    assert hashes == data.content_hashes()[run_order].tolist()
    for p in parts:
        assert torch.equal(p.inputs, collate(data, p.index).inputs)


class Parity(torch.nn.Module):
    """Predicts the parity of the first token, with certainty."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens[:, 0] % 2, 2).float()


def test_a_gate_line_reads_class_names_with_brackets_and_spaces() -> None:
    """A class name is whatever the data names it: ``spam [promo]`` could not be
    gated in a line (the class ran to the first ``]``)."""
    from pytest_seqgate.gates import parse_gate_line

    labels = ("не спам", "spam [promo]")
    line = parse_gate_line("recall[spam [promo]] >= 0.5", labels)
    assert line.name == "recall[spam [promo]]"
    [gate] = line.spec.gates
    assert (gate.metric, gate.class_name, gate.threshold) == ("recall", "spam [promo]", 0.5)
    [gate] = parse_gate_line("f1[не спам] >= 0.9; xfail: known", labels).spec.gates
    assert gate.class_name == "не спам"
    with pytest.raises(ConfigError, match=r"recall\[spam \[promo\]\] >= 0.5"):
        parse_gate_line("recall[spam [promo]] > 0.5", labels)


def test_a_gate_line_names_its_metric_in_a_line_s_words() -> None:
    """``recal[b] >= 0.1`` was told of an unknown gate `min_recal` and a list of
    marker keys; a line is told of the metric, in the names a line uses."""
    from pytest_seqgate.gates import parse_gate_line

    labels = ("ham", "spam")
    with pytest.raises(ConfigError) as info:
        parse_gate_line("recal[spam] >= 0.1", labels)
    assert str(info.value).startswith(
        "seqgate_gates: 'recal[spam] >= 0.1': unknown metric `recal` (did you mean `recall`?); "
        "a line reads accuracy, average_precision, balanced_accuracy, ece, f1, "
    )
    with pytest.raises(ConfigError, match=r"'ece >= 0.1': ece takes only an upper bound: <=$"):
        parse_gate_line("ece >= 0.1", labels)
    # min_support is a setting of the gates, not a metric to compare.
    with pytest.raises(ConfigError, match="unknown metric `support`"):
        parse_gate_line("support >= 3", labels)
    # The marker's max_regression={metric: number}, one entry a line.
    [gate] = parse_gate_line("regression.recall[spam] <= 0.05", labels).spec.gates
    assert (gate.key, gate.metric, gate.threshold) == (
        "max_regression",
        "regression.recall[spam]",
        0.05,
    )
    with pytest.raises(
        ConfigError, match=r"but got 'recal\[spam\]' \(did you mean `recall\[spam\]`"
    ):
        parse_gate_line("regression.recal[spam] <= 0.05", labels)
    # A regression is bounded above (">=" was read as "<=", the opposite of the
    # line), and its class goes with a metric (it was dropped).
    with pytest.raises(ConfigError, match=r"regression takes only an upper bound: <=$"):
        parse_gate_line("regression >= 0.01", labels)
    with pytest.raises(ConfigError, match=r"did you mean 'regression.recall\[spam\] <= 0.05'\?$"):
        parse_gate_line("regression[spam] <= 0.05", labels)
    with pytest.raises(ConfigError, match="train_test_gap takes no class"):
        parse_gate_line("train_test_gap[spam] <= 0.1", labels)


def test_a_misspelt_regression_metric_is_a_usage_error_not_a_silent_pass() -> None:
    """``max_regression={"recal[spam]": 0.05}`` passed against every baseline, as
    "the baseline has no recal[spam]"; a class the labels lack is caught when
    they become known (from the data, after collection began)."""
    with pytest.raises(ConfigError, match=r"but got 'macro_f2' \(did you mean `macro_f1`\?\)"):
        parse_gates({"max_regression": {"macro_f2": 0.1}}, ("ham", "spam"))
    spec = parse_gates({"max_regression": {"recall[spma]": 0.1}}, None)
    with pytest.raises(ConfigError, match="`max_regression` names class 'spma' \\(did you mean"):
        bind_classes(spec, ("ham", "spam"))
    # A per-class metric without a class means every class, precision and F1 too.
    spec = parse_gates({"max_regression": {"precision": 0.1, "mcc": 0.2}}, ("ham", "spam"))
    assert [g.metric for g in bind_classes(spec, ("ham", "spam")).gates] == [
        "regression.precision[ham]",
        "regression.precision[spam]",
        "regression.mcc",
    ]


def test_a_gate_says_by_how_much_it_clears_or_misses_its_threshold() -> None:
    """The margin: the number compared (the lower bound, when the gate reads it)
    minus the threshold for >=, the threshold minus it for <=; none for a
    finding's gate or an undefined value. Tables print it signed."""
    from pytest_seqgate.gates import GateResult, failure_message, format_margin

    def gate(op: str, value: float | None, bound: float | None = None) -> GateResult:
        return GateResult("t", "recall", "spam", op, 0.8, value, False, "", bound)

    assert gate(">=", 0.664).margin == pytest.approx(-0.136)
    assert gate(">=", 0.9, bound=0.75).margin == pytest.approx(-0.05)  # the bound was compared
    assert gate("<=", 0.5).margin == pytest.approx(0.3)
    assert gate(">=", None).margin is None and gate("absent", 1.0).margin is None
    assert gate(">=", float("nan")).margin is None
    assert [format_margin(gate(">=", v)) for v in (0.664, 0.8, None)] == ["-0.136", "+0.000", ""]
    table = failure_message([gate(">=", 0.664)], "t").splitlines()
    assert table[1].split() == ["metric", "class", "threshold", "value", "margin", "reason"]
    assert table[3].split() == ["recall", "spam", ">=", "0.8", "0.664", "-0.136"]


def test_an_evaluation_gives_each_number_by_the_names_a_gate_uses() -> None:
    """``ev.value("recall", "spam")``: a test asserting on numbers reads what a gate
    reads, by class name; a misnamed metric or class says what there is."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate

    labels = torch.tensor([i % 2 for i in range(30)])
    labels[:3] = 1 - labels[:3]  # three wrong: recall and precision below 1
    data = SequenceData.from_sequences([[i + 2] for i in range(30)], labels, ("ham", "spam"))
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0), train_data=data)
    spam = ev.labels.index("spam")
    assert ev.value("recall", "spam") == ev.metrics.value("recall", spam) < 1
    assert ev.value("support", "ham") == 14
    assert ev.value("macro_f1") == ev.metrics.value("macro_f1")
    assert ev.value("roc_auc", "spam") == float(ev.ranking.roc_auc[spam])
    assert ev.value("train_test_gap.accuracy") == 0.0
    assert ev.value("regression.accuracy") is None  # no baseline
    # A gate line's spelling, and what max_leakage compares (the set is its own
    # training set: every sequence is a copy); None without a training set.
    assert ev.value("recall[spam]") == ev.value("recall", "spam")
    assert ev.value("leakage") == 1.0
    assert evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0)).value("leakage") is None
    for args, said in (
        (
            ("recall", 1),
            "value('recall', 1): a class is given by its name; the classes are ['ham', 'spam']",
        ),
        (("recall[spma]",), "no class 'spma' (did you mean `spam`?)"),
        (("leakag",), "unknown metric 'leakag' (did you mean `leakage`?)"),
        (
            ("recall",),
            "recall is per class: name one of ['ham', 'spam'], as in value('recall', 'spam')",
        ),
        (("macro_f1", "spam"), "macro_f1 is not per class: value('macro_f1') takes no class"),
        (
            ("recall", "Spam"),
            "no class 'Spam' (did you mean `spam`?); the classes are ['ham', 'spam']",
        ),
        (("recal", "spam"), "unknown metric 'recal' (did you mean `recall`?); built-in: accuracy,"),
        # Misspelt whole-set names read as "undefined" (None), which `is None` passed.
        (
            ("train_test_gap.acuracy",),
            "unknown metric 'train_test_gap.acuracy' (did you mean `accuracy`?); train_test_gap. "
            "takes accuracy, macro_f1, recall",
        ),
        (("regression.macro_f2",), "'regression.macro_f2': `max_regression` compares accuracy"),
        (
            ("regression.recall[spma]",),
            "'regression.recall[spma]': `max_regression` names class 'spma' (did you mean `spam`?)",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            ev.value(*args)
        assert str(info.value).startswith(said), args


def test_a_regression_is_read_by_name_and_per_class_as_its_worst_class(tmp_path: Path) -> None:
    """``ev.value("regression.recall")`` was None (no such entry) against any
    baseline: it is the largest drop of a class's recall, as the gate reads it."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import save_baseline

    labels = torch.tensor([i % 2 for i in range(40)])
    data = SequenceData.from_sequences([[i + 2] for i in range(40)], labels, ("ham", "spam"))
    quiet = {"padding_check": 0, "bootstrap": 0}
    base = evaluate(Parity(), data, Settings(**quiet))
    # A script saves the baseline as --seqgate-save-baseline does.
    assert save_baseline(str(tmp_path / "base.json"), [base]) == tmp_path / "base.json"

    class MissesSpam(Parity):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out = super().forward(tokens)
            out[tokens[:, 0] % 4 == 3] = torch.tensor([1.0, 0.0])  # half the spam
            return out

    settings = Settings(rootdir=tmp_path, baseline="base.json", **quiet)
    ev = evaluate(MissesSpam(), data, settings)
    assert ev.value("regression.recall", "spam") == pytest.approx(0.5)
    assert ev.value("regression.recall") == pytest.approx(0.5)  # the worst class
    assert ev.value("regression.recall[ham]") == pytest.approx(0.0)
    assert ev.value("regression.accuracy") == pytest.approx(0.25)
    assert ev.comparison is not None and ev.comparison.newly_wrong == 10


def test_an_evaluation_checks_gates_without_pytest(tmp_path: Path) -> None:
    """``ev.check(**gates)`` in a script: the marker's keys and verdicts, a
    GateFailure with the table, and the results kept for a report written after."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import write_reports

    labels = torch.tensor([i % 2 for i in range(30)])
    labels[:3] = 1 - labels[:3]
    data = SequenceData.from_sequences([[i + 2] for i in range(30)], labels, ("ham", "spam"))
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0))
    recall = ev.value("recall", "spam")
    passed = ev.check(min_recall={"spam": recall - 0.01})
    assert [(r.label, r.passed) for r in passed] == [("recall[spam]", True)]
    with pytest.raises(GateFailure) as info:
        ev.check(min_recall={"spam": recall + 0.05}, min_accuracy=0.5)
    lines = str(info.value).splitlines()
    assert lines[0] == f"seqgate: 1 of 2 gates failed for {ev.name} on {ev.eval_data}"
    assert lines[3].split()[:5] == ["recall", "spam", ">=", f"{recall + 0.05:g}", f"{recall:.3f}"]
    assert [r.passed for r in ev.gates] == [True, False, True]
    with pytest.raises(ConfigError, match=r"^check\(\): unknown gate `min_recal` \(did you mean"):
        ev.check(min_recal=0.5)
    written, failures = write_reports([tmp_path / "r.json"], [ev])
    assert failures == [] and written == [tmp_path / "r.json"]
    # The terminal summary's tables, as text a script prints.
    from pytest_seqgate.report import render_terminal, render_text

    text = render_text([ev], verbosity=1)
    assert text.split("\n") == [line for line, _ in render_terminal([ev], 1)]
    assert "confusion matrix" in text.lower() and "recall" in text
    gates = json.loads((tmp_path / "r.json").read_text())["evaluations"][0]["gates"]
    assert [(g["test"], g["passed"]) for g in gates] == [
        ("check()", True),
        ("check()", False),
        ("check()", True),
    ]


def test_write_reports_takes_text_paths_and_names_an_unknown_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script's ``write_reports(["out/r.json"], [ev])`` wrote nothing and
    returned "rendering failed, a bug in pytest-seqgate" ('str' has no .suffix);
    ``out/r.htm`` was the same "bug"."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import write_reports

    monkeypatch.chdir(tmp_path)
    data = SequenceData.from_sequences([[i + 2] for i in range(30)], [i % 2 for i in range(30)])
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0))
    written, failures = write_reports(["out/r.json", "out/r.md", "out/r.htm"], [ev])
    assert written == [Path("out/r.json"), Path("out/r.md")]
    assert json.loads(Path("out/r.json").read_text())["evaluations"][0]["n_samples"] == 30
    assert failures == [
        "the suffix picks the format and must be .json, .md or .html, but got 'out/r.htm' "
        "(did you mean 'out/r.html'?)"
    ]
    assert not Path("out/r.htm").exists()


def test_train_gap_gate_on_a_slice_reads_the_whole_set() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check

    data = SequenceData.from_sequences(
        [[i % 2 + 2] * (i % 5 + 1) for i in range(60)], [i % 2 for i in range(60)]
    )
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0), train_data=data)
    results = check(ev, parse_gates({"max_train_test_gap": 0.1, "slice": "length>=3"}), "t")
    assert [r.value for r in results] == [0.0, 0.0] and all(r.passed for r in results)
    assert [r.label for r in results] == ["train_test_gap.accuracy", "train_test_gap.macro_f1"]


def test_a_gap_between_copies_of_one_set_says_it_cannot_show_overfitting() -> None:
    """The eval set given as the training set too (one file named twice): the gap
    is 0 whatever the model learnt, and its gate passed without a word."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check

    data = SequenceData.from_sequences(
        [[i % 7 + 2, i] for i in range(40)], [i % 2 for i in range(40)]
    )
    other = SequenceData.from_sequences(
        [[i % 7 + 2, i + 100] for i in range(40)], [i % 2 for i in range(40)]
    )
    said = (
        "100% of the eval sequences are in the training set: the gap compares them with themselves"
    )
    settings = Settings(padding_check=0, bootstrap=0)
    for train, expected in ((data, said), (other, "")):
        ev = evaluate(Parity(), data, settings, train_data=train)
        gates = parse_gates({"max_train_test_gap": 0.1, "fail_on_paradox": False})
        results = check(ev, gates, "t")
        assert [r.metric for r in results] == ["train_test_gap.accuracy", "train_test_gap.macro_f1"]
        assert [r.passed for r in results] == [True, True]
        assert all(r.reason.startswith(expected) for r in results)
        assert all(bool(r.reason) == bool(expected) for r in results)


def test_a_slice_that_matches_nothing_names_the_values_and_a_misspelt_key_the_near_one() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check

    data = SequenceData.from_sequences([[i % 2 + 2] for i in range(30)], [i % 2 for i in range(30)])
    data.metadata = {"lang": [["en", "fr", None][i % 3] for i in range(30)]}
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0))
    (result,) = check(ev, parse_gates({"min_accuracy": 0.9, "slice": "lang=de"}), "t")
    assert not result.passed and result.value is None
    # Every table names the slice with the gate: the row is not the whole set's number.
    assert (result.label, result.to_json()["slice"]) == ("accuracy on lang=de", "lang=de")
    assert result.reason.endswith("on slice lang=de (0 samples); lang takes 'en', 'fr', 'null'")
    (result,) = check(ev, parse_gates({"min_accuracy": 0.9, "slice": "lang=fr"}), "t")
    assert result.passed and result.reason == "on slice lang=fr (10 samples)"
    # The .jsonl's true, false and null, spelt as the file spells them (or as Python does).
    ev.metadata = {**ev.metadata, "flag": [[True, False, None][i % 3] for i in range(30)]}
    for text, samples in (
        ("flag=true", 10),
        ("flag=True", 10),
        ("flag!=false", 20),
        ("flag=null", 10),
    ):
        (result,) = check(ev, parse_gates({"min_accuracy": 0.9, "slice": text}), "t")
        assert result.reason == f"on slice {text} ({samples} samples)", text
    (result,) = check(ev, parse_gates({"min_accuracy": 0.9, "slice": "lang=null"}), "t")
    assert result.reason == "on slice lang=null (10 samples)"  # the records' None
    # The report names the slices as a gate selects them.
    by_lang = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0, slice_by=("lang",)))
    named = {s.name: s.n for s in by_lang.slices if s.group == "lang"}
    assert named == {"lang=en": 10, "lang=fr": 10, "lang=null": 10}
    # None weak (the model is perfect on each): the terminal says the slices asked
    # for were looked at, where it said nothing, as if the setting were ignored.
    from pytest_seqgate.report import render_terminal

    lines = [line for line, _ in render_terminal([by_lang])]
    slices = len(by_lang.slices)
    assert (
        f"{slices} slices (by length, lang), {slices - 1} of them under 20 samples (too few to "
        "judge), none of 20+ samples with a macro F1 more than 0.1 below the whole set's; -v "
        "lists them"
    ) in lines
    with pytest.raises(ConfigError, match=r"no key 'lagn' \(did you mean `lang`\?\)"):
        check(ev, parse_gates({"min_accuracy": 0.9, "slice": "lagn=fr"}), "t")
    with pytest.raises(
        ConfigError,
        match=r"^seqgate_slice_by: the eval set has no key 'lagn' \(did you mean `lang`\?\); its "
        r"extra keys are \['lang'\]$",
    ):
        evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0, slice_by=("lagn",)))


def test_a_key_of_a_value_per_record_makes_a_slice_each_and_says_so() -> None:
    """A text key of a value or two per record (an id, a URL) makes as many slices as
    it has values, each with its own counts (their metrics are derived together,
    not one matrix at a time: 50,000 slices took 4 s); none can be judged, and the
    terminal names the key as the reason, where it said only that none was weak."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.metrics import metrics_from_predictions
    from pytest_seqgate.report import render_terminal

    n = 600
    data = SequenceData.from_sequences(
        [[i % 2 + 2] * (1 + i % 7) for i in range(n)], [i % 2 if i % 9 else 0 for i in range(n)]
    )
    data.metadata = {"user": [f"u{i // 2}" for i in range(n)]}
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0, slice_by=("user",)))
    users = [s for s in ev.slices if s.group == "user"]
    assert [(s.name, s.n) for s in users] == [(f"user=u{k}", 2) for k in range(n // 2)]
    truth, predicted = ev.targets, ev.predictions.predictions
    for k in (0, 4, 13, n // 2 - 1):  # slice k is records 2k and 2k + 1
        alone = metrics_from_predictions(truth[2 * k : 2 * k + 2], predicted[2 * k : 2 * k + 2], 2)
        torch.testing.assert_close(users[k].metrics.values, alone.values, equal_nan=True)
        assert torch.equal(users[k].metrics.confusion_matrix, alone.confusion_matrix)
    lines = [line for line, _ in render_terminal([ev])]
    assert (
        f"{len(ev.slices)} slices (by length, user), {n // 2} of them under 20 samples (too few "
        f"to judge; user takes {n // 2} values: slice by a coarser key), none of 20+ samples "
        "with a macro F1 more than 0.1 below the whole set's; -v lists them"
    ) in lines


def test_slices_of_a_key_are_named_as_the_records_spell_its_values() -> None:
    """Text is coded as it is (the fast path); a key that also holds true, a number
    equal to it (True == 1 in Python), a null or a list is coded by its spelling,
    so true and 1 stay two slices and a list does not break the slicing."""
    from pytest_seqgate.diagnostics import metadata_slices

    targets = torch.tensor([0, 1] * 6)
    text = ["en", "fr", "en", "de"] * 3
    assert [(s.name, s.n) for s in metadata_slices("lang", text, targets, targets, 2)] == [
        ("lang=en", 6),
        ("lang=fr", 3),
        ("lang=de", 3),
    ]
    mixed = [True, 1, None, "x", [1, 2], "true", 1.5, True, 1, None, "x", [1, 2]]
    named = [(s.name, s.n) for s in metadata_slices("k", mixed, targets, targets, 2)]
    assert named == [
        ("k=true", 3),
        ("k=1", 2),
        ("k=null", 2),
        ("k=x", 2),
        ("k=[1, 2]", 2),
        ("k=1.5", 1),
    ]


def test_a_numeric_key_of_many_values_is_sliced_at_its_quartiles() -> None:
    """A score per record made one slice per record (50,000 slices, 4 s and an 8 MB
    report): a numeric key of more than 12 values is cut at its quartiles, each
    slice named by its least and greatest value, its counts its own, and a gate
    compares with it (``score>=0.5``); a key of a few numbers keeps one slice each."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.diagnostics import NUMERIC_SLICE_VALUES, SliceSpec, metadata_slices
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check

    n = 400
    scores = [None if i % 40 == 0 else (i * 37 % 400) / 400 for i in range(n)]
    targets = torch.tensor([i % 2 for i in range(n)])
    predictions = torch.tensor([i % 2 if i % 5 else 1 - i % 2 for i in range(n)])
    slices = metadata_slices("score", scores, targets, predictions, 2)
    numbers = torch.tensor([math.nan if v is None else v for v in scores], dtype=torch.float64)
    edges = torch.quantile(numbers[~numbers.isnan()], torch.tensor([0.25, 0.5, 0.75]).double())
    ids = torch.bucketize(numbers, edges)
    ids[numbers.isnan()] = 4
    assert [s.n for s in slices] == torch.bincount(ids).tolist()
    for k, found in enumerate(slices):
        inside = ids == k
        expected = float((targets[inside] == predictions[inside]).double().mean())
        assert found.metrics.value("accuracy") == pytest.approx(expected)
        if k < 4:
            low, high = numbers[inside].min(), numbers[inside].max()
            assert found.name == f"score {float(low):.4g}-{float(high):.4g}"
    assert slices[-1].name == "score=null" and slices[-1].n == 10
    # A .csv spells every value as text, an empty cell for a null: the same slices.
    spelt = ["" if v is None else str(v) for v in scores]
    as_text = metadata_slices("score", spelt, targets, predictions, 2)
    assert [(s.name, s.n) for s in as_text] == [(s.name, s.n) for s in slices]
    few = [2019 + i % NUMERIC_SLICE_VALUES for i in range(n)]
    assert len(metadata_slices("year", few, targets, predictions, 2)) == NUMERIC_SLICE_VALUES
    # A gate's slice compares with the numbers; a null does not match.
    data = SequenceData.from_sequences([[i % 2 + 2] for i in range(n)], targets.tolist())
    data.metadata = {"score": scores, "user": [f"u{i}" for i in range(n)]}
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0))
    (result,) = check(ev, parse_gates({"min_accuracy": 0.9, "slice": "score>=0.5"}), "t")
    high = sum(1 for v in scores if v is not None and v >= 0.5)
    assert result.reason == f"on slice score>=0.5 ({high} samples)"
    assert SliceSpec.parse("score<0.25").mask(ev.lengths, ev.metadata).sum() == sum(
        1 for v in scores if v is not None and v < 0.25
    )
    ev.metadata = {**ev.metadata, "score_text": spelt}
    (text_result,) = check(ev, parse_gates({"min_accuracy": 0.9, "slice": "score_text>=0.5"}), "t")
    assert text_result.reason == f"on slice score_text>=0.5 ({high} samples)"
    with pytest.raises(ConfigError, match=r"user holds 'u0', not a number: compare it with ="):
        check(ev, parse_gates({"min_accuracy": 0.9, "slice": "user>=3"}), "t")
    with pytest.raises(ConfigError, match=r"compares with <, <=, > or >= a number only"):
        SliceSpec.parse("lang>=fr")


def test_wide_intervals_of_gated_metrics_are_flagged_once() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check

    def evaluated(n: int):  # a tenth of class 1 predicted as class 0
        seqs = [[2 + (i % 2 if i % 20 != 1 else 0)] * (1 + i % 4) for i in range(n)]
        data = SequenceData.from_sequences(seqs, [i % 2 for i in range(n)], ("ham", "spam"))
        return evaluate(Parity(), data, Settings(padding_check=0))

    ev = evaluated(40)
    gates = {"min_accuracy": 0.5, "min_recall": {"spam": 0.5}, "min_macro_f1": 0.5}
    check(ev, parse_gates(gates, ev.labels), "t1")
    check(ev, parse_gates(gates, ev.labels), "t2")  # the same gates again: no new finding
    check(ev, parse_gates({"min_recall": {"spam": 0.5}, "slice": "length>=3"}, ev.labels), "t3")
    check(ev, parse_gates({"min_precision": {"ham": 0.5}}, ev.labels), "t4")
    found = {
        (f.data["metric"], f.data["class"], f.data.get("where")): f
        for f in ev.findings_of("underpowered")
    }
    assert len(found) == len(ev.findings_of("underpowered"))
    assert set(found) == {
        ("accuracy", None, None),
        ("recall", "spam", None),
        ("macro_f1", None, None),
        ("recall", "spam", " on slice length>=3"),
        ("precision", "ham", None),
    }
    assert found["accuracy", None, None].data["support"] == 40
    assert found["recall", "spam", None].data["support"] == 20
    assert "from 20 samples of 'spam'" in found["recall", "spam", None].message
    # A precision rests on the class's predictions (20 ham and 2 missed spam), not its samples.
    precision = found["precision", "ham", None]
    assert (precision.data["support"], precision.data["predictions"]) == (20, 22)
    assert "from 22 predictions of 'ham': a gate on it can flip on noise" in precision.message
    sliced = found["recall", "spam", " on slice length>=3"]
    assert sliced.data["support"] == 10
    assert sliced.message.startswith("recall[spam] on slice length>=3 is known only to within")
    assert "from 10 samples of 'spam'" in sliced.message
    # Enough samples: the same rates, narrow intervals, no finding.
    ev = evaluated(4000)
    check(ev, parse_gates(gates, ev.labels), "t")
    assert not [f for f in ev.findings if f.kind == "underpowered"]


def test_a_lower_bound_gate_without_an_interval_says_it_compared_the_point() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check

    data = SequenceData.from_sequences(
        [[i % 2 + 2] * (1 + i % 4) for i in range(80)], [i % 2 for i in range(80)], ("a", "b")
    )
    gates = {"min_macro_f1": 0.5, "min_recall": {"b": 0.5}, "min_roc_auc": {"b": 0.5}}
    ev = evaluate(Parity(), data, Settings(padding_check=0, bootstrap=0, gate_on="lower_bound"))
    reasons = {r.label: r.reason for r in check(ev, parse_gates(gates, ev.labels), "t")}
    assert reasons == {
        "macro_f1": "point value compared: no bootstrap interval (seqgate_bootstrap = 0)",
        "recall[b]": "",  # a Wilson interval: its lower bound was compared
        "roc_auc[b]": "point value compared: roc_auc has no interval",
    }
    ev = evaluate(Parity(), data, Settings(padding_check=0))
    sliced = parse_gates({"min_f1": {"b": 0.5}, "slice": "length>=2", "confidence": 0.9}, ev.labels)
    (result,) = check(ev, sliced, "t")
    assert result.reason.startswith(
        "point value compared: a slice's F1, MCC and the like get no bootstrap interval; on slice"
    )


def test_integer_quartiles_equal_torch_quantile() -> None:
    """The histogram quartiles behind the length slices are torch.quantile's, bit for bit."""
    from pytest_seqgate.diagnostics import integer_quartiles

    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    for _ in range(500):
        n = int(torch.randint(1, 80, (1,), generator=gen))
        top = int(torch.randint(1, 600, (1,), generator=gen))
        values = torch.randint(0, top, (n,), generator=gen)
        assert torch.equal(integer_quartiles(values), torch.quantile(values.double(), probs))


def test_length_slices_are_the_quartile_buckets_with_their_own_counts() -> None:
    """Each sequence in the slice its length falls in (edges the floored
    quartiles, each slice named by the lengths it spans), each slice's confusion
    matrix counted from its own samples."""
    from pytest_seqgate.diagnostics import integer_quartiles, length_slices

    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        n = int(torch.randint(1, 400, (1,), generator=gen))
        lengths = torch.randint(1, int(torch.randint(2, 300, (1,), generator=gen)), (n,))
        targets = torch.randint(0, 3, (n,), generator=gen)
        preds = torch.randint(0, 3, (n,), generator=gen)
        edges = sorted({int(q) for q in integer_quartiles(lengths).floor().tolist()})
        slices = length_slices(lengths, targets, preds, 3)
        uppers = [*edges, int(lengths.max())]
        lowers = [int(lengths.min()), *[e + 1 for e in edges]]
        expected = []
        for lo, hi in zip(lowers, uppers):
            inside = (lengths >= lo) & (lengths <= hi)
            if int(inside.sum()):
                cm = torch.bincount(targets[inside] * 3 + preds[inside], minlength=9)
                expected.append((f"length {lo}-{hi}", int(inside.sum()), cm.reshape(3, 3)))
        assert [(s.name, s.n) for s in slices] == [(name, k) for name, k, _ in expected]
        for s, (_, _, cm) in zip(slices, expected):
            assert torch.equal(s.metrics.confusion_matrix, cm)
    # Fixed-length windows (feature sequences): one slice, named by that length
    # (it was "length 129-128", the only length past every edge).
    same = torch.full((40,), 128)
    (only,) = length_slices(same, same % 2, same % 2, 2)
    assert (only.name, only.n) == ("length 128-128", 40)


def _int32_set(n: int = 200) -> SequenceData:
    lengths = torch.randint(2, 20, (n,), generator=torch.Generator().manual_seed(5))
    return token_set(lengths, seed=5, dtype=torch.int32)


def test_a_hand_built_set_of_int32_tensors_is_evaluated_and_left_as_it_was() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from test_inference import Bag

    data = _int32_set()
    lengths = data.lengths.clone()
    assert data.values.dtype == data.lengths.dtype == data.labels.dtype == torch.int64

    ev = evaluate(Bag(), data, Settings(bootstrap=0))
    assert ev.n_samples == 200 and ev.metrics.confusion_matrix.sum() == 200
    # Sorting by length once negated an int32 lengths tensor in place.
    raw = lengths.to(torch.int32)
    assert torch.equal(length_order(raw), length_order(lengths))
    assert torch.equal(raw, lengths.to(torch.int32))


def test_evaluate_takes_the_lists_a_fixture_takes() -> None:
    """``evaluate(model, pairs)`` in a notebook ended in an AttributeError on
    ``list.values``, where the seqgate_eval_data fixture takes the same list."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.loading import from_dataset
    from test_inference import Bag

    gen = torch.Generator().manual_seed(3)
    pairs = [
        (torch.randint(1, 100, (int(n),), generator=gen).tolist(), ["ham", "spam", "eggs"][i % 3])
        for i, n in enumerate(torch.randint(2, 15, (60,), generator=gen))
    ]
    settings = Settings(bootstrap=0, labels=("eggs", "ham", "spam"))
    ev = evaluate(Bag(), pairs, settings, train_data=pairs[:30])
    same = evaluate(Bag(), from_dataset(pairs, "mine", settings.labels), settings)
    assert torch.equal(ev.metrics.confusion_matrix, same.metrics.confusion_matrix)
    assert ev.n_samples == 60 and ev.eval_data == "eval_data"
    assert ev.value("train_test_gap.accuracy") is not None
    # No set at all: said to the caller, with the reader of the file the settings name.
    with pytest.raises(ConfigError, match=r"^evaluate\(\): no eval set; give one, .* records$"):
        evaluate(Bag(), None)
    with pytest.raises(ConfigError, match=r"load_dataset\(settings, 'eval_data'\) reads the 'e"):
        evaluate(Bag(), None, Settings(eval_data="e.jsonl"))
    # Its records are named as a fixture's are, by the argument and the index.
    with pytest.raises(DataError, match=r"^eval_data\[1\]: the sequence of the \(sequence, "):
        evaluate(Bag(), [([1, 2], "ham"), (3, "spam")], settings)


@pytest.mark.parametrize(
    ("sequence", "said"),
    [
        (3, "is int; expected token ids (a list or 1-D tensor of ints), feature vectors"),
        (None, "is None; expected token ids"),
        ({"tokens": [1]}, "or a text: a dict is a record, given alone, not in a pair"),
        (b"ab", "is bytes; expected"),
    ],
)
def test_a_pair_whose_sequence_is_no_sequence_is_named(sequence: object, said: str) -> None:
    """An int or None in a pair's place of the sequence raised a bare TypeError
    ('int' object is not iterable); a dict was read as its keys, as token ids."""
    from pytest_seqgate.loading import from_dataset

    with pytest.raises(
        DataError, match=re.escape("mine[1]: the sequence of the (sequence, ")
    ) as info:
        from_dataset([([1, 2], 0), (sequence, 1)], "mine", None)
    assert said in str(info.value)


def test_a_pairs_one_hot_label_tensor_is_named_as_such() -> None:
    """A Dataset whose labels are one-hot tensors (a BCE or soft-target training
    set's) raised torch's "a Tensor with 3 elements cannot be converted to Scalar"."""
    import numpy as np

    from pytest_seqgate.loading import from_dataset

    with pytest.raises(DataError) as info:
        from_dataset([([1, 2], torch.tensor([0, 1, 0]))], "mine", None)
    assert str(info.value) == (
        "mine[0]: label [0, 1, 0] is neither a class name nor a class index (an integer); it "
        "is one-hot: write the index of its 1 (1)"
    )
    with pytest.raises(DataError, match=r"label \[0.0, 0.0, 1.0\] .*its 1 \(2\)$"):
        from_dataset([([1, 2], np.array([0.0, 0.0, 1.0]))], "mine", None)
    # One value in a tensor of any shape is a label, as before.
    data = from_dataset([([1, 2], torch.tensor([1])), ([3], np.int64(0))], "mine", None)
    assert data.labels.tolist() == [1, 0]


def test_a_set_says_what_it_is_in_one_line(tmp_path: Path) -> None:
    """The dataclass repr of a loaded set printed every token id, offset and line
    number: thousands of numbers in a notebook or a failed assert's locals."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.loading import load_dataset

    records = [{"tokens": list(range(1, n + 2)), "label": "ab"[n % 2]} for n in range(500)]
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = Settings.from_dict(tmp_path, eval_data="e.jsonl")
    assert repr(load_dataset(settings, "eval_data")) == (
        "<SequenceData e.jsonl: 500 sequences of token ids, 1 to 500 steps; labels a, b>"
    )
    features = SequenceData.from_sequences([torch.zeros(3, 4)] * 2, [1, 1])
    assert repr(features) == (
        "<SequenceData <memory>: 2 sequences of 4-wide feature vectors, 3 steps; label indexes [1]>"
    )
    with pytest.raises(ConfigError, match=r"not 'eval' \(did you mean `eval_data`\?\)$"):
        load_dataset(settings, "eval")
    # An evaluation's predictions too (five tensors: 25,000 characters for 901 samples).
    from pytest_seqgate.evaluation import Uncertainty, evaluate

    ev = evaluate(Parity(), load_dataset(settings, "eval_data"), Settings(bootstrap=0))
    assert repr(ev.predictions) == (
        "<Predictions of 500 samples on cpu, batch 64, 2 scores each (read as probabilities)>"
    )
    # Its intervals, whose bootstrap samples printed as thousands of numbers.
    assert (
        repr(ev.uncertainty)
        == "<Uncertainty of 500 samples at 95%: Wilson intervals for the rates; no bootstrap>"
    )
    resampled = Uncertainty.of(
        ev.metrics.confusion_matrix, Settings(bootstrap=200, confidence=0.975)
    )
    assert repr(resampled) == (
        "<Uncertainty of 500 samples at 97.5%: Wilson intervals for the rates; f1, "
        "balanced_accuracy, macro_f1, weighted_f1, mcc, kappa from 200 bootstrap resamples "
        "(seed 0)>"
    )
    # And its metrics, whose summary tensor printed ten numbers without their names.
    from pytest_seqgate.metrics import metrics_from_predictions

    metrics = metrics_from_predictions(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 0, 0]), 3)
    assert repr(metrics) == (
        "<Metrics of 4 samples in 3 classes: accuracy 0.500, balanced_accuracy 0.500, "
        "macro_precision 0.667, macro_recall 0.500, macro_f1 0.389, weighted_f1 0.458, "
        "micro_f1 0.500, mcc 0.387, kappa 0.273, no_information_rate 0.500; .precision, "
        ".recall, .f1 and .support per class>"
    )


def test_from_sequences_takes_class_names() -> None:
    """``from_sequences(seqs, ["ham", "spam"])`` raised torch's "too many
    dimensions 'str'"; names are placed as a loader places a file's."""
    data = SequenceData.from_sequences([[1, 2], [3], [4]], ["spam", "ham", "spam"])
    assert data.label_names == ("ham", "spam") and data.labels.tolist() == [1, 0, 1]
    assert data.names_inferred  # sorted from the data: the label_order warning says so
    ordered = SequenceData.from_sequences([[1], [2]], ["ham", "spam"], ("spam", "ham"))
    assert ordered.labels.tolist() == [1, 0] and not ordered.names_inferred
    with pytest.raises(DataError, match=re.escape("which label_names ['ham', 'spam'] lack (did")):
        SequenceData.from_sequences([[1], [2]], ["ham", "spma"], ("ham", "spam"))
    with pytest.raises(DataError, match=re.escape("the labels mix class names and indexes (0 ")):
        SequenceData.from_sequences([[1], [2]], [0, "ham"])
    with pytest.raises(DataError, match=r"labels has 1 entry but lengths has 2"):
        SequenceData.from_sequences([[1], [2]], [0])


def test_from_sequences_refuses_a_batch_of_one_and_mixed_kinds() -> None:
    """``[1, n]`` integer tensors (a tokenizer's ``return_tensors="pt"``) were read
    as one step of n-wide features, and a 2-D sequence among 1-D ones was
    flattened into token ids of the wrong length: both silently."""
    said = "a batch of one sequence, as return_tensors='pt' gives: give each sequence 1-D"
    with pytest.raises(
        DataError,
        match=re.escape(f"<memory>[0]: the sequence is a [1, 3] array of integers, {said}"),
    ):
        SequenceData.from_sequences([torch.tensor([[5, 6, 7]])] * 2, [0, 1])
    with pytest.raises(
        DataError, match=re.escape("<memory>[1]: the sequence is 2-D where <memory>[0] is 1-D;")
    ):
        SequenceData.from_sequences([torch.tensor([5, 6]), torch.tensor([[1.0, 2.0]])], [0, 1])
    with pytest.raises(DataError, match=re.escape("<memory>[0]: the sequence is 0-D; each is 1-D")):
        SequenceData.from_sequences([torch.tensor(5)], [0])
    features = SequenceData.from_sequences([torch.tensor([[0.5, 0.2]]), torch.ones(3, 2)], [0, 1])
    assert features.kind == "features" and features.lengths.tolist() == [1, 3]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lengths": "short"}, "SequenceData.offsets has 200 entries but lengths has 199"),
        (
            {"labels": "float"},
            "SequenceData.labels must be a 1-D integer tensor, but it is float32",
        ),
        ({"values": "float"}, "values must hold integer token ids [total] or floating-point"),
        ({"offsets": "past"}, "mine.pt[7]: this sequence (offset 10"),
        ({"offsets": "past"}, "is malformed: each sequence must lie inside values"),
        ({"lengths": "negative"}, "mine.pt[3]: this sequence (offset 42, length 0, label 0) is"),
        ({"lengths": "negative"}, "a sequence needs at least one step: drop the record"),
        ({"labels": "too_big"}, "mine.pt[0]: this sequence (offset 0, length 19, label 2) is"),
        ({"labels": "no_names"}, "mine.pt[0]: this sequence (offset 0, length 19, label 0) is"),
        ({"values": "negative"}, "mine.pt[1]: this sequence (offset 19, length 14, label 0)"),
        ({"values": "negative"}, "is malformed: token ids are indices, from 0"),
        ({"metadata": "short"}, "SequenceData.metadata['lang'] has 3 entries but lengths has 200"),
    ],
)
def test_a_malformed_hand_built_set_is_an_error_naming_the_record(
    change: dict[str, str], message: str
) -> None:
    from pytest_seqgate.exceptions import DataError

    base = _int32_set()
    fields = {
        "values": base.values,
        "offsets": base.offsets,
        "lengths": base.lengths,
        "labels": base.labels,
    }
    names = None
    [(key, how)] = change.items()
    if how == "short" and key in fields:
        fields[key] = fields[key][:-1]
    elif how == "float":
        fields[key] = fields[key].float()
    elif how == "past":
        fields[key] = fields[key].clone()
        fields[key][7] += 10_000
    elif how == "negative":
        fields[key] = fields[key].clone()
        fields[key][3 if key == "lengths" else 20] = 0 if key == "lengths" else -4
    elif how == "no_names":
        names = ()
    elif how == "too_big":
        fields[key] = fields[key].clone()
        fields[key][0] = 2
        fields[key][1:] = 0
        names = ("ham", "spam")
    metadata = {"lang": ["en", "fr", "de"]} if key == "metadata" else {}
    with pytest.raises(DataError) as info:
        SequenceData(**fields, label_names=names, source="mine.pt", metadata=metadata)
    assert message in str(info.value)


def test_misread_option_value_finds_the_skipped_config(tmp_path):
    """Only a value outside the invocation folder that skipped a file declaring
    pytest settings is a problem; '=' forms, flags, and paths inside are not."""
    from pytest_seqgate.config import misread_option_value

    project = tmp_path / "repo" / "proj"
    (project / "data").mkdir(parents=True)
    (project / "data" / "in.jsonl").write_text("")
    (tmp_path / "out.jsonl").write_text("")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # no pytest section
    out = str(tmp_path / "out.jsonl")

    def check(*args: str) -> str | None:
        return misread_option_value(list(args), project, None, tmp_path)

    assert check("--seqgate-eval-data", out) is None  # nothing skipped
    (tmp_path / "repo" / "tox.ini").write_text("[pytest]\nseqgate_labels = a\n")
    message = check("--seqgate-eval-data", out)
    assert message is not None
    assert str(tmp_path / "repo" / "tox.ini") in message
    assert f"--seqgate-eval-data={out}" in message
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    assert str(project / "pyproject.toml") in (check("--seqgate-model", out) or "")
    assert check(f"--seqgate-eval-data={out}") is None
    assert check("--seqgate-eval-data", "data/in.jsonl") is None  # inside: same search
    assert check("--seqgate-eval-data", str(tmp_path / "missing.jsonl")) is None
    assert check("--seqgate-cache", out) is None  # a flag takes no value
    # The configuration pytest did find is not "skipped".
    found = project / "pyproject.toml"
    assert misread_option_value(["--seqgate-eval-data", out], project, found, project) is None


def test_reports_of_many_classes_show_the_weakest_and_the_top_confusions() -> None:
    """Past 25 classes the terminal shows the weakest classes, and the matrix
    becomes the most frequent confusions (at 1,000 classes the full matrix made
    an 87 MB HTML page); the JSON keeps the whole matrix."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import (
        confusion_pairs,
        render_html,
        render_json,
        render_markdown,
        render_terminal,
        weakest_classes,
    )

    c = 60
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(20 * c) % c
    # Predictions: right, except a seeded fifth sent to another class.
    wrong = torch.rand(labels.numel(), generator=gen) < 0.2
    preds = torch.where(wrong, torch.randint(0, c, labels.shape, generator=gen), labels)

    class Fixed(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(preds[tokens[:, 0]], c).float()

    names = tuple(f"intent_{i}" for i in range(c))
    data = SequenceData.from_sequences([[i] for i in range(labels.numel())], labels, names)
    ev = evaluate(Fixed(), data, Settings(device="cpu", bootstrap=50, padding_check=0))

    f1 = ev.metrics.f1.nan_to_num(-1.0)
    weakest = weakest_classes(ev)
    assert len(weakest) == 25
    assert f1[weakest].tolist() == sorted(f1.tolist())[:25]
    cm = ev.metrics.confusion_matrix
    off = [
        (int(cm[t, p]), t, p) for t in range(c) for p in range(c) if t != p and int(cm[t, p]) > 0
    ]
    expected = sorted(off, key=lambda x: (-x[0], x[1] * c + x[2]))[:25]
    pairs = confusion_pairs(ev)
    assert [(int(n), a, b) for a, b, n, _ in pairs] == [
        (n, names[t], names[p]) for n, t, p in expected
    ]
    assert pairs[0][3] == f"{100 * expected[0][0] / 20:.1f}%"

    terminal = [line for line, _ in render_terminal([ev])]
    assert sum(line.startswith("intent_") for line in terminal) == 25
    assert "(the 25 classes of lowest F1 of 60, lowest first; -v shows every class" in "\n".join(
        terminal
    )
    verbose = "\n".join(line for line, _ in render_terminal([ev], verbosity=1))
    assert "most frequent confusions (the full matrix is in the JSON report)" in verbose
    assert sum(line.startswith("intent_") for line in verbose.splitlines()) == 60 + len(pairs)
    markdown = render_markdown([ev])
    assert "Most frequent confusions" in markdown and "true \\ pred" not in markdown
    # A pull-request comment: the 25 weakest classes, weakest first, as in the terminal.
    rows = [line.split("|")[1].strip() for line in markdown.splitlines() if "| intent_" in line]
    assert rows[:25] == [names[i] for i in weakest]
    assert (
        "(the 25 classes of lowest F1 of 60, lowest first; the JSON and HTML reports hold "
        "them all)" in markdown
    )
    page = render_html([ev])
    assert "<td style='background" not in page  # no 60 x 60 heat map
    assert "Per class, with intervals: the 25 of lowest F1" in page
    assert json.loads(render_json([ev]))["evaluations"][0]["confusion_matrix"] == cm.tolist()


def test_json_report_keeps_each_list_of_numbers_on_one_line() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import render_json, report_json

    data = SequenceData.from_sequences(
        [[1, 2], [2], [3, 1], [4]], [1, 0, 1, 1], label_names=("ham", "spam")
    )

    class Odd(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(tokens[:, 0] % 2, 2).float()

    ev = evaluate(Odd(), data, Settings(device="cpu", bootstrap=20, padding_check=0))
    text = render_json([ev])
    rows = ev.metrics.confusion_matrix.tolist()
    assert f'"confusion_matrix": [\n        {rows[0]},\n        {rows[1]}\n      ],' in text
    assert '"accuracy": [' in text and '"accuracy": [\n' not in text
    assert json.loads(text) == json.loads(json.dumps(report_json([ev])))


def test_a_slice_of_many_classes_lists_its_weakest_recalls_and_the_range_of_the_rest() -> None:
    """Up to 5 classes, every recall in class order; past 5, the 5 weakest of the
    classes the slice has (a tie: the larger class first), then the rest's range."""
    from pytest_seqgate.report import slice_recalls

    two = torch.tensor([[3, 1], [4, 0]])
    assert slice_recalls(("ham", "spam"), two) == "ham 0.750 (3/4), spam 0.000 (0/4)"
    assert slice_recalls(("a", "b"), torch.tensor([[2, 0], [0, 0]])) == "a 1.000 (2/2), b n/a (0/0)"
    names = tuple(f"c{i}" for i in range(8))
    hits = [5, 1, 4, 5, 0, 3, 2, 0]
    totals = [5, 2, 5, 5, 0, 6, 4, 2]
    cm = torch.diag(torch.tensor(hits))
    cm[:, 0] += torch.tensor(totals) - torch.tensor(hits)  # the misses go to c0
    assert slice_recalls(names, cm) == (
        "c7 0.000 (0/2), c5 0.500 (3/6), c6 0.500 (2/4), c1 0.500 (1/2), c2 0.800 (4/5); "
        "2 more, all 1.000"
    )
    hits[3] = 4
    cm = torch.diag(torch.tensor(hits))
    cm[:, 0] += torch.tensor(totals) - torch.tensor(hits)
    assert slice_recalls(names, cm).endswith("c2 0.800 (4/5); 2 more, 0.800 to 1.000")


def test_gates_that_say_the_same_of_several_tests_are_one_row_naming_them() -> None:
    """A finding fails every gated test: its gate is one row naming the tests (five,
    then a count; the terminal names the first), where it stood once per test."""
    from pytest_seqgate.gates import GateResult
    from pytest_seqgate.report import _gates_html, gate_rows

    reason = "accuracy 88.0% hides recall 6.4% on 'spam'"

    def paradox(test: str, passed: bool = False) -> GateResult:
        return GateResult(test, "accuracy_paradox", "spam", "absent", 0, 1.0, passed, reason)

    tests = [f"t.py::test_{i}" for i in range(7)]
    gates = [
        paradox(tests[0]),
        GateResult(tests[0], "recall", "spam", ">=", 0.8, 0.064, False),
        *(paradox(t) for t in tests[1:]),
        GateResult(tests[1], "recall", "spam", ">=", 0.8, 0.064, False),
        GateResult(tests[2], "recall", "spam", ">=", 0.9, 0.064, False),
        paradox("t.py::test_xfail", passed=True),
    ]
    rows = gate_rows(gates)
    assert [row[0] for row in rows] == [
        ", ".join(tests[:5]) + " (+2 more)",
        f"{tests[0]}, {tests[1]}",
        tests[2],
        "t.py::test_xfail",
    ]
    assert [row[1:3] for row in rows] == [
        ["accuracy_paradox[spam]", "absent"],
        ["recall[spam]", ">= 0.8"],
        ["recall[spam]", ">= 0.9"],
        ["accuracy_paradox[spam]", "absent"],
    ]
    assert [row[5] for row in rows] == ["FAIL", "FAIL", "FAIL", "PASS"]
    assert gate_rows(gates, 48, every_test=False)[0][0] == f"{tests[0]} (+6 more)"
    page = _gates_html(gates)
    assert page.count("<tr>") == 1 + 4
    assert "<br>".join(f"t.py::<wbr>test_{i}" for i in range(5)) + "<br>(+2 more)</td>" in page


def test_weak_slices_need_20_samples_and_list_the_25_weakest() -> None:
    """A key with hundreds of values (a user id) gives slices of a few samples whose
    macro F1 is noise: the table keeps slices of 20+ samples, weakest first, 25
    at most; the JSON keeps them all."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import render_html, render_json, render_terminal, weak_slices

    n = 2000
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (n,), generator=gen)
    # 40 regions of 30 samples, the model wrong on a growing share of each; then
    # 800 users of one sample, wrong on half of them.
    region = [f"r{i // 30}" if i < 1200 else f"u{i}" for i in range(n)]
    wrong = torch.tensor([(i % 30) < (i // 30) % 12 if i < 1200 else i % 2 == 0 for i in range(n)])
    preds = torch.where(wrong, 1 - labels, labels)

    class Fixed(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(preds[tokens[:, 0]], 2).float()

    data = SequenceData.from_sequences([[i] for i in range(n)], labels, ("a", "b"))
    data.metadata = {"region": region}
    settings = Settings(device="cpu", bootstrap=0, padding_check=0, slice_by=("region",))
    ev = evaluate(Fixed(), data, settings)
    weak = weak_slices(ev)
    assert 0 < len(weak) <= 25
    assert all(s.n >= 20 for s in weak)
    f1 = [s.metrics.value("macro_f1") for s in weak]
    assert f1 == sorted(f1)
    overall = ev.metrics.value("macro_f1")
    candidates = [s for s in ev.slices if s.n >= 20 and s.metrics.value("macro_f1") < overall - 0.1]
    assert sorted(s.metrics.value("macro_f1") for s in candidates)[: len(weak)] == f1
    terminal = "\n".join(line for line, _ in render_terminal([ev]))
    assert "slices of 20+ samples whose macro F1 is more than 0.1 below" in terminal
    assert "region=u" not in terminal
    # Each recall shows the counts behind it: a 0.000 over 2 samples is not one over 200.
    worst = weak[0]
    cm = worst.metrics.confusion_matrix
    row = next(line for line in terminal.splitlines() if line.startswith(f"{worst.name} "))
    for k, name in enumerate(("a", "b")):
        recall = int(cm[k, k]) / int(cm[k].sum())
        assert f"{name} {recall:.3f} ({int(cm[k, k])}/{int(cm[k].sum())})" in row
    assert int(cm.sum()) == 30
    page = render_html([ev])
    assert "<h3>Slices of 20+ samples whose macro F1 is more than 0.1 below" in page
    assert f"({int(cm[0, 0])}/{int(cm[0].sum())})" in page and "region=u" not in page
    # Aligned as the terminal: numbers flush right, the slice's name and recalls left.
    cells = re.findall(r"<td( style=\"text-align: right;\")?>([^<]*)</td>", page)
    row = [(bool(style), text.strip()) for style, text in cells]
    at = row.index((False, worst.name))
    assert row[at : at + 5] == [
        (False, worst.name),
        (True, str(worst.n)),
        (True, f"{worst.metrics.value('accuracy'):.3f}"),
        (True, f"{worst.metrics.value('macro_f1'):.3f}"),
        (False, row[at + 4][1]),
    ]
    assert row[at + 4][1].startswith("a ")
    slices = json.loads(render_json([ev]))["evaluations"][0]["slices"]
    assert sum(s["name"].startswith("region=u") for s in slices) == 800


def test_custom_metrics_must_be_numbers() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate

    data = SequenceData.from_sequences([[1], [2]], [1, 0], label_names=("a", "b"))

    class Odd(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(tokens[:, 0] % 2, 2).float()

    settings = Settings(device="cpu", bootstrap=0, padding_check=0)
    ev = evaluate(Odd(), data, settings, custom_metrics=lambda e: {"t": torch.tensor(0.5), "n": 3})
    assert ev.custom_metrics == {"t": 0.5, "n": 3.0}
    # A NaN is the hook's to explain: a gate on it fails, saying whose number it was.
    from pytest_seqgate.gates import check

    ev = evaluate(Odd(), data, settings, custom_metrics=lambda e: {"cost": float("nan")})
    results = check(ev, parse_gates({"max_cost": 0.5}, custom_metrics=["cost"]), "t")
    (result,) = [r for r in results if r.metric == "cost"]
    assert not result.passed
    assert result.reason == (
        "undefined: pytest_seqgate_metrics returned no number (None or NaN) for 'cost'"
    )
    # None is undefined too, as value() gives it; value() reads a NaN as None.
    ev = evaluate(Odd(), data, settings, custom_metrics=lambda e: {"cost": None, "nan": math.nan})
    assert ev.value("cost") is None and ev.value("nan") is None
    lean = evaluate(Odd(), data, Settings(device="cpu", bootstrap=0, keep_scores=False))
    assert lean.value("ece") is None  # no scores kept: it was NaN
    for returned, message in (
        ({"cost": "high"}, "returned 'high' for 'cost'; a metric must be a number"),
        ({"flag": True}, "returned True for 'flag'; a metric must be a number"),
        ([0.5], "returned list; expected a dict of metric names to numbers"),
        # A built-in's name: a gate would read the built-in, the hook's never.
        (
            {"accuracy": 0.5},
            "returned 'accuracy', the name of a built-in metric; give yours "
            "another name (e.g. 'my_accuracy')",
        ),
        ({"recall": 0.5}, "returned 'recall', the name of a built-in metric"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            evaluate(Odd(), data, settings, custom_metrics=lambda e, r=returned: r)


def _rendered_text(markdown: str) -> list[str]:
    """The text a reader sees in each paragraph, heading and table cell of a
    Markdown page, as a CommonMark renderer with tables makes it (raw HTML, which
    GitHub's sanitizer drops when it is no tag it knows, is left out)."""
    from markdown_it import MarkdownIt

    seen = []
    for token in MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(markdown):
        if token.type == "inline":
            kinds = {child.type for child in token.children or ()}
            assert not kinds & {"em_open", "s_open", "link_open"}, token.content
            shown = [c.content for c in token.children or () if c.type in ("text", "code_inline")]
            seen.append("".join(shown))
    return seen


def test_markdown_shows_names_that_look_like_markup_as_they_are() -> None:
    """Class names, a model's name and the findings come from the user: "<unk>"
    must not be dropped as an HTML tag, "*" and "_" must not make the rest of a
    line italic, "|" must not end a table cell, "#1" must not make a heading."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.diagnostics import Finding
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import render_markdown

    names = ("<unk>", "*star*", "a|b", "_x_")
    labels = torch.arange(40) % 4
    preds = torch.where(labels == 3, 0, labels)

    class Fixed(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return 5.0 * torch.nn.functional.one_hot(preds[tokens[:, 0]], 4).float()

    data = SequenceData.from_sequences([[i] for i in range(40)], labels, names)
    ev = evaluate(Fixed(), data, Settings(device="cpu", bootstrap=0, padding_check=0), name="#1")
    ev.findings.append(Finding("missing", "warning", "no prediction of '<unk>' or '_x_'", {}))
    seen = _rendered_text(render_markdown([ev]))
    for name in names:
        assert seen.count(name) == 3, name  # per-class row, matrix header and matrix row
    assert seen[1] == "#1: no gates" and seen[2].startswith("#1 on ")  # heading, headline
    assert "warning missing: no prediction of '<unk>' or '_x_'" in seen
    assert "macro_f1" in seen  # names of our own read the same in the raw file


def test_numbers_that_round_to_zero_print_without_a_sign() -> None:
    """A chance-level model's MCC comes out as -1e-17: the tables say 0.000, and the
    intervals beside it follow the same rule; a real -0.001 keeps its sign."""
    from pytest_seqgate.gates import format_number
    from pytest_seqgate.report import _with_interval

    assert [format_number(v) for v in (-1e-17, -0.0, 0.0004, -0.0006, 0.5)] == [
        "0.000",
        "0.000",
        "0.000",
        "-0.001",
        "0.500",
    ]
    assert format_number(float("nan")) == format_number(None) == "n/a"
    assert _with_interval(-2e-17, torch.tensor([-0.0001, 0.103])) == "0.000 [0.000, 0.103]"


def test_error_examples_are_the_most_confident_errors() -> None:
    """A failed recall gate lists the class's samples the model missed with the
    lowest P(class) first; a failed precision gate the others it took for the
    class, highest P(class) first; both name the record and the two classes."""
    from torch import nn

    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check, failure_message, parse_gates

    class Score(nn.Module):
        """P(spam) = sigmoid(first token - 50): the token sets the confidence."""

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return (tokens[:, :1].float() - 50) / 5

    firsts = [10, 45, 30, 49, 90, 60, 95, 55, 20, 80]  # spam below 50 is missed
    labels = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1]  # ham above 50 is a false alarm
    data = SequenceData.from_sequences([[f, 1] for f in firsts], labels, ("ham", "spam"), "e")
    ev = evaluate(Score(), data, Settings(bootstrap=0, padding_check=0))
    missed = ev.error_examples(1, "missed")
    assert [m["record"] for m in missed] == ["e[0]", "e[2]", "e[1]"]  # P(spam) rising
    assert {(m["true"], m["predicted"]) for m in missed} == {("spam", "ham")}
    assert missed[0]["p_true"] == pytest.approx(torch.sigmoid(torch.tensor(-8.0)).item())
    alarms = ev.error_examples(1, "false_alarms")
    assert [a["record"] for a in alarms] == ["e[5]", "e[7]"]  # P(spam) falling
    spec = parse_gates({"min_recall": {"spam": 0.9}, "min_precision": {"spam": 0.9}}, ev.labels, {})
    results = check(ev, spec, "t")
    assert results[0].extra["examples"] == {"missed": missed}
    assert results[1].extra["examples"] == {"false_alarms": alarms}
    message = failure_message(results, "t")
    assert "recall[spam] missed, most confident first:\n  e[0]  predicted ham, P(spam) 0.00\n" in (
        message
    )
    assert (
        "precision[spam] false alarms, most confident first:\n  e[5]  true ham, P(spam) 0.88"
        in (message)
    )
    # Two gates on the misses of spam (two tests, or recall and a paradox) list them once.
    assert failure_message(results + results, "t").count("recall[spam] missed") == 1
    # Passing gates, and gates on a slice (whose rows are not the set's), list none.
    passing = parse_gates({"min_recall": {"ham": 0.5}}, ev.labels, {})
    assert "examples" not in check(ev, passing, "t")[0].extra
    sliced = parse_gates({"min_recall": {"spam": 0.9}, "slice": "length>=2"}, ev.labels, {})
    result = check(ev, sliced, "t")[0]
    assert not result.passed and "examples" not in result.extra


def test_a_failed_summary_gate_lists_the_misses_of_its_weakest_class() -> None:
    """macro F1 or accuracy names no class: the misses of the class of lowest
    recall are what pull it down, and the message says whose they are."""
    from torch import nn

    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check, failure_message, parse_gates

    class Score(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return (tokens[:, :1].float() - 50) / 5  # P(spam) = sigmoid((first - 50) / 5)

    firsts = [10, 20, 30, 40, 45, 30, 60, 90]  # ham all right; spam 2 of 4 found
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    data = SequenceData.from_sequences([[f, 1] for f in firsts], labels, ("ham", "spam"), "e")
    ev = evaluate(Score(), data, Settings(bootstrap=0, padding_check=0))
    spec = parse_gates({"min_macro_f1": 0.9, "fail_on_paradox": False}, ev.labels, {})
    [result] = check(ev, spec, "t")
    assert result.extra["examples_of"] == "spam"
    assert [e["record"] for e in result.extra["examples"]["missed"]] == ["e[5]", "e[4]"]
    assert (
        "macro_f1 missed of 'spam', its class of lowest recall, most confident first:\n"
        "  e[5]  predicted ham, P(spam) 0.02\n  e[4]  predicted ham, P(spam) 0.27"
    ) in failure_message([result], "t")


def test_number_columns_are_right_aligned_and_intervals_left() -> None:
    """Digits of a count column line up (right); a column of rates where some
    carry an interval stays left, where the points line up."""
    from pytest_seqgate.report import _markdown_table, column_alignment

    rows = [
        ["ham", "0.974 [0.962, 0.983]", "1,204", "n/a", "ham 0.991 (214/216)", ""],
        ["spam", "0.955", "12", "-0.031", "spam 0.000 (0/4)", "2.5%"],
    ]
    assert column_alignment(rows) == ("left", "left", "right", "right", "left", "right")
    assert column_alignment([]) is None
    lines = _markdown_table(rows, ["class", "rate", "n", "delta", "recall", "share"]).splitlines()
    # GitHub reads the colons of the rule line: right-aligned columns end in one.
    rule = [c.strip() for c in lines[1].strip("|").split("|")]
    assert [c.endswith(":") and not c.startswith(":") for c in rule] == [
        False,
        False,
        True,
        True,
        False,
        True,
    ]
    assert "| 1,204 |" in lines[2] and "|    12 |" in lines[3]


MUST_BE = "the suffix picks the format and must be .json, .md or .html, but got "


@pytest.mark.parametrize(
    "name, value, said",
    [
        ("precision", "fp8", "expected fp32, bf16 or fp16, but got 'fp8'"),
        ("outputs", "probs", "expected auto, logits or probabilities, but got 'probs'"),
        ("train_sample", 0, "expected a positive integer, but got 0"),
        ("interval", "exact", "expected wilson or clopper_pearson, but got 'exact'"),
        ("gate_on", "upper", "expected point or lower_bound, but got 'upper'"),
        ("threshold", 1.0, "expected a probability in (0, 1), but got 1.0"),
        ("bootstrap", -1, "expected 0 or a positive integer, but got -1"),
        ("min_support", -2, "expected 0 or a positive integer, but got -2"),
        ("padding_check", -1, "expected 0 (off) or a positive integer, but got -1"),
        ("recall_floor", 1.5, "expected a number in [0, 1], but got 1.5"),
        ("near_duplicate_threshold", -0.1, "expected a number in [0, 1], but got -0.1"),
        ("confidence", 1.0, "expected a number in (0, 1), but got 1.0"),
        # A percentage where a share belongs gets the share it meant.
        (
            "confidence",
            95,
            "expected a number in (0, 1), but got 95 (a share, not a percentage: 0.95 for 95%)",
        ),
        (
            "threshold",
            30.0,
            "expected a probability in (0, 1), but got 30.0 (a share, not a "
            "percentage: 0.3 for 30%)",
        ),
        (
            "recall_floor",
            50,
            "expected a number in [0, 1], but got 50 (a share, not a percentage: 0.5 for 50%)",
        ),
        # A report's suffix near one of the three, or a folder.
        ("report", "r.JSON", MUST_BE + "'r.JSON' (did you mean 'r.json'?)"),
        ("report", "out/r.htm", MUST_BE + "'out/r.htm' (did you mean 'out/r.html'?)"),
        ("report", "r.markdown", MUST_BE + "'r.markdown' (did you mean 'r.md'?)"),
        ("report", "out", MUST_BE + "'out' (a folder? name a file in it: 'out/seqgate.json')"),
        ("report", "r.txt", MUST_BE + "'r.txt'"),
    ],
)
def test_each_setting_out_of_range_names_itself(name: str, value: object, said: str) -> None:
    from pytest_seqgate.config import Settings

    with pytest.raises(ConfigError) as error:
        Settings.from_dict(**{name: value})
    assert str(error.value) == f"{name}: {said}"


def test_settings_built_in_code_are_read_and_checked_as_an_ini_is() -> None:
    """``Settings(...)`` in a script skipped every check: ``device="gpu"`` ended in
    torch's list of device types, ``batch_size="64"`` in a TypeError in the loop,
    ``labels="ham,spam"`` was read letter by letter (five classes), and
    ``precision="bfloat16"`` in a KeyError blamed on the model's forward."""
    from pytest_seqgate.config import Settings

    typed = Settings(
        batch_size="64",
        labels="ham, spam",
        keep_scores="no",
        model=Path("m.pt"),
        report=["r.json"],
        seed=2.0,
        rootdir=".",
    )
    assert (typed.batch_size, typed.labels, typed.keep_scores) == (64, ("ham", "spam"), False)
    assert (typed.model, typed.report, typed.seed) == ("m.pt", (Path("r.json"),), 2)
    assert typed.rootdir == Path(".") and Settings(labels=[0, 1]).labels == ("0", "1")
    import numpy as np

    numpy_typed = Settings(batch_size=np.int64(32), confidence=np.float32(0.9), seed=np.float64(3))
    assert (numpy_typed.batch_size, numpy_typed.seed) == (32, 3)
    assert type(numpy_typed.batch_size) is int and type(numpy_typed.confidence) is float
    for given, said in [
        ({"device": "gpu"}, "seqgate_device: expected auto, cpu, cuda, cuda:N or mps, but got"),
        ({"precision": "bfloat16"}, "seqgate_precision: expected fp32, bf16 or fp16, but got"),
        ({"batch_size": None}, "seqgate_batch_size: expected an integer, but got None"),
        ({"seed": 1.5}, "seqgate_seed: expected an integer, but got 1.5"),
        ({"batch_size": "6x"}, "seqgate_batch_size: expected an integer, but got '6x'"),
        ({"keep_scores": 1}, "seqgate_keep_scores: expected true or false, but got 1"),
        ({"labels": ["ham", "ham"]}, "seqgate_labels: class names must be unique"),
    ]:
        with pytest.raises(ConfigError) as error:
            Settings(**given)
        assert str(error.value).startswith(said), (given, str(error.value))
    # dataclasses.replace checks too: the plugin's per-folder settings are made so.
    import dataclasses

    with pytest.raises(ConfigError, match=r"^seqgate_bootstrap: expected 0 or a positive"):
        dataclasses.replace(typed, bootstrap=-1)


def test_a_misspelt_file_name_gets_the_near_one(tmp_path) -> None:
    from pytest_seqgate.config import Settings

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text("")

    def error(value: str) -> str:
        with pytest.raises(ConfigError) as info:
            Settings.from_dict(tmp_path, eval_data=value).existing("eval_data")
        return str(info.value)

    assert error("data/tset.jsonl") == (
        f"eval_data: file not found: data/tset.jsonl (did you mean `data/test.jsonl`?) "
        f"(read from the rootdir, {tmp_path})"
    )
    assert "file not found: dat/test.jsonl (there is no folder dat either)" in error(
        "dat/test.jsonl"
    )
    assert error("data/other.jsonl").startswith("eval_data: file not found: data/other.jsonl (read")


def test_a_gap_of_macro_f1_from_a_class_the_eval_set_lacks_says_so() -> None:
    from pytest_seqgate.diagnostics import train_test_gap

    train = compute_metrics(torch.tensor([[500, 1], [1, 100]]))
    # A spam-only eval set: 16 spam called ham give 'ham' an F1 of 0.
    spam_only = compute_metrics(torch.tensor([[0, 0], [16, 94]]))
    _, (found,) = train_test_gap(train, spam_only, ("ham", "spam"), {})
    assert found.data["metric"] == "macro_f1"
    assert found.message.endswith(
        "the eval set has no samples of 'ham', whose F1 there is 0 (false alarms, and "
        "nothing to find), which lowers its macro F1: compare sets of the same classes, or "
        "gate accuracy and recall"
    )
    # Both classes in the eval set: the usual reading.
    worse = compute_metrics(torch.tensor([[400, 100], [40, 60]]))
    _, (found,) = train_test_gap(train, worse, ("ham", "spam"), {})
    assert found.message.endswith("the model may be overfitting")
    assert "higher on the training set than on the eval set" in found.message
    # Measured on a sample of the training set, the finding says so.
    sample = {"train_size": 2_000_000, "train_sampled": 10_000, "seed": 0}
    _, (found,) = train_test_gap(train, worse, ("ham", "spam"), sample)
    assert (
        "higher on the training set (a seeded sample of 10,000 of its 2,000,000 sequences) "
        "than on the eval set" in found.message
    )
    assert found.data["train_sampled"] == 10_000


def test_a_factory_beside_an_import_path_model_says_how_to_drop_it() -> None:
    from pytest_seqgate.config import Settings

    with pytest.raises(ConfigError) as info:
        Settings.from_dict(model="spam.model:build", model_factory="spam.model:build")
    assert str(info.value) == (
        "model_factory is only used with a state-dict checkpoint file, but model is the "
        "import path 'spam.model:build'; remove seqgate_model_factory (for one run: "
        "--seqgate-model-factory=)"
    )


def test_a_bootstrap_interval_collapsed_to_a_point_is_no_interval() -> None:
    """A class found perfectly has F1 1.0 in every resample: the percentile
    bootstrap said [1.000, 1.000] on 40 samples, a certainty they cannot give."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.gates import check
    from pytest_seqgate.report import render_json

    tokens = [[1 + i % 2, 3] for i in range(40)]
    data = SequenceData.from_sequences(tokens, [i % 2 for i in range(40)], ("a", "b"))

    class Perfect(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(tokens[:, 0] - 1, 2).float() * 5

    ev = evaluate(Perfect(), data, Settings(device="cpu", padding_check=0))
    assert ev.uncertainty.interval("f1", 0) is None
    assert ev.uncertainty.interval("macro_f1") is None
    # Wilson intervals stay: they are not resamples.
    low, high = ev.uncertainty.interval("recall", 0).tolist()
    assert low == pytest.approx(0.8389, abs=1e-4) and high == 1.0
    entry = json.loads(render_json([ev]))["evaluations"][0]["metrics"]
    assert entry["intervals"].get("macro_f1") is None and "accuracy" in entry["intervals"]
    (result,) = check(ev, parse_gates({"min_macro_f1": 0.9, "confidence": 0.95}, ("a", "b")), "t")
    assert result.passed and result.reason.startswith(
        "point value compared: every bootstrap resample gives the same value (no error of the "
        "kind it counts), which says nothing of how few samples there are; see min_support"
    )


def test_padding_in_the_data_is_told_apart_from_data_of_one_length() -> None:
    from pytest_seqgate.exceptions import DataError

    labels = [i % 2 for i in range(10)]
    # Feature vectors padded with zero rows, as a collate_fn would leave them.
    padded = [torch.cat([torch.rand(3, 4) + 0.1, torch.zeros(5, 4)]) for _ in range(10)]
    with pytest.raises(
        DataError,
        match=r"f.pt: the sequences look padded already: all 10 "
        r"are 8 steps long, and 10 \(100.0%\) end in a run of zero vectors",
    ):
        SequenceData.from_sequences(padded, labels, ("a", "b"), source="f.pt").refuse_padded()
    # One length, but real content to the end (fixed windows of a signal, say).
    windows = [
        torch.randint(1, 50, (8,), generator=torch.Generator().manual_seed(i)) for i in range(10)
    ]
    SequenceData.from_sequences(windows, labels, ("a", "b")).refuse_padded()
    # Padded to the longest, but lengths differ: the sequences were cut, not padded.
    cut = [torch.tensor([5, 6, 0, 0][: 2 + i % 3]) for i in range(10)]
    SequenceData.from_sequences(cut, labels, ("a", "b")).refuse_padded()
    # Fewer than half end in a run of one token: sequences that end as they may.
    few = [torch.tensor([5, 6, 0, 0] if i < 4 else [5, 6, 7, 8]) for i in range(10)]
    SequenceData.from_sequences(few, labels, ("a", "b")).refuse_padded()


def test_the_headline_of_one_sample_reads_as_one() -> None:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.report import headline

    data = SequenceData.from_sequences([[2, 3]], [0], ("a", "b"), source="one.jsonl")

    class Zero(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[1.0, 0.0]]).expand(len(tokens), 2)

    ev = evaluate(Zero(), data, Settings(device="cpu", padding_check=0))
    assert headline(ev).startswith("Zero on one.jsonl: 1 sample, accuracy 1.000")


class CarriesLabels(torch.nn.Module):
    """Answers its config's class 0 for an odd first token: with id2label {0: 'spam',
    1: 'ham'}, the sorted names ('ham', 'spam') read every answer backwards."""

    def __init__(self, id2label: dict) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(id2label=id2label)
        self.outputs = len(id2label)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        odd = (tokens[:, 0] % 2).float()
        extra = [odd * 0] * (self.outputs - 2)
        return torch.stack([odd * 4, (1 - odd) * 4, *extra], 1)


def test_a_models_config_id2label_orders_the_classes_when_no_labels_are_set() -> None:
    """A Hugging Face model carries its classes' order in config.id2label; without
    seqgate_labels the eval set's names were sorted, and a model whose class 0 is
    'spam' scored 0% with every per-class number swapped. The config's order is
    taken when the set's names are among its names, the training set follows it;
    seqgate_labels still wins, and generic or mismatched names are not taken."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate

    pairs = [([3, 4], "spam"), ([5], "spam"), ([2, 2], "ham"), ([4, 1], "ham"), ([8], "ham")] * 8
    settings = Settings(bootstrap=0, padding_check=0)
    ev = evaluate(CarriesLabels({0: "spam", 1: "ham"}), pairs, settings, train_data=pairs)
    assert ev.labels == ("spam", "ham")
    assert ev.value("accuracy") == 1.0
    assert ev.value("recall", "spam") == 1.0
    assert ev.value("train_test_gap.accuracy") == 0.0
    assert not [f for f in ev.findings if f.kind == "label_order"]
    # Keys as a JSON config holds them, and a class the eval set lacks.
    ev = evaluate(CarriesLabels({"0": "spam", "1": "ham", "2": "eggs"}), pairs, settings)
    assert ev.labels == ("spam", "ham", "eggs")
    assert ev.value("accuracy") == 1.0
    # A config whose names outnumber the model's outputs.
    two_outputs = CarriesLabels({0: "spam", 1: "ham"})
    two_outputs.config.id2label[2] = "eggs"
    with pytest.raises(ModelError) as info:
        evaluate(two_outputs, pairs, settings)
    assert str(info.value) == (
        "the model returned 2 logits per sequence, but the model's config.id2label names 3 "
        "classes, ['spam', 'ham', 'eggs'], taken as its classes in output order; make the "
        "config (id2label, num_labels) fit the output layer, or set seqgate_labels to the "
        "model's classes in output order"
    )
    # seqgate_labels wins, and is read as the model's order; the predictions show
    # the classes traded, and that finding says so.
    ev = evaluate(
        CarriesLabels({0: "spam", 1: "ham"}), pairs, Settings(labels=("ham", "spam"), bootstrap=0)
    )
    assert ev.labels == ("ham", "spam")
    assert ev.value("accuracy") == 0.0
    [traded] = [f for f in ev.findings if f.kind == "label_order"]
    assert traded.message.startswith("the labels fit the model's outputs better in another order")
    # Where the predictions cannot show it (a model no better than chance), the
    # config's other order is said.
    chance = [([3, 4], "spam"), ([2, 2], "spam"), ([5], "ham"), ([4, 1], "ham")] * 10
    ev = evaluate(
        CarriesLabels({0: "spam", 1: "ham"}), chance, Settings(labels=("ham", "spam"), bootstrap=0)
    )
    [order] = [f for f in ev.findings if f.kind == "label_order"]
    assert (order.severity, order.message) == (
        "error",
        "seqgate_labels orders the classes ['ham', 'spam'], but the model's config.id2label orders "
        "its outputs ['spam', 'ham']: every per-class number may be read against the wrong class; "
        "set seqgate_labels to the config's order, or remove it to take the config's",
    )
    assert order.data == {"labels": ["ham", "spam"], "model_order": ["spam", "ham"]}
    # LABEL_0, LABEL_1 name nothing: the sorted names, and the warning that says so.
    ev = evaluate(CarriesLabels({0: "LABEL_0", 1: "LABEL_1"}), pairs, settings)
    assert ev.labels == ("ham", "spam")
    [warning] = [f for f in ev.findings if f.kind == "label_order" and f.severity == "warning"]
    assert "id2label" not in warning.message
    # Names the eval set's labels do not match are left, and the warning names them.
    ev = evaluate(CarriesLabels({0: "SPAM", 1: "HAM"}), pairs, settings)
    assert ev.labels == ("ham", "spam")
    [warning] = [f for f in ev.findings if f.kind == "label_order" and f.severity == "warning"]
    assert warning.message.endswith(
        "(its config.id2label names ['SPAM', 'HAM'], which the eval set's labels do not match)"
    )


def test_names_the_data_declares_follow_the_models_config_by_name() -> None:
    """A set whose class names are declared (a Hugging Face dataset's ClassLabel, a
    SequenceData built in code) says what its label indices mean, the model's
    config.id2label what its outputs mean: where they order the classes
    differently, each label follows the outputs by its name (before, the set's
    order was kept and every answer of the model read backwards)."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate
    from pytest_seqgate.loading import from_dataset

    pairs = [([3, 4], "spam"), ([5], "spam"), ([2, 2], "ham"), ([4, 1], "ham"), ([8], "ham")] * 8
    declared = from_dataset(pairs, "pairs", ("ham", "spam"))
    assert isinstance(declared, SequenceData) and not declared.names_inferred
    ev = evaluate(
        CarriesLabels({0: "spam", 1: "ham"}), declared, Settings(bootstrap=0, padding_check=0)
    )
    assert ev.labels == ("spam", "ham")
    assert ev.value("accuracy") == 1.0
    assert ev.value("recall", "ham") == 1.0
