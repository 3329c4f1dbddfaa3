"""``fairwatch rules render``: write the Prometheus rules from the config file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alerts.rules import load_settings, render
from monitor.cli import config_from_args

DEFAULT_OUTPUT = Path(__file__).parent / "rules" / "fairwatch.rules.yml"


def register(commands) -> None:
    parser = commands.add_parser("rules", help="Prometheus recording and alerting rules")
    actions = parser.add_subparsers(dest="rules_action", metavar="ACTION", required=True)
    render_parser = actions.add_parser("render", help="render the rules from the config file")
    render_parser.add_argument("--config", metavar="TOML", help="the fairwatch config ([monitor], [alerts])")
    render_parser.add_argument("--output", "-o", default=str(DEFAULT_OUTPUT), help="file to write ('-' for stdout)")
    render_parser.set_defaults(handler=run_render)


def run_render(args: argparse.Namespace) -> int:
    text = render(config_from_args(args), load_settings(args.config))
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
