"""Per-group rates before labels arrive, on COMPAS with half the labels withheld."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.events import Event
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report

pytestmark = pytest.mark.data


def test_estimated_fpr_and_fnr_of_large_groups_are_close_to_the_withheld_truth(compas_csv):
    rng = np.random.default_rng(2016)
    events, withheld = [], []
    with open(compas_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            label = int(row["two_year_recid"])
            prediction = int(int(row["decile_score"]) >= 5)
            keep = rng.random() < 0.5
            events.append(Event(event_id=row["id"], ts=0.0, model="compas", prediction=prediction,
                                score=float(row["decile_score"]), groups={"race": row["race"]},
                                label=label if keep else None))
            if not keep:
                withheld.append((row["race"], prediction, label))
    pipeline = Pipeline(MonitorConfig(attributes=["race"]))
    pipeline.process_events(events)
    groups = build_report(pipeline)["attributes"]["race"]["groups"]
    for race in ("African-American", "Caucasian"):
        truth = np.array([(p, y) for r, p, y in withheld if r == race])
        fpr = truth[truth[:, 1] == 0, 0].mean()
        fnr = 1 - truth[truth[:, 1] == 1, 0].mean()
        entry = groups[race]
        assert entry["label_coverage"] == pytest.approx(0.5, abs=0.03)
        estimated = entry["estimated"]
        assert estimated["n_unlabeled"] == len(truth)
        assert estimated["fpr"] == pytest.approx(fpr, abs=0.05)
        assert estimated["fnr"] == pytest.approx(fnr, abs=0.05)
        low, high = estimated["ci"]["fpr"]
        assert low <= fpr <= high
        low, high = estimated["ci"]["fnr"]
        assert low <= fnr <= high


def test_no_estimate_without_scores_or_with_too_few_labels():
    pipeline = Pipeline(MonitorConfig(attributes=["g"]))
    pipeline.process_events([
        Event(event_id=str(i), ts=float(i), prediction=i % 2, groups={"g": "x"}, label=(i % 2) if i < 10 else None,
              model="m")
        for i in range(200)
    ])
    entry = build_report(pipeline)["attributes"]["g"]["groups"]["x"]
    assert entry["estimated"] is None and entry["label_coverage"] == pytest.approx(0.05)


def test_label_delay_and_coverage_gap_are_reported():
    import json

    pipeline = Pipeline(MonitorConfig(attributes=["g"], count_windows=[], time_windows_seconds=[]))
    lines = [json.dumps({"event_id": f"{g}{i}", "ts": 1000.0, "prediction": 1, "score": 0.7, "groups": {"g": g}})
             for g in ("a", "b") for i in range(100)]
    lines += [json.dumps({"event_id": f"a{i}", "ts": 1060.0, "label": 1}) for i in range(90)]  # a: 90% labeled, 60 s
    lines += [json.dumps({"event_id": f"b{i}", "ts": 4600.0, "label": 0}) for i in range(40)]  # b: 40%, an hour
    pipeline.process_lines(lines)
    body = build_report(pipeline)["attributes"]["g"]
    assert body["groups"]["a"]["label_delay_seconds"] == pytest.approx(60)
    assert body["groups"]["b"]["label_delay_seconds"] == pytest.approx(3600)
    assert body["label_coverage_gap"]["imbalanced"] is True
    assert body["label_coverage_gap"]["value"] == pytest.approx(0.5)
    assert body["groups"]["a"]["calibration_error"] == pytest.approx(0.3)  # scores 0.7, all positive
