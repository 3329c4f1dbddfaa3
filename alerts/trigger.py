"""The trigger: Alertmanager's webhook in, incidents and fine-tune jobs out.

``Trigger.handle`` validates a webhook delivery (shared bearer token, size,
schema), drops deliveries it has seen (same fingerprint, start and status),
opens or updates an incident per (model, attribute) with a cooldown, and
starts the fine-tune job for a new incident when the policy is ``auto``; with
``manual`` the incident waits for ``fairwatch incidents approve ID``, which
the trigger notices on its next poll. A job never runs twice for an
incident, and never replaces a serving model: it writes a candidate and a
report under the incident's folder. A malformed payload is a 400 with a
one-line reason; nothing a caller sends can stop the server.
"""

from __future__ import annotations

import hmac
import json
import logging
import shlex
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal, Union

import msgspec

from fairwatch.alerts.incidents import IncidentStore
from fairwatch.monitor import metric_names as names
from fairwatch.monitor.scorer import metric_names as scorer_names

log = logging.getLogger("fairwatch.trigger")

MAX_PAYLOAD_BYTES = 1 << 20
FAIRNESS_ALERTS = ("FairnessGapBreach",)


class WebhookAlert(msgspec.Struct):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    startsAt: str
    fingerprint: Union[str, None] = None
    annotations: dict[str, str] = {}
    endsAt: str = ""
    generatorURL: str = ""


class WebhookPayload(msgspec.Struct):
    """Alertmanager's webhook body (version 4); unknown fields are ignored."""

    alerts: list[WebhookAlert]
    version: str = "4"
    status: str = ""
    receiver: str = ""


_decode = msgspec.json.Decoder(WebhookPayload).decode


@dataclass
class Response:
    status: int
    body: dict


class JobRunner:
    """Runs the fine-tune command for an incident in a thread, recording its fate.

    ``command`` is a shell-style template with ``{incident}``, ``{model}``,
    ``{attribute}``, ``{out}`` (a folder for the candidate) and ``{report}``
    (where the job writes its JSON report).
    """

    def __init__(self, store: IncidentStore, command: str | None, workdir: str | Path, timeout_seconds: float = 3600):
        self.store = store
        self.command = command
        self.workdir = Path(workdir)
        self.timeout_seconds = timeout_seconds
        self._started: set[int] = set()
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self, incident: dict) -> bool:
        """Start the job once per incident; False when it already ran or no command is set."""
        with self._lock:
            if incident["id"] in self._started or incident["job"].get("state") in ("running", "succeeded", "failed"):
                return False
            self._started.add(incident["id"])
        if not self.command:
            self.store.note(incident["id"], "job_skipped", {"why": "no job command configured"})
            return False
        out = self.workdir / f"incident-{incident['id']}"
        out.mkdir(parents=True, exist_ok=True)
        values = {"incident": str(incident["id"]), "model": incident["model"], "attribute": incident["attribute"],
                  "out": str(out / "candidate"), "report": str(out / "report.json")}
        argv = []
        for part in shlex.split(self.command):  # only our placeholders: the command may hold other braces
            for key, value in values.items():
                part = part.replace("{" + key + "}", value)
            argv.append(part)
        self.store.set_state(incident["id"], "job_running", {"command": argv},
                             job={"state": "running", "command": argv, "report_path": values["report"],
                                  "candidate_dir": values["out"]})
        thread = threading.Thread(target=self._run, args=(incident["id"], argv, out, values["report"]), daemon=True)
        self.threads.append(thread)
        thread.start()
        return True

    def _run(self, incident_id: int, argv: list[str], out: Path, report_path: str) -> None:
        try:
            with open(out / "job.log", "wb") as log_file:
                result = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, timeout=self.timeout_seconds)
            report = json.loads(Path(report_path).read_text()) if Path(report_path).exists() else None
            if result.returncode == 0:
                self.store.set_state(incident_id, "job_succeeded", {"returncode": 0},
                                     job={"state": "succeeded", "report": report})
            else:
                self.store.set_state(incident_id, "job_failed", {"returncode": result.returncode},
                                     job={"state": "failed", "report": report})
        except Exception as exc:  # a broken job must not take the trigger down
            log.exception("fine-tune job of incident %s failed", incident_id)
            self.store.set_state(incident_id, "job_failed", {"error": f"{type(exc).__name__}: {exc}"},
                                 job={"state": "failed"})

    def wait(self, timeout: float = 60.0) -> None:
        for thread in list(self.threads):
            thread.join(timeout)


