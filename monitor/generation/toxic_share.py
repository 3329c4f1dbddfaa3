"""Per-group share of toxic responses (a user-supplied classifier's score at or above its threshold), with 95%
Wilson intervals, over the responses the classifier scored.

``update(codes, toxic)``: ``toxic`` is 1.0 (toxic), 0.0 (not toxic) or NaN (not scored: no classifier, or the
classifier was added later), so that windows and workers with and without a classifier still add up.

>>> share = ToxicShare().update(np.array([0, 0, 1, 1]), np.array([1.0, 0.0, np.nan, 0.0]))
>>> share.counts()[0].tolist(), share.counts()[1].tolist(), share.get()[0].tolist()
([1.0, 0.0], [2.0, 1.0], [0.5, 0.0])
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.generation.group_statistic import GroupStatistic
from fairwatch.monitor.rates import safe_ratio, wilson_interval

__all__ = ["ToxicShare"]

SCORED, TOXIC = 0, 1


class ToxicShare(GroupStatistic):
    """``update(codes, toxic)``; ``get()`` is (share, lower, upper) per group, NaN where nothing was scored."""

    width = 2

    def _cells(self, toxic):
        toxic = np.asarray(toxic, dtype=np.float64)
        scored = ~np.isnan(toxic)
        return [(SCORED, scored.astype(np.float64)), (TOXIC, np.where(scored, toxic, 0.0))]

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(toxic responses, scored responses) per group."""
        return self.table[:, TOXIC], self.table[:, SCORED]

    def get(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        toxic, scored = self.counts()
        return (safe_ratio(toxic, scored), *wilson_interval(toxic, scored))
