from __future__ import annotations

import pytest

from fairwatch.monitor.events import Event, EventParser, Rejection

VALID = b'{"event_id": "a1b2", "ts": "2026-11-22T10:00:00Z", "model": "credit-risk", "model_version": "3.2.0", "prediction": 1, "score": 0.81, "groups": {"race": "African-American", "sex": "Male"}, "text": "hi", "label": null}'


def test_contract_example_parses():
    event = EventParser().parse(VALID)
    assert isinstance(event, Event)
    assert (event.event_id, event.model, event.prediction, event.score, event.label) == ("a1b2", "credit-risk", 1, 0.81, None)
    assert event.groups == {"race": "African-American", "sex": "Male"}
    assert event.ts == 1795341600.0


@pytest.mark.parametrize(
    "raw, reason, words",
    [
        (b'{"event_id": "a", "prediction": 1, "groups": {', "not_json", "truncated"),
        (b"\xff\xfe garbage", "not_json", "not valid JSON"),
        (b"[1, 2]", "wrong_type", "Expected `object`"),
        (b'{"prediction": 1, "groups": {}}', "missing_field", "`event_id`"),
        (b'{"event_id": "a", "groups": {"sex": "F"}}', "missing_field", "`prediction`"),
        (b'{"event_id": "a", "prediction": 1}', "missing_field", "`groups`"),
        (b'{"event_id": 7, "prediction": 1, "groups": {}}', "wrong_type", "$.event_id"),
        (b'{"event_id": "a", "prediction": "1", "groups": {}}', "wrong_type", "$.prediction"),
        (b'{"event_id": "a", "prediction": 3, "groups": {}}', "bad_value", "0 or 1"),
        (b'{"event_id": "a", "prediction": 1, "groups": {"age": 34}}', "wrong_type", "$.groups"),
        (b'{"event_id": "a", "prediction": 1, "groups": {}, "label": 2}', "unknown_label", "unknown label 2"),
        (b'{"event_id": "a", "prediction": 1, "groups": {}, "label": "yes"}', "wrong_type", "$.label"),
        (b'{"event_id": "a", "prediction": 1, "groups": {}, "ts": "yesterday"}', "bad_value", "$.ts"),
        (b'{"event_id": "", "prediction": 1, "groups": {}}', "bad_value", "length >= 1"),
        (b'{"event_id": "a"}', "missing_field", "neither a prediction"),
        (b'{"event_id": "a", "label": 1, "prediction_copy": {"model": "m", "prediction": 2, "groups": {}, "ts": 1}}',
         "bad_value", "$.prediction_copy.prediction"),
        (b'{"event_id": "a", "label": 1, "prediction_copy": {"model": "m", "prediction": 1, "ts": 1}}',
         "missing_field", "`groups`"),
        (b'{"event_id": "a", "prediction": 1, "groups": {}, '
         b'"prediction_copy": {"model": "m", "prediction": 1, "groups": {}, "ts": 1}}',
         "bad_value", "outcomes only"),
    ],
)
def test_bad_events_get_a_reason(raw, reason, words):
    rejection = EventParser().parse(raw)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason
    assert words in rejection.message
    assert "\n" not in rejection.message


def test_a_str_with_a_lone_surrogate_is_refused_not_raised():
    rejection = EventParser().parse('{"event_id": "a", "prediction": 1, "groups": {"sex": "\ud800"}}')
    assert (rejection.reason, rejection.message) == ("not_json", "not valid Unicode: surrogates not allowed at "
                                                                 "character 54")


def test_dict_events_with_what_json_cannot_hold_are_refused_and_the_rest_counted():
    """msgspec writes NaN as null: a NaN score would pass as no score, a NaN time as now."""
    from fairwatch import Monitor

    monitor = Monitor(attributes=["sex"], count_windows=[], time_windows_seconds=[])
    good = {"event_id": "ok", "prediction": 1, "score": 0.5, "groups": {"sex": "F"}}
    bad = [
        ({"event_id": "a", "prediction": 1, "score": float("nan"), "groups": {"sex": "F"}},
         "bad_value", "score nan is not a finite number at `$.score`"),
        ({"event_id": "b", "prediction": 1, "ts": float("-inf"), "groups": {"sex": "F"}},
         "bad_value", "ts -inf is not a finite number at `$.ts`"),
        ({"event_id": "c", "label": 1, "prediction_copy": {"model": "m", "prediction": 1, "score": float("inf"),
                                                             "ts": 1.0, "groups": {"sex": "F"}}},
         "bad_value", "score inf is not a finite number at `$.prediction_copy.score`"),
        ({"event_id": "d", "prediction": 1, "groups": {"sex": "\udc80"}}, "not_json", "cannot be written as JSON"),
        ({"event_id": "e", "prediction": 1, "groups": {"sex": "F"}, "extra": object()}, "not_json",
         "cannot be written as JSON: Encoding objects of type object is unsupported"),
    ]
    rejected = monitor.update_many([good] + [event for event, _, _ in bad] + [dict(good, event_id="ok2")])
    assert [(position, r.reason) for position, r in rejected] == [(i + 1, reason) for i, (_, reason, _) in
                                                                   enumerate(bad)]
    for (_, rejection), (_, _, words) in zip(rejected, bad):
        assert words in rejection.message and "\n" not in rejection.message
    assert (monitor.snapshot().events, monitor.snapshot().invalid) == (2, len(bad))


