"""Shadow evaluation: a candidate classifier scores the live texts beside production (CPU, tiny real models)."""
from __future__ import annotations

import json

import pytest
from helpers import run_cli

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fairwatch.monitor.config import MonitorConfig  # noqa: E402
from fairwatch.monitor.pipeline import Pipeline  # noqa: E402
from fairwatch.monitor.rates import group_rates  # noqa: E402
from fairwatch.monitor.scorer.scoring import CounterfactualScorer  # noqa: E402
from fairwatch.monitor.scorer.shadow import ShadowStep  # noqa: E402
from test_scorer_step import _event, _gendered_events, _write_jsonl  # noqa: E402


def _selection_gap(pipeline: Pipeline, model: str) -> float:
    metrics = pipeline.models[model]
    by_group = dict(zip(metrics.index["sex"].values, group_rates(metrics.since_start.counts["sex"])["selection_rate"][0]))
    return abs(by_group["male"] - by_group["female"])


def _predictions(pipeline: Pipeline, model: str) -> int:
    return int(pipeline.models[model].journal.next_seq)


def _shadow(candidate_dir, model: str = "toxic") -> ShadowStep:  # noqa: ANN001
    return ShadowStep(CounterfactualScorer(candidate_dir, device="cpu", workers=0), model, threshold=0.6)


def test_less_biased_candidate_shows_a_smaller_gap_on_the_same_events(tiny_model_dirs) -> None:  # noqa: ANN001
    # Production's decisions follow the gender terms (the 'keys' model); the 'ignores' candidate cannot see them.
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = _shadow(tiny_model_dirs["ignores"])
    lines = _gendered_events(3) + [_event(900, None, "male", 1, 0.9, 1)]  # no text: production only
    other = json.loads(_event(901, "she is kind", "female", 0, 0.1, 0)) | {"model": "spam"}
    batch = [pipeline.parser.parse(line) for line in [*lines, json.dumps(other)]]
    step.process(pipeline, batch)
    step.process(pipeline, batch)  # a redelivery changes nothing

    assert set(pipeline.models) == {"toxic", "spam", "toxic:baseline", "toxic:candidate"}
    assert _predictions(pipeline, "toxic") == 49
    assert _predictions(pipeline, "toxic:baseline") == _predictions(pipeline, "toxic:candidate") == 48
    assert _selection_gap(pipeline, "toxic:baseline") == pytest.approx(1.0)
    assert _selection_gap(pipeline, "toxic:candidate") < 0.05
    # Outcomes follow the events into both derived models, so error-rate gaps compare too.
    labels = [e.label for e in batch[:48]]
    for model in ("toxic:baseline", "toxic:candidate"):
        assert pipeline.models[model].journal.label[:48].tolist() == labels
    assert step.report() | {"candidate_dir": ""} == {
        "model": "toxic", "candidate_dir": "", "threshold": 0.6, "baseline_model": "toxic:baseline",
        "candidate_model": "toxic:candidate", "scored": 48, "without_text": 1, "refused": 0}


def test_a_candidate_as_biased_as_production_shows_the_same_gap(tiny_model_dirs) -> None:  # noqa: ANN001
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    _shadow(tiny_model_dirs["keys"]).process(pipeline, [pipeline.parser.parse(x) for x in _gendered_events(2)])
    assert _selection_gap(pipeline, "toxic:candidate") == pytest.approx(_selection_gap(pipeline, "toxic:baseline"))


def test_replay_with_a_shadow_candidate_reports_both_side_by_side(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    path = _write_jsonl(tmp_path, _gendered_events(3) + [_event(999, None, "male", 1, 0.9, None)])
    result = run_cli("replay", path, "--shadow-candidate", tiny_model_dirs["ignores"], "--shadow-model", "toxic",
                     "--shadow-threshold", "0.6", "--scorer-device", "cpu", "--report", "json", "--model", "toxic")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    baseline = report["models"]["toxic:baseline"]["attributes"]["sex"]
    candidate = report["models"]["toxic:candidate"]["attributes"]["sex"]
    assert {g: e["n"] for g, e in baseline["groups"].items()} == {g: e["n"] for g, e in candidate["groups"].items()} \
        == {"male": 24, "female": 24}
    assert candidate["gaps"]["demographic_parity_difference"] < 0.05 < 0.9 < baseline["gaps"]["demographic_parity_difference"]
    assert report["shadow"]["scored"] == 48 and report["shadow"]["without_text"] == 1
    table = run_cli("replay", path, "--shadow-candidate", tiny_model_dirs["ignores"], "--shadow-model", "toxic")
    assert table.returncode == 0, table.stderr
    assert "48 predictions scored by the candidate" in table.stdout and "1 without text" in table.stdout


@pytest.mark.parametrize("flags, message", [
    (["--shadow-candidate", "{missing}", "--shadow-model", "toxic"], "--shadow-candidate: model directory"),
    (["--shadow-candidate", "{ignores}"], "--shadow-candidate needs --shadow-model"),
    (["--shadow-model", "toxic"], "--shadow-model needs --shadow-candidate"),
    (["--shadow-candidate", "{ignores}", "--shadow-model", "toxic", "--shadow-threshold", "2"], "between 0 and 1"),
])
def test_bad_shadow_input_is_one_line_and_exit_2(tiny_model_dirs, tmp_path, flags, message) -> None:  # noqa: ANN001
    path = _write_jsonl(tmp_path, _gendered_events(1))
    dirs = {"missing": tmp_path / "no-such-candidate", "ignores": tiny_model_dirs["ignores"]}
    result = run_cli("replay", path, *[f.format(**dirs) for f in flags])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairwatch replay: error:") and message in lines[0], lines
