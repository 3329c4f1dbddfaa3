"""The anytime-valid bound: coverage at every step, and its shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairwatch.monitor.confseq import (
    confidence_sequence,
    log_marginal,
    log_mixture_normaliser,
    pair_difference_lower,
    pair_ratio_lower,
)
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


def newcombe_interval(x1, n1, x2, n2, z):
    """Newcombe's fixed-sample interval for p1 - p2, elementwise (monitor.gaps has the scalar one)."""
    (l1, u1), (l2, u2) = wilson_interval(x1, n1, z), wilson_interval(x2, n2, z)
    d = x1 / n1 - x2 / n2
    return d - np.sqrt((x1 / n1 - l1) ** 2 + (u2 - x2 / n2) ** 2), d + np.sqrt((u1 - x1 / n1) ** 2 + (x2 / n2 - l2) ** 2)


def _pair_interval(x1, n1, x2, n2, level, prior1=None, prior2=None):
    """The anytime-valid (lower, upper) of p1 - p2."""
    return (pair_difference_lower(x1, n1, x2, n2, level, prior1, prior2),
            -pair_difference_lower(x2, n2, x1, n1, level, prior2, prior1))


def _two_streams(rng, runs, steps, p1, p2, share1):
    """Cumulative (x1, n1, x2, n2) of ``runs`` interleaved streams: each event is in
    group 1 with probability ``share1``, else in group 2."""
    first = rng.random((runs, steps)) < share1
    success = rng.random((runs, steps)) < np.where(first, p1, p2)
    return (np.cumsum(first & success, axis=1), np.cumsum(first, axis=1),
            np.cumsum(~first & success, axis=1), np.cumsum(~first, axis=1))


@pytest.mark.parametrize("p1, p2, share1", [(0.4, 0.3, 0.7), (0.05, 0.08, 0.2), (0.9, 0.5, 0.5)])
def test_pair_bounds_cover_the_difference_and_the_ratio_at_every_step(p1, p2, share1):
    alpha, runs, steps = 0.1, 300, 1000
    x1, n1, x2, n2 = _two_streams(np.random.default_rng(int(p1 * 100 + p2 * 10)), runs, steps, p1, p2, share1)
    seen = (n1 > 0) & (n2 > 0)
    x1, n1, x2, n2 = (np.where(seen, v, 1) for v in (x1, n1, x2, n2))  # before both are seen: a vacuous pair
    lower, upper = _pair_interval(x1, n1, x2, n2, alpha)
    with np.errstate(divide="ignore"):  # a lower bound of 0 is an unbounded upper one
        ratio_low, ratio_high = pair_ratio_lower(x1, n1, x2, n2, alpha), 1 / pair_ratio_lower(x2, n2, x1, n1, alpha)
    missed = (seen & ((lower > p1 - p2) | (upper < p1 - p2) | (ratio_low > p1 / p2) | (ratio_high < p1 / p2)))
    assert missed.any(axis=1).mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


@pytest.mark.parametrize("off", [0.0, 0.02, 0.15])
def test_centred_priors_cover_at_every_step_whether_or_not_the_centre_is_right(off):
    """A block's prior centred on a rate known beforehand (here the true rates moved by ``off``, as after a
    change) keeps the pair set valid at every step: Ville's inequality does not care where the prior sits."""
    p1, p2, alpha, runs, steps = 0.3, 0.2, 0.1, 200, 800
    x1, n1, x2, n2 = _two_streams(np.random.default_rng(int(off * 100) + 7), runs, steps, p1, p2, 0.5)
    seen = (n1 > 0) & (n2 > 0)
    x1, n1, x2, n2 = (np.where(seen, v, 1) for v in (x1, n1, x2, n2))
    priors = (np.full(x1.shape, p1 + off), np.full(x1.shape, 800.0)), (np.full(x1.shape, p2 - off), np.full(x1.shape, 800.0))
    lower, upper = _pair_interval(x1, n1, x2, n2, alpha, *priors)
    with np.errstate(divide="ignore"):
        ratio_low = pair_ratio_lower(x1, n1, x2, n2, alpha, *priors)
        ratio_high = 1 / pair_ratio_lower(x2, n2, x1, n1, alpha, priors[1], priors[0])
    missed = (seen & ((lower > p1 - p2) | (upper < p1 - p2) | (ratio_low > p1 / p2) | (ratio_high < p1 / p2)))
    assert missed.any(axis=1).mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)
    # Where the centre is right, the bounds are narrower than Jeffreys' at the end.
    plain_lower, _ = _pair_interval(x1[:, -1], n1[:, -1], x2[:, -1], n2[:, -1], alpha)
    centred_lower = lower[:, -1]
    if off == 0.0:
        assert np.mean(centred_lower > plain_lower) > 0.95
    if off == 0.15:  # a centre far off costs at most log 2 of level per group: alpha / 4 for the pair
        halved, _ = _pair_interval(x1[:, -1], n1[:, -1], x2[:, -1], n2[:, -1], alpha / 4)
        assert np.all(centred_lower >= halved - 1e-9)


