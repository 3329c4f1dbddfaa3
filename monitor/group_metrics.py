"""The fairness state of one model: group codes, the journal, every window.

``GroupMetrics.add`` takes a batch of predictions (as columns) and updates since-start and windowed count rows per
(attribute, group); ``GroupMetrics.label`` applies labels that arrive later.
Rates and gaps are read from the rows by ``monitor.rates``/``monitor.gaps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from fairwatch.monitor.counts import NO_LABEL, contributions
from fairwatch.monitor.journal import Journal
from fairwatch.monitor.metric_names import OTHER_GROUP  # where group values past the capacity are counted
from fairwatch.monitor.windows import Window, make_windows

UNKNOWN_GROUP = "unknown"
INTERSECTION_SEPARATOR = "&"


class GroupIndex(dict):
    """Group value -> dense code, a new code on first sight; past ``capacity``
    distinct values, new ones share the code of ``other`` (and are not remembered,
    so memory stays bounded whatever the stream sends).

    >>> index = GroupIndex(capacity=3)
    >>> [index[v] for v in ["F", "M", "F", "X", "Y"]], index.values, index.folded
    ([0, 1, 0, 2, 2], ['F', 'M', 'other'], 2)
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        super().__init__()
        self.values: list[str] = []
        self.capacity = max(capacity, 2)
        self.folded = 0  # occurrences of values counted as "other" for want of room

    def __missing__(self, value: str) -> int:
        if len(self.values) < self.capacity - 1 or value == OTHER_GROUP:
            code = self[value] = len(self.values)
            self.values.append(value)
            return code
        self.folded += 1
        return self[OTHER_GROUP] if OTHER_GROUP in self else self.__missing__(OTHER_GROUP)


