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
_ITERATIONS = 40  # brackets of 1e-12


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
    # Bisection for each end: the set is an interval because the
    # log-likelihood is concave in p. The returned ends are the outer points
    # of the last bracket, so they err on the wide (valid) side.
    log_target = np.log(1.0 / alpha) - log_mixture_normaliser(x, n)
    p_hat = x / n

    def inside(p):
        with np.errstate(divide="ignore", invalid="ignore"):
            loglik = np.where(x > 0, x * np.log(p), 0.0) + np.where(n > x, (n - x) * np.log1p(-p), 0.0)
        return loglik > -log_target

    low_out, low_in = np.zeros_like(p_hat), p_hat.copy()
    high_in, high_out = p_hat.copy(), np.ones_like(p_hat)
    for _ in range(_ITERATIONS):
        mid = (low_out + low_in) / 2
        ok = inside(mid)
        low_in = np.where(ok, mid, low_in)
        low_out = np.where(ok, low_out, mid)
        mid = (high_in + high_out) / 2
        ok = inside(mid)
        high_in = np.where(ok, mid, high_in)
        high_out = np.where(ok, high_out, mid)
    return np.where(x > 0, low_out, 0.0), np.where(n > x, high_out, 1.0)
