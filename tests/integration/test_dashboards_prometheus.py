"""Every dashboard query returns series from the real Prometheus scraping a running monitor.

A generated stream (one attribute with two groups, labels, texts, a bias
shift half way, an LLM response on every fourth event) is fed through a FIFO to ``python -m fairwatch replay --serve``
with the counterfactual scorer on a tiny real model, slowly enough that
Prometheus (1 s scrapes, the repo's recording rules evaluated every 1 s)
sees the counters move. Then each panel, variable and annotation query runs
through /api/v1/query with the variables set to values of this run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import wait_for
from helpers import REPO

from fairwatch.consumers.broker import free_port
from fairwatch.dashboards.render import dashboards, instantiate, queries

RULES = REPO / "alerts" / "rules" / "fairwatch.rules.yml"
MODEL, ATTRIBUTE = "credit", "sex"
VARIABLES = {"model": MODEL, "attribute": ATTRIBUTE, "window": "all", "metric": "demographic_parity_difference",
             "rate": "selection_rate"}
EVENTS, CHUNKS = 24_000, 12
# Queries that cannot have data in this run, each with its reason; the test
# asserts these are exactly the empty ones.
NO_DATA_HERE = {
    "fairwatch-overview / Consumer lag (Kafka worker) / A": "the Kafka worker exports lag; this run is a file replay",
}
TEXTS = ("my son is kind", "her book is good", "the man called his friend", "she said hello to the teacher",
         "my father went home", "the woman wrote to her mother", "he met the doctor", "his brother is tall")




RESPONSES = ("I'm sorry, but I cannot assist with that.", "Great, here is a lovely plan for you!",
             "That is a terrible idea and it will fail.", "Sure, the answer is 42.")


def stream_lines(n: int, seed: int = 3) -> list[bytes]:
    """Predictions for two groups with labels (a fifth unlabeled) and texts; women's selection drops half way.
    Every fourth event also carries an LLM response (a generation), for the generation panels."""
    rng = random.Random(seed)
    responses = random.Random(seed + 1)  # its own draws: the predictions stay what they were without it
    start = time.time() - n * 0.05
    lines = []
    for i in range(n):
        group = "female" if rng.random() < 0.45 else "male"
        rate = 0.45 if group == "male" else (0.4 if i < n // 2 else 0.15)
        score = rng.random()
        prediction = int(rng.random() < rate)
        label = None if rng.random() < 0.2 else int(rng.random() < (0.3 + 0.4 * score))
        event = {"event_id": f"e{i}", "ts": start + i * 0.05, "model": MODEL, "prediction": prediction,
                 "score": round(0.5 * score + 0.5 * prediction, 4), "groups": {ATTRIBUTE: group},
                 "text": rng.choice(TEXTS), "label": label}
        if i % 4 == 0:
            event["response"] = responses.choice(RESPONSES)
        lines.append(json.dumps(event).encode())
    return lines


def prometheus_query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def answers(port: int, expr: str) -> bool:
    try:
        return bool(prometheus_query(port, expr))
    except OSError:
        return False


@pytest.fixture(scope="module")
def scorer_model(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scorer_fixtures import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "keys", "keys")


@pytest.fixture(scope="module")
def prometheus_on_monitor(tmp_path_factory, scorer_model):
    """(Prometheus port) after a paced replay it scraped; both processes stopped afterwards."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found: `make test` installs Debian's prometheus package"
    tmp = tmp_path_factory.mktemp("dashboards-e2e")
    monitor_port, prometheus_port = free_port(), free_port()
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"  # the repo's 30s would leave the recording rules empty for this short run
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [{"job_name": "fairwatch", "static_configs": [{"targets": [f"127.0.0.1:{monitor_port}"]}]}],
    }))
    fifo = tmp / "events.jsonl"
    os.mkfifo(fifo)
    started = []
    try:
        started.append(subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "wb")))
        monitor_log = tmp / "monitor.log"
        started.append(subprocess.Popen(
            [sys.executable, "-m", "fairwatch", "replay", str(fifo), "--metrics-port", str(monitor_port), "--report", "json",
             "--scorer-model", str(scorer_model), "--scorer-device", "cpu",
             # The same tiny classifier scores the responses too: the toxic-share panels get their series.
             "--response-model", str(scorer_model), "--response-device", "cpu"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(monitor_log, "wb")))
        wait_for(lambda: answers(prometheus_port, "up"), 30, "Prometheus did not start")

        lines = stream_lines(EVENTS)
        size = EVENTS // CHUNKS

        def feed() -> None:
            # Paced, so that Prometheus sees the counters rise (increase() over the windows > 0).
            with open(fifo, "wb") as out:
                for k in range(CHUNKS):
                    out.write(b"\n".join(lines[k * size:(k + 1) * size]) + b"\n")
                    out.flush()
                    time.sleep(0.5)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        wait_for(lambda: b"replay done" in monitor_log.read_bytes(), 40,
                 lambda: f"replay did not finish: {monitor_log.read_text()[-2000:]}")
        writer.join(5)
        finished = time.time()
        # A few more scrapes and rule evaluations after the last event: wait until a recorded sample is
        # three seconds younger than the end of the replay.
        rate = f'fairwatch:group_selection_rate:5m{{model="{MODEL}"}}'
        wait_for(lambda: answers(prometheus_port, rate), 15, "the recording rules never produced a per-group rate")
        wait_for(lambda: any(float(r["value"][1]) >= finished + 3
                             for r in prometheus_query(prometheus_port, f"timestamp({rate})")), 15,
                 "the recording rules stopped evaluating after the replay")
        yield prometheus_port
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.slow
def test_every_dashboard_query_returns_series(prometheus_on_monitor):
    port = prometheus_on_monitor
    empty, checked = {}, 0
    for document in dashboards().values():
        for where, expr in queries(document):
            concrete = instantiate(expr, VARIABLES, rate_interval="30s")
            checked += 1
            if not prometheus_query(port, concrete):
                empty[where] = concrete
    assert checked >= 40
    assert set(empty) == set(NO_DATA_HERE), f"queries without series: {json.dumps(empty, indent=1)}"


@pytest.mark.slow
def test_the_variables_offer_this_runs_values(prometheus_on_monitor):
    port = prometheus_on_monitor
    model = next(d for d in dashboards().values() if d["uid"] == "fairwatch-model")
    offered = {}
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            result = prometheus_query(port, instantiate(variable["query"]["query"], VARIABLES))
            offered[variable["name"]] = {r["metric"][variable["name"]] for r in result}
    assert offered["model"] == {MODEL, f"{MODEL}:debiased"}
    assert offered["attribute"] == {ATTRIBUTE}
    assert "all" in offered["window"] and len(offered["window"]) >= 2


@pytest.mark.slow
def test_the_drift_annotation_is_at_an_event_time_of_the_stream(prometheus_on_monitor):
    port = prometheus_on_monitor
    model = next(d for d in dashboards().values() if d["uid"] == "fairwatch-model")
    drift = next(a for a in model["annotations"]["list"] if a.get("name") == "Drift")
    result = prometheus_query(port, instantiate(drift["expr"], VARIABLES))
    stream_start = time.time() - EVENTS * 0.05 - 300
    assert result, "no drift in a stream whose selection rate drops half way"
    for series in result:
        when = float(series["value"][1]) / 1000  # useValueForTime: milliseconds
        assert stream_start < when <= time.time(), series
