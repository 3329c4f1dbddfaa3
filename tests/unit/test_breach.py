"""Breach decisions: quiet on noise, quick on a real shift, the worst subgroup found."""

from __future__ import annotations

import numpy as np
import pytest

from fairwatch.monitor.breach import BreachMonitor
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.events import Event
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report
from fairwatch.monitor.synthetic import NEAR_THRESHOLD_SHARES, near_threshold_stream

BATCH = 2000


def events_of(codes, prediction, label, start=0, names=None):
    names = names or {a: [f"{a}{g}" for g in range(len(s))] for a, s in NEAR_THRESHOLD_SHARES.items()}
    return [
        Event(event_id=str(start + i), ts=float(start + i), model="m", prediction=int(prediction[i]),
              groups={a: names[a][codes[a][i]] for a in codes}, label=int(label[i]))
        for i in range(prediction.size)
    ]


def run_pipeline(codes, prediction, label, **config):
    pipeline = Pipeline(MonitorConfig(attributes=["A", "B", "C"], count_windows=[], time_windows_seconds=[],
                                      decision_check_events=1000, **config))
    for start in range(0, prediction.size, BATCH):
        part = slice(start, start + BATCH)
        pipeline.process_events(events_of({a: c[part] for a, c in codes.items()}, prediction[part], label[part],
                                          start))
    return pipeline


@pytest.mark.slow
def test_a_million_stationary_events_with_gaps_just_inside_the_thresholds_raise_no_alert():
    codes, prediction, label = near_threshold_stream(seed=2026, n=1_000_000)
    report = build_report(run_pipeline(codes, prediction, label))
    assert report["alerts"] == []
    # ...while the gaps really are close: the realised DP difference of A is near 0.07.
    assert 0.05 < report["attributes"]["A"]["gaps"]["demographic_parity_difference"] < 0.1


def test_a_shift_of_tpr_and_fpr_by_03_in_a_15_percent_group_is_declared_within_20000_events():
    shift_at = 60_000
    codes, prediction, label = near_threshold_stream(seed=7, n=100_000, shift_at=shift_at)
    pipeline = run_pipeline(codes, prediction, label)
    report = build_report(pipeline)
    on_a = [a for a in report["alerts"] if a["attribute"] == "A"]
    assert on_a, report["alerts"]
    first = on_a[0]
    assert shift_at <= first["event_index"] < shift_at + 20_000
    assert "A2" in first["groups"]  # the shifted group is one of the pair
    assert first["lower"] > first["threshold"] and first["lower"] <= first["value"] <= first["upper"]
    assert set(first) == {"attribute", "metric", "event_index", "value", "lower", "upper", "threshold", "groups",
                          "window"}
    assert all(a["event_index"] >= shift_at for a in report["alerts"])


def test_a_bias_in_one_intersection_is_the_top_subgroup_with_an_alert():
    rng = np.random.default_rng(11)
    n = 120_000
    codes = {"A": rng.choice(3, n, p=[0.5, 0.3, 0.2]), "B": rng.choice(2, n, p=[0.5, 0.5]),
             "C": rng.choice(2, n)}
    biased = (codes["A"] == 1) & (codes["B"] == 1)  # 15% of traffic
    # Selection rate 0.3 everywhere, 0.48 in the biased cell: its marginal
    # groups A1 and B1 sit at 0.39 (and 0.354): gaps 0.09 and 0.054, inside 0.1.
    prediction = (rng.random(n) < np.where(biased, 0.48, 0.3)).astype(np.int64)
    label = np.full(n, -1)
    pipeline = run_pipeline(codes, prediction, label)
    report = build_report(pipeline)
    marginal = [a for a in report["alerts"] if "&" not in a["attribute"]]
    assert marginal == []
    assert report["attributes"]["A"]["gaps"]["demographic_parity_difference"] < 0.1
    top = report["subgroups"][0]
    assert top["groups"] == {"A": "A1", "B": "B1"} and top["metric"] == "selection_rate" and top["alert"] is True
    assert top["lower"] > 0.1
    assert set(top) == {"groups", "n", "metric", "value", "rest", "difference", "lower", "upper", "alert"}


def test_merged_counts_give_the_same_decision_as_one_stream():
    codes, prediction, label = near_threshold_stream(seed=3, n=40_000, shift_at=0, shift=0.3)
    names = {a: [f"{a}{g}" for g in range(len(s))] for a, s in NEAR_THRESHOLD_SHARES.items()}
    kwargs = dict(thresholds=lambda attribute, metric: {"demographic_parity_ratio": 0.8}.get(metric, 0.1),
                  attribute_budget=3, scales=0, check_events=10**9)
    whole, first, second = (BreachMonitor("m", **kwargs) for _ in range(3))
    positions = np.arange(prediction.size)
    whole.observe(codes, prediction, label, names, positions, positions.astype(float))
    odd = positions % 2 == 1  # two workers, each with a random half
    for monitor, part in ((first, odd), (second, ~odd)):
        monitor.observe({a: c[part] for a, c in codes.items()}, prediction[part], label[part], names,
                        positions[part], positions[part].astype(float))
    merged = BreachMonitor.merged([first, second], **kwargs)
    whole.check(names, 0)
    merged.check(names, 0)
    assert whole.states.keys() == merged.states.keys()
    for key, state in whole.states.items():
        assert merged.states[key].breached == state.breached
        assert merged.states[key].bound == pytest.approx(state.bound, abs=1e-9)
    assert whole.states[("A", "equalized_odds_difference")].breached


def test_a_small_group_never_drives_a_decision():
    rng = np.random.default_rng(5)
    n = 30_000
    codes = {"A": rng.choice(2, n, p=[0.999, 0.001]), "B": rng.choice(2, n), "C": rng.choice(2, n)}
    prediction = np.where(codes["A"] == 1, 1, (rng.random(n) < 0.2).astype(np.int64))  # the tiny group: all 1
    pipeline = run_pipeline(codes, prediction, np.full(n, -1), min_group_size=50)
    assert not [a for a in build_report(pipeline)["alerts"] if a["attribute"] == "A"]
