"""The worker says, in one line, where it stands when it stops making progress with records waiting."""

from __future__ import annotations

import logging
import time

import pytest
from conftest import CLIENTS, produce, wait_for

from fairwatch.consumers import kafka_worker
from fairwatch.consumers.kafka_config import KafkaSettings
from fairwatch.consumers.kafka_worker import make_worker
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline

pytestmark = pytest.mark.kafka


# What each backend adds to the line: the fetch child's state (kafka-python), the member (confluent).
CLIENT_WORDS = {"kafka-python": ("group settled", "fetch process alive"), "confluent": ("group settled", "member ")}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_stall_is_logged_once_with_the_lag_group_and_offsets(broker, topics, caplog, monkeypatch, client):
    produce(broker.bootstrap_servers, [(topics["predictions"], b"e%d" % i,
                                        b'{"event_id": "e%d", "prediction": 1, "groups": {"g": "a"}}' % i)
                                       for i in range(50)])
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, predictions_topic=topics["predictions"],
                             outcomes_topic=None, dlq_topic=topics["dlq"], group_id=topics["group"],
                             session_timeout_ms=6000, max_poll_interval_ms=10000, client=client)
    worker = make_worker(settings, Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[])))
    worker.connect()
    try:
        def applied_all() -> bool:  # one poll may bring fewer than 50 (confluent takes what is queued)
            worker.poll_once()
            return worker.records[topics["predictions"]] == 50

        wait_for(applied_all, 60,
                 lambda: f"applied {worker.records[topics['predictions']]} of 50")
        # Only what the progress watch says counts here: on a loaded machine the client may
        # already have logged a slow heartbeat or rebalance while the 50 records came in.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fairwatch.worker"):
            worker._watch_progress(0)
            assert not ours(caplog.records), "caught up: an idle stream is not a stall"
            monkeypatch.setattr(kafka_worker, "STALL_SECONDS", 0.0)
            worker.lag = {next(iter(worker.lag)): 7}  # records wait, nothing applied
            time.sleep(0.01)
            worker._watch_progress(0)
            worker._watch_progress(0)
        (record,) = ours(caplog.records)  # once, not on every loop
        line = record.getMessage()
        assert "\n" not in line
        for words in ("no record applied", "lag 7", f"client {client}", *CLIENT_WORDS[client]):
            assert words in line, line
        assert sum(worker.offsets.values()) == 50
        for tp, offset in worker.offsets.items():
            assert f"{tp.topic}[{tp.partition}]={offset}" in line
    finally:
        worker.close()


def ours(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """The worker's own records: the client's loggers may warn meanwhile (a slow heartbeat)."""
    return [r for r in records if r.name == "fairwatch.worker"]
