"""Hostile input at every entry point: the parser never raises, memory stays bounded by caps, files with odd
encodings or endings lose no event, bad settings are refused in one line, snapshots survive setting changes."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
from helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from fairwatch.consumers.state import StateError, StateStore
from fairwatch.monitor.config import ConfigError, MonitorConfig, parse_config
from fairwatch.monitor.events import Event, EventParser, Rejection
from fairwatch.monitor.pipeline import Pipeline
from fairwatch.monitor.report import build_report, to_json

NOW = 1_795_000_000.0


def parse(raw: bytes) -> Event | Rejection:
    return EventParser(now=lambda: NOW).parse(raw)


@pytest.mark.parametrize("raw, reason, words", [
    (b'{"event_id": "a", "prediction": 1, "groups": {"sex": "\xff\xfe"}}', "not_json", "UTF-8"),
    (b'{"event_id": "a", "x": ' + b"[" * 1000 + b"]" * 1000 + b', "prediction": 1, "groups": {}}', "not_json",
     "nested"),
    (b'{"event_id": "a", "prediction": 1, "groups": {"sex": "' + b"v" * 300 + b'"}}', "oversized", "length"),
    (b'{"event_id": "a", "prediction": 1, "groups": {"' + b"k" * 100 + b'": "v"}}', "oversized", "length"),
    (b'{"event_id": "a", "prediction": 1, "groups": {' + b",".join(b'"a%d": "v"' % i for i in range(65)) + b"}}",
     "oversized", "length"),
    (b'{"event_id": "a", "ts": "9999-12-31T00:00:00Z", "prediction": 1, "groups": {}}', "bad_value", "future"),
    (b'{"event_id": "a", "ts": "0001-01-01T00:00:00Z", "prediction": 1, "groups": {}}', "bad_value", "1970"),
    (b'{"event_id": "a", "ts": -1, "prediction": 1, "groups": {}}', "bad_value", "1970"),
    (b'{"event_id": "a", "label": 1, "prediction_copy": {"model": "m", "prediction": 1, "groups": {}, '
     b'"ts": 1e300}}', "bad_value", "prediction_copy"),
])
def test_the_parser_refuses_hostile_events_with_a_reason(raw, reason, words):
    result = parse(raw)
    assert isinstance(result, Rejection), result
    assert result.reason == reason and words in result.message and "\n" not in result.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_the_parser_answers_any_bytes_without_raising(raw):
    assert isinstance(parse(raw), (Event, Rejection))


def test_a_check_that_raises_costs_its_event_only(monkeypatch):
    original = EventParser.check

    def check(self, event):
        if event.event_id == "boom":
            raise KeyError("planted")
        return original(self, event)

    monkeypatch.setattr(EventParser, "check", check)
    result = parse(b'{"event_id": "boom", "prediction": 1, "groups": {}}')
    assert result.reason == "internal_error" and "KeyError" in result.message


def lines(n, groups, model="m", start=0):
    return [json.dumps({"event_id": f"{model}-{start + i}", "ts": NOW, "model": model, "prediction": i % 2,
                        "groups": groups(i)}).encode() for i in range(n)]


def test_attribute_names_past_the_cap_are_not_tracked(caplog):
    pipeline = Pipeline(MonitorConfig(max_attributes=5, count_windows=[], time_windows_seconds=[]))
    with caplog.at_level(logging.WARNING, "fairwatch.pipeline"):
        for batch in range(20):
            pipeline.process_lines(lines(1, lambda i: {f"attr{batch}-{k}": "x" for k in range(60)}, start=batch))
    assert len(pipeline.models["m"].components) == 5
    assert pipeline.stats.valid == 20
    assert pipeline.over_capacity()["attribute"] == 20 * 60 - 5
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "max_attributes = 5" in caplog.records[0].message


def test_models_past_the_cap_are_refused_and_counted():
    pipeline = Pipeline(MonitorConfig(max_models=3, count_windows=[], time_windows_seconds=[]))
    result = pipeline.process_lines([line for k in range(6) for line in lines(2, lambda i: {"g": "a"}, f"m{k}")])
    assert sorted(pipeline.models) == ["m0", "m1", "m2"]
    assert pipeline.stats.valid == 6 and pipeline.stats.invalid == 6
    assert {r.reason for _, r in result.rejected} == {"over_capacity"}
    assert pipeline.over_capacity()["model"] == 6


def test_group_values_past_the_cap_count_as_other():
    pipeline = Pipeline(MonitorConfig(max_group_values=50, max_groups_per_attribute=10, count_windows=[],
                                      time_windows_seconds=[]))
    pipeline.process_lines(lines(10_000, lambda i: {"g": f"value-{i}"}))
    index = pipeline.models["m"].index["g"]
    assert len(index.values) == 50 and index.values[-1] == "other" and len(index) == 50
    groups = build_report(pipeline)["attributes"]["g"]["groups"]
    assert groups["other"]["n"] == 10_000 - 49
    assert sum(g["n"] for g in groups.values()) == 10_000
    assert pipeline.over_capacity()["group_value"] == 10_000 - 49


def test_a_snapshot_survives_threshold_and_decision_changes_but_not_structural_ones(tmp_path, caplog):
    config = MonitorConfig(attributes=["g"], count_windows=[100])
    pipeline = Pipeline(config)
    pipeline.process_lines(lines(500, lambda i: {"g": "ab"[i % 2]}))
    store = StateStore(tmp_path)
    store.save(pipeline, {"offsets": {}})
    store.close()

    def restore(**changes):
        fresh = Pipeline(parse_config({**json.loads(json.dumps({"attributes": ["g"], "count_windows": [100]})),
                                       **changes}))
        store = StateStore(tmp_path)
        try:
            return fresh, store.restore(fresh)
        finally:
            store.close()

    restored, extra = restore(thresholds={"demographic_parity_difference": 0.05}, privacy_floor=5)
    assert extra == {"offsets": {}} and restored.stats.valid == 500
    with caplog.at_level(logging.WARNING, "fairwatch.state"):
        restored, _ = restore(decision_block_events=1000, family_error=0.01)
    assert restored.stats.valid == 500 and "decision_block_events" in caplog.text
    assert restored.models["m"].since_start.rows("g", 2)[:, 0].sum() == 500
    with pytest.raises(StateError, match=r"count_windows \[100\] -> \[200\].*--rebuild-state"):
        restore(count_windows=[200])


def test_a_snapshot_older_than_a_decision_setting_restarts_the_decisions(tmp_path, caplog, monkeypatch):
    # A snapshot written before decision_block_lifetime existed holds decision state
    # without it: the decisions start afresh, the counts stay.
    import msgspec

    import fairwatch.consumers.state as state

    written_by = state.config_fingerprint

    def older_fingerprint(pipeline):
        settings = msgspec.json.decode(written_by(pipeline))
        del settings["decision_block_lifetime"]
        return msgspec.json.encode(settings)

    pipeline = Pipeline(MonitorConfig(attributes=["g"]))
    pipeline.process_lines(lines(500, lambda i: {"g": "ab"[i % 2]}))
    monkeypatch.setattr(state, "config_fingerprint", older_fingerprint)
    store = StateStore(tmp_path)
    store.save(pipeline, {"offsets": {}})
    store.close()
    monkeypatch.undo()
    fresh = Pipeline(MonitorConfig(attributes=["g"]))
    store = StateStore(tmp_path)
    with caplog.at_level(logging.WARNING, "fairwatch.state"):
        store.restore(fresh)
    store.close()
    assert "decision_block_lifetime" in caplog.text and fresh.stats.valid == 500


@pytest.mark.parametrize("data, words", [
    ({"threshold_overrides": [{"demographic_parity_difference": float("nan")}]}, "threshold_overrides"),
    ({"threshold_overrides": [{"demographic_parity_difference": -0.5}]}, "> 0.0"),
    ({"threshold_overrides": [{"equalized_odds_difference": 7.0}]}, "<= 1.0"),
    ({"time_windows_seconds": [float("inf")]}, "time_windows_seconds"),
    ({"threshold": float("inf")}, "finite"),
    ({"attributes": ["race", "sex"], "intersections": [["race", "sexx"]]}, "'sexx'"),
    ({"max_future_seconds": -1}, "max_future_seconds"),
    ({"intersections": [["sex", ""]]}, "intersection sex& needs distinct, non-empty attribute names"),
    ({"intersections": [["sex", "sex"]]}, "intersection sex&sex needs distinct"),
    ({"intersections": [["a", "b", "c", "d"]]}, "joins 4 attributes; at most 3"),
    ({"max_group_values": 2_000_000}, "max_group_values"),
])
def test_settings_that_would_disable_or_corrupt_monitoring_are_refused(data, words):
    with pytest.raises(ConfigError, match=None) as error:
        parse_config(data)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_json_report_is_strict_json():
    assert json.loads(to_json({"ratio": float("inf"), "rows": [float("nan"), 1.0]})) == {"ratio": None,
                                                                                        "rows": [None, 1.0]}


@pytest.mark.parametrize("flags, words", [
    (("--threshold", "nan"), "finite"),
    (("--intersection", "sex&sexx"), "'sexx'"),
])
def test_bad_flags_are_one_line(tmp_path, flags, words):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines(3, lambda i: {"sex": "F"})))
    result = run_cli("replay", path, "--group-col", "sex", *flags)
    assert result.returncode == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_prediction_column_and_a_threshold_are_refused_together(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("id,decision,score,sex\n1,1,0.9,F\n")
    result = run_cli("replay", path, "--id-col", "id", "--prediction-col", "decision", "--score-col", "score",
                     "--threshold", "0.5", "--group-col", "sex")
    assert result.returncode == 2 and "ignored" in result.stderr


def test_a_byte_order_mark_and_old_mac_line_endings_lose_no_event(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b"\r".join(lines(5, lambda i: {"sex": "FM"[i % 2]})) + b"\r")
    result = run_cli("replay", jsonl, "--report", "json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["events"] == 5 and report["invalid"] == 0
    csv = tmp_path / "bom.csv"
    csv.write_bytes("\ufeffid,decision,sex\r1,1,F\r2,0,M\r".encode())
    result = run_cli("replay", csv, "--id-col", "id", "--prediction-col", "decision", "--group-col", "sex",
                     "--report", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"] == 2


def test_a_csv_quote_left_open_is_reported_with_the_lines_it_swallowed(tmp_path):
    """csv reads on to the closing quote; a line break is legitimate in a text, never in an id, label or group."""
    path = tmp_path / "quote.csv"
    path.write_text('id,pred,sex,text\n1,1,F,"two\nlines"\n2,0,M,x\nq,1,"M\n3,0,F,x\n4,1,M,x\n')
    result = run_cli("replay", path, "--id-col", "id", "--prediction-col", "pred", "--group-col", "sex",
                     "--text-col", "text", "--report", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["events"], report["invalid"]) == (2, 1)  # the text's line break is fine
    text = run_cli("replay", path, "--id-col", "id", "--prediction-col", "pred", "--group-col", "sex").stdout
    assert "lines 5-7: column 'sex' holds a line break ('M\\n3,0,F,x\\n4,1,M,x\\n'...): a quote left open?" in text, text


def test_mixed_line_endings_lose_no_event(tmp_path):
    """A CR alone ends a line even when the chunk it sits in ends with CRLF."""
    a, b, c = lines(3, lambda i: {"sex": "FM"[i % 2]})
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(a + b"\r" + b + b"\r\n" + c + b"\n")
    result = run_cli("replay", jsonl, "--report", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["events"], report["invalid"]) == (3, 0)


@pytest.mark.parametrize("content, flags", [
    (b"", ()),
    (b'{"event_id": "a"}\n{"event_id": "b"}\n', ()),
    (b"id,decision,sex\n1,yes,F\n2,no,M\n", ("--format", "csv", "--id-col", "id", "--prediction-col", "decision",
                                            "--group-col", "sex")),
])
def test_a_file_without_one_valid_event_fails(tmp_path, content, flags):
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    result = run_cli("replay", path, *flags)
    assert result.returncode == 1
    assert "no valid event" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_one_event_scored_by_two_models_counts_for_each_and_takes_one_outcome():
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[], journal_capacity=4))
    predictions = [json.dumps({"event_id": f"e{i}", "ts": NOW, "model": model, "prediction": 1,
                               "groups": {"g": "a"}}).encode() for i in range(3) for model in ("prod", "shadow")]
    pipeline.process_lines(predictions + predictions[:2])  # the first pair again: duplicates
    assert pipeline.stats.valid == 6 and pipeline.stats.duplicates == 2
    pipeline.process_lines([json.dumps({"event_id": "e0", "ts": NOW, "label": 1}).encode()])
    assert pipeline.stats.outcomes["joined"] == 1
    for model in ("prod", "shadow"):
        rows = pipeline.models[model].since_start.rows("g", 1)
        assert rows[0, 0] == 3 and rows[0, 5] == 1, model  # predictions, true positives
    # Both journals drop e0..e2 (capacity 4); the shared entries go with them, and a late outcome is early.
    pipeline.process_lines([json.dumps({"event_id": f"n{i}", "ts": NOW, "model": model, "prediction": 0,
                                        "groups": {"g": "a"}}).encode() for i in range(4) for model in ("prod", "shadow")])
    assert set(pipeline.labels.shared) == {"n0", "n1", "n2", "n3"} and "e1" not in pipeline.held_ids()
    pipeline.process_lines([json.dumps({"event_id": "n3", "ts": NOW, "label": 0}).encode()])
    assert pipeline.stats.outcomes["joined"] == 2
    assert all(pipeline.models[m].since_start.rows("g", 1)[0, 7] == 1 for m in ("prod", "shadow"))  # tn


@pytest.mark.parametrize("args, words", [
    (("replay", "{file}", "--metrics-port", "70000"), "argument --metrics-port: 70000 is not a port (0 to 65535)"),
    (("replay", "{file}", "--metrics-port", "http"), "argument --metrics-port: 'http' is not a port number"),
    (("dev-broker", "--port", "-3"), "argument --port: -3 is not a port (0 to 65535)"),
    (("produce", "{file}", "--predictions-topic", "t", "--limit", "-1"), "--limit must be 1 or more"),
    (("produce", "{file}", "--predictions-topic", "t", "--limit", "0"), "--limit must be 1 or more"),
])
def test_out_of_range_numbers_in_flags_are_one_line_before_any_work(tmp_path, args, words):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines(3, lambda i: {"sex": "F"})))
    result = run_cli(*(str(path) if a == "{file}" else a for a in args))
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_flag_that_no_longer_does_anything_warns_and_the_run_goes_on(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines(3, lambda i: {"sex": "F"})))
    result = run_cli("replay", path, "--scorer-batch", "512", "--report", "json")
    assert result.returncode == 0 and json.loads(result.stdout)["events"] == 3
    assert "warning: --scorer-batch has no effect: the scorer sizes its batches by padded tokens" in result.stderr
