"""How far apart groups' sentiment distributions are: Wasserstein-1 from fixed-bin histograms.

This is the counterfactual sentiment parity of langfair (Bouchard 2024) and
Huang et al. (2020), measured on live traffic between groups rather than on
counterfactual pairs: the earth mover's distance between one group's
distribution of VADER compound scores and the rest's (every other group of
the attribute pooled), and the largest distance over pairs of groups.

Bins: ``N_BINS`` = 200 equal bins on [-1, 1], width ``BIN_WIDTH`` = 0.01,
the same on every worker, so histograms add across workers and subtract
when events leave a window. Each score is read as the centre of its bin;
that moves every sample by at most half a bin, so each distribution moves
by at most ``BIN_WIDTH / 2`` in W1 and a distance between two of them by at
most ``BIN_WIDTH`` = 0.01 (``BIN_ERROR_BOUND``) from scipy's
``wasserstein_distance`` of the raw scores. On a grid of spacing w, W1 is
w times the sum of the absolute differences of the two CDFs.

Interval: a parametric bootstrap (each histogram redrawn from its own
multinomial, fixed seed), shifted by the bootstrap's own bias as
``monitor.gaps`` does for FPED, since a distance between noisy histograms is
biased upwards and its plain percentile interval can miss a true 0. For
display; it is not an anytime-valid bound.

>>> h = SentimentHistogram().update(np.array([0, 0, 1, 1]), np.array([-0.5, 0.5, 0.5, 0.9]))
>>> [round(float(d), 2) for d in h.get()]
[0.7, 0.7]
>>> round(wasserstein_1(h.rows(2)[0], h.rows(2)[1]), 2)  # scipy.stats.wasserstein_distance([-.5, .5], [.5, .9]): 0.7
0.7
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.gaps import NAN_GAP, Gap
from fairwatch.monitor.generation.group_statistic import GroupStatistic

__all__ = ["BIN_ERROR_BOUND", "BIN_WIDTH", "N_BINS", "SentimentHistogram", "max_pair_distance",
           "sentiment_bins", "wasserstein_1"]

N_BINS = 200
BIN_WIDTH = 2.0 / N_BINS
BIN_ERROR_BOUND = BIN_WIDTH
BOOTSTRAP_DRAWS = 400


def sentiment_bins(sentiment: np.ndarray) -> np.ndarray:
    """The bin of each score in [-1, 1] (scores outside are clipped to the end bins).

    >>> sentiment_bins(np.array([-1.0, -0.005, 0.0, 1.0])).tolist()
    [0, 99, 100, 199]
    """
    s = np.clip(np.asarray(sentiment, dtype=np.float64), -1.0, 1.0)
    return np.minimum(((s + 1.0) / BIN_WIDTH).astype(np.int64), N_BINS - 1)


def wasserstein_1(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """W1 between histograms over the bins (last axis), each normalised to a distribution; NaN if one is empty."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(np.cumsum(a, axis=-1) / na - np.cumsum(b, axis=-1) / nb)
        distance = BIN_WIDTH * gap[..., :-1].sum(axis=-1)
    distance = np.where((na[..., 0] > 0) & (nb[..., 0] > 0), distance, np.nan)
    return float(distance) if distance.ndim == 0 else distance


def _bootstrap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """W1 between multinomial redraws of two histograms (BOOTSTRAP_DRAWS of them)."""
    na, nb = int(a.sum()), int(b.sum())
    draws_a = rng.multinomial(na, a / na, size=BOOTSTRAP_DRAWS)
    draws_b = rng.multinomial(nb, b / nb, size=BOOTSTRAP_DRAWS)
    return wasserstein_1(draws_a, draws_b)


def max_pair_distance(histograms: np.ndarray, groups: np.ndarray, seed: int = 0) -> Gap:
    """The largest W1 between two of ``groups`` (rows of ``histograms``), its bias-corrected 95% bootstrap
    interval, and the pair, as (higher mean, lower mean) so that it reads like a rate gap's (high, low)."""
    groups = np.asarray([g for g in np.asarray(groups, dtype=np.int64) if histograms[g].sum() > 0])
    if groups.size < 2:
        return NAN_GAP
    h = histograms[groups]
    pairwise = wasserstein_1(h[:, None, :], h[None, :, :])
    i, j = np.unravel_index(int(np.nanargmax(pairwise)), pairwise.shape)
    value = float(pairwise[i, j])
    draws = _bootstrap(h[i], h[j], np.random.default_rng(seed))
    bias = float(draws.mean()) - value
    lower, upper = np.quantile(draws, [0.025, 0.975]) - bias
    centres = -1.0 + BIN_WIDTH * (np.arange(N_BINS) + 0.5)
    first, second = int(groups[i]), int(groups[j])
    if h[i] @ centres / h[i].sum() < h[j] @ centres / h[j].sum():
        first, second = second, first
    return Gap(value, float(max(lower, 0.0)), float(max(upper, 0.0)), first, second)


class SentimentHistogram(GroupStatistic):
    """``update(codes, sentiment)``: counts per group and bin. ``get()``: each group's W1 to the rest of
    the attribute (NaN when the group or the rest has no response)."""

    width = N_BINS

    def _cells(self, sentiment):
        return [(sentiment_bins(sentiment), None)]

    def get(self) -> np.ndarray:
        table = self.table
        return wasserstein_1(table, table.sum(axis=0) - table)
