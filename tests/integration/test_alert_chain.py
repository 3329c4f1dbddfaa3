"""The whole alert chain with the real binaries on loopback.

A replayed stream with a bias shift drives the monitor's /metrics;
Prometheus scrapes it and evaluates the rendered rules (short durations);
the breach fires, Alertmanager calls the trigger's webhook with the bearer
token, the trigger opens an incident with Prometheus' evidence and runs the
fine-tune job on the tiny CPU model; the incident ends with a report whose
held-out gap is smaller than before, and its HTML page has the plots. Then
a second worker scores the same stream with the candidate in the shadow of
production, `incidents shadow` records both from Prometheus, the page states
whether the candidate can be promoted, and the human promotes accordingly.

The data: sentences from a fixed set of skeletons whose label is the
skeleton's (toxic or not), each with "man" or "woman". The deployed model's
predictions are right until event 1,000, then every "man" event is
predicted toxic: a label-independent group-term shortcut. The serving model
handed to the job is the tiny ``keys`` model (tests/scorer_fixtures.py),
which has exactly that shortcut (male terms -> toxic, female -> not), so
its held-out FPED is 1.0 before; training on the labeled window with
counterfactual copies must move it.
"""

from __future__ import annotations

import html as html_module
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from chain import (Processes, breach_exported, biased_events, firing_breaches, free_port, get_json, processes,
                   query_value, require_binaries, start_prometheus_and_alertmanager, wait_until, write_jsonl)
from helpers import REPO

from fairwatch.alerts.incident_summary import firing_metrics
from fairwatch.alerts.incidents import IncidentStore

pytestmark = pytest.mark.slow
__all__ = ["processes"]  # the fixture, imported from chain

MODEL = "toxicity"
N_EVENTS, SHIFT_AT = 16_000, 1_000  # the decision's first block is 8,000 events; this breaches well inside 16,000


