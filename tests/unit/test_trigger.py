"""The webhook trigger over real HTTP: auth, bad payloads, dedup, cooldown, storms, approval."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

import pytest
from helpers import run_cli

from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.trigger import JobRunner, Trigger, serve

TOKEN = "s3cret"
# The "fine-tune job" of these tests: writes a report and exits 0.
JOB = f'{sys.executable} -c "import json,sys; json.dump({{\'incident\': sys.argv[1]}}, open(sys.argv[2], \'w\'))" ' \
      "{incident} {report}"


def alert(attribute="race", metric="demographic_parity_difference", status="firing", fingerprint=None,
          starts="2026-11-23T01:00:00Z", model="credit"):
    labels = {"alertname": "FairnessGapBreach", "model": model, "attribute": attribute, "metric": metric,
              "severity": "page"}
    return {"status": status, "labels": labels, "annotations": {"summary": "gap"}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus",
            "fingerprint": fingerprint or f"{model}-{attribute}-{metric}"}


def payload(*alerts):
    return json.dumps({"version": "4", "status": "firing", "receiver": "fairwatch-trigger", "groupKey": "{}",
                       "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                       "alerts": list(alerts)}).encode()


@pytest.fixture
def running(tmp_path):
    def start(policy="auto", job=JOB, cooldown=3600.0):
        store = IncidentStore(tmp_path / "incidents.sqlite")
        jobs = JobRunner(store, job, tmp_path / "jobs")
        trigger = Trigger(store, TOKEN, policy=policy, cooldown_seconds=cooldown, jobs=jobs)
        server, port = serve(trigger, port=0, poll_seconds=0.2)
        servers.append(server)
        return trigger, store, jobs, f"http://127.0.0.1:{port}/alerts"

    servers = []
    yield start
    for server in servers:
        server.shutdown()


def post(url, body: bytes, token: str | None = TOKEN):
    request = urllib.request.Request(url, data=body, method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_missing_or_wrong_token_is_401(running):
    trigger, store, _, url = running()
    assert post(url, payload(alert()), token=None)[0] == 401
    assert post(url, payload(alert()), token="nope")[0] == 401
    assert store.list() == []


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b'{"alerts": "many"}', "Expected `array`"),
    (b'{"alerts": [{"status": "firing"}]}', "missing required field"),
    (b'{"alerts": [{"status": "exploded", "labels": {}, "startsAt": "x"}]}', "Invalid enum value"),
    (b"[]", "Expected `object`"),
])
def test_malformed_payloads_are_400_and_the_server_lives_on(running, body, words):
    trigger, store, _, url = running()
    status, answer = post(url, body)
    assert status == 400 and words in answer["error"] and "\n" not in answer["error"]
    assert post(url, payload(alert()))[0] == 200  # still serving
    assert len(store.list()) == 1


def test_duplicate_and_out_of_order_deliveries_open_one_incident_and_run_one_job(running):
    trigger, store, jobs, url = running()
    resolved_first = alert(status="resolved")
    assert post(url, payload(resolved_first))[0] == 200  # a resolution before its firing
    for _ in range(3):
        assert post(url, payload(alert()))[0] == 200  # Alertmanager redelivers
    jobs.wait()
    incidents = store.list()
    assert len(incidents) == 1
    incident = incidents[0]
    assert incident["state"] == "job_succeeded" and incident["job"]["report"] == {"incident": str(incident["id"])}
    assert trigger.counts["jobs_started"] == 1 and trigger.counts["duplicates"] == 2
    changes = [entry["change"] for entry in incident["timeline"]]
    assert changes[0] == "opened" and changes.count("job_running") == 1 and changes[-1] == "job_succeeded"


def test_a_storm_of_1000_alerts_gives_one_incident_per_model_and_attribute(running):
    trigger, store, jobs, url = running()
    attributes = ["race", "sex", "age", "race&sex", "zip"]
    metrics = ["demographic_parity_difference", "equalized_odds_difference", "demographic_parity_ratio"]
    batch = []
    for i in range(1000):
        batch.append(alert(attribute=attributes[i % 5], metric=metrics[i % 3], fingerprint=f"f{i % 40}",
                           starts=f"2026-11-23T01:{i % 60:02d}:00Z"))
        if len(batch) == 50:
            assert post(url, payload(*batch))[0] == 200
            batch = []
    jobs.wait()
    incidents = store.list()
    assert sorted(i["attribute"] for i in incidents) == sorted(attributes)
    assert trigger.counts["jobs_started"] == 5
    assert all(i["state"] == "job_succeeded" for i in incidents)


def test_a_breach_after_a_human_resolved_opens_a_new_incident_and_a_relapse_waits_for_approval(tmp_path):
    now = [1000.0]
    store = IncidentStore(tmp_path / "i.sqlite", clock=lambda: now[0])
    jobs = JobRunner(store, JOB, tmp_path / "jobs")
    trigger = Trigger(store, TOKEN, policy="auto", cooldown_seconds=600, jobs=jobs, clock=lambda: now[0])
    trigger.handle(payload(alert()), f"Bearer {TOKEN}")
    assert jobs.wait(60)
    store.resolve(1, "fixed upstream")
    now[0] += 300
    trigger.handle(payload(alert(starts="2026-11-23T02:00:00Z")), f"Bearer {TOKEN}")
    first, relapse = store.list()
    assert first["state"] == "resolved" and len(first["alerts"]) == 1  # the closed record stays as it was closed
    assert relapse["timeline"][0]["detail"]["follows"] == {"id": 1, "resolved_seconds_ago": 300.0}
    # Within the cooldown of the resolution: a human decides, even under auto.
    assert relapse["state"] == "awaiting_approval" and trigger.counts["jobs_started"] == 1
    assert "cooldown" in relapse["timeline"][-1]["detail"]["why"]
    store.resolve(2, "false alarm")
    now[0] += 1000
    trigger.handle(payload(alert(starts="2026-11-23T03:00:00Z")), f"Bearer {TOKEN}")
    assert jobs.wait(60)
    third = store.get(3)
    assert third["state"] == "job_succeeded" and trigger.counts["jobs_started"] == 2


def test_manual_policy_waits_for_approval_from_the_cli(running, tmp_path):
    trigger, store, jobs, url = running(policy="manual")
    post(url, payload(alert()))
    (incident,) = store.list()
    assert incident["state"] == "awaiting_approval" and trigger.counts["jobs_started"] == 0
    db = str(tmp_path / "incidents.sqlite")
    listed = run_cli("incidents", "--db", db, "list")
    assert listed.returncode == 0 and "awaiting_approval" in listed.stdout
    after = run_cli("incidents", "list", "--db", db)  # after the action too, as users type it
    assert after.returncode == 0 and after.stdout == listed.stdout
    approved = run_cli("incidents", "--db", db, "approve", str(incident["id"]))
    assert approved.returncode == 0, approved.stderr
    deadline = time.time() + 20
    while store.get(incident["id"])["state"] != "job_succeeded":
        assert time.time() < deadline, store.get(incident["id"])
        time.sleep(0.1)
    assert trigger.counts["jobs_started"] == 1
    again = run_cli("incidents", "--db", db, "approve", str(incident["id"]))
    assert again.returncode == 2 and "not awaiting approval" in again.stderr
    shown = run_cli("incidents", "--db", db, "show", str(incident["id"]), "--json")
    assert json.loads(shown.stdout)["job"]["state"] == "succeeded"
    resolved = run_cli("incidents", "--db", db, "resolve", str(incident["id"]), "--reason", "promoted by hand")
    assert resolved.returncode == 0 and "resolved" in resolved.stdout
    missing = run_cli("incidents", "--db", db, "show", "99")
    assert missing.returncode == 2 and "no incident 99" in missing.stderr


def test_a_failing_job_is_recorded_not_raised(running):
    trigger, store, jobs, url = running(job=f"{sys.executable} -c \"raise SystemExit(3)\"")
    post(url, payload(alert()))
    jobs.wait()
    (incident,) = store.list()
    assert incident["state"] == "job_failed" and incident["timeline"][-1]["detail"] == {"returncode": 3}


def test_other_alerts_are_ignored(running):
    trigger, store, _, url = running()
    other = alert()
    other["labels"]["alertname"] = "FairwatchConsumerLag"
    status, answer = post(url, payload(other))
    assert status == 200 and answer["ignored"] == 1 and store.list() == []


def test_promotion_is_a_human_command_that_copies_the_candidate(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    trigger = Trigger(store, TOKEN, policy="manual")
    trigger.handle(payload(alert()), f"Bearer {TOKEN}")
    trigger.handle(payload(alert(attribute="sex", fingerprint="s")), f"Bearer {TOKEN}")
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "config.json").write_text("{}")
    store.set_state(1, "job_succeeded", job={"state": "succeeded", "candidate_dir": str(candidate),
                                             "report": {"decision": {"promote": True, "reasons": []}}})
    store.set_state(2, "job_succeeded", job={"state": "succeeded", "candidate_dir": str(candidate),
                                             "report": {"decision": {"promote": False,
                                                                     "reasons": ["accuracy fell 0.09"]}}})
    db = str(tmp_path / "i.sqlite")
    target = tmp_path / "serving" / "v2"
    done = run_cli("incidents", "--db", db, "promote", "1", "--to", target)
    assert done.returncode == 0, done.stderr
    assert (target / "config.json").exists() and store.get(1)["job"]["promoted_to"] == str(target)
    assert store.get(1)["timeline"][-1]["change"] == "promoted"
    again = run_cli("incidents", "--db", db, "promote", "1", "--to", target)
    assert again.returncode == 2 and "already exists" in again.stderr
    refused = run_cli("incidents", "--db", db, "promote", "2", "--to", tmp_path / "v3")
    assert refused.returncode == 2 and "accuracy fell" in refused.stderr and not (tmp_path / "v3").exists()
    forced = run_cli("incidents", "--db", db, "promote", "2", "--to", tmp_path / "v3", "--force")
    assert forced.returncode == 0 and (tmp_path / "v3" / "config.json").exists()
    trigger.handle(payload(alert(attribute="age", fingerprint="a")), f"Bearer {TOKEN}")
    pending = run_cli("incidents", "--db", db, "promote", "3", "--to", tmp_path / "v4")
    assert pending.returncode == 2 and "no candidate" in pending.stderr
    (tmp_path / "a-file").write_text("")
    blocked = run_cli("incidents", "--db", db, "promote", "1", "--to", tmp_path / "a-file" / "v5")
    assert blocked.returncode == 2 and blocked.stderr.count("\n") == 1, blocked.stderr
    assert f"cannot copy the candidate to {tmp_path / 'a-file' / 'v5'}: Not a directory" in blocked.stderr


@pytest.mark.parametrize("args, words", [
    (("show", "99999999999999999999"), "argument id: 99999999999999999999 is not an incident id (they count from 1)"),
    (("approve", "0"), "argument id: 0 is not an incident id"),
    (("resolve", "x1"), "argument id: 'x1' is not an incident id (a whole number)"),
    (("shadow", "-4", "--report", "r.json"), "argument id: -4 is not an incident id"),
    (("list", "--state", "bogus"), "argument --state: invalid choice: 'bogus' (choose from 'open', "),
])
def test_an_id_or_state_no_incident_can_have_is_one_line(tmp_path, args, words):
    IncidentStore(tmp_path / "i.sqlite")
    result = run_cli("incidents", "--db", tmp_path / "i.sqlite", *args)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_the_trigger_exports_incidents_by_state(running):
    from prometheus_client.parser import text_string_to_metric_families

    from fairwatch.alerts import metric_names as alert_names

    trigger, store, jobs, url = running(policy="manual")
    post(url, payload(alert()))
    post(url, payload(alert(attribute="sex", fingerprint="s")))
    post(url, payload(alert(attribute="sex", fingerprint="s")))
    body = urllib.request.urlopen(url.replace("/alerts", "/metrics"), timeout=10).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples[(alert_names.INCIDENTS, (("state", "awaiting_approval"),))] == 2
    assert samples[(alert_names.INCIDENTS, (("state", "resolved"),))] == 0
    assert samples[(alert_names.TRIGGER_DELIVERIES, (("result", "duplicate"),))] == 1
    assert samples[(alert_names.TRIGGER_DELIVERIES, (("result", "opened"),))] == 2


def test_the_base_urls_of_trigger_serve_reach_the_incident_page(tmp_path):
    """--runbook-url/--dashboard-url of `trigger serve` are stored with the incident; without
    --prometheus-url the evidence says why it is empty, and the page says what to do."""
    from fairwatch.alerts.incident_page import render_incident_html

    store = IncidentStore(tmp_path / "i.sqlite")
    trigger = Trigger(store, TOKEN, links={"runbook_url": "https://wiki.example/rb",
                                           "dashboard_url": "https://grafana.example/d/fairwatch-model"})
    assert trigger.handle(payload(alert()), f"Bearer {TOKEN}").status == 200
    (incident,) = store.list()
    assert incident["evidence"]["not_gathered"] == "the trigger runs without --prometheus-url"
    page = render_incident_html(store.get(incident["id"]))
    assert 'href="https://wiki.example/rb#runbook-fairnessgapbreach"' in page
    assert 'href="https://grafana.example/d/fairwatch-model?var-model=credit&amp;var-attribute=race"' in page
    assert "restart `fairwatch trigger serve` with --prometheus-url" in page


def test_alerts_on_a_shadows_models_open_no_incident(tmp_path):
    """<model>:baseline repeats production's breach and <model>:candidate serves no one: both are compared in
    production's incident (fairwatch incidents shadow), never opened as incidents with fine-tunes of their own."""
    store = IncidentStore(tmp_path / "i.sqlite")
    trigger = Trigger(store, TOKEN, policy="manual")
    shadows = [alert(model=f"credit:{side}", fingerprint=side) for side in ("baseline", "candidate")]
    response = trigger.handle(payload(*shadows, alert(fingerprint="production")), f"Bearer {TOKEN}")
    assert response.body["ignored"] == 2 and response.body["opened"] == [1]
    assert [(i["model"], i["attribute"]) for i in store.list()] == [("credit", "race")]


