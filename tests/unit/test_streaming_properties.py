"""Streaming equals batch: every window's counts equal a plain recount of its members.

The reference below is deliberately naive (dicts and loops, event by event)
so that it shares no code with the numpy implementation it checks.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.counts import CELL_NAMES
from fairwatch.monitor.events import Event
from fairwatch.monitor.exporter import make_registry
from fairwatch.monitor.metric_names import GROUP_EVENTS
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.windows import TimeWindow

CAPACITY = 24
COUNT_WINDOW = 4
TIME_WINDOW = 5.0

prediction = st.fixed_dictionaries(
    {
        "kind": st.just("p"),
        "id": st.integers(0, 40),
        "a": st.sampled_from(["x", "y", "z"]),
        "b": st.sampled_from(["p", "q"]),
        "pred": st.integers(0, 1),
        "label": st.sampled_from([None, None, 0, 1]),
        "score": st.one_of(st.none(), st.floats(0, 1)),
        "ts": st.integers(0, 30).map(float),  # integers: ties at the cut-off happen
    }
)
outcome = st.fixed_dictionaries({"kind": st.just("o"), "id": st.integers(0, 40), "label": st.integers(0, 1)})
streams = st.lists(st.one_of(prediction, prediction, outcome), min_size=1, max_size=90)
cuts = st.lists(st.integers(1, 12), min_size=1, max_size=40)


def to_event(op) -> Event:
    if op["kind"] == "o":
        return Event(event_id=str(op["id"]), ts=0.0, model="m", label=op["label"])
    return Event(
        event_id=str(op["id"]), ts=op["ts"], model="m", prediction=op["pred"], score=op["score"],
        groups={"a": op["a"], "b": op["b"]}, label=op["label"],
    )


def batches_of(ops, cut_sizes):
    i, k = 0, 0
    while i < len(ops):
        size = cut_sizes[k % len(cut_sizes)]
        yield ops[i : i + size]
        i, k = i + size, k + 1


def reference(ops, cut_sizes):
    """Naive replay of the documented semantics; returns the predictions and held seq bound."""
    predictions = []  # dicts with a final "label"
    held: dict[str, int] = {}  # event_id -> seq, for held predictions
    early: dict[str, int] = {}
    for batch in batches_of(ops, cut_sizes):
        for op in batch:
            if op["kind"] != "p" or str(op["id"]) in held:
                continue
            eid = str(op["id"])
            label = op["label"] if op["label"] is not None else early.pop(eid, None)
            held[eid] = len(predictions)
            predictions.append({**op, "label": label})
            oldest = len(predictions) - CAPACITY
            for key in [k for k, s in held.items() if s < oldest]:
                del held[key]
        for op in batch:
            if op["kind"] != "o":
                continue
            eid = str(op["id"])
            if eid in held:
                p = predictions[held[eid]]
                if p["label"] is None:
                    p["label"] = op["label"]
            elif eid not in early:
                early[eid] = op["label"]
    return predictions


def recount(members, attribute):
    rows: dict[str, Counter] = {}
    for p in members:
        c = rows.setdefault(p[attribute], Counter())
        c["predictions"] += 1
        c["positives"] += p["pred"]
        if p["score"] is not None:
            c["scored"] += 1
            c["score_sum"] += p["score"]
        if p["label"] is not None:
            cell = {(1, 1): "tp", (1, 0): "fp", (0, 0): "tn", (0, 1): "fn"}[(p["pred"], p["label"])]
            c[cell] += 1
    return rows


def assert_rows_equal(snapshot, attribute, expected):
    names = snapshot.groups[attribute]
    rows = snapshot.rows[attribute]
    for g, name in enumerate(names):
        got = dict(zip(CELL_NAMES, rows[g]))
        want = expected.get(name, Counter())
        for cell in ("predictions", "positives", "scored", "tp", "fp", "tn", "fn"):
            assert got[cell] == want[cell], (snapshot.window, attribute, name, cell, got, dict(want))
        assert math.isclose(got["score_sum"], want["score_sum"], abs_tol=1e-9)
    assert set(expected) <= set(names)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=streams, cut_sizes=cuts)
def test_every_window_equals_a_batch_recount(ops, cut_sizes):
    check_every_window(ops, cut_sizes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=streams, cut_sizes=cuts, chunk=st.integers(1, 6))
def test_every_window_equals_a_batch_recount_with_small_time_window_chunks(ops, cut_sizes, chunk):
    """The time window reads back only chunks that can lose a member: with chunks of a few events,
    out-of-order times and a wrapping journal, no member is missed or subtracted twice."""
    default = TimeWindow.CHUNK
    TimeWindow.CHUNK = chunk
    try:
        check_every_window(ops, cut_sizes)
    finally:
        TimeWindow.CHUNK = default


def check_every_window(ops, cut_sizes):
    config = MonitorConfig(
        attributes=["a", "b"], count_windows=[COUNT_WINDOW], time_windows_seconds=[TIME_WINDOW],
        journal_capacity=CAPACITY,
    )
    pipeline = Pipeline(config)
    for batch in batches_of(ops, cut_sizes):
        pipeline.process_events([to_event(op) for op in batch])
    predictions = reference(ops, cut_sizes)
    if not predictions:
        assert not pipeline.models
        return
    since_start, count_window, time_window = pipeline.models["m"].snapshot()
    held = predictions[max(0, len(predictions) - CAPACITY) :]
    cutoff = max(p["ts"] for p in predictions) - TIME_WINDOW
    windows = [
        (since_start, predictions),
        (count_window, predictions[-COUNT_WINDOW:]),
        (time_window, [p for p in held if p["ts"] > cutoff]),
    ]
    for snapshot, members in windows:
        for attribute in ("a", "b"):
            assert_rows_equal(snapshot, attribute, recount(members, attribute))
    assert pipeline.stats.valid == len(predictions)


def _counter_samples(pipeline) -> dict[tuple, float]:
    out = {}
    for family in make_registry(pipeline).collect():
        if family.name + "_total" == GROUP_EVENTS:
            for sample in family.samples:
                if sample.name == GROUP_EVENTS:
                    out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(prediction, min_size=2, max_size=200).map(
        lambda ps: [{**p, "id": i, "label": p["label"]} for i, p in enumerate(ps)]
    ),
    split=st.floats(0, 1),
)
def test_counters_of_two_halves_sum_to_the_whole(ops, split):
    config = MonitorConfig(attributes=["a", "b"], privacy_floor=1, min_group_size=1)
    cut = int(len(ops) * split)
    whole, first, second = Pipeline(config), Pipeline(config), Pipeline(config)
    whole.process_events([to_event(op) for op in ops])
    first.process_events([to_event(op) for op in ops[:cut]])
    second.process_events([to_event(op) for op in ops[cut:]])
    merged = Counter(_counter_samples(first))
    merged.update(_counter_samples(second))
    expected = _counter_samples(whole)
    assert {k: v for k, v in merged.items() if v} == {k: v for k, v in expected.items() if v}
    assert sum(v for k, v in expected.items() if ("cell", "predictions") in k and ("attribute", "a") in k) == len(ops)


def test_rates_from_merged_rows_equal_rates_of_the_whole():
    rng = np.random.default_rng(0)
    ops = [
        {"kind": "p", "id": i, "a": rng.choice(["x", "y"]), "b": "p", "pred": int(rng.integers(2)),
         "label": int(rng.integers(2)), "score": None, "ts": float(i)}
        for i in range(1000)
    ]
    halves = [Pipeline(MonitorConfig(attributes=["a"])) for _ in range(2)]
    halves[0].process_events([to_event(op) for op in ops[::2]])
    halves[1].process_events([to_event(op) for op in ops[1::2]])
    whole = Pipeline(MonitorConfig(attributes=["a"]))
    whole.process_events([to_event(op) for op in ops])

    def rows_by_name(p):
        snap = p.models["m"].snapshot()[0]
        return {n: snap.rows["a"][g] for g, n in enumerate(snap.groups["a"])}

    a, b, w = rows_by_name(halves[0]), rows_by_name(halves[1]), rows_by_name(whole)
    for name in w:
        assert np.array_equal(a[name] + b[name], w[name])


def test_a_time_window_loses_members_the_journal_overwrites_even_inside_its_time():
    default = TimeWindow.CHUNK
    TimeWindow.CHUNK = 2
    try:
        pipeline = Pipeline(MonitorConfig(attributes=["a"], count_windows=[], time_windows_seconds=[1000.0],
                                          journal_capacity=4))
        for i in range(10):  # one event per batch, all within the window's 1000 s
            pipeline.process_events([Event(event_id=str(i), ts=float(i), model="m", prediction=1, groups={"a": "x"})])
        _, time_window = pipeline.models["m"].snapshot()
        assert dict(zip(CELL_NAMES, time_window.rows["a"][0]))["predictions"] == 4  # the journal holds 4
        assert pipeline.models["m"].windows[1].truncated_events == 6
    finally:
        TimeWindow.CHUNK = default


def test_a_time_window_saved_before_the_chunks_restores_and_keeps_counting_right():
    import pickle

    def events(start, stop):
        return [Event(event_id=str(i), ts=float(i), model="m", prediction=i % 2, groups={"a": "xy"[i % 3 == 0]})
                for i in range(start, stop)]

    config = MonitorConfig(attributes=["a"], count_windows=[], time_windows_seconds=[50.0])
    pipeline, whole = Pipeline(config), Pipeline(config)
    pipeline.process_events(events(0, 120))
    window = pipeline.models["m"].windows[1]
    old_state = {k: v for k, v in window.__dict__.items() if k not in ("_chunks", "_covered")}
    old_state["_tail_seq"] = 70  # the format before the chunks: every event before it has left
    window.__dict__.clear()
    window.__setstate__(pickle.loads(pickle.dumps(old_state)))
    pipeline.process_events(events(120, 300))
    whole.process_events(events(0, 120))
    whole.process_events(events(120, 300))
    assert pipeline.models["m"].snapshot()[1].rows["a"].tolist() == whole.models["m"].snapshot()[1].rows["a"].tolist()
