"""/metrics over real HTTP: counters, gauges, privacy floor, label cap, no identifiers."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fairwatch.monitor import metric_names as names
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.exporter import serve_metrics
from fairwatch.monitor.pipeline import Pipeline


def scrape(port: int) -> dict[str, list]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out, body


@pytest.fixture
def served():
    config = MonitorConfig(attributes=["g"], privacy_floor=10, min_group_size=30, max_groups_per_attribute=2,
                           count_windows=[100], time_windows_seconds=[])
    pipeline = Pipeline(config)
    server, port = serve_metrics(pipeline, 0)
    yield pipeline, port
    server.shutdown()


def events(group, n, prediction, label, prefix):
    return [
        json.dumps({"event_id": f"{prefix}{i}", "prediction": prediction, "label": label, "score": 0.5,
                    "groups": {"g": group}, "text": "secret text"}).encode()
        for i in range(n)
    ]


def test_counters_gauges_and_health(served):
    pipeline, port = served
    pipeline.process_lines(events("a", 60, 1, 1, "a") + events("b", 40, 0, 1, "b") + [b"junk"])
    samples, body = scrape(port)
    counters = {(s["group"], s["cell"]): v for s, v in samples[names.GROUP_EVENTS] if s["attribute"] == "g"}
    assert counters[("a", "predictions")] == 60 and counters[("a", "tp")] == 60
    assert counters[("b", "fn")] == 40 and counters[("b", "labeled")] == 40
    gaps = {(s["metric"], s["window"]): v for s, v in samples[names.GAP]}
    assert gaps[("demographic_parity_difference", "all")] == pytest.approx(1.0)
    assert gaps[("equal_opportunity_difference", "last_100")] == pytest.approx(1.0)
    lower = {(s["metric"], s["window"]): v for s, v in samples[names.GAP_LOWER]}
    assert lower[("demographic_parity_difference", "all")] < 1.0
    status = {s["status"]: v for s, v in samples[names.EVENTS]}
    assert status == {"valid": 100, "invalid": 1, "duplicate": 0}
    assert "secret" not in body and 'event_id' not in body and '"a0"' not in body


def test_groups_below_the_privacy_floor_never_leave_as_rates(served):
    pipeline, port = served
    pipeline.process_lines(events("big", 40, 1, 0, "x") + events("tiny", 9, 1, 1, "t"))
    samples, body = scrape(port)
    assert 'group="tiny"' not in body
    pipeline.process_lines(events("tiny", 1, 1, 1, "t9-"))
    samples, body = scrape(port)
    rates = {(s["group"], s["metric"], s["window"]) for s, _ in samples[names.GROUP_RATE]}
    assert ("tiny", "selection_rate", "all") in rates  # 10 events: at the floor
    # TPR of "tiny" has 10 positives; FPR of "tiny" has none: no rate without trials.
    assert ("tiny", "fpr", "all") not in rates


def test_label_values_are_capped_with_the_rest_as_other(served):
    pipeline, port = served
    pipeline.process_lines(events("g1", 30, 1, 1, "a") + events("g2", 20, 1, 1, "b") + events("g3", 15, 0, 0, "c")
                           + events("g4", 12, 0, 0, "d"))
    samples, _ = scrape(port)
    groups = {s["group"] for s, _ in samples[names.GROUP_EVENTS]}
    assert groups == {"g1", "g2", "other"}
    other = {s["cell"]: v for s, v in samples[names.GROUP_EVENTS] if s["group"] == "other"}
    assert other["predictions"] == 27
    # The assignment is stable: a group that grows later still lands in "other".
    pipeline.process_lines(events("g4", 100, 0, 0, "e"))
    samples, _ = scrape(port)
    assert {s["group"] for s, _ in samples[names.GROUP_EVENTS]} == {"g1", "g2", "other"}


def test_positives_counters_carry_an_exemplar_event_id_never_a_label():
    from prometheus_client.openmetrics.exposition import generate_latest

    from fairwatch.monitor.exporter import make_registry

    pipeline = Pipeline(MonitorConfig(attributes=["g"], privacy_floor=1, min_group_size=1,
                                      count_windows=[], time_windows_seconds=[]))
    lines = [json.dumps({"event_id": f"id{i}", "prediction": int(i % 3 == 0), "groups": {"g": "a" if i % 2 else "b"}})
             for i in range(40)]
    pipeline.process_lines([line.encode() for line in lines])
    text = generate_latest(make_registry(pipeline)).decode()
    positives = {line.split('group="')[1].split('"')[0]: line for line in text.splitlines()
                 if 'cell="positives"' in line}
    # The latest positive prediction of each group: a (odd i, i % 3 == 0) -> 39, b (even) -> 36.
    assert positives["a"].endswith('# {event_id="id39"} 1.0')
    assert positives["b"].endswith('# {event_id="id36"} 1.0')
    assert "event_id" not in "".join(line.split(" # ")[0] for line in text.splitlines())


def _positives_lines(config: MonitorConfig, lines: list[str]) -> dict[str, str]:
    from prometheus_client.openmetrics.exposition import generate_latest

    from fairwatch.monitor.exporter import make_registry

    pipeline = Pipeline(config)
    pipeline.process_lines([line.encode() for line in lines])
    text = generate_latest(make_registry(pipeline)).decode()
    return {line.split('group="')[1].split('"')[0]: line for line in text.splitlines() if 'cell="positives"' in line}


def test_exemplars_wait_for_the_privacy_floor_of_positives():
    # Both groups have 40 predictions (above the floor of 10, so both are exported),
    # but "rare" has 3 positives: an id beside 3 people would nearly name them.
    lines = [json.dumps({"event_id": f"c{i}", "prediction": int(i % 2 == 0), "groups": {"g": "common"}})
             for i in range(40)]
    lines += [json.dumps({"event_id": f"r{i}", "prediction": int(i < 3), "groups": {"g": "rare"}}) for i in range(40)]
    positives = _positives_lines(MonitorConfig(attributes=["g"], privacy_floor=10, min_group_size=30,
                                               count_windows=[], time_windows_seconds=[]), lines)
    assert positives["common"].endswith('# {event_id="c38"} 1.0')
    assert positives["rare"].split(" ")[-1] == "3.0"  # the count leaves, the id does not
    assert "event_id" not in positives["rare"]


def test_exemplars_can_be_switched_off():
    lines = [json.dumps({"event_id": f"id{i}", "prediction": 1, "groups": {"g": "a"}}) for i in range(40)]
    config = MonitorConfig(attributes=["g"], privacy_floor=1, min_group_size=1, count_windows=[],
                           time_windows_seconds=[], exemplars=False)
    assert "event_id" not in _positives_lines(config, lines)["a"]


def test_no_exemplars_flag_reaches_the_config():
    from fairwatch.cli import build_parser
    from fairwatch.command_support import config_from_args

    args = build_parser().parse_args(["replay", "x.jsonl", "--no-exemplars"])
    assert config_from_args(args).exemplars is False
    assert config_from_args(build_parser().parse_args(["replay", "x.jsonl"])).exemplars is True
