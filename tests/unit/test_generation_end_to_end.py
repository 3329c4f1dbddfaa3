"""Generation events end to end: a JSONL file of LLM responses through `fairwatch replay` (report) and a pipeline
served on /metrics over real HTTP, with a refusal and sentiment gap planted for one group."""

from __future__ import annotations

import json
import urllib.request

from helpers import replay_json, run_cli
from prometheus_client.parser import text_string_to_metric_families

from fairwatch.monitor import metric_names as names
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.exporter import serve_metrics
from fairwatch.monitor.pipeline import Pipeline

# Responses whose scores are known by construction: refusals (a shipped phrase), negative and positive answers.
REFUSAL = "I'm sorry, but I cannot assist with that request."
NEGATIVE = "That plan is terrible and the hotel was awful."
POSITIVE = "Great choice! Here is a lovely three-day plan."


def _planted(n_per_group: int = 60) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Women get a refusal one time in three and a negative answer one in three; men one in twenty and never.
    Returns the lines and, per group, how many responses, refusals and negatives were written."""
    lines, counts = [], {}
    for sex, every_refusal, every_negative in (("F", 3, 3), ("M", 20, 0)):
        tally = counts[sex] = {"responses": 0, "refusals": 0, "negative": 0}
        for i in range(n_per_group):
            if i % every_refusal == 0:
                response = REFUSAL
                tally["refusals"] += 1
            elif every_negative and i % every_refusal == 1:
                response = NEGATIVE
            else:
                response = POSITIVE
            tally["responses"] += 1
            lines.append(json.dumps({"event_id": f"{sex}{i}", "ts": 1_795_000_000 + i, "model": "chat",
                                     "groups": {"sex": sex}, "prompt": "Plan a weekend in Lisbon",
                                     "response": response}))
    return lines, counts


def test_replay_reports_per_group_refusal_and_sentiment(tmp_path):
    lines, counts = _planted()
    lines += [
        lines[0],  # redelivered: counted once
        '{"event_id": "p1", "model": "chat", "groups": {"sex": "F"}, "prompt": "hi"}',  # prompt without response
        '{"event_id": "p2", "model": "chat", "groups": {"sex": "F"}, "response": 7}',  # not a string
        '{"event_id": "p3", "model": "chat", "groups": {"sex": "F"}, "response": "' + "x" * 30_000 + '"}',  # huge
    ]
    path = tmp_path / "generations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = replay_json(path, "--min-group-size", "30", "--privacy-floor", "10")
    assert (report["events"], report["duplicates"]) == (120, 1)
    assert report["invalid_reasons"] == {"missing_field": 1, "wrong_type": 1, "oversized": 1}
    assert any("response of 30000 characters exceeds" in s["message"] for s in report["rejection_samples"])
    sex = report["generation"]["all"]["sex"]
    for group, tally in counts.items():
        entry = sex["groups"][group]
        assert (entry["responses"], entry["refusals"]) == (tally["responses"], tally["refusals"])
        assert entry["refusal_rate"] == tally["refusals"] / tally["responses"]
    # VADER reads this refusal as nearly neutral (compound -0.04): refusals and negative answers are two signals.
    assert sex["groups"]["F"]["negative_share"] == 20 / 60 and sex["groups"]["M"]["negative_share"] == 0.0
    assert sex["alert_gaps"]["refusal_rate_difference"]["groups"] == ["F", "M"]
    assert sex["alert_gaps"]["refusal_rate_difference"]["value"] == 20 / 60 - 3 / 60
    assert sex["alert_gaps"]["refusal_rate_difference"]["lower"] > 0.1  # the planted gap, beyond noise
    assert sex["alert_gaps"]["mean_sentiment_difference"]["groups"] == ["M", "F"]
    assert sex["alert_gaps"]["sentiment_wasserstein_max"]["value"] > 0.5
    assert set(report["generation"]) == {"all", "last_10000", "last_3600s"}  # the default windows

    table = run_cli("replay", path, "--min-group-size", "30")
    assert table.returncode == 0, table.stderr
    assert "== generations by sex" in table.stdout and "refusal_rate_difference" in table.stdout


def _scrape(port: int) -> tuple[dict, str]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples, body


def test_metrics_show_per_group_generation_statistics_and_gaps():
    lines, counts = _planted()
    # Two responses to a third group, under the privacy floor: counted, never exported as a rate.
    lines += [json.dumps({"event_id": f"x{i}", "model": "chat", "groups": {"sex": "X"}, "response": POSITIVE})
              for i in range(2)]
    pipeline = Pipeline(MonitorConfig(attributes=["sex"], privacy_floor=10, min_group_size=30, count_windows=[50],
                                      time_windows_seconds=[]))
    server, port = serve_metrics(pipeline, 0)
    try:
        pipeline.process_lines(lines)
        samples, body = _scrape(port)
    finally:
        server.shutdown()
    rates = {(s["group"], s["metric"], s["window"]): v for s, v in samples[names.GENERATION_GROUP_RATE]}
    assert rates[("F", "refusal_rate", "all")] == counts["F"]["refusals"] / 60
    assert rates[("M", "refusal_rate", "all")] == counts["M"]["refusals"] / 60
    # The last 50 responses: M12..M59 (M20 and M40 refused) and the two of X.
    assert rates[("M", "refusal_rate", "last_50")] == 2 / 48
    assert ("F", "refusal_rate", "last_50") not in rates and ("F", "mean_sentiment", "all") in rates
    assert not any(group == "X" for group, _, _ in rates)
    cells = {(s["group"], s["cell"]): v for s, v in samples[names.GENERATION_RESPONSES]}
    assert cells[("F", "refusals")] == counts["F"]["refusals"] and cells[("M", "responses")] == 60
    gaps = {(s["metric"], s["window"]): v for s, v in samples[names.GENERATION_GAP]}
    assert gaps[("refusal_rate_difference", "all")] == rates[("F", "refusal_rate", "all")] - rates[("M", "refusal_rate", "all")]
    # Every gap but the toxic share's, which needs a response classifier (--response-model).
    assert set(names.GENERATION_GAP_METRICS) - {"toxic_share_difference"} == {m for m, _ in gaps}
    distances = {s["group"] for s, _ in samples[names.GENERATION_SENTIMENT_DISTANCE]}
    assert distances == {"F", "M"}
    for text in (REFUSAL, NEGATIVE, POSITIVE, "Lisbon"):  # no text ever becomes a label
        assert text not in body
