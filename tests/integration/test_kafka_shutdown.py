"""SIGTERM finishes the batch and commits: a restarted worker reads nothing twice."""

from __future__ import annotations

import pytest
from conftest import CLIENTS, produce, total, wait_for
from streams import synthetic_stream

from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.mark.parametrize("client", CLIENTS)
def test_sigterm_drains_and_commits(broker, topics, workers, client):
    messages, _ = synthetic_stream(20_000, topics, outcome_delay=0)
    first_half, second_half = messages[:10_000], messages[10_000:]
    ends = produce(broker.bootstrap_servers, first_half)
    # No --state-dir: counters restart at 0, so re-reads would show.
    worker = workers("--client", client, name="before")
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) == len(first_half), 60,
             lambda: f"applied {total(worker.metrics(), consumer_names.CONSUMER_RECORDS)} of {len(first_half)}")
    assert worker.terminate() == 0, worker.log()
    assert "stopped: batch applied, offsets committed" in worker.log()

    ends.update(produce(broker.bootstrap_servers, second_half))
    restarted = workers("--client", client, name="after")
    # Caught up = the next offset to apply is the end of every partition.
    wait_for(lambda: total(restarted.metrics(), consumer_names.CONSUMER_OFFSET) == sum(ends.values()), 60,
             lambda: f"restarted worker at offsets {total(restarted.metrics(), consumer_names.CONSUMER_OFFSET)} "
                     f"of {sum(ends.values())}")
    m = restarted.metrics()
    # Exactly the new records: the committed offsets were the ends of the first half.
    assert total(m, consumer_names.CONSUMER_RECORDS) == len(second_half)
    assert total(m, names.EVENTS, status="duplicate") + total(m, names.EVENTS, status="valid") \
        == sum(1 for topic, _, _ in second_half if topic == topics["predictions"])
