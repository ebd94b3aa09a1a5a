"""Intervals, bootstrap, threshold-free metrics and calibration."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from pytest_seqgate.config import Settings
from pytest_seqgate.curves import (
    best_precision_at_recall,
    best_recall_at_precision,
    expected_calibration_error,
    pr_curve,
    ranking,
)
from pytest_seqgate.evaluation import Uncertainty
from pytest_seqgate.stats import (
    batched_metrics,
    bootstrap_margins,
    clopper_pearson_interval,
    percentile_interval,
    support_needed,
    wilson_interval,
)

from conftest import assert_lines


def test_wilson_coverage_at_p_09_n_50() -> None:
    # The exact coverage here is 0.9703 (sum of the binomial pmf over the k whose interval
    # holds 0.9); 2,000 draws land within about +-0.008 of it.
    gen = torch.Generator().manual_seed(0)
    draws = torch.binomial(torch.full((2000,), 50.0), torch.full((2000,), 0.9), generator=gen)
    bounds = wilson_interval(draws, torch.full((2000,), 50.0), 0.95)
    covered = ((bounds[:, 0] <= 0.9) & (bounds[:, 1] >= 0.9)).double().mean().item()
    assert 0.93 <= covered <= 0.97


def test_clopper_pearson_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    got = clopper_pearson_interval(torch.tensor([45, 0, 50, 7]), torch.tensor([50, 50, 50, 9]))
    for (k, n), (low, high) in zip(((45, 50), (0, 50), (50, 50), (7, 9)), got.tolist()):
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert low == pytest.approx(ci.low, abs=1e-9) and high == pytest.approx(ci.high, abs=1e-9)


@pytest.mark.parametrize("seed", range(100))
def test_average_precision_and_roc_auc_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(5, 150)), int(rng.integers(2, 5))
    y = rng.integers(0, c, n)
    s = rng.random((n, c))
    if seed % 2:
        s = np.round(s, 1) + 0.05  # many ties
    s = (s / s.sum(1, keepdims=True)).astype(np.float32)
    got = ranking(torch.from_numpy(s), torch.from_numpy(y))
    for k in range(c):
        yk = y == k
        if 0 < yk.sum() < n:
            assert float(got.average_precision[k]) == pytest.approx(
                average_precision_score(yk, s[:, k].astype(np.float64)), abs=1e-9
            )
            assert float(got.roc_auc[k]) == pytest.approx(
                roc_auc_score(yk, s[:, k].astype(np.float64)), abs=1e-9
            )
        elif yk.sum() == 0:
            assert torch.isnan(got.average_precision[k])


def test_trade_off_points() -> None:
    scores = torch.tensor([0.95, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2])
    positive = torch.tensor([1, 1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    curve = pr_curve(scores, positive)
    recall, threshold = best_recall_at_precision(curve, 0.75)
    assert recall == pytest.approx(0.8) and threshold == pytest.approx(0.6)  # 4/5 at 4/5
    precision, threshold = best_precision_at_recall(curve, 1.0)
    assert precision == pytest.approx(5 / 8) and threshold == pytest.approx(0.2)
    assert best_recall_at_precision(curve, 1.01) == (0.0, None)


def test_ece_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    targets = torch.tensor([0, 1, 1, 0])
    # bins (15 wide): 0.9 -> bin 14 (acc 1), 0.8 -> bin 12 (acc 0), 0.7 -> bin 11 (acc 1),
    # 0.55 -> bin 9 (acc 0): ECE = (0.1 + 0.8 + 0.3 + 0.55) / 4
    assert expected_calibration_error(scores, targets) == pytest.approx(1.75 / 4)


def dense_bootstrap(cm: torch.Tensor, resamples: int, seed: int) -> torch.Tensor:
    """The ``[B, C, C]`` matrices of the same draws as bootstrap_margins (the
    conditional binomial chain over the non-empty cells, in order)."""
    c = cm.shape[0]
    flat = cm.reshape(-1).double()
    out = torch.zeros(resamples, c * c, dtype=torch.float64)
    cells = torch.nonzero(flat).reshape(-1).tolist()
    gen = torch.Generator().manual_seed(seed)
    remaining = torch.full((resamples,), float(flat.sum()), dtype=torch.float64)
    rest = float(flat.sum())
    for cell in cells[:-1]:
        share = float(flat[cell]) / rest
        out[:, cell] = torch.binomial(
            remaining, torch.full_like(remaining, min(share, 1.0)), generator=gen
        )
        remaining -= out[:, cell]
        rest -= float(flat[cell])
    out[:, cells[-1]] = remaining
    return out.reshape(resamples, c, c)


def test_bootstrap_margins_are_those_of_the_resampled_matrices() -> None:
    """Margins drawn without building the [B, C, C] matrices (8 GB at 1,000
    classes) equal the margins of the matrices the same draws make."""
    gen = torch.Generator().manual_seed(0)
    cm = torch.randint(0, 30, (7, 7), generator=gen) * (torch.rand(7, 7, generator=gen) < 0.6)
    dense = dense_bootstrap(cm, 200, seed=5)
    margins = bootstrap_margins(cm, 200, seed=5)
    assert torch.equal(margins.tp, dense.diagonal(dim1=1, dim2=2))
    assert torch.equal(margins.true, dense.sum(2))
    assert torch.equal(margins.pred, dense.sum(1))
    wide = bootstrap_margins(torch.eye(1000, dtype=torch.int64) * 3, 1000, seed=0)
    assert wide.tp.shape == (1000, 1000) and bool((wide.true.sum(1) == 3000).all())


def test_bootstrap_is_seeded_and_centred() -> None:
    cm = torch.tensor([[400, 40], [30, 130]])
    a = batched_metrics(bootstrap_margins(cm, 1000, seed=3))
    b = batched_metrics(bootstrap_margins(cm, 1000, seed=3))
    assert torch.equal(a["macro_f1"], b["macro_f1"])
    assert float(bootstrap_margins(cm, 10, 0).true.sum(1).min()) == 600
    low, high = percentile_interval(a["macro_f1"], 0.95).tolist()
    from pytest_seqgate.metrics import compute_metrics

    point = compute_metrics(cm).value("macro_f1")
    assert low < point < high and high - low < 0.1


def test_uncertainty_intervals_by_metric() -> None:
    cm = torch.tensor([[45, 5], [10, 40]])
    u = Uncertainty.of(cm, Settings(bootstrap=200))
    assert (
        u.interval("recall", 0).tolist()
        == wilson_interval(torch.tensor(45), torch.tensor(50)).tolist()
    )
    assert u.interval("mcc") is not None and u.interval("f1", 1) is not None
    assert u.interval("no_information_rate") is None
    wide = u.interval("recall", 0, 0.99)
    narrow = u.interval("recall", 0, 0.5)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_support_needed() -> None:
    n = support_needed(0.95, 0.9, 0.95)
    assert n is not None
    assert float(wilson_interval(torch.tensor(0.95 * n), torch.tensor(n))[0]) >= 0.9
    assert float(wilson_interval(torch.tensor(0.95 * (n - 1)), torch.tensor(n - 1))[0]) < 0.9
    assert support_needed(0.85, 0.9, 0.95) is None


LOWER_BOUND = """
import pytest

