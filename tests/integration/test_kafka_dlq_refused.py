"""A dead letter the broker refuses stops the worker before any commit passes its record; a restart reads it again."""

from __future__ import annotations

import pytest
from conftest import CLIENTS, produce, wait_for

from fairwatch.consumers.dead_letters import DeadLettersUndelivered
from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.consumers.kafka_worker import make_worker
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline

pytestmark = pytest.mark.kafka

GOOD = b'{"event_id": "%s", "prediction": 1, "groups": {"g": "a"}}'


def worker_with_dlq(broker, topics, client: str, dlq_topic: str):
    # Built directly, not parsed: the [kafka] table refuses an illegal topic name, but a broker can still
    # refuse a legal one (an ACL, a full disk); the illegal name makes this broker refuse it.
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, predictions_topic=topics["predictions"],
                             outcomes_topic=None, dlq_topic=dlq_topic, group_id=topics["group"],
                             session_timeout_ms=6000, max_poll_interval_ms=10000, client=client,
                             fetch_process=False)
    worker = make_worker(settings, Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[])))
    worker.connect()
    return worker


def apply_all(worker, topic: str, n: int) -> None:
    def applied_all() -> bool:
        worker.poll_once()
        return worker.records[topic] >= n

    wait_for(applied_all, 60, lambda: f"applied {worker.records[topic]} of {n}")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_refused_dead_letter_stops_the_worker_and_nothing_is_committed_past_it(broker, topics, client):
    predictions = topics["predictions"]
    produce(broker.bootstrap_servers, [(predictions, b"k", GOOD % b"g1"), (predictions, b"k", b"not json"),
                                       (predictions, b"k", GOOD % b"g2")])
    worker = worker_with_dlq(broker, topics, client, "refused dlq!")
    try:
        apply_all(worker, predictions, 3)
        with pytest.raises(DeadLettersUndelivered) as raised:
            worker.commit("timer")
        line = str(raised.value)
        assert "\n" not in line
        assert "1 dead letter not delivered to refused dlq!" in line, line
        assert f"{predictions}[" in line and "]@1" in line, line  # the refused record, where it stands
        assert worker.committed == {}, "an offset was committed past the refused dead letter"
        assert dict(worker.dead_letters.sent) == {}, "a dead letter the broker refused was counted as sent"
        assert worker.commit("shutdown") and worker.prepare_commit() == {}, "a later commit would pass it"
        with pytest.raises(DeadLettersUndelivered):
            worker.apply([GOOD % b"g3"], lambda i: None)  # and the worker applies nothing more
    finally:
        worker.close()  # a rebalance on close commits nothing either

    # The group's next member reads all three again and dead-letters the bad one where the broker takes it.
    again = worker_with_dlq(broker, topics, client, topics["dlq"])
    try:
        apply_all(again, predictions, 3)
        assert again.commit("timer")
        assert sum(again.committed.values()) == 3
        assert dict(again.dead_letters.sent) == {"not_json": 1} and again.dead_letters.errors == 0
    finally:
        again.close()


def run_revoke_callback(worker, client: str) -> None:
    """What the client runs on this worker when its group rebalances: the commit before partitions go."""
    if client == "confluent":
        from confluent_kafka import TopicPartition

        worker._on_revoke(worker.consumer, [TopicPartition(tp.topic, tp.partition) for tp in worker.assignment()])
    else:
        import asyncio

        from kafka import TopicPartition

        from fairwatch.consumers.kafka_python_worker import _CommitOnRebalance

        asyncio.run(_CommitOnRebalance(worker).on_partitions_revoked(
            {TopicPartition(tp.topic, tp.partition) for tp in worker.assignment()}))


@pytest.mark.parametrize("client", CLIENTS)
def test_a_refusal_found_by_a_rebalance_commit_stops_the_run_with_its_own_error(broker, topics, client):
    """Inside a rebalance callback the error would come back wrapped by the client (kafka-python: "User
    rebalance callback throws an error"), or not at all: the callback keeps it, and the poll loop raises it."""
    predictions = topics["predictions"]
    produce(broker.bootstrap_servers, [(predictions, b"k", b"not json"), (predictions, b"k", GOOD % b"g1")])
    worker = worker_with_dlq(broker, topics, client, "refused dlq!")
    apply_all(worker, predictions, 2)
    run_revoke_callback(worker, client)  # does not raise: the client would swallow or wrap it
    assert isinstance(worker.failure, DeadLettersUndelivered) and worker.committed == {}
    with pytest.raises(DeadLettersUndelivered, match="1 dead letter not delivered to refused dlq!"):
        worker.run()  # closes the worker too
