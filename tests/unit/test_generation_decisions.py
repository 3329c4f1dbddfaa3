"""Generation fractions through the anytime-valid breach decisions (monitor.generation.decisions): a planted
refusal gap and a planted negativity gap on one attribute fire the decision for that attribute and metric only;
a clean stream fires nothing; the decisions reach /metrics as the prediction decisions do."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from generation_streams import generation_stream
from helpers import replay_json, run_cli
from prometheus_client.parser import text_string_to_metric_families

from fairwatch.monitor import metric_names as names
from fairwatch.monitor.config import MonitorConfig, Thresholds
from fairwatch.monitor.exporter import serve_metrics
from fairwatch.monitor.generation.decisions import GenerationDecisions
from fairwatch.monitor.pipeline import Pipeline

REFUSAL = "I'm sorry, but I cannot assist with that request."
NEGATIVE = "That plan is terrible and the hotel was awful."
POSITIVE = "Great choice! Here is a lovely three-day plan."
CONFIG = """[monitor]
decision_check_events = 400
min_group_size = 30
"""


def _stream(n: int, refusal: dict[str, float], negative: dict[str, float], seed: int = 0) -> list[str]:
    """Generation events with ``sex`` (per-group refusal and negative chances) and ``age`` (independent of both)."""

    def pick(rng: np.random.Generator) -> dict:
        sex = "F" if rng.random() < 0.5 else "M"
        age = str(rng.choice(["18-25", "25-45", "45+"]))
        u = rng.random()
        response = (REFUSAL if u < refusal[sex] else NEGATIVE if u < refusal[sex] + negative[sex] else POSITIVE)
        return {"groups": {"sex": sex, "age": age}, "prompt": "Plan a weekend in Lisbon", "response": response}

    return generation_stream(n, pick, seed)


def _replay(tmp_path, lines: list[str]) -> dict:
    path = tmp_path / "generations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = tmp_path / "fairwatch.toml"
    config.write_text(CONFIG)
    return replay_json(path, "--config", config)


def test_planted_refusal_and_negativity_gaps_fire_their_decisions_for_the_right_attribute(tmp_path):
    # Women: 35% refused and 35% negative; men: 5% and 5%. Age is independent of both.
    report = _replay(tmp_path, _stream(3000, {"F": 0.35, "M": 0.05}, {"F": 0.35, "M": 0.05}))
    fired = {(a["attribute"], a["metric"]): a for a in report["alerts"]}
    assert set(fired) == {("sex", "refusal_rate_difference"), ("sex", "negative_share_difference")}
    for alert in fired.values():
        assert alert["groups"] == ["F", "M"] and alert["threshold"] == 0.1
        assert alert["lower"] > 0.1 and alert["value"] > 0.2  # the anytime-valid bound, beyond the threshold
        assert 0 < alert["event_index"] < 3000


def test_a_clean_stream_fires_nothing(tmp_path):
    report = _replay(tmp_path, _stream(3000, {"F": 0.2, "M": 0.2}, {"F": 0.2, "M": 0.2}, seed=1))
    assert report["alerts"] == []
    assert report["generation"]["all"]["sex"]["groups"]["F"]["responses"] > 1000  # the stream was counted


def test_a_gap_under_its_configured_threshold_does_not_fire(tmp_path):
    # 30 points of refusal gap, but this deployment tolerates 0.5; negativity stays at its default 0.1.
    lines = _stream(3000, {"F": 0.35, "M": 0.05}, {"F": 0.1, "M": 0.1})
    path = tmp_path / "generations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = tmp_path / "fairwatch.toml"
    config.write_text(CONFIG + "[monitor.thresholds]\nrefusal_rate_difference = 0.5\n")
    report = replay_json(path, "--config", config)
    assert report["alerts"] == []


def test_malformed_events_beside_a_planted_gap_are_refused_and_the_decision_still_fires(tmp_path):
    lines = _stream(3000, {"F": 0.35, "M": 0.05}, {"F": 0.05, "M": 0.05})
    lines[10:10] = ['{"event_id": "bad1", "model": "chat", "groups": {"sex": "F"}, "response": 7}', "not json",
                    '{"event_id": "bad2", "model": "chat", "response": "hi"}']
    report = _replay(tmp_path, lines)
    assert report["invalid"] == 3 and report["events"] == 3000
    assert {(a["attribute"], a["metric"]) for a in report["alerts"]} == {("sex", "refusal_rate_difference")}


def test_a_bad_generation_threshold_is_one_config_error_line(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text("\n".join(_stream(10, {"F": 0.1, "M": 0.1}, {"F": 0.1, "M": 0.1})) + "\n")
    config = tmp_path / "fairwatch.toml"
    config.write_text("[monitor.thresholds]\nnegative_share_difference = 1.5\n")
    result = run_cli("replay", path, "--config", config)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "negative_share_difference" in line


def test_the_decisions_are_exported_like_the_prediction_decisions():
    config = MonitorConfig(attributes=["sex", "age"], decision_check_events=400,
                           thresholds=Thresholds(negative_share_difference=0.2))
    pipeline = Pipeline(config)
    server, port = serve_metrics(pipeline, 0)
    try:
        pipeline.process_lines(_stream(3000, {"F": 0.35, "M": 0.05}, {"F": 0.1, "M": 0.1}))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[(sample.labels.get("model"), sample.labels.get("attribute"),
                                                 sample.labels.get("metric"))] = sample.value
    breach = samples[names.DECISION_BREACH]
    assert breach[("chat", "sex", "refusal_rate_difference")] == 1.0
    assert breach[("chat", "age", "refusal_rate_difference")] == 0.0
    assert breach[("chat", "sex", "negative_share_difference")] == 0.0
    assert samples[names.DECISION_THRESHOLD][("chat", "sex", "negative_share_difference")] == 0.2
    assert samples[names.DECISION_BOUND][("chat", "sex", "refusal_rate_difference")] > 0.1
    assert samples[names.BREACH_ONSETS][("chat", "sex", "refusal_rate_difference")] == 1.0
    # Only the decided generation metrics: no carrier names (ratio, equalized odds, "metric@attribute") leak out.
    assert not any("@" in (attribute or "") for _, attribute, _ in breach)


def test_generation_decisions_keep_their_error_on_many_clean_streams():
    """Twenty clean streams of 6,000 generations over two attributes: no false breach (the family error is 0.05
    per stream, and the bounds are conservative)."""
    false = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        decisions = GenerationDecisions("m", thresholds=lambda a, m: 0.05, attribute_budget=2, check_events=250)
        for start in range(0, 6000, 250):
            codes = {"sex": rng.integers(0, 2, 250), "age": rng.integers(0, 3, 250)}
            flags = {"refusal_rate_difference": rng.random(250) < 0.1,
                     "negative_share_difference": rng.random(250) < 0.3}
            false += len(decisions.observe(codes, flags, {"sex": ["F", "M"], "age": ["a", "b", "c"]},
                                           position=start + 249))
    assert false == 0


def test_unknown_decision_metric_is_refused():
    with pytest.raises(ValueError, match="unknown generation decision metrics"):
        GenerationDecisions("m", thresholds=lambda a, m: 0.1, attribute_budget=1, metrics=("toxicity",))
