"""kill -9 at random points while consuming: with --state-dir the final counters equal the input exactly."""

from __future__ import annotations

import random

import pytest
from conftest import produce, total, wait_for
from streams import group_counters, synthetic_stream

from monitor import metric_names as kafka_names
from monitor import metric_names as names

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
EVENTS = 200_000
KILLS = 3


def test_kill_9_loses_nothing_and_counts_nothing_twice(broker, topics, workers, tmp_path):
    messages, expected = synthetic_stream(EVENTS, topics)
    produce(broker.bootstrap_servers, messages)
    state_dir = tmp_path / "state"
    rng = random.Random(3)
    # Kill points: random fractions of the stream, increasing.
    kill_at = sorted(rng.uniform(0.1, 0.9) * len(messages) for _ in range(KILLS))
    applied_at_kills = []
    for threshold in kill_at:
        worker = workers(name=f"worker-{len(applied_at_kills)}", state_dir=state_dir)
        wait_for(lambda: total(worker.metrics(), kafka_names.CONSUMER_RECORDS) >= threshold or not worker.alive(),
                 90, lambda: f"worker never reached {threshold:.0f} records; log:\n{worker.log()}", interval=0.02)
        assert worker.alive(), worker.log()
        applied_at_kills.append(total(worker.metrics(), kafka_names.CONSUMER_RECORDS))
        worker.kill()
    worker = workers(name="worker-final", state_dir=state_dir)
    wait_for(lambda: total(worker.metrics(), kafka_names.CONSUMER_RECORDS) == len(messages), 120,
             lambda: f"applied {total(worker.metrics(), kafka_names.CONSUMER_RECORDS)} of {len(messages)}; "
                     f"kills at {applied_at_kills}; log:\n{worker.log()}")
    m = worker.metrics()
    assert "restored state" in worker.log(), worker.log()
    assert all(a < len(messages) for a in applied_at_kills), f"a kill came after the end: {applied_at_kills}"
    assert total(m, names.EVENTS, status="valid") == expected["valid"]
    assert total(m, names.EVENTS, status="duplicate") == expected["duplicates"]
    assert total(m, names.EVENTS, status="invalid") == 0
    assert total(m, names.OUTCOMES, status="duplicate") == 0
    assert total(m, names.OUTCOMES, status="orphaned") == 0
    got = group_counters(m)
    want = {k: v for k, v in expected.items() if isinstance(k, tuple)}
    assert {k: got[k] for k in want} == want
