"""Fine-tune jobs under load and failure: bounded concurrency, a real kill -9, states that end, append-only alerts."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from helpers import REPO, run_cli
from test_trigger import JOB, TOKEN, alert, payload, post

from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.job_command import iso_utc
from fairwatch.alerts.jobs import NO_COMMAND, RESTARTED, JobRunner
from fairwatch.alerts.trigger import Trigger, serve


def wait_until(condition, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_200_pairs_under_auto_run_at_most_max_concurrent_jobs_at_once(tmp_path):
    # Each job waits for the test's go, then records when it ran, so concurrency is
    # measured by the jobs themselves.
    go = tmp_path / "go"
    job = ("sh -c 'while [ ! -e \"$2\" ]; do sleep 0.01; done; s=$(date +%s.%N); sleep 0.02; "
           f"echo \"[$s, $(date +%s.%N)]\" > \"$1\"' job {{report}} {go}")
    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, job, tmp_path / "jobs", max_concurrent_jobs=2)
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    pairs = [alert(model=f"m{i // 20}", attribute=f"a{i % 20}", fingerprint=f"f{i}") for i in range(200)]
    answer = trigger.handle(payload(*pairs), f"Bearer {TOKEN}")
    assert answer.status == 200 and len(answer.body["opened"]) == 200
    queued = store.list("job_queued")
    assert len(queued) == 198 and queued[0]["job"]["state"] == "queued"  # visible as a state
    assert len(store.list("job_running")) == 2
    go.touch()
    assert jobs.wait(600)
    incidents = store.list()
    assert all(i["state"] == "job_succeeded" for i in incidents)
    spans = sorted(i["job"]["report"] for i in incidents)
    most_at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most_at_once <= 2 and jobs.peak_running == 2


def start_trigger_process(db, workdir, job_command, port_file_dir):
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "FAIRWATCH_TRIGGER_TOKEN": TOKEN, "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-m", "fairwatch", "trigger", "serve", "--listen-port", "0", "--db", str(db), "--policy", "auto",
         "--workdir", str(workdir), "--job-command", job_command],
        stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line = process.stderr.readline()  # "trigger listening on http://127.0.0.1:PORT/alerts ..."
    assert "listening on" in line, line + process.stderr.read()
    return process, line.split("http://", 1)[1].split()[0]


def test_a_job_running_when_the_trigger_is_killed_ends_failed_on_restart(tmp_path):
    db, workdir = tmp_path / "i.sqlite", tmp_path / "jobs"
    job = f'{sys.executable} -c "import time; time.sleep(600)"'
    process, address = start_trigger_process(db, workdir, job, tmp_path)
    try:
        assert post(f"http://{address}", payload(alert()))[0] == 200
        store = IncidentStore(db)
        running = wait_until(lambda: store.get(1)["job"].get("pid"), what="the job to start")
        assert store.get(1)["state"] == "job_running"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        process.stderr.close()

    def gone(pid: int) -> bool:  # the job died with its trigger (it was our grandchild: never reaped here)
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(")")[-1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_until(lambda: gone(running), what="the orphaned job to die")
    assert IncidentStore(db).get(1)["state"] == "job_running"  # what the kill left behind
    again, address = start_trigger_process(db, workdir, job, tmp_path)
    try:
        incident = IncidentStore(db).get(1)
        assert incident["state"] == "job_failed" and incident["timeline"][-1]["detail"] == {"error": RESTARTED}
    finally:
        again.terminate()
        again.wait(30)
        again.stderr.close()


def test_queued_jobs_are_queued_again_after_a_restart(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    for i in range(3):
        incident, _ = store.open_or_update("m", f"a{i}", {"labels": {}}, 0.0)
        store.set_state(incident["id"], "job_queued", job={"state": "queued"})
    jobs = JobRunner(store, f'{sys.executable} -c "pass"', tmp_path / "jobs", max_concurrent_jobs=1)
    Trigger(store, TOKEN, jobs=jobs).recover()
    assert jobs.wait(60)
    assert [i["state"] for i in store.list()] == ["job_succeeded"] * 3


def test_approving_without_a_job_command_ends_in_job_skipped(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    trigger = Trigger(store, TOKEN, policy="manual", jobs=JobRunner(store, None, tmp_path / "jobs"))
    server, port = serve(trigger, port=0, poll_seconds=0.1)
    try:
        post(f"http://127.0.0.1:{port}/alerts", payload(alert()))
        approved = run_cli("incidents", "--db", tmp_path / "i.sqlite", "approve", "1")
        assert approved.returncode == 0 and "job_skipped" in approved.stderr
        incident = wait_until(lambda: (i := store.get(1))["state"] == "job_skipped" and i, what="job_skipped")
        assert incident["timeline"][-1]["detail"] == {"why": NO_COMMAND}
    finally:
        server.shutdown()
        server.server_close()


def test_auto_without_a_job_command_ends_in_job_skipped(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    Trigger(store, TOKEN, policy="auto").handle(payload(alert()), f"Bearer {TOKEN}")
    assert store.get(1)["state"] == "job_skipped"


def test_a_full_queue_sends_incidents_back_to_approval(tmp_path):
    go = tmp_path / "go"  # the jobs wait for it, so the first still runs when the states are read
    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, f"sh -c 'while [ ! -e \"$1\" ]; do sleep 0.01; done' job {go}", tmp_path / "jobs",
                     max_concurrent_jobs=1, max_queued_jobs=1)
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    try:
        trigger.handle(payload(*[alert(attribute=f"a{i}", fingerprint=f"f{i}") for i in range(3)]), f"Bearer {TOKEN}")
        assert [i["state"] for i in store.list()] == ["job_running", "job_queued", "awaiting_approval"]
        assert "queue full" in store.get(3)["timeline"][-1]["detail"]["why"]
    finally:
        go.touch()  # the jobs end, even when an assertion failed
    assert jobs.wait(60)


def test_each_alert_joining_an_incident_appends_instead_of_rewriting(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    written: list[str] = []
    store._db.set_trace_callback(written.append)  # the SQL (with its values) each update sends to SQLite

    def cost_of_one_alert(i: int) -> int:
        written.clear()
        store.open_or_update("m", "race", {"labels": {"metric": "demographic_parity_difference"}, "n": i}, float(i))
        return sum(map(len, written))

    first = cost_of_one_alert(1)
    for i in range(2, 1000):
        cost_of_one_alert(i)
    assert cost_of_one_alert(1000) < 2 * first  # constant per alert, not growing with the incident
    incident = store.get(1)
    assert len(incident["alerts"]) == 1000 and incident["alerts"][-1]["n"] == 1000


def test_a_store_written_with_alerts_in_a_json_column_keeps_them(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE incidents (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, attribute TEXT NOT NULL,
            state TEXT NOT NULL, opened_at REAL NOT NULL, updated_at REAL NOT NULL, alerts TEXT NOT NULL,
            evidence TEXT NOT NULL, job TEXT NOT NULL);
    """)
    old.execute("INSERT INTO incidents VALUES (1, 'm', 'race', 'open', 0, 0, ?, '{}', '{}')",
                (json.dumps([{"n": 1}, {"n": 2}]),))
    old.commit()
    old.close()
    store = IncidentStore(path)
    assert store.get(1)["alerts"] == [{"n": 1}, {"n": 2}]
    store.open_or_update("m", "race", {"n": 3}, 1.0)
    assert IncidentStore(path).get(1)["alerts"] == [{"n": 1}, {"n": 2}, {"n": 3}]


