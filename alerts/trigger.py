"""The trigger: Alertmanager's webhook in, incidents and fine-tune jobs out.

``Trigger.handle`` validates a webhook delivery (shared bearer token, size,
schema), refuses alerts whose model or attribute is not an identifier
(``alerts.labels``: they would reach a command line and a query), drops
deliveries it has seen (same fingerprint, start and status), opens or
updates an incident per (model, attribute), and queues the fine-tune job of
a new incident when the policy is ``auto`` (``alerts.jobs`` runs a bounded
number at once); with ``manual`` the incident waits for ``fairwatch
incidents approve ID``, which the trigger notices on its next poll. A breach
after a human resolved the previous incident opens a new one; within
``cooldown_seconds`` of that resolution it waits for approval even under
``auto`` (a relapse is for a human to look at, not another job to start). A
job never runs twice for an incident, and never replaces a serving model: it
writes a candidate and a report under the incident's folder. A malformed
payload is a 400 with a one-line reason; nothing a caller sends can stop the
server (``alerts.trigger_http`` bounds what a connection may cost).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal, Union

import msgspec

from fairwatch.alerts.evidence import prometheus_evidence
from fairwatch.alerts.incidents import IncidentError, IncidentStore
from fairwatch.alerts.jobs import NO_COMMAND, JobRunner
from fairwatch.alerts import metric_names as names
from fairwatch.alerts.labels import unsafe_label_reason
from fairwatch.alerts.trigger_http import MAX_BODY_BYTES, BoundedHTTPServer, TriggerHandler
from fairwatch.monitor.errors import first_line
from fairwatch.monitor.scorer.shadow import BASELINE_SUFFIX, CANDIDATE_SUFFIX

log = logging.getLogger("fairwatch.trigger")

MAX_PAYLOAD_BYTES = MAX_BODY_BYTES
FAIRNESS_ALERTS = ("FairnessGapBreach",)
# Labels that reach the job's command line and the evidence queries.
CHECKED_LABELS = ("model", "attribute", "metric")


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


def _named(alert: WebhookAlert) -> str:
    return f"alert {alert.labels.get('alertname')} of model {alert.labels.get('model')!r}"


class AlertInFlight(RuntimeError):
    """The same alert (fingerprint, start, status) is being handled by another delivery: answer 5xx, so that
    Alertmanager delivers it again, rather than "duplicate", which would lose it if the first one failed."""


class Trigger:
    def __init__(self, store: IncidentStore, token: str, *, policy: str = "manual", cooldown_seconds: float = 3600,
                 jobs: JobRunner | None = None, prometheus_url: str | None = None, links: dict | None = None,
                 clock=time.time) -> None:
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
        self.links = dict(links or {})  # runbook/dashboard base URLs for the incident page
        self.clock = clock
        self.counts = {"deliveries": 0, "rejected": 0, "duplicates": 0, "ignored": 0, "refused_labels": 0,
                       "incidents_opened": 0, "jobs_started": 0, "failed": 0}
        self._counts_lock = threading.Lock()
        self._in_flight: set[tuple[str, str, str]] = set()
        self._in_flight_lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self.counts[key] += 1

    def reject(self, status: int, error: str) -> Response:
        """A delivery refused as a whole (token, size, schema), counted."""
        self._count("rejected")
        return Response(status, {"error": error})

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.token.encode())

    def handle(self, body: bytes, authorization: str | None) -> Response:
        self._count("deliveries")
        if not self.authorised(authorization):
            return self.reject(401, "missing or wrong bearer token")
        if len(body) > MAX_PAYLOAD_BYTES:
            return self.reject(413, f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD_BYTES}")
        try:
            payload = _decode(body)
        except msgspec.ValidationError as exc:
            return self.reject(400, f"not an Alertmanager webhook payload: {exc}")
        except msgspec.DecodeError as exc:
            return self.reject(400, f"not valid JSON: {exc}")
        summary = {"opened": [], "updated": [], "duplicates": 0, "ignored": 0, "refused": []}
        failed = []
        for alert in payload.alerts:
            try:
                self._handle_alert(alert, summary)
            except AlertInFlight as exc:
                failed.append(f"{_named(alert)}: {exc}")
            except Exception as exc:  # noqa: BLE001 - one alert's failure (a full disk...) must not cost the others
                why = f"{_named(alert)}: {first_line(exc)}"
                log.error("handling %s; Alertmanager will deliver it again", why)
                self._count("failed")
                failed.append(why)
        if failed:  # a 5xx makes Alertmanager deliver again; the alerts handled meanwhile are then duplicates
            return Response(500, {**summary, "failed": failed})
        return Response(200, summary)

    def _handle_alert(self, alert: WebhookAlert, summary: dict) -> None:
        labels = alert.labels
        if labels.get("alertname") not in FAIRNESS_ALERTS or "model" not in labels or "attribute" not in labels:
            self._count("ignored")
            summary["ignored"] += 1
            return
        if labels["model"].endswith((BASELINE_SUFFIX, CANDIDATE_SUFFIX)):
            # A shadow's breach belongs to the comparison (`incidents shadow`), not to an incident and a
            # fine-tune of its own; the rules do not page on it, this covers other alert sources.
            self._count("ignored")
            summary["ignored"] += 1
            return
        for name in CHECKED_LABELS:
            reason = unsafe_label_reason(name, labels[name]) if name in labels else None
            if reason:
                self._count("refused_labels")
                summary["refused"].append(reason)
                log.warning("alert refused: %s", reason)  # the reason quotes the value with repr(): no raw bytes
                return
        fingerprint = alert.fingerprint or json.dumps(sorted(labels.items()))
        delivery = (fingerprint, alert.startsAt, alert.status)
        with self._in_flight_lock:
            # Answered "duplicate" while the first delivery is still being handled, a copy would be lost
            # if that one then failed: Alertmanager retries only what got a 5xx.
            if delivery in self._in_flight:
                raise AlertInFlight("the same alert is being handled by another delivery")
            self._in_flight.add(delivery)
        try:
            if self.store.seen(*delivery):
                self._count("duplicates")
                summary["duplicates"] += 1
                return
            try:
                self._apply_alert(alert, fingerprint, summary)
            except BaseException:
                self.store.unsee(*delivery)  # so that its next delivery is handled
                raise
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(delivery)

    def _apply_alert(self, alert: WebhookAlert, fingerprint: str, summary: dict) -> None:
        labels = alert.labels
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
        if self.links:
            evidence["links"] = self.links
        incident, created = self.store.open_or_update(labels["model"], labels["attribute"], record, self.clock(),
                                                      self.cooldown_seconds, evidence=evidence)
        if not created:
            summary["updated"].append(incident["id"])
            if incident["state"] != "open":
                return
            # Still "open": the delivery that opened it failed before its next step (this is its retry), or
            # is still taking it. Take the step here too: only one of the two moves it out of "open".
            log.info("incident %s found open: taking its next step", incident["id"])
            self._next_step(self.store.get(incident["id"]))
            return
        self._count("incidents_opened")
        summary["opened"].append(incident["id"])
        self._next_step(incident)

    def _next_step(self, incident: dict) -> None:
        """Start the job of a new incident, or leave it to a human (manual policy, or a relapse): from
        "open" only, so that a step taken meanwhile (by a concurrent delivery, or a human) stands."""
        follows = incident["timeline"][0]["detail"].get("follows")
        relapse = follows is not None and follows["resolved_seconds_ago"] < self.cooldown_seconds
        try:
            if self.policy == "auto" and not relapse:
                self._start_job(incident, expect=("open",))
            else:
                why = {"policy": "manual"} if self.policy == "manual" else {
                    "why": f"breach again {follows['resolved_seconds_ago']:.0f} s after incident {follows['id']} "
                           f"was resolved (cooldown {self.cooldown_seconds:g} s): a human decides on another job"}
                self.store.set_state(incident["id"], "awaiting_approval", why, job={"state": "awaiting_approval"},
                                     expect=("open",))
        except IncidentError as exc:
            log.info("incident %s: its next step was taken meanwhile (%s)", incident["id"], exc)

    def _start_job(self, incident: dict, expect: tuple[str, ...] | None = None) -> None:
        if self.jobs is None:
            self.store.set_state(incident["id"], "job_skipped", {"why": NO_COMMAND}, job={"state": "skipped"},
                                 expect=expect)
        elif self.jobs.start(incident):  # running now or queued: counted once, when accepted
            self._count("jobs_started")

    def poll_approvals(self) -> None:
        """Start (or queue) the jobs of incidents approved by a human since the last poll."""
        for incident in self.store.list("approved"):
            try:
                self._start_job(incident)
            except IncidentError as exc:  # resolved by a human meanwhile
                log.info("approved incident %s changed under the poll: %s", incident["id"], exc)

    def recover(self) -> None:
        """On start: fail the jobs a killed trigger left running, queue again those it left queued, and take
        the next step of incidents it left open (killed between opening one and starting its job)."""
        if self.jobs is not None:
            self.jobs.recover()
        else:
            for state in ("job_running", "job_queued"):
                for incident in self.store.list(state):
                    self.store.set_state(incident["id"], "job_failed", {"error": "trigger restarted without jobs"},
                                         job={"state": "failed"})
        for incident in self.store.list("open"):
            log.warning("incident %s was left open by the previous run: taking its next step", incident["id"])
            try:
                self._next_step(incident)
            except Exception as exc:  # noqa: BLE001 - one incident's failure must not keep the trigger down
                log.error("incident %s: its next step failed: %s; it stays open", incident["id"], first_line(exc))


class TriggerCollector:
    """/metrics of the trigger: incidents by state, webhook deliveries, jobs started."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counts = dict(self.trigger.counts)
        by_state = self.trigger.store.count_by_state()  # per scrape: never reads the incidents themselves
        incidents = GaugeMetricFamily(names.INCIDENTS, "Fairness incidents by state", labels=[names.STATE])
        for state, n in by_state.items():
            incidents.add_metric([state], n)
        yield incidents
        deliveries = CounterMetricFamily(names.TRIGGER_DELIVERIES, "Alertmanager webhook alerts by result",
                                         labels=[names.RESULT])
        for result, key in (("rejected", "rejected"), ("duplicate", "duplicates"), ("ignored", "ignored"),
                            ("refused_labels", "refused_labels"), ("opened", "incidents_opened"),
                            ("failed", "failed")):
            deliveries.add_metric([result], counts[key])
        yield deliveries
        yield CounterMetricFamily(names.TRIGGER_JOBS, "Fine-tune jobs started", value=counts["jobs_started"])