def test_breach_pages_trigger_and_finetune_shrinks_the_gap(tmp_path: Path, processes: Processes) -> None:
    require_binaries()
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scorer_fixtures import build_tiny_model

    stream = write_jsonl(tmp_path / "stream.jsonl", biased_events(N_EVENTS, SHIFT_AT, MODEL))
    model_dir = build_tiny_model(tmp_path / "keys-model", "keys")
    metrics_port, trigger_port, shadow_port = (free_port() for _ in range(3))
    # The second target is the shadow worker, started once the job has proposed a candidate.
    prom_port, token_file = start_prometheus_and_alertmanager(tmp_path, processes, [metrics_port, shadow_port],
                                                              trigger_port)

    job = " ".join([
        shlex.quote(sys.executable), "-m", "fairwatch.alerts.finetune_command", shlex.quote(str(stream)),
        "--model-dir", shlex.quote(str(model_dir)), "--out", "{out}", "--report", "{report}", "--device", "cpu",
        "--max-rows", "960", "--max-steps", "60", "--batch-size", "32", "--lr", "3e-3", "--eval-every", "10",
        "--val-share", "0.2", "--patience", "20", "--no-progress",
    ])
    db = tmp_path / "incidents.sqlite"
    processes.start("trigger", [sys.executable, "-m", "fairwatch", "trigger", "serve", "--listen-port", str(trigger_port),
                                "--db", str(db), "--token-file", str(token_file), "--policy", "auto",
                                "--workdir", str(tmp_path / "jobs"), "--job-command", job,
                                "--prometheus-url", f"http://127.0.0.1:{prom_port}"])
    processes.start("replay", [sys.executable, "-m", "fairwatch", "replay", str(stream), "--metrics-port", str(metrics_port),
                               "--group-col", "sex", "--model", MODEL])

    wait_until(lambda: breach_exported(metrics_port), 60, "the replay to export fairwatch_decision_breach 1 on /metrics", processes)

    alerts = wait_until(lambda: firing_breaches(prom_port), 60, "FairnessGapBreach firing in Prometheus", processes)
    assert {a["labels"]["model"] for a in alerts} == {MODEL}
    assert {a["labels"]["attribute"] for a in alerts} == {"sex"}

    store = IncidentStore(db)
    incidents = wait_until(lambda: store.list(), 30, "Alertmanager to call the trigger and an incident to open",
                           processes)
    assert len(incidents) == 1, incidents
    incident = incidents[0]
    assert (incident["model"], incident["attribute"]) == (MODEL, "sex")
    assert incident["alerts"][0]["labels"]["alertname"] == "FairnessGapBreach"
    health = get_json(f"http://127.0.0.1:{trigger_port}/healthz")
    assert health and health["rejected"] == 0 and health["incidents_opened"] == 1, health
    # The evidence came from Prometheus: the breaching bound, and the gap's recent history.
    evidence = incident["evidence"]
    assert evidence["bound"] and all(b["value"] > t["value"] for b in evidence["bound"]
                                     for t in evidence["threshold"] if t["labels"] == b["labels"]), evidence
    assert evidence["series"]["gap"] and evidence["series"]["gap"][0]["points"], evidence["series"]
    assert evidence["series"]["threshold"][0]["points"], evidence["series"]
    # Exemplar event ids: real ids of the stream, per group, never labels.
    assert isinstance(evidence["exemplars"], list), evidence["exemplars"]
    exemplar_ids = {i for e in evidence["exemplars"] for i in e["event_ids"]}
    assert exemplar_ids, evidence["exemplars"]
    assert exemplar_ids <= {f"e{n}" for n in range(N_EVENTS)}

    done = wait_until(lambda: store.get(incident["id"])["job"].get("state") in ("succeeded", "failed")
                      and store.get(incident["id"]), 150, "the fine-tune job to finish", processes)
    assert done["state"] == "job_succeeded", processes.logs()
    report = done["job"]["report"]
    assert report is not None and report["data"]["attributes"] == ["sex"]
    before = report["before"]["attributes"]["sex"]["gaps"]["fped"]["value"]
    after = report["after"]["attributes"]["sex"]["gaps"]["fped"]["value"]
    assert before == pytest.approx(1.0)  # the keys model's shortcut, on held-out sentences
    assert after < before, f"held-out FPED {before} -> {after}\n{processes.logs()}"
    assert report["decision"]["gap_after"] < report["decision"]["gap_before"]
    # Later alerts of the same (model, attribute) join the incident; the job ran once, after the opening.
    changes = [e["change"] for e in done["timeline"] if e["change"] != "alert_added"]
    assert changes == ["opened", "job_running", "job_succeeded"], changes
    assert Path(done["job"]["candidate_dir"]).joinpath("model", "config.json").is_file()

    page = tmp_path / "incident.html"
    result = subprocess.run([sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "show",
                             str(incident["id"]), "--html", str(page)], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert '<svg id="plot-gap-0"' in text and "no series of" not in text and 'class="missing"' not in text
    assert "no fine-tune report yet" not in text and "no group rates stored" not in text
    # The headline names the metric, the harmed side and the bound, from Prometheus' evidence.
    headline = html_module.unescape(re.search(r'<p class="headline">(.*?)</p>', text).group(1))
    assert headline.startswith(f"{MODEL}: ") and "beyond its threshold (anytime-valid bound" in headline, headline
    assert "unknown" not in headline, headline

    # The candidate on live traffic: a second worker scores the same stream with it (the job's candidate
    # folder, as the incident records it), Prometheus scrapes both, and the comparison lands in the incident.
    candidate_dir = done["job"]["candidate_dir"]
    processes.start("shadow", [sys.executable, "-m", "fairwatch", "replay", str(stream), "--serve", str(shadow_port),
                               "--group-col", "sex", "--model", MODEL, "--shadow-candidate", candidate_dir,
                               "--shadow-model", MODEL, "--scorer-device", "cpu"])
    shadowed = f'sum(fairwatch_group_events_total{{model="{MODEL}:candidate",cell="predictions"}})'

    def candidate_scraped() -> bool:
        return query_value(prom_port, shadowed) == N_EVENTS

    wait_until(candidate_scraped, 120, "Prometheus to scrape the candidate's predictions of every event", processes)
    compared = subprocess.run([sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "shadow",
                               str(incident["id"]), "--prometheus-url", f"http://127.0.0.1:{prom_port}"],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
    assert compared.returncode == 0, compared.stderr + processes.logs()
    shadow = store.get(incident["id"])["job"]["shadow"]
    # Same events on both sides: every event carries text, so the candidate saw each one production did.
    assert shadow["predictions"]["baseline"] == shadow["predictions"]["candidate"], shadow
    assert sum(shadow["predictions"]["candidate"].values()) == N_EVENTS
    assert [row["metric"] for row in shadow["metrics"]] == firing_metrics(store.get(incident["id"]))
    result = subprocess.run([sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "show",
                             str(incident["id"]), "--html", str(page)], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    text = html_module.unescape(page.read_text())
    held_out = report["decision"]["promote"]
    verdict = ("Candidate can be promoted" if held_out and shadow["passed"] else
               "Candidate cannot be promoted: held-out gates passed" if held_out else
               "Candidate cannot be promoted: the held-out gates refused it")
    assert verdict in text and f"on the same {N_EVENTS} events" in text, compared.stdout
    # The human step follows both verdicts: promoted, or refused in one line and then overruled by name.
    promote = [sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "promote", str(incident["id"]),
               "--to", str(tmp_path / "serving")]
    promoted = subprocess.run(promote, capture_output=True, text=True, cwd=REPO, timeout=60)
    if not (held_out and shadow["passed"]):
        assert promoted.returncode == 2 and len(promoted.stderr.strip().splitlines()) == 1, promoted.stderr
        assert ("failed on live shadow traffic" if held_out else "gates did not recommend") in promoted.stderr
        promoted = subprocess.run([*promote, "--force"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert promoted.returncode == 0, promoted.stderr
    assert (tmp_path / "serving" / "model" / "config.json").is_file()
    assert store.get(incident["id"])["timeline"][-1]["change"] == "promoted"
