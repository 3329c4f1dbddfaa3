"""Two workers in one group split the partitions; their counters sum to the single worker's."""

from __future__ import annotations

import pytest
from conftest import produce, total, wait_for
from streams import group_counters, synthetic_stream

from monitor import metric_names as kafka_names
from monitor import metric_names as names

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
EVENTS = 40_000


def test_two_workers_sum_to_one(broker, topics, workers, tmp_path):
    messages, expected = synthetic_stream(EVENTS, topics)
    # Both workers join before anything is produced, so neither takes the whole stream alone.
    first = workers(name="pair-a", state_dir=tmp_path / "a")
    second = workers(name="pair-b", state_dir=tmp_path / "b")

    def split() -> bool:
        a, b = first.assigned(), second.assigned()
        return bool(a and b and a.count("[") == 4 and b.count("[") == 4)

    wait_for(split, 60, lambda: f"partitions never split: a={first.assigned()} b={second.assigned()}")
    for topic in ("predictions", "outcomes"):  # range assignment: partition N of both topics on one worker
        a_parts = {p.split("[")[1] for p in first.assigned().split(", ") if p.startswith(topics[topic])}
        b_parts = {p.split("[")[1] for p in second.assigned().split(", ") if p.startswith(topics[topic])}
        assert len(a_parts) == len(b_parts) == 2 and not a_parts & b_parts
    produce(broker.bootstrap_servers, messages)

    def applied() -> float:
        return total(first.metrics(), kafka_names.CONSUMER_RECORDS) + total(second.metrics(),
                                                                          kafka_names.CONSUMER_RECORDS)

    wait_for(lambda: applied() == len(messages), 90, lambda: f"pair applied {applied()} of {len(messages)}")
    a, b = first.metrics(), second.metrics()
    assert total(a, kafka_names.CONSUMER_RECORDS) > 0 and total(b, kafka_names.CONSUMER_RECORDS) > 0
    pair = group_counters(a) + group_counters(b)

    single = workers(name="single", group=topics["group"] + "-single")
    wait_for(lambda: total(single.metrics(), kafka_names.CONSUMER_RECORDS) == len(messages), 90,
             lambda: f"single worker applied {total(single.metrics(), kafka_names.CONSUMER_RECORDS)}")
    s = single.metrics()
    assert pair == group_counters(s)
    want = {k: v for k, v in expected.items() if isinstance(k, tuple)}
    assert {k: pair[k] for k in want} == want
    for status in ("valid", "duplicate"):
        assert total(a, names.EVENTS, status=status) + total(b, names.EVENTS, status=status) \
            == total(s, names.EVENTS, status=status)
    # Outcomes found their predictions on the same worker: nothing waits unjoined.
    assert total(a, names.OUTCOMES, status="orphaned") + total(b, names.OUTCOMES, status="orphaned") == 0
    assert total(a, names.GROUP_EVENTS, cell="labeled") + total(b, names.GROUP_EVENTS, cell="labeled") \
        == total(s, names.GROUP_EVENTS, cell="labeled")
