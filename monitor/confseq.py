"""Anytime-valid confidence sequences for a Bernoulli rate, from counts alone.

Robbins' beta-binomial mixture (Robbins 1970; Howard, Ramdas, McAuliffe and
Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences", Section 3, the conjugate-mixture boundary): with a Beta(a, b)
mixing prior, for every true rate p

    M_n(p) = B(a + x_n, b + n - x_n) / B(a, b) / (p^x_n (1 - p)^(n - x_n))

is a nonnegative martingale with M_0 = 1, so by Ville's inequality
P(exists n: M_n(p) >= 1/alpha) <= alpha. The confidence sequence is
{p : M_n(p) < 1/alpha}: an interval, valid at every n at once, however
often it is looked at. It depends only on (x, n), so it can be recomputed
from merged counters.

Written here because the PyPI package ``confseq`` (which implements it)
needs a C++ build that fails on these machines, and the bound is a few lines
of numpy; ``expectation`` targets e-values for means, not this interval.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln

PRIOR = 0.5  # Beta(1/2, 1/2): Jeffreys, symmetric, light at the ends
_ITERATIONS = 22  # brackets of 2.4e-7: far finer than any threshold needs
_PAIR_ITERATIONS = 40  # the multiplier's bracket shrinks 10^12-fold at most; the result is taken on its wide side
_BOUND_TOLERANCE = 1e-10  # a pair bound this close to exact is exact enough (thresholds are 0.1, 0.8)


def log_mixture_normaliser(x: np.ndarray, n: np.ndarray, a: float = PRIOR, b: float = PRIOR) -> np.ndarray:
    return betaln(a + x, b + n - x) - betaln(a, b)


def log_marginal(x, n, centre=None, strength=None) -> np.ndarray:
    """log of the mixture's marginal likelihood of ``x`` successes in ``n`` trials: the
    normaliser of ``M_n(p) = marginal / (p^x (1 - p)^(n - x))``.

    Without a centre, the Jeffreys prior. With one (``strength`` > 0), the prior is half
    Jeffreys and half Beta(strength * centre, strength * (1 - centre)). Any prior fixed
    before the counts start gives a test martingale for every p (Ville's inequality holds
    as for Jeffreys) and a normaliser that does not depend on p, which the pair bounds'
    closed forms need. A prior centred on a rate known beforehand (a group's rate before a
    block starts) costs about 0.7 + 0.5 log(1 + n / strength) nats instead of the Jeffreys
    prior's 0.5 log(n / (2 pi p (1 - p))): a block's unchanged group then pays a few nats
    less for being valid at every n; a group whose rate moved pays log 2 more.

    >>> float(log_marginal(3, 10)) == float(log_mixture_normaliser(3, 10))
    True
    >>> x, n = 3_000, 10_000  # a rate of 0.3, known to be about 0.3 beforehand
    >>> round(float(log_marginal(x, n, 0.3, 10_000) - log_marginal(x, n)), 1)  # nats saved
    3.8
    """
    x, n = np.asarray(x, dtype=float), np.asarray(n, dtype=float)
    jeffreys = log_mixture_normaliser(x, n)
    if centre is None:
        return jeffreys
    centre, strength = np.asarray(centre, dtype=float), np.asarray(strength, dtype=float)
    centred = strength > 0
    if not np.any(centred):
        return jeffreys
    a = np.where(centred, strength * centre, PRIOR)
    b = np.where(centred, strength * (1 - centre), PRIOR)
    near = betaln(a + x, b + n - x) - betaln(a, b)
    return np.where(centred, np.logaddexp(jeffreys, near) - np.log(2.0), jeffreys)


def confidence_sequence(successes, trials, alpha) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the beta-binomial mixture confidence sequence, elementwise.

    NaN where ``trials`` is 0. ``alpha`` may be an array (one level per element).

    >>> lo, hi = confidence_sequence(30, 100, 0.05)
    >>> round(float(lo), 3), round(float(hi), 3)
    (0.166, 0.463)
    """
    x, n, alpha = np.broadcast_arrays(
        np.asarray(successes, dtype=float), np.asarray(trials, dtype=float), np.asarray(alpha, dtype=float)
    )
    shape = x.shape
    x, n, alpha = x.ravel(), n.ravel(), alpha.ravel()
    lower, upper = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    live = n > 0
    if live.any():
        lo, hi = _bounds(x[live], n[live], alpha[live])
        lower[live], upper[live] = lo, hi
    return lower.reshape(shape), upper.reshape(shape)


