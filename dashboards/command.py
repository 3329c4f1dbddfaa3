"""``fairwatch dashboards render|push``: write the dashboards and alert rules, or push them to Grafana."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fairwatch.dashboards import alerting, render
from fairwatch.command_support import http_url, positive_float
from fairwatch.flags import add_config_file_flag

ALERTING_FILE = "fairwatch-alerting.yml"
# The repository's copies (checked against a fresh render by the tests):
#   fairwatch dashboards render --out dashboards/json --alerting deploy/grafana/provisioning/alerting/fairwatch.yml


def register(commands) -> None:
    parser = commands.add_parser("dashboards", help="Grafana dashboards and Grafana-managed alert rules")
    actions = parser.add_subparsers(dest="dashboards_action", metavar="ACTION", required=True)
    render_parser = actions.add_parser("render", help="write the dashboard JSON files and the Grafana alert rules")
    render_parser.add_argument("--out", metavar="DIR", default=".",
                               help="folder for the dashboard JSON files (default: the current folder)")
    render_parser.add_argument("--alerting", metavar="FILE",
                               help=f"Grafana alert-rule provisioning file to write (default: DIR/{ALERTING_FILE})")
    add_config_file_flag(render_parser, "[alerts]")
    render_parser.set_defaults(handler=run_render)
    push_parser = actions.add_parser("push", help="push the dashboards to a Grafana (idempotent)")
    push_parser.add_argument("--url", type=http_url, default=os.environ.get("GRAFANA_URL"),
                             help="Grafana base URL (env GRAFANA_URL), e.g. http://localhost:3000")
    push_parser.add_argument("--token", default=os.environ.get("GRAFANA_TOKEN"),
                             help="service-account token (env GRAFANA_TOKEN)")
    push_parser.add_argument("--folder", default="fairwatch", help="folder title, created if missing (fairwatch)")
    push_parser.add_argument("--folder-uid", default="fairwatch", help="folder uid (fairwatch)")
    push_parser.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per request (10)")
    push_parser.set_defaults(handler=run_push)


def run_render(args: argparse.Namespace) -> int:
    from fairwatch.settings import load_settings

    settings = load_settings(args.config)  # before writing anything: a bad file leaves no half-render
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in render.write(out):
        print(f"wrote {path}", file=sys.stderr)
    target = Path(args.alerting) if args.alerting else out / ALERTING_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(alerting.render(settings.alerts))
    print(f"wrote {target}", file=sys.stderr)
    return 0


def run_push(args: argparse.Namespace) -> int:
    from fairwatch.command_support import UsageError

    if not args.url:
        raise UsageError("no Grafana URL: pass --url or set GRAFANA_URL")
    try:
        from fairwatch.dashboards.push import push
    except ImportError:
        raise UsageError("needs grafana-client, which is not installed (pip install 'fairwatch[grafana]')") from None
    # A PushError is one line, exit 2 (fairwatch.command_support.run_command).
    result = push(args.url, args.token, render.dashboards(), args.folder, args.folder_uid, args.timeout)
    if result.folder_created:
        print(f"created folder {args.folder!r}", file=sys.stderr)
    print(f"pushed to {args.url}: {len(result.written)} written ({', '.join(result.written) or '-'}), "
          f"{len(result.unchanged)} unchanged ({', '.join(result.unchanged) or '-'})")
    return 0
