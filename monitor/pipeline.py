"""The pipeline: batches of events in, group metrics, drift and stats updated.

Adapters (files, Kafka) hand it raw lines or parsed events; it never reads
or writes anything itself. One ``Pipeline`` is used by one thread at a time;
the exporter reads it under ``lock``.

>>> pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
>>> result = pipeline.process_lines([
...     b'{"event_id": "1", "prediction": 1, "groups": {"sex": "F"}}',
...     b'{"event_id": "1", "prediction": 1, "groups": {"sex": "F"}}',
...     b'not json',
...     b'{"event_id": "1", "label": 0}'])
>>> pipeline.stats.valid, pipeline.stats.duplicates, pipeline.stats.invalid
(1, 1, 1)
>>> result.rejected[0][0], result.rejected[0][1].reason
(2, 'not_json')
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from monitor.config import MonitorConfig
from monitor.counts import NO_LABEL
from monitor.drift import DriftEvent, DriftMonitor
from monitor.events import Event, EventParser, Rejection
from monitor.group_metrics import GroupMetrics

# Upper bounds (seconds) of the batch-duration histogram.
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
REJECTION_SAMPLES = 20
NAN = math.nan


@dataclass
class PipelineStats:
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_reasons: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # metric_names.OUTCOME_STATUSES
    rejection_samples: list = field(default_factory=list)  # (input position, Rejection)
    last_event_ts: dict = field(default_factory=dict)  # model -> newest event time
    batch_seconds_buckets: list = field(default_factory=lambda: [0] * len(BATCH_SECONDS_BUCKETS))
    batch_seconds_sum: float = 0.0


@dataclass
class BatchResult:
    rejected: list[tuple[int, Rejection]]  # (position in the batch, why)
    duplicates: int
    drift: list[DriftEvent]


class _ModelBatch:
    """Columns of one model's new predictions, collected as plain lists."""

    __slots__ = ("event_ids", "predictions", "labels", "scores", "timestamps", "groups", "positions")

    def __init__(self) -> None:
        self.event_ids, self.predictions, self.labels = [], [], []
        self.scores, self.timestamps, self.groups = [], [], []
        self.positions = []  # input position of each prediction


