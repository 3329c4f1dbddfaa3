"""Per-group rates before labels arrive, on COMPAS with half the labels withheld."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.events import Event
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report, format_table

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


def _compas_events(compas_csv, withhold, order_by_date: bool):
    """COMPAS as prediction events (decile >= 5 predicts recidivism), labels
    withheld where ``withhold(row)``; truth of the withheld rows per race."""
    with open(compas_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if order_by_date:
        rows.sort(key=lambda row: (row["compas_screening_date"], row["id"]))
    events, withheld = [], {}
    for row in rows:
        label = int(row["two_year_recid"])
        hide = withhold(row)
        events.append(Event(event_id=row["id"], ts=0.0, model="compas", prediction=int(int(row["decile_score"]) >= 5),
                            score=float(row["decile_score"]), groups={"race": row["race"]},
                            label=None if hide else label))
        if hide:
            withheld.setdefault(row["race"], []).append(label)
    pipeline = Pipeline(MonitorConfig(attributes=["race"], count_windows=[], time_windows_seconds=[]))
    pipeline.process_events(events)
    return build_report(pipeline), withheld


def test_estimates_are_flagged_when_labels_stop_at_a_date_and_calibration_has_drifted(compas_csv):
    # In this extract, people screened from April 2014 on reoffended at 97-100%
    # (against about 37% before): the calibration learned before a cut in July
    # no longer holds for the predictions after it, and the labels of April to
    # June already say so.
    report, withheld = _compas_events(compas_csv, lambda row: row["compas_screening_date"] >= "2014-07-01",
                                      order_by_date=True)
    groups = report["attributes"]["race"]["groups"]
    for race in ("African-American", "Caucasian"):
        check = groups[race]["estimate_reliability"]
        assert check["reliable"] is False and check["z"] > 4
        assert check["recent_positive_rate"] > check["expected_positive_rate"] + 0.1
        # ...and rightly: the estimate of the withheld predictions' base rate is far from the truth.
        estimated = groups[race]["estimated"]
        assert np.mean(withheld[race]) > 0.95 and estimated["ppv"] < 0.9
    assert "calibration drift" in format_table(report)


@pytest.mark.parametrize("seed", range(20))
def test_random_withholding_raises_neither_the_drift_flag_nor_the_coverage_gap(compas_csv, seed):
    rng = np.random.default_rng(seed)
    draws = {}

    def withhold(row):
        return draws.setdefault(row["id"], rng.random() < 0.5)

    report, _ = _compas_events(compas_csv, withhold, order_by_date=False)
    body = report["attributes"]["race"]
    checks = [g["estimate_reliability"] for g in body["groups"].values() if g.get("estimate_reliability")]
    assert len(checks) >= 2 and all(c["reliable"] for c in checks)
    # The Asian group has 32 rows: its coverage alone strays by 0.1 often; that is no imbalance.
    assert body["label_coverage_gap"]["imbalanced"] is False
