"""The incident loop as it runs in production, every part real and no file handed to the job.

Tansu <- `fairwatch produce` (text predictions, their outcomes later) -> `fairwatch join` -> the labeled topic
-> `fairwatch run` (the counterfactual scorer on a tiny model) -> Prometheus with the repo's rules ->
Alertmanager -> `fairwatch trigger serve`, whose job command names {data}: the trigger exports the incident's
window from the labeled topic itself and runs `fairwatch finetune` on CPU -> a candidate. The operator then
attaches it to the running worker (`incidents attach`, read by the worker's `--shadow-control` before its next
batch: no restart), new live traffic arrives, `incidents shadow` records the candidate beside production from
Prometheus, the incident page shows both, and the human promotes (the gates' verdict asserted, --force when
they refuse).

The stream is test_alert_chain.py's (chain.biased_events): after event SHIFT_AT every "man" is predicted
toxic; the decisions restart every 1,000 events here so that 3,000 breach.
"""

from __future__ import annotations

import html as html_module
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chain import (Processes, biased_events, breach_exported, firing_breaches, free_port, processes, query_value,
                   require_binaries, start_prometheus_and_alertmanager, wait_until, write_jsonl)
from conftest import JoinApp, Worker, select, total
from helpers import REPO

from fairwatch.alerts.incidents import IncidentStore
from fairwatch.monitor import metric_names as names
from fairwatch.consumers import metric_names as consumer_names

pytestmark = [pytest.mark.slow, pytest.mark.kafka]
__all__ = ["processes"]  # the fixture, imported from chain

MODEL = "toxicity"
N_FIRST, SHIFT_AT = 3_000, 300  # before the candidate: breaches with 1,000-event decision blocks
N_LIVE = 1_000  # after the candidate is attached: the live shadow evidence (above incidents shadow's 200)
OUTCOME_DELAY = 100  # each outcome comes 100 events after its prediction
MONITOR_CONFIG = "[monitor]\ndecision_block_events = 1000\ndecision_check_events = 250\ndecision_check_seconds = 1.0\n"