@pytest.mark.parametrize("policy, next_state", [("manual", "awaiting_approval"), ("auto", "job_succeeded")])
def test_an_alert_whose_handling_fails_costs_only_itself_and_its_redelivery_finishes_the_incident(
        tmp_path, monkeypatch, caplog, policy, next_state):
    """A failure after the incident was opened (here a full disk on its next write) must not leave it open
    for good: the delivery answers 500, Alertmanager delivers it again, and that takes the step left undone."""
    import sqlite3

    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, JOB, tmp_path / "jobs")
    trigger = Trigger(store, TOKEN, policy=policy, jobs=jobs)
    real_set_state, fail = store.set_state, ["credit"]

    def set_state_failing_once_for(incident_id, *args, **kwargs):
        if store.get(incident_id)["model"] in fail:
            fail.clear()
            raise sqlite3.OperationalError("database or disk is full")
        return real_set_state(incident_id, *args, **kwargs)

    monkeypatch.setattr(store, "set_state", set_state_failing_once_for)
    body = payload(alert(model="credit"), alert(model="loans"))
    response = trigger.handle(body, f"Bearer {TOKEN}")
    assert response.status == 500  # Alertmanager retries a 5xx
    assert response.body["failed"] == ["alert FairnessGapBreach of model 'credit': database or disk is full"]
    assert response.body["opened"] == [1, 2] and trigger.counts["failed"] == 1
    assert "Alertmanager will deliver it again" in caplog.text
    if policy == "manual":
        assert [i["state"] for i in store.list()] == ["open", "awaiting_approval"]

    again = trigger.handle(body, f"Bearer {TOKEN}")
    assert again.status == 200 and again.body["duplicates"] == 1 and again.body["updated"] == [1], again.body
    assert jobs.wait(60)
    assert [i["state"] for i in store.list()] == [next_state, next_state]
    assert len(store.list()) == 2 and trigger.counts["incidents_opened"] == 2


