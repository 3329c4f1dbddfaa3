"""The worker at the end of its partitions while producers write: every record applied, once.

Tansu (memory storage) lets a fetch at the end of a partition that two
producers write at once skip a record batch that a re-read finds (librdkafka's
fetch trace: a fetch at offset 2602 answered with offsets 2606-2610). The
benchmark's latency run gives each producer its own partitions for that reason
(``benchmarks.kafka.own_partitions``); this test runs that setup on both
clients and checks every record, then checks with a re-read that the broker
holds all of them.
"""

from __future__ import annotations

import pytest
from conftest import CLIENTS

from fairwatch.consumers.broker import create_topics

pytest.importorskip("confluent_kafka")
live_edge = pytest.importorskip("benchmarks.kafka_live_edge", reason="benchmarks/ is not on the path")

EVENTS, RATE = 30_000, 5_000.0  # six seconds of two paced producers, read live


@pytest.mark.parametrize("client", CLIENTS)
def test_the_worker_applies_every_record_produced_while_it_reads(broker, client):
    topic = f"live-edge-{client}"
    create_topics(broker.bootstrap_servers, {topic: live_edge.PARTITIONS})
    result = live_edge.live_edge_run(broker.bootstrap_servers, topic, EVENTS, RATE, f"worker-{client}", "own")
    assert result["reread_missed"] == set(), "the broker did not keep every record"
    assert (len(result["missed"]), result["duplicates"], result["gaps"]) == (0, 0, [])
    assert result["read"] == EVENTS
