"""A hostile topic loses nothing: records that cannot be parsed, that are huge, that make a check raise,
and a batch the pipeline fails on; with kill -9 in between. Every valid event is counted exactly once and
every bad record reaches the dead-letter topic with its reason."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import CLIENT_FLAGS, CLIENTS, STARTUP_SECONDS, produce, total, wait_for

from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Test hooks, installed with a sitecustomize module on the worker's PYTHONPATH (no test code in fairwatch).
CHECK_RAISES = """
    from fairwatch.monitor.events import EventParser
    _check = EventParser.check
    def check(self, event):
        if event.event_id.startswith("explode"):
            raise ZeroDivisionError("planted by the test")
        return _check(self, event)
    EventParser.check = check
"""
BATCH_RAISES = """
    from fairwatch.monitor.pipeline import Pipeline
    _process = Pipeline.process_events
    def process_events(self, events, derived=None):
        if any(getattr(e, "event_id", "") == "crash-batch" for e in events):
            raise MemoryError("planted by the test")
        return _process(self, events, derived)
    Pipeline.process_events = process_events
"""


def hook(tmp_path, name: str, code: str) -> dict:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code))
    import os

    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def prediction(event_id: str, group: str = "F") -> bytes:
    return json.dumps({"event_id": event_id, "prediction": 1, "score": 0.6, "groups": {"sex": group}}).encode()


BAD = {  # key -> (value, reason)
    b"bad-utf8": (b'{"event_id": "u", "prediction": 1, "groups": {"sex": "\xff\xfe"}}', "not_json"),
    b"deep": (b'{"event_id": "d", "prediction": 1, "groups": {}, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
              "not_json"),
    b"huge": (b'{"event_id": "h", "prediction": 1, "groups": {"sex": "F"}, "text": "' + b"x" * (5 << 20) + b'"}',
              "oversized"),
    b"tombstone": (None, "missing_field"),
    b"explode": (prediction("explode-1"), "internal_error"),
    b"far-future": (b'{"event_id": "f", "ts": "9999-01-01T00:00:00Z", "prediction": 1, "groups": {"sex": "F"}}',
                    "bad_value"),
    b"long-group": (prediction("long", "y" * 5000), "oversized"),
}


@pytest.mark.parametrize("client", CLIENTS)
def test_bad_records_and_a_kill_lose_no_valid_event(broker, topics, workers, tmp_path, client):
    state = tmp_path / "state"
    env = hook(tmp_path, "check-raises", CHECK_RAISES)
    flags = ("--privacy-floor", "1", "--min-group-size", "1", "--client", client)
    worker = workers(*flags, state_dir=state, env=env)
    valid = [(topics["predictions"], f"v{i}".encode(), prediction(f"v{i}", "FM"[i % 2])) for i in range(3000)]
    bad = [(topics["predictions"], key, value) for key, (value, _) in BAD.items()]
    first = valid[:1500] + bad
    produce(broker.bootstrap_servers, first, max_request_size=8 << 20)
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_RECORDS) >= len(first), STARTUP_SECONDS,
             lambda: f"applied {total(worker.metrics(), consumer_names.CONSUMER_RECORDS)} of {len(first)}:\n{worker.log()}")
    assert worker.alive(), worker.log()
    worker.kill()  # whatever was applied after the last snapshot is read again, and counted once

    worker = workers(*flags, state_dir=state, env=env, name="restarted")
    produce(broker.bootstrap_servers, valid[1500:])
    everything = len(valid) + len(bad)
    wait_for(lambda: total(worker.metrics(), names.EVENTS, status="valid") >= len(valid), STARTUP_SECONDS,
             lambda: f"{total(worker.metrics(), names.EVENTS, status='valid')} of {len(valid)} valid:\n{worker.log()}")
    m = worker.metrics()
    assert worker.alive(), worker.log()
    assert total(m, names.EVENTS, status="valid") == len(valid)
    assert total(m, names.EVENTS, status="duplicate") == 0
    assert total(m, names.GROUP_EVENTS, attribute="sex", cell="predictions") == len(valid)
    assert total(m, consumer_names.CONSUMER_RECORDS) == everything
    for reason in {r for _, r in BAD.values()}:  # counted once delivered, learnt at the next commit
        expected = sum(1 for _, r in BAD.values() if r == reason)
        def letters() -> float:
            return total(worker.metrics(), consumer_names.DLQ_MESSAGES, reason=reason)

        wait_for(lambda: letters() == expected, STARTUP_SECONDS,
                 lambda: f"{reason}: {letters()} dead letters of {expected}; log:\n{worker.log()}")
    assert total(m, names.EVENTS, status="invalid") == len(BAD)


# kafka-python in one thread: the batch fails in the process that commits (with the fetch child too, but
# the child's batches are sized differently); confluent always applies in the consuming thread.
@pytest.mark.parametrize("client", ["confluent", "kafka-python-one-thread"])
def test_a_batch_the_pipeline_fails_on_is_never_committed(broker, topics, workers, tmp_path, client):
    state = tmp_path / "state"
    worker = workers(*CLIENT_FLAGS[client], state_dir=state, env=hook(tmp_path, "batch-raises", BATCH_RAISES))
    before = [(topics["predictions"], f"a{i}".encode(), prediction(f"a{i}")) for i in range(1000)]
    produce(broker.bootstrap_servers, before)
    wait_for(lambda: total(worker.metrics(), consumer_names.CONSUMER_COMMITS) >= 1
             and total(worker.metrics(), names.EVENTS, status="valid") == len(before), STARTUP_SECONDS,
             lambda: worker.log())
    after = [(topics["predictions"], b"crash", prediction("crash-batch"))]
    after += [(topics["predictions"], f"b{i}".encode(), prediction(f"b{i}")) for i in range(500)]
    produce(broker.bootstrap_servers, after)
    wait_for(lambda: not worker.alive(), STARTUP_SECONDS, lambda: f"the worker kept running:\n{worker.log()}")
    assert worker.process.returncode == 1
    errors = [line for line in worker.log().splitlines() if "applying a batch" in line]
    assert len(errors) == 1 and "MemoryError: planted by the test" in errors[0], worker.log()
    assert "Traceback" not in worker.log()

    # No hook: the batch is read again and applied.
    worker = workers(*CLIENT_FLAGS[client], state_dir=state, name="restarted")
    expected = len(before) + len(after)
    wait_for(lambda: total(worker.metrics(), names.EVENTS, status="valid") >= expected, STARTUP_SECONDS,
             lambda: f"{total(worker.metrics(), names.EVENTS, status='valid')} of {expected}:\n{worker.log()}")
    m = worker.metrics()
    assert total(m, names.EVENTS, status="valid") == expected
    assert total(m, names.EVENTS, status="duplicate") == 0
    assert total(m, names.GROUP_EVENTS, attribute="sex", cell="predictions") == expected
