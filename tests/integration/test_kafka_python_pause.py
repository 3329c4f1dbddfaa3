"""kafka-python pauses and resumes the outcomes partitions (pacing); a resumed partition is read to its end.

kafka-python 3.0.x parks the records it had fetched for a partition that gets
paused and, after ``resume``, gives them back only while no consumed batch sits
in its next-in-line slot, which is almost never: a partition paused part-way
through a fetched batch was then never fetched again (``release_parked_records``
in consumers/fetch_process.py). These tests fail without that workaround.
"""

from __future__ import annotations

import pytest
from conftest import produce, wait_for
from streams import synthetic_stream

from fairwatch.consumers.fetch_process import release_parked_records
from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.consumers.kafka_worker import make_worker
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline

pytestmark = pytest.mark.kafka


def test_a_partition_paused_part_way_through_a_batch_is_read_to_its_end_after_resume(broker, topics):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic, per_partition = topics["predictions"], 2000
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5, batch_size=256 << 10)
    for partition in (0, 1):
        for _ in range(per_partition):
            producer.send(topic, value=b"x" * 50, partition=partition)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=None, enable_auto_commit=False)
    got = {0: 0, 1: 0}

    def poll(max_records: int) -> set:
        release_parked_records(consumer)
        polled = consumer.poll(timeout_ms=200, max_records=max_records)
        for tp, records in polled.items():
            got[tp.partition] += len(records)
        return {tp.partition for tp in polled}

    try:
        partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        # Ten records of one partition: the rest of its fetched batch waits in the consumer.
        first = wait_for(lambda: poll(10), 30, "nothing fetched")
        assert len(first) == 1 and got[min(first)] == 10, got
        paused, other = partitions[min(first)], partitions[1 - min(first)]
        consumer.pause(paused)
        wait_for(lambda: poll(10) and got[other.partition] > 0, 30, lambda: f"the other partition never came: {got}")
        consumer.resume(paused)

        def read_all() -> bool:
            poll(500)
            return got == {0: per_partition, 1: per_partition}

        wait_for(read_all, 30,
                 lambda: f"read {got} of {per_partition} each; the resumed partition {paused.partition} stands at "
                         f"{consumer.position(paused)}, its high watermark {consumer.highwater(paused)}")
    finally:
        consumer.close()


@pytest.mark.parametrize("fetch_process", [True, False], ids=["fetch-process", "one-thread"])
def test_outcomes_held_back_and_released_are_read_to_their_end(broker, topics, fetch_process):
    """The worker holds the outcomes back while its early-outcome buffer is half full (``_pace_outcomes``)."""
    messages, _ = synthetic_stream(20_000, topics)
    # The outcomes first, in small record batches; their predictions after them, newest first. The worker
    # reads outcomes whose predictions come last, holds them back part-way through a fetched batch, and
    # releases them when the buffer drains or the predictions are caught up.
    outcomes = [m for m in messages if m[0] == topics["outcomes"]]
    predictions = [m for m in messages if m[0] == topics["predictions"]][::-1]
    ends = {**produce(broker.bootstrap_servers, outcomes, batch_size=16 << 10),
            **produce(broker.bootstrap_servers, predictions)}
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, predictions_topic=topics["predictions"],
                             outcomes_topic=topics["outcomes"], dlq_topic=topics["dlq"], group_id=topics["group"],
                             session_timeout_ms=6000, max_poll_interval_ms=10000, client="kafka-python",
                             fetch_process=fetch_process, max_poll_records=100,
                             max_partition_fetch_bytes=16 << 10)
    worker = make_worker(settings, Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[],
                                                          early_outcome_capacity=1000)))
    holds = []
    hold_outcomes = worker._hold_outcomes

    def watched(hold: bool) -> None:
        if not holds or holds[-1] != hold:
            holds.append(hold)
        hold_outcomes(hold)

    worker._hold_outcomes = watched
    worker.connect()
    try:
        def applied_all() -> bool:
            worker.poll_once()
            return sum(worker.records.values()) == len(messages)

        wait_for(applied_all, 60, lambda: f"applied {sum(worker.records.values())} of {len(messages)}; "
                                          f"holds {holds}; {worker.describe()}")
        assert {(tp.topic, tp.partition): o for tp, o in worker.offsets.items()} == ends
        assert True in holds and holds[-1] is False, f"the outcomes were never held back and released: {holds}"
    finally:
        worker.close()
