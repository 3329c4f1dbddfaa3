"""The shadow through real parts: a replay with a tiny real candidate serves /metrics, a real Prometheus scrapes
it, and `fairwatch incidents shadow --prometheus-url` records production and candidate on the same events."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.parse

import pytest
import yaml
from helpers import run_cli
from test_alert_chain import Processes, free_port, get_json, wait_until

from fairwatch.alerts.incidents import IncidentStore

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
METRIC = "demographic_parity_difference"
PAIRS = [("he is kind", "she is kind"), ("my son went home", "my daughter went home"),
         ("the man saw his friend", "the woman saw her friend"), ("my father wrote a book", "my mother wrote a book")]


@pytest.fixture
def processes(tmp_path):
    running = Processes(tmp_path)
    yield running
    running.stop()


def _stream(path, repeat: int = 10):
    """Production decides by gender: every man's text positive, every woman's negative (40 events each)."""
    lines, n = [], 0
    for _ in range(repeat):
        for male, female in PAIRS:
            for text, sex, prediction in ((male, "male", 1), (female, "female", 0)):
                lines.append(json.dumps({"event_id": f"e{n}", "ts": 1_795_000_000 + n, "model": "toxic",
                                         "prediction": prediction, "score": 0.9 if prediction else 0.1,
                                         "text": text, "label": int(n % 3 == 0), "groups": {"sex": sex}}))
                n += 1
    lines.append(json.dumps({"event_id": "no-text", "model": "toxic", "prediction": 1, "groups": {"sex": "male"}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _incident(store: IncidentStore, model: str, candidate) -> int:  # noqa: ANN001
    alert = {"status": "firing", "labels": {"alertname": "FairnessGapBreach", "model": model, "attribute": "sex",
                                            "metric": METRIC},
             "annotations": {}, "startsAt": "2026-11-23T01:00:00Z", "fingerprint": model}
    incident, _ = store.open_or_update(model, "sex", alert, 1_795_000_000.0, 3600)
    store.set_state(incident["id"], "job_succeeded", job={"state": "succeeded", "candidate_dir": str(candidate),
                                                         "report": {"decision": {"promote": True, "reasons": []}}})
    return incident["id"]


def test_incidents_shadow_reads_candidate_and_baseline_from_prometheus(tmp_path, processes) -> None:  # noqa: ANN001
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (`make test` installs it)")
    pytest.importorskip("torch")
    from scorer_fixtures import build_tiny_model

    candidate = build_tiny_model(tmp_path / "candidate", "ignores")  # blind to the gender terms
    metrics_port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "fairwatch", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    processes.start("replay", [sys.executable, "-m", "fairwatch", "replay", str(_stream(tmp_path / "events.jsonl")),
                               "--serve", str(metrics_port), "--group-col", "sex", "--shadow-candidate", str(candidate),
                               "--shadow-model", "toxic", "--shadow-threshold", "0.6", "--scorer-device", "cpu"])
    processes.start("prometheus", [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}"])
    prometheus = f"http://127.0.0.1:{prom_port}"
    query = urllib.parse.quote('fairwatch_gap{model="toxic:candidate",window="all"}')
    wait_until(lambda: (get_json(f"{prometheus}/api/v1/query?query={query}") or {}).get("data", {}).get("result"),
               90, "Prometheus to scrape the candidate's gaps", processes)

    db = tmp_path / "incidents.sqlite"
    store = IncidentStore(db)
    incident_id = _incident(store, "toxic", candidate)
    shadow = run_cli("incidents", "--db", db, "shadow", str(incident_id), "--prometheus-url", prometheus,
                     "--min-events", "50")
    assert shadow.returncode == 0, shadow.stderr + processes.logs()
    # 80 events with text; the one without text counts for toxic only, never for the shadow.
    assert shadow.stdout.strip() == (f"incident {incident_id}: candidate on live traffic: {METRIC} 0.000 vs "
                                     "production 1.000 on the same 80 events: no worse than production")
    assert store.get(incident_id)["job"]["shadow"]["predictions"]["candidate"] == {"male": 40, "female": 40}

    wrong = _incident(store, "spam", candidate)
    refused = run_cli("incidents", "--db", db, "shadow", str(wrong), "--prometheus-url", prometheus)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "Prometheus has no predictions of spam:baseline for attribute 'sex'" in line
