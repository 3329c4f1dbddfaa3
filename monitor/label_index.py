"""The join of outcomes to predictions inside the core: which held prediction an outcome labels.

One :class:`LabelIndex` per pipeline holds, per event id, where its
prediction sits (the model's monitor and journal sequence number): the dedup
store and the join index at once. Besides it: predictions of the same event
by further models (a shadow model), derived outputs of a prediction (its
debiased scores), outcomes that came before their prediction (``early``),
and outcomes counted from a prediction copy that ``fairwatch join``
forwarded. :meth:`LabelIndex.apply_outcomes` applies a batch of outcomes to
the monitors that hold their predictions.

(Not to be confused with ``fairwatch.consumers.outcome_join``, the Kafka
join that forwards prediction copies.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from fairwatch.monitor.counts import NO_LABEL
from fairwatch.monitor.events import PredictionCopy

if TYPE_CHECKING:
    from fairwatch.monitor.model_monitor import ModelMonitor

Entry = tuple["ModelMonitor", int]  # (the model's monitor, journal sequence number)


def _repeat(first: int, label: int) -> str:
    """Outcome status of a second label for one event: the same label again, or another."""
    return "duplicate" if first == label else "conflicting"


def remember(store: dict, key, value, capacity: int) -> bool:
    """Insert into an oldest-first dict bounded to ``capacity``; True if the oldest entry had to go."""
    store[key] = value
    if len(store) > capacity:
        del store[next(iter(store))]
        return True
    return False


class LabelIndex:
    """Event id -> held predictions, and the outcomes waiting for (or counted without) one.

    ``early_capacity`` bounds the early outcomes and the copies' dedup store (oldest dropped first).
    """

    def __init__(self, early_capacity: int) -> None:
        self.early_capacity = early_capacity
        # event_id -> entry of the first held prediction of the event.
        self.index: dict[str, Entry] = {}
        # event_id -> entries of predictions of the same event by further models: each is counted for its
        # own model, and the event's outcome labels them all.
        self.shared: dict[str, list[Entry]] = {}
        # event_id -> entries of derived outputs (e.g. the debiased scores of the same prediction), which
        # share its outcome but not its stats.
        self.derived: dict[str, list[Entry]] = {}
        self.early: dict[str, int] = {}  # event_id -> label, oldest first
        # event_id -> label of outcomes counted from their prediction copy (dedup; oldest first, bounded
        # like early: a copy redelivered after that many newer ones would count again).
        self.from_copy: dict[str, int] = {}

    # -- reading -----------------------------------------------------------------------
    def __contains__(self, event_id: str) -> bool:
        """Whether a prediction of ``event_id`` is held (by any model)."""
        return event_id in self.index

    def held_ids(self):
        """The event ids of held predictions (a live view: ``in`` is a dict lookup)."""
        return self.index.keys()

    def holds(self, event_id: str, model: str) -> bool:
        """Whether a prediction of ``event_id`` by ``model`` is held."""
        entry = self.index.get(event_id)
        return entry is not None and (entry[0].model == model or self.holds_further(event_id, model))

    def holds_further(self, event_id: str, model: str) -> bool:
        """Whether a prediction of ``event_id`` by ``model`` is held besides the index's first one."""
        return any(m.model == model for m, _ in self.shared.get(event_id, ()))

    def pending_outcomes(self) -> int:
        """Outcomes waiting for their prediction."""
        return len(self.early)

    # -- writing -----------------------------------------------------------------------
    def add_further(self, event_id: str, entry: Entry) -> None:
        """A prediction of an event already held, by another model (e.g. a shadow model)."""
        self.shared.setdefault(event_id, []).append(entry)

    def add_derived(self, event_id: str, entry: Entry) -> None:
        """A derived output of the held prediction of ``event_id``."""
        self.derived.setdefault(event_id, []).append(entry)

    def forget(self, event_ids: list[str], monitor: ModelMonitor) -> None:
        """Drop the entries of ``monitor``'s events that its journal no longer holds."""
        if not monitor.derived:
            index, shared = self.index, self.shared
            for event_id in event_ids:
                entry = index.get(event_id)
                others = shared.get(event_id) if shared else None
                if others is None:
                    if entry is not None and entry[0] is monitor:
                        del index[event_id]
                    continue
                if entry is not None and entry[0] is monitor:  # the next model's entry takes its place
                    index[event_id] = others.pop(0)
                else:
                    others[:] = [e for e in others if e[0] is not monitor]
                if not others:
                    del shared[event_id]
            return
        derived = self.derived
        for event_id in event_ids:
            entries = derived.get(event_id)
            if entries:
                entries[:] = [e for e in entries if e[0] is not monitor]
                if not entries:
                    del derived[event_id]

    def apply_outcomes(self, outcomes: list[tuple[str, int, float, PredictionCopy | None]], counts: Counter,
                       monitor_for: Callable[[str], ModelMonitor]) -> None:
        """Label the held predictions of ``outcomes`` (event id, label, outcome time, prediction copy or None),
        count the rest from their copies or keep them as early; ``counts``: outcome status -> count.
        ``monitor_for(model)``: the monitor of a model that a copy names."""
        early = self.early
        index = self.index
        # Outcomes of held predictions, per monitor: seq -> label, first one wins; and their outcome times in
        # the same order (derived outputs' too, to keep the order; only their sources use them).
        found: dict[int, tuple[ModelMonitor, dict[int, int], list[float]]] = {}

        def take(monitor: ModelMonitor, seq: int, label: int, outcome_ts: float) -> bool:
            """Record the first outcome of ``monitor``'s prediction ``seq``; False if it already has one."""
            group = found.get(id(monitor))
            if group is None:
                group = found[id(monitor)] = (monitor, {}, [])
            if seq in group[1]:
                return False
            group[1][seq] = label
            group[2].append(outcome_ts)
            return True

        unheld: dict[str, list[tuple[PredictionCopy, int, float]]] = {}  # model -> (copy, label, outcome time)
        shared_entries: set[tuple[int, int]] = set()  # labels of further models' predictions: not counted again
        for event_id, label, outcome_ts, copy in outcomes:
            entry = index.get(event_id)
            if entry is None and copy is not None:
                # From `fairwatch join`, which forwarded the prediction earlier on the same partition:
                # this worker has read past it, so it is not coming here. Count the label from the copy.
                if event_id in self.from_copy:
                    counts[_repeat(self.from_copy[event_id], label)] += 1
                    continue
                remember(self.from_copy, event_id, label, self.early_capacity)
                unheld.setdefault(copy.model, []).append((copy, label, outcome_ts))
                continue
            if entry is None:
                if event_id in early:
                    counts[_repeat(early[event_id], label)] += 1
                    continue
                counts["early"] += 1
                if remember(early, event_id, label, self.early_capacity):
                    counts["orphaned"] += 1
                continue
            monitor, seq = entry
            if not take(monitor, seq, label, outcome_ts):
                counts[_repeat(found[id(monitor)][1][seq], label)] += 1
                continue
            for other, other_seq in self.shared.get(event_id, ()):
                if take(other, other_seq, label, outcome_ts):
                    shared_entries.add((id(other), other_seq))
            for derived, derived_seq in self.derived.get(event_id, ()):
                take(derived, derived_seq, label, outcome_ts)
        for model, copies in unheld.items():
            prediction = np.array([c.prediction for c, _, _ in copies], dtype=np.int64)
            labels = np.array([label for _, label, _ in copies], dtype=np.int64)
            score = np.array([c.score for c, _, _ in copies], dtype=np.float64)  # None -> NaN
            delay = np.array([t - c.ts for c, _, t in copies])
            monitor_for(model).label_unheld(prediction, labels, [c.groups for c, _, _ in copies], score, delay)
            counts["joined_from_copy"] += len(copies)
        for monitor, pending, times in found.values():
            seqs = np.fromiter(pending, dtype=np.int64, count=len(pending))
            labels = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
            known = monitor.labels_known(seqs)
            new = known == NO_LABEL
            if not monitor.derived:  # derived outputs echo their source's counts
                counted = np.ones(seqs.size, dtype=bool)
                if shared_entries:  # an outcome is counted once, for the first model that held its event
                    counted = np.array([(id(monitor), s) not in shared_entries for s in seqs.tolist()])
                same = int((counted & ~new & (known == labels)).sum())
                counts["joined"] += int((counted & new).sum())
                counts["duplicate"] += same
                counts["conflicting"] += int((counted & ~new).sum()) - same
            if not new.any():
                continue
            arrival = None if monitor.derived else np.array(times)[new]  # derived outputs: no outcome times
            monitor.label_held(seqs[new], labels[new], arrival)


__all__ = ["LabelIndex", "remember"]
