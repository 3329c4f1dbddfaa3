"""The anytime-valid bound: coverage at every step, and its shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairwatch.monitor.confseq import confidence_sequence
from fairwatch.monitor.rates import wilson_interval


@pytest.mark.parametrize("p", [0.02, 0.3, 0.5, 0.9])
def test_covers_the_true_rate_at_every_step(p):
    alpha, runs, steps = 0.1, 300, 2000
    rng = np.random.default_rng(int(p * 1000))
    draws = rng.random((runs, steps)) < p
    x = np.cumsum(draws, axis=1)
    n = np.broadcast_to(np.arange(1, steps + 1), x.shape)
    lower, upper = confidence_sequence(x, n, alpha)
    missed = np.any((lower > p) | (upper < p), axis=1).mean()
    # Time-uniform: the share of runs that ever miss stays under alpha
    # (plus three standard errors of the simulation).
    assert missed <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


def test_a_fixed_sample_interval_checked_every_step_does_not_cover():
    # The reason the bound above exists: Wilson at 90%, looked at every step.
    rng = np.random.default_rng(1)
    draws = rng.random((400, 3000)) < 0.3
    x = np.cumsum(draws, axis=1)
    n = np.broadcast_to(np.arange(1, 3001), x.shape)
    lower, upper = wilson_interval(x, n, z=1.6448536269514722)
    assert np.any((lower > 0.3) | (upper < 0.3), axis=1).mean() > 0.3


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 100_000), share=st.floats(0, 1), alpha=st.floats(1e-9, 0.5))
def test_bounds_are_ordered_and_contain_the_estimate(n, share, alpha):
    x = round(n * share)
    lower, upper = confidence_sequence(x, n, alpha)
    assert 0 <= lower <= x / n <= upper <= 1
    # Smaller alpha, wider bounds.
    lower2, upper2 = confidence_sequence(x, n, alpha / 10)
    assert lower2 <= lower + 1e-12 and upper2 >= upper - 1e-12


def test_no_trials_gives_nan():
    lower, upper = confidence_sequence([0, 5], [0, 10], 0.05)
    assert np.isnan(lower[0]) and np.isnan(upper[0]) and not np.isnan(lower[1])


def _restarting_block_misses(p, alpha, runs, steps, look, interval):
    """Share of runs in which any block sequence of ``BreachMonitor``'s scheme
    (every scale, copy and block, at its share of ``alpha``) misses ``p`` at a look."""
    from fairwatch.monitor.breach import BreachMonitor

    monitor = BreachMonitor("m", thresholds=lambda attribute, metric: 1.0, attribute_budget=1,
                            block_events=50, check_events=10**12)  # one run per "group"; no decisions
    rng = np.random.default_rng(int(p * 1000))
    missed = np.zeros(runs, dtype=bool)
    for _ in range(steps // look):
        delta = np.zeros((runs, 6))
        delta[:, 0] = look
        delta[:, 1] = rng.binomial(look, p, runs)
        monitor.observe_counts({"x": delta}, look, {"x": [str(r) for r in range(runs)]}, 0)
        for acc in monitor.accumulators:
            rows = acc.rows.get("x")
            if rows is None or not rows[:, 0].any():
                continue
            level = alpha * acc.share(monitor.staggers)
            lower, upper = interval(rows[:, 1], rows[:, 0], level)
            missed |= (lower > p) | (upper < p)
    return missed.mean(), monitor


@pytest.mark.slow
@pytest.mark.parametrize("p", [0.05, 0.4])
def test_restarting_blocks_of_every_scale_cover_at_every_look(p):
    alpha, runs = 0.1, 200
    miss, monitor = _restarting_block_misses(p, alpha, runs, 10_000, 20, confidence_sequence)
    assert monitor.scales >= 8 and max(acc.block for acc in monitor.accumulators) > 100  # many scales and blocks
    assert miss <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


def test_the_same_blocks_with_a_fixed_sample_interval_do_not_cover():
    from scipy.stats import norm

    def wilson_at(x, n, level):
        return wilson_interval(x, n, z=norm.ppf(1 - level / 2))

    miss, _ = _restarting_block_misses(0.4, 0.1, 300, 10_000, 20, wilson_at)
    assert miss > 0.2
