"""Gaps between groups, as Fairlearn defines them, with 95% intervals.

Differences are max minus min over groups, ratios min over max (Fairlearn's
``MetricFrame.difference()``/``ratio()``, ``demographic_parity_difference``,
``equalized_odds_difference`` with ``agg="worst_case"``); FPED/FNED are
Dixon et al. (2018): the sum over groups of |group rate - overall rate|,
the overall rate pooled over the same groups. Groups where a rate is
undefined (zero denominator) take no part in that rate's gap.

Intervals (for display; breach decisions need anytime-valid bounds):
- a difference: Newcombe's hybrid score interval for the (max, min) pair;
- a ratio: Katz's log interval for the (min, max) pair;
- equalized odds: the max (ratio: min) of its TPR and FPR bounds;
- FPED/FNED: a parametric bootstrap (Jeffreys Beta per group, fixed seed),
  bias-corrected, because a sum of absolute deviations has no usable closed
  form and its plain percentile interval can miss an estimate near 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairwatch.monitor.rates import Z95, proportion, safe_ratio, wilson_interval

BOOTSTRAP_DRAWS = 2000

DIFFERENCES = {
    "demographic_parity_difference": "selection_rate",
    "equal_opportunity_difference": "tpr",
    "false_positive_rate_difference": "fpr",
    "false_negative_rate_difference": "fnr",
    "false_discovery_rate_difference": "fdr",
    "accuracy_difference": "accuracy",
}
EQUALITY_DIFFERENCES = {"fped": "fpr", "fned": "fnr"}


@dataclass(frozen=True)
class Gap:
    value: float
    lower: float
    upper: float
    high: int | None = None  # row of the group with the larger rate
    low: int | None = None  # row of the group with the smaller rate

    def as_dict(self, names: list[str] | None = None) -> dict:
        out = {"value": _num(self.value), "lower": _num(self.lower), "upper": _num(self.upper)}
        if names is not None and self.high is not None:
            out["groups"] = [names[self.high], names[self.low]]
        return out


def _num(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


NAN_GAP = Gap(np.nan, np.nan, np.nan)


def newcombe_interval(x1, n1, x2, n2, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (method 10, 1998)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    return float(d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)), float(d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def katz_interval(x1, n1, x2, n2, z: float = Z95) -> tuple[float, float]:
    """Katz log interval for p1 / p2, with 0.5 added to every count when one is zero."""
    if x1 == 0 or x2 == 0:
        x1, n1, x2, n2 = x1 + 0.5, n1 + 0.5, x2 + 0.5, n2 + 0.5
    log_ratio = np.log((x1 / n1) / (x2 / n2))
    half = z * np.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return float(np.exp(log_ratio - half)), float(np.exp(log_ratio + half))


def _extremes(rows: np.ndarray, metric: str, groups: np.ndarray):
    successes, trials = proportion(rows, metric)
    rate = safe_ratio(successes, trials)
    candidates = groups[~np.isnan(rate[groups])]
    if candidates.size < 2:
        return None
    high = int(candidates[np.argmax(rate[candidates])])
    low = int(candidates[np.argmin(rate[candidates])])
    return rate, successes, trials, high, low


def rate_difference(rows: np.ndarray, metric: str, groups: np.ndarray) -> Gap:
    found = _extremes(rows, metric, groups)
    if found is None:
        return NAN_GAP
    rate, x, n, high, low = found
    lower, upper = newcombe_interval(x[high], n[high], x[low], n[low])
    return Gap(float(rate[high] - rate[low]), lower, upper, high, low)


def rate_ratio(rows: np.ndarray, metric: str, groups: np.ndarray) -> Gap:
    found = _extremes(rows, metric, groups)
    if found is None or rate_is_zero(found):
        return NAN_GAP
    rate, x, n, high, low = found
    lower, upper = katz_interval(x[low], n[low], x[high], n[high])
    return Gap(float(rate[low] / rate[high]), lower, upper, high, low)


def rate_is_zero(found) -> bool:
    rate, _, _, high, _ = found
    return rate[high] == 0


def equality_difference_value(successes: np.ndarray, trials: np.ndarray, overall: float | None = None) -> float:
    """Dixon et al.'s sum over groups of |group rate - overall rate| (groups with no trials left out).

    ``overall`` defaults to the rate pooled over the same groups; Dixon et al.
    take it over every row, with a group or not, and pass it in.

    >>> round(equality_difference_value(np.array([1, 3]), np.array([10, 10])), 6)
    0.2
    """
    successes, trials = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    counted = trials > 0
    x, n = successes[counted], trials[counted]
    if overall is None:
        overall = x.sum() / n.sum()
    return float(np.abs(x / n - overall).sum())


def equality_difference(rows: np.ndarray, metric: str, groups: np.ndarray, seed: int = 0) -> Gap:
    """Dixon et al.'s FPED/FNED over ``groups``."""
    successes, trials = proportion(rows, metric)
    groups = groups[trials[groups] > 0]
    if groups.size < 2:
        return NAN_GAP
    x, n = successes[groups], trials[groups]
    value = equality_difference_value(x, n)
    draws = np.random.default_rng(seed).beta(x + 0.5, n - x + 0.5, size=(BOOTSTRAP_DRAWS, groups.size))
    pooled = (draws * n).sum(axis=1, keepdims=True) / n.sum()
    statistic = np.abs(draws - pooled).sum(axis=1)
    # A sum of absolute deviations is biased upwards (most near 0): shift the
    # percentile interval by the bootstrap's own bias so that it is centred on
    # the estimate, and clip at 0.
    bias = statistic.mean() - value
    lower, upper = np.quantile(statistic, [0.025, 0.975]) - bias
    return Gap(value, float(max(lower, 0.0)), float(max(upper, 0.0)))


def _worst_of(a: Gap, b: Gap, pick) -> Gap:
    if np.isnan(a.value):
        return b
    if np.isnan(b.value):
        return a
    chosen = a if pick(a.value, b.value) == a.value else b
    return Gap(chosen.value, pick(a.lower, b.lower), pick(a.upper, b.upper), chosen.high, chosen.low)


def all_gaps(rows: np.ndarray, groups: np.ndarray | None = None) -> dict[str, Gap]:
    """Every gap of ``monitor.metric_names.GAP_METRICS`` over the given group rows.

    >>> from monitor.counts import N_CELLS, N, POS
    >>> rows = np.zeros((2, N_CELLS)); rows[:, N] = 100; rows[:, POS] = [60, 30]
    >>> gaps = all_gaps(rows)
    >>> round(gaps["demographic_parity_difference"].value, 3), gaps["demographic_parity_ratio"].value
    (0.3, 0.5)
    """
    if groups is None:
        groups = np.arange(rows.shape[0])
    groups = np.asarray(groups, dtype=np.int64)
    out = {name: rate_difference(rows, metric, groups) for name, metric in DIFFERENCES.items()}
    out["demographic_parity_ratio"] = rate_ratio(rows, "selection_rate", groups)
    out["equalized_odds_difference"] = _worst_of(
        out["equal_opportunity_difference"], out["false_positive_rate_difference"], max
    )
    out["equalized_odds_ratio"] = _worst_of(rate_ratio(rows, "tpr", groups), rate_ratio(rows, "fpr", groups), min)
    for name, metric in EQUALITY_DIFFERENCES.items():
        out[name] = equality_difference(rows, metric, groups)
    return out
