"""Drift detection on each group's selection rate and on each attribute's gap (River).

Detectors see block means, not single events: a group's selection rate over
each run of ``group_block_events`` of its own predictions, and the
demographic parity difference over each run of ``block_events`` predictions
of the model (groups with fewer than ``min_block_group_events`` in the block
left out). Blocks keep detector calls off the per-event path while still
giving ADWIN the dozens of points it needs after a change (its bound has a
1/m term, so a few large blocks would never trip it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

GAP_METRIC = "demographic_parity_difference"
GROUP_METRIC = "selection_rate"
RECENT_BLOCKS = 10


@dataclass(frozen=True)
class DriftEvent:
    """A detected change: where, when, and the values before and after."""

    model: str
    attribute: str
    metric: str
    group: str | None  # None for a gap
    event_index: int  # input position of the event that completed the block
    ts: float  # its event time
    before: float  # mean of the block values since the previous change
    after: float  # mean of the last RECENT_BLOCKS block values

    def as_dict(self) -> dict:
        return asdict(self)


def make_detector(kind: str):
    # River imports pandas-backed datasets with its drift package (0.8 s):
    # only pay that when a detector is made, not for every CLI call.
    from river import drift as river_drift

    if kind == "adwin":
        # clock=1: inputs are already block means, test after every one.
        return river_drift.ADWIN(delta=0.002, clock=1)
    if kind == "page_hinkley":
        # River's defaults (delta 0.005, threshold 50) suit raw magnitudes. Block
        # means of rates move by ~0.1 per block at random: a tolerance of 0.02
        # keeps the random walk from reaching 3 while a 0.3 shift gets there in
        # about ten blocks.
        return river_drift.PageHinkley(min_instances=10, delta=0.02, threshold=3.0)
    raise ValueError(f"unknown drift detector {kind!r} (expected adwin or page_hinkley)")


class _Series:
    """One detector, and what it saw since its last change."""

    __slots__ = ("detector", "total", "count", "recent")

    def __init__(self, kind: str) -> None:
        self.detector = make_detector(kind)
        self.total = 0.0  # sum and count of the values since the last change
        self.count = 0
        self.recent: deque[float] = deque(maxlen=RECENT_BLOCKS)

    def update(self, value: float) -> tuple[float, float] | None:
        self.detector.update(value)
        self.total += value
        self.count += 1
        self.recent.append(value)
        if not self.detector.drift_detected:
            return None
        # ADWIN's own estimate right after a cut still mixes in old values, so
        # "after" is the mean of the last few blocks and "before" the mean of
        # everything since the previous change that came before them.
        recent = len(self.recent)
        after = sum(self.recent) / recent
        older = self.count - recent
        before = (self.total - after * recent) / older if older else after
        self.total, self.count = after * recent, recent
        return before, after


class DriftMonitor:
    """Block means of one model's predictions, fed to one detector per series."""

    def __init__(
        self,
        model: str,
        kind: str = "adwin",
        *,
        block_events: int = 500,
        group_block_events: int = 30,
        min_block_group_events: int = 10,
    ) -> None:
        make_detector(kind)  # fail early on a bad name
        self.model = model
        self.kind = kind
        self.block_events = block_events
        self.group_block_events = group_block_events
        self.min_block_group_events = min_block_group_events
        self._series: dict[tuple[str, str, str | None], _Series] = {}
        # Predictions not yet in a full block: per attribute (codes, predictions,
        # positions, times), and per (attribute, group) (predictions, positions, times).
        self._model_carry: dict[str, tuple[np.ndarray, ...]] = {}
        self._group_carry: dict[tuple[str, int], tuple[np.ndarray, ...]] = {}

    def _feed(self, attribute, metric, group, values, positions, times) -> list[DriftEvent]:
        key = (attribute, metric, group)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.kind)
        found = []
        for value, position, ts in zip(values.tolist(), positions.tolist(), times.tolist()):
            change = series.update(value)
            if change is not None:
                found.append(DriftEvent(self.model, attribute, metric, group, position, ts, *change))
        return found

    def update(
        self,
        codes: dict[str, np.ndarray],
        group_names: dict[str, list[str]],
        prediction: np.ndarray,
        positions: np.ndarray,
        timestamps: np.ndarray,
    ) -> list[DriftEvent]:
        """Feed one batch (in input order); return the changes it revealed."""
        found: list[DriftEvent] = []
        for attribute, attribute_codes in codes.items():
            names = group_names[attribute]
            counted = attribute_codes >= 0
            c, p, pos, ts = (a[counted] for a in (attribute_codes, prediction, positions, timestamps))
            found += self._gap_blocks(attribute, c, p, pos, ts, len(names))
            found += self._group_blocks(attribute, names, c, p, pos, ts)
        return found

    def _gap_blocks(self, attribute, c, p, pos, ts, n_groups) -> list[DriftEvent]:
        carry = self._model_carry.get(attribute)
        if carry is not None:
            c, p, pos, ts = (np.concatenate([a, b]) for a, b in zip(carry, (c, p, pos, ts)))
        size = self.block_events
        n_blocks = c.size // size
        self._model_carry[attribute] = tuple(a[n_blocks * size :] for a in (c, p, pos, ts))
        if n_blocks == 0:
            return []
        end = n_blocks * size
        cell = (np.arange(n_blocks)[:, None] * n_groups + c[:end].reshape(n_blocks, size)).ravel()
        n = np.bincount(cell, minlength=n_blocks * n_groups).reshape(n_blocks, n_groups)
        positives = np.bincount(cell, weights=p[:end], minlength=n_blocks * n_groups).reshape(n_blocks, n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(n >= self.min_block_group_events, positives / np.maximum(n, 1), np.nan)
        usable = (~np.isnan(rate)).sum(axis=1) >= 2
        if not usable.any():
            return []
        gap = np.nanmax(rate[usable], axis=1) - np.nanmin(rate[usable], axis=1)
        last = np.arange(1, n_blocks + 1) * size - 1
        return self._feed(attribute, GAP_METRIC, None, gap, pos[last][usable], ts[last][usable])

    def _group_blocks(self, attribute, names, c, p, pos, ts) -> list[DriftEvent]:
        found: list[DriftEvent] = []
        order = np.argsort(c, kind="stable")
        codes_sorted = c[order]
        present, starts = np.unique(codes_sorted, return_index=True)
        ends = np.append(starts[1:], codes_sorted.size)
        size = self.group_block_events
        for g, start, end in zip(present.tolist(), starts.tolist(), ends.tolist()):
            rows = order[start:end]
            gp, gpos, gts = p[rows], pos[rows], ts[rows]
            carry = self._group_carry.get((attribute, g))
            if carry is not None:
                gp, gpos, gts = (np.concatenate([a, b]) for a, b in zip(carry, (gp, gpos, gts)))
            n_blocks = gp.size // size
            self._group_carry[(attribute, g)] = (gp[n_blocks * size :], gpos[n_blocks * size :], gts[n_blocks * size :])
            if n_blocks:
                means = gp[: n_blocks * size].reshape(n_blocks, size).mean(axis=1)
                last = np.arange(1, n_blocks + 1) * size - 1
                found += self._feed(attribute, GROUP_METRIC, names[g], means, gpos[last], gts[last])
        return found