def test_an_incident_a_killed_trigger_left_open_takes_its_next_step_when_the_trigger_starts_again(tmp_path, caplog):
    store = IncidentStore(tmp_path / "i.sqlite")
    # What a trigger killed between opening the incident and starting its job leaves behind.
    record = {"status": "firing", "labels": alert()["labels"], "annotations": {}, "startsAt": "2026-11-23T01:00:00Z",
              "fingerprint": "f"}
    incident, created = store.open_or_update("credit", "race", record, evidence={})
    assert created and store.get(incident["id"])["state"] == "open"
    jobs = JobRunner(store, JOB, tmp_path / "jobs")
    server, _ = serve(Trigger(store, TOKEN, policy="auto", jobs=jobs), port=0, poll_seconds=0.2)
    try:
        assert jobs.wait(60)
        assert store.get(incident["id"])["state"] == "job_succeeded"
        assert "left open by the previous run" in caplog.text
    finally:
        server.shutdown()


def test_a_copy_of_an_alert_still_being_handled_is_answered_5xx_not_duplicate(tmp_path):
    """Were the copy answered "duplicate" and the first delivery then failed, nothing would deliver it again."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    release = threading.Event()

    class SlowPrometheus(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            release.wait(30)  # the evidence query of the first delivery holds it in flight
            body = b'{"status": "success", "data": {"resultType": "vector", "result": []}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    prometheus = HTTPServer(("127.0.0.1", 0), SlowPrometheus)
    threading.Thread(target=prometheus.serve_forever, daemon=True).start()
    store = IncidentStore(tmp_path / "i.sqlite")
    trigger = Trigger(store, TOKEN, policy="manual",
                      prometheus_url=f"http://127.0.0.1:{prometheus.server_address[1]}")
    try:
        first: list = []
        worker = threading.Thread(target=lambda: first.append(trigger.handle(payload(alert()), f"Bearer {TOKEN}")))
        worker.start()
        deadline = time.monotonic() + 30
        while not trigger._in_flight:  # the first delivery has claimed the alert
            assert time.monotonic() < deadline
            time.sleep(0.01)
        copy = trigger.handle(payload(alert()), f"Bearer {TOKEN}")
        assert copy.status == 500 and "being handled by another delivery" in copy.body["failed"][0]
        release.set()
        worker.join(30)
        assert first[0].status == 200 and first[0].body["opened"] == [1]
        again = trigger.handle(payload(alert()), f"Bearer {TOKEN}")  # Alertmanager's retry of the copy
        assert again.status == 200 and again.body["duplicates"] == 1
        assert [i["state"] for i in store.list()] == ["awaiting_approval"]
    finally:
        release.set()
        prometheus.shutdown()