class _CombinationCodes(dict):
    """Group values of the single attributes, as one event carries them -> a row of ``table``: their codes.

    Events repeat a few combinations of group values, so one dict lookup per event (in C, through ``map``)
    replaces a lookup per attribute. Rows are distinct code tuples. A combination with a value folded into
    ``other`` is not kept as a key: the index counts each folded occurrence. Bounded: ``reset_if_full``
    empties it between batches past ``capacity`` rows.

    >>> sex, race = GroupIndex(), GroupIndex()
    >>> codes = _CombinationCodes(("sex", "race"), [sex, race])
    >>> rows = list(map(codes.__getitem__, [("F", "A"), ("M", "A"), ("F", "A")]))
    >>> rows, codes.columns()[:, rows].tolist()
    ([0, 1, 0], [[0, 1, 0], [0, 0, 0]])
    """

    def __init__(self, parts: tuple[str, ...], indexes: list[GroupIndex], capacity: int = 1 << 16) -> None:
        super().__init__()
        self.parts, self.indexes, self.capacity = parts, indexes, capacity
        self.key = itemgetter(*parts)  # one attribute: the value itself, not a 1-tuple
        self.rows: dict[tuple[int, ...], int] = {}
        self._columns: np.ndarray | None = None
        self.intersections: dict[str, np.ndarray] = {}  # intersection -> its code per row, rows so far

    def __missing__(self, key) -> int:
        values = key if len(self.parts) > 1 else (key,)
        folded = self.folded()
        codes = tuple(index[value] for index, value in zip(self.indexes, values))
        row = self.rows.get(codes)
        if row is None:
            row = self.rows[codes] = len(self.rows)
            self._columns = None
        if self.folded() == folded:
            self[key] = row
        return row

    def folded(self) -> int:
        return sum(index.folded for index in self.indexes)

    def columns(self) -> np.ndarray:
        """(attributes, rows) codes."""
        if self._columns is None:
            self._columns = np.array(list(self.rows), dtype=np.int64).reshape(len(self.rows), len(self.parts)).T.copy()
        return self._columns

    def reset_if_full(self) -> None:
        if len(self.rows) > self.capacity or len(self) > self.capacity:
            self.clear()
            self.rows.clear()
            self._columns = None
            self.intersections.clear()


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
        search_intersections: list[tuple[str, ...]] = (),
        max_group_values: int = 1_000,
        max_attributes: int = 8,
    ) -> None:
        """``search_intersections`` are tracked for the worst-subgroup search
        only: they are listed in ``search_only`` and kept out of reports.
        ``max_group_values`` bounds the distinct values held per attribute (the
        rest count as ``other``); ``max_attributes`` bounds the attributes
        discovered when ``attributes`` is None (later names are not tracked)."""
        for size in count_windows:
            if size > journal_capacity:
                raise ValueError(f"count window {size} exceeds the journal capacity {journal_capacity}")
        self.model = model
        self.journal = Journal(journal_capacity)
        self.windows: list[Window] = make_windows(list(count_windows), list(time_windows_seconds))
        self.components: dict[str, tuple[str, ...]] = {}
        self.index: dict[str, GroupIndex] = {}
        self.max_group_values = max_group_values
        self.max_attributes = max_attributes
        self.untracked_attributes = 0  # attribute names seen past max_attributes (per batch they appear in)
        self._discover = attributes is None
        for attribute in attributes or ():
            self._add_attribute(attribute, (attribute,))
        self.search_only: set[str] = set()
        for parts in [*intersections, *search_intersections]:
            for part in parts:
                self._add_attribute(part, (part,))
        for parts in intersections:
            self._add_attribute(INTERSECTION_SEPARATOR.join(parts), tuple(parts))
        for parts in search_intersections:
            name = INTERSECTION_SEPARATOR.join(parts)
            if name not in self.components:
                self.search_only.add(name)
                self._add_attribute(name, tuple(parts))
        # Per intersection: packed component codes -> dense code.
        self._packed: dict[str, dict[int, int]] = {}

    _combinations: _CombinationCodes | None = None  # built on first use; not state (rebuilt from the index)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_combinations", None)
        return state

    @property
    def reported(self) -> list[str]:
        """Attributes that reports and /metrics show (search-only ones left out)."""
        return [a for a in self.components if a not in self.search_only]

    @property
    def since_start(self) -> Window:
        return self.windows[0]

    def _add_attribute(self, name: str, parts: tuple[str, ...]) -> None:
        if name in self.components:
            return
        self.components[name] = parts
        self.index[name] = GroupIndex(self.max_group_values)
        self.journal.add_attribute(name)

    @property
    def folded_group_values(self) -> int:
        """Occurrences of group values counted as ``other`` because their attribute was full."""
        return sum(index.folded for index in self.index.values())

    def group_codes(self, groups: list[dict[str, str]]) -> dict[str, np.ndarray]:
        """Codes per attribute of events counted elsewhere (generations): same names, ``other`` and
        discovered attributes as this model's predictions."""
        return self._codes(groups)

    def _codes(self, groups: list[dict[str, str]]) -> dict[str, np.ndarray]:
        if self._discover:
            new = set().union(*groups) - self.components.keys()
            if new:
                room = max(self.max_attributes - len(self.components), 0)
                for name in sorted(new)[:room]:
                    self._add_attribute(name, (name,))
                self.untracked_attributes += max(len(new) - room, 0)
        codes, rows = self._single_codes(groups)
        for name, parts in self.components.items():
            if len(parts) > 1:
                if rows is not None:  # intersections are of single attributes, all in the combination rows
                    codes[name] = self._row_intersections(name, parts)[rows]
                else:
                    codes[name] = self._intersection_codes(name, parts, codes)
        return codes

    def _single_codes(self, groups: list[dict[str, str]]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Codes of the single attributes, and each event's row of the combination table (None where an
        event lacked an attribute and the codes were found value by value)."""
        names = tuple(name for name, parts in self.components.items() if len(parts) == 1)
        if not names:
            return {}, None
        combinations = self._combinations
        if combinations is None or combinations.parts != names:
            combinations = self._combinations = _CombinationCodes(names, [self.index[name] for name in names])
        combinations.reset_if_full()
        folded = [index.folded for index in combinations.indexes]
        try:
            rows = np.fromiter(map(combinations.__getitem__, map(combinations.key, groups)), np.int64, len(groups))
        except KeyError:  # an event without one of the attributes: its code is ``unknown``, value by value
            for index, count in zip(combinations.indexes, folded):  # those before it are counted again below
                index.folded = count
        else:
            table = combinations.columns()[:, rows]
            return {name: table[i] for i, name in enumerate(names)}, rows
        codes = {}
        for name in names:
            index = self.index[name]
            codes[name] = np.array([index[g.get(name, UNKNOWN_GROUP)] for g in groups], dtype=np.int64)
        return codes, None

    def _row_intersections(self, name: str, parts: tuple[str, ...]) -> np.ndarray:
        """The intersection's code for every row of the combination table: events repeat a few
        combinations, so each is named once, not once per batch."""
        combinations = self._combinations
        known = combinations.intersections.get(name)
        if known is None or known.size < len(combinations.rows):
            table = combinations.columns()
            done = 0 if known is None else known.size
            at = [combinations.parts.index(part) for part in parts]
            new = self._intersection_codes(name, parts, {part: table[i, done:] for part, i in zip(parts, at)})
            known = combinations.intersections[name] = new if known is None else np.concatenate([known, new])
        return known

    def _intersection_codes(self, name: str, parts: tuple[str, ...], codes: dict[str, np.ndarray]) -> np.ndarray:
        # Pack the component codes into one integer per event and name only the
        # distinct packs: string joins per event would cost more than all the rest. 20 bits per part:
        # the config admits at most 3 parts of at most 1,000,000 values (MAX_INTERSECTION_ATTRIBUTES).
        packed = np.zeros_like(codes[parts[0]])
        for part in parts:
            packed = packed * (1 << 20) + codes[part]
        distinct, inverse = np.unique(packed, return_inverse=True)
        known = self._packed.setdefault(name, {})
        index = self.index[name]
        dense = np.empty(distinct.size, dtype=np.int64)
        for i, key in enumerate(distinct.tolist()):
            code = known.get(key)
            if code is None:
                values, rest = [], key
                for part in reversed(parts):
                    rest, component = divmod(rest, 1 << 20)
                    values.append(self.index[part].values[component])
                code = known[key] = index[INTERSECTION_SEPARATOR.join(reversed(values))]
            dense[i] = code
        return dense[inverse.reshape(-1)]

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

    def label(self, seqs: np.ndarray, labels: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Apply labels to held, still unlabeled events; return their group codes
        per attribute, predictions, scores and event times (for decisions and
        per-group calibration)."""
        if seqs.size == 0:
            empty = np.zeros(0)
            return {}, empty.astype(np.int64), empty, empty
        journal = self.journal
        pos, prediction, old_label, score, ts = journal.columns(seqs)
        assert (old_label == NO_LABEL).all(), "label() is for unlabeled events only"
        journal.label[pos] = labels
        masks = [window.members(seqs, ts) for window in self.windows]
        masks = [None if m is None or m.all() else m for m in masks]
        no_score = np.zeros(seqs.size)
        labeled_codes = {}
        for name, column in journal.codes.items():
            codes = labeled_codes[name] = column[pos]
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
        return labeled_codes, prediction, score, ts

    def label_unheld(
        self, predictions: np.ndarray, labels: np.ndarray, groups: list[dict[str, str]]
    ) -> dict[str, np.ndarray]:
        """Count the labels of predictions this state does not hold (counted elsewhere, or
        dropped from the journal): label cells of since-start only, as sliding windows
        subtract what leaves them from the journal. Returns the group codes per attribute."""
        codes = self._codes(groups)
        no_score = np.zeros(len(groups))
        for name, column in codes.items():
            self.since_start.add(
                name,
                contributions(column, predictions, labels, no_score, len(self.index[name].values),
                              with_predictions=False),
            )
        return codes

    def snapshot(self) -> list[WindowSnapshot]:
        """Consistent copies of every window's rows (take under the pipeline lock)."""
        groups = {name: list(index.values) for name, index in self.index.items()}
        return [
            WindowSnapshot(
                window.name,
                {name: window.rows(name, len(groups[name])).copy() for name in self.reported},
                groups,
            )
            for window in self.windows
        ]