def test_a_fixed_sample_interval_for_the_difference_checked_every_step_does_not_cover():
    x1, n1, x2, n2 = _two_streams(np.random.default_rng(3), 300, 2000, 0.4, 0.3, 0.5)
    seen = (n1 > 0) & (n2 > 0)
    x1, n1, x2, n2 = (np.where(seen, v, 1) for v in (x1, n1, x2, n2))
    lower, upper = newcombe_interval(x1, n1, x2, n2, 1.6448536269514722)
    assert (seen & ((lower > 0.1) | (upper < 0.1))).any(axis=1).mean() > 0.3


@pytest.mark.parametrize("x1, n1, x2, n2, alpha", [(30, 100, 10, 80, 0.05), (300, 1000, 200, 900, 1e-6),
                                                  (3, 40, 35, 50, 0.01), (0, 60, 5, 60, 0.1), (60, 60, 0, 60, 1e-4),
                                                  (30, 30, 10, 30, 1e-3), (30, 30, 30, 30, 1e-3)])
@pytest.mark.parametrize("centred", [False, True])
def test_pair_bounds_are_the_extremes_over_the_joint_confidence_set(x1, n1, x2, n2, alpha, centred):
    # Brute force: every (p1, p2) on a fine grid where the product of the two mixture
    # martingales stays under 1 / alpha (centred: each group's prior half centred on a
    # rate near its own, as a block's is).
    grid = np.linspace(1e-6, 1 - 1e-6, 2001)
    prior1, prior2 = ((0.4, 2 * n1), (0.35, n2 / 2)) if centred else (None, None)

    def log_m(x, n, prior):
        return log_marginal(x, n, *(prior or ())) - (x * np.log(grid) + (n - x) * np.log1p(-grid))

    inside = (log_m(x1, n1, prior1)[:, None] + log_m(x2, n2, prior2)[None, :]) < np.log(1 / alpha)
    p1, p2 = np.meshgrid(grid, grid, indexing="ij")
    least_difference, least_ratio = (p1 - p2)[inside].min(), (p1 / p2)[inside].min()
    lower = float(pair_difference_lower(x1, n1, x2, n2, alpha, prior1, prior2))
    ratio = float(pair_ratio_lower(x1, n1, x2, n2, alpha, prior1, prior2))
    assert lower <= least_difference + 1e-9 and lower == pytest.approx(least_difference, abs=2e-3)
    assert ratio <= least_ratio + 1e-9 and ratio == pytest.approx(least_ratio, abs=2e-3, rel=2e-3)


def test_the_pair_bound_is_narrower_than_two_separate_sequences():
    # The set is an ellipse-like region rather than a box: about the root of the sum of
    # squared widths instead of the sum, even at a tenth of the level.
    x1, n1, x2, n2 = 3000, 10000, 2000, 10000
    lower1, _ = confidence_sequence(x1, n1, 0.025)
    _, upper2 = confidence_sequence(x2, n2, 0.025)
    assert pair_difference_lower(x1, n1, x2, n2, 0.005) > lower1 - upper2


