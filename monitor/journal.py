"""A columnar ring buffer of recent predictions, addressed by sequence number.

It lets a late label find its prediction (groups, prediction, score) and lets
sliding windows subtract the events that leave them. Its capacity bounds the
memory (about 30 bytes per event and attribute-code column) and therefore
how late a label may arrive and how large a time window may grow.
"""

from __future__ import annotations

import numpy as np

from fairwatch.monitor.counts import NO_LABEL

_FIRST_ALLOCATION = 4096


class Journal:
    """Events ``[oldest_seq, next_seq)`` are held; older ones were overwritten.

    >>> j = Journal(capacity=4)
    >>> dropped = j.append(["a", "b", "c"], {"sex": np.array([0, 1, 0])},
    ...                    np.array([1, 0, 1]), np.array([-1, -1, 1]),
    ...                    np.array([.5, .5, .5]), np.array([1., 2., 3.]))
    >>> dropped, j.oldest_seq, j.next_seq
    ([], 0, 3)
    >>> j.append(["d", "e"], {"sex": np.array([1, 1])}, np.array([0, 0]), np.array([-1, -1]),
    ...          np.array([.1, .1]), np.array([4., 5.])), j.oldest_seq
    (['a'], 1)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("journal capacity must be positive")
        self.capacity = capacity
        self.next_seq = 0
        self._allocated = 0
        self.codes: dict[str, np.ndarray] = {}
        self.prediction = np.zeros(0, dtype=np.int64)
        self.label = np.zeros(0, dtype=np.int64)
        self.score = np.zeros(0)
        self.ts = np.zeros(0)
        self.event_ids: list[str | None] = []

    @property
    def oldest_seq(self) -> int:
        return max(0, self.next_seq - self.capacity)

    def holds(self, seqs: np.ndarray) -> np.ndarray:
        return (seqs >= self.oldest_seq) & (seqs < self.next_seq)

    def positions(self, seqs: np.ndarray | range) -> np.ndarray:
        # Before the buffer first wraps every seq is below the allocation, so
        # growing the allocation never moves an event.
        return np.asarray(seqs, dtype=np.int64) % max(self._allocated, 1)

    def add_attribute(self, attribute: str) -> None:
        """Start a code column; events already held are not counted for it (-1)."""
        self.codes[attribute] = np.full(self._allocated, -1, dtype=np.int64)

    def _reserve(self, n_new: int) -> None:
        needed = self.next_seq + n_new
        if needed <= self._allocated or self._allocated == self.capacity:
            return
        size = min(self.capacity, max(needed, 2 * self._allocated, _FIRST_ALLOCATION))
        old = self._allocated

        def grow(column: np.ndarray, fill) -> np.ndarray:
            grown = np.full(size, fill, dtype=column.dtype)
            grown[:old] = column
            return grown

        self.codes = {a: grow(c, -1) for a, c in self.codes.items()}
        self.prediction = grow(self.prediction, 0)
        self.label = grow(self.label, NO_LABEL)
        self.score = grow(self.score, np.nan)
        self.ts = grow(self.ts, np.nan)
        self.event_ids.extend([None] * (size - old))
        self._allocated = size

    def append(
        self,
        event_ids: list[str],
        codes: dict[str, np.ndarray],
        prediction: np.ndarray,
        label: np.ndarray,
        score: np.ndarray,
        ts: np.ndarray,
    ) -> list[str]:
        """Store a batch; return the event ids it overwrote (no longer held)."""
        n = len(event_ids)
        if n > self.capacity:
            raise ValueError(f"batch of {n} events exceeds the journal capacity {self.capacity}")
        self._reserve(n)
        first = self.next_seq
        pos = self.positions(range(first, first + n))
        dropped: list[str] = []
        if first + n > self.capacity:
            overwritten = min(n, first + n - self.capacity)
            ids = self.event_ids
            dropped = [ids[p] for p in pos[n - overwritten :].tolist() if ids[p] is not None]
        for attribute, column in self.codes.items():
            column[pos] = codes.get(attribute, -1)
        self.prediction[pos] = prediction
        self.label[pos] = label
        self.score[pos] = score
        self.ts[pos] = ts
        ids = self.event_ids
        for p, event_id in zip(pos.tolist(), event_ids):
            ids[p] = event_id
        self.next_seq = first + n
        return dropped

    def columns(self, seqs: np.ndarray | range):
        """(positions, prediction, label, score, ts) of held events."""
        pos = self.positions(seqs)
        return pos, self.prediction[pos], self.label[pos], self.score[pos], self.ts[pos]
