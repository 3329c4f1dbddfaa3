"""State through ``__getstate__``/``__setstate__``: a pipeline saved mid-stream and restored counts on exactly
as one that ran uninterrupted; a snapshot of an older format is refused in one line and kept."""

from __future__ import annotations

import json
import pickle

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fairwatch.consumers.state import FORMAT_VERSION, SNAPSHOT_NAME, StateError, StateStore
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.exporter import FairwatchCollector
from fairwatch.monitor.model_monitor import ModelMonitor
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report, to_json
from fairwatch.monitor.synthetic import SyntheticStream

CONFIG = dict(attributes=["race", "sex"], count_windows=[400], time_windows_seconds=[30.0], min_group_size=20,
              privacy_floor=1, journal_capacity=1500, early_outcome_capacity=50, decision_block_events=100,
              decision_check_events=200, drift_block_events=100)


def clock() -> float:
    return 1_795_000_100.0


def batches() -> list[list[bytes]]:
    """Predictions of two models for the same events (a shadow), outcomes late, some early, some twice."""
    stream = SyntheticStream(n_events=3000, label_delay_events=300, label_fraction=0.6, shift_at=1000, shift_logit=3.0, seed=3)
    out = []
    for b, batch in enumerate(stream.batches(250)):
        shadow = [line.replace(b'"model": "synthetic-credit"', b'"model": "shadow"') for line in batch
                  if b'"prediction"' in line and b % 3 == 0]
        early = [json.dumps({"event_id": f"e{b * 250 + 400 + k}", "label": k % 2}).encode() for k in range(5)]
        out.append(early + batch + shadow + batch[:3])
    return out


def exposition(pipeline: Pipeline) -> list[str]:
    """The /metrics lines, less the batch durations (wall-clock times, not state)."""
    registry = CollectorRegistry()
    registry.register(FairwatchCollector(pipeline))
    return [line for line in generate_latest(registry).decode().splitlines() if "batch_processing_seconds" not in line]


def run(pipeline: Pipeline, lines: list[list[bytes]]) -> Pipeline:
    for batch in lines:
        pipeline.process_lines(batch)
    return pipeline


def test_restored_pipelines_count_on_as_an_uninterrupted_one(tmp_path):
    lines = batches()
    half = len(lines) // 2
    whole = run(Pipeline(MonitorConfig(**CONFIG), clock=clock), lines)
    assert whole.stats.outcomes["early"] and whole.stats.outcomes["joined"] and whole.stats.duplicates
    assert len(whole.monitors) == 2 and whole.onsets  # a shadow model, and breaches to carry over

    first = run(Pipeline(MonitorConfig(**CONFIG), clock=clock), lines[:half])
    store = StateStore(tmp_path)
    store.save(first, {"offsets": {"p0": half}})
    restored = Pipeline(MonitorConfig(**CONFIG), clock=clock)
    assert store.restore(restored) == {"offsets": {"p0": half}}
    store.close()
    unpickled = pickle.loads(pickle.dumps(first))  # a plain pickle too: the runtime parts are rebuilt
    assert unpickled.lock is not first.lock and unpickled.parser is not first.parser

    for pipeline in (run(restored, lines[half:]), run(unpickled, lines[half:])):
        assert to_json(build_report(pipeline)) == to_json(build_report(whole))
        assert exposition(pipeline) == exposition(whole)


def test_the_state_leaves_out_what_is_rebuilt():
    pipeline = run(Pipeline(MonitorConfig(**CONFIG), clock=clock), batches()[:2])
    state = pipeline.__getstate__()
    assert not {"parser", "lock", "response_scorer", "clock"} & set(state)
    assert isinstance(state["monitors"]["synthetic-credit"], ModelMonitor)
    live_lock = pipeline.lock
    pipeline.__setstate__(state)  # restoring into a live pipeline keeps its lock and clock
    assert pipeline.lock is live_lock and pipeline.clock is clock


def test_an_older_snapshot_format_is_refused_in_one_line_and_kept(tmp_path):
    (tmp_path / SNAPSHOT_NAME).write_bytes(pickle.dumps(
        {"version": FORMAT_VERSION - 1, "config": b"{}", "pipeline": {"models": {}}, "extra": {}}))
    store = StateStore(tmp_path)
    with pytest.raises(StateError) as error:
        store.restore(Pipeline(MonitorConfig(**CONFIG)))
    line = str(error.value)
    assert "\n" not in line and f"format {FORMAT_VERSION - 1}" in line and "--rebuild-state" in line
    assert (tmp_path / SNAPSHOT_NAME).exists()
    aside = store.set_aside()  # what --rebuild-state does: renamed, not deleted
    store.close()
    assert aside is not None and aside.exists() and not (tmp_path / SNAPSHOT_NAME).exists()


@pytest.mark.parametrize("document", [b"not a pickle", pickle.dumps(["a", "list"]), pickle.dumps({"no": "version"})])
def test_a_snapshot_that_is_not_one_is_refused_in_one_line(tmp_path, document):
    (tmp_path / SNAPSHOT_NAME).write_bytes(document)
    store = StateStore(tmp_path)
    with pytest.raises(StateError) as error:
        store.restore(Pipeline(MonitorConfig(**CONFIG)))
    store.close()
    assert "\n" not in str(error.value) and SNAPSHOT_NAME in str(error.value)


def test_groups_past_the_label_cap_keep_their_series_through_a_snapshot(tmp_path):
    # One own label per attribute: the group that reached the floor first keeps it, the other is "other".
    # Relabelled by their counts after a restart, the larger group would take it and the series would swap.
    config = dict(attributes=["sex"], count_windows=[], time_windows_seconds=[], privacy_floor=1,
                  max_groups_per_attribute=1)

    def events(group: str, n: int, start: int) -> list[bytes]:
        return [json.dumps({"event_id": f"{group}{start + k}", "prediction": 1, "groups": {"sex": group}}).encode()
                for k in range(n)]

    def exported(pipeline: Pipeline) -> set[str]:
        return {line.split(" ")[0] for line in exposition(pipeline)
                if line.startswith("fairwatch_group_events_total") and 'cell="predictions"' in line}

    first = Pipeline(MonitorConfig(**config), clock=clock)
    first.process_lines(events("a", 1, 0))
    exposition(first)  # a scrape: "a" takes the one own label
    first.process_lines(events("b", 5, 0))
    before = exported(first)
    assert before == {'fairwatch_group_events_total{attribute="sex",cell="predictions",group="a",model="default"}',
                      'fairwatch_group_events_total{attribute="sex",cell="predictions",group="other",model="default"}'}
    store = StateStore(tmp_path)
    store.save(first, {})
    restored = Pipeline(MonitorConfig(**config), clock=clock)
    store.restore(restored)
    store.close()
    assert exported(restored) == before
    assert exported(pickle.loads(pickle.dumps(first))) == before
