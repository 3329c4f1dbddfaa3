"""Bad records on the topic go to the dead-letter topic untouched; the worker keeps counting the good ones."""

from __future__ import annotations

import json

import pytest
from conftest import CLIENT_FLAGS, produce, total, wait_for

from fairwatch.consumers import dead_letters as dlq
from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names

pytestmark = pytest.mark.kafka


def event(event_id: str, **extra) -> bytes:
    return json.dumps({"event_id": event_id, "prediction": 1, "score": 0.7, "groups": {"sex": "F"}, **extra}).encode()


def read_topic(bootstrap: str, topic: str, expected: int) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    from kafka import TopicPartition

    consumer.assign([TopicPartition(topic, p) for p in range(4)])
    records: list = []
    wait_for(lambda: records.extend(r for batch in consumer.poll(500).values() for r in batch)
             or len(records) >= expected, 30, lambda: f"{len(records)} of {expected} dead letters on {topic}")
    consumer.close()
    return records


@pytest.mark.parametrize("client", CLIENT_FLAGS)
def test_bad_records_reach_the_dlq_and_the_worker_keeps_going(broker, topics, workers, client):
    worker = workers("--privacy-floor", "1", "--min-group-size", "1", *CLIENT_FLAGS[client])  # export the tiny group
    big = b'{"event_id": "big", "prediction": 1, "groups": {"sex": "F"}, "text": "' + b"x" * (5 << 20) + b'"}'
    bad = {  # key -> (value, reason)
        b"not-json": (b"\x00\xffnot json at all", "not_json"),
        b"truncated": (event("truncated")[:25], "not_json"),
        b"wrong-types": (b'{"event_id": "w", "prediction": "yes", "groups": {"sex": 3}}', "wrong_type"),
        b"big": (big, "oversized"),
        b"tombstone": (None, "missing_field"),
    }
    good = [(b"g1", event("g1")), (b"g2", event("g2", label=1)),
            (b"", event("empty-key")),  # keys only route records; the id is in the body
            (b"unknown", event("unknown-fields", colour="blue", nested={"a": [1, 2]})),
            (b"g3", event("g3"))]
    messages = []
    for (key, value), (bad_key, (bad_value, _)) in zip(good, bad.items()):
        messages += [(topics["predictions"], key, value), (topics["predictions"], bad_key, bad_value)]
    messages.append((topics["predictions"], b"last", event("last")))
    produce(broker.bootstrap_servers, messages, max_request_size=8 << 20)

    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) == len(messages), 60,
             lambda: f"applied {total(worker.metrics(), consumer_names.CONSUMER_RECORDS)} of {len(messages)}; "
                     f"log:\n{worker.log()}")
    assert worker.alive(), worker.log()
    m = worker.metrics()
    assert total(m, names.EVENTS, status="valid") == len(good) + 1
    assert total(m, names.GROUP_EVENTS, attribute="sex", group="F", cell="predictions") == len(good) + 1
    assert total(m, names.EVENTS, status="invalid") == len(bad)
    # Dead letters count once delivered, which the worker learns at its next commit.
    for reason in ("not_json", "wrong_type", "oversized", "missing_field"):
        expected = sum(1 for _, r in bad.values() if r == reason)
        wait_for(lambda: total(worker.metrics(), consumer_names.DLQ_MESSAGES, reason=reason) == expected, 60,
                 lambda: f"{reason}: {total(worker.metrics(), consumer_names.DLQ_MESSAGES, reason=reason)} dead "
                         f"letters of {expected}; log:\n{worker.log()}")

    letters = {r.key: r for r in read_topic(broker.bootstrap_servers, topics["dlq"], len(bad))}
    assert set(letters) == set(bad)
    for key, (value, reason) in bad.items():
        letter = letters[key]
        headers = {k: v.decode() for k, v in letter.headers}
        assert letter.value == (value if value is not None else b""), f"{key!r}: bytes changed"
        assert headers[dlq.REASON_HEADER] == reason, f"{key!r}: {headers}"
        assert headers[dlq.ERROR_HEADER] and "\n" not in headers[dlq.ERROR_HEADER]
        assert headers[dlq.TOPIC_HEADER] == topics["predictions"]
        assert int(headers[dlq.PARTITION_HEADER]) in range(4) and int(headers[dlq.OFFSET_HEADER]) >= 0
        assert dlq.TRUNCATED_HEADER not in headers
    assert total(worker.metrics(), consumer_names.DLQ_ERRORS) == 0
