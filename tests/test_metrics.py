"""Metric parity with scikit-learn, to 1e-9, on random and degenerate cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from pytest_seqgate.metrics import (
    _CHUNK,
    SUMMARY_METRICS,
    compute_metrics,
    compute_metrics_each,
    confusion_matrix,
    metrics_from_predictions,
)


def sklearn_reference(y_true: np.ndarray, y_pred: np.ndarray, c: int) -> dict[str, object]:
    labels = list(range(c))
    nan = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, s = sk.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=nan
        )
        return {
            "precision": p,
            "recall": r,
            "f1": f,
            "support": s,
            "accuracy": sk.accuracy_score(y_true, y_pred),
            "balanced_accuracy": sk.balanced_accuracy_score(y_true, y_pred),
            "macro_precision": sk.precision_score(
                y_true, y_pred, labels=labels, average="macro", zero_division=nan
            ),
            "macro_recall": sk.recall_score(
                y_true, y_pred, labels=labels, average="macro", zero_division=nan
            ),
            "macro_f1": sk.f1_score(
                y_true, y_pred, labels=labels, average="macro", zero_division=nan
            ),
            "weighted_f1": sk.f1_score(
                y_true, y_pred, labels=labels, average="weighted", zero_division=nan
            ),
            "micro_f1": sk.f1_score(
                y_true, y_pred, labels=labels, average="micro", zero_division=nan
            ),
            "mcc": sk.matthews_corrcoef(y_true, y_pred),
            "kappa": sk.cohen_kappa_score(y_true, y_pred),
            "confusion_matrix": sk.confusion_matrix(y_true, y_pred, labels=labels),
        }


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 8))
    n = int(rng.integers(1, 80))
    y_true = rng.integers(0, c, n)
    y_pred = rng.integers(0, c, n)
    kind = seed % 6
    if kind == 1:  # a class absent from the truth
        y_true[y_true == c - 1] = 0
    elif kind == 2:  # a class never predicted
        y_pred[y_pred == 0] = 1
    elif kind == 3:  # constant predictions
        y_pred[:] = y_pred[0]
    elif kind == 4:  # constant truth
        y_true[:] = y_true[0]
    elif kind == 5:  # mostly right
        y_pred = np.where(rng.random(n) < 0.9, y_true, y_pred)
    return y_true, y_pred, c


@pytest.mark.parametrize("seed", range(240))
def test_parity_with_sklearn(seed: int) -> None:
    y_true, y_pred, c = random_case(seed)
    ours = metrics_from_predictions(torch.from_numpy(y_true), torch.from_numpy(y_pred), c)
    ref = sklearn_reference(y_true, y_pred, c)
    np.testing.assert_array_equal(ours.confusion_matrix.numpy(), ref["confusion_matrix"])
    np.testing.assert_array_equal(ours.support.numpy(), ref["support"])
    for name in ("precision", "recall", "f1"):
        np.testing.assert_allclose(
            getattr(ours, name).numpy(), ref[name], atol=1e-9, rtol=0, equal_nan=True, err_msg=name
        )
    for name in SUMMARY_METRICS:
        if name == "no_information_rate":
            continue
        # value() and the attribute a test's assert reaches for (ev.metrics.accuracy).
        np.testing.assert_allclose(
            [ours.value(name), getattr(ours, name)],
            [ref[name]] * 2,
            atol=1e-9,
            rtol=0,
            equal_nan=True,
            err_msg=name,
        )


def test_metrics_derived_together_equal_sklearn_and_each_alone() -> None:
    """Slices (a key of 50,000 values) and bootstrap resamples derive their metrics
    from a stack of matrices: each equals scikit-learn on its samples, and the
    single-matrix path, on the random cases and on empty and one-class ones."""
    by_classes: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for seed in range(240):
        y_true, y_pred, c = random_case(seed)
        by_classes.setdefault(c, []).append((y_true, y_pred))
    for c, cases in by_classes.items():
        cms = torch.stack(
            [confusion_matrix(torch.from_numpy(t), torch.from_numpy(p), c) for t, p in cases]
        )
        for (y_true, y_pred), ours in zip(cases, compute_metrics_each(cms)):
            ref = sklearn_reference(y_true, y_pred, c)
            np.testing.assert_array_equal(ours.support.numpy(), ref["support"])
            for name in ("precision", "recall", "f1"):
                np.testing.assert_allclose(
                    getattr(ours, name).numpy(), ref[name], atol=1e-9, equal_nan=True, err_msg=name
                )
            for name in SUMMARY_METRICS[:-1]:  # sklearn has no no_information_rate
                np.testing.assert_allclose(
                    ours.value(name), ref[name], atol=1e-9, equal_nan=True, err_msg=name
                )
    for c in (0, 1, 3):
        edge = torch.zeros(4, c, c, dtype=torch.int64)
        if c:
            edge[1, 0, 0] = 5  # one class only, all right
            edge[2, :, 0] = 2  # everything predicted as the first class
            edge[3] = torch.arange(c * c).reshape(c, c)
        for matrix, ours in zip(edge, compute_metrics_each(edge)):
            alone = compute_metrics(matrix)
            assert torch.equal(ours.confusion_matrix, alone.confusion_matrix)
            assert torch.equal(ours.support, alone.support)
            for a, b in ((ours.per_class, alone.per_class), (ours.values, alone.values)):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=0, equal_nan=True)


def test_no_information_rate_is_majority_share() -> None:
    m = metrics_from_predictions(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 0, 1]), 2)
    assert m.value("no_information_rate") == m.no_information_rate == 0.75


def test_undefined_precision_is_nan_and_macro_skips_it() -> None:
    # Class 2 is never predicted and never true: precision, recall and F1 undefined.
    m = metrics_from_predictions(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)
    assert torch.isnan(m.precision[2]) and torch.isnan(m.recall[2]) and torch.isnan(m.f1[2])
    assert m.value("macro_recall") == pytest.approx((1 + 0.5) / 2)


def test_out_of_range_prediction_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 2]), 2)
    # Past the first chunk of the count, and negative: the same error.
    y = torch.zeros(_CHUNK + 5_000, dtype=torch.int64)
    for bad in (5, -1):
        y_pred = y.clone()
        y_pred[-1] = bad
        with pytest.raises(ValueError, match=r"outside \[0, 2\): cell keys span"):
            confusion_matrix(y, y_pred, 2)


def test_confusion_matrix_counts_across_chunks() -> None:
    """The count runs _CHUNK keys at a time; sizes around the chunk edges count every key."""
    gen = torch.Generator().manual_seed(11)
    for n in (0, 1, _CHUNK - 1, _CHUNK, _CHUNK + 1, 3 * _CHUNK + 17):
        y_true = torch.randint(0, 7, (n,), generator=gen)
        y_pred = torch.randint(0, 7, (n,), generator=gen)
        expected = torch.bincount(y_true * 7 + y_pred, minlength=49).reshape(7, 7)
        assert torch.equal(confusion_matrix(y_true, y_pred, 7), expected), n
        if n:
            np.testing.assert_array_equal(
                confusion_matrix(y_true, y_pred, 7).numpy(),
                sk.confusion_matrix(y_true.numpy(), y_pred.numpy(), labels=list(range(7))),
            )


def test_shards_merge_by_adding_matrices() -> None:
    gen = torch.Generator().manual_seed(3)
    y_true = torch.randint(0, 4, (1000,), generator=gen)
    y_pred = torch.randint(0, 4, (1000,), generator=gen)
    whole = metrics_from_predictions(y_true, y_pred, 4)
    merged = compute_metrics(
        confusion_matrix(y_true[:300], y_pred[:300], 4)
        + confusion_matrix(y_true[300:], y_pred[300:], 4)
    )
    for name, value in whole.summary.items():
        assert float(value) == pytest.approx(float(merged.summary[name]), abs=1e-12), name


@pytest.mark.parametrize(
    "grid", [None, 10**6, 10**4, 20], ids=["untied", "few-ties", "many", "all"]
)
def test_ranking_paths_for_every_share_of_ties(grid: int | None) -> None:
    """AP and AUC correct the untied sums run by run when ties are few and sum
    over the run ends when they are many: both equal scikit-learn's."""
    from pytest_seqgate.curves import TIED_SHARE, ranking

    gen = torch.Generator().manual_seed(8)
    scores = torch.softmax(torch.randn(6000, 3, generator=gen) * 2, 1)
    if grid is not None:
        scores = (scores * grid).round() / grid
    targets = torch.randint(0, 3, (6000,), generator=gen)
    tied = sum(int((s.sort().values.diff() == 0).sum()) for s in scores.T)
    if grid == 10**6:
        assert 0 < tied * TIED_SHARE < scores.numel()  # the corrections path
    if grid in (10**4, 20):
        assert tied * TIED_SHARE > scores.numel()  # the run-ends path
    r = ranking(scores, targets)
    for j in range(3):
        y, s = (targets == j).numpy(), scores[:, j].numpy()
        assert r.average_precision[j].item() == pytest.approx(
            sk.average_precision_score(y, s), abs=1e-12
        )
        assert r.roc_auc[j].item() == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