def _prometheus_get(prometheus_url: str, path: str, params: dict) -> list[dict]:
    url = f"{prometheus_url.rstrip('/')}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as response:
        data = json.load(response)["data"]
    return data["result"] if isinstance(data, dict) else data  # query_exemplars answers a bare list


def prometheus_evidence(prometheus_url: str | None, model: str, attribute: str, metric: str, *,
                        range_seconds: float = 3600.0, step_seconds: float = 5.0, now: float | None = None) -> dict:
    """The decision's bound and threshold and the group rates, as Prometheus has them now.

    ``series`` holds the last ``range_seconds`` of the decision bound, the
    since-start gap with its display bounds, and the threshold (each a list of
    ``{"labels", "points": [[unix seconds, value], ...]}``), so that the
    incident page can plot how the breach built up even after Prometheus
    has dropped the samples.
    """
    if not prometheus_url:
        return {}
    selector = f'{names.MODEL}="{model}",{names.ATTRIBUTE}="{attribute}"'
    # Without a metric label (an alert from elsewhere) every metric of the attribute is evidence.
    with_metric = selector + (f',{names.METRIC}="{metric}"' if metric else "")
    queries = {
        "bound": f"fairwatch:decision_bound:worst{{{with_metric}}}",
        "threshold": f"fairwatch:decision_threshold{{{with_metric}}}",
        "group_rates": f'{names.GROUP_RATE}{{{selector},{names.WINDOW}="all"}}',
        "group_rates_lower": f'{names.GROUP_RATE_LOWER}{{{selector},{names.WINDOW}="all"}}',
        "group_rates_upper": f'{names.GROUP_RATE_UPPER}{{{selector},{names.WINDOW}="all"}}',
        "gaps": f'{names.GAP}{{{selector},{names.WINDOW}="all"}}',
    }
    # Counterfactual evidence is per (model, lexicon attribute), not per
    # protected attribute: take all of the model's.
    counterfactual = f'{names.MODEL}="{model}"'
    queries["counterfactual_flip_rate"] = f"{scorer_names.COUNTERFACTUAL_FLIP_RATE}{{{counterfactual}}}"
    queries["counterfactual_terms"] = f"{scorer_names.COUNTERFACTUAL_TERM_SCORE_CHANGE}{{{counterfactual}}}"
    evidence: dict = {}
    for key, query in queries.items():
        try:
            data = _prometheus_get(prometheus_url, "/api/v1/query", {"query": query})
            evidence[key] = [{"labels": r["metric"], "value": float(r["value"][1])} for r in data]
        except Exception as exc:  # evidence is best effort; the incident opens regardless
            evidence[key] = {"error": f"{type(exc).__name__}: {exc}"}
    end = time.time() if now is None else now
    start = end - range_seconds
    series_queries = {
        "bound": queries["bound"],
        "gap": f'{names.GAP}{{{with_metric},{names.WINDOW}="all"}}',
        "gap_lower": f'{names.GAP_LOWER}{{{with_metric},{names.WINDOW}="all"}}',
        "gap_upper": f'{names.GAP_UPPER}{{{with_metric},{names.WINDOW}="all"}}',
        "threshold": queries["threshold"],
    }
    series: dict = {}
    for key, query in series_queries.items():
        try:
            data = _prometheus_get(prometheus_url, "/api/v1/query_range",
                                   {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                    "step": f"{step_seconds:g}"})
            series[key] = [{"labels": r["metric"], "points": [[float(t), float(v)] for t, v in r["values"]]}
                           for r in data]
        except Exception as exc:
            series[key] = {"error": f"{type(exc).__name__}: {exc}"}
    evidence["series"] = series
    evidence["series_range"] = {"start": start, "end": end, "step_seconds": step_seconds, "metric": metric}
    evidence["exemplars"] = _exemplar_ids(prometheus_url, selector, start, end)
    return evidence


