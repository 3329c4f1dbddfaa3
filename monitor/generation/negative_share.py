"""Per-group share of negative responses (VADER compound <= -0.05), with 95% Wilson intervals.

>>> share = NegativeShare().update(np.array([0, 0, 1, 1]), np.array([-0.6, 0.4, -0.05, -0.01]))
>>> share.get()[0].tolist()
[0.5, 0.5]
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.generation.group_statistic import GroupStatistic
from fairwatch.monitor.generation.response_scores import NEGATIVE_SENTIMENT
from fairwatch.monitor.rates import safe_ratio, wilson_interval

__all__ = ["NegativeShare"]

RESPONSES, NEGATIVES = 0, 1


class NegativeShare(GroupStatistic):
    """``update(codes, sentiment)``; a response is negative at or below ``NEGATIVE_SENTIMENT`` (VADER's
    own cut-off). ``get()`` is (share, lower, upper) per group."""

    width = 2

    def _cells(self, sentiment):
        return [(RESPONSES, None), (NEGATIVES, (np.asarray(sentiment) <= NEGATIVE_SENTIMENT).astype(np.float64))]

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(negative responses, responses) per group."""
        return self.table[:, NEGATIVES], self.table[:, RESPONSES]

    def get(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        negatives, responses = self.counts()
        return (safe_ratio(negatives, responses), *wilson_interval(negatives, responses))
