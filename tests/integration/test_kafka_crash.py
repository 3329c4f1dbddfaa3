"""kill -9 at random points while consuming: with --state-dir the final counters equal the input exactly."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from conftest import CLIENTS, produce, total, wait_for
from streams import group_counters, synthetic_stream

from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
EVENTS = 200_000
KILLS = 3


@pytest.mark.parametrize("client", CLIENTS)
def test_kill_9_loses_nothing_and_counts_nothing_twice(broker, topics, workers, tmp_path, client):
    messages, expected = synthetic_stream(EVENTS, topics)
    produce(broker.bootstrap_servers, messages)
    state_dir = tmp_path / "state"
    rng = random.Random(3)
    # Kill points: random fractions of the stream, increasing.
    kill_at = sorted(rng.uniform(0.1, 0.9) * len(messages) for _ in range(KILLS))
    applied_at_kills = []
    for threshold in kill_at:
        worker = workers("--client", client, name=f"worker-{len(applied_at_kills)}", state_dir=state_dir)
        wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) >= threshold or not worker.alive(),
                 90, lambda: f"worker never reached {threshold:.0f} records; log:\n{worker.log()}", interval=0.02)
        assert worker.alive(), worker.log()
        applied_at_kills.append(total(worker.metrics(), consumer_names.CONSUMER_RECORDS))
        worker.kill()
    worker = workers("--client", client, name="worker-final", state_dir=state_dir)
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) == len(messages), 120,
             lambda: f"applied {total(worker.metrics(), consumer_names.CONSUMER_RECORDS)} of {len(messages)}; "
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


def fetch_processes(pid: int) -> list[int]:
    """Children of ``pid`` started by multiprocessing's spawn (not its resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:  # a thread can end between the listing and the read
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except FileNotFoundError:
                pass
    return found


def test_a_killed_fetch_process_is_replaced_and_nothing_is_lost(broker, topics, workers):
    """kafka-python's fetch child (confluent has none: librdkafka fetches on its own threads)."""
    messages, expected = synthetic_stream(40_000, topics)
    produce(broker.bootstrap_servers, messages)
    worker = workers("--client", "kafka-python", name="fetch-killed")
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) >= len(messages) // 4, 90,
             lambda: f"worker never reached a quarter of the stream; log:\n{worker.log()}", interval=0.02)
    fetchers = fetch_processes(worker.process.pid)
    assert len(fetchers) == 1, f"expected one fetch process, found {fetchers}"
    os.kill(fetchers[0], signal.SIGKILL)
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) == len(messages) or not worker.alive(),
             120, lambda: f"applied {total(worker.metrics(), consumer_names.CONSUMER_RECORDS)} of {len(messages)}; "
                          f"log:\n{worker.log()}")
    assert worker.alive(), worker.log()
    m = worker.metrics()
    assert total(m, consumer_names.FETCH_RESTARTS) == 1, worker.log()
    assert "the fetch process exited" in worker.log()
    assert fetch_processes(worker.process.pid) != fetchers
    assert total(m, names.EVENTS, status="valid") == expected["valid"]
    assert total(m, names.EVENTS, status="duplicate") == expected["duplicates"]
    got = group_counters(m)
    want = {k: v for k, v in expected.items() if isinstance(k, tuple)}
    assert {k: got[k] for k in want} == want
