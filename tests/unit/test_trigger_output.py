"""What the on-call reads and what a config says: terminal-safe listings, pages that survive bad
timestamps, durations Prometheus accepts or one clear line."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from helpers import run_cli

from fairwatch.alerts.incident_page import render_incident_html
from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.rules import AlertSettings, render


def test_incidents_list_and_show_escape_terminal_control_characters(tmp_path):
    # Stored by an older trigger or written straight to the store: the CLI must not pass them on.
    store = IncidentStore(tmp_path / "i.sqlite")
    hostile = "credit\x1b[2J\x1b]0;pwned\x07\u202e"
    store.open_or_update(hostile, "race", {"status": "firing", "labels": {"metric": "dp\x1b[31m"},
                                           "annotations": {"summary": "gap \x1b[1m"}}, 0.0)
    listed = run_cli("incidents", "--db", tmp_path / "i.sqlite", "list")
    shown = run_cli("incidents", "--db", tmp_path / "i.sqlite", "show", "1")
    for result in (listed, shown):
        assert result.returncode == 0, result.stderr
        assert not any(ch in result.stdout for ch in "\x1b\x07\u202e")
        assert "credit\\x1b[2J" in result.stdout
    assert "dp\\x1b[31m" in listed.stdout and "gap \\x1b[1m" in shown.stdout


@pytest.mark.parametrize("bad_time", [1e20, -5.0, float("inf"), "soon"])
def test_the_incident_page_skips_evidence_timestamps_that_are_not_times(tmp_path, bad_time):
    labels = {"model": "m", "attribute": "race", "metric": "demographic_parity_difference"}
    good = [[1_795_000_000.0 + 5 * i, 0.1 * i] for i in range(4)]
    evidence = {"series": {"gap": [{"labels": labels, "points": good + [[bad_time, 0.5]]}],
                           "threshold": [{"labels": labels, "points": [[bad_time, 0.1]]}]}}
    store = IncidentStore(tmp_path / "i.sqlite")
    incident, _ = store.open_or_update("m", "race", {"labels": labels}, 1_795_000_000.0, evidence=evidence)
    page = render_incident_html(store.get(incident["id"]))
    assert "2 evidence sample(s) with a timestamp outside 1970-9999 were left out" in page
    assert page.count("<polyline") >= 1


def test_the_page_shows_an_invalid_incident_time_instead_of_crashing(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    incident, _ = store.open_or_update("m", "race", {"labels": {}}, 1e20)
    assert "invalid time" in render_incident_html(store.get(incident["id"]))


@pytest.mark.parametrize("key, toml_value, shown", [
    # Durations Prometheus rejects (they would render rules promtool refuses).
    ("breach_for", '"5 minutes"', "'5 minutes'"), ("drift_window", '"0m"', "'0m'"), ("no_events_for", '"10"', "'10'"),
    ("breach_for", '"1m5h"', "'1m5h'"),
    # Knobs that would make an alert fire always or never.
    ("invalid_ratio", "-1", "-1"), ("invalid_ratio", "7.0", "7.0"), ("invalid_ratio", "nan", "nan"),
    ("consumer_lag_events", "0", "0"),
    # Moved: the refusal gap is a breach decision now, its threshold under [thresholds].
    ("refusal_gap", "0.1", "[thresholds] refusal_rate_difference"),
])
def test_alert_settings_that_cannot_work_fail_at_config_load_in_one_line(tmp_path, key, toml_value, shown):
    config = tmp_path / "fairwatch.toml"
    config.write_text(f"[alerts]\n{key} = {toml_value}\n")
    result = run_cli("rules", "render", "--config", config, "-o", tmp_path / "rules.yml")
    assert result.returncode == 2 and not (tmp_path / "rules.yml").exists()
    (line,) = result.stderr.strip().splitlines()
    assert key in line and shown in line


@pytest.mark.parametrize("duration", ["90s", "1h30m", "2d", "500ms", "1w"])
def test_durations_we_accept_are_durations_promtool_accepts(tmp_path, duration):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make test` installs Debian's prometheus package"
    rules = tmp_path / "rules.yml"
    rules.write_text(render(settings=AlertSettings(breach_for=duration, drift_window=duration,
                                                   no_events_for=duration)))
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    breach = next(r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]
                  if r.get("alert") == "FairnessGapBreach")
    assert breach["for"] == duration
