"""The incident record: SQLite, one row per incident, every state change kept with its time.

An incident is opened by the first fairness alert for a (model, attribute)
and updated by the ones that follow while it is unresolved. Once a human has
resolved it, the next breach opens a new incident that names the one it
follows (the resolution was a claim that the harm had stopped; new evidence
is a new incident, and the old record stays as it was closed). It records
the alerts (appended to their own table, so a long incident costs the same
per alert as a new one), the evidence gathered when it opened (the gap with
its bounds, the group rates), the fine-tune job's state and report, and a
timeline of every change. SQLite because it needs no server and survives
restarts; the trigger is the main writer, behind one lock, and the CLI's
state changes are compare-and-set, so the two never overwrite each other.

>>> store = IncidentStore(":memory:", clock=lambda: 15.0)  # the resolution below happens at 15 s
>>> incident, created = store.open_or_update("m", "race", {"metric": "demographic_parity_difference"}, 0.0, 3600)
>>> created, incident["state"]
(True, 'open')
>>> store.open_or_update("m", "race", {"metric": "equalized_odds_difference"}, 10.0, 3600)[1]
False
>>> _ = store.resolve(incident["id"], "fixed")
>>> reopened, created = store.open_or_update("m", "race", {"metric": "equalized_odds_difference"}, 20.0, 3600)
>>> created, reopened["id"], reopened["timeline"][0]["detail"]["follows"]
(True, 2, {'id': 1, 'resolved_seconds_ago': 5.0})
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from fairwatch.monitor.errors import FairwatchError

# Every state but ``resolved`` ends without a human: ``approved`` and
# ``job_queued`` become ``job_running`` (or ``job_skipped`` when the trigger has
# no job command), ``job_running`` becomes ``job_succeeded`` or ``job_failed``
# (also when the trigger restarts under a running job).
STATES = ("open", "awaiting_approval", "approved", "job_queued", "job_running", "job_succeeded", "job_failed",
          "job_skipped", "resolved")

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    attribute TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    alerts TEXT NOT NULL,          -- legacy JSON list of alerts; now '[]', alerts live in incident_alerts
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
CREATE TABLE IF NOT EXISTS incident_alerts (
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    alert TEXT NOT NULL            -- JSON: labels, annotations, startsAt, fingerprint
);
CREATE INDEX IF NOT EXISTS incident_alerts_by_incident ON incident_alerts(incident_id);
CREATE INDEX IF NOT EXISTS timeline_by_incident ON timeline(incident_id);
CREATE INDEX IF NOT EXISTS incidents_by_state ON incidents(state);
CREATE INDEX IF NOT EXISTS incidents_by_key ON incidents(model, attribute, updated_at);
"""

# What makes a database an incident store: the columns of ``incidents``, the same in every version of the schema.
INCIDENT_COLUMNS = frozenset({"id", "model", "attribute", "state", "opened_at", "updated_at", "alerts", "evidence",
                              "job"})
FOREIGN_TABLES_SHOWN = 5


def incident_id(text: str) -> int:
    """argparse type: an incident's id, a positive integer SQLite can hold.

    >>> incident_id("12")
    12
    """
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an incident id (a whole number)") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text} is not an incident id (they count from 1)")
    return value


class IncidentError(FairwatchError, ValueError):
    """A request the store cannot honour (unknown id, wrong state), worded for one line."""


