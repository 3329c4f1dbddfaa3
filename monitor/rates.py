"""Per-group rates and their 95% intervals, as pure functions of count rows.

Names follow Fairlearn (``selection_rate``, ``true_positive_rate`` as
``tpr``...). A rate with a zero denominator is NaN (reported as null).
Intervals: Wilson score for proportions; a t-style normal interval for the
mean score.
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.counts import FN, FP, N, POS, SCORE_SQ, SCORE_SUM, SCORED, TN, TP

Z95 = 1.959963984540054

# metric -> (numerator cells, denominator cells)
PROPORTIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "selection_rate": ((POS,), (N,)),
    "tpr": ((TP,), (TP, FN)),
    "fpr": ((FP,), (FP, TN)),
    "fnr": ((FN,), (TP, FN)),
    "tnr": ((TN,), (FP, TN)),
    "ppv": ((TP,), (TP, FP)),
    "fdr": ((FP,), (TP, FP)),
    "accuracy": ((TP, TN), (TP, FP, TN, FN)),
    "base_rate": ((TP, FN), (TP, FP, TN, FN)),
    "label_coverage": ((TP, FP, TN, FN), (N,)),
}


def safe_ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def wilson_interval(successes, trials, z: float = Z95):
    """Wilson score interval; NaN where ``trials`` is 0.

    >>> [round(float(x), 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> [round(float(x), 4) for x in wilson_interval(12, 10)]
    [0.7225, 1.0]
    """
    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    safe_n = np.where(trials > 0, trials, 1.0)
    # Clipped: a worker's label coverage can pass 1 (labels counted from the copies of
    # predictions another worker counted); the interval then stays defined.
    p = np.clip(successes / safe_n, 0.0, 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * safe_n)) / (1 + z2 / safe_n)
    half = z * np.sqrt(p * (1 - p) / safe_n + z2 / (4 * safe_n * safe_n)) / (1 + z2 / safe_n)
    empty = trials <= 0
    return np.where(empty, np.nan, np.clip(centre - half, 0, 1)), np.where(empty, np.nan, np.clip(centre + half, 0, 1))


def proportion(rows: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(successes, trials) of a proportion metric for every row."""
    numerator, denominator = PROPORTIONS[metric]
    return rows[..., list(numerator)].sum(axis=-1), rows[..., list(denominator)].sum(axis=-1)


def mean_score(rows: np.ndarray, z: float = Z95):
    """Mean score per row with a normal interval (NaN below two scores)."""
    n = rows[..., SCORED]
    mean = safe_ratio(rows[..., SCORE_SUM], n)
    var = safe_ratio(rows[..., SCORE_SQ] - n * np.nan_to_num(mean) ** 2, n - 1)
    half = z * np.sqrt(np.clip(np.nan_to_num(var), 0, None) / np.where(n > 0, n, 1))
    half = np.where(n > 1, half, np.nan)
    return mean, mean - half, mean + half


def group_rates(rows: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """metric -> (value, lower, upper), each an array over rows.

    >>> import numpy as np
    >>> from monitor.counts import N_CELLS, N, POS
    >>> rows = np.zeros((1, N_CELLS)); rows[0, N], rows[0, POS] = 10, 8
    >>> value, lower, upper = group_rates(rows)["selection_rate"]
    >>> float(value[0]), round(float(lower[0]), 4)
    (0.8, 0.4902)
    """
    out = {}
    for metric in PROPORTIONS:
        successes, trials = proportion(rows, metric)
        lower, upper = wilson_interval(successes, trials)
        out[metric] = (safe_ratio(successes, trials), lower, upper)
    out["mean_score"] = mean_score(rows)
    return out