def test_oversized_event_and_text():
    parser = EventParser(max_event_bytes=1000, max_text_chars=10)
    huge = b'{"event_id": "a", "prediction": 1, "groups": {}, "text": "' + b"x" * 2000 + b'"}'
    assert parser.parse(huge).reason == "oversized"
    long_text = b'{"event_id": "a", "prediction": 1, "groups": {}, "text": "' + b"x" * 11 + b'"}'
    assert "characters exceeds" in parser.parse(long_text).message


def test_score_with_threshold_gives_prediction_and_outcomes_parse():
    parser = EventParser(threshold=0.5)
    assert parser.parse(b'{"event_id": "a", "score": 0.7, "groups": {"g": "x"}}').prediction == 1
    assert parser.parse(b'{"event_id": "a", "score": 0.2, "groups": {"g": "x"}}').prediction == 0
    outcome = parser.parse(b'{"event_id": "a", "ts": 5, "label": 1}')
    assert outcome.is_outcome and outcome.label == 1 and outcome.ts == 5.0


def test_unknown_fields_are_ignored_and_naive_times_are_utc():
    event = EventParser().parse(b'{"event_id": "a", "prediction": 0, "groups": {}, "extra": [1], "ts": "2026-01-01T00:00:00"}')
    assert event.ts == 1767225600.0


def test_missing_ts_takes_the_clock_and_missing_model_the_default():
    event = EventParser(now=lambda: 42.0, default_model="m").parse(b'{"event_id": "a", "prediction": 0, "groups": {}}')
    assert (event.ts, event.model) == (42.0, "m")


# -- generation events (an LLM's response, optional prompt) -------------------------------------------------------
GENERATION = {"event_id": "g1", "ts": "2026-11-22T10:00:00Z", "model": "chat", "groups": {"sex": "F"},
              "prompt": "Plan a trip", "response": "Here is a plan."}


def _encoded(**changes) -> bytes:
    import json

    event = {**GENERATION, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not None}).encode()


def test_generation_event_parses_without_a_prediction():
    event = EventParser().parse(_encoded())
    assert isinstance(event, Event)
    assert event.is_generation and not event.is_outcome
    assert (event.prediction, event.response, event.prompt) == (None, "Here is a plan.", "Plan a trip")
    assert EventParser().parse(_encoded(prompt=None)).is_generation  # the prompt is optional


def test_a_prediction_event_is_unchanged_by_the_generation_fields():
    event = EventParser().parse(VALID)
    assert not event.is_generation and (event.prompt, event.response) == (None, None)


@pytest.mark.parametrize(
    "changes, reason, words",
    [
        ({"response": None}, "missing_field", "`response`"),  # a prompt alone
        ({"response": 42}, "wrong_type", "$.response"),
        ({"response": ["a"]}, "wrong_type", "$.response"),
        ({"prompt": {"text": "a"}}, "wrong_type", "$.prompt"),
        ({"groups": None, "prompt": None}, "missing_field", "`groups`"),  # no tags and nothing to infer them from
        ({"groups": None, "prediction": 1}, "missing_field", "`groups`"),  # a prediction needs its tags
        ({"label": 1}, "bad_value", "cannot take a `label`"),
        ({"response": "x" * 21}, "oversized", "response of 21 characters exceeds the 20-character limit"),
        ({"prompt": "x" * 21}, "oversized", "prompt of 21 characters"),
    ],
)
def test_bad_generation_events_get_one_line(changes, reason, words):
    rejection = EventParser(max_text_chars=20).parse(_encoded(**changes))
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, "\n" in rejection.message) == (reason, False)
    assert words in rejection.message


def test_a_generation_may_carry_a_prediction_and_then_a_label():
    event = EventParser().parse(_encoded(prediction=1, label=0))
    assert isinstance(event, Event) and event.is_generation and (event.prediction, event.label) == (1, 0)