class IncidentStore:
    def __init__(self, path: str | Path, clock=time.time) -> None:
        self._db = _open(path)
        self._lock = threading.Lock()
        self._clock = clock
        self._move_legacy_alerts()

    def _move_legacy_alerts(self) -> None:
        """Stores written before alerts had their own table keep them in a JSON column: move them once."""
        with self._write():
            self._db.execute("INSERT INTO incident_alerts (incident_id, alert) "
                             "SELECT incidents.id, value FROM incidents, json_each(incidents.alerts) "
                             "WHERE incidents.alerts != '[]' ORDER BY incidents.id, json_each.key")
            self._db.execute("UPDATE incidents SET alerts = '[]' WHERE alerts != '[]'")

    @contextlib.contextmanager
    def _write(self):
        """One write transaction that holds the store from its first read: the trigger and a human's CLI are two
        connections, and a check (``expect``) or a read-merge-write must not let the other write in between.
        ``BEGIN IMMEDIATE`` takes SQLite's write lock at once (the other connection waits out its busy timeout);
        the thread lock orders this connection's own threads."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writes -----------------------------------------------------------------
    def seen(self, fingerprint: str, starts_at: str, status: str) -> bool:
        """Record an alert delivery; True when this exact delivery was seen before."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO seen_alerts (fingerprint, starts_at, status) VALUES (?, ?, ?)",
                (fingerprint, starts_at, status),
            )
            return cursor.rowcount == 0

    def unsee(self, fingerprint: str, starts_at: str, status: str) -> None:
        """Forget a delivery recorded by ``seen`` whose handling failed, so that its next delivery is handled."""
        with self._lock:
            self._db.execute("DELETE FROM seen_alerts WHERE fingerprint = ? AND starts_at = ? AND status = ?",
                             (fingerprint, starts_at, status))

    def open_or_update(self, model: str, attribute: str, alert: dict, now: float | None = None,
                       cooldown_seconds: float = 3600.0, evidence: dict | None = None) -> tuple[dict, bool]:
        """The incident this alert belongs to, and whether it was just opened.

        An alert joins the latest incident of its (model, attribute) while that
        one is unresolved; else it opens one. An incident opened after a
        resolution names it in its first timeline entry (``follows``: id and
        seconds since it was resolved), so that a caller can treat a breach
        within ``cooldown_seconds`` of a resolution as a relapse. The incident
        returned for a joined alert is its row without the ``alerts`` and
        ``timeline`` lists (they grow with every alert; ``get`` reads them).
        """
        now = self._clock() if now is None else now
        with self._write():
            row = self._db.execute(
                "SELECT * FROM incidents WHERE model = ? AND attribute = ? ORDER BY id DESC LIMIT 1",
                (model, attribute),
            ).fetchone()
            if row is not None and row["state"] != "resolved":
                self._db.execute("INSERT INTO incident_alerts (incident_id, alert) VALUES (?, ?)",
                                 (row["id"], json.dumps(alert)))
                self._db.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", (now, row["id"]))
                self._log(row["id"], now, "alert_added", alert)
                return {**_row(row), "updated_at": now}, False
            cursor = self._db.execute(
                "INSERT INTO incidents (model, attribute, state, opened_at, updated_at, alerts, evidence, job) "
                "VALUES (?, ?, 'open', ?, ?, '[]', ?, ?)",
                (model, attribute, now, now, json.dumps(evidence or {}), json.dumps({"state": "none"})),
            )
            incident_id = cursor.lastrowid
            self._db.execute("INSERT INTO incident_alerts (incident_id, alert) VALUES (?, ?)",
                             (incident_id, json.dumps(alert)))
            opened: dict = {"alert": alert}
            if row is not None:
                opened["follows"] = {"id": row["id"], "resolved_seconds_ago": now - row["updated_at"]}
            self._log(incident_id, now, "opened", opened)
            return self.get(incident_id, lock=False), True

    def set_state(self, incident_id: int, state: str, detail: dict | None = None, job: dict | None = None,
                  expect: tuple[str, ...] | None = None) -> dict:
        """Move an incident to ``state``; with ``expect``, only from one of those states (else IncidentError)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        now = self._clock()
        with self._write():
            current = self._db.execute("SELECT state FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if current is None:
                raise IncidentError(f"no incident {incident_id}")
            if expect is not None and current["state"] not in expect:
                raise IncidentError(f"incident {incident_id} is {current['state']}, not {' or '.join(expect)}")
            if job is not None:
                self._merge_job(incident_id, job, now)
            self._db.execute("UPDATE incidents SET state = ?, updated_at = ? WHERE id = ?", (state, now, incident_id))
            self._log(incident_id, now, state, detail or {})
            return self.get(incident_id, lock=False)

    def note(self, incident_id: int, change: str, detail: dict) -> None:
        with self._write():
            self._log(incident_id, self._clock(), change, detail)

    def _log(self, incident_id: int, at: float, change: str, detail: dict) -> None:
        self._db.execute("INSERT INTO timeline (incident_id, at, change, detail) VALUES (?, ?, ?, ?)",
                         (incident_id, at, change, json.dumps(detail)))

    # -- human commands ---------------------------------------------------------------
    def approve(self, incident_id: int) -> dict:
        """Let the job start: the trigger picks ``approved`` incidents up on its next poll."""
        try:
            return self.set_state(incident_id, "approved", {"by": "approve"}, job={"state": "approved"},
                                  expect=("awaiting_approval",))
        except IncidentError as exc:
            raise IncidentError(f"{exc}: it is not awaiting approval") from None

    def merge_job(self, incident_id: int, fields: dict) -> None:
        """Add facts to the job record (its pid...) without a state change or a timeline entry."""
        with self._write():
            self._merge_job(incident_id, fields, self._clock())

    def _merge_job(self, incident_id: int, fields: dict, now: float) -> None:
        row = self._db.execute("SELECT job FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise IncidentError(f"no incident {incident_id}")
        self._db.execute("UPDATE incidents SET job = ?, updated_at = ? WHERE id = ?",
                         (json.dumps({**json.loads(row["job"]), **fields}), now, incident_id))

    def record_promotion(self, incident_id: int, candidate: str, target: str, by: str) -> dict:
        """A human promoted the incident's candidate (the copy itself is the caller's)."""
        now = self._clock()
        with self._write():
            self._merge_job(incident_id, {"promoted_to": target, "promoted_by": by, "promoted_at": now}, now)
            self._log(incident_id, now, "promoted", {"candidate": candidate, "target": target, "by": by})
            return self.get(incident_id, lock=False)

    def resolve(self, incident_id: int, reason: str = "") -> dict:
        unresolved = tuple(state for state in STATES if state != "resolved")
        try:
            return self.set_state(incident_id, "resolved", {"reason": reason}, expect=unresolved)
        except IncidentError as exc:
            if "no incident" in str(exc):
                raise
            raise IncidentError(f"incident {incident_id} is already resolved") from None

    # -- reads --------------------------------------------------------------------------
    def get(self, incident_id: int, lock: bool = True) -> dict:
        def read():
            row = self._db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise IncidentError(f"no incident {incident_id}")
            alerts = self._db.execute(
                "SELECT alert FROM incident_alerts WHERE incident_id = ? ORDER BY rowid", (incident_id,)
            ).fetchall()
            timeline = self._db.execute(
                "SELECT at, change, detail FROM timeline WHERE incident_id = ? ORDER BY rowid", (incident_id,)
            ).fetchall()
            return {
                **_row(row), "alerts": [json.loads(a["alert"]) for a in alerts],
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

    def count_by_state(self) -> dict[str, int]:
        """Incidents per state (every state, zeros included), without reading any incident."""
        with self._lock:
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM incidents GROUP BY state").fetchall())
        return {state: counts.get(state, 0) for state in STATES}

    def list(self, state: str | None = None) -> list[dict]:
        with self._lock:
            query = "SELECT id FROM incidents" + (" WHERE state = ?" if state else "") + " ORDER BY id"
            ids = [r["id"] for r in self._db.execute(query, (state,) if state else ())]
            return [self.get(i, lock=False) for i in ids]


def _open(path: str | Path) -> sqlite3.Connection:
    """The store's connection, its schema in place; a path that holds no store is an IncidentError naming it
    (sqlite3's own errors name neither the file nor what is wrong with it)."""
    db = None
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        # Checked before anything writes (WAL mode is a write to the header): another application's file stays as
        # it was, rather than silently gaining our tables.
        foreign = _foreign_tables(db)
        if foreign:
            db.close()
            shown = ", ".join(name if name.isprintable() else repr(name) for name in foreign[:FOREIGN_TABLES_SHOWN])
            more = f", ... ({len(foreign)} in all)" if len(foreign) > FOREIGN_TABLES_SHOWN else ""
            raise IncidentError(f"cannot open the incident store {path}: it is an SQLite database of another "
                                f"application (tables: {shown}{more}); give the incident store a file of its own")
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        return db
    except (OSError, sqlite3.Error) as exc:
        if db is not None:
            db.close()
        if Path(path).is_dir():
            why = "it is a directory"
        elif isinstance(exc, (FileExistsError, NotADirectoryError)):  # mkdir's own words name neither
            why = "part of its path is a file, not a directory"
        elif isinstance(exc, OSError):
            why = exc.strerror or type(exc).__name__
        elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            why = "not an SQLite database"
        else:
            why = str(exc)
        raise IncidentError(f"cannot open the incident store {path}: {why}") from None


def _foreign_tables(db: sqlite3.Connection) -> list[str]:
    """The tables of a database that is not an incident store (sorted); [] for a new, empty one or a store of ours.

    Ours, of any version, is one with our ``incidents`` table: it came first and its columns have not changed
    since. A table of that name with other columns is another application's."""
    tables = [row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
    if not tables:
        return []
    if "incidents" in (name.lower() for name in tables):  # SQLite's names are case-insensitive
        columns = {row[1].lower() for row in db.execute("PRAGMA table_info(incidents)")}
        if INCIDENT_COLUMNS <= columns:
            return []
    return tables


def _row(row: sqlite3.Row) -> dict:
    """An incident's own fields, without its alerts and timeline."""
    return {
        "id": row["id"], "model": row["model"], "attribute": row["attribute"], "state": row["state"],
        "opened_at": row["opened_at"], "updated_at": row["updated_at"],
        "evidence": json.loads(row["evidence"]), "job": json.loads(row["job"]),
    }