@pytest.mark.seqgate(min_recall={{"spam": 0.8}}, fail_on_paradox=False)
def test_point():
    pass

@pytest.mark.seqgate(min_recall={{"spam": 0.8}}, confidence=0.95, fail_on_paradox=False)
def test_lower_bound():
    pass
"""


@pytest.mark.parametrize(
    ("n", "outcome"), [(80, {"passed": 1, "failed": 1}), (8000, {"passed": 2})]
)
def test_point_gate_passes_and_lower_bound_gate_depends_on_n(project, n, outcome):
    from conftest import rule_records

    # Spam recall 0.9 at both sizes: n / 2 spam samples, a tenth of them missed.
    project.data(rule_records(n, missed={1: n // 20}))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        bootstrap="0",
        padding_check="0",
    )
    project.test(LOWER_BOUND.format())
    result = project.run()
    result.assert_outcomes(**outcome)
    if n == 80:
        assert_lines(
            result.stdout.str(),
            "*recall*spam*>= 0.8*0.900 (low 0.7*"
            "point 0.900 clears it but the 95% lower bound 0.7* does not*",
        )


def test_trade_off_gate_and_ece_gate_in_a_project(project):
    from conftest import rule_records

    project.data(rule_records(100, missed={1: 10}))
    project.ini(
        model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"], report="r.json"
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_recall_at_precision={"spam": (0.75, 0.99)}, max_ece=0.2)
        def test_trade_off():
            pass

        @pytest.mark.seqgate(min_average_precision={"spam": 0.99})
        def test_ap():
            pass
    """)
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    assert_lines(result.stdout.str(), "*average_precision*spam*>= 0.99*0.900*")
    import json

    gates = json.loads((project.path / "r.json").read_text())["evaluations"][0]["gates"]
    trade = next(g for g in gates if g["metric"] == "recall_at_precision")
    assert trade["value"] == pytest.approx(0.8) and trade["at"] == 0.99
    assert "decision_threshold" in trade


def test_min_support_says_how_many_samples_would_do(project):
    from conftest import rule_records

    project.data(rule_records(40, missed={1: 1}))
    project.ini(model="models:first_token", eval_data="eval.jsonl", labels=["ham", "spam"])
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_recall={"spam": 0.9}, min_support=100, fail_on_paradox=False)
        def test_small():
            pass
    """)
    result = project.run()
    result.assert_outcomes(failed=1)
    # The reason wraps in the failure table's column: read it with the lines joined.
    words = " ".join(result.stdout.str().split())
    assert re.search(
        r"20 samples of 'spam', fewer than min_support=100: the eval set cannot "
        r"support the claim; at the observed 0\.950, about \d+ samples would put the 95% "
        r"lower bound above 0\.9",
        words,
    )


def test_descending_keys_sort_like_the_floats() -> None:
    """Integer keys from float bits: ascending keys are descending scores, ties are ties."""
    from pytest_seqgate.curves import descending_keys

    gen = torch.Generator().manual_seed(4)
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), -float("inf"), 1e-45, -1e-45])
    for dtype in (torch.float32, torch.float64, torch.float16):
        scores = torch.cat([torch.randn(500, generator=gen), special, special]).to(dtype)
        scores = torch.cat([scores, scores[:100]])  # exact ties
        keys = descending_keys(scores)
        order = torch.sort(keys, stable=True).indices
        expected = torch.sort(scores, descending=True, stable=True).indices
        assert torch.equal(scores[order], scores[expected])
        # Equal keys exactly where the scores are equal (0.0 == -0.0 included).
        same_key = keys.unsqueeze(0) == keys.unsqueeze(1)
        assert torch.equal(same_key, scores.unsqueeze(0) == scores.unsqueeze(1))
