"""The worker on confluent-kafka (librdkafka, in C): the default client.

librdkafka fetches and decodes record batches on its own threads, in C, so
this backend needs no fetch child process: the worker's thread takes the
decoded messages (``consume``), hands their values to the parser in one list
comprehension and applies them. Rebalance callbacks run inside ``consume``
on the worker's own thread, so the commit before a revocation is a plain
synchronous commit, and the starting offset of each assigned partition is
set in ``assign``: max(the group's committed offset, the offset this worker's
snapshot or pipeline already holds).

librdkafka drops, inside one ``consume`` call, the messages fetched before a
rebalance, a seek or a pause of their partition (a version barrier), so a
batch never mixes records of an old assignment with a new one.
"""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from fairwatch.consumers.fetch_process import FetchedRecord
from fairwatch.consumers.kafka_clients import CONNECT_TIMEOUT_SECONDS, log_client_error
from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.consumers.kafka_worker import POLL_TIMEOUT_MS, KafkaWorker, Partition, _format_partitions

log = logging.getLogger("fairwatch.worker")

COMMITTED_TIMEOUT_SECONDS = 30.0  # asking the group's committed offsets when partitions are assigned
# librdkafka's own default, raised when fetch.max.bytes needs more (it must exceed it by 512).
_RECEIVE_MESSAGE_MAX_BYTES = 100_000_000


