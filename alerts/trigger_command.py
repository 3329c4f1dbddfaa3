"""``fairwatch trigger serve`` and ``fairwatch incidents list|show|approve|shadow|promote|resolve``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from fairwatch.alerts import trigger_http
from fairwatch.alerts.incidents import STATES, IncidentError, IncidentStore, incident_id
from fairwatch.alerts.job_command import PLACEHOLDERS, JobCommand, parse_job_policies
from fairwatch.alerts.jobs import DEFAULT_LOOKBACK_SECONDS, MAX_LOOKBACK_SECONDS
from fairwatch.alerts.promotion import promotion_verdict
from fairwatch.alerts.rules import AlertSettings
from fairwatch.alerts.shadow_command import (add_attach_action, add_shadow_action, attach_candidate, record_shadow,
                                             shadow_line)
from fairwatch.alerts.terminal import printable
from fairwatch.alerts.trigger import JobRunner, Trigger, serve
from fairwatch.command_support import UsageError, number_between, port_number, whole_number
from fairwatch.flags import add_flag

DEFAULT_DB = "fairwatch-incidents.sqlite"
TOKEN_ENV = "FAIRWATCH_TRIGGER_TOKEN"


def register_trigger(commands) -> None:
    parser = commands.add_parser("trigger", help="receive Alertmanager webhooks, open incidents, start fine-tune jobs")
    actions = parser.add_subparsers(dest="trigger_action", metavar="ACTION", required=True)
    serve_parser = actions.add_parser("serve", help="run the webhook receiver")
    # --listen-*: the port takes Alertmanager's webhooks as well as the scrape of /metrics.
    add_flag(serve_parser, "--listen-addr", default="127.0.0.1", metavar="ADDR", aliases=("--host",),
             help="address the webhook (and its /metrics) listens on (127.0.0.1)")
    add_flag(serve_parser, "--listen-port", type=port_number, default=9119, metavar="PORT", aliases=("--port",),
             help="port of the webhook and its /metrics (9119)")
    serve_parser.add_argument("--db", default=DEFAULT_DB, help=f"incident store, SQLite ({DEFAULT_DB})")
    serve_parser.add_argument("--token-file", help=f"file holding the shared token (else ${TOKEN_ENV})")
    serve_parser.add_argument("--policy", choices=("auto", "manual"), default="manual",
                              help="start the fine-tune job at once (auto) or after `incidents approve` (manual)")
    serve_parser.add_argument("--cooldown-seconds", type=number_between(0), default=3600.0,
                              help="a breach within this of a human resolving the previous incident of its "
                                   "(model, attribute) opens one that waits for approval, even under auto (3600)")
    serve_parser.add_argument("--job-command", help="command run per incident (none: incidents start no job); placeholders: "
                              + "; ".join(f"{{{name}}} {meaning}" for name, meaning in PLACEHOLDERS.items()))
    serve_parser.add_argument("--job-policy", action="append", metavar="MODEL=POLICY",
                              help="what an incident of MODEL runs (repeatable): 'none' (no job: a tabular model "
                                   "without texts to fine-tune on), 'finetune' (--job-command, the default for "
                                   "models not named) or its own command with the same placeholders")
    serve_parser.add_argument("--workdir", default="fairwatch-jobs", help="where jobs write candidates and reports (fairwatch-jobs)")
    serve_parser.add_argument("--max-concurrent-jobs", type=whole_number(1), default=2,
                              help="fine-tune jobs running at once; later ones wait as job_queued (2)")
    serve_parser.add_argument("--max-queued-jobs", type=whole_number(0), default=1000,
                              help="jobs waiting at most; beyond, incidents wait for approval (1000)")
    serve_parser.add_argument("--max-connections", type=whole_number(1), default=trigger_http.MAX_CONNECTIONS,
                              help="HTTP connections served at once; more get 503 and retry "
                                   f"({trigger_http.MAX_CONNECTIONS})")
    serve_parser.add_argument("--prometheus-url", help="query the evidence for new incidents here (none: incidents open without evidence)")
    _link_arguments(serve_parser, "stored with each new incident for its page")
    window = serve_parser.add_argument_group("the job's window ({from}, {to}, and {data}: read from Kafka as "
                                             "`fairwatch export` reads it, with the same flags)")
    # At most ten years: else every job's window start overflows the calendar.
    window.add_argument("--window-lookback-seconds", type=number_between(0, MAX_LOOKBACK_SECONDS),
                        default=DEFAULT_LOOKBACK_SECONDS,
                        help="the window starts this long before the breach's onset "
                             f"({DEFAULT_LOOKBACK_SECONDS:g}, a day)")
    from fairwatch.consumers.export_command import add_window_source_flags

    add_window_source_flags(serve_parser, "[kafka] connection keys and [alerts] links")
    serve_parser.set_defaults(handler=run_serve)


def window_export_from_settings(settings):
    """The trigger's {data}: `fairwatch export` of the incident's model and window, with the serve flags'
    Kafka settings (read once, at start-up: a bad --config fails the start, not the first job)."""
    from fairwatch.consumers.export_command import run_export
    from fairwatch.consumers.time_window import TimeWindow

    def export(model: str, start_seconds: float, end_seconds: float, out: Path):
        summary = run_export(settings, model, TimeWindow(start_seconds, end_seconds), out)
        return summary.lines(), summary.as_dict()

    return export


def _link_arguments(parser: argparse.ArgumentParser, why: str) -> None:
    defaults = AlertSettings()
    parser.add_argument("--runbook-url", metavar="URL",
                        help=f"runbook page; '#runbook-fairnessgapbreach' is appended ({why}; default: the "
                             f"alert's runbook_url annotation, else {defaults.runbook_url})")
    parser.add_argument("--dashboard-url", metavar="URL",
                        help=f"model dashboard; ?var-model=..&var-attribute=.. is appended ({why}; default: the "
                             f"alert's dashboard_url annotation, else {defaults.dashboard_url})")


def register_incidents(commands) -> None:
    parser = commands.add_parser("incidents", help="list, show, approve or resolve fairness incidents")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"incident store, SQLite ({DEFAULT_DB})")
    actions = parser.add_subparsers(dest="incidents_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="one line per incident")
    listing.add_argument("--state", choices=STATES, metavar="STATE",
                         help=f"only incidents in this state: {', '.join(STATES)} (none: every state)")
    listing.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    show = actions.add_parser("show", help="one incident, whole")
    show.add_argument("id", type=incident_id)
    show.add_argument("--json", action="store_true", help="the incident as JSON instead of text")
    show.add_argument("--html", metavar="FILE", help="write a self-contained HTML page (plots, evidence) to FILE")
    _link_arguments(show, "override those the trigger stored")
    approve = actions.add_parser("approve", help="let the fine-tune job of a manual-policy incident start")
    approve.add_argument("id", type=incident_id)
    promote = actions.add_parser(
        "promote", help="copy a succeeded job's candidate model to a directory you serve from (a human decision)")
    promote.add_argument("id", type=incident_id)
    promote.add_argument("--to", required=True, metavar="DIR", help="where the candidate goes; must not exist yet")
    promote.add_argument("--force", action="store_true",
                         help="promote even when the held-out gates or the live shadow said no")
    shadow = add_shadow_action(actions)
    attach = add_attach_action(actions)
    resolve = actions.add_parser("resolve", help="close an incident")
    resolve.add_argument("id", type=incident_id)
    resolve.add_argument("--reason", default="", help="why it is resolved, kept with the incident")
    for action in (listing, show, approve, shadow, attach, promote, resolve):  # --db before or after the action, as users type it
        action.add_argument("--db", default=argparse.SUPPRESS, help=f"incident store, SQLite ({DEFAULT_DB})")
    parser.set_defaults(handler=run_incidents)


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read --token-file {args.token_file}: not UTF-8 text") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(f"a shared token is required: --token-file FILE or ${TOKEN_ENV}")
    return token


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = _token(args)  # before the store: a refused start leaves no file behind
    from fairwatch.consumers.kafka_config import CONNECTION_KEYS
    from fairwatch.settings import from_args

    try:
        if args.job_command:
            JobCommand(args.job_command)  # an unknown placeholder: one line, before the store exists
        policies = parse_job_policies(args.job_policy, args.job_command)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    commands = [args.job_command, *policies.values()]
    reads_kafka = any(command and JobCommand(command).uses_data for command in commands)
    # The whole file, once: a mistake fails the start. Its [kafka] connection is checked against this machine
    # (certificate files...) only when a job reads its window from Kafka ({data}).
    settings = from_args(args, kafka_keys=CONNECTION_KEYS if reads_kafka else None)
    window_export = window_export_from_settings(settings.kafka) if reads_kafka else None
    links = {"runbook_url": args.runbook_url, "dashboard_url": args.dashboard_url}
    if args.config:  # the file's [alerts] links, as `rules render` wrote them into the alerts' annotations
        links = {key: value or getattr(settings.alerts, key) for key, value in links.items()}
    store = IncidentStore(args.db)
    jobs = JobRunner(store, args.job_command, args.workdir, max_concurrent_jobs=args.max_concurrent_jobs,
                     max_queued_jobs=args.max_queued_jobs, window_export=window_export,
                     lookback_seconds=args.window_lookback_seconds, policies=policies)
    trigger = Trigger(store, token, policy=args.policy, cooldown_seconds=args.cooldown_seconds, jobs=jobs,
                      prometheus_url=args.prometheus_url,
                      links={k: v for k, v in links.items() if v})
    try:
        server, port = serve(trigger, args.listen_addr, args.listen_port, max_connections=args.max_connections)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen_addr}:{args.listen_port}: {exc.strerror}") from None
    print(f"trigger listening on http://{args.listen_addr}:{port}/alerts (policy {args.policy})", file=sys.stderr,
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def _line(incident: dict) -> str:
    """One line per incident; every value from an alert is made printable (no terminal escapes)."""
    opened = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(incident["opened_at"]))
    metrics = sorted({str(a["labels"].get("metric", "?")) for a in incident["alerts"]})
    return printable(f"{incident['id']:>4}  {incident['state']:<17} {opened}Z  {incident['model']}/"
                     f"{incident['attribute']}  {', '.join(metrics)}  job={incident['job'].get('state')}")


def promote(store: IncidentStore, incident_id: int, target: Path, force: bool) -> dict:
    """Copy the candidate to ``target`` (never over an existing directory) and record who did it.

    The fine-tune job only ever proposes; this is the human step. It refuses a
    candidate that failed the gates unless ``force`` says the human overrules them.
    """
    import getpass
    import shutil

    incident = store.get(incident_id)
    job = incident["job"]
    if job.get("state") != "succeeded":
        raise IncidentError(f"incident {incident_id}: the job is {job.get('state')}, there is no candidate to promote")
    candidate = Path(job.get("candidate_dir", ""))
    if not candidate.is_dir():
        raise IncidentError(f"incident {incident_id}: candidate directory {candidate} is missing")
    decision = (job.get("report") or {}).get("decision", {})
    if not decision.get("promote", False) and not force:
        raise IncidentError(f"incident {incident_id}: the gates did not recommend this candidate "
                            f"({decision.get('reasons') or 'no decision in the report'}); use --force to overrule")
    shadow = job.get("shadow")
    if isinstance(shadow, dict) and shadow.get("passed") is not True and not force:
        raise IncidentError(f"incident {incident_id}: the candidate failed on live shadow traffic "
                            f"({'; '.join(shadow.get('reasons') or [])}); use --force to overrule")
    if target.exists():
        raise IncidentError(f"{target} already exists: promote into a new directory")
    try:
        shutil.copytree(candidate, target)
    except OSError as exc:
        raise IncidentError(f"cannot copy the candidate to {target}: {exc.strerror or exc}") from None
    return store.record_promotion(incident_id, str(candidate), str(target), getpass.getuser())


def run_incidents(args: argparse.Namespace) -> int:
    if str(args.db) != ":memory:" and not Path(args.db).exists():
        raise UsageError(f"no incident store at {args.db} (pass --db)")
    store = IncidentStore(args.db)
    # An IncidentError (unknown id, wrong state) is one line, exit 2 (fairwatch.command_support.run_command).
    if args.incidents_action == "list":
        incidents = store.list(args.state)
        if args.json:
            print(json.dumps(incidents, indent=2))
        else:
            for incident in incidents:
                print(_line(incident))
    elif args.incidents_action == "show":
        incident = store.get(args.id)
        if args.html:
            from fairwatch.alerts.incident_page import render_incident_html

            try:
                page = render_incident_html(incident, args.runbook_url, args.dashboard_url)
                Path(args.html).write_text(page, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot write --html {args.html}: {exc.strerror}") from None
            print(f"wrote {args.html}", file=sys.stderr)
        elif args.json:
            print(json.dumps(incident, indent=2))
        else:
            print(_line(incident))
            for alert in incident["alerts"]:
                summary = alert["annotations"].get("summary", alert["labels"])
                print(printable(f"  alert {alert['status']}: {summary}"))
            if incident["evidence"]:
                print(f"  evidence: {json.dumps(incident['evidence'])[:2000]}")  # JSON escapes control characters
            if incident["job"].get("report"):
                print(f"  job report: {json.dumps(incident['job']['report'])[:2000]}")
                print(printable(f"  promotion: {promotion_verdict(incident['job']).sentence}"))
            for entry in incident["timeline"]:
                at = time.strftime("%H:%M:%S", time.gmtime(entry["at"]))
                print(printable(f"  {at}Z {entry['change']} {json.dumps(entry['detail'])[:200]}"))
    elif args.incidents_action == "approve":
        print(_line(store.approve(args.id)))
        print("approved: a running trigger starts or queues the job on its next poll; one without "
              "--job-command marks the incident job_skipped", file=sys.stderr)
    elif args.incidents_action == "shadow":
        print(printable(shadow_line(args.id, record_shadow(store, args.id, prometheus_url=args.prometheus_url,
                                                           report=args.report, min_events=args.min_events))))
    elif args.incidents_action == "attach":
        print(printable(attach_candidate(store, args.id, args.control, args.threshold, args.detach)))
    elif args.incidents_action == "promote":
        promoted = promote(store, args.id, Path(args.to), args.force)
        print(_line(promoted))
        if promotion_verdict(promoted["job"]).promotable is None:
            print("promoted without live evidence: the candidate was never compared with production on live "
                  "traffic (fairwatch incidents shadow)", file=sys.stderr)
    elif args.incidents_action == "resolve":
        print(_line(store.resolve(args.id, args.reason)))
    return 0
