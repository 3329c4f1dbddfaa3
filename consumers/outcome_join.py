"""The late-outcome join: a faust-streaming app between the raw topics and the hot-path worker.

It consumes the predictions and outcomes topics (both keyed by ``event_id``,
co-partitioned: same partition count) and writes one topic of *labeled*
events that ``fairwatch run`` consumes instead of the raw predictions
(``--predictions-topic fairwatch.labeled --outcomes-topic ''``).

What goes to the labeled topic, per event_id (at most one prediction and
at most one outcome, so nothing is counted twice downstream):

* a prediction is forwarded at once, so label-free metrics (selection rate,
  score means, drift) are never delayed by the join; if its outcome was
  already waiting, it is forwarded with ``label`` set (one message, labeled);
* an outcome that arrives after its prediction is forwarded as an outcome
  event (``{"event_id", "ts", "label", "prediction_copy"}``); the worker
  that counted the prediction labels it by event_id (its journal holds the
  newest 1M predictions per model); a worker that does not hold it (the
  partition moved to it after another member counted the prediction, or
  the prediction left its journal) counts the label cells from the copy of
  the prediction's model, prediction, score, groups and time;
* an outcome that arrives first waits in the ``outcomes`` table; duplicates
  of an outcome already joined or waiting are counted and dropped;
* an outcome that finds no prediction within the TTL is dropped and counted
  as orphaned; a prediction whose outcome never came is dropped from the
  table after the TTL and counted as expired (it was forwarded already).

Invalid records (not JSON, wrong types...) are forwarded unchanged so the
worker dead-letters them with its reasons: one DLQ path, in the worker.

State: two Faust tables (memory store, changelog-backed; a restarted app
reads the changelog back before it consumes): ``predictions`` (event_id ->
first-seen time, label once joined, and the prediction's copy until then)
and ``outcomes`` (event_id -> first-seen time and label). Table keys are the event_id bytes and the
changelog partition comes from the producer's partitioner
(``use_partitioner=True``), i.e. the same murmur2 hash the source topics
used for the same key: the changelog stays co-partitioned with the source
topics, and the TTL sweep (a timer, outside any stream event) may delete.

TTL: wall-clock time at the join app, from the first arrival of the
event_id (stored in the table value, so it survives a restart). Event time
is not used: a quiet stream would never advance it, and producers' clocks
and missing ``ts`` fields would decide when state is freed.

Guarantee: at least once. Per event, the agent sends what it forwards and
waits for the broker's acknowledgement, then updates the tables and waits
for their changelog writes to be acknowledged, and only then takes the next
event (Faust commits an event's offset once the agent has moved past it):
a committed offset is never ahead of a forward or a table write, so a
crash or an ``--exit-on-stall`` exit replays what was not finished. A
replayed prediction is dropped by the table (or, sent but not yet
recorded, by the worker's dedup store); a replayed outcome finds its table
entry and is counted as a duplicate rather than forwarded twice, except
after a crash between its send and its changelog write, where the worker
counts it as a duplicate outcome (the per-group counters are unchanged).
Records the consumer fetched but faust-streaming never handed to the agent
(``Consumer.getmany`` drops the rest of a batch in some states) are found
by an idle check and re-read (see :func:`undelivered`).

faust-streaming is imported only by :func:`build_app`, so this module
imports without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from fairwatch.consumers.join_config import JoinOptions
from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.monitor.events import EventParser, PredictionCopy, Rejection
from fairwatch.consumers.metric_names import (
    JOIN_INVALID,
    JOIN_OUTCOME_STATUSES,
    JOIN_OUTCOMES,
    JOIN_PENDING,
    JOIN_PREDICTION_STATUSES,
    JOIN_PREDICTIONS,
    JOIN_READY,
)

log = logging.getLogger("fairwatch.join")


_KAFKA_DEFAULTS = KafkaSettings()
_JOIN_DEFAULTS = JoinOptions()  # the [join] table's defaults, defined there
DEFAULT_LABELED_TOPIC = _JOIN_DEFAULTS.labeled_topic
DEFAULT_TTL_SECONDS = _JOIN_DEFAULTS.ttl_seconds


@dataclass
class JoinSettings:
    bootstrap_servers: str = _KAFKA_DEFAULTS.bootstrap_servers  # the [kafka] table's defaults, defined there
    predictions_topic: str = _KAFKA_DEFAULTS.predictions_topic
    outcomes_topic: str = _KAFKA_DEFAULTS.outcomes_topic
    labeled_topic: str = DEFAULT_LABELED_TOPIC
    app_id: str = _JOIN_DEFAULTS.app_id  # also the consumer group and the changelog topics' prefix
    ttl_seconds: float = DEFAULT_TTL_SECONDS
    sweep_interval_seconds: float | None = None  # default: ttl / 10, between 0.5 s and 60 s
    partitions: int | None = None  # default: read from the predictions topic
    commit_interval_seconds: float = _JOIN_DEFAULTS.commit_interval_seconds
    # A batch (or a CPU-starved loop) slower than the poll interval makes aiokafka leave the group, and it
    # rejoins only at the next fetch, which Faust, its partitions revoked, never makes: the join stalls until
    # restarted (see docs/kafka.md). The defaults are Kafka's and Faust's ([join] table, consumers/join_config.py).
    session_timeout_seconds: float = _JOIN_DEFAULTS.session_timeout_ms / 1000
    rebalance_timeout_seconds: float = _JOIN_DEFAULTS.rebalance_timeout_ms / 1000
    max_poll_interval_seconds: float = _JOIN_DEFAULTS.max_poll_interval_ms / 1000
    # Not ready (rebalancing, recovering, or dropped from the group) for this long: one warning line.
    stall_warning_seconds: float = _JOIN_DEFAULTS.stall_warning_seconds
    # Dropped from the group (no member id) for the stall warning's time plus a rebalance timeout: exit with
    # EXIT_STALLED so that a supervisor restarts it (the restart forwards what was left, at least once).
    exit_on_stall: bool = _JOIN_DEFAULTS.exit_on_stall
    auto_offset_reset: str = _JOIN_DEFAULTS.auto_offset_reset
    # 1 = one record per produced batch. Tansu's ListOffsets answers the base offset of the last batch + 1,
    # and Faust's changelog recovery reads up to that offset: with several records per batch it stops short.
    producer_max_batch_size: int | None = None
    client_kwargs: dict = field(default_factory=dict)  # aiokafka security settings, passed to faust.App

    @property
    def sweep_seconds(self) -> float:
        if self.sweep_interval_seconds is not None:
            return self.sweep_interval_seconds
        return min(max(self.ttl_seconds / 10, 0.5), 60.0)


class JoinMetrics:
    """Counters of the join, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        outcomes = Counter(JOIN_OUTCOMES, "Outcomes seen by the join, by what became of them", ["status"],
                           registry=self.registry)
        predictions = Counter(JOIN_PREDICTIONS, "Predictions seen by the join, by what became of them", ["status"],
                              registry=self.registry)
        # Children cached once: labels() costs microseconds per call.
        self.outcomes = {s: outcomes.labels(s) for s in JOIN_OUTCOME_STATUSES}
        self.predictions = {s: predictions.labels(s) for s in JOIN_PREDICTION_STATUSES}
        self.invalid = Counter(JOIN_INVALID, "Records the join could not parse (forwarded for the worker's DLQ)",
                               registry=self.registry)
        pending = Gauge(JOIN_PENDING, "Entries the join holds until their TTL: predictions (awaiting an outcome, "
                        "or joined and kept to recognise duplicates), outcomes (arrived before their prediction)",
                        ["table"], registry=self.registry)
        self.pending_predictions = pending.labels("predictions")
        self.pending_outcomes = pending.labels("outcomes")
        self.ready = Gauge(JOIN_READY, "1 once the join's tables are recovered and its partitions assigned, "
                           "0 before that and while it rebalances", registry=self.registry)

    def watch(self, predictions, outcomes) -> None:
        """Read the table sizes at scrape time (len() of the local store: O(1))."""
        self.pending_predictions.set_function(lambda: len(predictions))
        self.pending_outcomes.set_function(lambda: len(outcomes))