class ConfluentWorker(KafkaWorker):
    """``KafkaWorker`` on a confluent-kafka consumer group (``[kafka] client = "confluent"``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._assigned: frozenset[Partition] = frozenset()
        self._held: list[TopicPartition] = []  # outcome partitions paused by the pacing
        self._group_state = "joining"
        self._errors_seen: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------
    def connect(self) -> None:
        s = self.settings
        self._open_dead_letters()
        consumer = Consumer(consumer_config(s), logger=logging.getLogger("fairwatch.librdkafka"))
        try:
            # librdkafka connects lazily: ask for metadata so that a wrong address fails here.
            consumer.list_topics(timeout=CONNECT_TIMEOUT_SECONDS)
        except KafkaException:
            consumer.close()
            raise
        self.consumer = consumer
        consumer.subscribe(s.topics(), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _close_client(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                consumer.close()  # leaves the group; on_revoke commits nothing new after the shutdown commit
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer: %s", exc)

    # -- the loop ----------------------------------------------------------------
    def poll_once(self) -> int:
        """One poll, applied. Returns the number of records applied."""
        consumer, limit = self.consumer, self.settings.max_poll_records
        # consume(n, timeout) waits until n messages or the timeout: with records queued, take
        # them without waiting; else block in poll() only until the first one arrives.
        messages = consumer.consume(limit, 0)
        if not messages:
            first = consumer.poll(POLL_TIMEOUT_MS / 1000)
            if first is not None:
                messages = [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]
        applied = self._apply_messages(messages) if messages else 0
        self._after_poll(applied)
        return applied

    def _apply_messages(self, messages: list) -> int:
        """Apply one consume() result, predictions first (outcomes of the same batch find them).

        Per message only the C accessors run, inside comprehensions: no record object or tuple is built."""
        if [m for m in messages if m.error() is not None]:
            messages = self._without_errors(messages)
        predictions, outcomes = self.settings.predictions_topic, self.settings.outcomes_topic
        by_topic = {predictions: messages}
        if outcomes:
            by_topic[outcomes] = [m for m in messages if m.topic() == outcomes]
            if by_topic[outcomes]:
                by_topic[predictions] = [m for m in messages if m.topic() != outcomes]
                messages = by_topic[predictions] + by_topic[outcomes]
        if not messages:
            return 0
        # Offsets rise within a partition: the last message of each partition says where it ends.
        ends = [(Partition(topic, partition), offset) for topic, batch in by_topic.items()
                for partition, offset in {m.partition(): m.offset() for m in batch}.items()]
        timestamps = [m.timestamp()[1] for m in messages] if self.on_batch is not None else None
        applied = self.apply([m.value() for m in messages], lambda i: _record(messages[i]), timestamps)
        self._unconfirmed.difference_update(tp for tp, _ in ends)  # a message says where it stands
        self._applied(ends, {topic: len(batch) for topic, batch in by_topic.items()})
        return applied

    def _without_errors(self, messages: list) -> list:
        """Error events from consume(): log each kind once; a fatal one stops the worker."""
        for m in messages:
            err = m.error()
            if err is None:
                continue
            if err.fatal():
                raise KafkaException(err)
            text = err.str()
            if text not in self._errors_seen:
                self._errors_seen.add(text)
                log.warning("consumer: %s (%s[%s])", text, m.topic(), m.partition())
        return [m for m in messages if m.error() is None]

    # -- the backend's view of the group ------------------------------------------------
    def assignment(self) -> frozenset:
        return self._assigned

    def _commit_offsets(self, offsets: dict[Partition, int]) -> None:
        results = self.consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, offset)
                                                for tp, offset in offsets.items()], asynchronous=False)
        refused = [r for r in results or () if r.error is not None]
        if refused:
            raise KafkaException(refused[0].error)

    def _highwater(self, tp) -> int | None:
        # cached=True: the high watermark of the last fetch response (no request). Right on
        # Tansu, whose ListOffsets answers the base offset of the last batch + 1.
        _, high = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
        return high if high >= 0 else None

    def _hold_outcomes(self, hold: bool) -> None:
        if hold and not self._held:
            outcomes = self.settings.outcomes_topic
            self._held = [TopicPartition(tp.topic, tp.partition) for tp in self._assigned if tp.topic == outcomes]
            if self._held:
                self.consumer.pause(self._held)
        elif not hold and self._held:
            self.consumer.resume(self._held)
            self._held = []

    def _group_settled(self) -> bool:
        return self._group_state == "settled"

    def _describe_client(self) -> list[str]:
        return [f"group {self._group_state} (member {self.consumer.memberid() if self.consumer else '?'})",
                f"outcomes held {len(self._held)} partitions"]

    # -- rebalances (inside consume(), on this thread) ------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = [Partition(p.topic, p.partition) for p in partitions]
        rewind = self._rewind and bool(partitions)
        if rewind:
            self._rewind = False
        committed: dict[Partition, int] = {}
        if partitions and not rewind:
            try:
                committed = {Partition(p.topic, p.partition): p.offset
                             for p in consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_SECONDS)}
            except KafkaException as exc:
                log.warning("reading the committed offsets failed (%s): resuming from this worker's own "
                            "offsets where it has them, else from the group's", exc)
        starts = []
        for tp in assigned:
            if rewind:
                self.offsets.pop(tp, None)
                start = OFFSET_BEGINNING
            else:
                # Past the committed offset, what this worker applied (and snapshotted before a
                # crash) is not read again.
                known = [o for o in (committed.get(tp, -1), self.offsets.get(tp, -1)) if o >= 0]
                start = max(known) if known else OFFSET_INVALID  # none: the reset policy
            if start >= 0:
                self.offsets[tp] = start
                self._unconfirmed.discard(tp)
            else:
                self._unconfirmed.add(tp)  # committed only once a message says where it stands
            starts.append(TopicPartition(tp.topic, tp.partition, start))
        consumer.assign(starts)
        self._assigned = frozenset(assigned)
        self._group_state = "settled"
        if rewind:
            log.info("rebuilding: reading %s from the oldest retained offsets", _format_partitions(assigned))
        log.info("assigned %s", _format_partitions(assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was applied while the partitions are still ours."""
        self._group_state = "rebalancing"
        if self._held:
            consumer.resume(self._held)  # the next owner (maybe us) starts unpaused
            self._held = []
        offsets = self.prepare_rebalance_commit()
        if offsets:
            try:
                self._commit_offsets(offsets)
            except KafkaException as exc:
                log.warning("commit before rebalance failed: %s", exc)
            else:
                self.committed_ok(offsets, "rebalance")
        self._assigned = self._assigned - {Partition(p.topic, p.partition) for p in partitions}

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Evicted (e.g. stalled past the session timeout): a commit would be refused.
        lost = {Partition(p.topic, p.partition) for p in partitions}
        self._assigned = self._assigned - lost
        self._held = []
        self._group_state = "rebalancing"
        log.warning("lost %s without a chance to commit; their new owner resumes from the last commit",
                    _format_partitions(lost))



def consumer_config(s: KafkaSettings) -> dict:
    """The worker's librdkafka consumer settings."""
    return {
        **s.librdkafka_config(),
        "group.id": s.group_id,
        "client.id": s.client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": s.auto_offset_reset,
        "session.timeout.ms": s.session_timeout_ms,
        "heartbeat.interval.ms": max(s.session_timeout_ms // 3, 100),
        "max.poll.interval.ms": s.max_poll_interval_ms,
        # Range keeps partition N of the predictions and outcomes topics on one worker.
        "partition.assignment.strategy": "range",
        # As with kafka-python, a record larger than these still comes back alone, so a 5 MB
        # event cannot wedge its partition; the parser then refuses it as oversized.
        "max.partition.fetch.bytes": s.max_partition_fetch_bytes,
        "fetch.max.bytes": s.fetch_max_bytes,
        "receive.message.max.bytes": max(_RECEIVE_MESSAGE_MAX_BYTES, s.fetch_max_bytes + 512),
        "error_cb": log_client_error,
    }


def _record(message) -> FetchedRecord:
    """The fields of a refused message that the dead-letter topic needs."""
    return FetchedRecord(message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                         message.timestamp()[1], message.headers() or [])


__all__ = ["ConfluentWorker", "consumer_config"]
