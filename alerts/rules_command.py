"""``fairwatch rules render``: write the Prometheus rules from the config file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairwatch.alerts.rules import load_settings, render
from fairwatch.cli import config_from_args

RULES_FILE = "fairwatch.rules.yml"
# The repository's copy (checked against a fresh render by the tests): `fairwatch rules render --out alerts/rules`.


def register(commands) -> None:
    parser = commands.add_parser("rules", help="Prometheus recording and alerting rules")
    actions = parser.add_subparsers(dest="rules_action", metavar="ACTION", required=True)
    render_parser = actions.add_parser("render", help="render the rules from the config file")
    render_parser.add_argument("--config", metavar="TOML", help="the fairwatch config ([monitor], [alerts])")
    render_parser.add_argument("--out", metavar="DIR", default=".",
                               help=f"folder to write {RULES_FILE} into (default: the current folder)")
    render_parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead ('-' for stdout)")
    render_parser.set_defaults(handler=run_render)


def run_render(args: argparse.Namespace) -> int:
    text = render(config_from_args(args), load_settings(args.config))
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    target = Path(args.output) if args.output else Path(args.out) / RULES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}", file=sys.stderr)
    return 0
