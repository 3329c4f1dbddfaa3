"""``fairwatch decide``: decisions on the summed /metrics of workers equal those of one worker."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest

from fairwatch.monitor.config import MonitorConfig
from fairwatch.decide import MergedDecisionCollector, decide_once
from fairwatch.monitor.exporter import make_registry
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.synthetic import near_threshold_stream
from test_breach import events_of

STEP = 4000


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_scraped_workers_decide_as_one_worker_that_saw_everything(workers):
    config = MonitorConfig(attributes=["A", "B", "C"], count_windows=[], time_windows_seconds=[])
    codes, prediction, label = near_threshold_stream(seed=5, n=48_000, shift_at=16_000, shift=0.3)
    whole = Pipeline(config)
    parts = [Pipeline(config) for _ in range(workers)]
    worker_of = np.random.default_rng(2).integers(0, workers, prediction.size)  # events keyed by id
    merged_of_one, merged_of_many = {}, {}
    found_one, found_many = [], []
    for start in range(0, prediction.size, STEP):
        step = np.arange(start, start + STEP)
        whole.process_events(events_of({a: c[step] for a, c in codes.items()}, prediction[step], label[step], start))
        for w, pipeline in enumerate(parts):
            mine = step[worker_of[step] == w]
            events = events_of({a: c[mine] for a, c in codes.items()}, prediction[mine], label[mine])
            for event, i in zip(events, mine):
                event.event_id = str(i)
            pipeline.process_events(events)
        # One scrape round of each: one worker's /metrics, and the several workers'.
        found_one += decide_once(merged_of_one, [generate_latest(make_registry(whole)).decode()], config)
        found_many += decide_once(merged_of_many, [generate_latest(make_registry(p)).decode() for p in parts],
                                  config)
        one, many = merged_of_one["m"].states, merged_of_many["m"].states
        assert one.keys() == many.keys()
        for key, state in one.items():
            assert many[key].breached == state.breached, (start, key)
            assert many[key].bound == pytest.approx(state.bound, abs=1e-9, nan_ok=True)
    assert found_one and found_many == found_one
    assert all(f["event_index"] >= 16_000 for f in found_one if f["attribute"] == "A")
    # The merged decisions are served under the workers' decision metric names.
    text = generate_latest(_registry(MergedDecisionCollector(merged_of_many))).decode()
    assert 'fairwatch_decision_breach{attribute="A",metric="equalized_odds_difference",model="m"} 1.0' in text


def _registry(collector):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
