"""Gaps between groups' generation statistics, with 95% intervals for display (pure functions).

Differences are max minus min over the given groups, as ``monitor.gaps``
defines them for rates: refusal rate and negative share with Newcombe's
hybrid score interval for the (max, min) pair; mean sentiment with Welch's
normal interval; the sentiment distance is the largest Wasserstein-1 over
pairs of groups (``sentiment_distance.max_pair_distance``).

>>> from fairwatch.monitor.generation.generation_metrics import AttributeStatistics
>>> stats = AttributeStatistics()
>>> stats.update(np.array([0] * 10 + [1] * 10), np.array([True] * 5 + [False] * 14 + [True]),
...              np.linspace(-1, 1, 20))
>>> gaps = generation_gaps(stats, np.array([0, 1]))
>>> round(gaps["refusal_rate_difference"].value, 2), (gaps["refusal_rate_difference"].high, gaps["refusal_rate_difference"].low)
(0.4, (0, 1))
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.gaps import NAN_GAP, Gap, newcombe_interval
from fairwatch.monitor.generation.sentiment_distance import max_pair_distance
from fairwatch.monitor.metric_names import GENERATION_GAP_METRICS
from fairwatch.monitor.rates import Z95, safe_ratio

__all__ = ["generation_gaps", "mean_difference", "proportion_difference"]


def proportion_difference(successes: np.ndarray, trials: np.ndarray, groups: np.ndarray) -> Gap:
    """Largest minus smallest proportion over ``groups`` with trials, with Newcombe's interval."""
    rate = safe_ratio(successes, trials)
    candidates = groups[~np.isnan(rate[groups])]
    if candidates.size < 2:
        return NAN_GAP
    high = int(candidates[np.argmax(rate[candidates])])
    low = int(candidates[np.argmin(rate[candidates])])
    lower, upper = newcombe_interval(successes[high], trials[high], successes[low], trials[low])
    return Gap(float(rate[high] - rate[low]), lower, upper, high, low)


def mean_difference(n: np.ndarray, mean: np.ndarray, variance: np.ndarray, groups: np.ndarray) -> Gap:
    """Largest minus smallest mean over ``groups`` with two values or more, with Welch's normal interval."""
    candidates = groups[n[groups] > 1]
    if candidates.size < 2:
        return NAN_GAP
    high = int(candidates[np.argmax(mean[candidates])])
    low = int(candidates[np.argmin(mean[candidates])])
    value = float(mean[high] - mean[low])
    half = Z95 * float(np.sqrt(variance[high] / n[high] + variance[low] / n[low]))
    return Gap(value, value - half, value + half, high, low)


def generation_gaps(stats, groups: np.ndarray) -> dict[str, Gap]:
    """Every gap of ``metric_names.GENERATION_GAP_METRICS`` over ``groups`` (rows) of an
    ``AttributeStatistics``."""
    groups = np.asarray(groups, dtype=np.int64)
    refusals, responses = stats.refusal.counts()
    negatives, scored = stats.negative.counts()
    n, mean, variance = stats.sentiment.moments()
    toxic, classified = stats.toxic.counts()
    values = (
        proportion_difference(refusals, responses, groups),
        proportion_difference(negatives, scored, groups),
        mean_difference(n, mean, variance, groups),
        max_pair_distance(stats.histogram.table, groups),
        proportion_difference(toxic, classified, groups),
    )
    return dict(zip(GENERATION_GAP_METRICS, values))
