"""`fairwatch join` (faust-streaming) against the real Tansu broker: late, early, duplicate and unknown outcomes."""

from __future__ import annotations

import json
import time

import pytest
from conftest import JoinApp, Worker, produce, total, wait_for

pytest.importorskip("faust", reason="the kafka extra (faust-streaming) is not installed")

from fairwatch.monitor import metric_names as names  # noqa: E402
from fairwatch.consumers import metric_names as consumer_names  # noqa: E402

pytestmark = [pytest.mark.kafka]


@pytest.fixture
def joins(broker, join_topics, tmp_path):
    """Start join apps with ``joins(app_id, *flags)``; every one is killed at teardown."""
    started: list = []

    def start(app_id: str, *extra: str, name: str = "join") -> JoinApp:
        app = JoinApp(broker, join_topics, tmp_path, app_id, *extra, name=f"{name}{len(started)}")
        started.append(app)
        return app.start()

    yield start
    for app in started:
        app.stop()


def prediction(event_id: str, race: str = "a") -> bytes:
    return json.dumps({"event_id": event_id, "prediction": 1, "score": 0.7, "groups": {"race": race}}).encode()


def outcome(event_id: str, label: int = 1) -> bytes:
    return json.dumps({"event_id": event_id, "label": label}).encode()


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[dict]:
    """Every record of ``topic`` (decoded), once at least ``expected`` are there; fails at the deadline."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records += [json.loads(r.value) for r in batch]
        # A little longer: anything beyond the expected count is a double forward.
        for batch in consumer.poll(timeout_ms=1000).values():
            records += [json.loads(r.value) for r in batch]
    finally:
        consumer.close()
    assert len(records) >= expected, f"{topic} holds {len(records)} records after {timeout:.0f} s, expected {expected}"
    return records


def committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on ``topic`` (a consumer that never joins the group asks)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in consumer.partitions_for_topic(topic))
    finally:
        consumer.close()


def test_outcomes_before_predictions_join_and_feed_the_worker(broker, join_topics, joins, tmp_path):
    t = join_topics
    app = joins(f"{t['group']}.join")
    ids = [f"early{i}" for i in range(20)]
    produce(broker.bootstrap_servers, [(t["outcomes"], i.encode(), outcome(i, label=n % 2)) for n, i in enumerate(ids)])
    app.wait_count(consumer_names.JOIN_OUTCOMES, 20, status="early")  # all 20 wait in the outcomes table
    produce(broker.bootstrap_servers, [(t["predictions"], i.encode(), prediction(i)) for i in ids])
    app.wait_count(consumer_names.JOIN_OUTCOMES, 20, status="joined")
    assert app.count(consumer_names.JOIN_PREDICTIONS, status="labeled_on_arrival") == 20

    labeled = read_topic(broker.bootstrap_servers, t["labeled"], 20)
    assert len(labeled) == 20, f"{len(labeled)} records forwarded for 20 joined predictions"
    assert sorted(r["event_id"] for r in labeled) == sorted(ids)
    assert {r["event_id"]: r["label"] for r in labeled} == {i: n % 2 for n, i in enumerate(ids)}
    app.wait_count(consumer_names.JOIN_PENDING, 0, table="outcomes")

    # The hot-path worker consumes the labeled topic instead of the raw predictions.
    worker = Worker(broker, dict(t, predictions=t["labeled"], outcomes=""), tmp_path, "--attribute", "race")
    try:
        worker.start()
        wait_for(lambda: total(worker.metrics(), names.GROUP_EVENTS, attribute="race", cell="labeled") == 20, 45,
                 lambda: f"worker saw {total(worker.metrics(), names.GROUP_EVENTS, cell='labeled')} labeled "
                         f"predictions of 20; log:\n{worker.log()}")
        samples = worker.metrics()
        assert total(samples, names.EVENTS, status="valid") == 20
        assert total(samples, names.GROUP_EVENTS, attribute="race", cell="predictions") == 20
        assert total(samples, names.GROUP_EVENTS, attribute="race", cell="tp") == 10
    finally:
        worker.stop()


@pytest.mark.slow  # ~20 s: the restarted member waits out the killed one's session
def test_outcomes_after_a_restart_join_from_the_changelog(broker, join_topics, joins):
    t = join_topics
    app_id = f"{t['group']}.join"
    first = joins(app_id)
    ids = [f"late{i}" for i in range(20)]
    produce(broker.bootstrap_servers, [(t["predictions"], i.encode(), prediction(i)) for i in ids])
    first.wait_count(consumer_names.JOIN_PREDICTIONS, 20, status="forwarded")
    first.wait_count(consumer_names.JOIN_PENDING, 20, table="predictions")
    # Offsets committed: the restarted app will not re-read the predictions, only the changelog.
    wait_for(lambda: committed(broker.bootstrap_servers, app_id, t["predictions"]) == 20, 30,
             lambda: f"the join committed {committed(broker.bootstrap_servers, app_id, t['predictions'])} "
                     f"prediction offsets of 20; log:\n{first.log()}")
    first.stop()  # kill -9

    second = joins(app_id, name="restarted")
    # Ready = changelog recovered and partitions assigned. Outcomes produced while a restarted join still
    # rebalances on Tansu were now and then left unprocessed until the next restart (see docs/kafka.md).
    second.wait_count(consumer_names.JOIN_READY, 1)
    assert second.count(consumer_names.JOIN_PENDING, table="predictions") == 20, "the changelog was not recovered"
    produce(broker.bootstrap_servers, [(t["outcomes"], i.encode(), outcome(i, label=0)) for i in ids])
    second.wait_count(consumer_names.JOIN_OUTCOMES, 20, status="joined")
    assert second.count(consumer_names.JOIN_OUTCOMES, status="early") == 0
    assert second.count(consumer_names.JOIN_PREDICTIONS, status="forwarded") == 0, "predictions were consumed again"

    records = read_topic(broker.bootstrap_servers, t["labeled"], 40)
    outcomes = [r for r in records if "prediction" not in r]
    assert sorted(r["event_id"] for r in outcomes) == sorted(ids)
    # The prediction's copy came back with the changelog: a worker that did not count it can count the label.
    assert all(r["prediction_copy"]["groups"] == {"race": "a"} and r["prediction_copy"]["prediction"] == 1
               and r["prediction_copy"]["score"] == 0.7 for r in outcomes), outcomes[:2]
    assert len(records) == 40, f"{len(records)} records forwarded: 20 predictions + 20 outcomes expected"


def test_duplicate_outcomes_are_counted_once(broker, join_topics, joins):
    t = join_topics
    app = joins(f"{t['group']}.join")
    after = [f"dup{i}" for i in range(10)]  # outcome after the prediction, sent three times
    before = [f"pre{i}" for i in range(5)]  # outcome before the prediction, sent twice
    produce(broker.bootstrap_servers, [(t["outcomes"], i.encode(), outcome(i)) for i in before for _ in range(2)])
    app.wait_count(consumer_names.JOIN_OUTCOMES, 5, status="duplicate")
    produce(broker.bootstrap_servers, [(t["predictions"], i.encode(), prediction(i)) for i in after + before])
    app.wait_count(consumer_names.JOIN_OUTCOMES, 5, status="joined")
    app.wait_count(consumer_names.JOIN_PREDICTIONS, 10, status="forwarded")
    produce(broker.bootstrap_servers, [(t["outcomes"], i.encode(), outcome(i)) for _ in range(3) for i in after])
    app.wait_count(consumer_names.JOIN_OUTCOMES, 15, status="joined")
    app.wait_count(consumer_names.JOIN_OUTCOMES, 5 + 20, status="duplicate")
    assert app.count(consumer_names.JOIN_OUTCOMES, status="early") == 5
    assert app.count(consumer_names.JOIN_OUTCOMES, status="conflicting") == 0

    records = read_topic(broker.bootstrap_servers, t["labeled"], 25)
    assert len(records) == 25, f"{len(records)} records: 15 predictions + 10 outcomes expected"
    outcomes = [r["event_id"] for r in records if "prediction" not in r]
    assert sorted(outcomes) == sorted(after), "each outcome must be forwarded exactly once"


def test_unknown_outcome_is_orphaned_after_the_ttl(broker, join_topics, joins):
    t = join_topics
    ttl = 5.0  # the test must see them early before it runs out, however late its scrape comes
    app = joins(f"{t['group']}.join", "--ttl-seconds", str(ttl), "--sweep-seconds", "0.5")
    sent = time.monotonic()  # before the join can hold them: its TTL starts later
    produce(broker.bootstrap_servers, [(t["outcomes"], f"ghost{i}".encode(), outcome(f"ghost{i}")) for i in range(5)]
            + [(t["predictions"], f"alone{i}".encode(), prediction(f"alone{i}")) for i in range(3)])
    app.wait_count(consumer_names.JOIN_OUTCOMES, 5, status="early")
    assert app.count(consumer_names.JOIN_OUTCOMES, status="orphaned") == 0, "orphaned before the TTL"
    app.wait_count(consumer_names.JOIN_OUTCOMES, 5, status="orphaned", timeout=ttl + 15)
    assert time.monotonic() - sent >= ttl - 0.1, "orphaned before the TTL"  # 0.1: the join's clock is not ours
    app.wait_count(consumer_names.JOIN_PREDICTIONS, 3, status="expired", timeout=ttl + 15)
    app.wait_count(consumer_names.JOIN_PENDING, 0, table="outcomes")
    app.wait_count(consumer_names.JOIN_PENDING, 0, table="predictions")
    # An outcome for an id the join forgot is early again (then orphaned), never joined.
    assert app.count(consumer_names.JOIN_OUTCOMES, status="joined") == 0
    records = read_topic(broker.bootstrap_servers, t["labeled"], 3)
    assert sorted(r["event_id"] for r in records) == [f"alone{i}" for i in range(3)]
