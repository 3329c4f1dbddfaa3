"""Read a topic back from a time on, without a consumer group: the records ``fairwatch export`` joins.

Each partition is assigned (no group is joined, so nothing is ever
committed and no rebalance is waited for), sought to the first offset at or
after the start time (``offsets_for_times``), and read until the end it had
when the read began, or, with ``stop_after_ms``, until its first record past
that time. A topic that stays idle therefore ends the read.

Two broker answers are treated as hints, not truths, so the same code is
exact on Kafka and on Tansu (the broker of the tests and of ``fairwatch
dev-broker``): records before the start time are skipped even after the
seek (Tansu answers a time lookup with the partition's first batch), and
the end is the high watermark of the first fetch response (Tansu's
``ListOffsets`` answers the base offset of the last record batch + 1).

Both client libraries (``KafkaSettings.client``) sit behind the same few
calls (``_KafkaPythonPartitions``, ``_ConfluentPartitions``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.monitor.errors import FairwatchError

POLL_SECONDS = 0.5
MAX_RECORDS_PER_POLL = 5000
# A read that gets neither records nor a first high watermark for this long is given up with one line.
STALL_SECONDS = 60.0


# If retention deletes the sought offset before the fetch, both clients reset the position, by default to the
# end: the window would be skipped without a word. From the earliest offset left, the time filter still holds.
RESET_TO_EARLIEST = "earliest"


class TopicReadError(FairwatchError, RuntimeError):
    """The topic cannot be read (missing, or the broker stopped answering): one line for the CLI."""


@dataclass(frozen=True, slots=True)
class TopicRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None

    def where(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def read_topic_since(settings: KafkaSettings, topic: str, start_ms: int, stop_after_ms: int | None = None, *,
                     stall_seconds: float = STALL_SECONDS) -> Iterator[TopicRecord]:
    """The records of ``topic`` with a timestamp at or after ``start_ms``, each partition in offset order
    (partitions interleaved), up to the end each partition had at the start of the read."""
    client = (_ConfluentPartitions if settings.client == "confluent" else _KafkaPythonPartitions)(settings, topic)
    try:
        partitions = client.partitions()
        if not partitions:
            raise TopicReadError(f"topic {topic!r} does not exist")
        starts = {p: offset for p, offset in client.offsets_at(partitions, start_ms).items() if offset is not None}
        client.assign(starts)
        yield from _read(client, topic, dict(starts), start_ms, stop_after_ms, stall_seconds)
    finally:
        client.close()


def _read(client, topic: str, next_offsets: dict[int, int], start_ms: int, stop_after_ms: int | None,
          stall_seconds: float) -> Iterator[TopicRecord]:
    """``next_offsets``: partition -> the next offset to read, for the partitions still read."""
    ends: dict[int, int] = {}  # partition -> its high watermark at its first fetch: where its read stops
    last_progress = time.monotonic()

    def finish(partition: int) -> None:
        del next_offsets[partition]
        client.pause(partition)

    while next_offsets:
        records = client.poll()
        for partition in next_offsets.keys() - ends.keys():
            high = client.high_watermark(partition)
            if high is not None:
                ends[partition] = high
                last_progress = time.monotonic()
        for partition, offset, timestamp_ms, value in records:
            last_progress = time.monotonic()
            if partition not in next_offsets:
                continue
            past_end = partition in ends and offset >= ends[partition]
            if past_end or (stop_after_ms is not None and timestamp_ms > stop_after_ms):
                finish(partition)
                continue
            next_offsets[partition] = offset + 1
            if timestamp_ms >= start_ms:
                yield TopicRecord(topic, partition, offset, timestamp_ms, value)
        for partition in [p for p in next_offsets if p in ends]:
            if max(next_offsets[partition], client.position(partition)) >= ends[partition]:
                finish(partition)
        if next_offsets and time.monotonic() - last_progress > stall_seconds:
            names = ", ".join(f"{topic}/{p}" for p in sorted(next_offsets))
            raise TopicReadError(f"no answer from the broker for {stall_seconds:.0f} s while reading {names}")


class _KafkaPythonPartitions:
    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        from kafka import KafkaConsumer

        self.topic = topic
        self.consumer = KafkaConsumer(**settings.client_kwargs(), client_id=f"{settings.client_id}-export",
                                      group_id=None, enable_auto_commit=False, fetch_max_wait_ms=200,
                                      auto_offset_reset=RESET_TO_EARLIEST,
                                      max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
                                      fetch_max_bytes=settings.fetch_max_bytes)

    def _tp(self, partition: int):
        from kafka import TopicPartition

        return TopicPartition(self.topic, partition)

    def partitions(self) -> list[int]:
        return sorted(self.consumer.partitions_for_topic(self.topic) or ())

    def offsets_at(self, partitions: list[int], timestamp_ms: int) -> dict[int, int | None]:
        self.consumer.assign([self._tp(p) for p in partitions])  # kafka-python looks up assigned partitions only
        found = self.consumer.offsets_for_times({self._tp(p): timestamp_ms for p in partitions})
        return {tp.partition: (hit.offset if hit is not None else None) for tp, hit in found.items()}

    def assign(self, starts: dict[int, int]) -> None:
        self.consumer.assign([self._tp(p) for p in starts])
        for partition, offset in starts.items():
            self.consumer.seek(self._tp(partition), offset)

    def poll(self):
        batches = self.consumer.poll(timeout_ms=int(POLL_SECONDS * 1000), max_records=MAX_RECORDS_PER_POLL)
        return [(tp.partition, r.offset, r.timestamp, r.value) for tp, records in batches.items() for r in records]

    def high_watermark(self, partition: int) -> int | None:
        return self.consumer.highwater(self._tp(partition))

    def position(self, partition: int) -> int:
        return self.consumer.position(self._tp(partition))

    def pause(self, partition: int) -> None:
        self.consumer.pause(self._tp(partition))

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class _ConfluentPartitions:
    # librdkafka wants a group id even for assign(); this one is never joined and nothing is committed to it.
    UNJOINED_GROUP = "fairwatch-export-unjoined"
    TIMEOUT_SECONDS = 10.0

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        # log_level 2 (critical): librdkafka retries a broker it cannot reach and logs each try; a one-shot
        # read ends in one line instead (TopicReadError, or the client's exception, on its timeout).
        self.consumer = Consumer({**settings.librdkafka_config(), "client.id": f"{settings.client_id}-export",
                                  "group.id": self.UNJOINED_GROUP, "enable.auto.commit": False,
                                  "enable.auto.offset.store": False, "fetch.wait.max.ms": 200,
                                  "auto.offset.reset": RESET_TO_EARLIEST,
                                  "max.partition.fetch.bytes": settings.max_partition_fetch_bytes,
                                  "log_level": 2})

    def _tp(self, partition: int, offset: int | None = None):
        from confluent_kafka import TopicPartition

        if offset is None:
            return TopicPartition(self.topic, partition)
        return TopicPartition(self.topic, partition, offset)

    def partitions(self) -> list[int]:
        from confluent_kafka import KafkaException

        try:
            metadata = self.consumer.list_topics(self.topic, timeout=self.TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise TopicReadError(f"no broker answered: {exc.args[0].str() if exc.args else exc}") from None
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def offsets_at(self, partitions: list[int], timestamp_ms: int) -> dict[int, int | None]:
        found = self.consumer.offsets_for_times([self._tp(p, timestamp_ms) for p in partitions],
                                                timeout=self.TIMEOUT_SECONDS)
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}  # -1: none at or after

    def assign(self, starts: dict[int, int]) -> None:
        self.consumer.assign([self._tp(p, offset) for p, offset in starts.items()])

    def poll(self):
        out = []
        for message in self.consumer.consume(MAX_RECORDS_PER_POLL, POLL_SECONDS):
            if message.error() is not None:  # partition EOF and transient errors: librdkafka goes on
                continue
            out.append((message.partition(), message.offset(), message.timestamp()[1], message.value()))
        return out

    def high_watermark(self, partition: int) -> int | None:
        # cached: the high watermark of the last fetch response; before the first one, OFFSET_INVALID (-1001).
        _low, high = self.consumer.get_watermark_offsets(self._tp(partition), cached=True)
        return high if high >= 0 else None

    def position(self, partition: int) -> int:
        return self.consumer.position([self._tp(partition)])[0].offset  # -1001 until a record is read

    def pause(self, partition: int) -> None:
        self.consumer.pause([self._tp(partition)])

    def close(self) -> None:
        self.consumer.close()


__all__ = ["TopicReadError", "TopicRecord", "read_topic_since"]
