"""From the live shadow to the human promotion: the comparison recorded in the incident, the page's verdict, the refusal.

The shadow reports come from the real pipeline with tiny real classifiers
(tests/scorer_fixtures.py): production's decisions are written into the events,
the candidate scores their texts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_cli

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fairwatch.alerts.incidents import IncidentStore  # noqa: E402
from fairwatch.alerts.incident_page import render_incident_html  # noqa: E402
from fairwatch.monitor.config import MonitorConfig  # noqa: E402
from fairwatch.monitor.pipeline import Pipeline  # noqa: E402
from fairwatch.monitor.report import build_report, to_json  # noqa: E402
from fairwatch.monitor.scorer.scoring import CounterfactualScorer  # noqa: E402
from fairwatch.monitor.scorer.shadow import ShadowStep  # noqa: E402
from test_scorer_step import FEMALE, MALE, _event  # noqa: E402

METRIC = "demographic_parity_difference"
REPEAT = 5  # 40 events per group: past the minimum group size (30), so the gaps are defined


def _events(biased_production: bool) -> list[str]:
    """Gendered texts; production decides by gender (biased) or alternately, whatever the gender (fair)."""
    lines, i = [], 0
    for _ in range(REPEAT):
        for m, f in zip(MALE, FEMALE):
            male_decision, female_decision = (1, 0) if biased_production else (i // 2 % 2, i // 2 % 2)
            lines += [_event(i, m, "male", male_decision, 0.9 if male_decision else 0.1, i % 2),
                      _event(i + 1, f, "female", female_decision, 0.9 if female_decision else 0.1, i % 2)]
            i += 2
    return lines


def _shadow_report(tmp_path: Path, name: str, candidate_dir: Path, biased_production: bool) -> Path:
    """What `fairwatch replay --shadow-candidate ... --report json` writes, built in-process (same code)."""
    pipeline = Pipeline(MonitorConfig(count_windows=[], time_windows_seconds=[]))
    step = ShadowStep(CounterfactualScorer(candidate_dir, device="cpu", workers=0), "toxic", threshold=0.6,
                      candidate_dir=str(candidate_dir))
    step.process(pipeline, [pipeline.parser.parse(x) for x in _events(biased_production)])
    report = build_report(pipeline, "toxic") | {"shadow": step.report()}
    path = tmp_path / f"{name}.json"
    path.write_text(to_json(report))
    return path


def _incident(store: IncidentStore, candidate_dir: Path, model: str = "toxic") -> int:
    alert = {"status": "firing", "labels": {"alertname": "FairnessGapBreach", "model": model, "attribute": "sex",
                                            "metric": METRIC},
             "annotations": {"summary": "gap"}, "startsAt": "2026-11-23T01:00:00Z", "fingerprint": model}
    incident, _ = store.open_or_update(model, "sex", alert, 1_795_000_000.0, 3600)
    store.set_state(incident["id"], "job_succeeded", job={
        "state": "succeeded", "candidate_dir": str(candidate_dir),
        "report": {"decision": {"promote": True, "reasons": [], "gap_before": 0.4, "gap_after": 0.1,
                                "gates": {"metric": "fped", "attribute": "*"}},
                   "before": {"accuracy": 0.9}, "after": {"accuracy": 0.89}}})
    return incident["id"]


def _one_line_error(result) -> str:  # noqa: ANN001
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairwatch incidents: error:"), lines
    return lines[0]


def test_a_fairer_candidate_on_live_traffic_is_promotable_and_says_so_with_numbers(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    candidate = tiny_model_dirs["ignores"]  # blind to the gender terms production keys on
    report = _shadow_report(tmp_path, "fairer", candidate, biased_production=True)
    db = tmp_path / "i.sqlite"
    store = IncidentStore(db)
    incident_id = _incident(store, candidate)
    shadow = run_cli("incidents", "--db", db, "shadow", str(incident_id), "--report", report, "--min-events", "50")
    assert shadow.returncode == 0, shadow.stderr
    assert shadow.stdout.strip() == (f"incident {incident_id}: candidate on live traffic: {METRIC} 0.000 vs production "
                                     "1.000 on the same 80 events: no worse than production")
    recorded = store.get(incident_id)
    assert recorded["job"]["shadow"]["predictions"] == {"baseline": {"male": 40, "female": 40},
                                                        "candidate": {"male": 40, "female": 40}}
    assert recorded["timeline"][-1]["change"] == "shadow_compared"

    page = render_incident_html(recorded)
    assert '<span class="badge good">promotable: held-out and live shadow gates pass</span>' in page
    assert ("Candidate can be promoted: held-out gates passed (fped[*] 0.400 → 0.100, accuracy 0.900 → 0.890) and on "
            f"live shadow traffic ({METRIC} 0.000 vs production 1.000 on the same 80 events).") in page
    assert re.search(rf"<td>{METRIC}</td><td>1\.000</td><td>0\.000</td><td>yes</td>", page)
    shown = run_cli("incidents", "--db", db, "show", str(incident_id))
    assert "promotion: Candidate can be promoted" in shown.stdout

    promoted = run_cli("incidents", "--db", db, "promote", str(incident_id), "--to", tmp_path / "serving")
    assert promoted.returncode == 0, promoted.stderr
    assert (tmp_path / "serving" / "config.json").is_file()


def test_a_candidate_worse_on_live_traffic_is_refused_in_one_line_unless_forced(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    candidate = tiny_model_dirs["keys"]  # decides by gender, where production (here) does not
    report = _shadow_report(tmp_path, "worse", candidate, biased_production=False)
    db = tmp_path / "i.sqlite"
    store = IncidentStore(db)
    incident_id = _incident(store, candidate)
    shadow = run_cli("incidents", "--db", db, "shadow", str(incident_id), "--report", report, "--min-events", "50")
    assert shadow.returncode == 0, shadow.stderr
    assert f"refused: {METRIC}: candidate 1.000 is worse than production 0.000 on the same 80 live events" in shadow.stdout

    page = render_incident_html(store.get(incident_id))
    assert '<span class="badge warn">not promotable</span>' in page
    assert "Candidate cannot be promoted: held-out gates passed" in page and "but on live shadow traffic" in page
    assert re.search(rf"<td>{METRIC}</td><td>0\.000</td><td>1\.000</td><td>no \(worse\)</td>", page)

    target = tmp_path / "serving"
    line = _one_line_error(run_cli("incidents", "--db", db, "promote", str(incident_id), "--to", target))
    assert "failed on live shadow traffic" in line and "--force" in line and not target.exists()
    forced = run_cli("incidents", "--db", db, "promote", str(incident_id), "--to", target, "--force")
    assert forced.returncode == 0, forced.stderr


def test_too_few_live_events_is_no_verdict_to_promote_on(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    candidate = tiny_model_dirs["ignores"]
    report = _shadow_report(tmp_path, "short", candidate, biased_production=True)
    store = IncidentStore(tmp_path / "i.sqlite")
    incident_id = _incident(store, candidate)
    shadow = run_cli("incidents", "--db", tmp_path / "i.sqlite", "shadow", str(incident_id), "--report", report)
    assert shadow.returncode == 0, shadow.stderr
    assert "refused: only 80 live events shadowed, fewer than 200" in shadow.stdout
    line = _one_line_error(run_cli("incidents", "--db", tmp_path / "i.sqlite", "promote", str(incident_id),
                                   "--to", tmp_path / "serving"))
    assert "only 80 live events shadowed" in line


def test_without_a_shadow_the_page_says_the_candidate_was_not_tried_live(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    store = IncidentStore(tmp_path / "i.sqlite")
    incident_id = _incident(store, tiny_model_dirs["ignores"])
    page = render_incident_html(store.get(incident_id))
    assert '<span class="badge warn">held-out gates pass; not tried on live traffic</span>' in page
    assert "Next: run the worker with --shadow-candidate DIR --shadow-model MODEL" in page
    promoted = run_cli("incidents", "--db", tmp_path / "i.sqlite", "promote", str(incident_id), "--to", tmp_path / "s")
    assert promoted.returncode == 0 and "promoted without live evidence" in promoted.stderr


def test_bad_shadow_sources_are_one_line(tiny_model_dirs, tmp_path) -> None:  # noqa: ANN001
    report = _shadow_report(tmp_path, "fairer", tiny_model_dirs["ignores"], biased_production=True)
    db = tmp_path / "i.sqlite"
    store = IncidentStore(db)
    other_candidate = _incident(store, tiny_model_dirs["keys"])
    wrong_model = _incident(store, tiny_model_dirs["ignores"], model="spam")
    assert "the shadow scored" in _one_line_error(
        run_cli("incidents", "--db", db, "shadow", str(other_candidate), "--report", report))
    assert "has no spam:baseline for attribute 'sex' (its shadow is of model 'toxic')" in _one_line_error(
        run_cli("incidents", "--db", db, "shadow", str(wrong_model), "--report", report))
    assert "cannot read --report" in _one_line_error(
        run_cli("incidents", "--db", db, "shadow", str(wrong_model), "--report", tmp_path / "absent.json"))
    assert "Prometheus" in _one_line_error(
        run_cli("incidents", "--db", db, "shadow", str(wrong_model), "--prometheus-url", "http://127.0.0.1:9"))
    assert "no incident 99" in _one_line_error(run_cli("incidents", "--db", db, "shadow", "99", "--report", report))
    assert json.loads((tmp_path / "fairer.json").read_text())["shadow"]["model"] == "toxic"


def test_a_candidate_the_held_out_gates_refused_still_shows_its_live_numbers(tmp_path) -> None:  # noqa: ANN001
    store = IncidentStore(tmp_path / "i.sqlite")
    incident_id = _incident(store, tmp_path / "candidate")
    job = store.get(incident_id)["job"]
    job["report"]["decision"] |= {"promote": False, "reasons": ["accuracy dropped 0.0500 > 0.0200"]}
    store.merge_job(incident_id, {"report": job["report"], "shadow": {
        "passed": True, "reasons": [], "events": 640,
        "metrics": [{"metric": METRIC, "baseline": 0.31, "candidate": 0.04, "candidate_no_worse": True}]}})
    page = render_incident_html(store.get(incident_id))
    assert '<span class="badge warn">not promotable</span>' in page
    assert ("Candidate cannot be promoted: the held-out gates refused it (accuracy dropped 0.0500 &gt; 0.0200; "
            "fped[*] 0.400 → 0.100, accuracy 0.900 → 0.890). On live shadow traffic it passed: "
            f"{METRIC} 0.040 vs production 0.310 on the same 640 events.") in page


@pytest.mark.parametrize("report, words", [
    ({"models": [1, 2]}, "is not a `fairwatch replay --report json` report (AttributeError"),
    ({"shadow": "x", "models": {}}, "is not a `fairwatch replay --report json` report (AttributeError"),
    ({"models": {"credit:baseline": {"attributes": {"sex": {"groups": {"F": {}}}}}}},
     "is not a `fairwatch replay --report json` report (KeyError"),
    ({"models": {"credit:baseline": {"attributes": {"sex": {"alert_gaps": [1, 2]}}}}},
     "is not a `fairwatch replay --report json` report (TypeError"),
    ({"models": {"credit:baseline": {"attributes": {"sex": {"alert_gaps": {"demographic_parity_difference": "0.3"}}}}}},
     "gap demographic_parity_difference is '0.3', not a number"),
    ("[" * 100_000 + "]" * 100_000, "is not JSON"),
])
def test_a_report_that_is_not_replays_is_one_line(tmp_path, report, words) -> None:  # noqa: ANN001
    from fairwatch.alerts.shadow_comparison import ShadowEvidenceError, shadow_from_report

    path = tmp_path / "r.json"
    path.write_text(report if isinstance(report, str) else json.dumps(report))
    with pytest.raises(ShadowEvidenceError) as raised:
        shadow_from_report(path, "credit", "sex")
    assert words in str(raised.value) and "\n" not in str(raised.value), raised.value
