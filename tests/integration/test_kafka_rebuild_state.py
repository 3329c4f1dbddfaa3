"""A structural change of the settings: the worker refuses its snapshot in one line, and --rebuild-state counts
again from what the topics retain, losing nothing the broker still holds."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import CLIENTS, STARTUP_SECONDS, Worker, produce, total, wait_for

from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def prediction(i: int) -> bytes:
    return json.dumps({"event_id": f"e{i}", "prediction": i % 2, "ts": 1_795_000_000 + i,
                       "groups": {"sex": "FM"[i % 2], "race": "ab"[i % 3 == 0]}}).encode()


@pytest.mark.parametrize("client", CLIENTS)
def test_rebuild_state_recounts_what_the_topics_retain(broker, topics, workers, tmp_path, client):
    state = tmp_path / "state"
    flags = ("--client", client, "--privacy-floor", "1", "--min-group-size", "1")
    worker = workers(*flags, "--attribute", "sex", state_dir=state)
    messages = [(topics["predictions"], f"e{i}".encode(), prediction(i)) for i in range(600)]
    produce(broker.bootstrap_servers, messages)
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_COMMITS) >= 1
             and total(worker.metrics(), names.EVENTS, status="valid") == len(messages), STARTUP_SECONDS,
             lambda: worker.log())
    assert worker.terminate() == 0, worker.log()

    # Another attribute is a structural change: refused in one line that names the change and the way forward.
    refused = Worker(broker, topics, tmp_path, *flags, "--attribute", "sex", "--attribute", "race",
                     name="refused", state_dir=state)
    result = subprocess.run(refused.args, capture_output=True, text=True, timeout=STARTUP_SECONDS * 3)
    assert result.returncode == 2, result.stderr
    (line,) = [text for text in result.stderr.splitlines() if "error:" in text]
    assert "attributes" in line and "--rebuild-state" in line

    rebuilt = workers(*flags, "--attribute", "sex", "--attribute", "race", "--rebuild-state", state_dir=state,
                      name="rebuilt")
    wait_for(lambda: total(rebuilt.metrics(), names.EVENTS, status="valid") >= len(messages), STARTUP_SECONDS,
             lambda: rebuilt.log())
    m = rebuilt.metrics()
    assert total(m, names.EVENTS, status="valid") == len(messages)
    assert total(m, names.GROUP_EVENTS, attribute="race", cell="predictions") == len(messages)
    assert total(m, names.GROUP_EVENTS, attribute="sex", cell="predictions") == len(messages)
    assert len(list(state.glob("snapshot.pickle.*.old"))) == 1  # kept for a rollback