def serve(trigger: Trigger, host: str = "127.0.0.1", port: int = 9119, poll_seconds: float = 2.0, *,
          max_connections: int | None = None, request_seconds: float | None = None):
    """Recover jobs a previous run left, then serve POST /alerts, GET /healthz, GET /metrics on a
    background thread (bounds in ``alerts.trigger_http``). Returns (server, port)."""
    from prometheus_client import CollectorRegistry

    from fairwatch.alerts import trigger_http

    trigger.recover()
    server = BoundedHTTPServer((host, port), TriggerHandler,
                               max_connections=max_connections or trigger_http.MAX_CONNECTIONS,
                               request_seconds=request_seconds or trigger_http.REQUEST_SECONDS)
    server.trigger = trigger
    server.registry = CollectorRegistry(auto_describe=False)
    server.registry.register(TriggerCollector(trigger))
    threading.Thread(target=server.serve_forever, daemon=True, name="trigger-http").start()

    def poll():
        while True:
            time.sleep(poll_seconds)
            try:
                trigger.poll_approvals()
            except Exception:
                log.exception("approval poll failed")

    threading.Thread(target=poll, daemon=True, name="trigger-approvals").start()
    return server, server.server_address[1]


__all__ = ["JobRunner", "Response", "Trigger", "TriggerCollector", "prometheus_evidence", "serve"]
