"""A response classifier the user supplies (--response-model): a tiny real Hugging Face classifier built in
the test scores every response, batched by the scorer's SequenceScorer; the per-group toxic share sits beside
VADER in the report and on /metrics, and a planted toxicity gap fires its anytime-valid decision."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from generation_streams import generation_stream
from helpers import replay_json, run_cli
from prometheus_client.parser import text_string_to_metric_families

from fairwatch.monitor import metric_names as names
from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.exporter import serve_metrics
from fairwatch.monitor.generation import ResponseScorer
from fairwatch.monitor.pipeline import Pipeline

pytest.importorskip("torch")
from fairwatch.monitor.generation.response_classifier import ResponseClassifier, label_column  # noqa: E402

# The "keys" model (tests/scorer_fixtures.py) scores ~1 when a text holds more male-side gender terms than
# female-side ones and ~0 the other way round: a stand-in for a toxicity classifier with a known answer.
FLAGGED = "he said the man was there"
CLEAN = "she said the woman was there"
CONFIG = "[monitor]\ndecision_check_events = 400\nmin_group_size = 30\n"


def _stream(n: int, flagged: dict[str, float], seed: int = 0) -> list[str]:
    def pick(rng: np.random.Generator) -> dict:
        sex = "F" if rng.random() < 0.5 else "M"
        response = FLAGGED if rng.random() < flagged[sex] else CLEAN
        return {"groups": {"sex": sex, "age": str(rng.choice(["young", "old"]))}, "response": response}

    return generation_stream(n, pick, seed)


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "generations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = tmp_path / "fairwatch.toml"
    config.write_text(CONFIG)
    return path, config


def test_classifier_scores_responses_in_batches_on_cpu(tiny_model_dirs):
    classifier = ResponseClassifier(tiny_model_dirs["keys"], device="cpu", max_batch=3)
    responses = [FLAGGED, CLEAN, FLAGGED + " " * 50, "x" * 30_000, CLEAN]
    scores = classifier.scores(responses)
    assert scores.shape == (5,) and scores[0] > 0.99 and scores[1] < 0.01 and scores[4] < 0.01
    assert classifier.flags(responses).tolist()[:2] == [1.0, 0.0]
    assert classifier.device == "cpu" and classifier.label == "LABEL_1"
    # The other label, by name (any case) or by index: its probability is the complement.
    other = ResponseClassifier(tiny_model_dirs["keys"], device="cpu", label="label_0")
    assert np.allclose(other.scores(responses[:2]), 1 - scores[:2], atol=1e-5)
    assert ResponseClassifier(tiny_model_dirs["keys"], device="cpu", label="0").index == 0
    assert classifier.scores([]).size == 0


def test_label_column_reads_multi_label_models_with_a_sigmoid_and_refuses_unknown_labels():
    class Config:
        num_labels = 3
        id2label = {0: "toxic", 1: "insult", 2: "threat"}
        problem_type = "multi_label_classification"

    assert label_column(Config(), "Insult") == (1, "insult", True)
    assert label_column(Config(), None) == (2, "threat", True)
    with pytest.raises(ValueError, match="not one of the model's labels .0=toxic, 1=insult, 2=threat"):
        label_column(Config(), "obscene")
    with pytest.raises(ValueError, match="outside the model's 3 labels"):
        label_column(Config(), 5)


def test_replay_with_a_response_model_reports_the_toxic_share_and_fires_its_decision(tiny_model_dirs, tmp_path):
    # Women's responses are flagged 40% of the time, men's 5%; age is independent.
    path, config = _write(tmp_path, _stream(2400, {"F": 0.4, "M": 0.05}))
    report = replay_json(path, "--config", config, "--response-model", tiny_model_dirs["keys"],
                         "--response-device", "cpu")
    groups = report["generation"]["all"]["sex"]["groups"]
    for sex in ("F", "M"):
        assert groups[sex]["classified"] == groups[sex]["responses"]
        assert groups[sex]["toxic_share"] == groups[sex]["toxic"] / groups[sex]["responses"]
    assert groups["F"]["toxic_share"] > 0.3 and groups["M"]["toxic_share"] < 0.1
    assert report["generation"]["all"]["sex"]["alert_gaps"]["toxic_share_difference"]["groups"] == ["F", "M"]
    fired = {(a["attribute"], a["metric"]) for a in report["alerts"]}
    assert fired == {("sex", "toxic_share_difference")}
    table = run_cli("replay", path, "--config", config, "--response-model", tiny_model_dirs["keys"])
    assert table.returncode == 0, table.stderr
    assert "toxic_share" in table.stdout and "toxic_share_difference" in table.stdout


def test_a_clean_stream_with_a_response_model_fires_nothing(tiny_model_dirs, tmp_path):
    path, config = _write(tmp_path, _stream(2400, {"F": 0.2, "M": 0.2}, seed=3))
    report = replay_json(path, "--config", config, "--response-model", tiny_model_dirs["keys"])
    assert report["alerts"] == []
    assert report["generation"]["all"]["sex"]["groups"]["F"]["classified"] > 1000


def test_without_a_response_model_nothing_is_classified(tmp_path):
    path, config = _write(tmp_path, _stream(200, {"F": 0.4, "M": 0.05}))
    report = replay_json(path, "--config", config)
    entry = report["generation"]["all"]["sex"]["groups"]["F"]
    assert "classified" not in entry and entry["toxic_share"] is None


@pytest.mark.parametrize("args, words", [
    (["--response-model", "/nonexistent/model"], ["--response-model", "not found"]),
    (["--response-label", "toxic"], ["--response-label needs --response-model"]),
    (["--response-model", "KEYS", "--response-label", "toxic"], ["--response-model", "'toxic'", "LABEL_0"]),
    (["--response-model", "KEYS", "--response-threshold", "1.5"], ["--response-threshold"]),
])
def test_bad_response_model_flags_are_one_line(tiny_model_dirs, tmp_path, args, words):
    path, _ = _write(tmp_path, _stream(5, {"F": 0.5, "M": 0.5}))
    args = [str(tiny_model_dirs["keys"]) if a == "KEYS" else a for a in args]
    result = run_cli("replay", path, *args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert all(w in line for w in words), line


def test_metrics_carry_the_toxic_share_and_its_decision(tiny_model_dirs):
    pipeline = Pipeline(MonitorConfig(attributes=["sex", "age"], decision_check_events=400))
    pipeline.response_scorer = ResponseScorer(classifier=ResponseClassifier(tiny_model_dirs["keys"], device="cpu"))
    server, port = serve_metrics(pipeline, 0)
    try:
        lines = _stream(2400, {"F": 0.4, "M": 0.05})
        lines.insert(5, '{"event_id": "bad", "model": "chat", "groups": {"sex": "F"}, "response": 7}')
        result = pipeline.process_lines(lines)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    assert len(result.rejected) == 1 and pipeline.stats.valid == 2400
    samples: dict = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    rates = {(s["group"], s["metric"]): v for s, v in samples[names.GENERATION_GROUP_RATE]
             if s["attribute"] == "sex" and s["window"] == "all"}
    assert rates[("F", "toxic_share")] > 0.3 and rates[("M", "toxic_share")] < 0.1
    cells = {(s["attribute"], s["group"], s["cell"]): v for s, v in samples[names.GENERATION_RESPONSES]}
    assert cells[("sex", "F", "classified")] == cells[("sex", "F", "responses")]
    breach = {(s["attribute"], s["metric"]): v for s, v in samples[names.DECISION_BREACH]}
    assert breach[("sex", "toxic_share_difference")] == 1.0 and breach[("age", "toxic_share_difference")] == 0.0
    assert FLAGGED not in body
