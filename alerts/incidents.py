"""The incident record: SQLite, one row per incident, every state change kept with its time.

An incident is opened by the first fairness alert for a (model, attribute)
and updated by the ones that follow within the cooldown. It records the
alerts, the evidence gathered when it opened (the gap with its bounds, the
group rates), the fine-tune job's state and report, and a timeline of every
change. SQLite because it needs no server and survives restarts; the trigger
is the only writer, behind one lock.

>>> store = IncidentStore(":memory:")
>>> incident, created = store.open_or_update("m", "race", {"metric": "demographic_parity_difference"}, 0.0, 3600)
>>> created, incident["state"]
(True, 'open')
>>> store.open_or_update("m", "race", {"metric": "equalized_odds_difference"}, 10.0, 3600)[1]
False
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

STATES = ("open", "awaiting_approval", "job_running", "job_succeeded", "job_failed", "resolved")

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    attribute TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    alerts TEXT NOT NULL,          -- JSON list of the alerts (labels, annotations, startsAt)
    evidence TEXT NOT NULL,        -- JSON: gap bounds, group rates... gathered at opening
    job TEXT NOT NULL              -- JSON: state, command, report path, candidate dir
);
CREATE TABLE IF NOT EXISTS timeline (
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    at REAL NOT NULL,
    change TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_alerts (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    status TEXT NOT NULL,
    incident_id INTEGER,
    PRIMARY KEY (fingerprint, starts_at, status)
);
CREATE INDEX IF NOT EXISTS incidents_by_key ON incidents(model, attribute, updated_at);
"""


class IncidentError(ValueError):
    """A request the store cannot honour (unknown id, wrong state), worded for one line."""


class IncidentStore:
    def __init__(self, path: str | Path, clock=time.time) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock

    # -- writes -----------------------------------------------------------------
    def seen(self, fingerprint: str, starts_at: str, status: str) -> bool:
        """Record an alert delivery; True when this exact delivery was seen before."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO seen_alerts (fingerprint, starts_at, status) VALUES (?, ?, ?)",
                (fingerprint, starts_at, status),
            )
            return cursor.rowcount == 0

    def open_or_update(self, model: str, attribute: str, alert: dict, now: float | None = None,
                       cooldown_seconds: float = 3600.0, evidence: dict | None = None) -> tuple[dict, bool]:
        """The incident this alert belongs to, and whether it was just opened.

        An alert joins the latest incident of its (model, attribute) while that
        one is unresolved or was updated within the cooldown; else it opens one.
        """
        now = self._clock() if now is None else now
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT * FROM incidents WHERE model = ? AND attribute = ? ORDER BY id DESC LIMIT 1",
                (model, attribute),
            ).fetchone()
            if row is not None and (row["state"] != "resolved" or now - row["updated_at"] < cooldown_seconds):
                alerts = json.loads(row["alerts"]) + [alert]
                self._db.execute("UPDATE incidents SET alerts = ?, updated_at = ? WHERE id = ?",
                                 (json.dumps(alerts), now, row["id"]))
                self._log(row["id"], now, "alert_added", alert)
                return self.get(row["id"], lock=False), False
            cursor = self._db.execute(
                "INSERT INTO incidents (model, attribute, state, opened_at, updated_at, alerts, evidence, job) "
                "VALUES (?, ?, 'open', ?, ?, ?, ?, ?)",
                (model, attribute, now, now, json.dumps([alert]), json.dumps(evidence or {}),
                 json.dumps({"state": "none"})),
            )
            incident_id = cursor.lastrowid
            self._log(incident_id, now, "opened", {"alert": alert})
            return self.get(incident_id, lock=False), True

    def set_state(self, incident_id: int, state: str, detail: dict | None = None, job: dict | None = None) -> dict:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        now = self._clock()
        with self._lock, self._db:
            current = self.get(incident_id, lock=False)
            if job is not None:
                merged = {**current["job"], **job}
                self._db.execute("UPDATE incidents SET job = ? WHERE id = ?", (json.dumps(merged), incident_id))
            self._db.execute("UPDATE incidents SET state = ?, updated_at = ? WHERE id = ?", (state, now, incident_id))
            self._log(incident_id, now, state, detail or {})
            return self.get(incident_id, lock=False)

    def note(self, incident_id: int, change: str, detail: dict) -> None:
        with self._lock, self._db:
            self._log(incident_id, self._clock(), change, detail)

    def _log(self, incident_id: int, at: float, change: str, detail: dict) -> None:
        self._db.execute("INSERT INTO timeline (incident_id, at, change, detail) VALUES (?, ?, ?, ?)",
                         (incident_id, at, change, json.dumps(detail)))

    # -- human commands ---------------------------------------------------------------
    def approve(self, incident_id: int) -> dict:
        incident = self.get(incident_id)
        if incident["state"] != "awaiting_approval":
            raise IncidentError(f"incident {incident_id} is {incident['state']}, not awaiting approval")
        return self.set_state(incident_id, "job_running", {"by": "approve"}, job={"state": "approved"})

    def record_promotion(self, incident_id: int, candidate: str, target: str, by: str) -> dict:
        """A human promoted the incident's candidate (the copy itself is the caller's)."""
        now = self._clock()
        with self._lock, self._db:
            current = self.get(incident_id, lock=False)
            job = {**current["job"], "promoted_to": target, "promoted_by": by, "promoted_at": now}
            self._db.execute("UPDATE incidents SET job = ?, updated_at = ? WHERE id = ?",
                             (json.dumps(job), now, incident_id))
            self._log(incident_id, now, "promoted", {"candidate": candidate, "target": target, "by": by})
            return self.get(incident_id, lock=False)

    def resolve(self, incident_id: int, reason: str = "") -> dict:
        incident = self.get(incident_id)
        if incident["state"] == "resolved":
            raise IncidentError(f"incident {incident_id} is already resolved")
        return self.set_state(incident_id, "resolved", {"reason": reason})

    # -- reads --------------------------------------------------------------------------
    def get(self, incident_id: int, lock: bool = True) -> dict:
        def read():
            row = self._db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise IncidentError(f"no incident {incident_id}")
            timeline = self._db.execute(
                "SELECT at, change, detail FROM timeline WHERE incident_id = ? ORDER BY rowid", (incident_id,)
            ).fetchall()
            return {
                "id": row["id"], "model": row["model"], "attribute": row["attribute"], "state": row["state"],
                "opened_at": row["opened_at"], "updated_at": row["updated_at"],
                "alerts": json.loads(row["alerts"]), "evidence": json.loads(row["evidence"]),
                "job": json.loads(row["job"]),
                "timeline": [{"at": t["at"], "change": t["change"], "detail": json.loads(t["detail"])} for t in timeline],
            }

        if not lock:
            return read()
        with self._lock:
            return read()

    def latest(self, model: str, attribute: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM incidents WHERE model = ? AND attribute = ? ORDER BY id DESC LIMIT 1", (model, attribute)
            ).fetchone()
            return None if row is None else self.get(row["id"], lock=False)

    def list(self, state: str | None = None) -> list[dict]:
        with self._lock:
            query = "SELECT id FROM incidents" + (" WHERE state = ?" if state else "") + " ORDER BY id"
            ids = [r["id"] for r in self._db.execute(query, (state,) if state else ())]
            return [self.get(i, lock=False) for i in ids]