def _restarting_block_misses(p1, p2, alpha, runs, steps, look, interval):
    """Share of runs in which any block sequence of ``BreachMonitor``'s scheme (every
    scale, copy and live block, at its share of ``alpha``, with its prior centred on the
    counts before it) misses p1 - p2 at a look; run r's pair is groups 2r (rate p1) and
    2r + 1 (rate p2), half the events each."""
    from fairwatch.monitor.breach import BreachMonitor, centred_prior

    monitor = BreachMonitor("m", thresholds=lambda attribute, metric: 1.0, attribute_budget=1,
                            block_events=50, check_events=10**12)  # no decisions: the sequences only
    rng = np.random.default_rng(int(p1 * 1000))
    missed = np.zeros(runs, dtype=bool)
    for _ in range(steps // look):
        delta = np.zeros((2 * runs, 6))
        delta[:, 0] = look // 2
        delta[0::2, 1] = rng.binomial(look // 2, p1, runs)
        delta[1::2, 1] = rng.binomial(look // 2, p2, runs)
        monitor.observe_counts({"x": delta}, look, {"x": [str(g) for g in range(2 * runs)]}, 0)
        # Every live sequence's pairs in one call: (sequences, runs).
        rows = np.stack([acc.rows(monitor.counts, "x") for acc in monitor.accumulators])
        level = np.array([alpha * acc.share(monitor.staggers) for acc in monitor.accumulators])[:, None]
        x1, n1, x2, n2 = rows[:, 0::2, 1], rows[:, 0::2, 0], rows[:, 1::2, 1], rows[:, 1::2, 0]
        base = np.zeros(rows.shape)
        for a, acc in enumerate(monitor.accumulators):
            if acc.length is not None and "x" in acc.base:
                base[a, : acc.base["x"].shape[0]] = acc.base["x"]
        strength = np.array([acc.prior_strength(monitor.lifetime) for acc in monitor.accumulators])[:, None]
        prior1 = centred_prior(base[:, 0::2, 1], base[:, 0::2, 0], strength)
        prior2 = centred_prior(base[:, 1::2, 1], base[:, 1::2, 0], strength)
        seen = (n1 > 0) & (n2 > 0)
        x1, n1, x2, n2 = (np.where(seen, v, 1) for v in (x1, n1, x2, n2))  # an empty block: a vacuous pair
        lower, upper = interval(x1, n1, x2, n2, np.broadcast_to(level, x1.shape), prior1, prior2)
        missed |= (seen & ((lower > p1 - p2) | (upper < p1 - p2))).any(axis=0)
    return missed.mean(), monitor


@pytest.mark.slow
@pytest.mark.parametrize("p1, p2", [(0.05, 0.1), (0.4, 0.4)])
def test_restarting_blocks_of_every_scale_cover_at_every_look(p1, p2):
    alpha, runs = 0.1, 100
    miss, monitor = _restarting_block_misses(p1, p2, alpha, runs, 6_450, 50, _pair_interval)
    assert monitor.scales >= 8 and max(acc.block for acc in monitor.accumulators) >= 100  # many scales and blocks
    assert monitor.lifetime > 1 and len(monitor.accumulators) > 1 + monitor.staggers * monitor.scales  # overlapping
    assert any(acc.prior_strength(monitor.lifetime) > 0 for acc in monitor.accumulators)  # centred priors
    assert miss <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


def test_the_same_blocks_with_a_fixed_sample_interval_do_not_cover():
    from scipy.stats import norm

    def newcombe_at(x1, n1, x2, n2, level, *priors):
        return newcombe_interval(x1, n1, x2, n2, norm.ppf(1 - level / 2))

    miss, _ = _restarting_block_misses(0.4, 0.3, 0.1, 200, 6_400, 40, newcombe_at)
    assert miss > 0.2


def _bisection_reference(x1, n1, x2, n2, alpha):
    """The difference bound by 200 plain bisection steps on the same multiplier (the search it replaced)."""
    from fairwatch.monitor.confseq import _log_mixture, _pair_inputs, _toward_zero

    x1, n1, x2, n2, target, norm1, norm2 = _pair_inputs(x1, n1, x2, n2, alpha, None, None)

    def ends(slope):
        p1, p2 = _toward_zero(x1, n1, slope), 1.0 - _toward_zero(n2 - x2, n2, slope)
        return p1 - p2, _log_mixture(x1, n1, p1, norm1) + _log_mixture(x2, n2, p2, norm2)

    low, high = np.zeros(x1.shape), n1 + n2 + 1.0
    while (short := ends(high)[1] < target).any():
        high = np.where(short, high * 2, high)
    for _ in range(200):
        mid = (low + high) / 2
        outside = ends(mid)[1] >= target
        high, low = np.where(outside, mid, high), np.where(outside, low, mid)
    return ends(high)[0]


def test_the_vectorised_root_search_matches_a_long_bisection_pair_by_pair():
    """Thousands of pairs in one call (pairs leave the arrays as they finish): each bound equals the same
    pair's bound computed alone, stays on the wide side of a 200-step bisection up to rounding, and is
    within 1e-6 of it."""
    rng = np.random.default_rng(3)
    k = 3000
    n1, n2 = (np.exp(rng.uniform(np.log(20), np.log(1e6), k)).round() for _ in range(2))
    x1, x2 = (rng.binomial(n.astype(int), rng.random(k)).astype(float) for n in (n1, n2))
    x1[:100], x2[100:200] = n1[:100], 0.0  # all successes, no successes
    alpha = 10 ** rng.uniform(-9, -1, k)
    together = pair_difference_lower(x1, n1, x2, n2, alpha)
    alone = np.array([float(pair_difference_lower(*v)) for v in zip(x1[:300], n1[:300], x2[:300], n2[:300], alpha[:300])])
    assert np.array_equal(together[:300], alone)
    reference = _bisection_reference(x1, n1, x2, n2, alpha)
    assert (together <= reference + 1e-10).all()
    assert np.abs(together - reference).max() < 1e-6
    ratio_together = pair_ratio_lower(x1, n1, x2, n2, alpha)
    ratio_alone = [float(pair_ratio_lower(*v)) for v in zip(x1[:300], n1[:300], x2[:300], n2[:300], alpha[:300])]
    assert np.array_equal(ratio_together[:300], ratio_alone)