class Pipeline:
    def __init__(self, config: MonitorConfig | None = None, *, clock=time.time) -> None:
        self.config = config = config or MonitorConfig()
        self.parser = EventParser(
            default_model=config.default_model,
            threshold=config.threshold,
            max_event_bytes=config.max_event_bytes,
            max_text_chars=config.max_text_chars,
            now=clock,
        )
        self.models: dict[str, GroupMetrics] = {}
        self.drift_monitors: dict[str, DriftMonitor] = {}
        self.drift_events: list[DriftEvent] = []
        # event_id -> (model metrics, sequence number) of every held prediction:
        # the dedup store and the join index for late labels at once.
        self.index: dict[str, tuple[GroupMetrics, int]] = {}
        self.early_outcomes: dict[str, int] = {}  # event_id -> label, oldest first
        self.stats = PipelineStats()
        self.position = 0  # events seen so far, valid or not
        self.lock = threading.Lock()

    # -- entry points ---------------------------------------------------------
    def process_lines(self, lines: list[bytes | str]) -> BatchResult:
        parse = self.parser.parse
        return self.process_events([parse(line) for line in lines])

    def process_events(self, events: list[Event | Rejection]) -> BatchResult:
        started = time.perf_counter()
        with self.lock:
            result = self._apply(events)
        self._observe_batch(time.perf_counter() - started)
        return result

    # -- internals --------------------------------------------------------------
    def _metrics_for(self, model: str) -> GroupMetrics:
        metrics = self.models.get(model)
        if metrics is None:
            c = self.config
            metrics = self.models[model] = GroupMetrics(
                model,
                attributes=c.attributes,
                intersections=[tuple(p) for p in c.intersections],
                count_windows=c.count_windows,
                time_windows_seconds=c.time_windows_seconds,
                journal_capacity=c.journal_capacity,
            )
            self.drift_monitors[model] = DriftMonitor(
                model,
                c.drift_detector,
                block_events=c.drift_block_events,
                group_block_events=c.drift_group_block_events,
                min_block_group_events=c.drift_min_block_group_events,
            )
        return metrics

    def _apply(self, events: list[Event | Rejection]) -> BatchResult:
        stats = self.stats
        index = self.index
        early = self.early_outcomes
        batches: dict[str, tuple[GroupMetrics, _ModelBatch]] = {}
        rejected: list[tuple[int, Rejection]] = []
        outcomes: list[tuple[str, int]] = []
        duplicates = 0
        for i, event in enumerate(events):
            if event.__class__ is Rejection:
                rejected.append((i, event))
                continue
            event_id = event.event_id
            if event.prediction is None:
                outcomes.append((event_id, event.label))
                continue
            if event_id in index:
                duplicates += 1
                continue
            entry = batches.get(event.model)
            if entry is None:
                entry = batches[event.model] = (self._metrics_for(event.model), _ModelBatch())
            metrics, batch = entry
            index[event_id] = (metrics, metrics.journal.next_seq + len(batch.event_ids))
            label = event.label
            if label is None:
                label = early.pop(event_id, NO_LABEL) if early else NO_LABEL
                if label != NO_LABEL:
                    stats.outcomes["joined"] += 1
            batch.event_ids.append(event_id)
            batch.predictions.append(event.prediction)
            batch.labels.append(label)
            score = event.score
            batch.scores.append(NAN if score is None else score)
            batch.timestamps.append(event.ts)
            batch.groups.append(event.groups)
            batch.positions.append(i)

        drift: list[DriftEvent] = []
        for model, (metrics, batch) in batches.items():
            detector = self.drift_monitors[model]
            for chunk in _chunks(batch, metrics.journal.capacity):
                codes, dropped = metrics.add(*chunk[:-1])
                for event_id in dropped:
                    index.pop(event_id, None)
                names = {attribute: index_.values for attribute, index_ in metrics.index.items()}
                drift += detector.update(
                    codes, names, np.array(chunk[1], dtype=np.int64),
                    self.position + np.array(chunk[-1], dtype=np.int64), np.array(chunk[4]),
                )
            newest = max(batch.timestamps)
            stats.last_event_ts[model] = max(stats.last_event_ts.get(model, newest), newest)
        if outcomes:
            self._apply_outcomes(outcomes)

        stats.valid += len(events) - len(rejected) - duplicates - len(outcomes)
        stats.duplicates += duplicates
        stats.invalid += len(rejected)
        for i, rejection in rejected:
            stats.invalid_reasons[rejection.reason] += 1
            if len(stats.rejection_samples) < REJECTION_SAMPLES:
                stats.rejection_samples.append((self.position + i, rejection))
        self.position += len(events)
        drift.sort(key=lambda d: d.event_index)
        self.drift_events += drift
        return BatchResult(rejected, duplicates, drift)

    def _apply_outcomes(self, outcomes: list[tuple[str, int]]) -> None:
        counts = self.stats.outcomes
        early = self.early_outcomes
        pending: dict[tuple[int, int], int] = {}  # (id(metrics), seq) -> label, this batch
        by_model: dict[int, GroupMetrics] = {}
        for event_id, label in outcomes:
            entry = self.index.get(event_id)
            if entry is None:
                if event_id in early:
                    counts["duplicate" if early[event_id] == label else "conflicting"] += 1
                    continue
                early[event_id] = label
                counts["early"] += 1
                if len(early) > self.config.early_outcome_capacity:
                    del early[next(iter(early))]
                    counts["orphaned"] += 1
                continue
            metrics, seq = entry
            key = (id(metrics), seq)
            known = pending.get(key)
            if known is None:
                known = int(metrics.journal.label[metrics.journal.positions([seq])[0]])
            if known == NO_LABEL:
                pending[key] = label
                by_model[id(metrics)] = metrics
                counts["joined"] += 1
            else:
                counts["duplicate" if known == label else "conflicting"] += 1
        for key_model, metrics in by_model.items():
            items = [(seq, label) for (m, seq), label in pending.items() if m == key_model]
            seqs = np.array([s for s, _ in items], dtype=np.int64)
            labels = np.array([lab for _, lab in items], dtype=np.int64)
            metrics.label(seqs, labels)

    def _observe_batch(self, seconds: float) -> None:
        stats = self.stats
        stats.batch_seconds_sum += seconds
        for i, bound in enumerate(BATCH_SECONDS_BUCKETS):
            if seconds <= bound:
                stats.batch_seconds_buckets[i] += 1
                break


def _chunks(batch: _ModelBatch, size: int):
    columns = (
        batch.event_ids, batch.predictions, batch.labels, batch.scores, batch.timestamps, batch.groups, batch.positions
    )
    n = len(batch.event_ids)
    if n <= size:
        yield columns
        return
    for start in range(0, n, size):
        yield tuple(column[start : start + size] for column in columns)
