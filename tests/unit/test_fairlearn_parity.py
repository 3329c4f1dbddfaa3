"""`fairwatch replay` of COMPAS against ProPublica's figures and Fairlearn's MetricFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as fm
from helpers import COMPAS_FLAGS, replay_json
from sklearn.metrics import accuracy_score, precision_score

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def compas(compas_csv):
    frame = pd.read_csv(compas_csv)
    report = replay_json(compas_csv, *COMPAS_FLAGS, "--group-col", "race", "--group-col", "sex")
    return frame, report


def test_reproduces_propublica(compas):
    _, report = compas
    groups = report["attributes"]["race"]["groups"]
    assert round(groups["African-American"]["fpr"] * 100, 2) == 44.85
    assert round(groups["Caucasian"]["fpr"] * 100, 2) == 23.45
    assert round(groups["African-American"]["fnr"] * 100, 2) == 27.99
    assert round(groups["Caucasian"]["fnr"] * 100, 2) == 47.72
    assert report["events"] == 7214 and report["invalid"] == 0


def _fdr(y_true, y_pred):
    return 1 - precision_score(y_true, y_pred, zero_division=np.nan)


METRICS = {
    "selection_rate": fm.selection_rate,
    "tpr": fm.true_positive_rate,
    "fpr": fm.false_positive_rate,
    "fnr": fm.false_negative_rate,
    "tnr": fm.true_negative_rate,
    "ppv": lambda t, p: precision_score(t, p, zero_division=np.nan),
    "fdr": _fdr,
    "accuracy": accuracy_score,
}


@pytest.mark.parametrize("attribute", ["race", "sex"])
def test_every_rate_and_gap_equals_fairlearn(compas, attribute):
    frame, report = compas
    y_true = frame["two_year_recid"]
    y_pred = (frame["decile_score"] >= 5).astype(int)
    sensitive = frame[attribute]
    mf = fm.MetricFrame(metrics=METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    ours = report["attributes"][attribute]
    assert set(ours["groups"]) == set(mf.by_group.index)
    for group, row in mf.by_group.iterrows():
        for metric in METRICS:
            assert ours["groups"][group][metric] == pytest.approx(row[metric], abs=1e-9), (group, metric)
        assert ours["groups"][group]["mean_score"] == pytest.approx(
            frame.loc[sensitive == group, "decile_score"].mean(), abs=1e-9
        )
    kw = dict(y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    gaps = ours["gaps"]
    expected = {
        "demographic_parity_difference": fm.demographic_parity_difference(**kw),
        "demographic_parity_ratio": fm.demographic_parity_ratio(**kw),
        "equalized_odds_difference": fm.equalized_odds_difference(**kw),
        "equalized_odds_ratio": fm.equalized_odds_ratio(**kw),
        "equal_opportunity_difference": fm.equal_opportunity_difference(**kw),
        "false_positive_rate_difference": fm.false_positive_rate_difference(**kw),
        "false_negative_rate_difference": fm.false_negative_rate_difference(**kw),
        "false_discovery_rate_difference": mf.difference()["fdr"],
        "accuracy_difference": mf.difference()["accuracy"],
        # Dixon et al.: sum over groups of |group rate - overall rate|.
        "fped": (mf.by_group["fpr"] - mf.overall["fpr"]).abs().sum(),
        "fned": (mf.by_group["fnr"] - mf.overall["fnr"]).abs().sum(),
    }
    for name, value in expected.items():
        assert gaps[name] == pytest.approx(value, abs=1e-9), name


def test_small_groups_are_flagged_and_left_out_of_alert_gaps(compas):
    _, report = compas
    race = report["attributes"]["race"]
    assert race["groups"]["Native American"]["below_min_size"] is True  # 18 defendants
    assert race["groups"]["Asian"]["below_min_size"] is False  # 32
    assert "Native American" not in race["alert_groups"]
    # Native American has the highest selection rate: without it the gap shrinks.
    assert race["alert_gaps"]["demographic_parity_difference"] < race["gaps"]["demographic_parity_difference"]
    interval = race["gap_intervals"]["demographic_parity_difference"]
    assert interval["lower"] < interval["value"] < interval["upper"]
    assert interval["groups"] == ["Native American", "Other"]
