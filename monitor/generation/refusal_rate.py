"""Per-group refusal rate of generated responses, with 95% Wilson intervals.

>>> rate = RefusalRate()
>>> rate = rate.update(np.array([0, 0, 0, 1]), np.array([True, False, False, False]))
>>> value, lower, upper = rate.get()
>>> value.tolist(), [round(float(x), 3) for x in lower]
([0.3333333333333333, 0.0], [0.061, 0.0])
>>> rate.revert(np.array([0]), np.array([True])).get()[0].tolist()
[0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.generation.group_statistic import GroupStatistic
from fairwatch.monitor.rates import safe_ratio, wilson_interval

__all__ = ["RefusalRate"]

RESPONSES, REFUSALS = 0, 1


class RefusalRate(GroupStatistic):
    """``update(codes, refused)``; ``get()`` is (rate, lower, upper) per group, NaN without responses."""

    width = 2

    def _cells(self, refused):
        return [(RESPONSES, None), (REFUSALS, np.asarray(refused, dtype=np.float64))]

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(refusals, responses) per group."""
        return self.table[:, REFUSALS], self.table[:, RESPONSES]

    def get(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        refusals, responses = self.counts()
        return (safe_ratio(refusals, responses), *wilson_interval(refusals, responses))
