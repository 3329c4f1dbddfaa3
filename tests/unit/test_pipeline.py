"""Pipeline semantics: dedup, late and early labels, intersections, stats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.counts import FN, FP, N, POS, TN, TP
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report


def line(event_id, prediction=None, groups=None, label=None, **extra) -> bytes:
    event = {"event_id": str(event_id), **extra}
    if prediction is not None:
        event.update(prediction=prediction, groups=groups or {"sex": "F"})
    if label is not None or prediction is None:
        event["label"] = label
    return json.dumps(event).encode()


def rows(pipeline, attribute="sex", model="default", window=0):
    snapshot = pipeline.models[model].snapshot()[window]
    return {name: snapshot.rows[attribute][g] for g, name in enumerate(snapshot.groups[attribute])}


def test_redelivered_predictions_count_once_within_and_across_batches():
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(1, 1), line(1, 1), line(2, 0)])
    p.process_lines([line(2, 0), line(3, 1)])
    assert rows(p)["F"][N] == 3
    assert (p.stats.valid, p.stats.duplicates) == (3, 2)


def test_a_generation_whose_prediction_is_a_duplicate_is_one_whole_duplicate():
    """Counted as a duplicate, so its response is not counted either (it was, as a generation of its own)."""
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(1, 1)])
    p.process_lines([line(1, 1, response="I can't help with that."), line(2, 1, response="Sure.")])
    assert (p.stats.valid, p.stats.duplicates) == (2, 1)
    assert set(p.generation_ids) == {("default", "2")}


def test_late_label_updates_label_cells_and_unlabeled_predictions_still_count():
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(1, 1), line(2, 1), line(3, 0)])
    assert rows(p)["F"][[TP, FP, TN, FN]].sum() == 0
    assert rows(p)["F"][POS] == 2
    p.process_lines([line(1, label=1), line(3, label=1)])
    r = rows(p)["F"]
    assert (r[TP], r[FP], r[TN], r[FN]) == (1, 0, 0, 1)
    assert p.stats.outcomes["joined"] == 2


def test_outcome_before_prediction_joins_when_the_prediction_arrives():
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(9, label=0)])
    assert p.stats.outcomes["early"] == 1 and p.pending_outcomes() == 1
    p.process_lines([line(9, 1)])
    assert rows(p)["F"][FP] == 1
    assert p.stats.outcomes["joined"] == 1 and not p.pending_outcomes()


def test_duplicate_and_conflicting_outcomes_keep_the_first_label():
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(1, 1), line(1, label=1), line(1, label=1), line(1, label=0)])
    p.process_lines([line(1, label=0)])
    assert rows(p)["F"][TP] == 1 and rows(p)["F"][FP] == 0
    assert p.stats.outcomes == {"joined": 1, "duplicate": 1, "conflicting": 2}


def test_outcomes_that_never_find_a_prediction_are_orphaned_past_the_capacity():
    p = Pipeline(MonitorConfig(early_outcome_capacity=2, count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(f"x{i}", label=1) for i in range(5)])
    assert p.stats.outcomes["orphaned"] == 3 and p.pending_outcomes() == 2


def test_label_for_a_prediction_older_than_the_journal_is_not_applied():
    p = Pipeline(MonitorConfig(journal_capacity=4, count_windows=[2], time_windows_seconds=[]))
    p.process_lines([line(i, 1) for i in range(6)])
    p.process_lines([line(0, label=1), line(5, label=1)])
    assert rows(p)["F"][TP] == 1  # event 0 left the journal; its label waits as an early outcome
    assert p.stats.outcomes["early"] == 1
    assert rows(p, window=1)["F"][N] == 2 and rows(p, window=1)["F"][TP] == 1


def test_intersections_and_missing_attributes():
    config = MonitorConfig(attributes=["race", "sex"], intersections=[["race", "sex"]],
                           count_windows=[], time_windows_seconds=[])
    p = Pipeline(config)
    p.process_lines([
        line(1, 1, {"race": "A", "sex": "F"}),
        line(2, 0, {"race": "A", "sex": "M"}),
        line(3, 1, {"race": "B"}),
    ])
    assert set(rows(p, "race&sex")) == {"A&F", "A&M", "B&unknown"}
    assert rows(p, "sex")["unknown"][N] == 1


def test_attributes_are_discovered_when_not_configured():
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(1, 1, {"a": "x"}), line(2, 1, {"b": "y"})])
    assert set(p.models["default"].index) == {"a", "b"}


def test_models_are_tracked_apart():
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(1, 1, model="m1"), line(2, 0, model="m2"), line(3, 1, model="m1")])
    assert rows(p, model="m1")["F"][N] == 2 and rows(p, model="m2")["F"][N] == 1
    report = build_report(p, "m2")
    assert report["model"] == "m2" and set(report["models"]) == {"m1", "m2"}


def test_bad_lines_are_counted_with_reasons_and_the_rest_applied():
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    result = p.process_lines([line(1, 1), b"{oops", line(2, 1), b'{"event_id": 3}', b"", line(4, 0)])
    assert [i for i, _ in result.rejected] == [1, 3, 4]
    assert rows(p)["F"][N] == 3
    assert p.stats.invalid == 3 and p.stats.invalid_reasons["not_json"] == 2


def test_report_flags_small_groups_and_keeps_them_out_of_alert_gaps():
    config = MonitorConfig(min_group_size=30, privacy_floor=10, count_windows=[], time_windows_seconds=[])
    p = Pipeline(config)
    rng = np.random.default_rng(1)
    events = [line(i, int(rng.random() < 0.5), {"g": "big"}) for i in range(100)]
    events += [line(f"t{i}", 1, {"g": "tiny"}) for i in range(5)]
    events += [line(f"m{i}", 0, {"g": "mid"}) for i in range(40)]
    p.process_lines(events)
    report = build_report(p)["attributes"]["g"]
    assert report["groups"]["tiny"]["below_privacy_floor"] and report["groups"]["tiny"]["below_min_size"]
    assert not report["groups"]["mid"]["below_min_size"]
    assert report["alert_groups"] == ["big", "mid"]
    assert report["gaps"]["demographic_parity_difference"] == pytest.approx(1.0)
    assert report["alert_gaps"]["demographic_parity_difference"] < 1.0


def test_derived_outputs_share_labels_and_fate_but_not_stats():
    from fairwatch.monitor.events import Event, EventParser

    parser = EventParser()
    p = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    events = [parser.parse(line(i, 1)) for i in range(3)] + [parser.parse(line(1, 1))]  # last: duplicate
    debiased = {
        i: [Event(event_id=e.event_id, ts=e.ts, model="default:debiased", prediction=0, score=0.1, groups=e.groups)]
        for i, e in enumerate(events)
    }
    p.process_events([parser.parse(line(0, label=1))])  # early outcome for event 0
    p.process_events(events, derived=debiased)
    p.process_events([parser.parse(line(2, label=0))])  # late outcome for event 2
    original, derived = rows(p)["F"], rows(p, model="default:debiased")["F"]
    assert original[N] == derived[N] == 3
    assert (original[TP], original[FP]) == (1, 1) and (derived[FN], derived[TN]) == (1, 1)
    assert p.stats.valid == 3 and p.stats.duplicates == 1 and p.stats.outcomes["joined"] == 2


def copied(event_id, prediction, label, groups=None, ts=1.0, model="default") -> bytes:
    """An outcome as `fairwatch join` forwards it: with a copy of its prediction."""
    copy = {"model": model, "prediction": prediction, "score": None, "groups": groups or {"sex": "F"}, "ts": ts}
    return json.dumps({"event_id": str(event_id), "label": label, "ts": ts + 5, "prediction_copy": copy}).encode()


def test_a_copied_outcome_counts_its_label_where_the_prediction_is_not_held():
    # A partition moves: `counted` applied the predictions, `new_owner` gets their outcomes.
    config = MonitorConfig(count_windows=[10], time_windows_seconds=[])
    counted, new_owner, single = Pipeline(config), Pipeline(config), Pipeline(config)
    predictions = [line(1, 1), line(2, 0, {"sex": "M"}), line(3, 1)]
    outcomes = [copied(1, 1, 1), copied(2, 0, 1, {"sex": "M"}), copied(3, 1, 0)]
    counted.process_lines(predictions)
    new_owner.process_lines(outcomes + [copied(1, 1, 1), copied(3, 1, 1)])  # a redelivery, a conflict
    single.process_lines(predictions + outcomes)
    for sex in ("F", "M"):
        assert (rows(counted)[sex] + rows(new_owner)[sex]).tolist() == rows(single)[sex].tolist()
    assert +new_owner.stats.outcomes == {"joined_from_copy": 3, "duplicate": 1, "conflicting": 1}
    assert +single.stats.outcomes == {"joined": 3}  # the prediction is held: the copy is not used
    assert rows(new_owner)["F"][N] == 0 and rows(new_owner)["F"][TP] == 1
    assert rows(new_owner, window=1)["F"].sum() == 0  # windows hold only what this worker counted
    assert not new_owner.pending_outcomes()


def test_a_copied_outcome_of_a_prediction_older_than_the_journal_counts_since_start():
    p = Pipeline(MonitorConfig(journal_capacity=4, count_windows=[2], time_windows_seconds=[]))
    p.process_lines([line(i, 1) for i in range(6)])
    p.process_lines([copied(0, 1, 1), copied(5, 1, 0)])
    assert rows(p)["F"][TP] == 1 and rows(p)["F"][FP] == 1
    assert +p.stats.outcomes == {"joined": 1, "joined_from_copy": 1}
    assert rows(p, window=1)["F"][TP] == 0 and rows(p, window=1)["F"][FP] == 1


def test_a_worker_whose_label_coverage_passes_one_still_reports():
    import warnings

    p = Pipeline(MonitorConfig(min_group_size=2, privacy_floor=1, count_windows=[], time_windows_seconds=[]))
    p.process_lines([line(i, 1) for i in range(3)] + [copied(f"x{i}", 1, 1) for i in range(5)])
    assert rows(p)["F"][N] == 3 and rows(p)["F"][TP] == 5  # 5 labels for 3 predictions held here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = build_report(p)
    assert report["attributes"]["sex"]["groups"]["F"]["label_coverage"] is not None
