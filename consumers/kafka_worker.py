"""The hot-path Kafka worker: a kafka-python consumer group feeding the core pipeline.

At-least-once, applied once: auto-commit is off; the offsets of a batch are
committed only after the pipeline applied it (on a timer, before partitions
are revoked, and on shutdown), and the core's dedup store drops a redelivered
prediction id (it remembers the last ``journal_capacity`` predictions per
model, 1M by default; an id redelivered after more than that many newer
predictions of its model is counted again). With a state store the pipeline
state is snapshotted with its offsets before each commit, so a ``kill -9``
loses and repeats nothing (see ``consumers/state.py``).

By default a child process fetches and decodes the records
(``consumers/fetch_process.py``) while this one applies them; this process
stays the group member, keeps its own partitions paused, and tells the child
what to read from where after each rebalance.

Predictions and outcomes are consumed by the same group and applied to the
same pipeline, which joins labels by ``event_id``. With several workers the
two topics must be co-partitioned (same partition count, key = event_id):
the range assignor then gives partition N of both topics to the same worker.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fairwatch.monitor import metric_names as names
from fairwatch.consumers.dead_letters import DeadLetters
from fairwatch.consumers.fetch_process import FetchProcess, FetchProcessDied, PartitionBatch
from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.consumers.state import StateStore
from fairwatch.monitor.events import Rejection, internal_error
from fairwatch.monitor.metric_names import REJECTION_REASONS
from fairwatch.monitor.pipeline import Pipeline

log = logging.getLogger("fairwatch.worker")

POLL_TIMEOUT_MS = 200  # how long a stop request waits at most for the loop to notice it
STALL_SECONDS = 30.0  # no record applied for this long while records wait (or the group won't settle): log why
FLUSH_TIMEOUT_SECONDS = 30.0
_TOMBSTONE = Rejection("missing_field", "record without a value (a tombstone)")


class ApplyFailed(RuntimeError):
    """The pipeline raised while applying a batch (a bug): the worker stops, committing nothing past it."""


def _parse_one(parse, value) -> object:
    """One record, any exception turned into its rejection (reason internal_error)."""
    if value is None:
        return _TOMBSTONE
    try:
        return parse(value)
    except Exception as exc:  # noqa: BLE001
        return internal_error(exc)


def _model_of(event) -> str | None:
    """The model a record counts for: a prediction's, or that of the copy an outcome carries (None: any)."""
    if event.prediction is not None:
        return event.model
    copy = event.prediction_copy
    return copy.model if copy is not None else None


