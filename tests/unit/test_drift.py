"""Drift detectors on group selection rates and gaps."""

from __future__ import annotations

import pytest

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.synthetic import SyntheticStream


def run(stream: SyntheticStream, **config) -> Pipeline:
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[], **config))
    for batch in stream.batches(2048):
        pipeline.process_lines(batch)
    return pipeline


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_a_shift_in_one_group_is_detected_on_that_group_and_the_gap(detector):
    stream = SyntheticStream(n_events=60_000, shift_at=30_000, shift_logit=1.5, label_fraction=0.0, seed=3)
    pipeline = run(stream, drift_detector=detector)
    race = [d for d in pipeline.drift_events if d.attribute == "race"]
    hispanic = [d for d in race if d.group == "Hispanic"]
    assert hispanic, pipeline.drift_events
    first = hispanic[0]
    assert first.metric == "selection_rate" and first.after > first.before + 0.15
    assert first.event_index > 30_000  # input positions: no outcome lines in this stream
    gap_changes = [d for d in race if d.group is None]
    assert gap_changes and gap_changes[0].metric == "demographic_parity_difference"
    assert gap_changes[0].after > gap_changes[0].before


def test_no_change_is_reported_on_a_stationary_stream():
    pipeline = run(SyntheticStream(n_events=60_000, shift_at=None, label_fraction=0.0, seed=5))
    assert pipeline.drift_events == []


def test_an_unknown_detector_is_a_config_error():
    from fairwatch.monitor.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="drift_detector"):
        parse_config({"drift_detector": "magic"})