class JoinLogic:
    """The join's decisions, on plain mappings (Faust tables in the app, dicts in unit use).

    ``handle`` returns the (key, value bytes) records to forward, in order.
    Table values are JSON-able dicts: ``{"t": first seen (wall s), "label": int | None}``, and
    in ``predictions`` while the label is None, ``"copy"``: the prediction's fields an outcome carries on.
    """

    def __init__(self, predictions, outcomes, metrics: JoinMetrics, *, ttl_seconds: float,
                 parser: EventParser | None = None, clock=time.time) -> None:
        self.predictions = predictions
        self.outcomes = outcomes
        self.metrics = metrics
        self.ttl_seconds = ttl_seconds
        self.parser = parser or EventParser()
        self.clock = clock
        self._encode = msgspec.json.Encoder().encode

    def handle(self, key: bytes | None, value: bytes | None) -> tuple[list[tuple[bytes | None, bytes]], callable]:
        """(records to forward, then the state update to apply once they are acknowledged)."""
        m = self.metrics
        event = self.parser.parse(value) if value is not None else Rejection("missing_field", "tombstone")
        if event.__class__ is Rejection:
            m.invalid.inc()
            return ([(key, value)] if value is not None else []), _nothing
        event_id = event.event_id.encode()
        now = self.clock()
        if event.is_outcome:
            return self._outcome(event_id, event, value, now)
        if event.prediction is None:  # a generation alone (an LLM response): nothing to label, passed on as it is
            return [(key, value)], _nothing
        return self._prediction(event_id, event, value, now)

    def _prediction(self, event_id: bytes, event, raw: bytes, now: float):
        m = self.metrics
        if self.predictions.get(event_id) is not None:
            m.predictions["duplicate"].inc()
            return [], _nothing
        early = self.outcomes.get(event_id)
        if early is not None and event.label is None:
            event.label = early["label"]
            m.outcomes["joined"].inc()
            m.predictions["labeled_on_arrival"].inc()

            def update() -> None:
                self.predictions[event_id] = {"t": now, "label": event.label}
                self._drop_waiting(event_id)
            return [(event_id, self._encode(event))], update
        m.predictions["forwarded"].inc()
        label = event.label
        entry = {"t": now, "label": label}
        if label is None:
            entry["copy"] = {"model": event.model, "prediction": event.prediction, "score": event.score,
                             "groups": event.groups, "ts": event.ts}

        def update() -> None:
            self.predictions[event_id] = entry
            if early is not None:  # the prediction carried its own label: the early outcome is a duplicate
                self._drop_waiting(event_id)
        if early is not None:
            m.outcomes["duplicate" if early["label"] == label else "conflicting"].inc()
        return [(event_id, raw)], update

    def _drop_waiting(self, event_id: bytes) -> None:
        # The TTL sweep runs while the agent awaits its forward: the entry read in handle() may be gone.
        if event_id in self.outcomes:
            del self.outcomes[event_id]

    def _outcome(self, event_id: bytes, event, raw: bytes, now: float):
        m = self.metrics
        known = self.predictions.get(event_id)
        if known is not None:
            if known["label"] is not None:
                m.outcomes["duplicate" if known["label"] == event.label else "conflicting"].inc()
                return [], _nothing
            m.outcomes["joined"].inc()
            copy = known.get("copy")
            if copy is not None:  # None: a table entry written before copies were kept
                event.prediction_copy = PredictionCopy(**copy)
                raw = self._encode(event)

            def update() -> None:
                self.predictions[event_id] = {"t": known["t"], "label": event.label}
                self._drop_waiting(event_id)  # a waiting copy from before the prediction
            return [(event_id, raw)], update
        waiting = self.outcomes.get(event_id)
        if waiting is not None:
            m.outcomes["duplicate" if waiting["label"] == event.label else "conflicting"].inc()
            return [], _nothing
        m.outcomes["early"].inc()

        def update() -> None:
            self.outcomes[event_id] = {"t": now, "label": event.label}
        return [], update

    def sweep(self) -> tuple[int, int]:
        """Drop entries older than the TTL: (orphaned outcomes, expired predictions). O(entries held)."""
        now = self.clock()
        horizon = now - self.ttl_seconds
        orphaned = [k for k, v in list(self.outcomes.items()) if v is not None and v["t"] < horizon]
        for k in orphaned:
            del self.outcomes[k]
        expired = 0
        for k, v in list(self.predictions.items()):
            if v is not None and v["t"] < horizon:
                del self.predictions[k]
                expired += v["label"] is None
        self.metrics.outcomes["orphaned"].inc(len(orphaned))
        self.metrics.predictions["expired"].inc(expired)
        return len(orphaned), expired


