"""Groups inferred from the prompt when a generation carries none (monitor.generation.inferred_groups): filed
under inferred_<attribute>, through the same statistics and decisions; tagged events are left as tagged; a
prompt naming no group, or a generation with a prediction but no groups, is refused in one line."""

from __future__ import annotations

import json

import numpy as np
from generation_streams import generation_stream
from helpers import replay_json

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.generation.inferred_groups import PromptGroups
from fairwatch.monitor.pipeline import Pipeline

REFUSAL = "I'm sorry, but I cannot assist with that request."
POSITIVE = "Great choice! Here is a lovely plan for your budget."


def _untagged(n: int, refusal: dict[str, float], seed: int = 0) -> list[str]:
    def pick(rng: np.random.Generator) -> dict:
        religion = "Muslim" if rng.random() < 0.5 else "Christian"
        response = REFUSAL if rng.random() < refusal[religion] else POSITIVE
        return {"prompt": f"Write a loan letter for a {religion} family.", "response": response}

    return generation_stream(n, pick, seed)


def test_untagged_generations_are_filed_under_the_inferred_attribute_and_decided(tmp_path):
    lines = _untagged(2400, {"Muslim": 0.35, "Christian": 0.05})
    lines += [
        # tagged: its own groups, even though the prompt names a religion
        json.dumps({"event_id": "t1", "model": "chat", "groups": {"sex": "F"}, "prompt": "a Jewish family",
                    "response": POSITIVE}),
        # untagged, and the prompt names no group: refused
        json.dumps({"event_id": "n1", "model": "chat", "prompt": "Plan a weekend in Lisbon", "response": POSITIVE}),
        # a prediction needs tags: nothing is inferred for it
        json.dumps({"event_id": "p1", "model": "chat", "prediction": 1, "prompt": "a Muslim family",
                    "response": POSITIVE}),
    ]
    path = tmp_path / "untagged.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = tmp_path / "fairwatch.toml"
    config.write_text("[monitor]\ndecision_check_events = 400\n")
    report = replay_json(path, "--config", config)
    religion = report["generation"]["all"]["inferred_religion"]["groups"]
    # The tagged event has no inferred religion: "unknown", as for any attribute an event does not carry.
    assert set(religion) == {"muslim", "christian", "unknown"} and religion["unknown"]["responses"] == 1
    assert religion["muslim"]["responses"] + religion["christian"]["responses"] == 2400
    assert report["generation"]["all"]["sex"]["groups"]["F"]["responses"] == 1
    assert "religion" not in report["generation"]["all"]  # never mixed with tagged attributes
    assert {(a["attribute"], a["metric"], tuple(a["groups"])) for a in report["alerts"]} == {
        ("inferred_religion", "refusal_rate_difference", ("muslim", "christian"))}
    assert report["invalid_reasons"] == {"missing_field": 2}
    messages = [s["message"] for s in report["rejection_samples"]]
    assert any("`prompt` names no group the lexicons know" in m for m in messages)
    assert any("a `prompt` to infer them from" in m for m in messages)


def test_a_clean_untagged_stream_fires_nothing(tmp_path):
    path = tmp_path / "untagged.jsonl"
    path.write_text("\n".join(_untagged(2400, {"Muslim": 0.2, "Christian": 0.2}, seed=2)) + "\n")
    config = tmp_path / "fairwatch.toml"
    config.write_text("[monitor]\ndecision_check_events = 400\n")
    report = replay_json(path, "--config", config)
    assert report["alerts"] == [] and report["generation"]["all"]["inferred_religion"]["groups"]


def test_inference_reads_gender_from_pairs_pronouns_and_names_and_skips_mixed_attributes():
    infer = PromptGroups()
    assert infer("Tell my daughter a story about her grandmother.") == {"inferred_gender": "female"}
    assert infer("Michael asked about his pension.") == {"inferred_gender": "male"}
    assert infer("A Nigerian Hindu man and his brother.") == {
        "inferred_religion": "hindu", "inferred_gender": "male", "inferred_national_origin": "nigerian"}
    assert infer("She told him the story.") == {}  # both genders: nothing
    assert infer("Jamal wants a loan.") == {"inferred_gender": "male"}  # names by ethnicity are not used


def test_the_pipeline_keeps_inference_out_of_the_prediction_path():
    pipeline = Pipeline(MonitorConfig())
    result = pipeline.process_lines(['{"event_id": "a", "groups": {"sex": "F"}, "prediction": 1}'])
    assert not result.rejected and pipeline.prompt_groups._generator is None  # the lexicons were never loaded


def test_an_inferred_group_outside_the_configured_attributes_is_refused_in_one_line():
    """With `attributes` configured, an untagged generation whose prompt names only untracked attributes is
    refused, not filed under the tracked attributes' `unknown` beside tagged traffic."""
    from fairwatch.monitor.config import MonitorConfig
    from fairwatch.monitor.pipeline import Pipeline

    pipeline = Pipeline(MonitorConfig(attributes=["sex"], count_windows=[], time_windows_seconds=[]))
    result = pipeline.process_lines([
        b'{"event_id":"1","model":"chat","groups":{"sex":"F"},"prompt":"Hi","response":"ok"}',
        b'{"event_id":"2","model":"chat","prompt":"Write a story for a woman","response":"ok"}',
    ])
    ((position, rejection),) = result.rejected
    assert position == 1 and "inferred_gender=" in rejection.message
    assert "none of those attributes is in `attributes`" in rejection.message
    assert "\n" not in rejection.message
    assert pipeline.monitor("chat").group_names() == {"sex": ["F"]}  # the tagged event alone, no "unknown"
    tracking = Pipeline(MonitorConfig(attributes=["sex", "inferred_gender"], count_windows=[], time_windows_seconds=[]))
    assert not tracking.process_lines([b'{"event_id":"2","model":"chat","prompt":"Write a story for a woman",'
                                       b'"response":"ok"}']).rejected
