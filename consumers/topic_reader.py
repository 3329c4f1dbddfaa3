"""Read a topic back from a time on, without a consumer group: the records ``fairwatch export`` joins.

Each partition is assigned (no group, so nothing is ever committed and no
rebalance is waited for), sought to the first offset at or after the start
time (``offsets_for_times``), and read until the end it had when the read
began, or, with ``stop_after_ms``, until its first record past that time.
A topic that stays idle therefore ends the read instead of blocking it.

Two broker answers are treated as hints, not truths, so the same code is
exact on Kafka and on Tansu (the broker of the tests and of ``fairwatch
dev-broker``): records before the start time are skipped even after the
seek (Tansu answers a time lookup with the partition's first batch), and
the end is the high watermark of the first fetch response (Tansu's
``ListOffsets`` answers the base offset of the last record batch + 1).

kafka-python only: ``fairwatch export`` is a one-shot reader, not the hot
path, and confluent-kafka's ``get_watermark_offsets`` asks ``ListOffsets``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from fairwatch.consumers.kafka_config import KafkaSettings

POLL_TIMEOUT_MS = 500
# A read that gets neither records nor a first high watermark for this long is given up with one line.
STALL_SECONDS = 60.0


class TopicReadError(RuntimeError):
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
    """The records of ``topic`` with a timestamp at or after ``start_ms``, partition by partition in offset
    order (partitions interleaved), up to the end each partition had at the start of the read."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.client_kwargs(), client_id=f"{settings.client_id}-export", group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=200,
                             max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
                             fetch_max_bytes=settings.fetch_max_bytes)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicReadError(f"topic {topic!r} does not exist")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        starts = consumer.offsets_for_times({tp: start_ms for tp in assigned})
        reading = set()
        for tp in assigned:
            found = starts.get(tp)
            if found is None:  # no record at or after the start time
                continue
            consumer.seek(tp, found.offset)
            reading.add(tp)
        consumer.pause(*(set(assigned) - reading))
        yield from _read(consumer, reading, start_ms, stop_after_ms, stall_seconds)
    finally:
        consumer.close(autocommit=False)


def _read(consumer, reading: set, start_ms: int, stop_after_ms: int | None, stall_seconds: float):
    ends: dict = {}  # partition -> its high watermark at its first fetch: where the read of it stops
    last_progress = time.monotonic()

    def finish(tp) -> None:
        reading.discard(tp)
        consumer.pause(tp)

    while reading:
        batches = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
        for tp in list(reading):
            if tp not in ends and consumer.highwater(tp) is not None:
                ends[tp] = consumer.highwater(tp)
                last_progress = time.monotonic()
        for tp, records in batches.items():
            last_progress = time.monotonic()
            for record in records:
                if tp not in reading:
                    break
                if tp in ends and record.offset >= ends[tp]:
                    finish(tp)
                elif stop_after_ms is not None and record.timestamp > stop_after_ms:
                    finish(tp)
                elif record.timestamp >= start_ms:
                    yield TopicRecord(tp.topic, tp.partition, record.offset, record.timestamp, record.value)
        for tp in list(reading):
            if tp in ends and consumer.position(tp) >= ends[tp]:
                finish(tp)
        if reading and time.monotonic() - last_progress > stall_seconds:
            names = ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in reading))
            raise TopicReadError(f"no answer from the broker for {stall_seconds:.0f} s while reading {names}")


__all__ = ["TopicReadError", "TopicRecord", "read_topic_since"]
