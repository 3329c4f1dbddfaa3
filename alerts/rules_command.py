"""``fairwatch rules render``: write the Prometheus rules from the config file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairwatch.alerts.rules import render
from fairwatch.flags import add_config_file_flag

RULES_FILE = "fairwatch.rules.yml"
# The repository's copy (checked against a fresh render by the tests): `fairwatch rules render --out alerts/rules`.


def register(commands) -> None:
    parser = commands.add_parser("rules", help="Prometheus recording and alerting rules")
    actions = parser.add_subparsers(dest="rules_action", metavar="ACTION", required=True)
    render_parser = actions.add_parser("render", help="render the rules from the config file")
    add_config_file_flag(render_parser, "[monitor] and [alerts]")
    render_parser.add_argument("--out", metavar="DIR", default=".",
                               help=f"folder to write {RULES_FILE} into (default: the current folder)")
    render_parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead ('-' for stdout)")
    render_parser.set_defaults(handler=run_render)


def run_render(args: argparse.Namespace) -> int:
    from fairwatch.settings import load_settings

    settings = load_settings(args.config)
    text = render(settings.monitor, settings.alerts)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    target = Path(args.output) if args.output else Path(args.out) / RULES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}", file=sys.stderr)
    return 0
