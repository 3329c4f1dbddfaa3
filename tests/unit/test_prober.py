"""The prober's pure parts: template files, answer parsing, counterfactual pairs (no network)."""

from __future__ import annotations

import json

import pytest

from fairwatch.consumers import prober
from fairwatch.consumers.prober import ProbeFailure, ProbeTemplate, TemplateError, load_templates, probe

LOAN = {"id": "loan", "template": "A story about a {person}.", "fill": {"person": {"gender": {"f": "woman", "m": "man"}}}}


def test_templates_are_read_and_filled_per_group(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("# comment\n\n" + json.dumps(LOAN) + "\n")
    (template,) = load_templates(path)
    assert template == ProbeTemplate("loan", "A story about a {person}.", "person", "gender", {"f": "woman", "m": "man"})
    assert template.prompts() == {"f": "A story about a woman.", "m": "A story about a man."}


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "t.jsonl:1: not JSON"),
    (json.dumps({"fill": LOAN["fill"]}), "string 'template'"),
    (json.dumps({**LOAN, "fill": {}}), "exactly one placeholder"),
    (json.dumps({**LOAN, "template": "no slot"}), "no placeholder {person}"),
    (json.dumps({**LOAN, "fill": {"person": {"gender": {"f": "woman"}}}}), "at least two groups"),
    (json.dumps(LOAN) + "\n" + json.dumps(LOAN), "t.jsonl:2: duplicate template id 'loan'"),
])
def test_a_bad_template_line_is_named(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_templates(path)


@pytest.mark.parametrize(("raw", "message"), [
    (b"<html>", "not JSON"),
    (b'{"choices": []}', "no choices[0].message.content"),
    (b'{"error": "x"}', "no choices[0].message.content"),
    (b'{"choices": [{"message": {"content": null}}]}', "content is NoneType"),
])
def test_malformed_answers_are_one_line_errors(raw, message):
    with pytest.raises(prober.ProbeError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        prober._answer_of(raw)
    assert "\n" not in str(info.value)


class FakeClient:
    model = "m"

    def __init__(self):
        self.calls = []

    def complete(self, prompt, *, temperature, max_tokens, seed):
        self.calls.append((prompt, temperature, max_tokens, seed))
        if "man." in prompt and "woman" not in prompt and seed == 11:
            raise prober.ProbeError("HTTP 500 from x: boom")
        return "fine"


def test_pairs_share_settings_and_a_failure_costs_one_event():
    template = ProbeTemplate("loan", "A story about a {person}.", "person", "gender", {"f": "woman", "m": "man"})
    client = FakeClient()
    results = list(probe([template], client, samples=2, temperature=0.5, max_tokens=9, seed=10))
    assert [c[1:] for c in client.calls] == [(0.5, 9, 10), (0.5, 9, 10), (0.5, 9, 11), (0.5, 9, 11)]
    events = [r for r in results if isinstance(r, dict)]
    assert [e["event_id"] for e in events] == ["loan-0-f", "loan-0-m", "loan-1-f"]
    assert [e["pair_id"] for e in events] == ["loan-0", "loan-0", "loan-1"]
    assert events[0]["groups"] == {"gender": "f"} and events[0]["ts"].endswith("Z")
    assert [str(r) for r in results if isinstance(r, ProbeFailure)] == ["loan-1-m: HTTP 500 from x: boom"]


def test_the_rate_limiter_spaces_request_starts_across_threads():
    from fairwatch.consumers.prober import RateLimiter

    now, slept = [100.0], []

    def sleep(seconds):
        slept.append(seconds)

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait()
    assert slept == [0.25, 0.5]  # starts at 100.0, 100.25, 100.5
    now[0] = 200.0  # idle for long: no burst credit is kept beyond the next slot
    limiter.wait()
    assert slept == [0.25, 0.5]
    unlimited = RateLimiter(0, sleep=sleep)
    unlimited.wait()
    assert len(slept) == 2


def test_production_prompts_are_sampled_by_id_and_swapped_per_attribute():
    from collections import Counter

    from fairwatch.consumers.prompt_prober import pairs_from_lines, sampled
    from fairwatch.monitor.scorer.counterfactuals import CounterfactualGenerator, Lexicon

    generator = CounterfactualGenerator(Lexicon.default())
    lines = [json.dumps({"event_id": f"e{i}", "prompt": "Why do Muslims and women pray?"}) for i in range(50)]
    lines += ["", "[1, 2]", json.dumps({"event_id": "x", "prompt": ""})]
    lines += ["[" * 100_000, json.dumps({"event_id": "a\nb" * 100, "prompt": "women"})]
    counts = Counter()
    results = list(pairs_from_lines(lines, generator, every=5, counts=counts))
    failures = [r for r in results if isinstance(r, ProbeFailure)]
    # Deep nesting costs its own line; records without a prompt are predictions or outcomes: skipped, counted.
    assert [str(f) for f in failures] == ["line 54: not JSON (RecursionError)"]
    assert counts["without_prompt"] == 2
    (long_id,) = pairs_from_lines(lines[-1:], generator)  # an id with newlines, 300 characters long
    assert "\n" not in long_id.event_id and len(long_id.event_id) < 200 and long_id.origin == "women"
    pairs = [r for r in results if not isinstance(r, ProbeFailure)]
    ids = {p.event_id.split("-")[0] for p in pairs if p.event_id.startswith("e")}
    assert ids == {f"e{i}" for i in range(50) if sampled(f"e{i}", 5)} and 0 < len(ids) < 50
    attributes = {p.attribute for p in pairs}
    assert {"gender", "religion"} <= attributes
    religion = next(p for p in pairs if p.attribute == "religion")
    assert "Muslims" not in religion.counterfactual and "women" in religion.counterfactual
    only_gender = [r for r in pairs_from_lines(lines[:5], generator, attributes={"gender"})]
    assert only_gender and all(p.attribute == "gender" for p in only_gender)
