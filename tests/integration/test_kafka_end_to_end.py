"""COMPAS through Kafka (outcomes delayed on their own topic) equals `fairwatch replay` of the file."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CLIENTS, scrape, select, total, wait_for
from helpers import COMPAS_FLAGS, REPO

from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names

pytestmark = [pytest.mark.kafka, pytest.mark.data]
GROUPS = ("--group-col", "race", "--group-col", "sex")
ROWS = 7214  # the COMPAS file's predictions, each with its outcome


def replay_metrics(compas_csv, port: int) -> dict:
    """Scrape `fairwatch replay --serve` of the file, then stop it."""
    process = subprocess.Popen([sys.executable, "-m", "fairwatch", "replay", str(compas_csv), *COMPAS_FLAGS, *GROUPS,
                                "--metrics-port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # The replay serves /metrics while it reads the file: wait for every row, not for the first batch.
        def whole_file():
            samples = scrape(port)
            return samples if total(samples, names.EVENTS, status="valid") == ROWS else None

        return wait_for(whole_file, 120, f"fairwatch replay --metrics-port never exposed all {ROWS} rows")
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.parametrize("client", CLIENTS)  # `fairwatch produce` and `fairwatch run` on each client
def test_compas_through_kafka_equals_replay(broker, topics, workers, compas_csv, client):
    from fairwatch.consumers.broker import free_port

    produced = subprocess.run(
        [sys.executable, "-m", "fairwatch", "produce", str(compas_csv), *COMPAS_FLAGS, *GROUPS,
         "--bootstrap-servers", broker.bootstrap_servers, "--predictions-topic", topics["predictions"],
         "--outcomes-topic", topics["outcomes"], "--outcome-delay", "500", "--no-progress", "--client", client],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr
    assert f"produced {ROWS} predictions" in produced.stderr and f"{ROWS} outcomes" in produced.stderr, produced.stderr

    worker = workers("--attribute", "race", "--attribute", "sex", "--client", client)
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) == 2 * ROWS, 60,
             lambda: f"worker applied {total(worker.metrics(), consumer_names.CONSUMER_RECORDS)} of {2 * ROWS} "
                     f"records; log:\n{worker.log()}")
    streamed = worker.metrics()
    replayed = replay_metrics(compas_csv, free_port())

    for family in (names.GROUP_EVENTS, names.GROUP_SCORE_SUM):
        kafka_counts, replay_counts = select(streamed, family), select(replayed, family)
        assert len(replay_counts) >= 8, f"replay exported only {len(replay_counts)} {family} series"
        assert kafka_counts == replay_counts, f"{family} differs from replay"
    # Rates since start (every label joined, so they must agree too).
    kafka_rates = select(streamed, names.GROUP_RATE, window=names.SINCE_START_WINDOW)
    assert kafka_rates and kafka_rates == select(replayed, names.GROUP_RATE, window=names.SINCE_START_WINDOW)
    assert total(streamed, names.OUTCOMES, status="joined") == ROWS
    assert total(streamed, names.OUTCOMES, status="orphaned") == 0
    assert total(streamed, names.EVENTS, status="valid") == total(replayed, names.EVENTS, status="valid") == ROWS
    assert total(streamed, consumer_names.CONSUMER_LAG) == 0
