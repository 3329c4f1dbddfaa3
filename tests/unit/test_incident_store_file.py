"""The file given as the incident store: another application's SQLite database is refused, ours reopens."""

from __future__ import annotations

import sqlite3

import pytest

from fairwatch.alerts.incidents import IncidentError, IncidentStore


def tables(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


@pytest.mark.parametrize("schema, named", [
    ("CREATE TABLE users (id INTEGER, name TEXT); CREATE TABLE orders (id INTEGER, total REAL);", "orders, users"),
    # A table of our name but not our columns is still another application's.
    ("CREATE TABLE incidents (ticket TEXT, owner TEXT);", "incidents"),
])
def test_another_applications_database_is_refused_in_one_line_and_left_as_it_was(tmp_path, schema, named):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.executescript(schema)
    db.close()
    before = path.read_bytes()
    with pytest.raises(IncidentError) as refused:
        IncidentStore(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and f"another application (tables: {named})" in message
    assert path.read_bytes() == before  # no tables of ours, not even the WAL flag in its header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_a_long_list_of_foreign_tables_is_cut_short(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.executescript("".join(f"CREATE TABLE t{i} (x);" for i in range(40)))
    db.close()
    with pytest.raises(IncidentError, match=r"tables: t0, t1, t10, t11, t12, \.\.\. \(40 in all\)\)") as refused:
        IncidentStore(path)
    assert "\n" not in str(refused.value)


def test_an_empty_file_becomes_a_store_and_our_own_store_reopens(tmp_path):
    path = tmp_path / "i.sqlite"
    path.touch()  # e.g. made by an installer: an empty file is an empty database
    store = IncidentStore(path)
    incident, _ = store.open_or_update("m", "race", {"n": 1}, 0.0)
    store.set_state(incident["id"], "job_running", job={"state": "running"})
    ours = tables(path)
    reopened = IncidentStore(path)
    assert reopened.get(incident["id"])["state"] == "job_running" and reopened.get(1)["alerts"] == [{"n": 1}]
    assert tables(path) == ours


def test_our_first_schema_with_only_its_incidents_table_still_opens(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE incidents (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,
                attribute TEXT NOT NULL, state TEXT NOT NULL, opened_at REAL NOT NULL, updated_at REAL NOT NULL,
                alerts TEXT NOT NULL, evidence TEXT NOT NULL, job TEXT NOT NULL);
            INSERT INTO incidents VALUES (1, 'm', 'race', 'open', 0, 0, '[{"n": 1}]', '{}', '{}');
        """)
    db.close()
    assert IncidentStore(path).get(1)["alerts"] == [{"n": 1}]
    assert {"timeline", "seen_alerts", "incident_alerts"} <= set(tables(path))
