"""The shared shape of the per-group statistics of generations: a table of sums per group, updated,
reverted (an event leaving a window) and merged by adding rows.

Each statistic is River's shape (``update`` / ``revert`` / ``get``) over a batch of events at once:
``codes`` are the events' group codes (-1: not counted), ``values`` one value per event. Keeping
sums, not events, is what makes a worker's table add to another's and a window subtract its leavers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GroupStatistic"]


class GroupStatistic:
    """Base: ``table`` is (groups, ``width``) of float sums; subclasses say what one event adds."""

    width = 1

    def __init__(self) -> None:
        self.table = np.zeros((0, self.width))

    def _cells(self, values: np.ndarray) -> list[tuple[np.ndarray | int, np.ndarray | None]]:
        """(column, weight) pairs: each event adds its weight (None: 1) to its group's column."""
        raise NotImplementedError

    def rows(self, n_groups: int) -> np.ndarray:
        """The table grown (with zeros) to at least ``n_groups`` rows, cut to exactly that many."""
        if self.table.shape[0] < n_groups:
            grown = np.zeros((n_groups, self.width))
            grown[: self.table.shape[0]] = self.table
            self.table = grown
        return self.table[:n_groups]

    def _add(self, codes: np.ndarray, values: np.ndarray, sign: float) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        keep = codes >= 0
        if not keep.any():
            return
        codes, values = codes[keep], np.asarray(values)[keep]
        table = self.rows(max(int(codes.max()) + 1, self.table.shape[0]))
        flat = table.reshape(-1)  # a view: the table itself is updated
        for column, weight in self._cells(values):
            weights = None if weight is None else sign * weight
            sums = np.bincount(codes * self.width + column, weights=weights, minlength=flat.size)
            flat += sums if weight is not None else sign * sums

    def update(self, codes: np.ndarray, values: np.ndarray) -> GroupStatistic:
        self._add(codes, values, 1.0)
        return self

    def revert(self, codes: np.ndarray, values: np.ndarray) -> GroupStatistic:
        """Take back events given to ``update`` earlier (they left the window)."""
        self._add(codes, values, -1.0)
        return self

    def merge(self, other: GroupStatistic) -> GroupStatistic:
        """Add ``other``'s sums (another worker's, same group codes) into this one; returns self."""
        self.rows(other.table.shape[0])[: other.table.shape[0]] += other.table
        return self
