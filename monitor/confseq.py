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


def log_mixture_normaliser(x: np.ndarray, n: np.ndarray, a: float = PRIOR, b: float = PRIOR) -> np.ndarray:
    return betaln(a + x, b + n - x) - betaln(a, b)


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