@pytest.mark.parametrize("state", ["job_running", "approved", "job_queued"])
def test_a_human_can_still_resolve_from_any_open_state(tmp_path, state):
    store = IncidentStore(tmp_path / "i.sqlite")
    store.open_or_update("m", "race", {}, 0.0)
    store.set_state(1, state)
    assert store.resolve(1, "handled")["state"] == "resolved"


def test_a_job_that_ends_after_a_human_resolved_leaves_the_incident_resolved(tmp_path):
    go = tmp_path / "go"
    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, f"sh -c 'while [ ! -e \"$0\" ]; do sleep 0.01; done' {go}", tmp_path / "jobs",
                     max_concurrent_jobs=1)
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    trigger.handle(payload(alert(), alert(attribute="sex", fingerprint="s")), f"Bearer {TOKEN}")
    assert [i["state"] for i in store.list()] == ["job_running", "job_queued"]
    store.resolve(1, "handled by hand")
    store.resolve(2, "handled by hand")
    go.touch()
    assert jobs.wait(60)
    first, second = store.get(1), store.get(2)
    assert first["state"] == "resolved" and first["job"]["state"] == "succeeded"  # the result is kept
    assert second["state"] == "resolved" and second["job"]["state"] == "queued"  # the queued one never ran
    assert "job_running" not in [entry["change"] for entry in second["timeline"]]