def _bounds(x: np.ndarray, n: np.ndarray, alpha: np.ndarray):
    # Bisection for both ends at once: the set is an interval because the
    # log-likelihood is concave in p, so [0, p_hat] holds the lower end and
    # [p_hat, 1] the upper. The returned ends are the outer points of the last
    # bracket: they err on the wide (valid) side, by at most 2^-ITERATIONS.
    log_target = np.log(1.0 / alpha) - log_mixture_normaliser(x, n)
    p_hat = x / n
    xx, nn, target = np.concatenate([x, x]), np.concatenate([n, n]), np.concatenate([log_target, log_target])
    outside = np.concatenate([np.zeros_like(p_hat), np.ones_like(p_hat)])
    inside_end = np.concatenate([p_hat, p_hat])
    has_x, has_rest = xx > 0, nn > xx
    for _ in range(_ITERATIONS):
        mid = (outside + inside_end) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            loglik = np.where(has_x, xx * np.log(mid), 0.0) + np.where(has_rest, (nn - xx) * np.log1p(-mid), 0.0)
        ok = loglik > -target
        inside_end = np.where(ok, mid, inside_end)
        outside = np.where(ok, outside, mid)
    k = x.size
    return np.where(x > 0, outside[:k], 0.0), np.where(n > x, outside[k:], 1.0)


