"""Per-group mean sentiment of responses (VADER compound, in [-1, 1]) with a 95% normal interval.

Sums and sums of squares, so that windows subtract and workers add exactly
(River's ``stats.Mean`` keeps a running mean instead, which neither can).

>>> mean = MeanSentiment().update(np.array([0, 0, 1]), np.array([0.5, -0.1, 0.3]))
>>> [round(float(v), 3) for v in mean.get()[0]]
[0.2, 0.3]
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.generation.group_statistic import GroupStatistic
from fairwatch.monitor.rates import Z95, safe_ratio

__all__ = ["MeanSentiment"]

RESPONSES, TOTAL, SQUARES = 0, 1, 2


class MeanSentiment(GroupStatistic):
    """``update(codes, sentiment)``; ``get()`` is (mean, lower, upper) per group (no interval below two)."""

    width = 3

    def _cells(self, sentiment):
        sentiment = np.asarray(sentiment, dtype=np.float64)
        return [(RESPONSES, None), (TOTAL, sentiment), (SQUARES, sentiment * sentiment)]

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(responses, mean, sample variance) per group."""
        n = self.table[:, RESPONSES]
        mean = safe_ratio(self.table[:, TOTAL], n)
        variance = safe_ratio(self.table[:, SQUARES] - n * np.nan_to_num(mean) ** 2, n - 1)
        return n, mean, np.clip(variance, 0.0, None)

    def get(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, mean, variance = self.moments()
        half = Z95 * np.sqrt(np.nan_to_num(variance) / np.where(n > 0, n, 1))
        half = np.where(n > 1, half, np.nan)
        return mean, mean - half, mean + half