@pytest.mark.parametrize("flag, value", [("--max-concurrent-jobs", "0"), ("--max-queued-jobs", "-1"),
                                         ("--max-connections", "many"), ("--listen-port", "70000"),
                                         ("--listen-port", "-1"), ("--cooldown-seconds", "nan"),
                                         ("--cooldown-seconds", "-5"), ("--window-lookback-seconds", "1e300"),
                                         ("--window-lookback-seconds", "inf")])
def test_bounds_on_the_command_line_are_checked_in_one_line(flag, value):
    result = run_cli("trigger", "serve", flag, value)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and flag in result.stderr


def test_a_kafka_table_is_checked_against_the_machine_only_when_a_job_reads_kafka(tmp_path, capsys):
    """A missing certificate in [kafka] stops a trigger whose jobs export {data}, not one whose jobs do not."""
    config = tmp_path / "c.toml"
    config.write_text("[kafka]\nsecurity_protocol = 'SSL'\nssl_cafile = '/no/such/ca.pem'\n")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "FAIRWATCH_TRIGGER_TOKEN": TOKEN, "PYTHONPATH": path}
    serve = [sys.executable, "-m", "fairwatch", "trigger", "serve", "--listen-port", "0", "--config", str(config),
             "--db", str(tmp_path / "i.sqlite"), "--workdir", str(tmp_path / "jobs")]
    process = subprocess.Popen([*serve, "--job-command", "true {model}"], stderr=subprocess.PIPE, text=True,
                               env=env, cwd=REPO)
    try:
        line = process.stderr.readline()
        assert "listening on" in line, line + process.stderr.read()
    finally:
        process.kill()
        process.wait(30)
        process.stderr.close()
    refused = subprocess.run([*serve, "--job-command", "true {data}"], stderr=subprocess.PIPE, text=True, env=env,
                             cwd=REPO, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "[kafka]: --ssl-cafile /no/such/ca.pem: no such file" in refused.stderr


def test_an_alert_starting_at_gos_zero_time_does_not_cost_its_delivery(tmp_path):
    """Alertmanager's "unset" time as a startsAt: its window starts from the opening, and the delivery's
    other alerts are handled with it (it was a 500, the incident stuck open, the others lost)."""
    store = IncidentStore(tmp_path / "i.sqlite")
    writes_from = f'{sys.executable} -c "import json,sys; json.dump(sys.argv[1], open(sys.argv[2], \'w\'))" ' \
                  "{from} {report}"
    jobs = JobRunner(store, writes_from, tmp_path / "jobs")
    server, port = serve(Trigger(store, TOKEN, policy="auto", jobs=jobs), port=0, poll_seconds=0.2)
    try:
        status, answer = post(f"http://127.0.0.1:{port}/alerts",
                              payload(alert(attribute="race", starts="0001-01-01T00:00:00Z"), alert(attribute="sex")))
        assert status == 200 and len(answer["opened"]) == 2
        assert jobs.wait(60)
    finally:
        server.shutdown()
        server.server_close()
    zero, other = store.list()
    assert zero["state"] == other["state"] == "job_succeeded"
    assert zero["job"]["report"] == iso_utc(zero["opened_at"] - jobs.lookback_seconds)
    assert other["job"]["report"] == "2026-11-22T01:00:00Z"


def test_a_job_that_cannot_be_built_fails_its_incident_and_the_delivery_goes_on(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    # A clock past year 9999: no ISO-8601 {to}. Whatever breaks one job's start stays with that incident.
    jobs = JobRunner(store, JOB, tmp_path / "jobs", clock=lambda: 1e12)
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    answer = trigger.handle(payload(alert(attribute="race"), alert(attribute="sex")), f"Bearer {TOKEN}")
    assert answer.status == 200 and len(answer.body["opened"]) == 2
    for incident in store.list():
        assert incident["state"] == "job_failed" and incident["job"]["state"] == "failed"
        error = incident["job"]["error"]
        assert error.startswith("cannot start the job: ") and "year" in error and "\n" not in error
    assert trigger.counts["jobs_started"] == 0 and jobs.wait(5)


def test_a_thread_the_system_refuses_fails_its_job_and_gives_the_slot_back(tmp_path, monkeypatch):
    """``can't start new thread`` for one job: that incident's job fails in one line, the delivery goes on, and
    the slot it had taken is free again (it leaked: every later job queued behind a job that never ran)."""
    refused: list[str] = []
    real_start = threading.Thread.start

    def start_once_refused(thread):
        if thread.name.startswith("fine-tune-") and not refused:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_once_refused)
    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, JOB, tmp_path / "jobs", max_concurrent_jobs=1)
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    answer = trigger.handle(payload(alert(attribute="race"), alert(attribute="sex")), f"Bearer {TOKEN}")
    assert refused == ["fine-tune-1"]
    assert answer.status == 200 and len(answer.body["opened"]) == 2, answer.body
    failed = store.get(1)
    assert failed["state"] == "job_failed" and failed["job"]["state"] == "failed"
    assert failed["job"]["error"] == "cannot start the job: can't start new thread"
    assert store.get(2)["state"] == "job_running"  # the slot was free: not queued behind a job that never ran
    assert trigger.counts["jobs_started"] == 1
    assert jobs.wait(60) and store.get(2)["state"] == "job_succeeded"
    assert not jobs.start(store.get(1))  # a failed job stays failed; it does not take the slot again
    assert jobs.wait(0) and store.get(1)["state"] == "job_failed"