class _CommitOnRebalance(AsyncConsumerRebalanceListener):
    """Commit what was applied before partitions go.

    Async because kafka-python 3 runs listeners on its I/O thread, where a
    blocking ``consumer.commit()`` is refused; the commit is awaited there.
    """

    def __init__(self, worker: KafkaWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        if not revoked:
            return
        worker = self.worker
        worker.on_revoked(revoked)
        offsets = worker.prepare_commit()
        if not offsets:
            return
        try:
            # No public awaitable commit exists in kafka-python 3.0; this is the
            # coroutine KafkaConsumer.commit() itself runs on the I/O thread.
            await worker.consumer._coordinator._commit_offsets_sync_async(offsets)
        except KafkaError as exc:
            log.warning("commit before rebalance failed: %s", exc)
            return
        worker.committed_ok(offsets, "rebalance")

    async def on_partitions_assigned(self, assigned) -> None:
        self.worker.on_assigned(assigned)

    async def on_partitions_lost(self, lost) -> None:
        # Evicted (e.g. stalled past the session timeout): a commit would be refused.
        self.worker.on_revoked(lost)
        log.warning("lost %s without a chance to commit; their new owner resumes from the last commit",
                    _format_partitions(lost))


class KafkaWorker:
    """Consume, apply, dead-letter, commit. One thread drives it; ``stop()`` may come from a signal."""

    def __init__(self, settings: KafkaSettings, pipeline: Pipeline, *, state: StateStore | None = None,
                 on_batch: Callable[[list[int], float], None] | None = None, scorer_step=None,
                 rebuild: bool = False) -> None:
        """``rebuild``: read every partition of the first assignment from its oldest retained offset
        (the counts start afresh; see ``fairwatch run --rebuild-state``)."""
        self.settings = settings
        self.pipeline = pipeline
        # Optional monitor.scorer.step.ScorerStep: re-scores texts, adds debiased outputs.
        self.scorer_step = scorer_step
        self.state = state
        self.on_batch = on_batch  # (record timestamps in ms, time applied): for the latency benchmark
        self.models = frozenset(settings.models)  # empty: every model
        # Next offset to apply per partition: everything below it is in the pipeline.
        self.offsets: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.lag: dict[TopicPartition, int] = {}
        self.records: Counter = Counter()  # topic -> records applied
        self.filtered = 0
        self.commits = 0
        self.consumer: KafkaConsumer | None = None
        self.dead_letters: DeadLetters | None = None
        self._producer: KafkaProducer | None = None
        self._stopping = threading.Event()
        self._dirty = False
        self._last_commit = time.monotonic()
        self._unconfirmed: set[TopicPartition] = set()
        self.fetcher: FetchProcess | None = None
        self.fetch_restarts = 0
        self._owned: frozenset[TopicPartition] = frozenset()  # partitions the fetch process reads for us
        self._reassign = False  # set on the I/O thread by a rebalance, handled by the loop
        self._child_paused: set[TopicPartition] = set()
        self._highwaters: dict[tuple[str, int], int] = {}
        self._progress_at = time.monotonic()
        self._stall_logged = False
        self.failure: ApplyFailed | None = None  # set once a batch failed: nothing is committed after it
        self._rewind = rebuild
        restored = state.restore(pipeline) if state is not None else None
        self._restored_dlq: Counter = Counter()
        self._restored_dlq_errors = 0
        if restored:
            self.offsets = {TopicPartition(t, p): o for (t, p), o in restored["offsets"].items()}
            self.records = Counter(restored["records"])
            self.filtered = restored["filtered"]
            self.commits = restored["commits"]
            self._restored_dlq = Counter(restored["dlq"])
            self._restored_dlq_errors = restored["dlq_errors"]
            log.info("restored state from %s: %d records applied before, offsets %s", state.path,
                     sum(self.records.values()), _format_offsets(self.offsets))

    # -- lifecycle -----------------------------------------------------------------
    def connect(self) -> None:
        s = self.settings
        common = s.client_kwargs()
        self._producer = KafkaProducer(
            **common, client_id=f"{s.client_id}-dlq", acks="all", linger_ms=20, max_request_size=s.dlq_max_bytes,
        )
        self.dead_letters = DeadLetters(self._producer, s.dlq_topic, s.dlq_max_bytes)
        self.dead_letters.sent.update(self._restored_dlq)
        self.dead_letters.errors = self._restored_dlq_errors
        fetching = {
            "auto_offset_reset": s.auto_offset_reset,
            # A record larger than these still comes back alone (Kafka returns the
            # first batch of a partition whatever its size), so a 5 MB event cannot
            # wedge its partition; it is then refused as oversized by the parser.
            "max_partition_fetch_bytes": s.max_partition_fetch_bytes,
            "fetch_max_bytes": s.fetch_max_bytes,
        }
        if s.fetch_process:
            self._fetcher_args = (common, {**fetching, "client_id": f"{s.client_id}-fetch"}, s.max_poll_records)
            self.fetcher = FetchProcess(*self._fetcher_args)
        self.consumer = KafkaConsumer(
            **common,
            **fetching,
            client_id=s.client_id,
            group_id=s.group_id,
            enable_auto_commit=False,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(s.session_timeout_ms // 3, 100),
            max_poll_interval_ms=s.max_poll_interval_ms,
            request_timeout_ms=max(30_000, s.session_timeout_ms + 5_000),
            # Range keeps partition N of the predictions and outcomes topics on one worker.
            partition_assignment_strategy=[RangePartitionAssignor],
        )
        self.consumer.subscribe(s.topics(), listener=_CommitOnRebalance(self))

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and close (safe from a signal handler)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Poll and apply until ``stop()`` (or ``until()`` is true), then commit and close."""
        if self.consumer is None:
            self.connect()
        try:
            while not self._stopping.is_set() and not (until and until()):
                self.poll_once()
                if self._dirty and time.monotonic() - self._last_commit >= self.settings.commit_interval_seconds:
                    self.commit("timer")
            self.commit("shutdown")
        finally:
            self.close()

    def close(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()
            self.fetcher = None
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("closing the consumer: %s", exc)
            self.consumer = None
        if self._producer is not None:
            self._producer.close(timeout=FLUSH_TIMEOUT_SECONDS)
            self._producer = None
        if self.state is not None:
            self.state.close()

    # -- the loop ----------------------------------------------------------------
    def poll_once(self) -> int:
        """One poll, applied. Returns the number of records applied."""
        if self.fetcher is not None:
            try:
                applied = self._poll_fetcher()
            except FetchProcessDied as exc:
                self._restart_fetcher(exc)
                applied = 0
        else:
            polled = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=self.settings.max_poll_records)
            applied = self._apply_polled(polled)
            self._update_lag()
            self._pace_outcomes()
        self._watch_progress(applied)
        return applied

    def _group_settled(self) -> bool:
        coordinator = self.consumer._coordinator  # no public "is the group settled" in kafka-python 3
        return not coordinator.coordinator_unknown() and not coordinator.need_rejoin()

    def _watch_progress(self, applied: int) -> None:
        """Log one line, once, when nothing was applied for STALL_SECONDS although records wait
        (lag) or the group does not settle; an idle stream is not a stall."""
        now = time.monotonic()
        if applied or not (any(self.lag.values()) or not self._group_settled()):
            self._progress_at, self._stall_logged = now, False
        elif not self._stall_logged and now - self._progress_at >= STALL_SECONDS:
            self._stall_logged = True
            log.warning("no record applied for %.0f s: %s", now - self._progress_at, self.describe())

    def describe(self) -> str:
        """Where the worker stands, in one line (for the stall warning)."""
        consumer = self.consumer
        coordinator = consumer._coordinator
        generation = getattr(coordinator, "_generation", None)
        parts = [
            f"lag {sum(self.lag.values())} over {len(self.lag)} partitions",
            f"group {'settled' if self._group_settled() else 'rejoining'}"
            f" (generation {getattr(generation, 'generation_id', '?')})",
            f"assigned {_format_partitions(consumer.assignment())}",
            f"offsets {_format_offsets(self.offsets)}",
        ]
        if self.fetcher is not None:
            parts += [f"fetch process {'alive' if self.fetcher.process.is_alive() else 'dead'} at epoch "
                      f"{self.fetcher.epoch}, owns {_format_partitions(self._owned)}",
                      f"highwaters {dict(sorted(self._highwaters.items()))}"]
        return "; ".join(parts)

    def _apply_polled(self, polled: dict) -> int:
        """Apply a kafka-python poll result, predictions first (outcomes of the same batch find them)."""
        if not polled:
            return 0
        predictions = self.settings.predictions_topic
        kept, ends = [], []
        for tp, records in sorted(polled.items(), key=lambda item: item[0].topic != predictions):
            self._unconfirmed.discard(tp)
            start = self.offsets.get(tp, -1)
            if records[0].offset < start:
                records = [r for r in records if r.offset >= start]
            ends.append((tp, polled[tp][-1].offset, len(records)))
            kept += records
        applied = 0
        if kept:
            timestamps = [r.timestamp for r in kept] if self.on_batch is not None else None
            applied = self.apply([r.value for r in kept], kept.__getitem__, timestamps)
        self._applied(ends)
        return applied

    def _poll_fetcher(self) -> int:
        """Keep the group alive (our partitions stay paused here), apply what the fetch process sent."""
        consumer = self.consumer
        # Group upkeep only: our partitions are paused here, so poll() returns nothing. A join
        # needs a poll that may block (kafka-python gives up at once with timeout 0); a settled
        # member must not block, or it would wait on every batch.
        settled = self._group_settled()
        polled = consumer.poll(timeout_ms=0 if settled else POLL_TIMEOUT_MS)
        # Records fetched here between an assignment and its pause (the listener pauses on kafka-python's
        # I/O thread) are applied like any batch, so the position handed to the child is past them.
        applied = self._apply_polled(polled)
        if applied:
            log.info("applied %d records fetched by the group consumer before it paused its partitions", applied)
        if self._reassign:
            self._assign_fetcher()
        received = self.fetcher.receive(POLL_TIMEOUT_MS / 1000 if settled else 0)
        if received:
            batches, highwaters = received
            self._highwaters.update(highwaters)
            applied += self._apply_batches(batches)
        self._update_lag()
        self._pace_outcomes()
        return applied

    def _apply_batches(self, batches: list[PartitionBatch]) -> int:
        """Apply the fetch process's batches of partitions still owned, predictions first."""
        owned = self._owned
        predictions = self.settings.predictions_topic
        parts: list[PartitionBatch] = []
        ends = []
        for batch in sorted(batches, key=lambda b: b.topic != predictions):
            tp = TopicPartition(batch.topic, batch.partition)
            if tp not in owned:
                continue  # revoked since it was fetched: the next owner reads it again
            last = batch.offsets[-1]
            start = self.offsets.get(tp, -1)
            if batch.offsets[0] < start:
                batch = batch.since(bisect.bisect_left(batch.offsets, start))
            ends.append((tp, last, len(batch.values)))
            if batch.values:
                parts.append(batch)
        applied = 0
        if parts:
            values = parts[0].values if len(parts) == 1 else [v for b in parts for v in b.values]
            timestamps = [t for b in parts for t in b.timestamps] if self.on_batch is not None else None
            applied = self.apply(values, _Locator(parts).record, timestamps)
        self._applied(ends)
        return applied

    def _applied(self, ends: list[tuple[TopicPartition, int, int]]) -> None:
        """After a batch was applied (never before: a failed batch must stay below the offsets
        that a commit or a snapshot can write), move each partition past it."""
        for tp, last, count in ends:
            if last + 1 > self.offsets.get(tp, -1):
                self.offsets[tp] = last + 1
            if count:
                self.records[tp.topic] += count
                self._dirty = True

    def _restart_fetcher(self, exc: FetchProcessDied) -> None:
        """Nothing the dead child sent was applied past self.offsets: a new one resumes there."""
        log.error("%s; starting a new one", exc)
        self.fetcher.close()
        self.fetcher = FetchProcess(*self._fetcher_args)
        self.fetch_restarts += 1
        self._reassign = True

    def _assign_fetcher(self) -> None:
        """After a rebalance: pause our partitions here, and have the child read them from where we stand."""
        self._reassign = False
        consumer = self.consumer
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        positions = {}
        for tp in assigned:
            # The group's committed offset (or the reset policy); past it, what this worker
            # applied and snapshotted before a crash is not read again.
            position = max(consumer.position(tp), self.offsets.get(tp, -1))
            positions[tp.topic, tp.partition] = position
            self.offsets[tp] = position
        self._owned = frozenset(assigned)
        self._child_paused.clear()
        self._unconfirmed -= assigned  # positions are known: committing them is safe
        self.fetcher.assign(positions)

    def apply(self, values: list, source: Callable[[int], object], timestamps: list[int] | None = None) -> int:
        """Parse, filter, apply to the pipeline, dead-letter the refused records.

        ``source(i)`` gives the record of ``values[i]`` (for the dead-letter topic).
        """
        parse = self.pipeline.parser.parse
        try:
            parsed = [parse(value) if value is not None else _TOMBSTONE for value in values]
        except Exception:  # noqa: BLE001 - the parser answers every input; if a bug says otherwise, isolate it
            parsed = [_parse_one(parse, value) for value in values]
        if self.models:
            counted = self.models | {None}  # None: an outcome without a copy, for whichever model holds it
            events, kept = [], []
            for i, event in enumerate(parsed):
                if event.__class__ is not Rejection and _model_of(event) not in counted:
                    self.filtered += 1
                    continue
                events.append(event)
                kept.append(i)
        else:
            events, kept = parsed, None
        if self.failure is not None:
            raise self.failure
        try:
            if self.scorer_step is None:
                result = self.pipeline.process_events(events)
            else:
                result = self.scorer_step.process(self.pipeline, events)
        except Exception as exc:
            # Nothing below can tell how much of the batch the pipeline took: stop without a commit
            # or a snapshot past it, so a restart reads the batch again onto the last snapshot.
            self.failure = ApplyFailed(f"applying a batch of {len(events)} records failed "
                                       f"({type(exc).__name__}: {exc}); offsets and snapshot stay before it")
            raise self.failure from exc
        for position, rejection in result.rejected:
            self.dead_letters.send(source(kept[position] if kept is not None else position), rejection)
        if self.on_batch is not None and timestamps is not None:
            self.on_batch(timestamps, time.time())
        return len(events)

    def _update_lag(self) -> None:
        lag = {}
        consumer = self.consumer
        for tp in consumer.assignment():
            # highwater comes from fetch responses: right on Tansu, whose ListOffsets is not.
            if self.fetcher is None:
                highwater = consumer.highwater(tp)
            else:
                highwater = self._highwaters.get((tp.topic, tp.partition)) if tp in self._owned else None
            position = self.offsets.get(tp)
            if highwater is not None and position is not None:
                lag[tp] = max(highwater - position, 0)
        self.lag = lag  # one reference swap: the exporter thread reads it without a lock

    def _pace_outcomes(self) -> None:
        """Hold the outcomes back while the early-outcome buffer is half full and predictions lag.

        Otherwise a backlog of small outcome records runs ahead of the larger
        predictions and overflows the core's early-outcome buffer (outcomes
        dropped as orphaned). Never while predictions are caught up: those
        outcomes may be true orphans, and holding them would stall the topic.
        """
        outcomes = self.settings.outcomes_topic
        if not outcomes:
            return
        capacity = self.pipeline.config.early_outcome_capacity
        predictions = self.settings.predictions_topic
        behind = any(lag > 0 for tp, lag in self.lag.items() if tp.topic == predictions)
        hold = behind and len(self.pipeline.early_outcomes) > capacity // 2
        if self.fetcher is not None:
            self._pace_fetcher(hold, outcomes)
            return
        consumer = self.consumer
        paused = consumer.paused()
        if hold:
            partitions = [tp for tp in consumer.assignment() if tp.topic == outcomes and tp not in paused]
            if partitions:
                consumer.pause(*partitions)
        else:
            partitions = [tp for tp in paused if tp.topic == outcomes]
            if partitions:
                consumer.resume(*partitions)

    def _pace_fetcher(self, hold: bool, outcomes: str) -> None:
        if hold:
            partitions = [tp for tp in self._owned if tp.topic == outcomes and tp not in self._child_paused]
            if partitions:
                self.fetcher.pause([(tp.topic, tp.partition) for tp in partitions])
                self._child_paused.update(partitions)
        elif self._child_paused:
            self.fetcher.resume([(tp.topic, tp.partition) for tp in self._child_paused])
            self._child_paused.clear()

    # -- offsets -------------------------------------------------------------------
    def prepare_commit(self) -> dict:
        """Flush dead letters, snapshot the state; return the offsets now safe to commit."""
        if self.consumer is None or self.failure is not None:
            return {}
        self.dead_letters.flush(FLUSH_TIMEOUT_SECONDS)
        if self.state is not None and self._dirty:
            self.state.save(self.pipeline, self._extra())
        self._dirty = False
        self._last_commit = time.monotonic()
        assigned = self.consumer.assignment()
        return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self.offsets.items()
                if tp in assigned and tp not in self._unconfirmed and self.committed.get(tp) != offset}

    def commit(self, reason: str) -> bool:
        """Commit the offsets applied (after prepare_commit). False if the broker refused."""
        offsets = self.prepare_commit()
        if not offsets:
            return True
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # The snapshot already holds these offsets; a new owner resumes from
            # the committed ones, and this worker skips what it applied already.
            log.warning("commit on %s failed: %s", reason, exc)
            return False
        self.committed_ok(offsets, reason)
        return True

    def committed_ok(self, offsets: dict, reason: str) -> None:
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})
        self.commits += 1
        log.debug("committed on %s: %s", reason, _format_offsets({tp: m.offset for tp, m in offsets.items()}))

    def on_revoked(self, revoked) -> None:
        """Batches of revoked partitions still in flight from the fetch process are dropped."""
        self._owned = self._owned - set(revoked)

    def on_assigned(self, assigned) -> None:
        """Nothing blocking here (kafka-python's I/O thread): the consumer resumes from the
        committed offsets; records this worker applied before a crash are skipped in poll_once,
        and a partition is committed only once a fetch confirmed where it stands (or, with
        the fetch process, once the loop has read the position it hands the child)."""
        self._unconfirmed = set(assigned)
        if self._rewind and assigned:
            self._rewind = False
            self.consumer.seek_to_beginning(*assigned)  # only marks them for a reset: nothing blocks
            log.info("rebuilding: reading %s from the oldest retained offsets", _format_partitions(assigned))
        if self.fetcher is not None:
            self.consumer.pause(*assigned)  # the child reads them; poll() here only keeps the group
            self._reassign = True
        log.info("assigned %s", _format_partitions(assigned))

    def _extra(self) -> dict:
        return {
            "offsets": {(tp.topic, tp.partition): offset for tp, offset in self.offsets.items()},
            "records": dict(self.records),
            "filtered": self.filtered,
            "commits": self.commits,
            "dlq": dict(self.dead_letters.sent),
            "dlq_errors": self.dead_letters.errors,
        }


