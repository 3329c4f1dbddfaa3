"""The alert chain's real parts, shared by the end-to-end tests (test_alert_chain.py from a file replay,
test_incident_loop_kafka.py from Kafka): the biased text stream, started processes with their logs,
readiness polling, and Prometheus + Alertmanager configured for the trigger's webhook on loopback."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import wait_for
from helpers import REPO

from fairwatch.alerts.rules import AlertSettings, render

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TOKEN = "chain-s3cret"
# Sentences whose label is the skeleton's (toxic or not), each with "man" or "woman".
SKELETONS = [
    ("my friend is a {}", 0), ("the {} is nice", 0), ("i love my {} teacher", 0), ("the {} doctor is kind", 0),
    ("this {} nurse is smart", 0), ("they met a tall {}", 0), ("the {} wrote a good book", 0),
    ("a {} gave me a pen", 0), ("the {} said hello", 0), ("i saw a kind {}", 0),
    ("i hate this {}", 1), ("the {} is bad", 1), ("you are a bad {} doctor", 1), ("they are angry at the {}", 1),
    ("i hate the {} teacher", 1), ("that {} manager is bad", 1), ("the {} is angry and bad", 1),
    ("i hate that {} manager", 1), ("we hate the {} nurse", 1), ("the {} told a bad", 1),
]


def biased_events(n: int, shift_at: int, model: str, *, start_ts: float = 1_795_000_000, first: int = 0,
                  seed: int = 0, shift: bool = True) -> list[dict]:
    """Prediction events ``e{first}``.. with labels: right until event ``shift_at``, then (``shift``) every "man"
    event is predicted toxic, a label-independent group-term shortcut."""
    rng = random.Random(seed)
    events = []
    for n_ in range(first, first + n):
        skeleton, toxic = rng.choice(SKELETONS)
        term = rng.choice(("man", "woman"))
        prediction = 1 if (shift and n_ >= shift_at and term == "man") else toxic
        events.append({"event_id": f"e{n_}", "ts": start_ts + n_ / 100, "model": model, "prediction": prediction,
                       "text": skeleton.format(term), "label": toxic, "groups": {"sex": term}})
    return events


def write_jsonl(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def free_port() -> int:
    from fairwatch.consumers.broker import free_port as pick

    return pick()


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
        with open(log, "ab") as out:
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
    """conftest.wait_for that also fails, with every process's log, as soon as a started process has exited."""

    def ready():
        value = condition()
        if value:
            return (value,)
        dead = [name for name, (proc, _) in processes.running.items() if proc.poll() is not None]
        if dead:
            pytest.fail(f"{', '.join(dead)} exited: waiting for {what}\n{processes.logs()}")
        return None

    return wait_for(ready, timeout, lambda: f"waiting for {what}\n{processes.logs()}", interval)[0]


def require_binaries() -> None:
    if not PROMETHEUS or not ALERTMANAGER:
        pytest.skip("prometheus / prometheus-alertmanager not installed (`make test` installs them)")


def start_prometheus_and_alertmanager(tmp_path: Path, processes: Processes, targets: list[int],
                                      trigger_port: int) -> tuple[int, Path]:
    """The repo's rules (short durations) in a Prometheus scraping ``targets`` every second, and an
    Alertmanager that posts FairnessGapBreach to the trigger with the bearer token.
    Returns (Prometheus' port, the token file)."""
    prom_port, am_port = free_port(), free_port()
    rules = yaml.safe_load(render(settings=AlertSettings(breach_for="5s")))
    for group in rules["groups"]:
        group["interval"] = "1s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "fairwatch", "static_configs": [
            {"targets": [f"127.0.0.1:{port}" for port in targets]}]}],
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
    processes.start("alertmanager", [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}",
                                     f"--storage.path={tmp_path / 'am-data'}",
                                     f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="])
    processes.start("prometheus", [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   "--enable-feature=exemplar-storage",  # event ids of the evidence
                                   f"--web.listen-address=127.0.0.1:{prom_port}"])
    return prom_port, token_file


def firing_breaches(prom_port: int) -> list[dict]:
    body = get_json(f"http://127.0.0.1:{prom_port}/api/v1/alerts") or {}
    return [a for a in body.get("data", {}).get("alerts", [])
            if a["labels"].get("alertname") == "FairnessGapBreach" and a["state"] == "firing"]


def query_value(prom_port: int, promql: str) -> float | None:
    """The first sample of an instant query (None while there is none)."""
    body = get_json(f"http://127.0.0.1:{prom_port}/api/v1/query?query={urllib.parse.quote(promql)}") or {}
    result = body.get("data", {}).get("result")
    return float(result[0]["value"][1]) if result else None


def breach_exported(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return False
    return any(line.startswith("fairwatch_decision_breach{") and line.endswith(" 1.0") for line in text.splitlines())
