"""The fairness state of one model: group codes, the journal, every window.

``GroupMetrics.add`` takes a batch of predictions (as columns) and updates since-start and windowed count rows per
(attribute, group); ``GroupMetrics.label`` applies labels that arrive later.
Rates and gaps are read from the rows by ``monitor.rates``/``monitor.gaps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.counts import NO_LABEL, contributions
from monitor.journal import Journal
from monitor.windows import Window, make_windows

UNKNOWN_GROUP = "unknown"
INTERSECTION_SEPARATOR = "&"


class GroupIndex(dict):
    """Group value -> dense code, a new code on first sight.

    >>> index = GroupIndex()
    >>> [index[v] for v in ["F", "M", "F"]], index.values
    ([0, 1, 0], ['F', 'M'])
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: list[str] = []

    def __missing__(self, value: str) -> int:
        code = self[value] = len(self.values)
        self.values.append(value)
        return code


@dataclass(frozen=True)
class WindowSnapshot:
    """Copies of one window's count rows, with the group names of each row."""

    window: str
    rows: dict[str, np.ndarray]  # attribute -> (n_groups, N_CELLS)
    groups: dict[str, list[str]]  # attribute -> group names, row order


class GroupMetrics:
    """Count rows per (attribute, group) over since-start and sliding windows.

    ``attributes``: names to track, or None to track every attribute seen.
    ``intersections``: tuples of attributes tracked jointly, named ``a&b``.
    """

    def __init__(
        self,
        model: str,
        *,
        attributes: list[str] | None = None,
        intersections: list[tuple[str, ...]] = (),
        count_windows: list[int] = (),
        time_windows_seconds: list[float] = (),
        journal_capacity: int = 1_000_000,
    ) -> None:
        for size in count_windows:
            if size > journal_capacity:
                raise ValueError(f"count window {size} exceeds the journal capacity {journal_capacity}")
        self.model = model
        self.journal = Journal(journal_capacity)
        self.windows: list[Window] = make_windows(list(count_windows), list(time_windows_seconds))
        self.components: dict[str, tuple[str, ...]] = {}
        self.index: dict[str, GroupIndex] = {}
        self._discover = attributes is None
        for attribute in attributes or ():
            self._add_attribute(attribute, (attribute,))
        for parts in intersections:
            self._add_attribute(INTERSECTION_SEPARATOR.join(parts), tuple(parts))

    @property
    def since_start(self) -> Window:
        return self.windows[0]

    def _add_attribute(self, name: str, parts: tuple[str, ...]) -> None:
        if name in self.components:
            return
        self.components[name] = parts
        self.index[name] = GroupIndex()
        self.journal.add_attribute(name)

    def _codes(self, groups: list[dict[str, str]]) -> dict[str, np.ndarray]:
        if self._discover:
            for name in sorted(set().union(*groups) - self.components.keys()):
                self._add_attribute(name, (name,))
        codes = {}
        for name, parts in self.components.items():
            index = self.index[name]
            if len(parts) == 1:
                (part,) = parts
                values = [index[g.get(part, UNKNOWN_GROUP)] for g in groups]
            else:
                values = [
                    index[INTERSECTION_SEPARATOR.join([g.get(p, UNKNOWN_GROUP) for p in parts])]
                    for g in groups
                ]
            codes[name] = np.array(values, dtype=np.int64)
        return codes

    def add(
        self,
        event_ids: list[str],
        predictions: np.ndarray,
        labels: np.ndarray,  # NO_LABEL where unknown
        scores: np.ndarray,  # NaN where absent
        timestamps: np.ndarray,
        groups: list[dict[str, str]],
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Append a batch; return its group codes per attribute and the ids of
        events the journal dropped to make room (they can no longer be labeled)."""
        n = len(event_ids)
        codes = self._codes(groups)
        prediction = np.asarray(predictions, dtype=np.int64)
        label = np.asarray(labels, dtype=np.int64)
        score = np.asarray(scores, dtype=np.float64)
        ts = np.asarray(timestamps, dtype=np.float64)
        first = self.journal.next_seq
        for window in self.windows:
            window.advance(self.journal, n, float(ts.max()))
        dropped = self.journal.append(event_ids, codes, prediction, label, score, ts)
        seqs = np.arange(first, first + n)
        masks = [window.members(seqs, ts) for window in self.windows]
        masks = [None if m is None or m.all() else m for m in masks]
        for name, column in codes.items():
            n_groups = len(self.index[name].values)
            whole = contributions(column, prediction, label, score, n_groups)
            for window, mask in zip(self.windows, masks):
                if mask is None:
                    window.add(name, whole)
                elif mask.any():
                    window.add(
                        name, contributions(column[mask], prediction[mask], label[mask], score[mask], n_groups)
                    )
        return codes, dropped

    def label(self, seqs: np.ndarray, labels: np.ndarray) -> None:
        """Apply labels to held, still unlabeled events."""
        if seqs.size == 0:
            return
        journal = self.journal
        pos, prediction, old_label, _, ts = journal.columns(seqs)
        assert (old_label == NO_LABEL).all(), "label() is for unlabeled events only"
        journal.label[pos] = labels
        masks = [window.members(seqs, ts) for window in self.windows]
        masks = [None if m is None or m.all() else m for m in masks]
        no_score = np.zeros(seqs.size)
        for name, column in journal.codes.items():
            codes = column[pos]
            n_groups = len(self.index[name].values)
            whole = contributions(codes, prediction, labels, no_score, n_groups, with_predictions=False)
            for window, mask in zip(self.windows, masks):
                if mask is None:
                    window.add(name, whole)
                elif mask.any():
                    window.add(
                        name,
                        contributions(
                            codes[mask], prediction[mask], labels[mask], no_score[mask], n_groups,
                            with_predictions=False,
                        ),
                    )

    def snapshot(self) -> list[WindowSnapshot]:
        """Consistent copies of every window's rows (take under the pipeline lock)."""
        groups = {name: list(index.values) for name, index in self.index.items()}
        return [
            WindowSnapshot(
                window.name,
                {name: window.rows(name, len(groups[name])).copy() for name in self.components},
                groups,
            )
            for window in self.windows
        ]