def undelivered(next_offsets: dict, positions: dict) -> dict:
    """Partitions whose consumer position ran past the records the join was given: {tp: offset to re-read from}.

    ``next_offsets``: per source partition, the offset after the last record the join handled;
    ``positions``: the consumer's fetch positions (None: unknown). faust-streaming's ``Consumer.getmany``
    drops the rest of a fetched batch when its flow stops or its generation changes mid-batch, or the
    partition is not active, while aiokafka's position has already moved past it: those records are
    neither handled nor committed, and without a seek back this process never reads them again.

    >>> undelivered({"p0": 2, "p1": 5}, {"p0": 6, "p1": 5, "p2": 9})
    {'p0': 2}
    """
    return {tp: offset for tp, offset in next_offsets.items()
            if positions.get(tp) is not None and positions[tp] > offset}


def heartbeat_interval(session_timeout_seconds: float) -> float:
    """A fifth of the session, at most Kafka's default 3 s, at least 0.5 s."""
    return min(max(session_timeout_seconds / 5, 0.5), 3.0)


class ReadyWatch:
    """One warning line when the join stays not ready for ``stall_seconds``; one info line when it recovers.

    Not ready = rebalancing, recovering its tables, or dropped from its group and not rejoined: the
    ``fairwatch_join_ready`` gauge shows the same state (0) on /metrics, for an alert with a ``for:``.
    """

    def __init__(self, stall_seconds: float, describe, clock=time.monotonic) -> None:
        self.stall_seconds, self.describe, self.clock = stall_seconds, describe, clock
        self.since: float | None = None  # when it stopped being ready (None: ready)
        self.logged = False

    def check(self, ready: bool) -> None:
        now = self.clock()
        if ready:
            if self.logged:
                log.info("ready again after %.0f s", now - self.since)
            self.since, self.logged = None, False
            return
        if self.since is None:
            self.since = now
        elif not self.logged and now - self.since >= self.stall_seconds:
            self.logged = True
            log.warning("not ready for %.0f s (fairwatch_join_ready 0), nothing is forwarded: %s",
                        now - self.since, self.describe())


