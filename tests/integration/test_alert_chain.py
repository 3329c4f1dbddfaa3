"""The whole alert chain with the real binaries on loopback.

A replayed stream with a bias shift drives the monitor's /metrics;
Prometheus scrapes it and evaluates the rendered rules (short durations);
the breach fires, Alertmanager calls the trigger's webhook with the bearer
token, the trigger opens an incident with Prometheus' evidence and runs the
fine-tune job on the tiny CPU model; the incident ends with a report whose
held-out gap is smaller than before, and its HTML page has the plots. Then
a second worker scores the same stream with the candidate in the shadow of
production, `incidents shadow` records both from Prometheus, the page states
whether the candidate can be promoted, and the human promotes accordingly.

The data: sentences from a fixed set of skeletons whose label is the
skeleton's (toxic or not), each with "man" or "woman". The deployed model's
predictions are right until event 1,000, then every "man" event is
predicted toxic: a label-independent group-term shortcut. The serving model
handed to the job is the tiny ``keys`` model (tests/scorer_fixtures.py),
which has exactly that shortcut (male terms -> toxic, female -> not), so
its held-out FPED is 1.0 before; training on the labeled window with
counterfactual copies must move it.
"""

from __future__ import annotations

import html as html_module
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import WAIT_FACTOR
from helpers import REPO

from fairwatch.alerts.incident_summary import firing_metrics
from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.rules import AlertSettings, render

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TOKEN = "chain-s3cret"
MODEL = "toxicity"
N_EVENTS, SHIFT_AT = 16_000, 1_000  # the decision's first block is 8,000 events; this breaches well inside 16,000
SKELETONS = [
    ("my friend is a {}", 0), ("the {} is nice", 0), ("i love my {} teacher", 0), ("the {} doctor is kind", 0),
    ("this {} nurse is smart", 0), ("they met a tall {}", 0), ("the {} wrote a good book", 0),
    ("a {} gave me a pen", 0), ("the {} said hello", 0), ("i saw a kind {}", 0),
    ("i hate this {}", 1), ("the {} is bad", 1), ("you are a bad {} doctor", 1), ("they are angry at the {}", 1),
    ("i hate the {} teacher", 1), ("that {} manager is bad", 1), ("the {} is angry and bad", 1),
    ("i hate that {} manager", 1), ("we hate the {} nurse", 1), ("the {} told a bad", 1),
]