def fairwatch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairwatch", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_breach_from_kafka_exports_its_window_finetunes_shadows_live_and_is_promoted(
        broker, join_topics, tmp_path: Path, processes: Processes) -> None:
    require_binaries()
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scorer_fixtures import build_tiny_model

    t = join_topics
    bootstrap = broker.bootstrap_servers
    model_dir = build_tiny_model(tmp_path / "keys-model", "keys")
    config = tmp_path / "fairwatch.toml"
    config.write_text(MONITOR_CONFIG)
    start_ts = time.time() - (N_FIRST + N_LIVE) / 100  # event times in the recent past
    first = write_jsonl(tmp_path / "first.jsonl", biased_events(N_FIRST, SHIFT_AT, MODEL, start_ts=start_ts))
    live = write_jsonl(tmp_path / "live.jsonl", biased_events(N_LIVE, SHIFT_AT, MODEL, start_ts=start_ts,
                                                              first=N_FIRST, seed=1))

    # Longer group timeouts than the other join tests: this join shares the cores with a torch worker, a
    # fine-tune and Prometheus (its poll interval is 300 s by default since the join stall was fixed; see
    # docs/kafka.md). Batches of many records: this join is never restarted (no changelog recovery), and
    # the trigger's export reads to the fetch's high watermark.
    join = JoinApp(broker, t, tmp_path, f"{t['group']}.join", "--session-timeout-ms", "30000",
                   "--rebalance-timeout-ms", "120000", "--producer-max-batch-size", "16384")
    # The worker reads the join's labeled topic, and a control file where a candidate can be attached later.
    control = tmp_path / "shadow-control.json"
    worker = Worker(broker, dict(t, predictions=t["labeled"], outcomes=""), tmp_path, "--attribute", "sex",
                    "--config", str(config), "--scorer-model", str(model_dir), "--scorer-device", "cpu",
                    "--scorer-threshold", "0.6", "--shadow-control", str(control), name="worker")
    trigger_port = free_port()
    prom_port, token_file = start_prometheus_and_alertmanager(tmp_path, processes, [worker.port], trigger_port)
    job = " ".join([shlex.quote(sys.executable), "-m", "fairwatch", "finetune", "{data}",
                    "--model-dir", shlex.quote(str(model_dir)), "--out", "{out}", "--report", "{report}",
                    "--device", "cpu", "--max-rows", "960", "--max-steps", "60", "--batch-size", "32", "--lr", "3e-3",
                    "--eval-every", "10", "--val-share", "0.2", "--patience", "20", "--max-seconds", "300",
                    "--no-progress"])
    assert str(tmp_path) not in job.replace(str(model_dir), "")  # no data file of the test's: only {data}
    db = tmp_path / "incidents.sqlite"
    processes.start("trigger", [sys.executable, "-m", "fairwatch", "trigger", "serve", "--listen-port", str(trigger_port),
                                "--db", str(db), "--token-file", str(token_file), "--policy", "auto",
                                "--workdir", str(tmp_path / "jobs"), "--job-command", job,
                                "--prometheus-url", f"http://127.0.0.1:{prom_port}",
                                "--bootstrap-servers", bootstrap, "--predictions-topic", t["labeled"],
                                "--outcomes-topic", "", "--window-lookback-seconds", "3600"])
    try:
        join.start()
        worker.start()
        produced = fairwatch("produce", first, "--predictions-topic", t["predictions"], "--outcomes-topic",
                             t["outcomes"], "--outcome-delay", OUTCOME_DELAY, "--bootstrap-servers", bootstrap,
                             "--no-progress")
        assert produced.returncode == 0, produced.stderr

        wait_until(lambda: breach_exported(worker.port), 120, "the worker to export fairwatch_decision_breach 1",
                   processes)
        alerts = wait_until(lambda: firing_breaches(prom_port), 60, "FairnessGapBreach firing in Prometheus",
                            processes)
        assert {(a["labels"]["model"], a["labels"]["attribute"]) for a in alerts} == {(MODEL, "sex")}
        # The worker's scorer ran on the texts: debiased outputs beside production's.
        assert total(worker.metrics(), names.GROUP_EVENTS, model=f"{MODEL}:debiased", cell="predictions") > 0

        store = IncidentStore(db)
        incidents = wait_until(lambda: store.list(), 60, "Alertmanager to call the trigger and an incident to open",
                               processes)
        assert len(incidents) == 1 and (incidents[0]["model"], incidents[0]["attribute"]) == (MODEL, "sex")
        incident_id = incidents[0]["id"]
        done = wait_until(lambda: store.get(incident_id)["job"].get("state") in ("succeeded", "failed")
                          and store.get(incident_id), 300, "the export and the fine-tune job to finish", processes)
        assert done["state"] == "job_succeeded", processes.logs()
        # The trigger exported the window from Kafka: the file it handed the job, and what it held.
        data = Path(done["job"]["data"])
        assert data.parent == tmp_path / "jobs" / f"incident-{incident_id}"
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        assert rows and done["job"]["export"]["written"] == len(rows), done["job"]["export"]
        first_ids = {f"e{n}" for n in range(N_FIRST)}
        assert {row["event_id"] for row in rows} <= first_ids
        assert all(row["model"] == MODEL and row["text"] and row["label"] in (0, 1) for row in rows)
        report = done["job"]["report"]
        assert report["data"]["attributes"] == ["sex"], report["data"]
        candidate_dir = done["job"]["candidate_dir"]
        assert Path(candidate_dir, "model", "config.json").is_file()

        # Production saw every first-phase record (predictions and their outcomes) before the attach.
        join.wait_count(consumer_names.JOIN_OUTCOMES, N_FIRST, timeout=120, status="joined")
        wait_until(lambda: total(worker.metrics(), names.GROUP_EVENTS, model=MODEL, cell="labeled") == N_FIRST,
                   120, f"the worker to apply the {N_FIRST} labels", processes)
        assert not select(worker.metrics(), names.GROUP_EVENTS, model=f"{MODEL}:candidate")
        attached = fairwatch("incidents", "--db", db, "attach", incident_id, "--control", control)
        assert attached.returncode == 0, attached.stderr
        produced = fairwatch("produce", live, "--predictions-topic", t["predictions"], "--outcomes-topic",
                             t["outcomes"], "--outcome-delay", OUTCOME_DELAY, "--bootstrap-servers", bootstrap,
                             "--no-progress")
        assert produced.returncode == 0, produced.stderr

        def scraped(cell: str) -> bool:
            promql = f'sum(fairwatch_group_events_total{{model="{MODEL}:candidate",cell="{cell}"}})'
            return query_value(prom_port, promql) == N_LIVE

        wait_until(lambda: scraped("predictions") and scraped("labeled"), 180,
                   f"Prometheus to hold the candidate's predictions and labels of the {N_LIVE} live events",
                   processes)
        compared = fairwatch("incidents", "--db", db, "shadow", incident_id, "--prometheus-url",
                             f"http://127.0.0.1:{prom_port}")
        assert compared.returncode == 0, compared.stderr + processes.logs()
        assert "shadow attached" in worker.log_path.read_text() and worker.alive()  # never restarted
        evidence = store.get(incident_id)["job"]["shadow"]
        # Only the live events since the attach, the same on both sides.
        assert evidence["predictions"]["baseline"] == evidence["predictions"]["candidate"], evidence
        assert sum(evidence["predictions"]["candidate"].values()) == N_LIVE, evidence

        page = tmp_path / "incident.html"
        shown = fairwatch("incidents", "--db", db, "show", incident_id, "--html", page)
        assert shown.returncode == 0, shown.stderr
        text = html_module.unescape(page.read_text())
        headline = re.search(r'<p class="headline">(.*?)</p>', text, re.S).group(1)
        assert headline.startswith(f"{MODEL}: ") and "unknown" not in headline, headline
        assert f"on the same {N_LIVE} events" in text  # production and candidate side by side
        held_out = report["decision"]["promote"]
        verdict = ("Candidate can be promoted" if held_out and evidence["passed"] else
                   "Candidate cannot be promoted: held-out gates passed" if held_out else
                   "Candidate cannot be promoted: the held-out gates refused it")
        assert verdict in text, compared.stdout

        promote = ["incidents", "--db", db, "promote", incident_id, "--to", tmp_path / "serving"]
        promoted = fairwatch(*promote)
        if not (held_out and evidence["passed"]):
            assert promoted.returncode == 2 and len(promoted.stderr.strip().splitlines()) == 1, promoted.stderr
            assert ("failed on live shadow traffic" if held_out else "gates did not recommend") in promoted.stderr
            assert not (tmp_path / "serving").exists()
            promoted = fairwatch(*promote, "--force")
        assert promoted.returncode == 0, promoted.stderr
        assert (tmp_path / "serving" / "model" / "config.json").is_file()
        assert store.get(incident_id)["timeline"][-1]["change"] == "promoted"
    finally:
        for service in (join, worker):
            if service.process is not None:
                service.stop()