def _log_mixture(x: np.ndarray, n: np.ndarray, p: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    """log M_n(p): the mixture martingale's value at rate ``p`` (inf where p is impossible),
    given ``log_mixture_normaliser(x, n)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        loglik = np.where(x > 0, x * np.log(p), 0.0) + np.where(n > x, (n - x) * np.log1p(-p), 0.0)
    return normaliser - np.where(np.isnan(loglik), -np.inf, loglik)


def _toward_zero(x: np.ndarray, n: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """The p <= x/n where the negative log-likelihood's derivative is -slope (slope >= 0).

    It solves slope p^2 - (n + slope) p + x = 0, written so that it is exact at slope 0."""
    b = n + slope
    return 2 * x / (b + np.sqrt(np.maximum(b * b - 4 * slope * x, 0.0)))


def _pair_inputs(x1, n1, x2, n2, alpha, prior1, prior2):
    """The counts as float arrays of one shape, log(1/alpha), and both groups' normalisers
    (``prior``: None for Jeffreys, or (centre, strength) as ``log_marginal`` takes them)."""
    x1, n1, x2, n2, alpha = (np.asarray(v, dtype=float) for v in np.broadcast_arrays(x1, n1, x2, n2, alpha))
    norm1 = np.broadcast_to(log_marginal(x1, n1, *(prior1 or ())), x1.shape)
    norm2 = np.broadcast_to(log_marginal(x2, n2, *(prior2 or ())), x1.shape)
    return x1, n1, x2, n2, np.log(1.0 / alpha), norm1, norm2


def _narrowing(*arrays):
    """``at(idx)``: the arrays at the positions ``idx`` (all of them for None), the last narrowing remembered."""
    memo: list = [None, arrays]

    def at(idx):
        if idx is None:
            return arrays
        if memo[0] is not idx:
            memo[0], memo[1] = idx, tuple(array[idx] for array in arrays)
        return memo[1]

    return at


def _distance(h: np.ndarray, floor: np.ndarray, root_target: np.ndarray) -> np.ndarray:
    """sqrt(h - floor) - sqrt(target - floor): nearly linear in the multiplier, same sign as h - target."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.maximum(h - floor, 0.0)) - root_target


def _search_to_outside(ends, bound, low: np.ndarray, high: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Shrink [low, high] around the multiplier where ``ends``' log M1 + log M2 reaches
    ``target`` (it increases with the multiplier); return the outer end, on the wide side.

    ``ends(multiplier, idx)`` evaluates the pairs at positions ``idx`` (None: all of them);
    ``bound(p1, p2)`` is the bound a multiplier gives (it falls as the multiplier grows).
    A pair's search stops once the bracket's two ends give bounds within
    ``_BOUND_TOLERANCE`` (the answer is then at most that much below the exact bound) or
    the bracket is as narrow as ``_PAIR_ITERATIONS`` halvings leave it. Each step is the
    secant through the last two points while steps halve the bracket, else regula falsi
    on the bracket (Illinois: a stale end's weight halves), and a halving after three
    steps that did not halve it: about a dozen steps where bisection took forty, never
    more than four times bisection's. Finished pairs leave the arrays once they are half
    of them, so a long search for one pair does not cost the others' time."""
    tolerance = (high - low) * 2.0**-_PAIR_ITERATIONS
    p1, p2, h = ends(low, None)
    # Searched on sqrt(h - h(low)) - sqrt(target - h(low)): h grows about as the
    # multiplier's square (the normal approximation), so this is nearly linear and
    # regula falsi lands close at once. Same sign as h - target, same root.
    floor, b_low = h, bound(p1, p2)
    with np.errstate(invalid="ignore"):
        root_target = np.sqrt(np.maximum(target - floor, 0.0))
    f_low = np.where(target > floor, -root_target, 0.0)  # 0: the low end is already outside (an empty set)
    p1, p2, h = ends(high, None)
    f_high, b_high = _distance(h, floor, root_target), bound(p1, p2)
    high = np.where(f_low >= 0, low + tolerance, high)  # nothing to search: the set ends at low (as bisection ended)
    last = np.zeros(low.shape, dtype=np.int8)  # the end the last step moved: -1 low, 1 high
    x_prev, f_prev, x_now, f_now = low, f_low, high, f_high  # the last two points, for the secant
    reference = high - low  # the width to halve
    stalled = np.zeros(low.shape, dtype=np.int8)  # steps since the bracket last halved
    target = np.broadcast_to(target, low.shape)
    result = np.array(high, dtype=float)  # the searched pairs' outer ends, written back as they leave
    idx = None  # positions of the pairs still in the arrays (None: all)
    for _ in range(4 * _PAIR_ITERATIONS):  # a halving at least every fourth step: 40 halvings at most
        width = high - low
        with np.errstate(invalid="ignore"):
            live = (width > tolerance) & ~(b_low - b_high <= _BOUND_TOLERANCE)
        n_live = int(np.count_nonzero(live))
        if n_live == 0:
            break
        if live.ndim == 1 and live.size >= 16 and 2 * n_live <= live.size:
            positions = np.arange(live.size) if idx is None else idx
            result[positions[~live]] = high[~live]
            idx = positions[live]
            (low, high, f_low, f_high, b_low, b_high, last, x_prev, f_prev, x_now, f_now, reference, stalled,
             tolerance, floor, root_target, target) = (
                array[live] for array in (low, high, f_low, f_high, b_low, b_high, last, x_prev, f_prev, x_now,
                                          f_now, reference, stalled, tolerance, floor, root_target, target))
            width, live = high - low, np.ones(n_live, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            secant = x_now - f_now * (x_now - x_prev) / (f_now - f_prev)
            falsi = high - f_high * width / (f_high - f_low)
        mid = (low + high) / 2
        falsi = np.where(np.isfinite(falsi) & (falsi > low) & (falsi < high), falsi, mid)
        # The secant while steps halve the bracket; once one end stalls, the Illinois step moves the other.
        step = np.where(np.isfinite(secant) & (secant > low) & (secant < high) & (stalled == 0), secant, falsi)
        step = np.where(stalled >= 3, mid, step)
        p1, p2, h = ends(step, idx)
        f, b = _distance(h, floor, root_target), bound(p1, p2)
        outside = live & (h >= target)
        inside = live & ~outside
        f = np.where(outside, np.maximum(f, 0.0), np.minimum(f, -1e-300))  # the sign decides, not rounding
        # Illinois: the end kept twice in a row counts half, so that regula falsi lands past the root.
        f_low = np.where(outside & (last == 1), f_low / 2, f_low)
        f_high = np.where(inside & (last == -1), f_high / 2, f_high)
        high, f_high, b_high = np.where(outside, step, high), np.where(outside, f, f_high), np.where(outside, b, b_high)
        low, f_low, b_low = np.where(inside, step, low), np.where(inside, f, f_low), np.where(inside, b, b_low)
        last = np.where(outside, 1, np.where(inside, -1, last)).astype(np.int8)
        x_prev, f_prev = np.where(live, x_now, x_prev), np.where(live, f_now, f_prev)
        x_now, f_now = np.where(live, step, x_now), np.where(live, f, f_now)
        halved = high - low <= reference / 2
        reference = np.where(halved, high - low, reference)
        stalled = np.where(halved | (stalled >= 3), 0, stalled + 1).astype(np.int8)
    if idx is None:
        return high
    result[idx] = high
    return result


def pair_difference_lower(x1, n1, x2, n2, alpha, prior1=None, prior2=None) -> np.ndarray:
    """Anytime-valid lower bound of p1 - p2, from two disjoint groups' counts.

    The product M1(p1) M2(p2) of the two groups' mixture martingales is a
    martingale (each event moves one factor), so {(p1, p2): M1 M2 < 1/alpha}
    covers both rates at every moment with probability 1 - alpha: the bound is
    the least p1 - p2 over that convex set. It is about the root of the sum of
    the squared widths, where two separate sequences give their sum. The
    minimum satisfies d log M1/dp1 = -lambda, d log M2/dp2 = lambda (closed
    forms), and lambda is found by a root search, ending on the wide side.
    ``prior1``, ``prior2``: each group's mixing prior, None (Jeffreys) or
    (centre, strength) arrays as ``log_marginal`` takes them.

    >>> round(float(pair_difference_lower(300, 1000, 100, 1000, 0.05)), 3)
    0.121
    """
    x1, n1, x2, n2, target, norm1, norm2 = _pair_inputs(x1, n1, x2, n2, alpha, prior1, prior2)

    at = _narrowing(x1, n1, x2, n2, norm1, norm2)

    def ends(slope, idx=None):
        x1, n1, x2, n2, norm1, norm2 = at(idx)
        p1 = _toward_zero(x1, n1, slope)
        p2 = 1.0 - _toward_zero(n2 - x2, n2, slope)
        return p1, p2, _log_mixture(x1, n1, p1, norm1) + _log_mixture(x2, n2, p2, norm2)

    low = np.zeros(x1.shape)
    high = n1 + n2 + 1.0
    for _ in range(200):  # grow until outside the set (or at the corner p1 = 0, p2 = 1)
        _, _, h = ends(high)
        short = h < target
        if not short.any():
            break
        high = np.where(short, high * 2, high)
    high = _search_to_outside(ends, lambda p1, p2: p1 - p2, low, high, target)
    p1, p2, h = ends(high)
    return np.where(h >= target, p1 - p2, -1.0)


def _ratio(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(p1, 0.0) / p2


def pair_ratio_lower(x1, n1, x2, n2, alpha, prior1=None, prior2=None) -> np.ndarray:
    """Anytime-valid lower bound of p1 / p2, from two disjoint groups' counts
    (the least p1 / p2 over the same set as ``pair_difference_lower``).

    >>> round(float(pair_ratio_lower(300, 1000, 400, 1000, 0.05)), 3)
    0.563
    """
    x1, n1, x2, n2, target, norm1, norm2 = _pair_inputs(x1, n1, x2, n2, alpha, prior1, prior2)

    at = _narrowing(x1, n1, x2, n2, norm1, norm2)

    def ends(mu, idx=None):
        x1, n1, x2, n2, norm1, norm2 = at(idx)
        # Stationary points of log p1 - log p2: p * dlogM/dp = -mu for p1, +mu for p2.
        with np.errstate(divide="ignore", invalid="ignore"):
            p1 = np.where(n1 > mu, (x1 - mu) / (n1 - mu), 0.0)
        p2 = (x2 + mu) / (n2 + mu)
        return p1, p2, _log_mixture(x1, n1, np.maximum(p1, 0.0), norm1) + _log_mixture(x2, n2, p2, norm2)

    low, high = np.zeros(x1.shape), x1.copy()  # p1 reaches 0 at mu = x1
    high = _search_to_outside(ends, _ratio, low, high, target)
    p1, p2, h = ends(high)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where((h >= target) & (x1 > 0), np.maximum(p1, 0.0) / p2, 0.0)
        # x1 = n1: log M1 = norm1 - n1 log p1 has p1 * dlogM1/dp1 = -n1 everywhere, so the
        # stationary point has mu = n1 exactly, p2 = (x2 + n1) / (n2 + n1), and p1 is where
        # the pair's set ends: log p1 = (norm1 - target + log M2(p2)) / n1 (capped at 1),
        # nudged down by a relative 1e-12 to stay on the wide side.
        all_successes = (x1 == n1) & (n1 > 0)
        p2_full = (x2 + n1) / (n2 + n1)
        log_m2 = _log_mixture(x2, n2, p2_full, norm2)
        p1_full = np.exp((norm1 - target + log_m2) / np.where(n1 > 0, n1, 1.0)) * (1 - 1e-12)
        # Where that p1 would pass 1, the set reaches p1 = 1: the bound is 1 over the
        # largest p2 with log M2(p2) < target - log M1(1) = target - norm1: the Jeffreys
        # sequence of group 2 at the level that gives its normaliser that margin.
        capped = all_successes & (p1_full >= 1.0)
        if capped.any():
            x2c, n2c = x2[capped], n2[capped]
            level = np.exp(norm1[capped] + norm2[capped] - log_mixture_normaliser(x2c, n2c) - target[capped])
            _, widest_p2 = confidence_sequence(x2c, n2c, level)
            p1_full, p2_full = np.array(p1_full, dtype=float), np.array(p2_full, dtype=float)
            p1_full[capped], p2_full[capped] = 1.0, widest_p2
        return np.where(all_successes, p1_full / p2_full, bound)