def write_stream(path: Path) -> Path:
    rng = random.Random(0)
    lines = []
    for n in range(N_EVENTS):
        skeleton, toxic = rng.choice(SKELETONS)
        term = rng.choice(("man", "woman"))
        prediction = 1 if (n >= SHIFT_AT and term == "man") else toxic
        lines.append(json.dumps({"event_id": f"e{n}", "ts": 1_795_000_000 + n / 100, "model": MODEL,
                                 "prediction": prediction, "text": skeleton.format(term), "label": toxic,
                                 "groups": {"sex": term}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


class Processes:
    """Started processes with their logs; all killed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self.running[name] = (proc, log)
        return proc

    def logs(self) -> str:
        parts = []
        for name, (proc, log) in self.running.items():
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- {name} (exit {proc.poll()}) ---\n{text[-3000:]}")
        jobs = sorted(self.root.glob("jobs/*/job.log"))
        parts += [f"--- {p} ---\n{p.read_text(errors='replace')[-3000:]}" for p in jobs]
        return "\n".join(parts)

    def stop(self) -> None:
        for proc, _ in self.running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.running.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path):
    running = Processes(tmp_path)
    yield running
    running.stop()


def wait_until(condition, timeout: float, what: str, processes: Processes, interval: float = 0.5):
    """Poll ``condition`` until truthy; at the deadline (``timeout`` times WAIT_FACTOR) fail with ``what``
    and every process's log."""
    timeout *= WAIT_FACTOR
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        dead = [n for n, (p, _) in processes.running.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"after {timeout:.0f} s"
            pytest.fail(f"{why}: waiting for {what}\n{processes.logs()}")
        time.sleep(interval)


def test_breach_pages_trigger_and_finetune_shrinks_the_gap(tmp_path: Path, processes: Processes) -> None:
    if not PROMETHEUS or not ALERTMANAGER:
        pytest.skip("prometheus / prometheus-alertmanager not installed (`make test` installs them)")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scorer_fixtures import build_tiny_model

    stream = write_stream(tmp_path / "stream.jsonl")
    model_dir = build_tiny_model(tmp_path / "keys-model", "keys")
    metrics_port, prom_port, am_port, trigger_port, shadow_port = (free_port() for _ in range(5))

    # Rules as the code renders them, with durations a test can wait for.
    rules = yaml.safe_load(render(settings=AlertSettings(breach_for="5s")))
    for group in rules["groups"]:
        group["interval"] = "1s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        # The second target is the shadow worker, started once the job has proposed a candidate.
        "scrape_configs": [{"job_name": "fairwatch", "static_configs": [
            {"targets": [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{shadow_port}"]}]}],
    }))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "nobody", "group_by": ["model", "attribute"], "group_wait": "1s",
                  "group_interval": "2s", "repeat_interval": "1h",
                  "routes": [{"matchers": ['alertname="FairnessGapBreach"'], "receiver": "fairwatch-trigger"}]},
        "receivers": [{"name": "nobody"}, {"name": "fairwatch-trigger", "webhook_configs": [{
            "url": f"http://127.0.0.1:{trigger_port}/alerts", "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}}]}],
    }))

    job = " ".join([
        shlex.quote(sys.executable), "-m", "fairwatch.alerts.finetune_command", shlex.quote(str(stream)),
        "--model-dir", shlex.quote(str(model_dir)), "--out", "{out}", "--report", "{report}", "--device", "cpu",
        "--max-rows", "960", "--max-steps", "60", "--batch-size", "32", "--lr", "3e-3", "--eval-every", "10",
        "--val-share", "0.2", "--patience", "20", "--no-progress",
    ])
    db = tmp_path / "incidents.sqlite"
    processes.start("trigger", [sys.executable, "-m", "fairwatch", "trigger", "serve", "--listen-port", str(trigger_port),
                                "--db", str(db), "--token-file", str(token_file), "--policy", "auto",
                                "--workdir", str(tmp_path / "jobs"), "--job-command", job,
                                "--prometheus-url", f"http://127.0.0.1:{prom_port}"])
    processes.start("replay", [sys.executable, "-m", "fairwatch", "replay", str(stream), "--metrics-port", str(metrics_port),
                               "--group-col", "sex", "--model", MODEL])
    processes.start("alertmanager", [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}",
                                     f"--storage.path={tmp_path / 'am-data'}",
                                     f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="])
    processes.start("prometheus", [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   "--enable-feature=exemplar-storage",  # event ids of the evidence
                                   f"--web.listen-address=127.0.0.1:{prom_port}"])

    def breach_exported() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return False
        return any(line.startswith("fairwatch_decision_breach{") and line.endswith(" 1.0")
                   for line in text.splitlines())

    wait_until(breach_exported, 60, "the replay to export fairwatch_decision_breach 1 on /metrics", processes)

    def firing() -> list[dict]:
        body = get_json(f"http://127.0.0.1:{prom_port}/api/v1/alerts") or {}
        return [a for a in body.get("data", {}).get("alerts", [])
                if a["labels"].get("alertname") == "FairnessGapBreach" and a["state"] == "firing"]

    alerts = wait_until(firing, 60, "FairnessGapBreach firing in Prometheus", processes)
    assert {a["labels"]["model"] for a in alerts} == {MODEL}
    assert {a["labels"]["attribute"] for a in alerts} == {"sex"}

    store = IncidentStore(db)
    incidents = wait_until(lambda: store.list(), 30, "Alertmanager to call the trigger and an incident to open",
                           processes)
    assert len(incidents) == 1, incidents
    incident = incidents[0]
    assert (incident["model"], incident["attribute"]) == (MODEL, "sex")
    assert incident["alerts"][0]["labels"]["alertname"] == "FairnessGapBreach"
    health = get_json(f"http://127.0.0.1:{trigger_port}/healthz")
    assert health and health["rejected"] == 0 and health["incidents_opened"] == 1, health
    # The evidence came from Prometheus: the breaching bound, and the gap's recent history.
    evidence = incident["evidence"]
    assert evidence["bound"] and all(b["value"] > t["value"] for b in evidence["bound"]
                                     for t in evidence["threshold"] if t["labels"] == b["labels"]), evidence
    assert evidence["series"]["gap"] and evidence["series"]["gap"][0]["points"], evidence["series"]
    assert evidence["series"]["threshold"][0]["points"], evidence["series"]
    # Exemplar event ids: real ids of the stream, per group, never labels.
    assert isinstance(evidence["exemplars"], list), evidence["exemplars"]
    exemplar_ids = {i for e in evidence["exemplars"] for i in e["event_ids"]}
    assert exemplar_ids, evidence["exemplars"]
    assert exemplar_ids <= {f"e{n}" for n in range(N_EVENTS)}

    done = wait_until(lambda: store.get(incident["id"])["job"].get("state") in ("succeeded", "failed")
                      and store.get(incident["id"]), 150, "the fine-tune job to finish", processes)
    assert done["state"] == "job_succeeded", processes.logs()
    report = done["job"]["report"]
    assert report is not None and report["data"]["attributes"] == ["sex"]
    before = report["before"]["attributes"]["sex"]["gaps"]["fped"]["value"]
    after = report["after"]["attributes"]["sex"]["gaps"]["fped"]["value"]
    assert before == pytest.approx(1.0)  # the keys model's shortcut, on held-out sentences
    assert after < before, f"held-out FPED {before} -> {after}\n{processes.logs()}"
    assert report["decision"]["gap_after"] < report["decision"]["gap_before"]
    # Later alerts of the same (model, attribute) join the incident; the job ran once, after the opening.
    changes = [e["change"] for e in done["timeline"] if e["change"] != "alert_added"]
    assert changes == ["opened", "job_running", "job_succeeded"], changes
    assert Path(done["job"]["candidate_dir"]).joinpath("model", "config.json").is_file()

    page = tmp_path / "incident.html"
    result = subprocess.run([sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "show",
                             str(incident["id"]), "--html", str(page)], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert '<svg id="plot-gap-0"' in text and "no series of" not in text and 'class="missing"' not in text
    assert "no fine-tune report yet" not in text and "no group rates stored" not in text
    # The headline names the metric, the harmed side and the bound, from Prometheus' evidence.
    headline = html_module.unescape(re.search(r'<p class="headline">(.*?)</p>', text).group(1))
    assert headline.startswith(f"{MODEL}: ") and "beyond its threshold (anytime-valid bound" in headline, headline
    assert "unknown" not in headline, headline

    # The candidate on live traffic: a second worker scores the same stream with it (the job's candidate
    # folder, as the incident records it), Prometheus scrapes both, and the comparison lands in the incident.
    candidate_dir = done["job"]["candidate_dir"]
    processes.start("shadow", [sys.executable, "-m", "fairwatch", "replay", str(stream), "--serve", str(shadow_port),
                               "--group-col", "sex", "--model", MODEL, "--shadow-candidate", candidate_dir,
                               "--shadow-model", MODEL, "--scorer-device", "cpu"])
    shadowed = urllib.parse.quote(f'sum(fairwatch_group_events_total{{model="{MODEL}:candidate",cell="predictions"}})')

    def candidate_scraped() -> bool:
        result = (get_json(f"http://127.0.0.1:{prom_port}/api/v1/query?query={shadowed}") or {}).get("data", {})
        return bool(result.get("result")) and float(result["result"][0]["value"][1]) == N_EVENTS

    wait_until(candidate_scraped, 120, "Prometheus to scrape the candidate's predictions of every event", processes)
    compared = subprocess.run([sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "shadow",
                               str(incident["id"]), "--prometheus-url", f"http://127.0.0.1:{prom_port}"],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
    assert compared.returncode == 0, compared.stderr + processes.logs()
    shadow = store.get(incident["id"])["job"]["shadow"]
    # Same events on both sides: every event carries text, so the candidate saw each one production did.
    assert shadow["predictions"]["baseline"] == shadow["predictions"]["candidate"], shadow
    assert sum(shadow["predictions"]["candidate"].values()) == N_EVENTS
    assert [row["metric"] for row in shadow["metrics"]] == firing_metrics(store.get(incident["id"]))
    result = subprocess.run([sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "show",
                             str(incident["id"]), "--html", str(page)], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    text = html_module.unescape(page.read_text())
    held_out = report["decision"]["promote"]
    verdict = ("Candidate can be promoted" if held_out and shadow["passed"] else
               "Candidate cannot be promoted: held-out gates passed" if held_out else
               "Candidate cannot be promoted: the held-out gates refused it")
    assert verdict in text and f"on the same {N_EVENTS} events" in text, compared.stdout
    # The human step follows both verdicts: promoted, or refused in one line and then overruled by name.
    promote = [sys.executable, "-m", "fairwatch", "incidents", "--db", str(db), "promote", str(incident["id"]),
               "--to", str(tmp_path / "serving")]
    promoted = subprocess.run(promote, capture_output=True, text=True, cwd=REPO, timeout=60)
    if not (held_out and shadow["passed"]):
        assert promoted.returncode == 2 and len(promoted.stderr.strip().splitlines()) == 1, promoted.stderr
        assert ("failed on live shadow traffic" if held_out else "gates did not recommend") in promoted.stderr
        promoted = subprocess.run([*promote, "--force"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert promoted.returncode == 0, promoted.stderr
    assert (tmp_path / "serving" / "model" / "config.json").is_file()
    assert store.get(incident["id"])["timeline"][-1]["change"] == "promoted"
