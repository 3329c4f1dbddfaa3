"""The job's window: {data}, {from} and {to} reach a real subprocess job; unknown placeholders are refused."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import pytest
from helpers import run_cli
from test_trigger import TOKEN, alert, payload

from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.job_command import JobCommand
from fairwatch.alerts.jobs import JobRunner
from fairwatch.alerts.trigger import Trigger

ONSET = "2026-11-23T01:00:00Z"
ACCEPTED = datetime(2026, 11, 23, 2, 30, tzinfo=timezone.utc).timestamp()
LOOKBACK_SECONDS = 3600.0
# The job of these tests: copies what it was given into its report.
JOB_SCRIPT = """
import json, sys
data, start, end, report = sys.argv[1:]
rows = [json.loads(line) for line in open(data)]
json.dump({"rows": rows, "from": start, "to": end}, open(report, "w"))
"""


def window_rows(model: str, start_seconds: float, end_seconds: float) -> list[dict]:
    """Stands for the rows a window export finds (Kafka's side is tested in tests/integration)."""
    return [{"event_id": f"{model}-{i}", "text": f"text {i}", "label": i % 2, "groups": {"sex": "F"},
             "ts": start_seconds + i} for i in range(3)]


def write_window(model, start_seconds, end_seconds, out):
    rows = window_rows(model, start_seconds, end_seconds)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return [f"exported {len(rows)} labeled events of {model}"], {"written": len(rows)}


def no_events(model, start_seconds, end_seconds, out):
    raise ValueError(f"no prediction of model {model!r} in the window")


def run_one_job(tmp_path, window_export, command: str):
    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, command, tmp_path / "jobs", window_export=window_export,
                     lookback_seconds=LOOKBACK_SECONDS, clock=lambda: ACCEPTED)
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    assert trigger.handle(payload(alert(starts=ONSET)), f"Bearer {TOKEN}").status == 200
    assert jobs.wait(120)
    return store.get(1)


def test_the_job_reads_the_window_the_trigger_exported_for_it(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT)

    incident = run_one_job(tmp_path, write_window, f"{sys.executable} {script} {{data}} {{from}} {{to}} {{report}}")

    assert incident["state"] == "job_succeeded", incident["timeline"]
    report = incident["job"]["report"]
    onset = datetime.fromisoformat(ONSET.replace("Z", "+00:00")).timestamp()
    assert report["rows"] == window_rows("credit", onset - LOOKBACK_SECONDS, ACCEPTED)
    assert (report["from"], report["to"]) == ("2026-11-23T00:00:00Z", "2026-11-23T02:30:00Z")
    assert incident["job"]["export"] == {"written": 3}
    assert (tmp_path / "jobs" / "incident-1" / "job.log").read_text().startswith("exported 3 labeled events")


def test_a_window_that_cannot_be_exported_fails_the_job_with_the_reason_before_it_runs(tmp_path):
    ran = tmp_path / "ran"
    incident = run_one_job(tmp_path, no_events, f"{sys.executable} -c \"open('{ran}', 'w')\" {{data}}")

    assert incident["state"] == "job_failed"
    assert incident["job"]["error"] == "window export: no prediction of model 'credit' in the window"
    assert not ran.exists()


def test_a_command_without_data_exports_nothing(tmp_path):
    def must_not_export(*args):
        raise AssertionError("exported without {data}")

    incident = run_one_job(tmp_path, must_not_export, f"{sys.executable} -c \"print('hello')\" {{from}}")
    assert incident["state"] == "job_succeeded" and "export" not in incident["job"]


@pytest.mark.parametrize("command", ["train {incidnet}", "train {data} {window}", "train --from={From}"])
def test_unknown_placeholders_are_refused(command):
    with pytest.raises(ValueError, match="unknown placeholder"):
        JobCommand(command)


def test_shell_braces_are_not_placeholders():
    command = JobCommand("sh -c 'echo ${HOME} | awk \"{print $1}\"; train {data}'")
    assert command.fill({"data": "w.jsonl"})[-1] == "echo ${HOME} | awk \"{print $1}\"; train w.jsonl"


def test_trigger_serve_refuses_an_unknown_placeholder_in_one_line_and_creates_no_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRWATCH_TRIGGER_TOKEN", TOKEN)
    db = tmp_path / "i.sqlite"
    result = run_cli("trigger", "serve", "--db", str(db), "--job-command", "train {dta}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--job-command: unknown placeholder {dta} (known: {incident}" in lines[0], lines
    assert not db.exists()