def _format_partitions(partitions) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "nothing"


def _format_offsets(offsets: dict) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(offsets.items())) or "none"


class _Locator:
    """Maps a position in the concatenated values of several batches back to its record."""

    def __init__(self, batches: list[PartitionBatch]) -> None:
        self.batches = batches
        self.starts = list(itertools.accumulate((len(b.values) for b in batches), initial=0))

    def record(self, i: int):
        b = bisect.bisect_right(self.starts, i) - 1
        return self.batches[b].record(i - self.starts[b])


class WorkerCollector(Collector):
    """Consumer lag, offsets and dead letters of one worker, read at scrape time."""

    def __init__(self, worker: KafkaWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterator:
        w = self.worker
        partition_labels = [names.TOPIC, names.PARTITION]
        lag = GaugeMetricFamily(names.CONSUMER_LAG, "Records behind the high watermark, per partition",
                                labels=partition_labels)
        for tp, value in sorted(dict(w.lag).items()):
            lag.add_metric([tp.topic, str(tp.partition)], value)
        offset = GaugeMetricFamily(names.CONSUMER_OFFSET, "Next offset to apply, per partition",
                                   labels=partition_labels)
        for tp, value in sorted(dict(w.offsets).items()):
            offset.add_metric([tp.topic, str(tp.partition)], value)
        records = CounterMetricFamily(names.CONSUMER_RECORDS, "Records applied, per topic", labels=[names.TOPIC])
        for topic in w.settings.topics():
            records.add_metric([topic], w.records.get(topic, 0))
        commits = CounterMetricFamily(names.CONSUMER_COMMITS, "Offset commits that succeeded")
        commits.add_metric([], w.commits)
        dlq = CounterMetricFamily(names.DLQ_MESSAGES, "Records sent to the dead-letter topic", labels=[names.REASON])
        sent = dict(w.dead_letters.sent) if w.dead_letters else dict(w._restored_dlq)
        for reason in sorted(set(REJECTION_REASONS) | set(sent)):
            dlq.add_metric([reason], sent.get(reason, 0))
        errors = CounterMetricFamily(names.DLQ_ERRORS, "Dead letters the broker did not take")
        errors.add_metric([], w.dead_letters.errors if w.dead_letters else w._restored_dlq_errors)
        restarts = CounterMetricFamily(names.FETCH_RESTARTS, "Fetch processes that died and were replaced")
        restarts.add_metric([], w.fetch_restarts)
        filtered = CounterMetricFamily(names.FILTERED_EVENTS, "Predictions (and outcomes whose prediction copy names a model) "
                                      "of models outside --model, skipped")
        filtered.add_metric([], w.filtered)
        yield from (lag, offset, records, commits, dlq, errors, restarts, filtered)


__all__ = ["ApplyFailed", "KafkaWorker", "WorkerCollector"]
