"""Hostile label values: refused before a command line, a path or a query, and escaped in PromQL anyway."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml
from test_trigger import JOB, TOKEN, alert, payload, post

from fairwatch.alerts.evidence import prometheus_evidence
from fairwatch.alerts.incidents import IncidentStore
from fairwatch.alerts.jobs import JobRunner
from fairwatch.alerts.labels import promql_string, unsafe_label_reason
from fairwatch.alerts.trigger import Trigger, serve


@pytest.mark.parametrize("name, value", [
    ("model", "../../../../tmp/owned"),
    ("model", "credit/../../etc"),
    ("attribute", "--device=cuda:9"),
    ("attribute", "-rf"),
    ("model", 'credit",model=~".*'),
    ("metric", "demographic_parity_difference\"} or vector(1) #"),
    ("model", "credit\x1b[2J"),
    ("model", "x" * 129),
    ("attribute", ""),
])
def test_alerts_with_unsafe_labels_are_refused_counted_and_logged(tmp_path, caplog, name, value):
    store = IncidentStore(tmp_path / "i.sqlite")
    jobs = JobRunner(store, JOB, tmp_path / "jobs")
    trigger = Trigger(store, TOKEN, policy="auto", jobs=jobs)
    server, port = serve(trigger, port=0, poll_seconds=0.2)
    try:
        hostile = alert()
        hostile["labels"][name] = value
        status, answer = post(f"http://127.0.0.1:{port}/alerts", payload(hostile, alert(attribute="sex")))
        assert status == 200 and len(answer["refused"]) == 1 and name in answer["refused"][0]
        assert len(answer["opened"]) == 1  # the valid alert of the same delivery is not lost
        assert [i["attribute"] for i in store.list()] == ["sex"] and trigger.counts["refused_labels"] == 1
        assert any("alert refused" in r.getMessage() and "\x1b" not in r.getMessage() for r in caplog.records)
        jobs.wait()
        assert not (tmp_path / "owned").exists()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("value", ["credit-risk", "race&sex", "v3.2.0", "ns:model_1"])
def test_identifiers_pass(value):
    assert unsafe_label_reason("model", value) is None


def test_a_job_never_gets_an_unsafe_label_even_from_the_store(tmp_path):
    store = IncidentStore(tmp_path / "i.sqlite")
    incident, _ = store.open_or_update("m", "--verbose", {}, 0.0)  # written by an older trigger
    jobs = JobRunner(store, JOB + " {attribute}", tmp_path / "jobs")
    assert jobs.start(incident) is False
    assert store.get(1)["state"] == "job_failed" and "must not start" in store.get(1)["job"]["error"]


class RecordingPrometheus(BaseHTTPRequestHandler):
    """Answers every query with an empty result and keeps the queries it was sent."""

    queries: list[str] = []

    def do_GET(self):  # noqa: N802
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
        self.queries.append(query)
        body = json.dumps({"status": "success", "data": [] if "exemplars" in self.path else
                           {"resultType": "vector", "result": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_evidence_queries_escape_label_values_into_valid_promql(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), RecordingPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = 'credit",model=~".*'
        prometheus_evidence(f"http://127.0.0.1:{server.server_address[1]}", model, 'ra\\ce', "m\nx")
    finally:
        server.shutdown()
        server.server_close()
    queries = RecordingPrometheus.queries
    assert queries and all(promql_string(model) in q for q in queries if "model=" in q)
    assert not any('model=~".*' in q.replace(promql_string(model), "") for q in queries)
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make test` installs Debian's prometheus package"
    rules = {"groups": [{"name": "evidence", "rules": [{"record": f"q{i}", "expr": q}
                                                        for i, q in enumerate(queries)]}]}
    (tmp_path / "q.yml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool, "check", "rules", str(tmp_path / "q.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promql_string_escapes_quotes_backslashes_and_newlines():
    assert promql_string('a"b\\c\n') == '"a\\"b\\\\c\\n"'


def test_an_escaped_quote_selects_only_its_own_model_in_real_promql(tmp_path):
    """promtool evaluates the evidence query over two models: a model label holding a quote
    must match only a series with that exact value, never widen to the other models."""
    from fairwatch.monitor import metric_names as names

    RecordingPrometheus.queries = []
    server = HTTPServer(("127.0.0.1", 0), RecordingPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hostile = 'we"ird",model=~".*'
    try:
        prometheus_evidence(f"http://127.0.0.1:{server.server_address[1]}", hostile, "race", "")
    finally:
        server.shutdown()
        server.server_close()
    (query,) = [q for q in RecordingPrometheus.queries if q.startswith(names.GROUP_RATE + "{")]

    def series(model: str) -> dict:
        labels = {"model": model, "attribute": "race", "group": "a", "metric": "selection_rate", "window": "all"}
        return {"series": f"{names.GROUP_RATE}{{{','.join(f'{k}={promql_string(v)}' for k, v in labels.items())}}}",
                "values": "0.5x5"}

    spec = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [series("credit"), series("other"), series(hostile)],
        "promql_expr_test": [{"expr": f"count({query})", "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 1}]}],
    }]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make test` installs Debian's prometheus package"
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
