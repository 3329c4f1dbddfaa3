"""Intervals and gaps against published values and independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats.contingency import relative_risk

from fairwatch.monitor.counts import FN, FP, N, N_CELLS, POS, TN, TP
from fairwatch.monitor.gaps import all_gaps, equality_difference, katz_interval, newcombe_interval
from fairwatch.monitor.rates import group_rates, wilson_interval


@pytest.mark.parametrize("x, n", [(0, 10), (3, 10), (10, 10), (81, 263), (1, 2)])
def test_wilson_matches_scipy(x, n):
    expected = binomtest(x, n).proportion_ci(method="wilson")
    lower, upper = wilson_interval(x, n)
    assert float(lower) == pytest.approx(expected.low, abs=1e-9)
    assert float(upper) == pytest.approx(expected.high, abs=1e-9)


def test_wilson_is_nan_without_trials():
    lower, upper = wilson_interval(0, 0)
    assert np.isnan(lower) and np.isnan(upper)


def test_newcombe_reproduces_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, method 10, example (a): 56/70 vs 48/80.
    lower, upper = newcombe_interval(56, 70, 48, 80)
    assert (round(lower, 4), round(upper, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("x1, n1, x2, n2", [(20, 100, 40, 100), (5, 50, 30, 60), (90, 300, 120, 310)])
def test_katz_matches_scipy_relative_risk(x1, n1, x2, n2):
    expected = relative_risk(x1, n1, x2, n2).confidence_interval(0.95)
    lower, upper = katz_interval(x1, n1, x2, n2)
    assert lower == pytest.approx(expected.low, rel=1e-9)
    assert upper == pytest.approx(expected.high, rel=1e-9)


def _rows(spec):
    """spec: per group (tp, fp, tn, fn)."""
    rows = np.zeros((len(spec), N_CELLS))
    for g, (tp, fp, tn, fn) in enumerate(spec):
        rows[g, [TP, FP, TN, FN]] = tp, fp, tn, fn
        rows[g, N] = tp + fp + tn + fn
        rows[g, POS] = tp + fp
    return rows


def test_gap_definitions_by_hand():
    rows = _rows([(40, 10, 40, 10), (20, 30, 30, 20), (10, 5, 80, 5)])
    rates = group_rates(rows)
    tpr = rates["tpr"][0]
    fpr = rates["fpr"][0]
    gaps = all_gaps(rows)
    assert gaps["equal_opportunity_difference"].value == pytest.approx(tpr.max() - tpr.min())
    assert gaps["false_positive_rate_difference"].value == pytest.approx(fpr.max() - fpr.min())
    assert gaps["equalized_odds_difference"].value == pytest.approx(max(tpr.max() - tpr.min(), fpr.max() - fpr.min()))
    overall_fpr = 45 / (45 + 150)
    assert gaps["fped"].value == pytest.approx(np.abs(fpr - overall_fpr).sum())
    sel = rates["selection_rate"][0]
    assert gaps["demographic_parity_ratio"].value == pytest.approx(sel.min() / sel.max())
    for gap in gaps.values():
        assert gap.lower <= gap.value + 1e-12 or gap is gaps["fped"] or gap is gaps["fned"]
        assert gap.lower <= gap.upper


def test_groups_without_a_defined_rate_are_left_out_and_single_groups_give_nan():
    rows = _rows([(10, 0, 0, 10), (0, 0, 20, 0)])  # group 1 has no positives: TPR undefined
    gaps = all_gaps(rows)
    assert np.isnan(gaps["equal_opportunity_difference"].value)
    assert not np.isnan(gaps["demographic_parity_difference"].value)


def test_equality_difference_interval_covers_truth_on_simulated_data():
    rng = np.random.default_rng(3)
    true = np.array([0.1, 0.3, 0.2])
    n = np.array([400, 300, 500])
    truth = np.abs(true - (true * n).sum() / n.sum()).sum()
    covered = 0
    for _ in range(200):
        x = rng.binomial(n, true)
        rows = _rows([(0, xi, ni - xi, 0) for xi, ni in zip(x, n)])
        gap = equality_difference(rows, "fpr", np.arange(3), seed=int(rng.integers(1 << 30)))
        covered += gap.lower <= truth <= gap.upper
    assert covered >= 180  # nominal 95%: at least 90% of 200 runs