@pytest.mark.parametrize("lookback", [float("nan"), float("inf"), 1e300, -1.0])
def test_a_lookback_no_window_can_hold_is_refused_at_construction(tmp_path, lookback):
    with pytest.raises(ValueError, match="lookback"):
        JobRunner(IncidentStore(tmp_path / "i.sqlite"), JOB, tmp_path / "jobs", lookback_seconds=lookback)


@pytest.mark.parametrize("args, words", [
    (("trigger", "serve", "--db", "{dir}"), "is a directory"),
    (("trigger", "serve", "--db", "{notdb}"), "not an SQLite database"),
    (("incidents", "--db", "{dir}", "list"), "is a directory"),
    (("incidents", "--db", "{notdb}", "list"), "not an SQLite database"),
    (("trigger", "serve", "--token-file", "{binary}"), "not UTF-8 text"),
    (("incidents", "--db", "{foreign}", "list"), "an SQLite database of another application (tables: users)"),
])
def test_a_store_or_token_file_that_is_not_one_is_one_line_naming_it(tmp_path, args, words):
    files = {"dir": tmp_path / "a-directory", "notdb": tmp_path / "notes.sqlite", "binary": tmp_path / "token.bin",
             "token": tmp_path / "token", "foreign": tmp_path / "app.db"}
    files["dir"].mkdir()
    with sqlite3.connect(files["foreign"]) as foreign:
        foreign.execute("CREATE TABLE users (id INTEGER)")
    foreign.close()
    files["notdb"].write_text("not a database, only some words that fill more than a header's hundred bytes " * 3)
    files["binary"].write_bytes(b"\xff\xfe\x00s3cret")
    files["token"].write_text(TOKEN)
    argv = [arg.format(**files) for arg in args]
    if argv[:2] == ["trigger", "serve"]:
        argv += ["--listen-port", "0", "--workdir", str(tmp_path / "jobs")]
        if "--token-file" not in argv:
            argv += ["--token-file", str(files["token"])]
        if "--db" not in argv:
            argv += ["--db", str(tmp_path / "i.sqlite")]
    result = run_cli(*argv, timeout=60)
    named = next(str(files[key]) for key in files if "{" + key + "}" in args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr and named in result.stderr