EXIT_STALLED = 75  # EX_TEMPFAIL: dropped from the group and not rejoining (--exit-on-stall); restart it


def _member(app) -> tuple[str | None, object]:
    """(member id, "" once dropped from the group; generation) from aiokafka's coordinator; (None, "?") when
    they cannot be read (aiokafka internals: best effort)."""
    try:
        coordinator = app.consumer._thread._ensure_consumer()._coordinator
        return coordinator.member_id, coordinator.generation
    except Exception:  # noqa: BLE001 (a diagnostic must not fail the timer)
        return None, "?"


def _describe(app, settings: JoinSettings) -> str:
    """The join's group state, in one line (for the stall warning)."""
    member, generation = _member(app)
    member = "?" if member is None else member or "none (dropped from the group)"
    return (f"member {member}, generation {generation}, rebalancing {bool(app.rebalancing)}, "
            f"recovering {bool(app.in_recovery)}, assigned {len(app.consumer.assignment())} partitions; "
            f"a loop blocked longer than the max poll interval ({settings.max_poll_interval_seconds:g} s) "
            f"leaves the group and may not rejoin: restart the join (it resumes from its committed offsets)")


def _nothing() -> None:
    return None


def topic_partitions(bootstrap_servers: str, topics: list[str], **client_kwargs) -> dict[str, int]:
    """Partition count of each topic (kafka-python; missing topics are left out)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, **client_kwargs)
    try:
        found = {}
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                found[topic] = len(parts)
        return found
    finally:
        consumer.close()


def build_app(settings: JoinSettings, metrics: JoinMetrics):
    """The faust.App: one agent over both topics, two tables, a TTL sweep timer."""
    import faust

    partitions = settings.partitions or 1
    broker = [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",") if server.strip()]
    app = faust.App(
        settings.app_id,
        broker=broker,
        store="memory://",  # state lives in the changelog; a restart reads it back
        processing_guarantee="at_least_once",  # Tansu has no transactions (see docs/kafka.md)
        topic_partitions=partitions,  # changelog partitions = source partitions (co-partitioned)
        topic_replication_factor=1 if "127.0.0.1" in settings.bootstrap_servers else 3,
        table_standby_replicas=0,  # the sweep must only see partitions this instance owns
        broker_commit_interval=settings.commit_interval_seconds,
        broker_commit_every=1000,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=heartbeat_interval(settings.session_timeout_seconds),
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_max_poll_interval=settings.max_poll_interval_seconds,
        consumer_auto_offset_reset=settings.auto_offset_reset,
        producer_acks=-1,
        web_enabled=False,  # /metrics is served by prometheus-client
        stream_wait_empty=False,
        **({"producer_max_batch_size": settings.producer_max_batch_size}
           if settings.producer_max_batch_size is not None else {}),
        **settings.client_kwargs,
    )
    source = app.topic(settings.predictions_topic, settings.outcomes_topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    labeled = app.topic(settings.labeled_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw", partitions=partitions)
    table_options = dict(key_type=bytes, default=None, partitions=partitions, use_partitioner=True)
    predictions = app.Table("predictions", help="event_id -> first seen, label once joined", **table_options)
    outcomes = app.Table("outcomes", help="event_id -> first seen, label: outcomes before their prediction",
                         **table_options)
    logic = JoinLogic(predictions, outcomes, metrics, ttl_seconds=settings.ttl_seconds)
    # A table write only queues its changelog record (send_soon), and Faust's pre-commit flush gives up
    # after 0.1 s without a send (ProducerBuffer.flush_atmost): an offset could be committed ahead of the
    # table write it caused, which a crash would then lose. The agent awaits these before its next event.
    changelog_writes: list = []

    def keep_changelog_writes(table) -> None:
        send_changelog = table.send_changelog

        def send_and_keep(*args, **kwargs):
            future = send_changelog(*args, **kwargs)
            changelog_writes.append(future)
            return future
        table.send_changelog = send_and_keep

    keep_changelog_writes(predictions)
    keep_changelog_writes(outcomes)
    metrics.watch(predictions, outcomes)
    recovered = False

    @app.on_rebalance_complete.connect
    async def on_recovered(sender, **kwargs) -> None:
        nonlocal recovered
        recovered = True

    def ready() -> bool:
        return recovered and not app.rebalancing and not app.in_recovery

    metrics.ready.set_function(lambda: float(ready()))
    watch = ReadyWatch(settings.stall_warning_seconds, lambda: _describe(app, settings))

    # Per source partition, the offset after the last record handled (see `undelivered`); reset when the
    # assignment changes, since Faust then seeks every partition to its committed offset itself.
    next_offsets: dict = {}
    sought: dict = {}  # partition -> (offset it was last sought back to, how many times in a row)
    source_topics = {settings.predictions_topic, settings.outcomes_topic} - {""}
    last_event_at = time.monotonic()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked, **kwargs) -> None:
        next_offsets.clear()
        sought.clear()

    @app.agent(source)
    async def join(stream):
        nonlocal last_event_at
        async for event in stream.events():
            message = event.message
            next_offsets[message.tp] = message.offset + 1
            sought.pop(message.tp, None)
            # In flight from here to the changelog acks: a slow send must not look idle to the re-read check
            # (the records Faust has buffered behind this one are delivered, just not handled yet).
            last_event_at = None
            forward, update = logic.handle(event.key, event.value)
            for key, value in forward:
                # Acknowledged before the table records it: a crash in between replays, never loses.
                await (await labeled.send(key=key, value=value))
            update()
            if changelog_writes:  # acknowledged before the event is acked (and its offset committable)
                writes = changelog_writes[:]
                changelog_writes.clear()
                await asyncio.gather(*writes)
            last_event_at = time.monotonic()

    @app.timer(settings.sweep_seconds)
    async def sweep():
        if app.in_recovery or app.rebalancing:
            return
        orphaned, expired = logic.sweep()
        changelog_writes.clear()  # no offset waits on the sweep's deletes
        if orphaned or expired:
            log.info("TTL sweep: %d orphaned outcomes, %d predictions expired without outcome", orphaned, expired)

    idle_seconds = max(4 * settings.commit_interval_seconds, 2.0)

    def _idle() -> bool:
        return ready() and last_event_at is not None and time.monotonic() - last_event_at >= idle_seconds

    @app.timer(idle_seconds / 2)
    async def reread_undelivered():
        """Idle and ready, but a partition's position is past what the join handled: seek back (at least once)."""
        if not _idle():
            return
        consumer = app.consumer
        expected = {}
        for tp in consumer.assignment():
            if tp.topic not in source_topics:
                continue  # changelog partitions: read by the table recovery, not by the join
            if tp in next_offsets:
                expected[tp] = next_offsets[tp]
                continue
            # Nothing handled yet on this partition since it was assigned: it starts where Faust sought it
            # (the committed offset, which Faust records in this private map: it has no public getter), or
            # at the partition's beginning when the group has none (auto_offset_reset earliest).
            start = consumer._committed_offset.get(tp)
            if start is None and settings.auto_offset_reset == "earliest":
                start = next(iter((await consumer.earliest_offsets(tp)).values()), None)
            if start is not None:
                expected[tp] = start
        positions = {tp: await consumer.position(tp) for tp in expected}
        if not _idle():
            return  # a record or a rebalance came in the meantime
        for tp, offset in undelivered(expected, positions).items():
            last, times = sought.get(tp, (None, 0))
            times = times + 1 if last == offset else 1
            if times > 3:
                # Sought back there three times and nothing came: offsets with no record (transaction markers,
                # a compacted topic), not a drop (Faust can drop a re-read too). Go on from the position.
                log.info("%s[%d]: no records at offsets %d..%d (transaction markers or compaction)",
                         tp.topic, tp.partition, offset, positions[tp] - 1)
                next_offsets[tp] = positions[tp]
                continue
            log.warning("%s[%d]: records %d..%d were fetched but never reached the join: re-reading them",
                        tp.topic, tp.partition, offset, positions[tp] - 1)
            sought[tp] = (offset, times)
            await app.consumer.seek(tp, offset)

    @app.timer(min(max(settings.stall_warning_seconds / 4, 0.25), 5.0))
    async def watch_ready():
        is_ready = ready()
        watch.check(is_ready)
        if settings.exit_on_stall and not is_ready and watch.logged and _member(app)[0] == "":
            dropped = time.monotonic() - watch.since
            if dropped >= settings.stall_warning_seconds + settings.rebalance_timeout_seconds:
                log.error("dropped from the group and not rejoining for %.0f s: exiting with status %d "
                          "(--exit-on-stall) for a restart", dropped, EXIT_STALLED)
                logging.shutdown()
                os._exit(EXIT_STALLED)  # the consumer thread is stuck: a clean stop would wait on it

    app.fairwatch_logic = logic
    return app


__all__ = ["JoinSettings", "JoinMetrics", "JoinLogic", "ReadyWatch", "EXIT_STALLED", "build_app", "undelivered", "heartbeat_interval", "topic_partitions", "DEFAULT_LABELED_TOPIC"]
