"""The hot-path Kafka worker: a consumer group feeding the core pipeline, on either Kafka client library.

At-least-once, applied once: auto-commit is off; the offsets of a batch are
committed only after the pipeline applied it (on a timer, before partitions
are revoked, and on shutdown), and the core's dedup store drops a redelivered
prediction id (it remembers the last ``journal_capacity`` predictions per
model, 1M by default; an id redelivered after more than that many newer
predictions of its model is counted again). With a state store the pipeline
state is snapshotted with its offsets before each commit, so a ``kill -9``
loses and repeats nothing (see ``consumers/state.py``).

``KafkaWorker`` holds these guarantees; a backend subclass holds one client
library: ``consumers/confluent_worker.py`` (confluent-kafka, librdkafka: the
default) and ``consumers/kafka_python_worker.py`` (pure Python, the fallback,
with its fetch child process). A backend implements the abstract methods
below (connect, poll a batch, commit, pause/resume, assignment, high
watermarks, the group's state) and calls ``apply`` then ``_applied`` for each
batch, and ``on_revoked``/``commit`` around rebalances. ``make_worker`` picks
the backend that ``[kafka] client`` names.

Predictions and outcomes are consumed by the same group and applied to the
same pipeline, which joins labels by ``event_id``. With several workers the
two topics must be co-partitioned (same partition count, key = event_id):
the range assignor then gives partition N of both topics to the same worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fairwatch.consumers import metric_names as names
from fairwatch.consumers.dead_letters import DeadLetters, DeadLettersUndelivered
from fairwatch.consumers.kafka_clients import Producer, client_errors, open_producer
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


class Partition(NamedTuple):
    """A topic partition. Equal to (and hashed as) kafka-python's TopicPartition, also a (topic, partition)
    named tuple, so offsets keyed by either mix in one dict."""

    topic: str
    partition: int


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
    """The model a record counts for: a prediction's or a generation's, or that of the copy an outcome
    carries (None: any)."""
    if event.prediction is not None or event.response is not None:
        return event.model
    copy = event.prediction_copy
    return copy.model if copy is not None else None


def make_worker(settings: KafkaSettings, pipeline: Pipeline, **options) -> KafkaWorker:
    """The worker on the client library that ``settings.client`` names (options: as ``KafkaWorker``).
    Raises ``ClientMissing`` if that library is not installed."""
    client_errors(settings.client)
    if settings.client == "confluent":
        from fairwatch.consumers.confluent_worker import ConfluentWorker

        return ConfluentWorker(settings, pipeline, **options)
    from fairwatch.consumers.kafka_python_worker import KafkaPythonWorker

    return KafkaPythonWorker(settings, pipeline, **options)


class KafkaWorker:
    """Consume, apply, dead-letter, commit. One thread drives it; ``stop()`` may come from a signal."""

    def __init__(self, settings: KafkaSettings, pipeline: Pipeline, *, state: StateStore | None = None,
                 on_batch: Callable[[list[int], float], None] | None = None,
                 rebuild: bool = False) -> None:
        """``rebuild``: read every partition of the first assignment from its oldest retained offset
        (the counts start afresh; see ``fairwatch run --rebuild-state``)."""
        self.settings = settings
        self.client_errors = client_errors(settings.client)
        self.pipeline = pipeline
        self.state = state
        self.on_batch = on_batch  # (record timestamps in ms, time applied): for the latency benchmark
        self.models = frozenset(settings.models)  # empty: every model
        # Next offset to apply per partition: everything below it is in the pipeline.
        self.offsets: dict[Partition, int] = {}
        self.committed: dict[Partition, int] = {}
        self.lag: dict[Partition, int] = {}
        self.records: Counter = Counter()  # topic -> records applied
        self.filtered = 0
        self.commits = 0
        self.fetch_restarts = 0  # kafka-python's fetch child only
        self.consumer = None  # the client library's consumer, once connected
        self.dead_letters: DeadLetters | None = None
        self._producer: Producer | None = None
        self._stopping = threading.Event()
        self._dirty = False
        self._last_commit = time.monotonic()
        # Assigned partitions whose position is not known yet: never committed until it is.
        self._unconfirmed: set[Partition] = set()
        self._progress_at = time.monotonic()
        self._stall_logged = False
        # Set once a batch failed or a dead letter was refused: nothing is committed after it.
        self.failure: ApplyFailed | DeadLettersUndelivered | None = None
        self._rewind = rebuild
        restored = state.restore(pipeline) if state is not None else None
        self._restored_dlq: Counter = Counter()
        self._restored_dlq_errors = 0
        if restored:
            self.offsets = {Partition(t, p): o for (t, p), o in restored["offsets"].items()}
            self.records = Counter(restored["records"])
            self.filtered = restored["filtered"]
            self.commits = restored["commits"]
            self._restored_dlq = Counter(restored["dlq"])
            self._restored_dlq_errors = restored["dlq_errors"]
            log.info("restored state from %s: %d records applied before, offsets %s", state.path,
                     sum(self.records.values()), _format_offsets(self.offsets))

    # -- what a backend implements ----------------------------------------------------
    def connect(self) -> None:
        """Open the dead-letter producer (``_open_dead_letters``) and the consumer; subscribe."""
        raise NotImplementedError

    def poll_once(self) -> int:
        """One poll, applied (``apply`` then ``_applied``), lag and pacing updated, progress watched
        (``_after_poll``). Returns the number of records applied."""
        raise NotImplementedError

    def assignment(self) -> frozenset:
        """The partitions this member holds now."""
        raise NotImplementedError

    def _commit_offsets(self, offsets: dict[Partition, int]) -> None:
        """Commit, synchronously; raise one of ``self.client_errors`` if the broker refuses."""
        raise NotImplementedError

    def _highwater(self, tp) -> int | None:
        """The partition's high watermark as last seen in a fetch response (None: not known yet)."""
        raise NotImplementedError

    def _hold_outcomes(self, hold: bool) -> None:
        """Pause (``hold``) or resume the assigned partitions of the outcomes topic."""
        raise NotImplementedError

    def _group_settled(self) -> bool:
        raise NotImplementedError

    def _describe_client(self) -> list[str]:
        """The backend's part of ``describe``: the group's state and what it fetches."""
        raise NotImplementedError

    def _close_client(self) -> None:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------
    def _open_dead_letters(self) -> None:
        s = self.settings
        self._producer = open_producer(s, f"{s.client_id}-dlq", max_request_bytes=s.dlq_max_bytes, linger_ms=20)
        self.dead_letters = DeadLetters(self._producer, s.dlq_topic, s.dlq_max_bytes)
        self.dead_letters.sent.update(self._restored_dlq)
        self.dead_letters.errors = self._restored_dlq_errors

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
                # Found outside the batch path: kept by a rebalance callback (prepare_rebalance_commit).
                if self.failure is not None:
                    raise self.failure
                if self._dirty and time.monotonic() - self._last_commit >= self.settings.commit_interval_seconds:
                    self.commit("timer")
            self.commit("shutdown")
        finally:
            self.close()

    def close(self) -> None:
        self._close_client()
        if self._producer is not None:
            self._producer.close(FLUSH_TIMEOUT_SECONDS)
            self._producer = None
        if self.state is not None:
            self.state.close()

    # -- the loop ----------------------------------------------------------------
    def _after_poll(self, applied: int) -> None:
        self._update_lag()
        self._pace_outcomes()
        self._watch_progress(applied)

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
        parts = [f"client {self.settings.client}", f"lag {sum(self.lag.values())} over {len(self.lag)} partitions",
                 *self._describe_client(), f"assigned {_format_partitions(self.assignment())}",
                 f"offsets {_format_offsets(self.offsets)}"]
        return "; ".join(parts)

    def _applied(self, ends: list[tuple[Partition, int]], counts: dict[str, int]) -> None:
        """After a batch was applied (never before: a failed batch must stay below the offsets
        that a commit or a snapshot can write), move each partition past its last offset
        (``ends``), and count the records applied per topic."""
        offsets = self.offsets
        for tp, last in ends:
            if last + 1 > offsets.get(tp, -1):
                offsets[tp] = last + 1
        for topic, count in counts.items():
            if count:
                self.records[topic] += count
                self._dirty = True

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
            result = self.pipeline.process_events(events)  # runs the pipeline's stages (the scorer) too
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
        for tp in self.assignment():
            # highwater comes from fetch responses: right on Tansu, whose ListOffsets is not.
            highwater = self._highwater(tp)
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
        if not self.settings.outcomes_topic:
            return
        capacity = self.pipeline.config.early_outcome_capacity
        predictions = self.settings.predictions_topic
        behind = any(lag > 0 for tp, lag in self.lag.items() if tp.topic == predictions)
        self._hold_outcomes(behind and self.pipeline.pending_outcomes() > capacity // 2)

    # -- offsets -------------------------------------------------------------------
    def prepare_commit(self) -> dict[Partition, int]:
        """Flush dead letters, snapshot the state; return the offsets now safe to commit."""
        if self.consumer is None or self.failure is not None:
            return {}
        try:
            self.dead_letters.flush(FLUSH_TIMEOUT_SECONDS)
        except DeadLettersUndelivered as exc:
            self.failure = exc  # no later commit (a rebalance's, the shutdown's) may pass the refused records
            raise
        if self.state is not None and self._dirty:
            self.state.save(self.pipeline, self._extra())
        self._dirty = False
        self._last_commit = time.monotonic()
        assigned = self.assignment()
        return {tp: offset for tp, offset in self.offsets.items()
                if tp in assigned and tp not in self._unconfirmed and self.committed.get(tp) != offset}

    def prepare_rebalance_commit(self) -> dict[Partition, int]:
        """``prepare_commit`` for a rebalance callback: a refused dead letter stays in ``self.failure``, and
        the poll loop stops on it with its own line (raised in the callback, the client would wrap it in its
        own error, kafka-python's as "User rebalance callback throws an error")."""
        try:
            return self.prepare_commit()
        except DeadLettersUndelivered:
            return {}

    def commit(self, reason: str) -> bool:
        """Commit the offsets applied (after prepare_commit). False if the broker refused."""
        offsets = self.prepare_commit()
        if not offsets:
            return True
        try:
            self._commit_offsets(offsets)
        except self.client_errors as exc:
            # The snapshot already holds these offsets; a new owner resumes from
            # the committed ones, and this worker skips what it applied already.
            log.warning("commit on %s failed: %s", reason, exc)
            return False
        self.committed_ok(offsets, reason)
        return True

    def committed_ok(self, offsets: dict[Partition, int], reason: str) -> None:
        self.committed.update(offsets)
        self.commits += 1
        log.debug("committed on %s: %s", reason, _format_offsets(offsets))

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
        dlq = CounterMetricFamily(names.DLQ_MESSAGES, "Records delivered to the dead-letter topic", labels=[names.REASON])
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


__all__ = ["ApplyFailed", "KafkaWorker", "Partition", "WorkerCollector", "make_worker"]
