"""The trigger and a human's CLI write one incident store from two processes (two SQLite connections).

A state change checks the current state and then writes: the check and the write must be one transaction, or a
human's `incidents resolve` that lands between them is overwritten by the job's end (the resolved incident comes
back as job_succeeded). The interleaving is forced, not hoped for: the trigger's connection runs the human's
command at the exact moment its own write statement starts (SQLite's statement trace), so no thread timing or
sleep decides the outcome.
"""

from __future__ import annotations

import sqlite3

import pytest

from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.jobs import JobRunner

ALERT = {"labels": {"alertname": "FairnessGapBreach", "model": "credit", "attribute": "sex", "metric": "fped"},
         "status": "firing", "startsAt": "2026-11-29T00:00:00Z"}


def running_incident(db) -> tuple[IncidentStore, int]:
    trigger = IncidentStore(db)
    incident, _ = trigger.open_or_update("credit", "sex", ALERT)
    trigger.set_state(incident["id"], "job_running", {}, job={"state": "running"}, expect=("open",))
    return trigger, incident["id"]


def interleave(store: IncidentStore, when: str, action) -> list:
    """Run ``action`` once, when ``store``'s connection starts a statement beginning with ``when``;
    returns [the action's result or the sqlite3 error it met]."""
    happened: list = []

    def trace(statement: str) -> None:
        if not happened and statement.lstrip().upper().startswith(when):
            try:
                happened.append(action())
            except sqlite3.OperationalError as exc:  # the store was busy: the human's command waits and retries
                happened.append(exc)

    store._db.set_trace_callback(trace)
    return happened


@pytest.mark.parametrize("when", ["UPDATE INCIDENTS SET JOB", "UPDATE INCIDENTS SET STATE"])
def test_a_resolve_between_the_jobs_check_and_its_write_is_never_overwritten(tmp_path, when):
    db = tmp_path / "incidents.sqlite"
    trigger, incident_id = running_incident(db)
    human = IncidentStore(db)
    human._db.execute("PRAGMA busy_timeout = 0")  # a busy store answers at once instead of waiting
    jobs = JobRunner(trigger, "true", tmp_path / "jobs")
    happened = interleave(trigger, when, lambda: human.resolve(incident_id, "handled by hand")["state"])

    jobs._finish(incident_id, "job_succeeded", {"returncode": 0}, {"state": "succeeded"})

    assert len(happened) == 1
    if isinstance(happened[0], sqlite3.OperationalError):  # the check and write held the store: resolve after
        assert "locked" in str(happened[0])
        assert human.resolve(incident_id, "handled by hand")["state"] == "resolved"
    else:
        assert happened == ["resolved"]
    incident = human.get(incident_id)
    assert incident["state"] == "resolved", [e["change"] for e in incident["timeline"]]
    assert incident["job"]["state"] == "succeeded"  # the job's result is kept either way
    changes = [e["change"] for e in incident["timeline"]]
    assert changes.count("resolved") == 1 and changes.count("job_succeeded") == 1, changes


def test_two_writers_merging_job_fields_lose_neither(tmp_path):
    """merge_job reads the job record and writes it back: another connection's merge in between must survive."""
    db = tmp_path / "incidents.sqlite"
    trigger, incident_id = running_incident(db)
    human = IncidentStore(db)
    human._db.execute("PRAGMA busy_timeout = 0")
    happened = interleave(trigger, "UPDATE INCIDENTS SET JOB",
                          lambda: human.merge_job(incident_id, {"shadow": {"passed": True}}))

    trigger.merge_job(incident_id, {"pid": 4242})

    if isinstance(happened[0], sqlite3.OperationalError):
        human.merge_job(incident_id, {"shadow": {"passed": True}})
    job = human.get(incident_id)["job"]
    assert job["pid"] == 4242 and job["shadow"] == {"passed": True}, job
