"""The join's decisions on plain dicts: what it forwards, and that its output survives a partition move."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from fairwatch.consumers.outcome_join import JoinLogic, JoinMetrics
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.events import EventParser
from fairwatch.monitor.pipeline import Pipeline


def join() -> JoinLogic:
    return JoinLogic({}, {}, JoinMetrics(), ttl_seconds=60.0, clock=lambda: 100.0)


def forward(logic: JoinLogic, value: dict) -> list[bytes]:
    records, update = logic.handle(value["event_id"].encode(), json.dumps(value).encode())
    update()
    return [v for _, v in records]


PREDICTION = {"event_id": "e1", "ts": 10.0, "model": "m", "prediction": 1, "score": 0.7, "groups": {"sex": "F"}}


def test_a_late_outcome_carries_a_copy_of_its_prediction():
    logic = join()
    assert forward(logic, PREDICTION) == [json.dumps(PREDICTION).encode()]  # forwarded unchanged
    (outcome,) = forward(logic, {"event_id": "e1", "label": 0, "ts": 50.0})
    event = EventParser().parse(outcome)
    assert (event.prediction, event.label, event.ts) == (None, 0, 50.0)
    copy = event.prediction_copy
    assert (copy.model, copy.prediction, copy.score, copy.groups, copy.ts) == ("m", 1, 0.7, {"sex": "F"}, 10.0)
    assert "copy" not in logic.predictions[b"e1"]  # joined: the copy is no longer needed
    assert forward(logic, {"event_id": "e1", "label": 0}) == []  # a duplicate goes no further


def test_an_early_outcome_rides_on_its_prediction_without_a_copy():
    logic = join()
    assert forward(logic, {"event_id": "e1", "label": 1}) == []
    (labeled,) = forward(logic, PREDICTION)
    event = EventParser().parse(labeled)
    assert (event.prediction, event.label, event.prediction_copy) == (1, 1, None)


def test_a_generation_without_a_prediction_passes_through_and_takes_no_outcome():
    logic = join()
    generation = {"event_id": "g1", "ts": 10.0, "model": "chat", "groups": {"sex": "F"}, "response": "Sure."}
    assert forward(logic, {"event_id": "g1", "label": 1}) == []  # an outcome with the same id waits
    assert forward(logic, generation) == [json.dumps(generation).encode()]  # unchanged: no label put on it
    assert b"g1" not in logic.predictions and b"g1" in logic.outcomes


def test_an_entry_recovered_from_an_older_changelog_without_a_copy_forwards_the_plain_outcome():
    logic = join()
    logic.predictions[b"e1"] = {"t": 90.0, "label": None}
    raw = {"event_id": "e1", "label": 1, "ts": 50.0}
    assert forward(logic, raw) == [json.dumps(raw).encode()]


def raw_stream(n: int, seed: int) -> list[dict]:
    """Predictions, half labeled inline, the rest with outcomes some records later (a few before)."""
    rng = random.Random(seed)
    out, pending = [], []
    for i in range(n):
        event_id = f"e{i}"
        label = int(rng.random() < 0.4)
        inline = rng.random() < 0.5
        prediction = {"event_id": event_id, "ts": float(i), "prediction": int(rng.random() < 0.5),
                      "score": rng.random(), "groups": {"sex": rng.choice("FM"), "race": rng.choice("abc")},
                      "label": label if inline else None}
        outcome = {"event_id": event_id, "label": label, "ts": float(i + 3)}
        if not inline and rng.random() < 0.1:
            out.append(outcome)  # before its prediction
        elif not inline:
            pending.append((i + rng.randint(1, 30), outcome))
        out.append(prediction)
        out += [o for due, o in pending if due <= i]
        pending = [(due, o) for due, o in pending if due > i]
    return out + [o for _, o in pending]


def since_start(pipeline: Pipeline) -> dict:
    snapshot = pipeline.models["default"].snapshot()[0]
    return {(a, g): snapshot.rows[a][i] for a in snapshot.rows for i, g in enumerate(snapshot.groups[a])}


@pytest.mark.parametrize("moved_at", [0.1, 0.5, 0.9])
def test_counts_split_at_a_partition_move_sum_to_one_worker_s(moved_at):
    logic = join()
    labeled = [v for value in raw_stream(2_000, seed=3) for v in forward(logic, value)]
    config = MonitorConfig(count_windows=[], time_windows_seconds=[])
    before, after, single = Pipeline(config), Pipeline(config), Pipeline(config)
    cut = int(len(labeled) * moved_at)
    before.process_lines(labeled[:cut])
    after.process_lines(labeled[cut:])
    single.process_lines(labeled)
    whole = since_start(single)
    for key, row in whole.items():
        split = since_start(before).get(key, 0) + since_start(after).get(key, 0)
        np.testing.assert_allclose(split, row, rtol=1e-12, err_msg=str(key))  # score sums: float order
    assert after.stats.outcomes["joined_from_copy"] > 0 and not after.pending_outcomes()
    assert single.stats.outcomes["joined_from_copy"] == 0


def test_a_redelivered_outcome_found_waiting_beside_its_unlabeled_prediction_is_joined_and_forwarded():
    # State a crash can leave: the outcome recorded as waiting while its prediction is in the table unlabeled.
    logic = join()
    logic.predictions[b"e1"] = {"t": 90.0, "label": None, "copy": {"model": "m", "prediction": 1, "score": 0.7,
                                                                   "groups": {"sex": "F"}, "ts": 10.0}}
    logic.outcomes[b"e1"] = {"t": 95.0, "label": 0}
    (outcome,) = forward(logic, {"event_id": "e1", "label": 0, "ts": 50.0})
    assert EventParser().parse(outcome).label == 0
    assert logic.predictions[b"e1"]["label"] == 0
    assert b"e1" not in logic.outcomes, "the stale waiting copy would later be counted as orphaned"
    assert logic.metrics.outcomes["joined"]._value.get() == 1
    assert logic.metrics.outcomes["duplicate"]._value.get() == 0


def test_undelivered_names_the_partitions_whose_position_ran_past_what_the_join_handled():
    from fairwatch.consumers.outcome_join import undelivered

    assert undelivered({"o0": 1, "o1": 1, "o2": 4}, {"o0": 6, "o1": 1, "o2": None}) == {"o0": 1}
    assert undelivered({}, {"o0": 6}) == {}  # never handled: nothing to compare with
    assert undelivered({"o0": 3}, {}) == {}  # position unknown: no seek


def test_the_ttl_sweep_between_a_forward_and_its_table_update_does_not_crash_the_agent():
    now = [0.0]
    logic = JoinLogic({}, {}, JoinMetrics(), ttl_seconds=10.0, clock=lambda: now[0])
    forward(logic, {"event_id": "a", "label": 1})  # early outcome at t = 0
    now[0] = 5.0
    records, update = logic.handle(b"a", json.dumps({**PREDICTION, "event_id": "a"}).encode())
    assert len(records) == 1  # forwarded with its label; the agent now awaits the send
    now[0] = 11.0
    assert logic.sweep() == (1, 0)  # meanwhile the sweep drops the early outcome as past its TTL
    update()  # the table update after the ack must not raise (it did: KeyError b'a')
    assert logic.predictions[b"a"]["label"] == 1 and b"a" not in logic.outcomes