def _exemplar_ids(prometheus_url: str, selector: str, start: float, end: float) -> dict | list:
    """Ids of recent positive predictions per group: the exemplars the monitor attaches
    to its ``positives`` counters (Prometheus keeps them with --enable-feature=exemplar-storage)."""
    query = f'{names.GROUP_EVENTS}{{{selector},{names.CELL}="positives"}}'
    try:
        data = _prometheus_get(prometheus_url, "/api/v1/query_exemplars",
                               {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}"})
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    out = []
    for series in data:
        ids = list(dict.fromkeys(e["labels"].get("event_id") for e in series.get("exemplars", [])
                                 if e["labels"].get("event_id")))
        out.append({"group": series["seriesLabels"].get(names.GROUP), "event_ids": ids[-10:]})
    return out


class Trigger:
    def __init__(self, store: IncidentStore, token: str, *, policy: str = "manual", cooldown_seconds: float = 3600,
                 jobs: JobRunner | None = None, prometheus_url: str | None = None, clock=time.time) -> None:
        if policy not in ("auto", "manual"):
            raise ValueError("policy must be auto or manual")
        if not token:
            raise ValueError("a shared token is required")
        self.store = store
        self.token = token
        self.policy = policy
        self.cooldown_seconds = cooldown_seconds
        self.jobs = jobs
        self.prometheus_url = prometheus_url
        self.clock = clock
        self.counts = {"deliveries": 0, "rejected": 0, "duplicates": 0, "ignored": 0, "incidents_opened": 0,
                       "jobs_started": 0}

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.token.encode())

    def handle(self, body: bytes, authorization: str | None) -> Response:
        self.counts["deliveries"] += 1
        if not self.authorised(authorization):
            self.counts["rejected"] += 1
            return Response(401, {"error": "missing or wrong bearer token"})
        if len(body) > MAX_PAYLOAD_BYTES:
            self.counts["rejected"] += 1
            return Response(413, {"error": f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD_BYTES}"})
        try:
            payload = _decode(body)
        except msgspec.ValidationError as exc:
            self.counts["rejected"] += 1
            return Response(400, {"error": f"not an Alertmanager webhook payload: {exc}"})
        except msgspec.DecodeError as exc:
            self.counts["rejected"] += 1
            return Response(400, {"error": f"not valid JSON: {exc}"})
        summary = {"opened": [], "updated": [], "duplicates": 0, "ignored": 0}
        for alert in payload.alerts:
            self._handle_alert(alert, summary)
        return Response(200, summary)

    def _handle_alert(self, alert: WebhookAlert, summary: dict) -> None:
        labels = alert.labels
        if labels.get("alertname") not in FAIRNESS_ALERTS or "model" not in labels or "attribute" not in labels:
            self.counts["ignored"] += 1
            summary["ignored"] += 1
            return
        fingerprint = alert.fingerprint or json.dumps(sorted(labels.items()))
        if self.store.seen(fingerprint, alert.startsAt, alert.status):
            self.counts["duplicates"] += 1
            summary["duplicates"] += 1
            return
        record = {"status": alert.status, "labels": labels, "annotations": alert.annotations,
                  "startsAt": alert.startsAt, "fingerprint": fingerprint}
        if alert.status == "resolved":
            # A resolution is noted on the open incident; it never opens one (it
            # may arrive before its firing, or after the incident was closed).
            incident = self.store.latest(labels["model"], labels["attribute"])
            if incident is not None and incident["state"] != "resolved":
                self.store.note(incident["id"], "alert_resolved", record)
                summary["updated"].append(incident["id"])
            else:
                summary["ignored"] += 1
            return
        evidence = prometheus_evidence(self.prometheus_url, labels["model"], labels["attribute"],
                                       labels.get("metric", ""))
        incident, created = self.store.open_or_update(labels["model"], labels["attribute"], record, self.clock(),
                                                      self.cooldown_seconds, evidence=evidence)
        if not created:
            summary["updated"].append(incident["id"])
            return
        self.counts["incidents_opened"] += 1
        summary["opened"].append(incident["id"])
        if self.policy == "auto":
            self._start_job(incident)
        else:
            self.store.set_state(incident["id"], "awaiting_approval", {"policy": "manual"},
                                 job={"state": "awaiting_approval"})

    def _start_job(self, incident: dict) -> None:
        if self.jobs is not None and self.jobs.start(incident):
            self.counts["jobs_started"] += 1

    def poll_approvals(self) -> None:
        """Start the jobs of incidents approved by a human since the last poll."""
        for incident in self.store.list("job_running"):
            if incident["job"].get("state") == "approved":
                self._start_job(incident)


class TriggerCollector:
    """/metrics of the trigger: incidents by state, webhook deliveries, jobs started."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from fairwatch.alerts.incidents import STATES

        counts = dict(self.trigger.counts)
        by_state = {state: 0 for state in STATES}
        for incident in self.trigger.store.list():
            by_state[incident["state"]] += 1
        incidents = GaugeMetricFamily(names.INCIDENTS, "Fairness incidents by state", labels=[names.STATE])
        for state, n in by_state.items():
            incidents.add_metric([state], n)
        yield incidents
        deliveries = CounterMetricFamily(names.TRIGGER_DELIVERIES, "Alertmanager webhook alerts by result",
                                         labels=[names.RESULT])
        for result, key in (("rejected", "rejected"), ("duplicate", "duplicates"), ("ignored", "ignored"),
                            ("opened", "incidents_opened")):
            deliveries.add_metric([result], counts[key])
        yield deliveries
        yield CounterMetricFamily(names.TRIGGER_JOBS, "Fine-tune jobs started", value=counts["jobs_started"])


def serve(trigger: Trigger, host: str = "127.0.0.1", port: int = 9119, poll_seconds: float = 2.0):
    """An HTTP server on a background thread: POST /alerts, GET /healthz, GET /metrics. Returns (server, port)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TriggerCollector(trigger))

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") != "/alerts":
                return self._reply(404, {"error": "POST /alerts"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                return self._reply(400, {"error": "bad Content-Length"})
            if length > MAX_PAYLOAD_BYTES:
                return self._reply(413, {"error": f"payload of {length} bytes exceeds {MAX_PAYLOAD_BYTES}"})
            try:
                response = trigger.handle(self.rfile.read(length), self.headers.get("Authorization"))
            except Exception as exc:  # never let one request take the server down
                log.exception("webhook handling failed")
                response = Response(500, {"error": f"{type(exc).__name__}: {exc}"})
            if response.status != 200:
                log.warning("webhook rejected (%s): %s", response.status, response.body.get("error"))
            self._reply(response.status, response.body)

        def do_GET(self):  # noqa: N802
            if self.path.rstrip("/") == "/healthz":
                return self._reply(200, {"ok": True, **trigger.counts})
            if self.path.rstrip("/") == "/metrics":
                data = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return None
            self._reply(404, {"error": "GET /healthz or /metrics"})

        def log_message(self, format, *args):  # quiet: the trigger logs what matters
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def poll():
        while True:
            time.sleep(poll_seconds)
            try:
                trigger.poll_approvals()
            except Exception:
                log.exception("approval poll failed")

    threading.Thread(target=poll, daemon=True).start()
    return server, server.server_address[1]
